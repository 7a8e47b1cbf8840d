//! EuroSAT (RGB) as distributed: `dir/<Class>/*.jpg`, 64×64 images, one folder per class;
//! a stratified split; and a generator of a small set in the same layout for tests.

use super::Dataset;
use crate::error::{Error, Result};
use crate::rng::Rng;
use std::path::{Path, PathBuf};

/// The ten EuroSAT (RGB) classes, in label order.
pub const EUROSAT_CLASSES: [&str; 10] = [
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
    "SeaLake",
];

/// What to do with an image that cannot be decoded or has the wrong size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OnBadImage {
    /// Skip it with a warning on stderr (the count is reported).
    #[default]
    Skip,
    /// Stop with an error naming the file.
    Fail,
}

/// Load EuroSAT RGB as distributed: `dir/<Class>/*.jpg`, 64×64 images, one folder per class
/// (names in [`EUROSAT_CLASSES`]). At most `per_class` images per class (sorted by file name)
/// when given. Unknown folders, missing classes, and undecodable or wrongly sized images are
/// reported, never silently dropped.
pub fn eurosat(dir: &Path, per_class: Option<usize>, on_bad: OnBadImage) -> Result<Dataset> {
    let err = |path: &Path, problem: String| Error::Dataset {
        path: path.to_path_buf(),
        problem,
    };
    if per_class == Some(0) {
        return Err(Error::option(
            "--per-class",
            0,
            "at least 1 image per class",
        ));
    }
    if !dir.is_dir() {
        return Err(err(
            dir,
            "folder not found; download EuroSAT (RGB) and pass the folder that holds the class folders".into(),
        ));
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry.path().is_dir() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !EUROSAT_CLASSES.contains(&name.as_str()) {
                return Err(err(
                    &entry.path(),
                    format!(
                        "unknown class folder '{name}'; EuroSAT classes are {EUROSAT_CLASSES:?}"
                    ),
                ));
            }
            found.push(name);
        }
    }
    if let Some(missing) = EUROSAT_CLASSES
        .iter()
        .find(|c| !found.iter().any(|f| f == *c))
    {
        return Err(err(dir, format!("class folder '{missing}' is missing")));
    }
    let (h, w) = (64usize, 64usize);
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut skipped = 0;
    for (label, class) in EUROSAT_CLASSES.iter().enumerate() {
        let cdir = dir.join(class);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&cdir)
            .map_err(|e| Error::io(&cdir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| {
                    ["jpg", "jpeg", "png", "tif"]
                        .contains(&x.to_string_lossy().to_lowercase().as_str())
                })
            })
            .collect();
        files.sort();
        if let Some(n) = per_class {
            files.truncate(n);
        }
        if files.is_empty() {
            return Err(err(&cdir, "no images".into()));
        }
        let mut loaded = 0;
        for f in files {
            let img = match image::open(&f) {
                Ok(i) if i.width() as usize == w && i.height() as usize == h => i.to_rgb8(),
                Ok(i) => {
                    let m = format!(
                        "image is {}x{}, EuroSAT images are 64x64",
                        i.width(),
                        i.height()
                    );
                    if on_bad == OnBadImage::Fail {
                        return Err(err(&f, m));
                    }
                    eprintln!("warning: skipping {}: {m}", f.display());
                    skipped += 1;
                    continue;
                }
                Err(e) => {
                    if on_bad == OnBadImage::Fail {
                        return Err(err(&f, format!("cannot decode: {e}")));
                    }
                    eprintln!("warning: skipping {}: cannot decode: {e}", f.display());
                    skipped += 1;
                    continue;
                }
            };
            for c in 0..3 {
                for y in 0..h {
                    for x in 0..w {
                        pixels.push(img.get_pixel(x as u32, y as u32)[c] as f32 / 255.0);
                    }
                }
            }
            labels.push(label as u8);
            loaded += 1;
        }
        if loaded == 0 {
            return Err(err(
                &cdir,
                format!(
                    "none of the images of class '{class}' could be used (see the warnings above)"
                ),
            ));
        }
    }
    if skipped > 0 {
        eprintln!(
            "warning: skipped {skipped} unreadable or wrongly sized images in {}",
            dir.display()
        );
    }
    Ok(Dataset {
        shape: [3, h, w],
        pixels,
        labels,
        classes: 10,
    })
}

/// Split into train, validation and test parts with the given fractions of every class
/// (stratified; reproducible for a seed).
pub fn stratified_split(
    data: &Dataset,
    val: f64,
    test: f64,
    seed: u64,
) -> (Dataset, Dataset, Dataset) {
    let mut rng = Rng::new(seed);
    let mut parts: [Vec<usize>; 3] = Default::default();
    for c in 0..data.classes {
        let mut idx: Vec<usize> = (0..data.len())
            .filter(|&i| data.labels[i] as usize == c)
            .collect();
        for k in (1..idx.len()).rev() {
            idx.swap(k, rng.below(k + 1));
        }
        let nt = (idx.len() as f64 * test).round() as usize;
        let nv = (idx.len() as f64 * val).round() as usize;
        parts[2].extend(&idx[..nt]);
        parts[1].extend(&idx[nt..nt + nv]);
        parts[0].extend(&idx[nt + nv..]);
    }
    (
        data.select(&parts[0]),
        data.select(&parts[1]),
        data.select(&parts[2]),
    )
}

/// Write a small EuroSAT-layout folder of 64×64 JPEGs whose classes differ in colour and
/// texture statistics (learnable, not trivially): for tests and demonstrations where the real
/// dataset is not available.
pub fn write_synthetic_eurosat(dir: &Path, per_class: usize, seed: u64) -> Result<()> {
    let mut rng = Rng::new(seed);
    for (c, class) in EUROSAT_CLASSES.iter().enumerate() {
        let cdir = dir.join(class);
        std::fs::create_dir_all(&cdir).map_err(|e| Error::io(&cdir, e))?;
        // Class signature: a base colour and a stripe period/orientation.
        let base = [
            (40 + 20 * (c % 5)) as f32,
            (60 + 35 * (c % 4)) as f32,
            (50 + 45 * (c % 3)) as f32,
        ];
        let period = 4 + 2 * (c % 4);
        let vertical = c % 2 == 0;
        for k in 0..per_class {
            let bright = 0.8 + 0.4 * rng.uniform() as f32;
            let img = image::RgbImage::from_fn(64, 64, |x, y| {
                let coord = if vertical { x } else { y } as usize;
                let stripe = (coord / period).is_multiple_of(2);
                let mut px = [0u8; 3];
                for ch in 0..3 {
                    let v = base[ch] * bright
                        + if stripe { 60.0 } else { 0.0 }
                        + 25.0 * rng.uniform() as f32;
                    px[ch] = v.clamp(0.0, 255.0) as u8;
                }
                image::Rgb(px)
            });
            let path = cdir.join(format!("{class}_{}.jpg", k + 1));
            img.save(&path)
                .map_err(|e| Error::io(&path, std::io::Error::other(e)))?;
        }
    }
    Ok(())
}

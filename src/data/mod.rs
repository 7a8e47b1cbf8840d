//! Datasets: images with labels, pixels in [0, 1]. [`idx`] reads the IDX format (MNIST,
//! Fashion-MNIST and any other IDX image-classification set, plain or gzipped) and fetches
//! MNIST; [`eurosat`](mod@eurosat) reads EuroSAT's class folders; [`augment`] is the reference experiment's
//! augmentation. Missing, truncated or corrupt files are errors that name the file and what is
//! wrong; nothing is dropped silently.

pub mod augment;
pub mod eurosat;
pub mod idx;

pub use eurosat::{
    eurosat, stratified_split, write_synthetic_eurosat, OnBadImage, EUROSAT_CLASSES,
};
pub use idx::{load_idx_dir, load_idx_pair, mnist};

use std::path::PathBuf;

/// Images with labels, pixels in [0, 1].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    /// Channels, height, width of every image.
    pub shape: [usize; 3],
    /// `len × pixels` values in [0, 1] (channel-major per image: `[c][y][x]`).
    pub pixels: Vec<f32>,
    /// One label per image, each below `classes`.
    pub labels: Vec<u8>,
    /// Number of classes.
    pub classes: usize,
}

impl Dataset {
    /// A digest of the images, labels, shape and classes (processes compare it before they
    /// work on the data together, [`crate::dist::comm::agree`]).
    pub fn digest(&self) -> u64 {
        let mut b: Vec<u8> = Vec::with_capacity(32 + self.labels.len());
        for x in self.shape.iter().chain([&self.classes, &self.labels.len()]) {
            b.extend_from_slice(&(*x as u64).to_le_bytes());
        }
        b.extend_from_slice(&self.labels);
        b.extend_from_slice(
            &crate::dist::comm::digest(bytemuck::cast_slice(&self.pixels)).to_le_bytes(),
        );
        crate::dist::comm::digest(&b)
    }

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

    /// The images `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Dataset {
        Dataset {
            shape: self.shape,
            pixels: idx
                .iter()
                .flat_map(|&i| self.image(i).iter().copied())
                .collect(),
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes,
        }
    }
}

/// Default cache folder for downloaded data: `$NEUROPART_DATA`, else `./data-cache`.
pub fn cache_dir(name: &str) -> PathBuf {
    std::env::var_os("NEUROPART_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("data-cache"))
        .join(name)
}

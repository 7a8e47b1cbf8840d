//! EuroSAT land-cover classification with a convolutional SNN partitioned like the paper's
//! Fig. 3B (a convolutional first layer run in several parts, a dense layer of four-circuit
//! neurons, a readout), trained in the three modes of the paper's Fig. 4: ideal simulation,
//! the whole network emulated, and only the first layer emulated.
//!
//! Real data: `cargo run --release --example eurosat -- --data DIR --device gpu`, where DIR holds
//! the ten class folders of EuroSAT (RGB) (AnnualCrop, Forest, ...). Without `--data`, a small
//! synthetic set in the same layout is generated (the real one cannot be downloaded here).
//! Every training validates after each epoch and ends with the weights of its best
//! validation epoch, whose test accuracy is reported (`--last-epoch`: the last epoch's);
//! `--seeds K` reports every mode over K seeds.

use clap::Parser;
use neuropart::comm::Communicator;
use neuropart::data::OnBadImage;
use neuropart::prelude::*;
use neuropart::{open_backend_in, DeviceChoice, Format, Setup, TrainConfig};
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// EuroSAT folder (class subfolders of 64x64 images); default: generate synthetic data.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Images per class to use (default: all).
    #[arg(long)]
    per_class: Option<usize>,
    /// Without --data: images per class of the generated synthetic set.
    #[arg(long, default_value_t = 40, conflicts_with = "data")]
    synthetic: usize,
    /// Skip or fail on unreadable / wrongly sized images.
    #[arg(long, value_enum, default_value = "skip")]
    on_bad_image: OnBadImage,
    /// Output folder: one subfolder per mode, and fig4.png / fig4.csv.
    #[arg(long, default_value = "eurosat-out")]
    out: PathBuf,
    /// Epochs per mode (the defaults of --epochs, --batch, --lr, --lr-decay and --lr-warmup
    /// were chosen by measurement over 5 seeds: see the README).
    #[arg(long, default_value_t = 60)]
    epochs: usize,
    /// Time steps.
    #[arg(long, default_value_t = 30)]
    steps: u32,
    /// Backend (the intended use is a GPU).
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
    /// Modes to train (default: all three).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ideal,emulated,mixed"
    )]
    modes: Vec<Mode>,
    /// Samples per optimiser step.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Adam learning rate of the first epoch.
    #[arg(long, default_value_t = 0.006)]
    lr: f32,
    /// Learning rate factor per epoch.
    #[arg(long, default_value_t = 0.98)]
    lr_decay: f32,
    /// Epochs over which the learning rate rises linearly to --lr (0: none).
    #[arg(long, default_value_t = 4)]
    lr_warmup: usize,
    /// SuperSpike steepness α of the surrogate gradient 1/(α|v − ϑ| + 1)²: lower reaches
    /// neurons further from threshold.
    #[arg(long, default_value_t = 50.0)]
    surrogate_alpha: f32,
    /// End every training with the weights of its last epoch instead of those of the epoch
    /// with the best validation accuracy.
    #[arg(long)]
    last_epoch: bool,
    /// Let a class whose readout never rose above its start (its maximum over time before any
    /// input, so without gradient) stay silent, instead of passing its gradient to the mean
    /// of its membrane over the steps with input (see the README).
    #[arg(long)]
    no_revive: bool,
    /// Seed of the shuffling and the noise (and, with --init-per-seed, of the initial weights).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seed of the initial weights, the same for every training seed (default: the network
    /// file's, 2): the seeds then differ in shuffling and noise, and the modes of one seed
    /// start alike.
    #[arg(long, conflicts_with = "init_per_seed")]
    init_seed: Option<u64>,
    /// Let every training seed draw its own initial weights (some draws leave the network
    /// almost silent at the start: see the README).
    #[arg(long)]
    init_per_seed: bool,
    /// Seed of the train / validation / test split (and of the synthetic set), the same for
    /// every training seed.
    #[arg(long, default_value_t = 1)]
    split_seed: u64,
    /// Train every mode with this many seeds (--seed, --seed + 1, ...) and report per mode the
    /// test accuracy's mean, standard deviation, minimum and maximum, whether the differences
    /// between modes exceed that spread, fig4-seeds.csv and fig4-seeds.png (mean curves with
    /// min–max bands).
    #[arg(long, default_value_t = 1)]
    seeds: u64,
}

/// The network and its substrate, built into the example so that it runs from any folder.
const NETWORK: &str = include_str!("networks/eurosat.toml");
const SUBSTRATE: &str = include_str!("networks/eurosat-substrate.toml");

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
    let lead = comm.rank() == 0;
    // The first process writes the synthetic set into the cache, the others read it.
    let dir = neuropart::comm::first_then_rest(comm, || match &a.data {
        Some(d) => Ok(d.clone()),
        None => {
            // One folder per size and seed: a cached set is the one asked for.
            let d = neuropart::data::cache_dir("eurosat-synthetic")
                .join(format!("{}-per-class-seed-{}", a.synthetic, a.split_seed));
            if !d.join("SeaLake").exists() {
                eprintln!(
                    "no --data: generating a synthetic EuroSAT-layout set in {}",
                    d.display()
                );
                neuropart::data::write_synthetic_eurosat(&d, a.synthetic, a.split_seed)?;
            }
            Ok::<_, neuropart::Error>(d)
        }
    })?;
    let data = neuropart::data::eurosat(&dir, a.per_class, a.on_bad_image)?;
    let (train, val, test) = neuropart::data::stratified_split(&data, 0.15, 0.15, a.split_seed);
    // Processes started together must have the same options and data.
    neuropart::comm::agree(
        comm,
        &[
            neuropart::comm::command_line(),
            ("data set".into(), data.digest()),
        ],
    )?;
    if lead {
        eprintln!(
            "EuroSAT from {}: {} images, split {} / {} / {} (train / validation / test)",
            dir.display(),
            data.len(),
            train.len(),
            val.len(),
            test.len()
        );
    }
    let sub = Substrate::from_str(
        SUBSTRATE,
        Format::Toml,
        std::path::Path::new("examples/networks/eurosat-substrate.toml"),
    )?;
    // The initial weights: the network file's, another fixed seed's, or each training seed's.
    let net = |seed: u64| -> neuropart::Result<Network> {
        let mut net = Network::from_str(
            NETWORK,
            Format::Toml,
            std::path::Path::new("examples/networks/eurosat.toml"),
            &sub,
        )?;
        let init = if a.init_per_seed {
            Some(seed)
        } else {
            a.init_seed
        };
        if let Some(init) = init {
            net.seed = init;
            for p in &mut net.projections {
                p.weights.clear();
            }
            net.materialise_weights()?;
        }
        Ok(net)
    };
    let backend = open_backend_in(a.device, comm)?;
    let cfg = TrainConfig {
        epochs: a.epochs,
        batch: a.batch,
        lr: a.lr,
        lr_decay: a.lr_decay,
        lr_warmup: a.lr_warmup,
        surrogate_alpha: a.surrogate_alpha,
        keep_best: !a.last_epoch,
        revive_silent_classes: !a.no_revive,
        augment: false,
        // count⁴ of the MNIST set-up is far too strong for a convolutional layer that spikes
        // many times per sample.
        reg_spikes: 0.0,
        seed: a.seed,
        ..Default::default()
    };
    let setup = Setup {
        substrate: sub.clone(),
        ..Setup::new(a.steps, Mode::Ideal)
    };
    let summary = if a.seeds > 1 {
        let seeds: Vec<u64> = (a.seed..a.seed + a.seeds).collect();
        neuropart::experiment::compare_modes_over_seeds(
            &net, &setup, &a.modes, &*backend, cfg, &seeds, &train, &val, &test, &a.out, comm,
        )?
    } else {
        neuropart::experiment::compare_modes(
            &net(a.seed)?,
            &setup,
            &a.modes,
            &*backend,
            cfg,
            &train,
            &val,
            &test,
            &a.out,
            comm,
        )?
    };
    if lead {
        print!("{summary}");
    }
    Ok(())
}

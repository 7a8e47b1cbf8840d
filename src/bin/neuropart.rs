//! The `neuropart` command line: plan, run and benchmark partitioned networks.

use clap::{Parser, Subcommand};
use neuropart::analog::{AnalogConfig, Mode};
use neuropart::backend::{open_backend, DeviceChoice, GpuBackend};
use neuropart::data::Dataset;
use neuropart::experiment::Setup;
use neuropart::prelude::*;
use neuropart::report::{draw_placement, PlanReport};
use neuropart::spikes::SpikeFile;
use neuropart::train::{TrainConfig, Trainer};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "neuropart",
    version,
    about = "Partitioned emulation of analog neuromorphic hardware"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Target {
    /// Network file (.toml or .json).
    network: PathBuf,
    /// Substrate file (TOML); default: BrainScaleS-2.
    #[arg(long)]
    substrate: Option<PathBuf>,
    /// Number of chips (partitions of a wave run concurrently on up to this many).
    #[arg(long, default_value_t = 1)]
    chips: usize,
    /// Let consecutive layers that each fit one substrate share a run.
    #[arg(long)]
    merge_layers: bool,
}

#[derive(clap::Args)]
struct DataArgs {
    /// Folder with the MNIST IDX files; default: fetched into data-cache/mnist.
    #[arg(long)]
    data: Option<PathBuf>,
    /// ideal, emulated, or mixed (first layer emulated).
    #[arg(long, value_enum, default_value = "emulated")]
    mode: Mode,
    /// Backend.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
    /// Time steps (default: the network's).
    #[arg(long)]
    steps: Option<u32>,
    /// Use only the first N training images (0 = all).
    #[arg(long, default_value_t = 0)]
    train_samples: usize,
    /// Use only the first N test images (0 = all).
    #[arg(long, default_value_t = 0)]
    test_samples: usize,
}

impl DataArgs {
    fn load(&self) -> neuropart::Result<(Dataset, Dataset)> {
        let dir = self
            .data
            .clone()
            .unwrap_or_else(|| neuropart::data::cache_dir("mnist"));
        let (mut train, mut test) = neuropart::data::mnist(&dir, self.data.is_none())?;
        if self.train_samples > 0 {
            train = train.take(self.train_samples);
        }
        if self.test_samples > 0 {
            test = test.take(self.test_samples);
        }
        Ok((train, test))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Show how a network is partitioned and scheduled.
    Plan {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Draw the placement of every partition to this PNG.
        #[arg(long)]
        png: Option<PathBuf>,
    },
    /// Run a network on input spikes (JSON spike file) and write all spikes.
    Run {
        #[command(flatten)]
        target: Target,
        /// Input spike file: {"steps": T, "populations": {"input": [[[step, neuron], ...], ...]}}.
        #[arg(long)]
        input: PathBuf,
        /// Output spike file (same format, every population); default: stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Train a network on MNIST (surrogate gradients, emulated chip), evaluating every epoch.
    Train {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        data: DataArgs,
        /// Epochs.
        #[arg(long, default_value_t = 10)]
        epochs: usize,
        /// Samples per optimiser step.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Adam learning rate.
        #[arg(long, default_value_t = 0.002)]
        lr: f32,
        /// Seed of shuffling, augmentation and noise.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output folder (CSV, PNGs, checkpoint.json).
        #[arg(long, default_value = "train-out")]
        out: PathBuf,
        /// Continue from OUT/checkpoint.json.
        #[arg(long)]
        resume: bool,
    },
    /// Evaluate a trained checkpoint on the MNIST test set.
    Eval {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        data: DataArgs,
        /// Checkpoint written by `train`.
        #[arg(long)]
        checkpoint: PathBuf,
    },
    /// Throughput of the MNIST network (or --network) on random TTFS input, CPU and GPU.
    Bench {
        /// Network file; default: the paper's 784-256-10 MNIST network.
        #[arg(long)]
        network: Option<PathBuf>,
        /// Batch sizes (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "256")]
        batch: Vec<usize>,
        /// Time steps (overrides the network's).
        #[arg(long, default_value_t = 100)]
        steps: u32,
        /// Minimum seconds per measurement.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Backend; default: the CPU and, if there is one, the GPU.
        #[arg(long, value_enum)]
        device: Option<DeviceChoice>,
        /// Substrate file (TOML); default: BrainScaleS-2.
        #[arg(long)]
        substrate: Option<PathBuf>,
        /// Fraction of input pixels that are on (MNIST: about 0.19).
        #[arg(long, default_value_t = 0.19)]
        density: f64,
        /// Chips: run up to this many partitions of a wave at the same time.
        #[arg(long, default_value_t = 1)]
        chips: usize,
    },
}

fn substrate(path: &Option<PathBuf>) -> neuropart::Result<Substrate> {
    match path {
        Some(p) => Substrate::load(p),
        None => Ok(Substrate::bss2()),
    }
}

fn executor(t: &Target) -> neuropart::Result<Executor> {
    let sub = substrate(&t.substrate)?;
    let net = Network::load(&t.network, &sub)?;
    Executor::new(
        net,
        &sub,
        t.chips,
        &PartitionOptions {
            merge_layers: t.merge_layers,
        },
    )
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> neuropart::Result<()> {
    match cli.command {
        Command::Plan { target, json, png } => {
            let sub = substrate(&target.substrate)?;
            let net = Network::load(&target.network, &sub)?;
            let plan = Plan::new(
                &net,
                &sub,
                &PartitionOptions {
                    merge_layers: target.merge_layers,
                },
            )?;
            let schedule = Schedule::new(&plan, neuropart::schedule::Mode::for_chips(target.chips));
            let report = PlanReport::new(&net, &plan, &schedule, target.chips);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serialises")
                );
            } else {
                print!("{}", report.text());
            }
            if let Some(p) = png {
                draw_placement(&net, &plan, &p)?;
                eprintln!("placement drawn to {}", p.display());
            }
        }
        Command::Run {
            target,
            input,
            output,
        } => {
            let exec = executor(&target)?;
            let text =
                std::fs::read_to_string(&input).map_err(|e| neuropart::Error::io(&input, e))?;
            let file: SpikeFile =
                serde_json::from_str(&text).map_err(|e| neuropart::Error::Parse {
                    path: input.clone(),
                    message: e.to_string(),
                })?;
            let net = &exec.network;
            if file.steps != net.steps {
                return Err(neuropart::Error::InvalidInput(format!(
                    "{}: {} steps, the network runs {}",
                    input.display(),
                    file.steps,
                    net.steps
                )));
            }
            let mut inputs = Vec::new();
            for (name, lists) in &file.populations {
                let pop = net.population_id(name).ok_or_else(|| {
                    neuropart::Error::InvalidInput(format!(
                        "{}: no population '{name}' in the network",
                        input.display()
                    ))
                })?;
                let t = SpikeFile::lists_to_trains(lists, net.populations[pop].size, net.steps)?;
                inputs.push((pop, t));
            }
            let out = exec.run(&CpuBackend, &inputs, Observe::Scores)?;
            let mut result = SpikeFile {
                steps: net.steps,
                ..Default::default()
            };
            for (p, pop) in net.populations.iter().enumerate() {
                if let Some(t) = out.spikes.get(p) {
                    result
                        .populations
                        .insert(pop.name.clone(), SpikeFile::trains_to_lists(t));
                }
            }
            let text = serde_json::to_string(&result).expect("serialises");
            match output {
                Some(p) => neuropart::io::write_atomic(&p, text.as_bytes())?,
                None => println!("{text}"),
            }
        }
        Command::Train {
            target,
            data,
            epochs,
            batch,
            lr,
            seed,
            out,
            resume,
        } => {
            let sub = substrate(&target.substrate)?;
            let net = Network::load(&target.network, &sub)?;
            let (train, test) = data.load()?;
            let steps = data.steps.unwrap_or(net.steps);
            let backend = open_backend(data.device)?;
            let cfg = TrainConfig {
                epochs,
                batch,
                lr,
                seed,
                ..Default::default()
            };
            let setup = Setup {
                substrate: sub,
                steps,
                mode: data.mode,
                analog: AnalogConfig::default(),
                chips: target.chips,
                partition: PartitionOptions {
                    merge_layers: target.merge_layers,
                },
            };
            let t = neuropart::experiment::train_and_report(
                net, &setup, &*backend, cfg, &train, &test, &out, resume,
            )?;
            if let Some(r) = t.history.last() {
                println!(
                    "final: test accuracy {:.2}%, test loss {:.4} ({:?} mode, {} epochs); outputs in {}",
                    100.0 * r.test_accuracy,
                    r.test_loss,
                    data.mode,
                    r.epoch,
                    out.display()
                );
            }
        }
        Command::Eval {
            target,
            data,
            checkpoint,
        } => {
            let sub = substrate(&target.substrate)?;
            let mut net = Network::load(&target.network, &sub)?;
            if let Some(s) = data.steps {
                net.steps = s;
            }
            let (_, test) = data.load()?;
            let backend = open_backend(data.device)?;
            let exec = Executor::emulated(
                net,
                &sub,
                target.chips,
                &PartitionOptions {
                    merge_layers: target.merge_layers,
                },
                AnalogConfig::default(),
                data.mode,
            )?;
            let mut t = Trainer::new(exec, TrainConfig::default())?;
            t.resume(&checkpoint)?;
            let st = t.evaluate(&*backend, &test, 500)?;
            println!(
                "{} test images ({:?} mode): accuracy {:.2}%, loss {:.4}, {:.1} hidden spikes per sample",
                st.samples,
                data.mode,
                100.0 * st.correct as f64 / st.samples.max(1) as f64,
                st.loss / st.samples.max(1) as f64,
                st.hidden_spikes / st.samples.max(1) as f64
            );
        }
        Command::Bench {
            network,
            batch,
            steps,
            seconds,
            device,
            substrate: sub_file,
            density,
            chips,
        } => {
            let sub = substrate(&sub_file)?;
            let mut net = match network {
                Some(p) => Network::load(&p, &sub)?,
                None => neuropart::network::mnist_network(1).build(&sub)?,
            };
            net.steps = steps;
            let exec = Executor::new(net, &sub, chips, &PartitionOptions::default())?;
            let backends: Vec<Box<dyn Backend>> = match device {
                Some(d) => vec![open_backend(d)?],
                None => {
                    let mut v: Vec<Box<dyn Backend>> = vec![Box::new(CpuBackend)];
                    match GpuBackend::new() {
                        Ok(g) => v.push(Box::new(g)),
                        Err(e) => eprintln!("no GPU row: {e}"),
                    }
                    v
                }
            };
            println!(
                "network '{}': {} partitions in {} rounds ({} chip{}: up to {} partitions at the \
                 same time), T = {steps}, random TTFS input ({:.0}% of pixels on)",
                exec.network.name,
                exec.plan.partitions.len(),
                exec.schedule.rounds.len(),
                chips,
                if chips == 1 { "" } else { "s" },
                exec.schedule.rounds.iter().map(Vec::len).max().unwrap_or(0),
                100.0 * density
            );
            let mut rows = Vec::new();
            for &b in &batch {
                let inputs = neuropart::bench::random_inputs(&exec, b, density, 7);
                for be in &backends {
                    rows.push(neuropart::bench::measure(
                        &exec,
                        be.as_ref(),
                        &inputs,
                        Duration::from_secs_f64(seconds),
                    )?);
                }
            }
            print!("{}", neuropart::bench::table(&rows));
            for r in &rows {
                println!(
                    "{} (batch {}): {:.1} spikes recorded and {:.1} replayed per sample",
                    r.backend,
                    r.batch,
                    r.stats.spikes_recorded_per_sample,
                    r.stats.spikes_replayed_per_sample
                );
            }
            if exec.plan.partitions.len() <= 32 {
                println!("\nper partition run (time inside the backend per batch):");
                print!("{}", neuropart::bench::partition_table(&exec, &rows));
            }
        }
    }
    Ok(())
}

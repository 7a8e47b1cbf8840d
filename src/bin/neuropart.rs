//! The `neuropart` command line: plan, run, train, evaluate, export and benchmark partitioned
//! networks. Thin over the library; every option it accepts changes what it does.

use clap::{Parser, Subcommand};
use neuropart::comm::Communicator;
use neuropart::prelude::*;
use neuropart::{
    open_backend_in, AnalogConfig, Checkpoint, Dataset, DeviceChoice, PlanReport, Setup, SpikeFile,
    TrainConfig, Trainer,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "neuropart",
    version,
    about = "Partitioned emulation of analog neuromorphic hardware (BrainScaleS-2 class)"
)]
struct Cli {
    /// Memory the process may plan for (e.g. 8G, 512M); default: 80% of the machine's.
    /// Plans, runs and trainings that would need more are refused before allocating.
    #[arg(long, global = true, value_parser = neuropart::parse_size)]
    max_memory: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

/// A positive integer option.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        Ok(_) => Err("must be at least 1".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A number of chips to draw: 1 to 65 536.
fn chip_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=65_536).contains(&n) => Ok(n),
        Ok(n) => Err(format!("{n} chips; draw 1 to 65536")),
        Err(e) => Err(e.to_string()),
    }
}

/// A finite number above 0.
fn positive(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(v) => Err(format!("{v} is not a finite number above 0")),
        Err(e) => Err(e.to_string()),
    }
}

/// A number of steps: 1 to 2^30.
fn steps(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=neuropart::MAX_STEPS).contains(&n) => Ok(n),
        Ok(n) => Err(format!(
            "{n} steps; a run has 1 to {}",
            neuropart::MAX_STEPS
        )),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(clap::Args)]
struct Target {
    /// Network file (.toml or .json).
    network: PathBuf,
    /// Substrate file (TOML); default: BrainScaleS-2.
    #[arg(long)]
    substrate: Option<PathBuf>,
    /// Chips: run up to this many partitions of a wave at the same time (default 1); with a
    /// [system] in the substrate file, the system's chip count instead of its `chips`.
    #[arg(long, value_parser = at_least_one)]
    chips: Option<usize>,
    /// Let consecutive layers that each fit one substrate share a run.
    #[arg(long)]
    merge_layers: bool,
    /// How partitions share the system runs of a [system]: concurrent (as many as the system
    /// has chips, spikes between them over the links), sequential (only independent ones;
    /// dependencies through the host) or auto (concurrent when the network fits one system
    /// run). Needs a [system] in the substrate file.
    #[arg(long, value_enum)]
    placement: Option<neuropart::Placement>,
}

impl Target {
    /// The substrate file's chip (default BrainScaleS-2), its system's chips set by --chips;
    /// --placement without a system is an error.
    fn substrate(&self) -> neuropart::Result<Substrate> {
        let mut sub = substrate(&self.substrate)?;
        match (&mut sub.system, self.chips) {
            (Some(sys), Some(c)) => {
                sys.chips = c;
                sub.validate()?;
            }
            (None, _) if self.placement.is_some() => {
                return Err(neuropart::Error::option(
                    "--placement",
                    format!("{:?}", self.placement.expect("given")).to_lowercase(),
                    "needs a multi-chip system: a [system] section in the --substrate file",
                ))
            }
            _ => {}
        }
        Ok(sub)
    }

    /// Chips of a wave that run at the same time (without a system).
    fn chips(&self) -> usize {
        self.chips.unwrap_or(1)
    }

    fn options(&self) -> PartitionOptions {
        PartitionOptions {
            merge_layers: self.merge_layers,
            placement: self.placement.unwrap_or_default(),
        }
    }

    /// How to partition and emulate on `sub` (these chips and options, the default analog
    /// effects): `steps` steps, `mode`.
    fn setup(&self, sub: Substrate, steps: u32, mode: Mode) -> Setup {
        Setup {
            substrate: sub,
            steps,
            mode,
            analog: AnalogConfig::default(),
            chips: self.chips(),
            partition: self.options(),
        }
    }
}

#[derive(clap::Args)]
struct DataArgs {
    /// Folder of an IDX image-classification set (train-images-idx3-ubyte, ... plain or .gz:
    /// MNIST, Fashion-MNIST, ...); default: MNIST, fetched into data-cache/mnist.
    #[arg(long)]
    data: Option<PathBuf>,
    /// ideal, emulated, or mixed (first layer emulated).
    #[arg(long, value_enum, default_value = "emulated")]
    mode: Mode,
    /// Backend.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
    /// Time steps (default: the network's, or the checkpoint's).
    #[arg(long, value_parser = steps)]
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
        let (mut train, mut test) = match &self.data {
            Some(dir) => neuropart::data::load_idx_dir(dir)?,
            None => neuropart::data::mnist(&neuropart::data::cache_dir("mnist"))?,
        };
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
        /// Draw the placement of the partitions (PNG, or SVG by extension).
        #[arg(long)]
        png: Option<PathBuf>,
    },
    /// Run a network on input spikes (a JSON spike file) and write every population's spikes,
    /// each readout's scores (maximum membrane over time) and predicted class per sample, and
    /// the membranes with --membranes.
    Run {
        #[command(flatten)]
        target: Target,
        /// Input spike file: {"steps": T, "populations": {"input": [[[step, neuron], ...], ...]}}.
        #[arg(long)]
        input: PathBuf,
        /// Output file (same format plus "scores", "predicted", "membranes"); default: stdout.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Backend.
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceChoice,
        /// ideal, emulated, or mixed (first layer emulated).
        #[arg(long, value_enum, default_value = "ideal")]
        mode: Mode,
        /// Trained weights (a checkpoint written by `train`).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Seed of the temporal noise (emulated partitions).
        #[arg(long, default_value_t = 0)]
        seed: u32,
        /// Also write every population's membrane at every step.
        #[arg(long)]
        membranes: bool,
    },
    /// Train a network with one input and one readout population on an image-classification
    /// set (MNIST by default, any IDX set with --data) with surrogate gradients on the emulated
    /// chip, evaluating on the test split after every epoch.
    Train {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        data: DataArgs,
        /// Epochs (with --resume: train until this many are done).
        #[arg(long, default_value = "15", value_parser = at_least_one)]
        epochs: usize,
        /// Samples per optimiser step.
        #[arg(long, default_value = "100", value_parser = at_least_one)]
        batch: usize,
        /// Adam learning rate (decayed ×0.97 per epoch).
        #[arg(long, default_value = "0.002", value_parser = positive, allow_hyphen_values = true)]
        lr: f32,
        /// Seed of shuffling, augmentation and noise.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output folder (CSV, PNGs, checkpoint.json); checked to be writable first.
        #[arg(long, default_value = "train-out")]
        out: PathBuf,
        /// Continue from OUT/checkpoint.json up to --epochs.
        #[arg(long)]
        resume: bool,
        /// Start afresh over a checkpoint already in OUT (without it, that is refused).
        #[arg(long, conflicts_with = "resume")]
        force: bool,
    },
    /// Evaluate a trained checkpoint on the test split of the data (MNIST by default).
    Eval {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        data: DataArgs,
        /// Checkpoint written by `train`.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Evaluate on this many independently drawn emulated chips (each its own fixed-pattern
        /// variation) and report per chip, mean, standard deviation, minimum and maximum as a
        /// table, `OUT/chips.csv` and the histogram `OUT/chips.png`.
        #[arg(long, value_parser = chip_count)]
        chip_instances: Option<usize>,
        /// With --chip-instances: the seed the chips are drawn from.
        #[arg(long, default_value = "1", requires = "chip_instances")]
        chip_seed: u64,
        /// With --chip-instances: output folder.
        #[arg(long, default_value = "sweep-out", requires = "chip_instances")]
        out: PathBuf,
    },
    /// Write the network file with a checkpoint's trained weights (and steps).
    Export {
        /// Network file (.toml or .json).
        network: PathBuf,
        /// Substrate file (TOML); default: BrainScaleS-2.
        #[arg(long)]
        substrate: Option<PathBuf>,
        /// Checkpoint written by `train`.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output network file (.toml or .json).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Throughput of the MNIST network (or --network) on random TTFS input, CPU and GPU.
    Bench {
        /// Network file; default: the paper's 784-256-10 MNIST network.
        #[arg(long)]
        network: Option<PathBuf>,
        /// Batch sizes (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "256", value_parser = at_least_one)]
        batch: Vec<usize>,
        /// Time steps (overrides the network's).
        #[arg(long, default_value = "100", value_parser = steps)]
        steps: u32,
        /// Minimum seconds per measurement.
        #[arg(long, default_value = "2", value_parser = positive, allow_hyphen_values = true)]
        seconds: f32,
        /// Backend; default: the CPU and, if there is one, the GPU.
        #[arg(long, value_enum)]
        device: Option<DeviceChoice>,
        /// Substrate file (TOML); default: BrainScaleS-2.
        #[arg(long)]
        substrate: Option<PathBuf>,
        /// Fraction of input pixels that are on, in [0, 1] (MNIST: about 0.19).
        #[arg(long, default_value_t = 0.19, allow_hyphen_values = true)]
        density: f64,
        /// Chips: run up to this many partitions of a wave at the same time (default 1); with a
        /// [system] in the substrate file, the system's chip count.
        #[arg(long, value_parser = at_least_one)]
        chips: Option<usize>,
        /// How partitions share the system runs of a [system] (see `plan --help`).
        #[arg(long, value_enum, conflicts_with = "train")]
        placement: Option<neuropart::Placement>,
        /// Benchmark training instead (the MNIST network, the published set-up, random
        /// MNIST-shaped input): one warm-up batch, then --batches timed ones, one row per
        /// device and batch size; --steps, --density and --chips apply.
        #[arg(long, conflicts_with_all = ["network", "substrate", "seconds"])]
        train: bool,
        /// With --train: ideal or emulated (or mixed).
        #[arg(long, value_enum, default_value = "emulated", requires = "train")]
        mode: Mode,
        /// With --train: timed batches.
        #[arg(long, default_value = "20", value_parser = at_least_one, requires = "train")]
        batches: usize,
    },
}

/// The backends `bench` measures: `device`, or the CPU and, where every process has one, its
/// GPU (by its index on the machine when there are several). All processes measure the same
/// rows, so that they take part in the same exchanges.
fn bench_backends(
    device: Option<DeviceChoice>,
    comm: &dyn Communicator,
) -> neuropart::Result<Vec<Box<dyn Backend>>> {
    if let Some(d) = device {
        return Ok(vec![open_backend_in(d, comm)?]);
    }
    let mut v: Vec<Box<dyn Backend>> = vec![Box::new(CpuBackend)];
    let gpu = neuropart::gpu_backend_in(comm);
    let opened = comm.all_gather_bytes(&[u8::from(gpu.is_ok())]);
    let without = opened.iter().filter(|b| b[0] == 0).count();
    match gpu {
        Ok(g) if without == 0 => v.push(Box::new(g)),
        Ok(_) => eprintln!(
            "no GPU row: {without} of {} processes have no usable GPU",
            comm.size()
        ),
        Err(e) => eprintln!("no GPU row: {e}"),
    }
    Ok(v)
}

/// ", N processes (each a shard of every batch)" when there are several.
fn processes(comm: &dyn Communicator) -> String {
    if comm.size() > 1 {
        format!(", {} processes (each a shard of every batch)", comm.size())
    } else {
        String::new()
    }
}

fn substrate(path: &Option<PathBuf>) -> neuropart::Result<Substrate> {
    match path {
        Some(p) => Substrate::load(p),
        None => Ok(Substrate::bss2()),
    }
}

/// On a system: the estimated hardware time per sample and the links' measured traffic
/// (empty without a system).
fn system_summary(exec: &Executor, links: Option<&neuropart::LinkStats>) -> String {
    let Some(sys) = neuropart::SystemReport::new(&exec.plan, exec.network.steps) else {
        return String::new();
    };
    let mut s = format!(
        "system: {} system run{} on up to {} of {} chips, delivery delay {} step{}; estimated \
         hardware time {:.1} us per sample\n",
        sys.system_runs.len(),
        if sys.system_runs.len() == 1 { "" } else { "s" },
        sys.chips_used,
        sys.chips,
        sys.delay_steps,
        if sys.delay_steps == 1 { "" } else { "s" },
        sys.hardware_us_per_sample
    );
    match links {
        Some(l) => {
            s += &l.text(
                &exec
                    .plan
                    .substrate
                    .system
                    .as_ref()
                    .expect("a system")
                    .links(),
            )
        }
        None => s += "links: no spikes crossed chips while they ran\n",
    }
    s
}

/// Whether `a` and `b` name the same existing file (through links and relative paths too).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// The files a command reads, named for a person.
fn input_files(command: &Command) -> Vec<(&'static str, PathBuf)> {
    let mut v = Vec::new();
    let mut target = |t: &Target| {
        v.push(("network file", t.network.clone()));
        if let Some(s) = &t.substrate {
            v.push(("substrate file", s.clone()));
        }
    };
    match command {
        Command::Plan { target: t, .. } | Command::Train { target: t, .. } => target(t),
        Command::Run {
            target: t,
            input,
            checkpoint,
            ..
        } => {
            target(t);
            v.push(("input spike file", input.clone()));
            if let Some(c) = checkpoint {
                v.push(("checkpoint", c.clone()));
            }
        }
        Command::Eval {
            target: t,
            checkpoint,
            ..
        } => {
            target(t);
            v.push(("checkpoint", checkpoint.clone()));
        }
        Command::Export { .. } => {}
        Command::Bench {
            network, substrate, ..
        } => {
            v.extend(network.iter().map(|p| ("network file", p.clone())));
            v.extend(substrate.iter().map(|p| ("substrate file", p.clone())));
        }
    }
    v
}

/// Check that every process loaded the same data sets.
fn agree_on_data(comm: &dyn Communicator, sets: &[(&str, &Dataset)]) -> neuropart::Result<()> {
    let items: Vec<(String, u64)> = sets
        .iter()
        .map(|(what, d)| (what.to_string(), d.digest()))
        .collect();
    neuropart::comm::agree(comm, &items)
}

/// Print warnings to stderr.
fn warn(lines: &[String]) {
    for w in lines {
        eprintln!("warning: {w}");
    }
}

fn main() -> ExitCode {
    neuropart::gpu::quiet_vulkan_loader();
    let cli = Cli::parse();
    if let Some(m) = cli.max_memory {
        neuropart::set_memory_limit(m);
    }
    // Started with mpirun (binary built with `--features mpi`): the processes share the
    // work, the first one reports and writes.
    let world = neuropart::comm::world();
    match run(cli.command, &*world) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if world.size() > 1 {
                eprintln!("error (process {} of {}): {e}", world.rank(), world.size());
                world.abort(1);
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The network of `target` with `steps` (if given) and a checkpoint's weights (if given; its
/// steps unless `steps` says otherwise, said out loud).
fn load_network(
    path: &Path,
    sub: &Substrate,
    steps: Option<u32>,
    checkpoint: Option<&Path>,
) -> neuropart::Result<(Network, Option<Checkpoint>)> {
    let mut net = Network::load(path, sub)?;
    let ck = match checkpoint {
        Some(c) => {
            let ck = Checkpoint::load(c)?;
            ck.apply_weights(&mut net, c)?;
            if let (Some(s), None) = (ck.steps, steps) {
                if s != net.steps {
                    eprintln!(
                        "using {s} steps, as {} was trained with (the network file says {})",
                        c.display(),
                        net.steps
                    );
                    net.steps = s;
                }
            }
            Some(ck)
        }
        None => None,
    };
    if let Some(s) = steps {
        net.steps = s;
    }
    Ok((net, ck))
}

fn run(command: Command, comm: &dyn Communicator) -> neuropart::Result<()> {
    let lead = comm.rank() == 0;
    let open_backend = |d| open_backend_in(d, comm);
    let warn = |lines: &[String]| {
        if lead {
            warn(lines)
        }
    };
    // Nothing to share in a plan or an export: the first process does it alone.
    if !lead && matches!(command, Command::Plan { .. } | Command::Export { .. }) {
        return Ok(());
    }
    // Processes started together must have been given the same command, files and data.
    if comm.size() > 1 && !matches!(command, Command::Plan { .. } | Command::Export { .. }) {
        let mut items = vec![neuropart::comm::command_line()];
        for (what, path) in input_files(&command) {
            let d = std::fs::read(&path).map_or(0, |b| neuropart::comm::digest(&b));
            items.push((format!("{what} ({})", path.display()), d));
        }
        neuropart::comm::agree(comm, &items)?;
    }
    match command {
        Command::Plan { target, json, png } => {
            let sub = target.substrate()?;
            let net = Network::load(&target.network, &sub)?;
            let plan = Plan::new(&net, &sub, &target.options())?;
            let ctx = neuropart::CompileContext::ideal(&net)?;
            warn(&neuropart::precision_warnings(&net, &ctx));
            let schedule = Schedule::new(&plan, target.chips());
            let report = PlanReport::new(&net, &plan, &schedule);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serialises")
                );
            } else {
                print!("{}", report.text());
            }
            if let Some(p) = png {
                if plan.system.is_some() {
                    // The system (chips, links, traffic) here; every chip's circuits beside it.
                    let stem = p.file_stem().unwrap_or_default().to_string_lossy();
                    let ext = p.extension().map_or("png".into(), |e| e.to_string_lossy());
                    let chips = p.with_file_name(format!("{stem}-chips.{ext}"));
                    neuropart::plot::system(&net, &plan, &p)?;
                    neuropart::plot::placement(&net, &plan, &chips)?;
                    eprintln!(
                        "system drawn to {}, the chips' circuits to {}",
                        p.display(),
                        chips.display()
                    );
                } else {
                    neuropart::plot::placement(&net, &plan, &p)?;
                    eprintln!("placement drawn to {}", p.display());
                }
            }
        }
        Command::Run {
            target,
            input,
            output,
            device,
            mode,
            checkpoint,
            seed,
            membranes,
        } => {
            let sub = target.substrate()?;
            let (net, _) = load_network(&target.network, &sub, None, checkpoint.as_deref())?;
            let exec = target.setup(sub, net.steps, mode).executor(net)?;
            warn(&exec.warnings);
            let file = SpikeFile::load(&input)?;
            let inputs = exec.inputs_from_file(&file, &input)?;
            let backend = open_backend(device)?;
            let observe = if membranes {
                Observe::AllTraces
            } else {
                Observe::Scores
            };
            // With several processes each runs a shard of the samples, the first writes all.
            let Some((file, links)) = neuropart::experiment::run_in(
                &exec, &*backend, comm, &inputs, observe, seed, membranes,
            )?
            else {
                return Ok(());
            };
            let text = serde_json::to_string(&file).expect("serialises");
            match output {
                Some(p) => neuropart::io::write_atomic(&p, text.as_bytes())?,
                None => println!("{text}"),
            }
            eprint!("{}", system_summary(&exec, links.as_ref()));
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
            force,
        } => {
            let cfg = TrainConfig {
                epochs,
                batch,
                lr,
                seed,
                ..Default::default()
            };
            cfg.validate()?;
            let existing = out.join("checkpoint.json");
            if !resume && !force && existing.exists() {
                return Err(neuropart::Error::option(
                    "--out",
                    out.display(),
                    format!(
                        "{} is a checkpoint of an earlier training; continue it with --resume, \
                         or start afresh over it with --force",
                        existing.display()
                    ),
                ));
            }
            neuropart::io::check_writable(&out)?;
            let sub = target.substrate()?;
            let (net, _) = load_network(&target.network, &sub, data.steps, None)?;
            let (train, test) = neuropart::comm::first_then_rest(comm, || data.load())?;
            agree_on_data(comm, &[("training set", &train), ("test set", &test)])?;
            let backend = open_backend(data.device)?;
            let setup = target.setup(sub, net.steps, data.mode);
            let t = neuropart::experiment::train_and_report(
                net, &setup, &*backend, cfg, &train, &test, &out, resume, comm,
            )?;
            if !lead {
                return Ok(());
            }
            if let Some(r) = t.history.last() {
                println!(
                    "final: test accuracy {:.2}%, test loss {:.4} ({:?} mode, {} epochs); outputs in {}",
                    100.0 * r.test_accuracy.unwrap_or(f64::NAN),
                    r.test_loss.unwrap_or(f64::NAN),
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
            chip_instances,
            chip_seed,
            out,
        } => {
            let sub = target.substrate()?;
            let (net, ck) = load_network(&target.network, &sub, data.steps, Some(&checkpoint))?;
            let ck = ck.expect("loaded");
            if chip_instances.is_some() && data.mode == Mode::Ideal {
                return Err(neuropart::Error::option(
                    "--chip-instances",
                    chip_instances.unwrap_or(0),
                    "needs --mode emulated or mixed (an ideal run has no chip)",
                ));
            }
            if chip_instances.is_some() && lead {
                neuropart::io::check_writable(&out)?;
            }
            let (_, test) = neuropart::comm::first_then_rest(comm, || data.load())?;
            agree_on_data(comm, &[("test set", &test)])?;
            let backend = open_backend(data.device)?;
            let setup = target.setup(sub, net.steps, data.mode);
            if let Some(k) = chip_instances {
                let mine = neuropart::comm::shard(k, comm.size(), comm.rank()).len();
                let bar = if lead {
                    indicatif::ProgressBar::new(mine as u64)
                } else {
                    indicatif::ProgressBar::hidden()
                }
                .with_prefix("chips");
                let results = neuropart::experiment::chip_sweep_in(
                    &net,
                    &setup,
                    &*backend,
                    comm,
                    &ck.config,
                    &test,
                    k,
                    chip_seed,
                    |done| bar.set_position(done as u64),
                )?;
                bar.finish_and_clear();
                if !lead {
                    return Ok(());
                }
                let mut csv = String::from("chip,seed,accuracy,loss\n");
                println!("| chip | seed | test accuracy | test loss |\n|---:|---:|---:|---:|");
                for r in &results {
                    println!(
                        "| {} | {} | {:.2} % | {:.4} |",
                        r.chip,
                        r.seed,
                        100.0 * r.accuracy,
                        r.loss
                    );
                    csv += &format!("{},{},{},{}\n", r.chip, r.seed, r.accuracy, r.loss);
                }
                let acc: Vec<f64> = results.iter().map(|r| 100.0 * r.accuracy).collect();
                let (mean, sd, min, max) = neuropart::experiment::summary(&acc);
                println!(
                    "{k} chips ({:?} mode, seed {chip_seed}): test accuracy mean {mean:.2} %, \
                     sd {sd:.2}, min {min:.2} %, max {max:.2} %",
                    data.mode
                );
                neuropart::io::write_atomic(&out.join("chips.csv"), csv.as_bytes())?;
                neuropart::plot::histogram(
                    &acc,
                    (k / 2).clamp(4, 20),
                    &format!("Test accuracy on {k} emulated chips"),
                    "test accuracy (%)",
                    &out.join("chips.png"),
                )?;
                eprintln!("per-chip results in {}", out.join("chips.csv").display());
                return Ok(());
            }
            let exec = setup.executor(net)?;
            warn(&exec.warnings);
            let t = Trainer::new(exec, ck.config.clone())?;
            let st = t.evaluate_in(&*backend, comm, &test, 500)?;
            if !lead {
                return Ok(());
            }
            println!(
                "{} test images ({:?} mode): accuracy {:.2}%, loss {:.4}, {:.1} hidden spikes per sample",
                st.samples,
                data.mode,
                100.0 * st.accuracy(),
                st.mean_loss(),
                st.hidden_spikes / st.samples.max(1) as f64
            );
            if let Some(sys) = neuropart::SystemReport::new(&t.exec.plan, t.exec.network.steps) {
                println!(
                    "system: {} system run{}, estimated hardware time {:.1} us per sample; links: \
                     {:.1} cross-chip deliveries per sample, {} dropped ({:.2} %)",
                    sys.system_runs.len(),
                    if sys.system_runs.len() == 1 { "" } else { "s" },
                    sys.hardware_us_per_sample,
                    st.link_deliveries / st.samples.max(1) as f64,
                    st.link_dropped,
                    100.0 * st.link_drop_fraction()
                );
            }
        }
        Command::Export {
            network,
            substrate: sub_file,
            checkpoint,
            output,
        } => {
            for (input, what) in [(&network, "network file"), (&checkpoint, "checkpoint")] {
                if same_file(&output, input) {
                    return Err(neuropart::Error::option(
                        "--output",
                        output.display(),
                        format!(
                            "is the {what} it reads ({}); write the network elsewhere",
                            input.display()
                        ),
                    ));
                }
            }
            let sub = substrate(&sub_file)?;
            let (net, _) = load_network(&network, &sub, None, Some(&checkpoint))?;
            net.save(&output)?;
            eprintln!(
                "{} with the weights of {} written to {}",
                network.display(),
                checkpoint.display(),
                output.display()
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
            placement,
            train,
            mode,
            batches,
        } => {
            let target = Target {
                network: network.clone().unwrap_or_default(),
                substrate: sub_file.clone(),
                chips,
                merge_layers: false,
                placement,
            };
            let chips = target.chips();
            if train {
                let backends = bench_backends(device, comm)?;
                let mut rows = Vec::new();
                for be in &backends {
                    for &b in &batch {
                        let setup = neuropart::bench::TrainBench {
                            steps,
                            batch: b,
                            mode,
                            batches,
                            density,
                            chips,
                        };
                        rows.push(neuropart::bench::measure_training(
                            be.as_ref(),
                            comm,
                            &setup,
                        )?);
                    }
                }
                if !lead {
                    return Ok(());
                }
                println!(
                    "Training the MNIST network (784-256-10), {mode:?} mode, {chips} chip{}, \
                     random MNIST-shaped input (density {density}){}",
                    if chips == 1 { "" } else { "s" },
                    processes(comm)
                );
                print!("{}", neuropart::bench::train_table(&rows));
                for r in &rows {
                    println!(
                        "{} (batch {}): {:.1} hidden spikes per sample",
                        r.backend, r.batch, r.hidden_spikes
                    );
                }
                return Ok(());
            }
            let sub = target.substrate()?;
            let mut net = match network {
                Some(p) => Network::load(&p, &sub)?,
                None => neuropart::mnist_network(1).build(&sub)?,
            };
            net.steps = steps;
            let exec = Executor::new(net, &sub, chips, &target.options())?;
            warn(&exec.warnings);
            // Inputs first: an impossible batch is an error before any device is opened.
            let inputs: Vec<_> = batch
                .iter()
                .map(|&b| neuropart::bench::random_inputs(&exec, b, density, 7))
                .collect::<neuropart::Result<_>>()?;
            let backends = bench_backends(device, comm)?;
            let header = format!(
                "network '{}': {} partitions in {} rounds ({} chip{}: up to {} partitions at the \
                 same time), T = {steps}, random TTFS input ({:.0}% of pixels on){}",
                exec.network.name,
                exec.plan.partitions.len(),
                exec.schedule.rounds.len(),
                chips,
                if chips == 1 { "" } else { "s" },
                exec.schedule.rounds.iter().map(Vec::len).max().unwrap_or(0),
                100.0 * density,
                processes(comm)
            );
            if lead {
                println!("{header}");
            }
            let mut rows = Vec::new();
            for inputs in &inputs {
                for be in &backends {
                    rows.push(neuropart::bench::measure_in(
                        &exec,
                        be.as_ref(),
                        comm,
                        inputs,
                        Duration::from_secs_f32(seconds),
                    )?);
                }
            }
            if !lead {
                return Ok(());
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
            if let Some(r) = rows.first() {
                print!("{}", system_summary(&exec, r.stats.links.as_ref()));
            }
            if exec.plan.partitions.len() <= 32 {
                println!("\nper partition run (time inside the backend per batch):");
                print!("{}", neuropart::bench::partition_table(&exec, &rows));
            }
        }
    }
    Ok(())
}

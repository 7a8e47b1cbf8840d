//! neuropart bench: throughput of inference or training per backend and batch size.

use super::common::*;
use neuropart::comm::Communicator;
use neuropart::prelude::*;
use neuropart::{open_backend_in, DeviceChoice};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Network file; default: the paper's 784-256-10 MNIST network.
    #[arg(long)]
    pub(crate) network: Option<PathBuf>,
    /// Batch sizes (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "256", value_parser = at_least_one)]
    pub(crate) batch: Vec<usize>,
    /// Time steps (overrides the network's).
    #[arg(long, default_value = "100", value_parser = steps)]
    pub(crate) steps: u32,
    /// Minimum seconds per measurement (at most a day).
    #[arg(long, default_value = "2", value_parser = seconds, allow_hyphen_values = true)]
    pub(crate) seconds: f32,
    /// Backend; default: the CPU and, if there is one, the GPU.
    #[arg(long, value_enum)]
    pub(crate) device: Option<DeviceChoice>,
    /// Substrate file (TOML); default: BrainScaleS-2.
    #[arg(long)]
    pub(crate) substrate: Option<PathBuf>,
    /// Fraction of input pixels that are on, in [0, 1] (MNIST: about 0.19).
    #[arg(long, default_value_t = 0.19, allow_hyphen_values = true)]
    pub(crate) density: f64,
    /// Chips: run up to this many partitions of a wave at the same time (default 1); with a
    /// [system] in the substrate file, the system's chip count.
    #[arg(long, value_parser = at_least_one)]
    pub(crate) chips: Option<usize>,
    /// How partitions share the system runs of a [system] (see `plan --help`).
    #[arg(long, value_enum, conflicts_with = "train")]
    pub(crate) placement: Option<neuropart::Placement>,
    /// Benchmark training instead (the MNIST network, the published set-up, random
    /// MNIST-shaped input): one warm-up batch, then --batches timed ones, one row per
    /// device and batch size; --steps, --density and --chips apply.
    #[arg(long, conflicts_with_all = ["network", "substrate", "seconds"])]
    pub(crate) train: bool,
    /// ideal, emulated (the chip's analog effects: fixed-pattern deviations, noise, 6-bit
    /// weights, the CADC) or mixed; default: emulated with --train, ideal otherwise (the JAX
    /// peers' dynamics).
    #[arg(long, value_enum)]
    pub(crate) mode: Option<Mode>,
    /// With --train: timed batches (default 20).
    #[arg(long, value_parser = at_least_one)]
    pub(crate) batches: Option<usize>,
    /// Run the partitions of a wave one by one instead of as one program on the CPU (the
    /// same results; for comparing the two).
    #[arg(long, conflicts_with = "train")]
    pub(crate) unfused: bool,
    /// How the CPU steps feed-forward programs: auto (by columns where a program's weights
    /// take 1 MiB or more), samples (every sample through the whole program; a dense layer's
    /// weights stay in the blocks that columns read, which makes wide layers slower than
    /// before columns existed) or columns (a chunk of samples, a block of neurons at a time).
    /// The same results every way; for comparing. CPU rows only.
    #[arg(long, value_enum, default_value = "auto", conflicts_with = "train")]
    pub(crate) stepping: neuropart::Stepping,
    /// Trained weights for --network, or without it for the MNIST network (a checkpoint
    /// written by `train` or the MNIST example), so that the figures are for the activity of
    /// a trained network rather than of its initial weights.
    #[arg(long, conflicts_with = "train")]
    pub(crate) checkpoint: Option<PathBuf>,
    /// Feed the first --batch MNIST test images (fetched into data-cache/mnist, encoded as in
    /// training) instead of random pixels: with --checkpoint, the activity of a trained
    /// network on its data.
    #[arg(long, conflicts_with_all = ["train", "density"])]
    pub(crate) mnist: bool,
    /// With several processes (mpirun): share out the samples of each batch, or the chips of
    /// every round (see `run --help`); then the exchange between processes is reported.
    #[arg(long, value_enum, default_value = "samples", conflicts_with = "train")]
    pub(crate) distribute: Distribute,
    /// With --distribute chips,samples: processes per group that share the chips.
    #[arg(long, value_parser = at_least_one, conflicts_with = "train")]
    pub(crate) chip_ranks: Option<usize>,
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

pub(crate) fn run(args: Args, ctx: &Ctx) -> neuropart::Result<()> {
    let Args {
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
        unfused,
        stepping,
        checkpoint,
        mnist,
        distribute,
        chip_ranks,
    } = args;
    let lead = ctx.lead;
    let warn = |lines: &[String]| ctx.warn(lines);
    let comm = ctx.comm;
    if stepping != neuropart::Stepping::Auto && device == Some(DeviceChoice::Gpu) {
        return Err(neuropart::Error::option(
            "--stepping",
            format!("{stepping:?}").to_lowercase(),
            "chooses how the CPU steps feed-forward programs; --device gpu runs none on the CPU",
        ));
    }
    // (clap's `requires` takes the flag's default `false` for given.)
    if let (Some(n), false) = (batches, train) {
        return Err(neuropart::Error::option(
            "--batches",
            n,
            "counts the timed batches of --train; without it, --seconds sets how long to measure",
        ));
    }
    let target = Target {
        network: network.clone().unwrap_or_default(),
        substrate: sub_file.clone(),
        chips,
        merge_layers: false,
        placement,
        distribute,
        chip_ranks,
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
                    mode: mode.unwrap_or(Mode::Emulated),
                    batches: batches.unwrap_or(20),
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
            "Training the MNIST network (784-256-10), {:?} mode, {chips} chip{}, \
                 random MNIST-shaped input (density {density}){}",
            mode.unwrap_or(Mode::Emulated),
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
    let mut net = match &network {
        Some(p) => load_network(p, &sub, Some(steps), checkpoint.as_deref())?.0,
        None => {
            let net = neuropart::mnist_network(1).build(&sub)?;
            with_checkpoint(net, Some(steps), checkpoint.as_deref())?.0
        }
    };
    net.steps = steps;
    let world = comm;
    let grid = target.grid(world)?;
    let comm: &dyn Communicator = match &grid {
        Some(g) => g,
        None => world,
    };
    // Spread by chips, only this process's share is compiled.
    let mode = mode.unwrap_or(Mode::Ideal);
    let set_up = std::time::Instant::now();
    let mut exec = if mode == Mode::Ideal {
        Executor::new_on_ranks(net, &sub, chips, &target.options(), target.ranks(comm))?
    } else {
        let analog = neuropart::AnalogConfig::default();
        let ranks = target.ranks(comm);
        Executor::emulated_on_ranks(net, &sub, chips, &target.options(), analog, mode, ranks)?
    };
    if unfused {
        exec.set_fuse_waves(false);
    }
    exec.set_stepping(stepping);
    warn(&exec.warnings);
    let set_up = set_up.elapsed();
    // Inputs first: an impossible batch is an error before any device is opened.
    let images = if mnist {
        Some(neuropart::data::mnist(&neuropart::data::cache_dir("mnist"))?.1)
    } else {
        None
    };
    let inputs: Vec<_> = batch
        .iter()
        .map(|&b| match &images {
            Some(test) => neuropart::bench::dataset_inputs(&exec, test, b),
            None => neuropart::bench::random_inputs(&exec, b, density, 7),
        })
        .collect::<neuropart::Result<_>>()?;
    let backends = bench_backends(device, comm)?;
    let header = format!(
        "network '{}': {} partitions in {} rounds ({} chip{}: up to {} partitions at the \
             same time), {mode:?} mode, T = {steps}, {}{}",
        exec.network.name,
        exec.plan.partitions.len(),
        exec.schedule.rounds.len(),
        chips,
        if chips == 1 { "" } else { "s" },
        exec.schedule.rounds.iter().map(Vec::len).max().unwrap_or(0),
        if mnist {
            "the MNIST test images (TTFS)".to_string()
        } else {
            format!("random TTFS input ({:.0}% of pixels on)", 100.0 * density)
        },
        processes_sharing(world, distribute)
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
    // Every process's share and exchange, gathered for the first to print.
    let shares = match (exec.share(), rows.first()) {
        (Some(s), Some(r)) => Some(rank_table(comm, &exec, s, r)),
        _ => None,
    };
    // Every process takes part where the run is spread over them by chips.
    let act = match (backends.first(), inputs.first()) {
        (Some(be), Some(first)) if lead || exec.share().is_some() => Some(
            neuropart::bench::activity_in(&exec, be.as_ref(), first, comm)?,
        ),
        _ => None,
    };
    if !lead {
        return Ok(());
    }
    print!("{}", neuropart::bench::table(&rows));
    for r in &rows {
        // Device submissions: the GPU's chunks (each a round's or a fused wave's dispatches).
        let submissions = r
            .phases
            .as_ref()
            .filter(|p| p.chunks > 0)
            .map(|p| format!(", {} device submissions", p.chunks))
            .unwrap_or_default();
        println!(
            "{} (batch {}): {:.1} spikes recorded and {:.1} replayed per sample; {} runs per \
             batch (a fused wave or a round of partitions each){submissions}",
            r.backend,
            r.batch,
            r.stats.spikes_recorded_per_sample,
            r.stats.spikes_replayed_per_sample,
            r.stats.rounds,
        );
    }
    if let Some(t) = shares {
        print!("{t}");
    }
    let synapses = exec.plan.synapse_count();
    println!(
        "set-up: planned and compiled in {:.1} s ({synapses} synapses); peak memory of the \
         process {}",
        set_up.as_secs_f64(),
        neuropart::peak_resident().map_or("unknown".into(), |b| format!(
            "{} ({:.0} bytes a synapse)",
            neuropart::human_bytes(b),
            b as f64 / synapses.max(1) as f64
        ))
    );
    if let (Some(r), Some(act)) = (rows.first(), act) {
        print!("{}", system_summary(&exec, r.stats.links.as_ref()));
        let text: Vec<String> = act
            .populations
            .iter()
            .map(|(name, a)| format!("{name} {:.2}%", 100.0 * a))
            .collect();
        println!(
            "activity (spikes per neuron and step, {} weights): {}",
            if checkpoint.is_some() {
                "trained"
            } else {
                "initial"
            },
            text.join(", ")
        );
        // Synaptic events per second at the measured speed of each row.
        let per_sample = act.synaptic_events_per_sample;
        for r in &rows {
            println!(
                "{} (batch {}): {:.3e} synaptic events per sample, {:.3e} synaptic events/s",
                r.backend,
                r.batch,
                per_sample,
                per_sample * r.samples_per_s
            );
        }
        let silent: Vec<&str> = act
            .populations
            .iter()
            .filter(|(_, a)| *a == 0.0)
            .map(|(n, _)| n.as_str())
            .collect();
        if !silent.is_empty() {
            warn(&[format!(
                "{} did not spike: the figures above measure silent layers (an event-driven \
                 emulator is fastest there); benchmark trained weights with --checkpoint",
                silent.join(", ")
            )]);
        }
    }
    if exec.plan.partitions.len() <= 32 {
        println!("\nper partition run (time inside the backend per batch):");
        print!("{}", neuropart::bench::partition_table(&exec, &rows));
    }
    Ok(())
}

/// The processes' shares of a run spread over them by chips, as a table (every process
/// calls it: one exchange): per process the memory of the synapses it holds and, per batch of
/// `row`, the windows, the cross-chip events it sent and received, and the time exchanges
/// and gathers took.
fn rank_table(
    comm: &dyn Communicator,
    exec: &Executor,
    share: &neuropart::RankShare,
    row: &neuropart::bench::BenchRow,
) -> String {
    let t = row.stats.ranks.clone().unwrap_or_default();
    let mem = exec.memory_per_rank(share.ranks)[share.rank];
    let mine = [
        mem as f64,
        exec.plan
            .partitions
            .iter()
            .filter(|p| share.owns(p.id))
            .count() as f64,
        t.windows as f64,
        t.events_sent as f64,
        t.events_received as f64,
        t.bytes_sent as f64,
        t.exchange.as_secs_f64(),
        (t.gather_bytes_sent + t.gather_bytes_received) as f64,
        t.gather.as_secs_f64(),
    ];
    let all = comm.chips().unwrap_or(comm).all_gather_f64(&mine);
    let wall = row.wall.as_secs_f64().max(1e-12);
    let mut out = format!(
        "\n{} processes share the chips (batch {}, per batch):\n| process | partitions | synapse \
         memory | windows | events sent | events received | bytes sent per window | exchange \
         | gathered | gather |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        share.ranks, row.batch
    );
    for (r, v) in all.iter().enumerate() {
        let &[mem, parts, windows, sent, received, bytes, ex, gathered, ga] = v.as_slice() else {
            continue;
        };
        out += &format!(
            "| {r} | {parts} | {} | {windows} | {sent} | {received} | {:.0} | {:.1} ms ({:.0} %) \
             | {} | {:.1} ms ({:.0} %) |\n",
            neuropart::human_bytes(mem as u64),
            bytes / windows.max(1.0),
            1e3 * ex,
            100.0 * ex / wall,
            neuropart::human_bytes(gathered as u64),
            1e3 * ga,
            100.0 * ga / wall,
        );
    }
    out
}

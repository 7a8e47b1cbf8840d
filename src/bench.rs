//! The throughput comparison behind `neuropart bench`: the same network and batch on each
//! backend, timed end to end and split into phases. Criterion benches in `benches/` measure the
//! same work; this prints one table for a README.

use crate::backend::{Backend, PhaseTimings};
use crate::error::{Error, Result};
use crate::model::network::{PopulationId, PopulationKind};
use crate::rng::Rng;
use crate::run::executor::{ExecutionStats, Executor, Observe};
use crate::spikes::store::SpikeTrains;
use std::time::{Duration, Instant};

/// One row of the table.
#[derive(Clone, Debug)]
pub struct BenchRow {
    /// Backend name.
    pub backend: String,
    /// Chips: partitions of a wave that ran at the same time.
    pub chips: usize,
    /// Batch size.
    pub batch: usize,
    /// Steps.
    pub steps: u32,
    /// Samples per second, end to end.
    pub samples_per_s: f64,
    /// Neuron updates (samples × steps × non-input neurons) per second.
    pub updates_per_s: f64,
    /// Mean time split of one batch (executor's view: backend versus host replay).
    pub stats: ExecutionStats,
    /// Mean device phases of one batch, for backends that report them.
    pub phases: Option<PhaseTimings>,
    /// Mean wall time of one batch.
    pub wall: Duration,
    /// Processes that ran the batch together (each a contiguous shard of its samples).
    pub processes: usize,
    /// Samples of the batch this process ran (what `stats` and `phases` are about).
    pub shard_samples: usize,
}

impl BenchRow {
    /// Host time per sample in µs: upload, readback and host work of the backend plus the
    /// executor's recording and replay.
    pub fn host_us_per_sample(&self) -> f64 {
        let device = self
            .phases
            .as_ref()
            .map_or(Duration::ZERO, |p| p.host_total());
        (device + self.stats.host_replay).as_secs_f64() * 1e6 / self.shard_samples.max(1) as f64
    }

    /// Bytes moved to and from the device per sample (`None` for the CPU).
    pub fn bytes_per_sample(&self) -> Option<f64> {
        self.phases
            .as_ref()
            .map(|p| (p.bytes_up + p.bytes_down) as f64 / self.shard_samples.max(1) as f64)
    }
}

/// How active a network is on some input: what an event-driven emulator's speed depends on,
/// so a benchmark says it beside its figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Activity {
    /// Per spiking population (network order, inputs and readouts left out): its name and the
    /// fraction of neuron-steps with a spike.
    pub populations: Vec<(String, f64)>,
    /// Synaptic events per sample: every spike (inputs included) times the synapses it reaches
    /// (also where a delay carries it past the last step, a small overcount for a benchmark).
    pub synaptic_events_per_sample: f64,
}

/// How active the network of `exec` is on `inputs` ([`Activity`]).
pub fn activity(
    exec: &Executor,
    backend: &dyn Backend,
    inputs: &[(PopulationId, SpikeTrains)],
) -> Result<Activity> {
    activity_in(exec, backend, inputs, &crate::dist::comm::Single)
}

/// [`activity`] by the processes of `comm` together, where the executor is spread over them
/// ([`Executor::run_samples_in`]); every process gets the figures.
pub fn activity_in(
    exec: &Executor,
    backend: &dyn Backend,
    inputs: &[(PopulationId, SpikeTrains)],
    comm: &dyn crate::dist::comm::Communicator,
) -> Result<Activity> {
    let out = exec.run_samples_in(backend, inputs, Observe::Scores, 0, 0, comm)?;
    let samples = inputs.first().map_or(0, |(_, t)| t.samples());
    let net = &exec.network;
    let steps = net.steps as f64;
    let populations = net
        .populations
        .iter()
        .enumerate()
        .filter(|(_, p)| p.kind == PopulationKind::Lif)
        .map(|(i, p)| {
            let spikes = out.spikes.get(i).map_or(0, SpikeTrains::len) as f64;
            let cells = (samples as f64 * steps * p.size as f64).max(1.0);
            (p.name.clone(), spikes / cells)
        })
        .collect();
    // Spikes per neuron of every population, then each projection's synapses weighted by
    // their source's spikes.
    let counts: Vec<Vec<u64>> = net
        .populations
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut c = vec![0u64; p.size];
            if let Some(t) = out.spikes.get(i) {
                for e in &t.events {
                    c[e.neuron as usize] += 1;
                }
            }
            c
        })
        .collect();
    let mut events = 0u64;
    for (k, pr) in net.projections.iter().enumerate() {
        let (s, t) = net.endpoints(k)?;
        let c = &counts[s];
        if matches!(pr.connectivity, crate::model::network::Connectivity::Dense) {
            events += c.iter().sum::<u64>() * net.populations[t].size as u64;
        } else {
            net.for_each_synapse_index(k, 0..net.populations[t].size, |pre, _, _| {
                events += c[pre];
            })?;
        }
    }
    Ok(Activity {
        populations,
        synaptic_events_per_sample: events as f64 / samples.max(1) as f64,
    })
}

/// The first `batch` images of `data` (repeated when it has fewer), encoded time-to-first-spike
/// as in training, for the network's one input population: realistic activity for trained
/// weights, where random pixels drive a trained network far less than its data does.
pub fn dataset_inputs(
    exec: &Executor,
    data: &crate::data::Dataset,
    batch: usize,
) -> Result<Vec<(PopulationId, SpikeTrains)>> {
    if batch == 0 {
        return Err(Error::option("--batch", 0, "at least 1 sample"));
    }
    let net = &exec.network;
    let inputs = net.inputs();
    let [input] = inputs[..] else {
        return Err(Error::option(
            "--mnist",
            "",
            format!(
                "needs a network with one input population ('{}' has {})",
                net.name,
                inputs.len()
            ),
        ));
    };
    let size = net.populations[input].size;
    if data.is_empty() || data.image_size() != size {
        return Err(Error::option(
            "--mnist",
            "",
            format!(
                "images of {} pixels, but input population '{}' has {size} neurons",
                data.image_size(),
                net.populations[input].name
            ),
        ));
    }
    let idx: Vec<usize> = (0..batch).map(|i| i % data.len()).collect();
    let trains = crate::spikes::encode::images(data, &idx, net.steps, None);
    Ok(vec![(input, trains)])
}

/// Random image-like inputs for every input population: a fraction `density` of pixels are on,
/// with uniform brightness, encoded with the training's encoder ([`crate::spikes::encode::image`]).
/// The memory the spikes need is checked first.
pub fn random_inputs(
    exec: &Executor,
    batch: usize,
    density: f64,
    seed: u64,
) -> Result<Vec<(PopulationId, SpikeTrains)>> {
    if batch == 0 {
        return Err(Error::option("--batch", 0, "at least 1 sample"));
    }
    if !(0.0..=1.0).contains(&density) {
        return Err(Error::option(
            "--density",
            density,
            "a fraction of pixels in [0, 1]",
        ));
    }
    let steps = exec.network.steps;
    let inputs = exec.network.inputs();
    let pixels: u64 = inputs
        .iter()
        .map(|&p| exec.network.populations[p].size as u64)
        .sum();
    crate::memory::check(
        || format!("the benchmark's input spikes ({batch} samples)"),
        crate::memory::product(&[
            batch as u64,
            (pixels as f64 * density).ceil() as u64 + 1,
            std::mem::size_of::<crate::spikes::store::SpikeEvent>() as u64,
        ]),
    )?;
    let mut rng = Rng::new(seed);
    Ok(inputs
        .into_iter()
        .map(|p| {
            let n = exec.network.populations[p].size;
            let mut img = vec![0f32; n];
            let lists = (0..batch)
                .map(|_| {
                    for v in &mut img {
                        *v = if rng.uniform() < density {
                            rng.uniform() as f32
                        } else {
                            0.0
                        };
                    }
                    crate::spikes::encode::image(&img, steps)
                })
                .collect();
            (p, SpikeTrains::from_sorted_samples(n, steps, lists))
        })
        .collect())
}

/// Time `backend` on `inputs` (warm-up once, then repeat for at least `min_time`).
pub fn measure<B: Backend + ?Sized>(
    exec: &Executor,
    backend: &B,
    inputs: &[(PopulationId, SpikeTrains)],
    min_time: Duration,
) -> Result<BenchRow> {
    measure_in(exec, backend, &crate::dist::comm::Single, inputs, min_time)
}

/// [`measure`] by the processes of `comm` together: each runs its contiguous shard of the
/// batch's samples ([`crate::dist::comm::shard`]) and the readout's scores are gathered after every
/// batch (a sharded `run` gathers whole results); the first process decides when to stop.
/// Samples/s count the whole batch; the time split is the calling process's.
pub fn measure_in<B: Backend + ?Sized>(
    exec: &Executor,
    backend: &B,
    comm: &dyn crate::dist::comm::Communicator,
    inputs: &[(PopulationId, SpikeTrains)],
    min_time: Duration,
) -> Result<BenchRow> {
    let batch = inputs.first().map(|(_, t)| t.samples()).unwrap_or(0);
    if !min_time.as_secs_f64().is_finite() {
        return Err(Error::option(
            "--seconds",
            min_time.as_secs_f64(),
            "a finite time",
        ));
    }
    // Spread by chips, every process takes every sample (its chips of them).
    let spread = exec.share().is_some() && comm.chips().is_none();
    let mine = if spread {
        0..batch
    } else {
        crate::dist::comm::shard(batch, comm.size(), comm.rank())
    };
    let shard: Vec<(PopulationId, SpikeTrains)> = inputs
        .iter()
        .map(|(p, t)| (*p, t.slice(mine.clone())))
        .collect();
    let base = mine.start as u32;
    let run = || -> Result<crate::run::executor::Execution> {
        let e = exec.run_samples_in(backend, &shard, Observe::Scores, 0, base, comm)?;
        if comm.size() > 1 && !spread {
            let scores: Vec<f32> = e.peak.iter().flatten().flatten().copied().collect();
            comm.all_gather(&scores);
        }
        Ok(e)
    };
    run()?;
    backend.take_timings();
    let mut reps = 0u32;
    let mut stats = ExecutionStats::default();
    comm.barrier();
    let start = Instant::now();
    loop {
        let go_on = reps == 0 || start.elapsed() < min_time;
        // The first process's word counts, so that all run the same batches (spread both
        // ways: the first of each group tells its group what it heard from the first).
        let mut go = comm.all_gather_bytes(&[u8::from(go_on)])[0][0];
        if let Some(chips) = comm.chips() {
            go = chips.all_gather_bytes(&[go])[0][0];
        }
        if go == 0 {
            break;
        }
        let e = run()?;
        stats.backend += e.stats.backend;
        stats
            .per_partition
            .resize(e.stats.per_partition.len(), Duration::ZERO);
        for (a, b) in stats.per_partition.iter_mut().zip(&e.stats.per_partition) {
            *a += *b;
        }
        stats.host_replay += e.stats.host_replay;
        stats.spikes_recorded_per_sample = e.stats.spikes_recorded_per_sample;
        stats.spikes_replayed_per_sample = e.stats.spikes_replayed_per_sample;
        stats.rounds = e.stats.rounds;
        if let Some(l) = &e.stats.links {
            stats.links.get_or_insert_with(Default::default).add(l);
        }
        if let Some(t) = &e.stats.ranks {
            stats.ranks.get_or_insert_with(Default::default).add(t);
        }
        reps += 1;
    }
    let wall = start.elapsed() / reps;
    let phases = backend.take_timings().map(|p| PhaseTimings {
        upload: p.upload / reps,
        dispatch: p.dispatch / reps,
        readback: p.readback / reps,
        host: p.host / reps,
        chunks: p.chunks / reps as usize,
        rereads: p.rereads,
        buffers_created: p.buffers_created,
        bytes_up: p.bytes_up / reps as u64,
        bytes_down: p.bytes_down / reps as u64,
    });
    stats.backend /= reps;
    for d in &mut stats.per_partition {
        *d /= reps;
    }
    stats.host_replay /= reps;
    if let Some(t) = &mut stats.ranks {
        *t = t.divided(reps);
    }
    let neurons: usize = exec
        .network
        .populations
        .iter()
        .filter(|p| p.kind != PopulationKind::Input)
        .map(|p| p.size)
        .sum();
    let sps = batch as f64 / wall.as_secs_f64();
    Ok(BenchRow {
        backend: backend.name(),
        chips: exec.schedule.chips,
        batch,
        steps: exec.network.steps,
        samples_per_s: sps,
        updates_per_s: sps * exec.network.steps as f64 * neurons as f64,
        stats,
        phases,
        wall,
        processes: comm.size(),
        shard_samples: mine.len(),
    })
}

/// Format rows as a Markdown table. For the CPU, "dispatch" is the time inside the backend;
/// "host replay" is the executor's recording and merging of spikes (plus, on a GPU, unpacking
/// what came back).
pub fn table(rows: &[BenchRow]) -> String {
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    let mut s = String::from(
        "| backend | chips | batch | T | samples/s | neuron updates/s | batch time | upload | dispatch | readback | host replay | host µs/sample | bytes/sample |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let (up, disp, rb, host) = match &r.phases {
            Some(p) => (
                ms(p.upload),
                ms(p.dispatch),
                ms(p.readback),
                ms(r.stats.host_replay + p.host),
            ),
            None => (
                "-".into(),
                ms(r.stats.backend),
                "-".into(),
                ms(r.stats.host_replay),
            ),
        };
        let bytes = r
            .bytes_per_sample()
            .map_or("-".to_string(), |b| format!("{b:.0}"));
        s += &format!(
            "| {} | {} | {} | {} | {:.0} | {:.3e} | {} | {up} | {disp} | {rb} | {host} | {:.2} | {bytes} |\n",
            r.backend,
            r.chips,
            r.batch,
            r.steps,
            r.samples_per_s,
            r.updates_per_s,
            ms(r.wall),
            r.host_us_per_sample(),
        );
    }
    s
}

/// Per partition run: neurons, input channels, the round it ran in, backend time per batch
/// and samples/s, one column pair per measured backend. With several chips a round's
/// partitions run at the same time and share the round's time.
pub fn partition_table(exec: &Executor, rows: &[BenchRow]) -> String {
    let mut round_of = vec![0usize; exec.plan.partitions.len()];
    for (r, round) in exec.schedule.rounds.iter().enumerate() {
        for &p in round {
            round_of[p] = r;
        }
    }
    let mut s = String::from("| run | neurons | input channels | round |");
    for r in rows {
        s += &format!(" {} (batch {}) | samples/s |", r.backend, r.batch);
    }
    s += "\n|---:|---:|---:|---:|";
    for _ in rows {
        s += "---:|---:|";
    }
    s += "\n";
    for (k, p) in exec.plan.partitions.iter().enumerate() {
        s += &format!(
            "| {} | {} | {} | {} |",
            p.id,
            p.neuron_count(),
            p.channel_count(),
            round_of[k]
        );
        for r in rows {
            let d = r.stats.per_partition.get(k).copied().unwrap_or_default();
            s += &format!(
                " {:.2} ms | {:.0} |",
                d.as_secs_f64() * 1e3,
                r.batch as f64 / d.as_secs_f64().max(1e-12)
            );
        }
        s += "\n";
    }
    s
}

/// One row of the training table.
#[derive(Clone, Debug)]
pub struct TrainRow {
    /// Backend name.
    pub backend: String,
    /// Steps.
    pub steps: u32,
    /// Samples per optimiser step.
    pub batch: usize,
    /// Emulation mode.
    pub mode: crate::model::analog::Mode,
    /// Training samples per second (forward, backward, optimiser and host work).
    pub samples_per_s: f64,
    /// Mean time split of one batch.
    pub timings: crate::train::StepTimings,
    /// Hidden spikes per sample in the measured batches.
    pub hidden_spikes: f64,
    /// Processes that trained together (each a shard of every batch).
    pub processes: usize,
}

/// Added to the hidden layer's initial weights in [`measure_training`] (see there).
pub const TRAIN_BENCH_HIDDEN_SHIFT: f32 = 0.05;

/// Random MNIST-shaped data: `n` 28×28 images with a fraction `density` of pixels on, their
/// brightness distributed like MNIST's lit pixels, and random labels of 10 classes.
pub fn random_mnist(n: usize, density: f64, seed: u64) -> crate::data::Dataset {
    let mut rng = Rng::new(seed);
    crate::data::Dataset {
        shape: [1, 28, 28],
        pixels: (0..n * 784)
            .map(|_| {
                if rng.uniform() < density {
                    // MNIST's lit pixels: 46 % near full intensity, the rest spread below.
                    if rng.uniform() < 0.46 {
                        (0.9 + 0.1 * rng.uniform()) as f32
                    } else {
                        (0.9 * rng.uniform()) as f32
                    }
                } else {
                    0.0
                }
            })
            .collect(),
        labels: (0..n).map(|_| rng.below(10) as u8).collect(),
        classes: 10,
    }
}

/// What a training benchmark trains.
#[derive(Clone, Copy, Debug)]
pub struct TrainBench {
    /// Time steps per sample.
    pub steps: u32,
    /// Samples per optimiser step.
    pub batch: usize,
    /// Emulation mode.
    pub mode: crate::model::analog::Mode,
    /// Timed batches (after one warm-up batch).
    pub batches: usize,
    /// Fraction of input pixels that are on.
    pub density: f64,
    /// Chips: partitions of a wave run at the same time.
    pub chips: usize,
}

/// Train the MNIST network (784-256-10, the published set-up) as `b` says, on random
/// MNIST-shaped input: one warm-up batch, then `b.batches` timed ones, by the processes of
/// `comm` together (each a shard of every batch; [`crate::train::Trainer::train_batch_in`]).
pub fn measure_training<B: Backend + ?Sized>(
    backend: &B,
    comm: &dyn crate::dist::comm::Communicator,
    b: &TrainBench,
) -> Result<TrainRow> {
    let TrainBench {
        steps,
        batch,
        mode,
        batches,
        density,
        chips,
    } = *b;
    if batch == 0 || batches == 0 {
        return Err(Error::option(
            "--batch",
            batch,
            "at least 1 sample and 1 batch",
        ));
    }
    let sub = crate::model::substrate::Substrate::bss2();
    let mut net = crate::model::network::mnist_network(1)
        .with_steps(steps)
        .build(&sub)?;
    // Random input drives the freshly initialised hidden layer to silence, which would make
    // the step cheaper than real training; shifted by this much, the hidden layer fires about
    // as in MNIST training (30–40 spikes per sample; the row's last column says).
    for w in &mut net.projections[0].weights {
        *w += TRAIN_BENCH_HIDDEN_SHIFT;
    }
    let exec = Executor::emulated(
        net,
        &sub,
        chips,
        &crate::plan::partition::PartitionOptions::default(),
        crate::model::analog::AnalogConfig::default(),
        mode,
    )?;
    let mut trainer = crate::train::Trainer::new(
        exec,
        crate::train::TrainConfig {
            batch,
            ..Default::default()
        },
    )?;
    crate::memory::check(
        || format!("{} random images", batch * (batches + 1)),
        crate::memory::product(&[(batch * (batches + 1)) as u64, 784 * 4]),
    )?;
    let data = random_mnist(batch * (batches + 1), density, 11);
    let mut run = |k: usize| {
        let t0 = Instant::now();
        let idx: Vec<usize> = (k * batch..(k + 1) * batch).collect();
        // Each process encodes its shard only.
        let part = crate::train::Trainer::batch_shard(batch, comm);
        let spikes = crate::spikes::encode::images_part(&data, &idx, steps, None, part);
        let labels: Vec<u8> = idx.iter().map(|&i| data.labels[i]).collect();
        trainer.train_batch_in(backend, comm, spikes, &labels, k, t0.elapsed())
    };
    run(0)?;
    comm.barrier();
    let mut total = crate::train::StepTimings::default();
    let mut spikes = 0.0;
    let start = Instant::now();
    for k in 1..=batches {
        let (st, t) = run(k)?;
        total.add(&t);
        spikes += st.hidden_spikes;
    }
    let wall = start.elapsed();
    let n = batches as u32;
    // Processes on GPUs run the forward pass there, the rest on the host.
    let name = if comm.size() > 1 && backend.device_training().is_some() {
        format!(
            "{} (forward; backward and step on the host)",
            backend.name()
        )
    } else {
        backend.name()
    };
    Ok(TrainRow {
        backend: name,
        steps,
        batch,
        mode,
        samples_per_s: (batch * batches) as f64 / wall.as_secs_f64(),
        timings: crate::train::StepTimings {
            forward: total.forward / n,
            backward: total.backward / n,
            optimiser: total.optimiser / n,
            host: total.host / n,
            exchange: total.exchange / n,
            exchanged_bytes: total.exchanged_bytes / n as u64,
            pieces: total.pieces / n as usize,
        },
        hidden_spikes: spikes / (batch * batches) as f64,
        processes: comm.size(),
    })
}

/// The training rows as a Markdown table; with rows trained by several processes, also their
/// number and the exchange of gradient sums per batch (time and bytes each process sent).
pub fn train_table(rows: &[TrainRow]) -> String {
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e3);
    let many = rows.iter().any(|r| r.processes > 1);
    let mut s = String::from(
        "| device | T | batch | train samples/s | forward ms/batch | backward ms/batch | optimiser ms/batch | host ms/batch |",
    );
    let mut rule = String::from("|---|---:|---:|---:|---:|---:|---:|---:|");
    if many {
        s += " processes | exchange ms/batch | exchange KB/batch |";
        rule += "---:|---:|---:|";
    }
    s += "\n";
    s += &rule;
    s += "\n";
    for r in rows {
        s += &format!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            r.backend,
            r.steps,
            r.batch,
            r.samples_per_s,
            ms(r.timings.forward),
            ms(r.timings.backward),
            ms(r.timings.optimiser),
            ms(r.timings.host),
        );
        if many {
            s += &format!(
                " {} | {} | {:.0} |",
                r.processes,
                ms(r.timings.exchange),
                r.timings.exchanged_bytes as f64 / 1e3
            );
        }
        s += "\n";
    }
    s
}

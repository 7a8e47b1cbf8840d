//! The CPU backend, the reference for every kernel: rayon over (partition, chunk of samples),
//! each sample integrated step by step with the model of [`crate::model::neuron::lif_step`].
//! Synaptic input is event-driven: an input spike adds its weights to a ring buffer of pending
//! input per neuron, so the work is proportional to spikes × fan-out plus neurons × steps,
//! never a dense matrix product.
//!
//! For speed the prepared program ([`CpuProgram`]) keeps neuron coefficients as separate
//! arrays walked with `zip` (no bounds checks), splits the neurons into segments whose
//! coefficients are all equal (broadcast, not loaded), vary per neuron, or need the general
//! step (refractory period), delivers a source whose synapses reach a contiguous run of targets
//! as one vector add (a step's sources with the same runs together, their sums in registers:
//! [`CpuProgram::deliver_all`]), hashes noise only where there is noise, and is compiled for
//! the widest vector unit the processor has (AVX-512, AVX2, or the baseline). The arithmetic
//! is the same IEEE operations in the same order as `lif_step` (Rust never fuses multiply and
//! add), so every variant gives bit-identical results.

use super::{
    check_sources, Backend, Exchange, Job, Membranes, PartitionOutput, RankTraffic, Ranks,
    Resident, RunOptions,
};
use crate::error::Result;
use crate::model::analog::Cadc;
use crate::model::neuron::{lif_step, membrane_noise, noise_base, LifState, NeuronCoeffs};
use crate::model::system::{LinkStats, Router};
use crate::plan::compile::{ChannelBlock, PartitionProgram};
use crate::spikes::store::{SpikeEvent, SpikeStore, SpikeTrains};
use rayon::prelude::*;

mod columns;
mod lanes;
mod narrow;

/// Runs partitions on the host's cores.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

/// The key shared by every CPU backend: their residents are plain host tables.
const CPU_KEY: u64 = 0;

impl Backend for CpuBackend {
    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn key(&self) -> u64 {
        CPU_KEY
    }

    fn prepare(&self, program: &PartitionProgram) -> Result<Resident> {
        Ok(Resident::new(CPU_KEY, CpuProgram::new(program)))
    }

    fn fuses(&self, _whole: &PartitionProgram) -> bool {
        true
    }

    fn records_codes(&self) -> bool {
        true
    }

    fn update(&self, resident: &mut Resident, program: &PartitionProgram) -> Result<()> {
        resident.get_mut::<CpuProgram>()?.update(program);
        Ok(())
    }

    fn run_system(
        &self,
        store: &SpikeStore,
        jobs: &mut [Job<'_>],
        exchange: &Exchange,
        opts: &RunOptions,
        ranks: Option<(&Ranks<'_>, &mut RankTraffic)>,
    ) -> Result<(Vec<PartitionOutput>, LinkStats)> {
        // The prepared residents.
        let progs = jobs
            .iter()
            .map(|j| j.resident.get::<CpuProgram>())
            .collect::<Result<Vec<_>>>()?;
        run_system(store, jobs, &progs, exchange, opts, ranks)
    }

    fn run_round(
        &self,
        store: &SpikeStore,
        jobs: &mut [Job<'_>],
        opts: &RunOptions,
    ) -> Result<Vec<PartitionOutput>> {
        check_codes(jobs)?;
        let samples = store.samples();
        let steps = opts.steps as usize;
        // The host is the CPU's device: kept membranes are returned like traces.
        for job in jobs.iter_mut() {
            if job.membranes == Membranes::Keep {
                job.membranes = Membranes::Trace;
            }
        }
        let mut prepared = Vec::with_capacity(jobs.len());
        for job in jobs.iter() {
            check_sources(store, job.program)?;
            let sources: Vec<(&ChannelBlock, &SpikeTrains)> = job
                .program
                .sources
                .iter()
                .map(|b| (b, store.get(b.population).expect("checked")))
                .collect();
            prepared.push((
                job.resident.get::<CpuProgram>()?,
                sources,
                job.program,
                job.membranes,
            ));
        }
        // Enough work items for every thread, few enough that per-item costs stay small.
        let threads = rayon::current_num_threads().max(1);
        let chunk = (samples * jobs.len())
            .div_ceil(threads * 8)
            .clamp(1, samples.max(1));
        // Each job's membranes are written in place by its chunks: into the destination the
        // job gives, or into one buffer per job.
        let mut own = own_buffers(jobs, &vec![true; jobs.len()], samples, steps);
        let mut items = Vec::new();
        for (k, (job, buf)) in jobs.iter_mut().zip(own.iter_mut()).enumerate() {
            let rows = rows_per_sample(job.membranes, steps);
            let mut rest = job_rows(job, buf);
            // A program run by columns reads each weight once per chunk: larger chunks, one or
            // a few per thread.
            let chunk = if prepared[k].0.by_lanes(opts.stepping, steps) {
                lanes::chunk(samples, threads, steps, prepared[k].0.n)
            } else if prepared[k].0.by_columns(opts.stepping, steps) {
                (columns::CHUNK_ROWS / steps.max(1)).clamp(1, samples.div_ceil(threads).max(1))
            } else {
                chunk
            };
            for s0 in (0..samples).step_by(chunk) {
                let s1 = (s0 + chunk).min(samples);
                items.push((k, s0..s1, rest.split_rows((s1 - s0) * rows)));
            }
        }
        let results: Vec<(usize, Vec<u32>, Vec<SpikeEvent>)> = items
            .into_par_iter()
            .map_init(Scratch::default, |scratch, (k, range, mut mem)| {
                let (prog, sources, program, membranes) = &prepared[k];
                let mut counts = Vec::with_capacity(range.len());
                let mut events = Vec::new();
                if prog.by_columns(opts.stepping, steps) {
                    let chunk = columns::Chunk {
                        prog,
                        program,
                        sources,
                        range,
                        opts,
                        membranes: *membranes,
                    };
                    columns::run_chunk(&chunk, scratch, &mut mem, &mut events, &mut counts);
                    return (k, counts, events);
                }
                let rows = rows_per_sample(*membranes, steps);
                for (i, s) in range.enumerate() {
                    let before = events.len();
                    let sample = Sample {
                        prog,
                        program,
                        sources,
                        sample: s,
                        opts,
                        membranes: *membranes,
                    };
                    run_sample_best(&sample, scratch, &mut events, mem.rows(i * rows, rows));
                    counts.push((events.len() - before) as u32);
                }
                (k, counts, events)
            })
            .collect();
        let mut per_job: Vec<(Vec<u32>, Vec<SpikeEvent>)> =
            jobs.iter().map(|_| (vec![0u32], Vec::new())).collect();
        for (k, counts, events) in results {
            let (offsets, all) = &mut per_job[k];
            for c in counts {
                offsets.push(offsets.last().unwrap() + c);
            }
            if all.is_empty() {
                *all = events;
            } else {
                all.extend_from_slice(&events);
            }
        }
        Ok(per_job
            .into_iter()
            .zip(own.into_iter().map(Own::into_output))
            .zip(jobs.iter())
            .map(
                |(((offsets, events), (membrane, codes)), job)| PartitionOutput {
                    spikes: SpikeTrains {
                        neurons: job.program.neuron_count(),
                        steps: opts.steps,
                        offsets,
                        events,
                    },
                    membrane,
                    codes,
                },
            )
            .collect())
    }
}

/// The jobs of one system run on the host's cores: rayon over chunks of samples; within a
/// sample every chip advances one window, then the spikes of that window are routed (in the
/// order step, chip, neuron) and delivered a window later. Exact whatever the order of the
/// chips inside a window, since nothing sent in a window arrives in it.
///
/// With `ranks`, by the processes of a run spread over them: this process advances only the
/// chips it owns (the others' outputs are empty here: the caller gathers them), and after
/// every window the processes exchange, in one collective, the spikes their chips sent over
/// the links. Every process then routes every spike of the window in the same fixed order, so
/// that bandwidth limits and drops are decided, and the links' traffic counted, exactly as in
/// one process. The [`RankTraffic`] counts what this process exchanged.
pub(crate) fn run_system(
    store: &SpikeStore,
    jobs: &mut [Job<'_>],
    progs: &[&CpuProgram],
    exchange: &Exchange,
    opts: &RunOptions,
    ranks: Option<(&Ranks<'_>, &mut RankTraffic)>,
) -> Result<(Vec<PartitionOutput>, LinkStats)> {
    let samples = store.samples();
    let steps = opts.steps as usize;
    let chips = jobs.len();
    let window = exchange.window.max(1) as usize;
    let me = ranks.as_ref().map(|(r, _)| r.comm.rank());
    let mine: Vec<bool> = (0..chips)
        .map(|k| {
            ranks
                .as_ref()
                .is_none_or(|(r, _)| r.owner[k] == r.comm.rank())
        })
        .collect();
    check_codes(jobs)?;
    for job in jobs.iter_mut() {
        if job.membranes == Membranes::Keep {
            job.membranes = Membranes::Trace;
        }
    }
    // Sources: from the store, or nothing where every channel of the block is fed by links.
    let none = SpikeTrains::empty(samples, 0, opts.steps);
    let mut sources: Vec<Vec<(&ChannelBlock, &SpikeTrains)>> = Vec::with_capacity(chips);
    for (k, job) in jobs.iter().enumerate() {
        let mut v = Vec::new();
        for b in &job.program.sources {
            let all_live = b
                .lut
                .iter()
                .all(|&ch| ch == u32::MAX || exchange.live[k][ch as usize]);
            let t = match store.get(b.population) {
                Some(t) => t,
                None if all_live => &none,
                // A source that is neither in the store nor sent over links: the check names it.
                None => {
                    check_sources(store, job.program)?;
                    &none
                }
            };
            v.push((b, t));
        }
        sources.push(v);
    }
    // Chunks of samples, one work item each. Inside a window every chip advances all the
    // chunk's samples before the next chip, so its synapse tables stay in cache.
    let threads = rayon::current_num_threads().max(1);
    let chunk = samples.div_ceil(threads).clamp(1, SYSTEM_CHUNK);
    // Per job of this process: its membrane rows, split by the chunks of samples.
    let mut own = own_buffers(jobs, &mine, samples, steps);
    // Spread over processes with links that cannot be full, nothing needs the spikes in one
    // order: each process delivers only to its own chips (the traffic is counted by the caller
    // from the gathered outputs, [`Exchange::count_chips`]) and sends only the spikes another
    // process's chips read.
    let local =
        (ranks.is_some() && exchange.link_cap == 0 && exchange.buffer_cap == 0).then(|| {
            exchange
                .fanout
                .iter()
                .map(|f| Local::new(f, &mine))
                .collect()
        });
    let ctx = SystemCtx {
        progs,
        programs: jobs.iter().map(|j| j.program).collect(),
        sources,
        membranes: jobs.iter().map(|j| j.membranes).collect(),
        mine,
        local,
        exchange,
        opts,
        window,
    };
    let mut runs: Vec<ChunkRun<'_>> = (0..samples)
        .step_by(chunk)
        .map(|s0| ChunkRun::new(&ctx, s0..(s0 + chunk).min(samples)))
        .collect();
    for (job, buf) in jobs.iter_mut().zip(own.iter_mut()) {
        let rows = rows_per_sample(job.membranes, steps);
        let mut rest = job_rows(job, buf);
        for run in runs.iter_mut() {
            run.outs.push(rest.split_rows(run.range.len() * rows));
        }
    }
    let windows = || {
        (0..steps)
            .step_by(window)
            .map(|t0| t0..(t0 + window).min(steps))
    };
    match ranks {
        // One process: each chunk runs to the end on its own.
        None => runs
            .par_iter_mut()
            .map(|run| {
                run.begin(&ctx);
                for w in windows() {
                    run.advance(&ctx, w.clone());
                    run.route(&ctx, w)?;
                }
                run.finish(&ctx);
                Ok(())
            })
            .collect::<Result<()>>()?,
        // Several: every window ends in an exchange between the processes.
        Some((ranks, traffic)) => {
            let me = me.expect("several processes");
            runs.par_iter_mut().for_each(|run| run.begin(&ctx));
            for w in windows() {
                runs.par_iter_mut()
                    .for_each(|run| run.advance(&ctx, w.clone()));
                let mut out = Vec::new();
                for run in &runs {
                    run.outgoing(&ctx, w.clone(), &mut out);
                }
                let t = std::time::Instant::now();
                let all = ranks.comm.all_gather_bytes(bytemuck::cast_slice(&out));
                traffic.exchange += t.elapsed();
                traffic.windows += 1;
                traffic.events_sent += (out.len() / 4) as u64;
                traffic.bytes_sent += (out.len() * 4) as u64;
                for (r, bytes) in all.iter().enumerate() {
                    if r == me {
                        continue;
                    }
                    traffic.bytes_received += bytes.len() as u64;
                    let words: Vec<u32> = bytemuck::pod_collect_to_vec(bytes);
                    for e in words.chunks_exact(4) {
                        let (s, k) = (e[0] as usize, e[1] as usize);
                        let (step, neuron) = (e[2] as usize, e[3] as usize);
                        let fits = s < samples
                            && k < chips
                            && ranks.owner[k] == r
                            && w.contains(&step)
                            && neuron < ctx.programs[k].neuron_count();
                        if !fits {
                            return Err(crate::error::Error::input(
                                format!("the spikes process {r} sent"),
                                format!(
                                    "a spike of sample {s} at step {step} from neuron {neuron} of \
                                     chip {k}, in the window of steps {}..{}, where the run has \
                                     {samples} samples and {chips} chips, and chip {k} is \
                                     process {}'s",
                                    w.start,
                                    w.end,
                                    ranks.owner.get(k).copied().unwrap_or(usize::MAX)
                                ),
                            ));
                        }
                        let run = &mut runs[s / chunk];
                        let at = k * run.range.len() + (s - run.range.start);
                        run.events[at].push(SpikeEvent {
                            step: e[2],
                            neuron: e[3],
                        });
                        traffic.events_received += 1;
                    }
                }
                runs.par_iter_mut()
                    .map(|run| run.route(&ctx, w.clone()))
                    .collect::<Result<()>>()?;
            }
            runs.par_iter_mut().for_each(|run| run.finish(&ctx));
        }
    }
    let mut per_job: Vec<(Vec<u32>, Vec<SpikeEvent>)> =
        (0..chips).map(|_| (vec![0u32], Vec::new())).collect();
    let mut stats = LinkStats::new(exchange.links.names.len(), chips);
    for run in runs {
        stats.add(&run.stats);
        let m = run.range.len();
        let mut events = run.events.into_iter();
        for (k, (offsets, all)) in per_job.iter_mut().enumerate() {
            for ev in events.by_ref().take(m) {
                // Another process's chip: only the spikes it sent over links are here.
                let ev = if ctx.mine[k] { ev } else { Vec::new() };
                offsets.push(offsets.last().expect("one offset") + ev.len() as u32);
                if all.is_empty() {
                    *all = ev;
                } else {
                    all.extend_from_slice(&ev);
                }
            }
        }
    }
    let outs = per_job
        .into_iter()
        .zip(own.into_iter().map(Own::into_output))
        .zip(&ctx.programs)
        .map(
            |(((offsets, events), (membrane, codes)), program)| PartitionOutput {
                spikes: SpikeTrains {
                    neurons: program.neuron_count(),
                    steps: opts.steps,
                    offsets,
                    events,
                },
                membrane,
                codes,
            },
        )
        .collect();
    Ok((outs, stats))
}

/// What every chunk of a system run shares: per job (chip), its program, sources and
/// membranes, and whether this process runs it.
struct SystemCtx<'a> {
    progs: &'a [&'a CpuProgram],
    programs: Vec<&'a PartitionProgram>,
    sources: Vec<Vec<(&'a ChannelBlock, &'a SpikeTrains)>>,
    membranes: Vec<Membranes>,
    mine: Vec<bool>,
    /// Per chip, where links cannot be full and processes share the run: its fan-out to this
    /// process's chips, and which of its neurons other processes' chips read.
    local: Option<Vec<Local>>,
    exchange: &'a Exchange,
    opts: &'a RunOptions,
    window: usize,
}

impl SystemCtx<'_> {
    fn sample(&self, k: usize, s: usize) -> Sample<'_> {
        Sample {
            prog: self.progs[k],
            program: self.programs[k],
            sources: &self.sources[k],
            sample: s,
            opts: self.opts,
            membranes: self.membranes[k],
        }
    }
}

/// A chip's fan-out restricted to this process's chips ([`Fanout`] without the links), and
/// per neuron whether another process's chip reads it.
struct Local {
    offsets: Vec<u32>,
    chips: Vec<u32>,
    channels: Vec<u32>,
    remote: Vec<bool>,
}

impl Local {
    fn new(f: &super::Fanout, mine: &[bool]) -> Self {
        let n = f.offsets.len().saturating_sub(1);
        let mut l = Local {
            offsets: Vec::with_capacity(n + 1),
            chips: Vec::new(),
            channels: Vec::new(),
            remote: vec![false; n],
        };
        l.offsets.push(0);
        for j in 0..n {
            for e in f.offsets[j] as usize..f.offsets[j + 1] as usize {
                let c = f.chips[e];
                if mine[c as usize] {
                    l.chips.push(c);
                    l.channels.push(f.channels[e]);
                } else {
                    l.remote[j] = true;
                }
            }
            l.offsets.push(l.chips.len() as u32);
        }
        l
    }
}

/// The state of one chunk of samples of a system run, every chip's (entry `k * m + i` for
/// chip `k`, the chunk's sample `i`).
struct ChunkRun<'a> {
    range: std::ops::Range<usize>,
    /// Per job: where its membranes of this chunk go.
    outs: Vec<MemOut<'a>>,
    scratch: Vec<Scratch>,
    /// Spikes so far (another process's chip: those it sent over the links).
    events: Vec<Vec<SpikeEvent>>,
    /// Spikes on their way in: (arrival step, channel), by arrival.
    arrivals: Vec<Vec<(u32, u32)>>,
    cursors: Vec<usize>,
    /// Spikes routed so far.
    sent: Vec<usize>,
    router: Router<'a>,
    stats: LinkStats,
}

impl<'a> ChunkRun<'a> {
    fn new(ctx: &SystemCtx<'a>, range: std::ops::Range<usize>) -> Self {
        let n = ctx.programs.len() * range.len();
        let ex = ctx.exchange;
        ChunkRun {
            range,
            outs: Vec::new(),
            scratch: (0..n).map(|_| Scratch::default()).collect(),
            events: vec![Vec::new(); n],
            arrivals: vec![Vec::new(); n],
            cursors: vec![0; n],
            sent: vec![0; n],
            router: Router::new(&ex.links, ex.link_cap, ex.buffer_cap, ex.overflow),
            stats: LinkStats::new(ex.links.names.len(), ctx.programs.len()),
        }
    }

    fn begin(&mut self, ctx: &SystemCtx<'_>) {
        let m = self.range.len();
        for k in (0..ctx.programs.len()).filter(|&k| ctx.mine[k]) {
            for (i, s) in self.range.clone().enumerate() {
                begin(&ctx.sample(k, s), &mut self.scratch[k * m + i]);
            }
        }
        self.stats.samples += m as u64;
    }

    /// Every chip of this process through the steps `w`.
    fn advance(&mut self, ctx: &SystemCtx<'_>, w: std::ops::Range<usize>) {
        let m = self.range.len();
        let steps = ctx.opts.steps as usize;
        for k in (0..ctx.programs.len()).filter(|&k| ctx.mine[k]) {
            let rows = rows_per_sample(ctx.membranes[k], steps);
            for (i, s) in self.range.clone().enumerate() {
                let at = k * m + i;
                let mut out = self.outs[k].rows(i * rows, rows);
                let mut live = Live {
                    live: &ctx.exchange.live[k],
                    arrivals: &self.arrivals[at],
                    cursor: self.cursors[at],
                };
                advance_best(
                    &ctx.sample(k, s),
                    &mut self.scratch[at],
                    w.clone(),
                    &mut self.events[at],
                    &mut out,
                    &mut live,
                );
                self.cursors[at] = live.cursor;
            }
        }
    }

    /// The spikes this process's chips sent over the links in the steps `w` (not yet routed),
    /// as words (sample, chip, step, neuron), in that order.
    fn outgoing(&self, ctx: &SystemCtx<'_>, w: std::ops::Range<usize>, out: &mut Vec<u32>) {
        let m = self.range.len();
        for (i, s) in self.range.clone().enumerate() {
            for k in (0..ctx.programs.len()).filter(|&k| ctx.mine[k]) {
                let f = &ctx.exchange.fanout[k];
                let at = k * m + i;
                // Links that cannot be full: only what other processes' chips read.
                let wanted = |j: usize| match &ctx.local {
                    Some(l) => l[k].remote[j],
                    None => f.offsets[j] != f.offsets[j + 1],
                };
                for e in &self.events[at][self.sent[at]..] {
                    if (e.step as usize) < w.end && wanted(e.neuron as usize) {
                        out.extend_from_slice(&[s as u32, k as u32, e.step, e.neuron]);
                    }
                }
            }
        }
    }

    /// Route each sample's spikes of the steps `w`: by step, then chip, then neuron; they
    /// arrive a window later.
    fn route(&mut self, ctx: &SystemCtx<'_>, w: std::ops::Range<usize>) -> Result<()> {
        let m = self.range.len();
        let chips = ctx.programs.len();
        let ChunkRun {
            events,
            arrivals,
            sent,
            router,
            stats,
            ..
        } = self;
        if let Some(local) = &ctx.local {
            // Links that cannot be full: deliver to this process's chips, in the same order.
            for i in 0..m {
                for t in w.clone() {
                    for (k, f) in local.iter().enumerate() {
                        let ev = &events[k * m + i];
                        let c = &mut sent[k * m + i];
                        while *c < ev.len() && ev[*c].step as usize == t {
                            let j = ev[*c].neuron as usize;
                            *c += 1;
                            let arrive = (t + ctx.window) as u32;
                            for e in f.offsets[j] as usize..f.offsets[j + 1] as usize {
                                arrivals[f.chips[e] as usize * m + i].push((arrive, f.channels[e]));
                            }
                        }
                    }
                }
            }
            return Ok(());
        }
        for i in 0..m {
            router.begin_window(stats);
            for t in w.clone() {
                for k in 0..chips {
                    let f = &ctx.exchange.fanout[k];
                    let ev = &events[k * m + i];
                    let c = &mut sent[k * m + i];
                    while *c < ev.len() && ev[*c].step as usize == t {
                        let j = ev[*c].neuron as usize;
                        *c += 1;
                        let (a, b) = (f.offsets[j] as usize, f.offsets[j + 1] as usize);
                        if a == b {
                            continue;
                        }
                        let (to, chans) = (&f.chips[a..b], &f.channels[a..b]);
                        let arrive = (t + ctx.window) as u32;
                        let tree = f.tree(j);
                        // Another process's chip takes its arrivals there.
                        router.route(k, to, tree, stats, |d| {
                            let c = to[d] as usize;
                            if ctx.mine[c] {
                                arrivals[c * m + i].push((arrive, chans[d]));
                            }
                        })?;
                    }
                }
            }
            router.end_window(stats);
        }
        Ok(())
    }

    fn finish(&mut self, ctx: &SystemCtx<'_>) {
        let m = self.range.len();
        let steps = ctx.opts.steps as usize;
        for k in (0..ctx.programs.len()).filter(|&k| ctx.mine[k]) {
            let rows = rows_per_sample(ctx.membranes[k], steps);
            for (i, s) in self.range.clone().enumerate() {
                let mut out = self.outs[k].rows(i * rows, rows);
                finish(&ctx.sample(k, s), &self.scratch[k * m + i], &mut out);
            }
        }
    }
}

/// Most samples one work item of a system run holds (each keeps the state of every chip).
const SYSTEM_CHUNK: usize = 16;

crate::simd::widest! {
    /// [`advance`] with live channels, compiled for the widest vector unit the processor has.
    fn advance_best(
        s: &Sample<'_>,
        scratch: &mut Scratch,
        range: std::ops::Range<usize>,
        events: &mut Vec<SpikeEvent>,
        mem_out: &mut MemOut<'_>,
        live: &mut Live<'_>,
    ) {
        advance::<true>(s, scratch, range, events, mem_out, live)
    }
}

/// Refuse a job that asks for its membranes as codes ([`Membranes::Codes`]) without a CADC
/// that [has codes](Cadc::has_codes).
fn check_codes(jobs: &[Job<'_>]) -> Result<()> {
    let bad = jobs
        .iter()
        .find(|j| j.membranes == Membranes::Codes && j.program.cadc_with_codes().is_none());
    match bad {
        Some(j) => Err(crate::error::Error::input(
            format!("partition {}", j.program.partition),
            "asks for its membranes as CADC codes, but has no CADC with codes (an emulated \
             partition whose readout has at most 8 bits and puts the model's 0 at a code \
             other than 0)",
        )),
        None => Ok(()),
    }
}

/// A job's buffer of its own for the membranes it records.
enum Own {
    None,
    Values(Vec<f32>),
    Codes(Vec<u8>),
}

/// Per job: a buffer of its own (zeros) for the membranes it records, where it gave no
/// destination and `mine` (this process runs it).
fn own_buffers(jobs: &[Job<'_>], mine: &[bool], samples: usize, steps: usize) -> Vec<Own> {
    jobs.iter()
        .zip(mine)
        .map(|(j, &m)| {
            let per = rows_per_sample(j.membranes, steps) * j.program.neuron_count();
            if !m || j.dest.is_some() || per == 0 {
                Own::None
            } else if j.membranes == Membranes::Codes {
                Own::Codes(crate::pool::take_bytes_zeroed(samples * per))
            } else {
                Own::Values(crate::pool::take_zeroed(samples * per))
            }
        })
        .collect()
}

/// Where `job` writes its membranes: the destination it gave, or its buffer `own`.
fn job_rows<'a>(job: &'a mut Job<'_>, own: &'a mut Own) -> MemOut<'a> {
    let n = job.program.neuron_count();
    match (&mut job.dest, own) {
        (Some(d), _) => MemOut::new(&mut *d.data, &mut *d.codes, d.stride, d.offset),
        (None, Own::Values(v)) => MemOut::new(v, &mut [], n, 0),
        (None, Own::Codes(c)) => MemOut::new(&mut [], c, n, 0),
        (None, Own::None) => MemOut::new(&mut [], &mut [], n, 0),
    }
}

impl Own {
    /// The buffer as a job's output: (values, codes).
    fn into_output(self) -> (Option<Vec<f32>>, Option<Vec<u8>>) {
        match self {
            Own::None => (None, None),
            Own::Values(v) => (Some(v), None),
            Own::Codes(c) => (None, Some(c)),
        }
    }
}

/// Rows of membranes one sample fills: every step for a trace, one for the maximum.
fn rows_per_sample(m: Membranes, steps: usize) -> usize {
    match m {
        Membranes::None => 0,
        Membranes::Max => 1,
        // The host is the CPU's device: kept membranes are traces like any other.
        Membranes::Trace | Membranes::Keep | Membranes::Codes => steps,
    }
}

/// Where a sample's membranes go: rows of `stride` values (or codes, [`Membranes::Codes`]; the
/// other of the two is empty), its neurons at `offset..`.
struct MemOut<'a> {
    data: &'a mut [f32],
    codes: &'a mut [u8],
    stride: usize,
    offset: usize,
}

impl<'a> MemOut<'a> {
    /// Rows of `stride` values in `data`, or of codes in `codes`, whichever is not empty.
    fn new(data: &'a mut [f32], codes: &'a mut [u8], stride: usize, offset: usize) -> Self {
        MemOut {
            data,
            codes,
            stride,
            offset,
        }
    }

    /// Rows `first..first + rows`, as far as there are any.
    fn rows(&mut self, first: usize, rows: usize) -> MemOut<'_> {
        let (a, b) = (first * self.stride, (first + rows) * self.stride);
        let (n, m) = (self.data.len(), self.codes.len());
        MemOut::new(
            &mut self.data[a.min(n)..b.min(n)],
            &mut self.codes[a.min(m)..b.min(m)],
            self.stride,
            self.offset,
        )
    }

    /// The first `rows` rows, taken off the front (as far as there are any).
    fn split_rows(&mut self, rows: usize) -> MemOut<'a> {
        let len = rows * self.stride;
        let (n, m) = (len.min(self.data.len()), len.min(self.codes.len()));
        let (data, rest) = std::mem::take(&mut self.data).split_at_mut(n);
        self.data = rest;
        let (codes, rest) = std::mem::take(&mut self.codes).split_at_mut(m);
        self.codes = rest;
        MemOut::new(data, codes, self.stride, self.offset)
    }

    /// The `n` values of row `r`.
    #[inline(always)]
    fn row(&mut self, r: usize, n: usize) -> &mut [f32] {
        row_in(self.data, self.stride, self.offset, r, n)
    }
}

/// The `n` entries of row `r` of `rows` (rows of `stride`, the neurons at `offset..`): one of
/// a [`MemOut`]'s arrays, borrowed apart from the other.
#[inline(always)]
fn row_in<T>(rows: &mut [T], stride: usize, offset: usize, r: usize, n: usize) -> &mut [T] {
    let a = r * stride + offset;
    &mut rows[a..a + n]
}

/// The program's weights `at..at+len` (its synapses there, in order) to targets
/// `first..first+len`, one delay.
#[derive(Clone, Copy, Debug)]
struct Run {
    first: usize,
    len: usize,
    at: usize,
    delay: usize,
}

/// How each source's synapses are delivered.
#[derive(Clone, Debug)]
enum Delivery {
    /// One run.
    Run(Run),
    /// Runs `runs[range]`.
    Runs(std::ops::Range<usize>),
    /// Synapses `range` of the program, one by one.
    List(std::ops::Range<usize>),
    /// One weight to every neuron of the program, with `delay`, held in [`columns::Dense`].
    Dense { delay: usize },
}

/// Neuron coefficients as separate arrays, so update loops load them as vectors.
#[derive(Clone, Debug, Default)]
struct SoaCoeffs {
    a_syn: Vec<f32>,
    k_mem: Vec<f32>,
    v_leak: Vec<f32>,
    v_reset: Vec<f32>,
    v_th: Vec<f32>,
    refractory_steps: Vec<u32>,
    spiking: Vec<u32>,
    weight_gain: Vec<f32>,
    input_scale: Vec<f32>,
    noise_sd: Vec<f32>,
    noise_key: Vec<u32>,
    membrane_first: Vec<u32>,
    bias: Vec<f32>,
    v_init: Vec<f32>,
    leaky: Vec<u32>,
}

impl SoaCoeffs {
    fn new(c: &[NeuronCoeffs]) -> Self {
        SoaCoeffs {
            a_syn: c.iter().map(|c| c.a_syn).collect(),
            k_mem: c.iter().map(|c| c.k_mem).collect(),
            v_leak: c.iter().map(|c| c.v_leak).collect(),
            v_reset: c.iter().map(|c| c.v_reset).collect(),
            v_th: c.iter().map(|c| c.v_th).collect(),
            refractory_steps: c.iter().map(|c| c.refractory_steps).collect(),
            spiking: c.iter().map(|c| c.spiking).collect(),
            weight_gain: c.iter().map(|c| c.weight_gain).collect(),
            input_scale: c.iter().map(|c| c.input_scale).collect(),
            noise_sd: c.iter().map(|c| c.noise_sd).collect(),
            noise_key: c.iter().map(|c| c.noise_key).collect(),
            membrane_first: c.iter().map(|c| c.membrane_first).collect(),
            bias: c.iter().map(|c| c.bias).collect(),
            v_init: c.iter().map(|c| c.v_init).collect(),
            leaky: c.iter().map(|c| c.leaky).collect(),
        }
    }

    #[inline(always)]
    fn get(&self, j: usize) -> NeuronCoeffs {
        NeuronCoeffs {
            a_syn: self.a_syn[j],
            k_mem: self.k_mem[j],
            v_leak: self.v_leak[j],
            v_reset: self.v_reset[j],
            v_th: self.v_th[j],
            refractory_steps: self.refractory_steps[j],
            spiking: self.spiking[j],
            weight_gain: self.weight_gain[j],
            input_scale: self.input_scale[j],
            noise_sd: self.noise_sd[j],
            noise_key: self.noise_key[j],
            membrane_first: self.membrane_first[j],
            bias: self.bias[j],
            v_init: self.v_init[j],
            leaky: self.leaky[j],
        }
    }
}

/// How a segment of neurons is updated.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Every coefficient equal, no refractory period, no noise: broadcast coefficients.
    Uniform(NeuronCoeffs),
    /// Coefficients per neuron, no refractory period, noise where `noisy`.
    Varied { noisy: bool },
    /// Refractory periods: the general step per neuron.
    General { noisy: bool },
}

/// Local neurons `lo..hi`, all of one stage and one population.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Segment {
    lo: usize,
    hi: usize,
    kind: Kind,
    /// A segment of fewer than [`SHORT`] neurons with coefficients per neuron: where
    /// [`SHORT`] copies of its coefficients start in the program's (its own, then
    /// non-spiking, noiseless ones), for [`update_short`].
    pad_at: Option<usize>,
}

/// Segments of fewer neurons with coefficients per neuron (an emulated readout's ten) update
/// on padded copies of their state ([`update_short`]): the update loop takes neurons in
/// vector steps of 32 where measured (AVX-512 and AVX2 unrolled), and those left over one at a
/// time.
const SHORT: usize = 32;

/// For a segment of kind `kind` with coefficients `c`: where [`update_short`] finds them
/// padded to [`SHORT`] neurons, appended to `all` here, if the segment has fewer neurons and
/// coefficients per neuron.
fn pad_coeffs(all: &mut Vec<NeuronCoeffs>, c: &[NeuronCoeffs], kind: Kind) -> Option<usize> {
    if c.is_empty() || c.len() >= SHORT || !matches!(kind, Kind::Varied { .. }) {
        return None;
    }
    let at = all.len();
    let silent = NeuronCoeffs {
        spiking: 0,
        noise_sd: 0.0,
        ..c[0]
    };
    all.extend_from_slice(c);
    all.resize(at + SHORT, silent);
    Some(at)
}

/// A partition prepared for the CPU.
#[derive(Clone, Debug)]
pub(crate) struct CpuProgram {
    n: usize,
    nch: usize,
    slots: usize,
    /// Per stage: its neuron range and segments.
    stages: Vec<(usize, usize, Vec<Segment>)>,
    deliveries: Vec<Delivery>,
    /// The stretches of sources delivered as several runs.
    runs: Vec<Run>,
    coeffs: SoaCoeffs,
    rest: Vec<f32>,
    noisy: bool,
    cadc: Option<Cadc>,
    /// Can run by columns ([`columns`]): every synapse comes from an input channel.
    columns: bool,
    /// Runs by columns unless told otherwise: its weights do not fit a core's cache.
    wide: bool,
    /// A dense layer's weights, block by block ([`columns::Dense`]).
    dense: Option<columns::Dense>,
    /// The program's weights for its runs at their resolution (the shift, then the
    /// multiples), where that is narrower than the program's `i32` (emulated weights: bytes):
    /// the rows a spike adds are read from memory at a quarter or half the bytes.
    narrow: Option<(u32, narrow::Narrow)>,
}

impl CpuProgram {
    pub(crate) fn new(prog: &PartitionProgram) -> Self {
        let mut p = Self::coefficients(prog);
        p.deliveries = prog
            .synapse_offsets
            .windows(2)
            .map(|w| {
                let (a, b) = (w[0] as usize, w[1] as usize);
                let syn = &prog.synapses[a..b];
                // Maximal stretches of consecutive targets with one delay.
                let mut runs: Vec<(usize, usize)> = Vec::new();
                for (k, s) in syn.iter().enumerate() {
                    match runs.last_mut() {
                        Some((start, len))
                            if s.target == syn[*start].target + *len as u32
                                && s.delay == syn[*start].delay =>
                        {
                            *len += 1
                        }
                        _ => runs.push((k, 1)),
                    }
                }
                // A run reads the program's weights where its synapses lie (or their narrow
                // copy, `CpuProgram::narrow`, rewritten by `update`).
                let run = |(start, len): (usize, usize)| Run {
                    first: syn[start].target as usize,
                    len,
                    at: a + start,
                    delay: syn[start].delay as usize,
                };
                match runs[..] {
                    [] => Delivery::List(a..b),
                    [one] => Delivery::Run(run(one)),
                    // Long stretches (a source reaching several chips of a fused system run)
                    // as vector adds; short ones synapse by synapse.
                    _ if runs.len() * 8 <= syn.len() => {
                        let first = p.runs.len();
                        for r in runs {
                            let r = run(r);
                            p.runs.push(r);
                        }
                        Delivery::Runs(first..p.runs.len())
                    }
                    _ => Delivery::List(a..b),
                }
            })
            .collect();
        p.columns = columns::eligible(prog);
        p.wide = p.columns && columns::wide(prog);
        if p.wide {
            p.dense = columns::Dense::take(&mut p, prog);
        }
        p.narrow_runs(prog);
        p
    }

    /// Hold the weights of the runs narrow where they can be ([`CpuProgram::narrow`]); not
    /// for a program whose channels are a dense layer's blocks (their backend copy), nor
    /// without runs.
    fn narrow_runs(&mut self, prog: &PartitionProgram) {
        let runs = self
            .deliveries
            .iter()
            .any(|d| matches!(d, Delivery::Run(_) | Delivery::Runs(_)));
        let old = self.narrow.take();
        if self.dense.is_none() && runs {
            self.narrow = narrow::narrowed(&prog.weights, old);
        }
    }

    /// Everything but the synapse tables: sizes, stages and their segments, coefficients.
    fn coefficients(prog: &PartitionProgram) -> Self {
        let runs = prog.population_runs();
        // The coefficients, then the padded copies of short segments'.
        let mut all = prog.coeffs.clone();
        let stages = prog
            .stage_bounds
            .windows(2)
            .map(|w| {
                let (lo, hi) = (w[0] as usize, w[1] as usize);
                let segs = runs
                    .iter()
                    .filter_map(|&(first, _, _, len)| {
                        let (a, b) = (first.max(lo), (first + len).min(hi));
                        (a < b).then(|| {
                            let kind = kind_of(&prog.coeffs[a..b]);
                            let pad_at = pad_coeffs(&mut all, &prog.coeffs[a..b], kind);
                            Segment {
                                lo: a,
                                hi: b,
                                kind,
                                pad_at,
                            }
                        })
                    })
                    .collect();
                (lo, hi, segs)
            })
            .collect();
        CpuProgram {
            n: prog.neuron_count(),
            nch: prog.channels.len(),
            slots: prog.max_delay as usize + 1,
            stages,
            deliveries: Vec::new(),
            runs: Vec::new(),
            coeffs: SoaCoeffs::new(&all),
            rest: prog.coeffs.iter().map(|c| LifState::rest(c).v).collect(),
            noisy: prog.coeffs.iter().any(|c| c.noise_sd != 0.0),
            cadc: prog.cadc,
            columns: false,
            wide: false,
            dense: None,
            narrow: None,
        }
    }

    /// Whether this program runs by columns when asked to step as `stepping` says: where its
    /// weights do not fit a core's cache, or its neurons step by lanes at `steps` steps
    /// (MNIST's readout with the trained checkpoint, T = 100, batch 256: 0.50 ms by samples,
    /// 0.20 – 0.25 by lanes).
    fn by_columns(&self, stepping: super::Stepping, steps: usize) -> bool {
        self.columns
            && match stepping {
                super::Stepping::Auto => self.wide || self.lanes_fit(steps),
                super::Stepping::Samples => false,
                super::Stepping::Columns => true,
            }
    }

    /// Whether this program runs by columns with its neurons stepped by lanes ([`lanes`]) at
    /// `steps` steps.
    fn by_lanes(&self, stepping: super::Stepping, steps: usize) -> bool {
        self.lanes_fit(steps) && self.by_columns(stepping, steps)
    }

    /// Whether its neurons can step by lanes ([`lanes::eligible`]: few, no refractory period;
    /// derived from the segments, which [`CpuProgram::update`] rebuilds) at `steps` steps.
    fn lanes_fit(&self, steps: usize) -> bool {
        lanes::eligible(self.n, self.columns, &self.stages) && lanes::fits(self.n, steps)
    }

    /// New weights and scales, same structure: the coefficient-dependent parts, a dense
    /// layer's blocks and the runs' narrow copy of the weights.
    fn update(&mut self, prog: &PartitionProgram) {
        if let Some(d) = &mut self.dense {
            d.rewrite(prog);
        }
        self.narrow_runs(prog);
        let fresh = Self::coefficients(prog);
        self.stages = fresh.stages;
        self.coeffs = fresh.coeffs;
        self.rest = fresh.rest;
        self.noisy = fresh.noisy;
        self.cadc = fresh.cadc;
    }

    /// [`CpuProgram::deliver`] for every source of `due` (spikes of step `t`): consecutive
    /// sources delivered as runs to the same targets with the same delays (a layer's inputs,
    /// a population's spikes to its targets on each chip) are added together, run by run,
    /// [`DUE_LANES`] targets at a time, their sums held in registers while the sources'
    /// weights pass: a target's pending input is loaded and stored once for them all, not
    /// once a source (each store waited on the last one's; 1.65x faster so at five spikes a
    /// step, in a microbenchmark). Integer sums: the same in any order.
    #[inline(always)]
    fn deliver_all(
        &self,
        prog: &PartitionProgram,
        due: &[u32],
        t: usize,
        steps: usize,
        pending: &mut [i32],
    ) {
        let runs_of = |src: u32| match &self.deliveries[src as usize] {
            Delivery::Run(r) => Some(std::slice::from_ref(r)),
            Delivery::Runs(range) => Some(&self.runs[range.clone()]),
            _ => None,
        };
        let mut i = 0;
        while i < due.len() {
            let Some(shape) = runs_of(due[i]) else {
                self.deliver(prog, due[i] as usize, t, steps, pending);
                i += 1;
                continue;
            };
            let same = |rs: &[Run]| {
                rs.len() == shape.len()
                    && rs
                        .iter()
                        .zip(shape)
                        .all(|(q, r)| q.first == r.first && q.len == r.len && q.delay == r.delay)
            };
            let mut j = i + 1;
            while j < due.len() && runs_of(due[j]).is_some_and(same) {
                j += 1;
            }
            for (k, r) in shape.iter().enumerate() {
                let when = t + r.delay;
                if when < steps {
                    let base = (when % self.slots) * self.n + r.first;
                    // The group's rows looked up once, not once per block of lanes.
                    for group in due[i..j].chunks(GROUP_ROWS) {
                        let mut ats = [0usize; GROUP_ROWS];
                        for (a, &src) in ats.iter_mut().zip(group) {
                            *a = match runs_of(src) {
                                Some(rs) => rs[k].at,
                                None => unreachable!("a group of sources delivered as runs"),
                            };
                        }
                        let ats = ats[..group.len()].iter().copied();
                        let dst = &mut pending[base..base + r.len];
                        match &self.narrow {
                            Some((shift, narrow::Narrow::I8(w))) => add_rows(w, *shift, ats, dst),
                            Some((shift, narrow::Narrow::I16(w))) => add_rows(w, *shift, ats, dst),
                            _ => add_rows(&prog.weights, 0, ats, dst),
                        }
                    }
                }
            }
            i = j;
        }
    }

    /// A source whose synapses are not runs ([`CpuProgram::deliver_all`] adds those): a dense
    /// layer's blocks or a synapse list.
    #[inline(always)]
    fn deliver(
        &self,
        prog: &PartitionProgram,
        src: usize,
        t: usize,
        steps: usize,
        pending: &mut [i32],
    ) {
        match self.deliveries[src] {
            Delivery::Run(_) | Delivery::Runs(_) => {
                unreachable!("deliver_all adds the runs")
            }
            Delivery::Dense { delay } => {
                let when = t + delay;
                if when < steps {
                    let d = self
                        .dense
                        .as_ref()
                        .expect("dense deliveries have dense weights");
                    let base = (when % self.slots) * self.n;
                    d.deliver(src, &mut pending[base..base + self.n]);
                }
            }
            Delivery::List(ref range) => {
                let ws = &prog.weights[range.clone()];
                for (syn, &w) in prog.synapses[range.clone()].iter().zip(ws) {
                    let when = t + syn.delay as usize;
                    if when < steps {
                        pending[(when % self.slots) * self.n + syn.target as usize] += w;
                    }
                }
            }
        }
    }
}

/// Targets whose sums [`CpuProgram::deliver_all`] keeps in registers at a time (four AVX-512
/// registers of 16 `i32`).
const DUE_LANES: usize = 64;

/// Sources whose rows [`CpuProgram::deliver_all`] adds in one [`add_rows`] (their row offsets
/// gathered on the stack first).
const GROUP_ROWS: usize = 64;

/// `dst += weights[at..at + dst.len()] << shift` for every `at` of `ats`, [`DUE_LANES`]
/// targets at a time with their sums in registers, shifted once into `dst` (integer sums:
/// the same as adding the shifted weights one by one, wrapping alike).
#[inline(always)]
fn add_rows<W: Copy + Into<i32>>(
    weights: &[W],
    shift: u32,
    ats: impl Iterator<Item = usize> + Clone,
    dst: &mut [i32],
) {
    let (blocks, rest) = dst.as_chunks_mut::<DUE_LANES>();
    for (b, sums) in blocks.iter_mut().enumerate() {
        let mut acc = [0i32; DUE_LANES];
        for at in ats.clone() {
            let at = at + b * DUE_LANES;
            let row: &[W; DUE_LANES] = weights[at..at + DUE_LANES]
                .try_into()
                .expect("a block of lanes");
            for (x, &w) in acc.iter_mut().zip(row) {
                *x += w.into();
            }
        }
        for (s, a) in sums.iter_mut().zip(acc) {
            *s += a << shift;
        }
    }
    let off = blocks.len() * DUE_LANES;
    let left = rest.len();
    for at in ats {
        for (x, &w) in rest.iter_mut().zip(&weights[at + off..at + off + left]) {
            *x += w.into() << shift;
        }
    }
}

/// The update kind of neurons with coefficients `c`.
fn kind_of(c: &[NeuronCoeffs]) -> Kind {
    let noisy = c.iter().any(|c| c.noise_sd != 0.0);
    if c.iter().any(|c| c.refractory_steps != 0) {
        Kind::General { noisy }
    } else if !noisy && c.iter().all(|x| *x == c[0]) {
        Kind::Uniform(c[0])
    } else if c.iter().any(|x| x.membrane_first != 0) {
        // hxtorch's update order with per-neuron coefficients: the reference step.
        Kind::General { noisy }
    } else {
        Kind::Varied { noisy }
    }
}

/// Per-thread buffers, reused across samples (and by [`columns`] for a block's neurons).
#[derive(Default)]
struct Scratch {
    pending: Vec<i32>,
    /// The sources whose spikes a step delivers next ([`CpuProgram::deliver_all`]).
    due: Vec<u32>,
    cur: Vec<f32>,
    mem: Vec<f32>,
    refr: Vec<u32>,
    spiked: Vec<u8>,
    vrow: Vec<f32>,
    peak: Vec<f32>,
    cursors: Vec<usize>,
    columns: columns::ColumnScratch,
}

/// Everything one sample of one partition needs.
struct Sample<'a> {
    prog: &'a CpuProgram,
    program: &'a PartitionProgram,
    sources: &'a [(&'a ChannelBlock, &'a SpikeTrains)],
    sample: usize,
    opts: &'a RunOptions,
    membranes: Membranes,
}

/// [`run_sample`] compiled for the widest vector unit the processor has; the arithmetic is
/// identical in every variant, only the vector width differs.
fn run_sample_best(
    s: &Sample<'_>,
    scratch: &mut Scratch,
    events: &mut Vec<SpikeEvent>,
    mem_out: MemOut<'_>,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the processor supports AVX-512F, checked just above.
            return unsafe { run_sample_avx512(s, scratch, events, mem_out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the processor supports AVX2, checked just above.
            return unsafe { run_sample_avx2(s, scratch, events, mem_out) };
        }
    }
    run_sample(s, scratch, events, mem_out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn run_sample_avx512(
    s: &Sample<'_>,
    scratch: &mut Scratch,
    events: &mut Vec<SpikeEvent>,
    mem_out: MemOut<'_>,
) {
    run_sample(s, scratch, events, mem_out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_sample_avx2(
    s: &Sample<'_>,
    scratch: &mut Scratch,
    events: &mut Vec<SpikeEvent>,
    mem_out: MemOut<'_>,
) {
    run_sample(s, scratch, events, mem_out)
}

/// One sample of one partition: its spikes are appended to `events` sorted by (step,
/// neuron); its membranes go to `mem_out` (a row per step for a trace, one row for the
/// maximum).
#[inline(always)]
fn run_sample(
    s: &Sample<'_>,
    scratch: &mut Scratch,
    events: &mut Vec<SpikeEvent>,
    mut mem_out: MemOut<'_>,
) {
    begin(s, scratch);
    let steps = s.opts.steps as usize;
    advance::<false>(
        s,
        scratch,
        0..steps,
        events,
        &mut mem_out,
        &mut Live::default(),
    );
    finish(s, scratch, &mut mem_out);
}

/// Spikes that arrive over a system's links: `arrivals` sorted by step (`(step, channel)`),
/// `cursor` the first not yet delivered; channels in `live` take no spikes from the store.
#[derive(Default)]
struct Live<'a> {
    live: &'a [bool],
    arrivals: &'a [(u32, u32)],
    cursor: usize,
}

/// Put a sample's state at rest.
#[inline(always)]
fn begin(s: &Sample<'_>, scratch: &mut Scratch) {
    let prog = s.prog;
    let n = prog.n;
    let Scratch {
        pending,
        cur,
        mem,
        refr,
        spiked,
        vrow,
        peak,
        cursors,
        ..
    } = scratch;
    reset(pending, prog.slots * n, 0);
    reset(cur, n, 0.0);
    mem.clear();
    mem.extend_from_slice(&prog.rest);
    reset(refr, n, 0);
    reset(spiked, n, 0);
    reset(vrow, n, 0.0);
    reset(peak, n, f32::NEG_INFINITY);
    reset(cursors, s.sources.len(), 0);
}

/// Advance a sample by `steps` (a range starting where the last call ended). With `LIVE`,
/// the channels `live.live` marks take their spikes from `live.arrivals` instead of the store.
#[inline(always)]
fn advance<const LIVE: bool>(
    s: &Sample<'_>,
    scratch: &mut Scratch,
    range: std::ops::Range<usize>,
    events: &mut Vec<SpikeEvent>,
    mem_out: &mut MemOut<'_>,
    live: &mut Live<'_>,
) {
    let prog = s.prog;
    let n = prog.n;
    let steps = s.opts.steps as usize;
    let sample = s.opts.sample_base + s.sample as u32;
    let Scratch {
        pending,
        due,
        cur,
        mem,
        refr,
        spiked,
        vrow,
        peak,
        cursors,
        ..
    } = scratch;
    let Live {
        live,
        arrivals,
        cursor,
    } = live;
    let (live, arrivals) = (*live, *arrivals);
    // A local view of the output, so that its fields stay in registers across the loop.
    let mem_out = MemOut::new(
        &mut *mem_out.data,
        &mut *mem_out.codes,
        mem_out.stride,
        mem_out.offset,
    );
    let (stride, offset) = (mem_out.stride, mem_out.offset);
    let mut at = *cursor;
    for t in range {
        // The step's input, delivered together (integer sums: in any order the same).
        due.clear();
        for ((block, trains), c) in s.sources.iter().zip(cursors.iter_mut()) {
            let ev = trains.sample(s.sample);
            while *c < ev.len() && ev[*c].step as usize == t {
                if let Some(ch) = block.channel(ev[*c].neuron) {
                    if !LIVE || !live[ch as usize] {
                        due.push(ch);
                    }
                }
                *c += 1;
            }
        }
        if LIVE {
            while at < arrivals.len() && arrivals[at].0 as usize == t {
                due.push(arrivals[at].1);
                at += 1;
            }
        }
        prog.deliver_all(s.program, due, t, steps, pending);
        let slot = (t % prog.slots) * n;
        let base = if prog.noisy {
            noise_base(s.opts.noise_seed, sample, t as u32)
        } else {
            0
        };
        for (lo, hi, segs) in &prog.stages {
            let (lo, hi) = (*lo, *hi);
            // Membranes into the sample's row first, then copied to the trace: a plain loop
            // takes the stores that miss the cache, not the neuron update (the ideal MNIST
            // training's forward pass 3–4 % faster at T = 100).
            let vout: &mut [f32] = &mut vrow[..];
            let mut any = false;
            for seg in segs {
                any |= update_segment(
                    seg,
                    &prog.coeffs,
                    base,
                    &mut pending[slot + seg.lo..slot + seg.hi],
                    State {
                        cur: &mut cur[seg.lo..seg.hi],
                        mem: &mut mem[seg.lo..seg.hi],
                        refr: &mut refr[seg.lo..seg.hi],
                        spiked: &mut spiked[seg.lo..seg.hi],
                        v: &mut vout[seg.lo..seg.hi],
                    },
                    s.membranes != Membranes::None,
                );
            }
            let codes: &mut [u8] = match s.membranes {
                Membranes::Codes => &mut row_in(mem_out.codes, stride, offset, t, n)[lo..hi],
                _ => &mut [],
            };
            keep_membranes(
                s.membranes,
                prog.cadc,
                &mut peak[lo..hi],
                &mut vout[lo..hi],
                codes,
            );
            if matches!(s.membranes, Membranes::Trace | Membranes::Keep) {
                row_in(mem_out.data, stride, offset, t, n)[lo..hi].copy_from_slice(&vout[lo..hi]);
            }
            if any {
                due.clear();
                for k in set_flags(&spiked[lo..hi]) {
                    let j = lo + k;
                    events.push(SpikeEvent {
                        step: t as u32,
                        neuron: j as u32,
                    });
                    due.push((prog.nch + j) as u32);
                }
                prog.deliver_all(s.program, due, t, steps, pending);
            }
        }
    }
    *cursor = at;
}

/// The `k` where `flags[k]` is not 0, in order: eight flags a word, so that a word without a
/// spike costs one test (a step's spike flags are mostly 0). An iterator rather than a
/// function taking a closure, so that the caller's loop body is compiled as part of the
/// caller: a closure is a function of its own, built for the baseline instruction set even
/// where its caller is inlined into a function compiled for AVX-512 (a recurrent layer's
/// deliveries ran four times narrower than the rest of its step).
#[derive(Debug)]
struct SetFlags<'a> {
    /// Flags after the current word.
    rest: &'a [u8],
    /// Index of the current word's first flag.
    base: usize,
    /// The current word's flags not yet returned (one byte a flag).
    word: u64,
}

/// [`SetFlags`] of `flags`.
#[inline(always)]
fn set_flags(flags: &[u8]) -> SetFlags<'_> {
    let mut it = SetFlags {
        rest: flags,
        base: 0,
        word: 0,
    };
    it.load_word();
    it
}

impl SetFlags<'_> {
    /// Take the next eight flags of `rest` into `word`, zero-padded past the end (`base` is
    /// the caller's to move).
    #[inline(always)]
    fn load_word(&mut self) {
        match self.rest.split_first_chunk::<8>() {
            Some((w, rest)) => {
                self.word = u64::from_le_bytes(*w);
                self.rest = rest;
            }
            None => {
                let mut w = [0u8; 8];
                w[..self.rest.len()].copy_from_slice(self.rest);
                self.word = u64::from_le_bytes(w);
                self.rest = &[];
            }
        }
    }
}

impl Iterator for SetFlags<'_> {
    type Item = usize;

    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        while self.word == 0 {
            if self.rest.is_empty() {
                return None;
            }
            self.base += 8;
            self.load_word();
        }
        let k = self.word.trailing_zeros() as usize / 8;
        self.word &= !(0xffu64 << (8 * k));
        Some(self.base + k)
    }
}

/// Write what a sample leaves at its end (the maximum of each membrane, if asked).
#[inline(always)]
fn finish(s: &Sample<'_>, scratch: &Scratch, mem_out: &mut MemOut<'_>) {
    let prog = s.prog;
    if s.membranes == Membranes::Max {
        write_peaks(prog.cadc, &scratch.peak, mem_out.row(0, prog.n));
    }
}

/// What a step keeps of the membranes `v` (before reset) of neurons whose running maxima are
/// `peak`: the maximum so far (`Max`), or `v` itself, a trace row, quantised as the CADC reads
/// it, or the CADC's codes of `v` into `codes` (`Codes`: the program has a CADC that
/// [has codes](Cadc::has_codes), checked by [`check_codes`]).
#[inline(always)]
fn keep_membranes(
    membranes: Membranes,
    cadc: Option<Cadc>,
    peak: &mut [f32],
    v: &mut [f32],
    codes: &mut [u8],
) {
    match membranes {
        Membranes::None => {}
        Membranes::Max => {
            for (p, &x) in peak.iter_mut().zip(v.iter()) {
                *p = p.max(x);
            }
        }
        Membranes::Trace | Membranes::Keep => {
            if let Some(q) = cadc {
                for x in v.iter_mut() {
                    *x = q.quantise(*x);
                }
            }
        }
        Membranes::Codes => {
            let q = cadc.expect("codes are asked of programs with a CADC");
            for (c, &x) in codes.iter_mut().zip(v.iter()) {
                *c = q.code(x);
            }
        }
    }
}

/// Write the maxima `peak` to `out`, quantised as the CADC reads them.
#[inline(always)]
fn write_peaks(cadc: Option<Cadc>, peak: &[f32], out: &mut [f32]) {
    for (o, &p) in out.iter_mut().zip(peak) {
        *o = match cadc {
            Some(q) => q.quantise(p),
            None => p,
        };
    }
}

fn reset<T: Copy>(v: &mut Vec<T>, len: usize, value: T) {
    v.clear();
    v.resize(len, value);
}

/// Neuron state of one segment, and where its membranes (before reset) go.
struct State<'a> {
    cur: &'a mut [f32],
    mem: &'a mut [f32],
    refr: &'a mut [u32],
    spiked: &'a mut [u8],
    v: &'a mut [f32],
}

/// Advance one segment by one step; returns whether any neuron spiked. Every branch computes
/// what [`lif_step`] computes for these neurons. The membranes before reset go to `st.v` where
/// `out` (a trace or a maximum is asked for); elsewhere the store is left out of the loop.
/// The input is taken, zeros left for the slot's next use: each value is stored back as it
/// was loaded, so the next deliveries' loads find their stores at the same width (clearing
/// the slot after the step, a `memset` of other widths, likely made a readout's loads wait on
/// store forwarding: a quarter of MNIST inference went to the ten-neuron readout's run).
#[inline(always)]
fn update_segment(
    seg: &Segment,
    c: &SoaCoeffs,
    base: u32,
    input: &mut [i32],
    st: State<'_>,
    out: bool,
) -> bool {
    if let Some(at) = seg.pad_at {
        return update_short(seg, at, c, base, input, st, out);
    }
    update_neurons(seg, c, base, input, st, out)
}

/// [`update_segment`] of a segment of fewer than [`SHORT`] neurons with coefficients per
/// neuron, padded ones at `pad_at`: on copies of its state padded to [`SHORT`] neurons
/// (zeros), so that the loop takes them in vector steps; the padding's results are dropped.
/// The same arithmetic per neuron as on the segment itself.
#[inline(always)]
fn update_short(
    seg: &Segment,
    pad_at: usize,
    c: &SoaCoeffs,
    base: u32,
    input: &mut [i32],
    st: State<'_>,
    out: bool,
) -> bool {
    let n = seg.hi - seg.lo;
    debug_assert!(n < SHORT && input.len() == n, "a short segment's own input");
    let mut inp = [0i32; SHORT];
    let (mut cur, mut mem, mut v) = ([0f32; SHORT], [0f32; SHORT], [0f32; SHORT]);
    let (mut refr, mut spiked) = ([0u32; SHORT], [0u8; SHORT]);
    inp[..n].copy_from_slice(&input[..n]);
    input[..n].fill(0);
    cur[..n].copy_from_slice(&st.cur[..n]);
    mem[..n].copy_from_slice(&st.mem[..n]);
    let padded = Segment {
        lo: pad_at,
        hi: pad_at + SHORT,
        pad_at: None,
        ..*seg
    };
    let state = State {
        cur: &mut cur,
        mem: &mut mem,
        refr: &mut refr,
        spiked: &mut spiked,
        v: &mut v,
    };
    update_neurons(&padded, c, base, &mut inp, state, out);
    st.cur[..n].copy_from_slice(&cur[..n]);
    st.mem[..n].copy_from_slice(&mem[..n]);
    st.spiked[..n].copy_from_slice(&spiked[..n]);
    if out {
        st.v[..n].copy_from_slice(&v[..n]);
    }
    spiked[..n].iter().any(|&f| f != 0)
}

/// [`update_segment`] of the segment's neurons themselves.
#[inline(always)]
fn update_neurons(
    seg: &Segment,
    c: &SoaCoeffs,
    base: u32,
    input: &mut [i32],
    st: State<'_>,
    out: bool,
) -> bool {
    let (lo, hi) = (seg.lo, seg.hi);
    match (seg.kind, out) {
        (Kind::Uniform(k), out) => {
            // The update order and the leak chosen once, outside the loop.
            match (k.membrane_first != 0, k.leaky != 0, out) {
                (false, true, false) => update_uniform::<false, true, false>(&k, input, st),
                (false, true, true) => update_uniform::<false, true, true>(&k, input, st),
                (false, false, false) => update_uniform::<false, false, false>(&k, input, st),
                (false, false, true) => update_uniform::<false, false, true>(&k, input, st),
                (true, true, false) => update_uniform::<true, true, false>(&k, input, st),
                (true, true, true) => update_uniform::<true, true, true>(&k, input, st),
                (true, false, false) => update_uniform::<true, false, false>(&k, input, st),
                (true, false, true) => update_uniform::<true, false, true>(&k, input, st),
            }
        }
        (Kind::Varied { noisy: false }, true) => {
            update_varied::<false, true>(c, lo, hi, base, input, st)
        }
        (Kind::Varied { noisy: false }, false) => {
            update_varied::<false, false>(c, lo, hi, base, input, st)
        }
        (Kind::Varied { noisy: true }, true) => {
            update_varied::<true, true>(c, lo, hi, base, input, st)
        }
        (Kind::Varied { noisy: true }, false) => {
            update_varied::<true, false>(c, lo, hi, base, input, st)
        }
        (Kind::General { .. }, _) => {
            let mut any = false;
            for (k, j) in (lo..hi).enumerate() {
                let co = c.get(j);
                let s = LifState {
                    i: st.cur[k],
                    v: st.mem[k],
                    refractory: st.refr[k],
                };
                let x = std::mem::take(&mut input[k]);
                let (next, spike, v) = lif_step(&co, s, x, membrane_noise(&co, base));
                st.cur[k] = next.i;
                st.mem[k] = next.v;
                st.refr[k] = next.refractory;
                st.spiked[k] = spike as u8;
                st.v[k] = v;
                any |= spike;
            }
            any
        }
    }
}

/// Equal coefficients, no refractory period, no noise (`lif_step` with `noise = 0`); the
/// membranes before reset stored where `OUT`. `MF` and `LEAKY` are `c`'s update order and
/// leak (`c.membrane_first != 0`, `c.leaky != 0`).
#[inline(always)]
fn update_uniform<const MF: bool, const LEAKY: bool, const OUT: bool>(
    c: &NeuronCoeffs,
    input: &mut [i32],
    st: State<'_>,
) -> bool {
    uniform_loop::<MF, LEAKY, OUT>(c, input, st.cur, st.mem, st.spiked, st.v)
}

/// The loop of [`update_uniform`], every array a parameter of its own, taken by index and
/// cut to `n` here, so that the vectorised loop runs without checking on entry whether they
/// overlap (see [`varied_loop`]).
#[inline(always)]
fn uniform_loop<const MF: bool, const LEAKY: bool, const OUT: bool>(
    c: &NeuronCoeffs,
    input: &mut [i32],
    cur: &mut [f32],
    mem: &mut [f32],
    spiked: &mut [u8],
    vout: &mut [f32],
) -> bool {
    let spiking = c.spiking != 0;
    let n = input.len();
    let (cur, mem, spiked, vout) = (
        &mut cur[..n],
        &mut mem[..n],
        &mut spiked[..n],
        &mut vout[..n],
    );
    let mut any = 0u8;
    for k in 0..n {
        let inp = std::mem::take(&mut input[k]);
        let ni = c.a_syn * cur[k] + (c.weight_gain * (inp as f32 * c.input_scale) + c.bias);
        let drive = if MF { cur[k] } else { ni };
        let leak = if LEAKY { c.v_leak - mem[k] } else { 0.0 };
        let nv = mem[k] + c.k_mem * (leak + drive);
        let spike = spiking & (nv >= c.v_th);
        cur[k] = ni;
        if OUT {
            vout[k] = nv;
        }
        mem[k] = if spike { c.v_reset } else { nv };
        spiked[k] = spike as u8;
        any |= spike as u8;
    }
    any != 0
}

/// Coefficients per neuron, no refractory period; noise when `NOISE` (computed as
/// [`membrane_noise`], which is exactly 0 where a neuron's noise is off).
#[inline(always)]
fn update_varied<const NOISE: bool, const OUT: bool>(
    c: &SoaCoeffs,
    lo: usize,
    hi: usize,
    base: u32,
    input: &mut [i32],
    st: State<'_>,
) -> bool {
    let n = hi - lo;
    let r = lo..hi;
    varied_loop::<NOISE, OUT>(
        (
            &c.a_syn[r.clone()],
            &c.k_mem[r.clone()],
            &c.v_leak[r.clone()],
            &c.v_reset[r.clone()],
            &c.v_th[r.clone()],
        ),
        (
            &c.spiking[r.clone()],
            &c.weight_gain[r.clone()],
            &c.input_scale[r.clone()],
            &c.noise_sd[r.clone()],
            &c.noise_key[r.clone()],
        ),
        (&c.bias[r.clone()], &c.leaky[r]),
        base,
        &mut input[..n],
        st.cur,
        st.mem,
        st.spiked,
        st.v,
    )
}

/// The loop of [`update_varied`]: every written array a parameter of its own (the
/// coefficients, only read, come in tuples), every array taken by index and cut to `n` here.
/// Mutable slices handed in as parameters are ones LLVM knows overlap nothing (it keeps that
/// knowledge when its inliner inlines the function), so the vectorised loop runs without
/// checking each written array against the others on entry; sliced from `SoaCoeffs` and
/// `State` in the caller, zipped as iterators, or cut by a helper that returns them, they
/// were checked at every segment and step (those checks and the flags they kept on the stack
/// took a fifth of the emulated forward pass's samples; commit 6724c68). Nothing fails if
/// the checks come back (a change here, or rustc inlining it before LLVM does): count them
/// in the disassembly, `setb` in `run_sample_avx512` and `columns::run_chunk::avx512`
/// (5 and 22 with these loops, 497 and 514 before).
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn varied_loop<const NOISE: bool, const OUT: bool>(
    (a_syn, k_mem, v_leak, v_reset, v_th): (&[f32], &[f32], &[f32], &[f32], &[f32]),
    (spiking, gain, scale, sd, key): (&[u32], &[f32], &[f32], &[f32], &[u32]),
    (bias, leaky): (&[f32], &[u32]),
    base: u32,
    input: &mut [i32],
    cur: &mut [f32],
    mem: &mut [f32],
    spiked: &mut [u8],
    vout: &mut [f32],
) -> bool {
    let n = input.len();
    let (a_syn, k_mem, v_leak, v_reset, v_th) = (
        &a_syn[..n],
        &k_mem[..n],
        &v_leak[..n],
        &v_reset[..n],
        &v_th[..n],
    );
    let (spiking, gain, scale, sd, key) =
        (&spiking[..n], &gain[..n], &scale[..n], &sd[..n], &key[..n]);
    let (bias, leaky) = (&bias[..n], &leaky[..n]);
    let (cur, mem, spiked, vout) = (
        &mut cur[..n],
        &mut mem[..n],
        &mut spiked[..n],
        &mut vout[..n],
    );
    let mut any = 0u8;
    for k in 0..n {
        let inp = std::mem::take(&mut input[k]);
        let ni = a_syn[k] * cur[k] + (gain[k] * (inp as f32 * scale[k]) + bias[k]);
        let leak = if leaky[k] != 0 {
            v_leak[k] - mem[k]
        } else {
            0.0
        };
        let mut nv = mem[k] + k_mem[k] * (leak + ni);
        if NOISE {
            nv += noise_value(sd[k], key[k], base);
        }
        let spike = (spiking[k] != 0) & (nv >= v_th[k]);
        cur[k] = ni;
        if OUT {
            vout[k] = nv;
        }
        mem[k] = if spike { v_reset[k] } else { nv };
        spiked[k] = spike as u8;
        any |= spike as u8;
    }
    any != 0
}

/// [`membrane_noise`] without the branch: where `sd` is 0 the product is ±0, which changes
/// no membrane value (only the sign of a membrane of exactly −0, which `lif_step`'s +0 would
/// make +0: a membrane reaches −0 only from parameters given as −0).
#[inline(always)]
fn noise_value(sd: f32, key: u32, base: u32) -> f32 {
    let h = crate::model::neuron::pcg_hash(key ^ base);
    let bytes = (h & 255) + ((h >> 8) & 255) + ((h >> 16) & 255) + (h >> 24);
    let sum = (bytes as f32 + 2.0) * (1.0 / 256.0);
    (sum - 2.0) * 1.732_050_8 * sd
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::neuron::NeuronParams;
    use crate::rng::Rng;

    /// Delivering a step's sources together gives every pending input the sum that
    /// delivering them one by one gives: a dense layer's channels (each one run of 300
    /// targets: four blocks of 64 and a remainder), and the same channels as two runs each
    /// with delays 0 and 2 (a source reaching two chips), with sources that must break a
    /// group among them: a single run, the same runs with another delay, runs split at
    /// another target, a synapse list; groups of one and many, a source twice, steps near
    /// the end.
    #[test]
    fn sources_delivered_together_add_what_one_by_one_adds() {
        use crate::model::network::{NetworkBuilder, WeightInit};
        use crate::model::substrate::Substrate;
        use crate::plan::partition::{PartitionOptions, Plan};
        let sub = Substrate::bss2();
        let init = WeightInit {
            mean: 0.0,
            std: 0.5,
        };
        let net = NetworkBuilder::new("together", 10, 9)
            .input("in", 40)
            .dense("h", 300, NeuronParams::default(), init)
            .build(&sub)
            .unwrap();
        let plan = Plan::new(&net, &sub, &PartitionOptions::default()).unwrap();
        let program = PartitionProgram::compile(&net, &plan, &plan.partitions[0]).unwrap();
        let nch = program.channels.len();
        let single = CpuProgram::new(&program);
        assert!(
            single.deliveries[..nch]
                .iter()
                .all(|d| matches!(d, Delivery::Run(r) if r.len == 300)),
            "every channel is one run to the 300 neurons"
        );
        let mut split = CpuProgram::new(&program);
        split.slots = 3;
        for ch in (0..nch).filter(|ch| ch % 5 != 0) {
            let Delivery::Run(r) = split.deliveries[ch] else {
                unreachable!("checked above")
            };
            if ch % 11 == 0 {
                // The same synapses as a list (their delays are all 0).
                split.deliveries[ch] = Delivery::List(r.at..r.at + r.len);
                continue;
            }
            // Mostly split at 150 with delay 2; some with delay 1, some split at 100.
            let (cut, delay) = match ch % 7 {
                0 => (150, 1),
                3 => (100, 2),
                _ => (150, 2),
            };
            let first = split.runs.len();
            split.runs.push(Run { len: cut, ..r });
            split.runs.push(Run {
                first: cut,
                len: 300 - cut,
                at: r.at + cut,
                delay,
            });
            split.deliveries[ch] = Delivery::Runs(first..first + 2);
        }
        // The weights as compiled, then as multiples of 2^7 that fit bytes (emulated weights)
        // and of 2^3 that need 16 bits: the deliveries read the narrow copy `update` makes.
        let as_compiled = program.clone();
        let mut bytes = program.clone();
        for (k, w) in bytes.weights.iter_mut().enumerate() {
            *w = ((k * 37 % 127) as i32 - 63) << 7;
        }
        let mut halves = program.clone();
        for (k, w) in halves.weights.iter_mut().enumerate() {
            *w = ((k * 911 % 20_000) as i32 - 10_000) << 3;
        }
        let mut rng = Rng::new(9);
        let steps = net.steps as usize;
        let (mut single, mut split) = (single, split);
        for (program, held) in [(&as_compiled, None), (&bytes, Some(1)), (&halves, Some(2))] {
            single.update(program);
            split.update(program);
            if let Some(held) = held {
                for prog in [&single, &split] {
                    let narrow = prog.narrow.as_ref().map(|(_, n)| n.held().0);
                    assert_eq!(narrow, Some(held), "the runs' copy of the weights");
                }
            }
            check_together(program, &single, &split, steps, &mut rng);
        }
    }

    /// [`sources_delivered_together_add_what_one_by_one_adds`] for the programs `single` and
    /// `split` of `program`.
    fn check_together(
        program: &PartitionProgram,
        single: &CpuProgram,
        split: &CpuProgram,
        steps: usize,
        rng: &mut Rng,
    ) {
        let nch = program.channels.len();
        for prog in [single, split] {
            let len = prog.slots * prog.n;
            for case in 0..40 {
                let count = [1, 2, 5, 17][case % 4];
                let mut due: Vec<u32> = (0..count).map(|_| rng.below(nch) as u32).collect();
                if case % 3 == 0 {
                    due.push(due[0]);
                }
                let t = [0, 3, steps - 2, steps - 1][case % 4];
                let start: Vec<i32> = (0..len).map(|_| rng.below(200) as i32 - 100).collect();
                let mut together = start.clone();
                prog.deliver_all(program, &due, t, steps, &mut together);
                // One source at a time, one synapse at a time.
                let mut one_by_one = start.clone();
                let mut add = |target: usize, delay: usize, w: i32| {
                    if t + delay < steps {
                        one_by_one[((t + delay) % prog.slots) * prog.n + target] += w;
                    }
                };
                for &src in &due {
                    let runs = match &prog.deliveries[src as usize] {
                        Delivery::Run(r) => std::slice::from_ref(r),
                        Delivery::Runs(range) => &prog.runs[range.clone()],
                        Delivery::List(range) => {
                            let ws = &program.weights[range.clone()];
                            for (syn, &w) in program.synapses[range.clone()].iter().zip(ws) {
                                add(syn.target as usize, syn.delay as usize, w);
                            }
                            continue;
                        }
                        Delivery::Dense { .. } => unreachable!("no dense layer here"),
                    };
                    for r in runs {
                        for i in 0..r.len {
                            add(r.first + i, r.delay, program.weights[r.at + i]);
                        }
                    }
                }
                assert_eq!(together, one_by_one, "sources {due:?} at step {t}");
                assert_ne!(together, start, "sources {due:?} at step {t} add something");
            }
        }
    }

    /// The spike flags found word by word are those a plain scan finds, in order: every
    /// length around the word's eight (a remainder or none), flags of 1 and other non-zero
    /// bytes, at a word's first and last byte.
    #[test]
    fn flags_found_by_words_are_those_of_a_plain_scan() {
        let mut rng = Rng::new(7);
        for len in 0..40 {
            for density in [0.0, 0.1, 0.5, 1.0] {
                let flags: Vec<u8> = (0..len)
                    .map(|_| match rng.uniform() < density {
                        true => [1, 255, 128][rng.below(3)],
                        false => 0,
                    })
                    .collect();
                let found: Vec<usize> = set_flags(&flags).collect();
                let plain: Vec<usize> = (0..len).filter(|&k| flags[k] != 0).collect();
                assert_eq!(found, plain, "flags {flags:?}");
            }
        }
    }

    /// Every specialised update computes exactly (bit for bit) what `lif_step` computes, with
    /// the membranes before reset asked for at every other step.
    #[test]
    fn specialised_updates_equal_lif_step_bit_for_bit() {
        let mut rng = Rng::new(3);
        // 0 uniform, 1 varied, 2 varied and noisy, 3 refractory; 4 and 5: 0 and 2 in
        // hxtorch's update order; 6 and 7: uniform without a leak in the published order, and
        // with one in hxtorch's.
        // 37 neurons: vector steps and neurons left over; 10: a short segment's padded copy.
        for (case, n) in (0..8).flat_map(|case| [(case, 37), (case, 10)]) {
            let coeffs: Vec<NeuronCoeffs> = (0..n)
                .map(|j| {
                    let varied = (1..=3).contains(&case) || case == 5;
                    let p = NeuronParams {
                        tau_mem: if varied {
                            4.0 + rng.uniform() as f32
                        } else {
                            6.0
                        },
                        tau_syn: if varied {
                            5.0 + rng.uniform() as f32
                        } else {
                            5.7
                        },
                        v_th: if varied {
                            0.8 + 0.4 * rng.uniform() as f32
                        } else {
                            1.0
                        },
                        refractory: if case == 3 { 2.0 } else { 0.0 },
                        update: if matches!(case, 4 | 5 | 7) {
                            crate::model::neuron::Update::Hxtorch
                        } else {
                            crate::model::neuron::Update::InputFirst
                        },
                        ..Default::default()
                    };
                    let uniform = matches!(case, 0 | 4 | 6 | 7);
                    let mut c = p.coeffs(1.0, uniform || j % 5 != 0);
                    c.input_scale = 1.0 / 1024.0;
                    if !uniform {
                        // NIR's additions: a bias, a start away from rest, no leak.
                        c.bias = 0.01 * (j % 7) as f32 - 0.02;
                        c.v_init = 0.1 * (j % 3) as f32;
                        c.leaky = u32::from(j % 4 != 1);
                    } else if matches!(case, 4 | 6) {
                        c.bias = 0.015;
                        c.leaky = 0;
                    }
                    if matches!(case, 2 | 3 | 5) {
                        c.noise_sd = if j % 3 == 0 { 0.0 } else { 0.05 };
                        c.noise_key = j as u32 * 77;
                        c.weight_gain = 0.9 + 0.2 * rng.uniform() as f32;
                    }
                    c
                })
                .collect();
            let kind = kind_of(&coeffs);
            let expected = match case {
                0 | 4 | 6 | 7 => matches!(kind, Kind::Uniform(_)),
                1 => kind == Kind::Varied { noisy: false },
                2 => kind == Kind::Varied { noisy: true },
                _ => kind == Kind::General { noisy: true },
            };
            assert!(expected, "case {case}: {kind:?}");
            // The segment after five other neurons, its padded copy after them all (as a
            // program holds them), so that using the one for the other would show.
            let front = 5;
            let mut all: Vec<NeuronCoeffs> = coeffs.iter().rev().take(front).copied().collect();
            all.extend_from_slice(&coeffs);
            let pad_at = pad_coeffs(&mut all, &coeffs, kind);
            assert_eq!(pad_at.is_some(), n < SHORT && matches!(case, 1 | 2));
            let soa = SoaCoeffs::new(&all);
            let seg = Segment {
                lo: front,
                hi: front + n,
                kind,
                pad_at,
            };
            let mut reference: Vec<LifState> = coeffs.iter().map(LifState::rest).collect();
            let (mut cur, mut mem) = (
                vec![0f32; n],
                reference.iter().map(|s| s.v).collect::<Vec<_>>(),
            );
            let (mut refr, mut spiked, mut v) = (vec![0u32; n], vec![0u8; n], vec![0f32; n]);
            let mut fired = 0;
            for t in 0..60u32 {
                let base = noise_base(9, 1, t);
                let input: Vec<i32> = (0..n).map(|_| rng.below(900) as i32 - 300).collect();
                let out = t % 2 == 0;
                v.fill(f32::NAN);
                // The update takes its input (and leaves zeros for the slot's next use).
                let mut taken = input.clone();
                let any = update_segment(
                    &seg,
                    &soa,
                    base,
                    &mut taken,
                    State {
                        cur: &mut cur,
                        mem: &mut mem,
                        refr: &mut refr,
                        spiked: &mut spiked,
                        v: &mut v,
                    },
                    out,
                );
                let mut any_ref = false;
                for j in 0..n {
                    let c = &coeffs[j];
                    let (next, spike, vj) =
                        lif_step(c, reference[j], input[j], membrane_noise(c, base));
                    reference[j] = next;
                    if out {
                        assert_eq!(
                            v[j].to_bits(),
                            vj.to_bits(),
                            "case {case} step {t} neuron {j}"
                        );
                    }
                    assert_eq!(mem[j].to_bits(), next.v.to_bits());
                    assert_eq!(cur[j].to_bits(), next.i.to_bits());
                    assert_eq!(spiked[j] != 0, spike);
                    any_ref |= spike;
                    fired += spike as usize;
                }
                assert_eq!(any, any_ref);
                assert!(taken.iter().all(|&x| x == 0), "case {case}: input taken");
            }
            // More than 20 spikes per 37 neurons over the run.
            assert!(
                fired * 37 > 20 * n,
                "case {case}: neurons spike ({fired} of {n})"
            );
        }
    }
}

//! Where partitions run. A [`Backend`] prepares a compiled [`PartitionProgram`] into a
//! [`Resident`] handle once (tables or device buffers built once, weights rewritten in place
//! after an optimiser step), then runs whole rounds of partitions for a batch: every partition
//! of a round at the same time, each reading the spikes of its source populations straight from
//! the host [`SpikeStore`] and returning compact spikes and only the membranes asked for.
//! Backends differ only in where they compute; everything above this module is generic over
//! them.

mod cpu;
pub mod gpu;

pub use cpu::CpuBackend;
pub use gpu::{GpuBackend, GpuContext};

use crate::adam::{Adam, StepSize};
use crate::error::{Error, Result};
use crate::model::analog::WeightMap;
use crate::model::network::{Network, PopulationId};
use crate::model::neuron::NeuronCoeffs;
use crate::model::system::{LinkStats, Links, Overflow, System};
use crate::plan::compile::PartitionProgram;
use crate::spikes::store::{SpikeStore, SpikeTrains};
use std::any::Any;
use std::time::Duration;

/// Which membranes a run records for one partition, besides its spikes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Membranes {
    /// None.
    #[default]
    None,
    /// The maximum over time of every local neuron's membrane, `[sample][neuron]` (what a
    /// readout scored by its maximum needs).
    Max,
    /// Every local neuron's membrane (before reset) at every step, `[sample][step][neuron]`.
    Trace,
    /// As `Trace`, but kept on the device for a backward pass that runs there
    /// (`DeviceTraining`), in the region of the partition's population; nothing is returned.
    /// Only backends that train on their device are asked for it.
    Keep,
    /// As `Trace`, as the 8-bit codes of the program's CADC ([`crate::Cadc::code`]): a
    /// quarter of the memory, the same values ([`crate::Cadc::value`]). Only asked of
    /// backends that record codes ([`Backend::records_codes`]), for programs with a CADC that
    /// [has codes](crate::Cadc::has_codes); the CPU refuses others.
    Codes,
}

/// Options of one run that are the same for every partition of a round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Time steps.
    pub steps: u32,
    /// Seed of the temporal noise of this run (only used by neurons with noise).
    pub noise_seed: u32,
    /// Index of the batch's first sample (noise is drawn per sample index).
    pub sample_base: u32,
    /// How the CPU steps feed-forward programs. The same results either way.
    pub stepping: Stepping,
}

/// How the CPU backend steps a program whose synapses all come from input channels (a layer,
/// or a fused wave of partitions reading the same sources). The same spikes, membranes and
/// scores either way; only the speed differs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Stepping {
    /// By columns where the program's weights do not fit a core's cache (1 MiB or more) or
    /// it has at most 16 neurons without a refractory period (a readout: its neurons then
    /// step 16 samples at a time, one vector lane a sample), else by samples.
    #[default]
    Auto,
    /// Every sample through the whole program, step by step.
    Samples,
    /// A chunk of samples at once, a block of neurons at a time: the synaptic sums of the
    /// chunk formed first (each source's weights read once for all its spikes in the chunk),
    /// then the neurons stepped (those of a program of at most 16 neurons without a
    /// refractory period 16 samples at a time). Programs with synapses between their own
    /// neurons still run by samples.
    Columns,
}

/// A compiled partition made ready to run on one backend: the backend's own tables or device
/// buffers, created once by [`Backend::prepare`].
pub struct Resident {
    backend: u64,
    inner: Box<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Resident {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Resident(backend {})", self.backend)
    }
}

impl Resident {
    /// Wrap a backend's handle; `backend` is that backend's [`Backend::key`].
    pub fn new<T: Any + Send + Sync>(backend: u64, inner: T) -> Self {
        Resident {
            backend,
            inner: Box::new(inner),
        }
    }

    /// The key of the backend that prepared it.
    pub fn backend(&self) -> u64 {
        self.backend
    }

    /// The backend's handle, if it is a `T`.
    pub fn get<T: Any>(&self) -> Result<&T> {
        self.inner.downcast_ref().ok_or_else(|| {
            Error::Gpu("a partition prepared for another backend was run here".into())
        })
    }

    /// The backend's handle, mutably.
    pub fn get_mut<T: Any>(&mut self) -> Result<&mut T> {
        self.inner.downcast_mut().ok_or_else(|| {
            Error::Gpu("a partition prepared for another backend was run here".into())
        })
    }
}

/// Where a job writes its membranes instead of a buffer of its own: rows of `stride` values
/// (a population's array: `[sample][step]` rows for a trace, `[sample]` rows for a maximum),
/// the job's neurons at columns `offset..offset + neurons`. Saves a copy of every trace.
#[derive(Debug)]
pub struct MembraneDest<'a> {
    /// The rows (values; empty when the job records codes).
    pub data: &'a mut [f32],
    /// The rows as codes, when the job records them ([`Membranes::Codes`]; empty otherwise).
    pub codes: &'a mut [u8],
    /// Values (or codes) per row.
    pub stride: usize,
    /// The job's first column.
    pub offset: usize,
}

/// One partition of a round.
#[derive(Debug)]
pub struct Job<'a> {
    /// Its compiled program.
    pub program: &'a PartitionProgram,
    /// Its handle on the backend that runs it.
    pub resident: &'a Resident,
    /// Which membranes to bring back.
    pub membranes: Membranes,
    /// Where to write them (then [`PartitionOutput::membrane`] is `None`); `None`: in a buffer
    /// of the output.
    pub dest: Option<MembraneDest<'a>>,
}

/// Result of running one partition on a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionOutput {
    /// Spikes of the local neurons, each sample sorted by (step, neuron).
    pub spikes: SpikeTrains,
    /// Membranes as asked for ([`Membranes`]), unless the job gave a destination or asked for
    /// codes; CADC-quantised where the program says so.
    pub membrane: Option<Vec<f32>>,
    /// Membranes as codes ([`Membranes::Codes`]), unless the job gave a destination.
    pub codes: Option<Vec<u8>>,
}

/// Where a backend's time went, summed over calls.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhaseTimings {
    /// Writing inputs, parameters and weights to the device.
    pub upload: Duration,
    /// Submitting and waiting for the kernels (the CPU: running them).
    pub dispatch: Duration,
    /// Mapping and copying results back.
    pub readback: Duration,
    /// Host work on results (unpacking compact spikes).
    pub host: Duration,
    /// Chunks dispatched.
    pub chunks: usize,
    /// Partition chunks that emitted more spikes than expected: their events were written
    /// and read back a second time into a larger buffer.
    pub rereads: usize,
    /// Device buffers and textures created (0 in steady state: they are kept and reused).
    pub buffers_created: usize,
    /// Bytes written to the device (inputs, replayed spikes, parameters, weight updates).
    pub bytes_up: u64,
    /// Bytes read back from the device.
    pub bytes_down: u64,
}

impl PhaseTimings {
    /// Add `o` to these.
    pub fn add(&mut self, o: &PhaseTimings) {
        self.upload += o.upload;
        self.dispatch += o.dispatch;
        self.readback += o.readback;
        self.host += o.host;
        self.chunks += o.chunks;
        self.rereads += o.rereads;
        self.buffers_created += o.buffers_created;
        self.bytes_up += o.bytes_up;
        self.bytes_down += o.bytes_down;
    }

    /// Host time: upload, readback and host work.
    pub fn host_total(&self) -> Duration {
        self.upload + self.readback + self.host
    }
}

/// Something that runs compiled partitions for a batch.
pub trait Backend: Sync {
    /// Name for reports (e.g. "cpu (2 threads)" or the adapter's name).
    fn name(&self) -> String;

    /// Identifies where residents live: a resident prepared by one backend runs on every
    /// backend with the same key (all CPU backends share one; each GPU device has its own).
    fn key(&self) -> u64;

    /// Make `program` ready to run: build its tables or create and fill its device buffers.
    fn prepare(&self, program: &PartitionProgram) -> Result<Resident>;

    /// Bring `resident` up to date after `program`'s weights and fixed-point scales changed
    /// (its structure did not): rewritten in place, nothing created. Called for several
    /// residents at once, from different threads.
    fn update(&self, resident: &mut Resident, program: &PartitionProgram) -> Result<()>;

    /// Run every job of a round for every sample of the batch, all at the same time; each
    /// job reads the spikes of its source populations from `store`. The result is the same
    /// as running the jobs one after another.
    fn run_round(
        &self,
        store: &SpikeStore,
        jobs: &mut [Job<'_>],
        opts: &RunOptions,
    ) -> Result<Vec<PartitionOutput>>;

    /// Run the jobs of one system run, job `k` on chip `k`, all chips stepping together in
    /// windows of `exchange.window` steps and the spikes each emits routed to the others
    /// between windows (`Exchange`). Also returns the links' traffic. The default runs on
    /// the host's cores with the CPU backend's code (programs prepared for this call).
    ///
    /// With `ranks`, by the processes of a run spread over them: this process runs the jobs
    /// it owns (the others' outputs come back empty, for the caller to gather; their programs
    /// are shells without synapses, [`crate::Executor::distribute`]) and the cross-chip spikes
    /// are exchanged after every window, counted in the [`RankTraffic`]. Where links and
    /// buffers are unlimited the traffic returned is then empty: the caller counts it from the
    /// gathered outputs (`Exchange::count_chips`), every process delivering only to its own
    /// chips. On the host's cores on every backend (the exchange is the host's).
    fn run_system(
        &self,
        store: &SpikeStore,
        jobs: &mut [Job<'_>],
        exchange: &Exchange,
        opts: &RunOptions,
        ranks: Option<(&Ranks<'_>, &mut RankTraffic)>,
    ) -> Result<(Vec<PartitionOutput>, LinkStats)> {
        let progs: Vec<cpu::CpuProgram> = jobs
            .iter()
            .map(|j| cpu::CpuProgram::new(j.program))
            .collect();
        let progs: Vec<&cpu::CpuProgram> = progs.iter().collect();
        cpu::run_system(store, jobs, &progs, exchange, opts, ranks)
    }

    /// Phase timings summed since the last call (then reset); `None` for backends that do not
    /// separate upload, dispatch and readback.
    fn take_timings(&self) -> Option<PhaseTimings> {
        None
    }

    /// Training on this backend's own device (`DeviceTraining`), if it trains there; `None`:
    /// the host computes the backward pass and the optimiser step from the observables the
    /// forward pass returns (the CPU, whose device is the host).
    fn device_training(&self) -> Option<&dyn DeviceTraining> {
        None
    }

    /// Whether the partitions of a wave should run as one program, `whole` (each source spike
    /// taken once for all of them; see [`Executor`](crate::Executor)), on this backend.
    /// Results are the same either way.
    fn fuses(&self, whole: &PartitionProgram) -> bool {
        let _ = whole;
        false
    }

    /// Whether this backend records membranes as codes ([`Membranes::Codes`]) in
    /// [`Backend::run_round`] (and in [`Backend::run_system`], whose default always can).
    /// Where it does not, runs that ask for compact traces record values.
    fn records_codes(&self) -> bool {
        false
    }
}

/// The processes a run is spread over (model parallelism, `--distribute chips`): which
/// process runs each job of a round. Every process calls the backend with every job; it runs
/// those it owns and exchanges the spikes that cross between processes.
pub struct Ranks<'a> {
    /// The processes.
    pub comm: &'a dyn crate::dist::comm::Communicator,
    /// Per job: the process that runs it.
    pub owner: &'a [usize],
}

/// What one process exchanged with the others in distributed runs, summed over calls.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RankTraffic {
    /// Windows of system runs, one exchange (collective) each.
    pub windows: u64,
    /// Cross-chip spikes this process's chips sent to other processes' chips (each once).
    pub events_sent: u64,
    /// Cross-chip spikes it received from the others.
    pub events_received: u64,
    /// Bytes it contributed to the window exchanges.
    pub bytes_sent: u64,
    /// Bytes it received in them.
    pub bytes_received: u64,
    /// Time spent in the window exchanges (waiting for the slowest process included).
    pub exchange: Duration,
    /// Rounds whose outputs were gathered (one collective each).
    pub gathers: u64,
    /// Bytes of outputs (spikes, membranes) it contributed to those gathers.
    pub gather_bytes_sent: u64,
    /// Bytes of outputs it received in them.
    pub gather_bytes_received: u64,
    /// Time spent in those gathers.
    pub gather: Duration,
}

impl RankTraffic {
    /// The counts and times divided by `n` (per batch of `n` batches).
    pub fn divided(&self, n: u32) -> RankTraffic {
        let (n, d) = (n.max(1), n.max(1) as u64);
        RankTraffic {
            windows: self.windows / d,
            events_sent: self.events_sent / d,
            events_received: self.events_received / d,
            bytes_sent: self.bytes_sent / d,
            bytes_received: self.bytes_received / d,
            exchange: self.exchange / n,
            gathers: self.gathers / d,
            gather_bytes_sent: self.gather_bytes_sent / d,
            gather_bytes_received: self.gather_bytes_received / d,
            gather: self.gather / n,
        }
    }

    /// Add `o`'s counts.
    pub fn add(&mut self, o: &RankTraffic) {
        self.windows += o.windows;
        self.events_sent += o.events_sent;
        self.events_received += o.events_received;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.exchange += o.exchange;
        self.gathers += o.gathers;
        self.gather_bytes_sent += o.gather_bytes_sent;
        self.gather_bytes_received += o.gather_bytes_received;
        self.gather += o.gather;
    }
}

/// Which chips read a chip's neurons over the links: per local neuron `j`, entries
/// `offsets[j]..offsets[j + 1]` of `chips` (increasing) and the reading chip's input channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fanout {
    /// `neurons + 1` offsets.
    pub offsets: Vec<u32>,
    /// Reading chip.
    pub chips: Vec<u32>,
    /// Its input channel.
    pub channels: Vec<u32>,
    /// Per local neuron, entries `tree_offsets[j]..tree_offsets[j + 1]` of `tree_links`: the
    /// links its spikes cross to reach every reading chip (each once: multicast).
    pub tree_offsets: Vec<u32>,
    /// The links of every neuron's multicast tree.
    pub tree_links: Vec<u32>,
}

impl Fanout {
    /// The links neuron `j`'s spikes cross.
    #[inline]
    pub fn tree(&self, j: usize) -> &[u32] {
        &self.tree_links[self.tree_offsets[j] as usize..self.tree_offsets[j + 1] as usize]
    }
}

/// The live exchange of one system run: what each chip's spikes reach and how the links
/// decide. Built once per plan from the compiled programs ([`Exchange::new`]).
#[derive(Clone, Debug)]
pub struct Exchange {
    /// Steps per window: the delivery delay. A spike sent at step t arrives at t + window
    /// (then takes its synapse's delay).
    pub window: u32,
    /// Per chip.
    pub fanout: Vec<Fanout>,
    /// Per chip, per input channel: fed over the links (not from the store).
    pub live: Vec<Vec<bool>>,
    /// The system's links.
    pub links: Links,
    /// Events per link and window (0: unlimited).
    pub link_cap: u32,
    /// Events per receive buffer and window (0: unlimited).
    pub buffer_cap: u32,
    /// What a full link or buffer does.
    pub overflow: Overflow,
}

impl Exchange {
    /// The traffic the links carry when nothing can be full (unlimited links and buffers),
    /// counted from the spikes of the chips' neurons side by side (`spikes`, chip k's neurons
    /// at `offsets[k]..offsets[k + 1]`, each sample sorted by step and neuron): what
    /// [`crate::Router`] counts for the same spikes, in the same windows.
    pub fn count(&self, spikes: &SpikeTrains, offsets: &[usize]) -> LinkStats {
        let chips = self.fanout.len();
        let mut chip_of = vec![0u32; offsets.last().copied().unwrap_or(0)];
        for k in 0..chips {
            chip_of[offsets[k]..offsets[k + 1]].fill(k as u32);
        }
        self.count_with(spikes.samples(), spikes.steps, |s, t0, t1, out| {
            let ev = spikes.sample(s);
            let from = ev.partition_point(|e| e.step < t0);
            for e in ev[from..].iter().take_while(|e| e.step < t1) {
                let k = chip_of[e.neuron as usize] as usize;
                out.push((k as u32, (e.neuron as usize - offsets[k]) as u32));
            }
        })
    }

    /// [`Exchange::count`] from each chip's own spikes (`spikes[k]`: chip k's neurons, as a
    /// system run's outputs give them).
    pub fn count_chips(&self, spikes: &[&SpikeTrains]) -> LinkStats {
        let (samples, steps) = spikes.first().map_or((0, 0), |t| (t.samples(), t.steps));
        self.count_with(samples, steps, |s, t0, t1, out| {
            for (k, t) in spikes.iter().enumerate() {
                let ev = t.sample(s);
                let from = ev.partition_point(|e| e.step < t0);
                for e in ev[from..].iter().take_while(|e| e.step < t1) {
                    out.push((k as u32, e.neuron));
                }
            }
        })
    }

    /// The counting of [`Exchange::count`]: `window_spikes(s, t0, t1, out)` puts (chip, local
    /// neuron) of every spike of sample `s` in steps `t0..t1` into `out` (any order: a window's
    /// counts are sums).
    fn count_with(
        &self,
        samples: usize,
        steps: u32,
        window_spikes: impl Fn(usize, u32, u32, &mut Vec<(u32, u32)>) + Sync,
    ) -> LinkStats {
        use rayon::prelude::*;
        let chips = self.fanout.len();
        let nlinks = self.links.names.len();
        let window = self.window.max(1);
        let per = |range: std::ops::Range<usize>| {
            let mut st = LinkStats::new(nlinks, chips);
            let mut used = vec![0u32; nlinks];
            let mut spikes = Vec::new();
            for s in range {
                st.samples += 1;
                for t0 in (0..steps).step_by(window as usize) {
                    used.fill(0);
                    st.windows += 1;
                    spikes.clear();
                    window_spikes(s, t0, t0 + window, &mut spikes);
                    for &(k, local) in &spikes {
                        let (f, local) = (&self.fanout[k as usize], local as usize);
                        let (a, b) = (f.offsets[local] as usize, f.offsets[local + 1] as usize);
                        if a == b {
                            continue;
                        }
                        st.sent += 1;
                        for &l in f.tree(local) {
                            used[l as usize] += 1;
                        }
                        for &d in &f.chips[a..b] {
                            st.delivered[d as usize] += 1;
                        }
                    }
                    for ((p, c), &u) in st.peak.iter_mut().zip(&mut st.carried).zip(&used) {
                        *p = (*p).max(u);
                        *c += u as u64;
                    }
                }
            }
            st
        };
        let n = samples;
        let chunk = n.div_ceil(rayon::current_num_threads().max(1) * 4).max(1);
        let parts: Vec<LinkStats> = (0..n)
            .step_by(chunk)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|s0| per(s0..(s0 + chunk).min(n)))
            .collect();
        let mut st = LinkStats::new(nlinks, chips);
        for p in &parts {
            st.add(p);
        }
        st
    }

    /// The exchange between `programs` (the k-th on chip k) on `system`, steps of `dt_us`.
    pub fn new(programs: &[&PartitionProgram], system: &System, dt_us: f32) -> Self {
        let window = system.delay_steps(dt_us);
        // Who holds each (population, neuron) of this run.
        let mut holder: std::collections::HashMap<(PopulationId, u32), (u32, u32)> =
            std::collections::HashMap::new();
        for (c, p) in programs.iter().enumerate() {
            for (j, &id) in p.neurons.iter().enumerate() {
                holder.insert(id, (c as u32, j as u32));
            }
        }
        let mut lists: Vec<Vec<Vec<(u32, u32)>>> = programs
            .iter()
            .map(|p| vec![Vec::new(); p.neurons.len()])
            .collect();
        let mut live = Vec::with_capacity(programs.len());
        for (c, p) in programs.iter().enumerate() {
            let mut l = vec![false; p.channels.len()];
            for (ch, id) in p.channels.iter().enumerate() {
                if let Some(&(from, j)) = holder.get(id) {
                    if from as usize != c {
                        l[ch] = true;
                        lists[from as usize][j as usize].push((c as u32, ch as u32));
                    }
                }
            }
            live.push(l);
        }
        let links = system.links();
        let fanout = lists
            .into_iter()
            .enumerate()
            .map(|(from, per)| {
                let mut f = Fanout {
                    offsets: vec![0],
                    tree_offsets: vec![0],
                    ..Default::default()
                };
                for v in per {
                    // Channels were visited chip by chip: already in chip order.
                    for &(chip, ch) in &v {
                        f.chips.push(chip);
                        f.channels.push(ch);
                        for &l in links.route(from, chip as usize) {
                            let start = *f.tree_offsets.last().expect("one offset") as usize;
                            if !f.tree_links[start..].contains(&l) {
                                f.tree_links.push(l);
                            }
                        }
                    }
                    f.offsets.push(f.chips.len() as u32);
                    f.tree_offsets.push(f.tree_links.len() as u32);
                }
                f
            })
            .collect();
        Exchange {
            window,
            fanout,
            live,
            links,
            link_cap: system.link_capacity(window, dt_us),
            buffer_cap: system.receive_buffer as u32,
            overflow: system.overflow,
        }
    }
}

/// One projection's synapses grouped by source neuron: offsets per source, then (target
/// neuron, weight index) pairs.
pub type BySource = (Vec<u32>, Vec<(u32, u32)>);

/// The structure of a network as a backward pass needs it (plain data, computed once by the
/// trainer).
#[derive(Clone, Copy, Debug)]
pub struct TrainStructure<'a> {
    /// The network (its weights are the model weights the backward pass differentiates).
    pub network: &'a Network,
    /// Non-input populations, sources before targets.
    pub order: &'a [PopulationId],
    /// The same as strongly connected components in topological order: a recurrent loop's
    /// populations (a component of several, or of one that projects onto itself) walk back
    /// through time together, in this order.
    pub comps: &'a [Vec<PopulationId>],
    /// Per projection: (source, target, delay in steps).
    pub ends: &'a [(PopulationId, PopulationId, usize)],
    /// Per projection: its synapses by source neuron (offsets, then (target, weight index)).
    pub by_source: &'a [BySource],
    /// Per projection: dense (weights `[target][source]`).
    pub dense: &'a [bool],
    /// Per population: the software model's coefficients.
    pub coeffs: &'a [NeuronCoeffs],
    /// The readout population.
    pub readout: PopulationId,
    /// Per population: how the weights into it map onto the substrate.
    pub maps: &'a [WeightMap],
    /// The programs a training's forward pass runs (their residents on the backend given
    /// alongside): each partition's own, or a system run's chips as one program where its
    /// links are unlimited.
    pub programs: &'a [&'a PartitionProgram],
}

/// One chunk of a training batch whose forward pass just ran with [`Membranes::Keep`].
#[derive(Clone, Copy, Debug)]
pub struct TrainChunk<'a> {
    /// The chunk's spikes: the input and every recorded population.
    pub spikes: &'a SpikeStore,
    /// The whole batch's labels.
    pub labels: &'a [u8],
    /// The chunk's first sample in the batch.
    pub first: usize,
    /// True for the batch's first chunk (its gradients replace the previous batch's).
    pub first_chunk: bool,
    /// Score = this × the readout membrane's maximum over time, mean over the last steps or
    /// sum (`score`).
    pub readout_scale: f32,
    /// How the readout scores its membrane (the network's readout population's).
    pub score: crate::Score,
    /// SuperSpike steepness.
    pub alpha: f32,
    /// Readout regulariser strength.
    pub reg_readout: f32,
    /// Spike-count regulariser strength, decayed for the epoch.
    pub reg_spikes: f32,
}

/// What one device optimiser step reports: the loss and accuracy the device computed for the
/// batch's samples (cross-entropy plus the readout regulariser), the weight regulariser's
/// loss, and whether every weight stayed finite.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DeviceStepStats {
    /// Summed over the batch's samples.
    pub loss: f64,
    /// Samples classified correctly.
    pub correct: usize,
    /// The weight regulariser's loss (per sample).
    pub reg_loss: f64,
    /// False if a weight or the loss became non-finite.
    pub finite: bool,
}

impl TrainStructure<'_> {
    /// The recurrent loops: components of several populations, or of one that projects onto
    /// itself, each in the order its populations walk back through time.
    pub fn loops(&self) -> impl Iterator<Item = &[PopulationId]> {
        loops_of(self.comps, self.ends)
    }
}

/// The recurrent loops among `comps` (strongly connected components; `ends`: per projection
/// source, target and delay): those of several populations, or of one that projects onto
/// itself.
pub fn loops_of<'a>(
    comps: &'a [Vec<PopulationId>],
    ends: &'a [(PopulationId, PopulationId, usize)],
) -> impl Iterator<Item = &'a [PopulationId]> {
    comps
        .iter()
        .map(Vec::as_slice)
        .filter(|c| c.len() > 1 || ends.iter().any(|&(s, t, _)| s == c[0] && t == c[0]))
}

/// A backend that trains on its own device: the observables of the forward pass
/// ([`Membranes::Keep`]) never leave it, and the backward pass, the optimiser and the writing
/// of the fixed-point weights into the resident programs run there too. Results are
/// deterministic (fixed-order reductions), and equal the host's within rounding.
pub trait DeviceTraining {
    /// Move a training onto the device: the structure, the model weights, the optimiser's
    /// moments and step count, and `residents` (the programs' handles on this backend).
    fn begin(
        &self,
        structure: &TrainStructure<'_>,
        residents: &[&Resident],
        weights: &[Vec<f32>],
        adam: &Adam,
    ) -> Result<Resident>;

    /// Most samples one chunk of a batch may have (the kept traces and gradients must fit one
    /// device buffer).
    fn chunk_samples(&self, state: &Resident) -> usize;

    /// Before a chunk's forward pass: the device regions its kept traces go to.
    fn keep(&self, state: &mut Resident, samples: usize) -> Result<()>;

    /// The backward pass of a chunk: its weight gradients added to the batch's.
    fn backward(&self, state: &mut Resident, chunk: &TrainChunk<'_>) -> Result<()>;

    /// The optimiser step on the batch's gradients (`samples` in the batch) and the writing
    /// of the new weights into the resident programs.
    fn step(&self, state: &mut Resident, samples: usize, size: StepSize)
        -> Result<DeviceStepStats>;

    /// The device's model weights and optimiser state, back on the host.
    fn read(&self, state: &Resident, weights: &mut [Vec<f32>], adam: &mut Adam) -> Result<()>;

    /// The last batch's gradients (of the batch mean, without the weight regulariser), in
    /// each projection's weight layout.
    fn gradients(&self, state: &Resident) -> Result<Vec<Vec<f32>>>;

    /// The most neurons of a recurrent loop (all its populations together) whose backward
    /// pass this device runs; larger loops train with the backward pass on the host. 0: no
    /// recurrent loops.
    fn largest_loop(&self) -> usize {
        0
    }

    /// Why this device cannot run the backward pass of `structure` (beyond
    /// [`DeviceTraining::largest_loop`]), if it cannot: then it trains with the backward pass
    /// on the host.
    fn unfit(&self, structure: &TrainStructure<'_>) -> Option<String> {
        let _ = structure;
        None
    }
}

/// Check that `store` holds the spikes of every source population of `program`, over the
/// population's neurons and the batch's steps.
pub fn check_sources(store: &SpikeStore, program: &PartitionProgram) -> Result<()> {
    for b in &program.sources {
        let item = || {
            format!(
                "population #{} read by partition {}",
                b.population, program.partition
            )
        };
        let Some(t) = store.get(b.population) else {
            return Err(Error::input(
                item(),
                "its spikes were neither given nor recorded",
            ));
        };
        if t.samples() != store.samples() || t.steps != store.steps() {
            return Err(Error::input(
                item(),
                format!(
                    "spikes of {} samples x {} steps; the batch has {} x {}",
                    t.samples(),
                    t.steps,
                    store.samples(),
                    store.steps()
                ),
            ));
        }
    }
    Ok(())
}

/// Which backend to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// The host's cores.
    Cpu,
    /// A GPU adapter; an error if there is none.
    Gpu,
    /// A GPU adapter if there is one, else the CPU (with one line saying why).
    Auto,
}

/// Open the backend for `choice`, printing which adapter is used to stderr.
pub fn open_backend(choice: DeviceChoice) -> Result<Box<dyn Backend>> {
    open_backend_in(choice, &crate::dist::comm::Single)
}

/// The GPU of this process of `comm`: with several processes the one of its index on its
/// machine ([`GpuBackend::for_process`]), alone the adapter [`GpuBackend::new`] picks.
pub fn gpu_backend_in(comm: &dyn crate::dist::comm::Communicator) -> Result<GpuBackend> {
    if comm.size() > 1 {
        GpuBackend::for_process(comm.local_rank())
    } else {
        GpuBackend::new()
    }
}

/// [`open_backend`] for one of the processes of `comm`: on a GPU, each process takes the GPU
/// of its index on its machine (`WGPU_ADAPTER_NAME` still wins); each process says which
/// device it uses.
pub fn open_backend_in(
    choice: DeviceChoice,
    comm: &dyn crate::dist::comm::Communicator,
) -> Result<Box<dyn Backend>> {
    let gpu = || gpu_backend_in(comm);
    let who = if comm.size() > 1 {
        format!("process {}: ", comm.rank())
    } else {
        String::new()
    };
    match choice {
        DeviceChoice::Cpu => Ok(Box::new(CpuBackend)),
        DeviceChoice::Gpu => {
            let g = gpu()?;
            eprintln!("{who}using {}", g.name());
            Ok(Box::new(g))
        }
        DeviceChoice::Auto => match gpu() {
            Ok(g) => {
                eprintln!("{who}using {}", g.name());
                Ok(Box::new(g))
            }
            Err(e) => {
                eprintln!("{who}no usable GPU ({e}); running on the CPU");
                Ok(Box::new(CpuBackend))
            }
        },
    }
}

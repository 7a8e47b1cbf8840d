//! Running a whole plan: the rounds of the schedule in order, the partitions of a round at
//! the same time on one backend, the spikes of each partition recorded into the host
//! [`SpikeStore`] and replayed into the partitions that read them. Compiled partitions are
//! prepared on a backend once and kept (weights rewritten in place after an optimiser step).
//! The executor knows nothing about how a backend computes.

use crate::backend::{
    Backend, Exchange, Job, MembraneDest, Membranes, PartitionOutput, RankTraffic, Ranks, Resident,
    RunOptions,
};
use crate::error::{Error, Result};
use crate::model::analog::{AnalogConfig, Cadc, Chip, Mode as AnalogMode, WeightMap};
use crate::model::network::{Network, PopulationId, PopulationKind};
use crate::model::substrate::Substrate;
use crate::plan::compile::{
    precision_warnings, update_weights, CompileContext, PartitionProgram, WeightStage,
};
use crate::plan::emulated::compile_emulated;
use crate::plan::partition::{PartitionOptions, Plan};
use crate::plan::schedule::Schedule;
use crate::run::ranks::RankShare;
use crate::spikes::store::{
    sample_parts, SpikeEvent, SpikeFile, SpikeStore, SpikeTrains, PARALLEL_MIN,
};
use ndarray::{Array3, ArrayView2, ArrayView3};
use rayon::prelude::*;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::memory::COMPILED_BYTES_PER_SYNAPSE;

/// Bytes of a recorded spike on the host.
const SPIKE_BYTES: u64 = std::mem::size_of::<SpikeEvent>() as u64;

/// What a run brings back besides every population's spikes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Observe {
    /// The maximum over time of every readout membrane (the score): all that classification
    /// needs.
    #[default]
    Scores,
    /// The readout membranes at every step (plots, membrane output).
    ReadoutTraces,
    /// The membranes of every population at every step (training).
    AllTraces,
    /// The same, with the traces of hidden populations that a CADC reads (emulated, one that
    /// [has codes](Cadc::has_codes)) as its codes ([`Execution::codes`]): a quarter of the memory, the same
    /// values. Where the backend does not record codes ([`Backend::records_codes`]) or the
    /// run is spread over processes, values as `AllTraces` (training on the host).
    CompactTraces,
    /// The same, kept on the device of a backend that trains there
    /// (`DeviceTraining`); the execution holds spikes only.
    Kept,
}

/// Time spent per phase of an execution.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExecutionStats {
    /// Host work of the executor: recording spikes into the store, merging the pieces of
    /// split populations, gathering membranes.
    pub host_replay: Duration,
    /// Time inside the backend.
    pub backend: Duration,
    /// Spikes recorded from partitions, per sample.
    pub spikes_recorded_per_sample: f64,
    /// Spikes of source populations walked by the partitions that read them, per sample.
    pub spikes_replayed_per_sample: f64,
    /// Time inside the backend per partition (indexed by partition id): the time of the round
    /// it ran in (partitions of one round run at the same time).
    pub per_partition: Vec<Duration>,
    /// Rounds run.
    pub rounds: usize,
    /// Traffic on the links of a system (runs whose chips exchanged spikes), if any.
    pub links: Option<crate::model::system::LinkStats>,
    /// What this process exchanged with the others (a run spread over processes), if any.
    pub ranks: Option<RankTraffic>,
}

/// Result of running a network on a batch.
#[derive(Clone, Debug)]
pub struct Execution {
    /// Spikes of every population (inputs included).
    pub spikes: SpikeStore,
    /// Membranes `[sample][step][neuron]` per population, as [`Observe`] asked (`None` for
    /// a population kept as codes, [`Execution::codes`]).
    pub membrane: Vec<Option<Vec<f32>>>,
    /// Membranes recorded as codes instead ([`Observe::CompactTraces`]), per population.
    pub codes: Vec<Option<CodeTrace>>,
    /// Score `[sample][neuron]` of every readout population: the maximum over time of its
    /// membrane, or what its [`crate::Score`] says.
    pub peak: Vec<Option<Vec<f32>>>,
    /// Where the time went.
    pub stats: ExecutionStats,
}

impl Drop for Execution {
    /// The membrane arrays go back to the buffer pool for the next run.
    fn drop(&mut self) {
        for m in self.membrane.iter_mut().chain(self.peak.iter_mut()) {
            if let Some(v) = m.take() {
                crate::pool::give(v);
            }
        }
        for c in &mut self.codes {
            if let Some(c) = c.take() {
                crate::pool::give_bytes(c.codes);
            }
        }
    }
}

/// The membranes of one population recorded as the 8-bit codes of the CADC that read them,
/// `[sample][step][neuron]` ([`Observe::CompactTraces`]); code `c` stands for the membrane
/// `cadc.value(c)`, the value [`Observe::AllTraces`] records, bit for bit.
#[derive(Clone, Debug, PartialEq)]
pub struct CodeTrace {
    /// The codes.
    pub codes: Vec<u8>,
    /// The readout that gave them.
    pub cadc: Cadc,
}

impl CodeTrace {
    /// `len` codes of `cadc` from the pool, for the caller to overwrite.
    fn taken(cadc: Cadc, len: usize) -> Self {
        CodeTrace {
            codes: crate::pool::take_bytes(len),
            cadc,
        }
    }

    /// The membranes the codes stand for.
    pub fn values(&self) -> Vec<f32> {
        let mut v = vec![0.0; self.codes.len()];
        self.cadc.decode(&self.codes, &mut v);
        v
    }
}

impl Execution {
    /// Neurons of population `p`, whose `[sample][step][neuron]` array holds `len` values:
    /// its spike trains' count where it has them (a batch of no samples holds no values to
    /// count them by), else the values per sample and step.
    fn neurons_of(&self, p: usize, len: usize, per_sample_steps: usize) -> usize {
        match self.spikes.get(p) {
            Some(t) => t.neurons,
            None => len
                .checked_div(self.spikes.samples() * per_sample_steps)
                .unwrap_or(0),
        }
    }

    /// The membranes of population `p` as a `[sample, step, neuron]` view, when they were
    /// recorded as values ([`Observe`]; a population kept as codes has them in
    /// [`Execution::codes`]).
    pub fn membranes(&self, p: usize) -> Option<ArrayView3<'_, f32>> {
        let m = self.membrane.get(p)?.as_ref()?;
        let steps = self.spikes.steps() as usize;
        let n = self.neurons_of(p, m.len(), steps);
        ArrayView3::from_shape((self.spikes.samples(), steps, n), m).ok()
    }

    /// The membranes of population `p` as an owned `[sample, step, neuron]` array, moved out
    /// of this result without a copy (recorded as values, as [`Execution::membranes`]).
    pub fn take_membranes(&mut self, p: usize) -> Option<Array3<f32>> {
        let steps = self.spikes.steps() as usize;
        let samples = self.spikes.samples();
        let m = self.membrane.get_mut(p)?.take()?;
        let n = self.neurons_of(p, m.len(), steps);
        Array3::from_shape_vec((samples, steps, n), m).ok()
    }

    /// The scores of readout population `p` (its maximum membrane over time) as a
    /// `[sample, neuron]` view.
    pub fn scores(&self, p: usize) -> Option<ArrayView2<'_, f32>> {
        let m = self.peak.get(p)?.as_ref()?;
        let n = self.neurons_of(p, m.len(), 1);
        ArrayView2::from_shape((self.spikes.samples(), n), m).ok()
    }

    /// The spikes of population `p` as a dense `[sample, step, neuron]` array.
    pub fn spikes_dense(&self, p: usize) -> Option<Array3<bool>> {
        self.spikes.get(p).map(SpikeTrains::to_dense)
    }

    /// The file form of this result: every population's spikes, the readouts' scores and
    /// predicted classes, and the membranes that were recorded as values (when `membranes`).
    pub fn to_file(&self, network: &Network, membranes: bool) -> SpikeFile {
        let steps = network.steps as usize;
        let mut file = SpikeFile {
            steps: network.steps,
            ..Default::default()
        };
        for (p, pop) in network.populations.iter().enumerate() {
            if let Some(t) = self.spikes.get(p) {
                file.populations
                    .insert(pop.name.clone(), SpikeFile::trains_to_lists(t));
            }
            if let Some(peak) = &self.peak[p] {
                let rows: Vec<Vec<f32>> = peak.chunks(pop.size).map(<[f32]>::to_vec).collect();
                file.predicted
                    .insert(pop.name.clone(), rows.iter().map(|r| argmax(r)).collect());
                file.scores.insert(pop.name.clone(), rows);
            }
            if let (true, Some(m)) = (membranes, &self.membrane[p]) {
                file.membranes.insert(
                    pop.name.clone(),
                    m.chunks(steps * pop.size)
                        .map(|s| s.chunks(pop.size).map(<[f32]>::to_vec).collect())
                        .collect(),
                );
            }
        }
        file
    }
}

/// Index of the largest score.
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (k, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = k;
        }
    }
    best
}

/// How partitions are emulated (absent: all ideal).
#[derive(Clone, Debug)]
pub struct Emulation {
    /// Magnitudes of the analog effects.
    pub config: AnalogConfig,
    /// Which partitions are emulated.
    pub mode: AnalogMode,
    /// The emulated chip (every sequential partition reuses its circuits).
    pub chip: Chip,
    /// On a multi-chip system, every chip of it, each with its own variation (`chips[0]` is
    /// `chip`; chip k > 0 drawn from a seed derived from the chip seed and k).
    pub chips: Vec<Chip>,
    /// Per partition: emulated.
    pub emulated: Vec<bool>,
}

/// Where a job writes its membranes: `rows` rows of `size` values in `slot` (a population's
/// array, taken from the pool when there is none yet), from column `first`.
fn rows_in(slot: &mut Option<Vec<f32>>, rows: usize, size: usize, first: u32) -> MembraneDest<'_> {
    MembraneDest {
        data: slot.get_or_insert_with(|| crate::pool::take(rows * size)),
        codes: &mut [],
        stride: size,
        offset: first as usize,
    }
}

/// [`rows_in`] for a job that records codes read by `cadc`, into a population's codes.
fn codes_in(
    slot: &mut Option<CodeTrace>,
    cadc: Cadc,
    rows: usize,
    size: usize,
    first: u32,
) -> MembraneDest<'_> {
    let trace = slot.get_or_insert_with(|| CodeTrace::taken(cadc, rows * size));
    MembraneDest {
        data: &mut [],
        codes: &mut trace.codes,
        stride: size,
        offset: first as usize,
    }
}

/// Partitions that run together: a fused wave, or a round (with its system's fused program and
/// exchange where it has them).
struct Unit<'a> {
    members: &'a [usize],
    fused: Option<(&'a crate::plan::compile::FusedProgram, &'a Resident)>,
    exchange: Option<&'a Exchange>,
}

/// The programs prepared on one backend.
struct Residents {
    key: u64,
    /// Per partition: its own resident, prepared when a run first takes it (a partition of a
    /// fused wave may never run alone: preparing it would hold its synapses a second time).
    handles: Vec<Option<Resident>>,
    /// Per round: the resident of its fused program, if it has one.
    fused: Vec<Option<Resident>>,
    /// Per wave: the resident of its fused program, where the backend runs it
    /// ([`Backend::fuses`]).
    wave_fused: Vec<Option<Resident>>,
    /// The executor's generation each resident was last brought up to date with.
    generations: PerResident<u64>,
}

/// What a run by rounds takes ([`Executor::run_programs`]): a round's chips as one program
/// (the round), or one partition.
enum RunUnit {
    Fused(usize),
    Partition(usize),
}

/// One value per resident of [`Residents`]: per handle, per round's fused resident, per
/// wave's fused resident.
#[derive(Default)]
struct PerResident<T> {
    handles: Vec<T>,
    fused: Vec<T>,
    wave_fused: Vec<T>,
}

impl<T: Clone> PerResident<T> {
    /// `v` for every resident of `r`.
    fn of(r: &Residents, v: T) -> Self {
        PerResident {
            handles: vec![v.clone(); r.handles.len()],
            fused: vec![v.clone(); r.fused.len()],
            wave_fused: vec![v; r.wave_fused.len()],
        }
    }
}

/// How a run takes the residents ([`Executor::units`]): a wave as its fused program, or a
/// round (as its system's fused program where it has one, else partition by partition).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UnitPlan {
    Wave(usize),
    Round(usize),
}

/// A resident's generation, if it is needed and older than `g`.
fn stale<'a>(g: u64, (gen, need): (&'a mut u64, &bool)) -> Option<&'a mut u64> {
    (*gen != g && *need).then_some(gen)
}

/// A network prepared for execution: its plan, schedule and compiled partitions, and their
/// residents on the backend it last ran on.
pub struct Executor {
    /// The network.
    pub network: Network,
    /// Its partitioning.
    pub plan: Plan,
    /// Its ordering.
    pub schedule: Schedule,
    /// One compiled program per partition. Backends run prepared copies of them (the CPU's
    /// weights at their resolution, the GPU's buffers): weights written here reach a run only
    /// through [`Executor::update_weights`] or [`Executor::recompile`].
    pub programs: Vec<PartitionProgram>,
    /// Analog emulation, if any.
    pub emulation: Option<Emulation>,
    /// What compiling found worth saying (weights that lost all precision).
    pub warnings: Vec<String>,
    /// Per round of the schedule: the live exchange between its chips, if they exchange
    /// spikes (a system run with links in use).
    exchanges: Vec<Option<Exchange>>,
    /// Per round: its chips as one program, where links are unlimited (nothing can be
    /// dropped, so lock-step windows are not needed: a cross-chip synapse is one with the
    /// delivery delay added).
    fused: Vec<Option<crate::plan::compile::FusedProgram>>,
    /// Per wave of the schedule (without a system): its partitions as one program, each
    /// source spike taken once for all of them, on backends that fuse waves.
    wave_fused: Vec<Option<crate::plan::compile::FusedProgram>>,
    /// Whether waves run fused where the backend does so (default: yes).
    fuse_waves: bool,
    /// How the CPU steps feed-forward programs ([`Executor::set_stepping`]).
    stepping: crate::backend::Stepping,
    /// Whether runs count the traffic of links that cannot be full ([`Executor::set_count_links`]).
    count_links: bool,
    /// Bumped whenever the programs change; residents older than this are updated in place.
    generation: u64,
    /// This process's share of runs spread over processes (`None`: it runs everything).
    share: Option<RankShare>,
    residents: Mutex<Option<Residents>>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("network", &self.network.name)
            .field("partitions", &self.programs.len())
            .field("rounds", &self.schedule.rounds.len())
            .finish()
    }
}

impl Clone for Executor {
    /// A copy with the same programs and no residents (it prepares its own when it runs).
    fn clone(&self) -> Self {
        Executor {
            network: self.network.clone(),
            plan: self.plan.clone(),
            schedule: self.schedule.clone(),
            programs: self.programs.clone(),
            emulation: self.emulation.clone(),
            warnings: self.warnings.clone(),
            exchanges: self.exchanges.clone(),
            fused: self.fused.clone(),
            wave_fused: self.wave_fused.clone(),
            fuse_waves: self.fuse_waves,
            stepping: self.stepping,
            count_links: self.count_links,
            generation: self.generation,
            share: self.share.clone(),
            residents: Mutex::new(None),
        }
    }
}

impl Executor {
    /// Partition, schedule and compile `network` for `chips` copies of `substrate`.
    pub fn new(
        network: Network,
        substrate: &Substrate,
        chips: usize,
        opts: &PartitionOptions,
    ) -> Result<Self> {
        Self::new_on_ranks(network, substrate, chips, opts, (1, 0))
    }

    /// [`Executor::new`] for process `ranks.1` of `ranks.0` that run it together
    /// ([`Executor::distribute`]): only this process's partitions are compiled in full.
    pub fn new_on_ranks(
        network: Network,
        substrate: &Substrate,
        chips: usize,
        opts: &PartitionOptions,
        ranks: (usize, usize),
    ) -> Result<Self> {
        let mut e = Self::planned(network, substrate, chips, opts)?;
        e.set_share(ranks.0, ranks.1)?;
        e.recompile()?;
        Ok(e)
    }

    /// Partitioned and scheduled, nothing compiled yet.
    fn planned(
        network: Network,
        substrate: &Substrate,
        chips: usize,
        opts: &PartitionOptions,
    ) -> Result<Self> {
        let plan = Plan::new(&network, substrate, opts)?;
        let schedule = Schedule::new(&plan, chips);
        Ok(Executor {
            network,
            plan,
            schedule,
            programs: Vec::new(),
            emulation: None,
            warnings: Vec::new(),
            exchanges: Vec::new(),
            fused: Vec::new(),
            wave_fused: Vec::new(),
            fuse_waves: true,
            count_links: true,
            stepping: Default::default(),
            generation: 0,
            share: None,
            residents: Mutex::new(None),
        })
    }

    /// Like [`Executor::new`], with the partitions `mode` selects running on an emulated
    /// analog chip with the effects of `config`.
    pub fn emulated(
        network: Network,
        substrate: &Substrate,
        chips: usize,
        opts: &PartitionOptions,
        config: AnalogConfig,
        mode: AnalogMode,
    ) -> Result<Self> {
        Self::emulated_on_ranks(network, substrate, chips, opts, config, mode, (1, 0))
    }

    /// [`Executor::emulated`] for process `ranks.1` of `ranks.0` that run it together
    /// ([`Executor::distribute`]): only this process's partitions are compiled in full, so
    /// that the memory limit applies to its share.
    pub fn emulated_on_ranks(
        network: Network,
        substrate: &Substrate,
        chips: usize,
        opts: &PartitionOptions,
        config: AnalogConfig,
        mode: AnalogMode,
        ranks: (usize, usize),
    ) -> Result<Self> {
        config.validate()?;
        let mut e = Self::planned(network, substrate, chips, opts)?;
        let chips = (0..substrate.system_chips())
            .map(|k| Chip::draw(substrate, &config.for_system_chip(k)))
            .collect::<Result<Vec<_>>>()?;
        e.emulation = Some(Emulation {
            chip: chips[0].clone(),
            chips,
            emulated: mode.per_partition(&e.network, &e.plan)?,
            config,
            mode,
        });
        e.set_share(ranks.0, ranks.1)?;
        e.recompile()?;
        Ok(e)
    }

    /// Spread runs over `ranks` processes, this being process `rank` (model parallelism): the
    /// partitions of every round are dealt out to the processes ([`RankShare`]), each holds
    /// and runs only its own (the others' are kept without synapses), and the processes
    /// exchange spikes as they run ([`Executor::run_samples_in`]). Results are those of one
    /// process, whatever the count. `ranks` = 1 undoes it. Recompiles.
    pub fn distribute(&mut self, ranks: usize, rank: usize) -> Result<()> {
        self.set_share(ranks, rank)?;
        self.recompile()
    }

    fn set_share(&mut self, ranks: usize, rank: usize) -> Result<()> {
        if rank >= ranks.max(1) {
            return Err(Error::input(
                "--distribute chips",
                format!("process {rank} of {ranks} does not exist"),
            ));
        }
        self.share = (ranks > 1).then(|| RankShare::new(&self.plan, &self.schedule, ranks, rank));
        Ok(())
    }

    /// This process's share of runs spread over processes, if they are.
    pub fn share(&self) -> Option<&RankShare> {
        self.share.as_ref()
    }

    /// Per process (of `ranks`): the bytes of the compiled synapses it would hold if runs
    /// were spread over `ranks` processes (the estimate the memory limit is checked against).
    pub fn memory_per_rank(&self, ranks: usize) -> Vec<u64> {
        RankShare::new(&self.plan, &self.schedule, ranks.max(1), 0)
            .memory(&self.plan, COMPILED_BYTES_PER_SYNAPSE)
    }

    /// The fewest processes (up to 4 096) whose shares of the compiled synapses each fit
    /// `limit` bytes, and the largest share then.
    fn fewest_ranks_within(&self, limit: u64) -> Option<(usize, u64)> {
        (1..=self.plan.partitions.len().min(4096)).find_map(|r| {
            let most = self.memory_per_rank(r).into_iter().max().unwrap_or(0);
            (most <= limit).then_some((r, most))
        })
    }

    /// Run up to `chips` partitions of a wave at the same time from now on (a plan on a
    /// system keeps its system runs).
    pub fn set_chips(&mut self, chips: usize) -> Result<()> {
        self.schedule = Schedule::new(&self.plan, chips);
        if let Some(s) = &self.share {
            // The rounds changed, and with them which process owns what.
            let (ranks, rank) = (s.ranks, s.rank);
            return self.distribute(ranks, rank);
        }
        self.build_exchanges();
        Ok(())
    }

    /// The live exchange of every round whose partitions read each other over links, and the
    /// fused program of those whose links are unlimited. Residents are prepared anew.
    fn build_exchanges(&mut self) {
        self.exchanges = self.exchanges_of_rounds();
        self.fused = self
            .schedule
            .rounds
            .iter()
            .zip(&self.exchanges)
            .map(|(round, ex)| {
                // Processes that share a run exchange spikes window by window.
                let ex = ex
                    .as_ref()
                    .filter(|e| e.link_cap == 0 && e.buffer_cap == 0 && self.share.is_none())?;
                let progs: Vec<&PartitionProgram> =
                    round.iter().map(|&p| &self.programs[p]).collect();
                crate::plan::compile::fuse(&progs, &ex.live, ex.window)
            })
            .collect();
        self.wave_fused = self.fused_waves();
        *self.residents.get_mut().expect("not poisoned") = None;
    }

    /// The fused program of every wave of two or more partitions, without a system (a
    /// system's rounds have their own).
    fn fused_waves(&self) -> Vec<Option<crate::plan::compile::FusedProgram>> {
        if !self.fuse_waves || self.plan.substrate.system.is_some() || self.share.is_some() {
            return Vec::new();
        }
        self.schedule
            .waves
            .iter()
            .map(|wave| {
                if wave.len() < 2 {
                    return None;
                }
                let progs: Vec<&PartitionProgram> =
                    wave.iter().map(|&p| &self.programs[p]).collect();
                let live: Vec<Vec<bool>> = progs
                    .iter()
                    .map(|p| vec![false; p.channels.len()])
                    .collect();
                crate::plan::compile::fuse(&progs, &live, 0)
            })
            .collect()
    }

    /// How the CPU steps feed-forward programs ([`crate::Stepping`]; default: by columns where
    /// a program's weights do not fit a core's cache). The same spikes, membranes and scores
    /// either way; only the speed differs.
    pub fn set_stepping(&mut self, stepping: crate::backend::Stepping) {
        self.stepping = stepping;
    }

    /// Whether runs count the traffic of a system's links where nothing can be full (unlimited
    /// links and buffers: `ExecutionStats::links`; default: yes). Only statistics: the spikes,
    /// membranes and scores are the same either way. Where links are limited, the lock-step
    /// windows always count, since what they drop changes the run.
    pub fn set_count_links(&mut self, on: bool) {
        self.count_links = on;
    }

    /// The program of wave `wave`'s partitions as one (a wave of two or more partitions,
    /// without a system, while waves are fused), which a backend runs in their place where it
    /// [fuses](crate::backend::Backend::fuses) it.
    pub fn wave_program(&self, wave: usize) -> Option<&PartitionProgram> {
        self.wave_fused.get(wave)?.as_ref().map(|f| &f.program)
    }

    /// Run the partitions of a wave as one program on backends that fuse waves (the
    /// default), or one by one as the schedule's rounds say. The same spikes, membranes and
    /// scores either way; only the speed differs.
    pub fn set_fuse_waves(&mut self, on: bool) {
        self.fuse_waves = on;
        self.wave_fused = self.fused_waves();
        *self.residents.get_mut().expect("not poisoned") = None;
    }

    /// Bring the fused programs up to date after their chips' weights changed.
    fn refresh_fused(&mut self) {
        let groups = self
            .fused
            .iter_mut()
            .zip(&self.schedule.rounds)
            .chain(self.wave_fused.iter_mut().zip(&self.schedule.waves));
        for (f, group) in groups {
            if let Some(f) = f {
                let progs: Vec<&PartitionProgram> =
                    group.iter().map(|&p| &self.programs[p]).collect();
                f.refresh(&progs);
            }
        }
    }

    fn exchanges_of_rounds(&self) -> Vec<Option<Exchange>> {
        let Some(system) = &self.plan.substrate.system else {
            return vec![None; self.schedule.rounds.len()];
        };
        self.schedule
            .rounds
            .iter()
            .map(|round| {
                let linked = round.iter().any(|&p| {
                    self.plan.partitions[p]
                        .sources
                        .iter()
                        .any(|s| matches!(s.origin, crate::plan::partition::Origin::Link(_)))
                });
                linked.then(|| {
                    let progs: Vec<&PartitionProgram> =
                        round.iter().map(|&p| &self.programs[p]).collect();
                    Exchange::new(&progs, system, self.plan.substrate.dt_us)
                })
            })
            .collect()
    }

    /// The exchange of each round (`None`: its partitions run on their own).
    pub fn exchanges(&self) -> &[Option<Exchange>] {
        &self.exchanges
    }

    /// Whether every system run whose chips exchange spikes runs as one program (its links
    /// unlimited: no lock-step windows), as a training on a device needs.
    pub fn exchanges_fused(&self) -> bool {
        self.exchanges
            .iter()
            .enumerate()
            .all(|(ri, e)| e.is_none() || matches!(self.fused.get(ri), Some(Some(_))))
    }

    /// How each population's weights reach the substrate.
    pub fn weight_maps(&self) -> Vec<WeightMap> {
        let mut maps = vec![WeightMap::Ideal; self.network.populations.len()];
        if let Some(em) = &self.emulation {
            if em.config.quantise_weights {
                for p in &self.plan.partitions {
                    if em.emulated[p.id] {
                        for r in &p.parts {
                            let pop = r.neurons.population;
                            let mut map = em.config.weight_map(self.plan.substrate.weight_max);
                            if let (WeightMap::Quantised { scale, .. }, Some(s)) =
                                (&mut map, self.network.populations[pop].params.weight_scale)
                            {
                                *scale = s;
                            }
                            maps[pop] = map;
                        }
                    }
                }
            }
        }
        maps
    }

    /// Rebuild the compiled programs (and, at the next run, their residents) from the network.
    pub fn recompile(&mut self) -> Result<()> {
        self.network.check(&self.plan.substrate)?;
        let share = self.share.as_ref();
        let synapses: u64 = self
            .plan
            .partitions
            .iter()
            .filter(|p| share.is_none_or(|s| s.owns(p.id)))
            .map(|p| p.synapse_count as u64)
            .sum();
        let bytes = crate::memory::product(&[synapses, COMPILED_BYTES_PER_SYNAPSE]);
        if let Some(s) = share {
            if bytes > crate::memory::memory_limit() {
                let per = s.memory(&self.plan, COMPILED_BYTES_PER_SYNAPSE);
                let limit = crate::memory::memory_limit();
                let fits = self.fewest_ranks_within(limit);
                let largest = self
                    .plan
                    .partitions
                    .iter()
                    .max_by_key(|p| p.synapse_count)
                    .map_or((0, 0), |p| {
                        (p.id, p.synapse_count as u64 * COMPILED_BYTES_PER_SYNAPSE)
                    });
                return Err(Error::input(
                    "--distribute chips",
                    format!(
                        "process {} of {} would hold {} of compiled synapses, over its memory \
                         limit of {} (the shares: {}; {} in all); {}",
                        s.rank,
                        s.ranks,
                        crate::error::human_bytes(bytes),
                        crate::error::human_bytes(limit),
                        per.iter()
                            .enumerate()
                            .map(|(r, &b)| format!("process {r} {}", crate::error::human_bytes(b)))
                            .collect::<Vec<_>>()
                            .join(", "),
                        crate::error::human_bytes(per.iter().sum()),
                        match fits {
                            Some((r, _)) => format!("{r} processes would fit"),
                            None => format!(
                                "no process count fits: partition {} alone holds {}",
                                largest.0,
                                crate::error::human_bytes(largest.1)
                            ),
                        }
                    ),
                ));
            }
        }
        crate::memory::check(
            || {
                let fits = self.fewest_ranks_within(crate::memory::memory_limit());
                format!(
                    "the {} compiled partitions{}",
                    self.plan.partitions.len(),
                    fits.map_or(String::new(), |(r, most)| format!(
                        " (spread over {r} processes with --distribute chips, each would hold \
                         at most {})",
                        crate::error::human_bytes(most)
                    ))
                )
            },
            bytes,
        )?;
        let ctx = CompileContext::new(&self.network, self.weight_maps())?;
        self.warnings = precision_warnings(&self.network, &ctx);
        let (net, plan) = (&self.network, &self.plan);
        self.programs = plan
            .partitions
            .par_iter()
            .map(|p| match &self.emulation {
                Some(em) if em.emulated[p.id] => {
                    let chip = em.chips.get(p.chip.unwrap_or(0)).unwrap_or(&em.chip);
                    compile_emulated(net, plan, p.id, &em.config, chip, &ctx)
                }
                _ => PartitionProgram::compile_with(net, plan, p, &ctx),
            })
            .map(|prog| {
                prog.map(|prog| match share {
                    // Another process's partition: what its outputs need, no synapses.
                    Some(s) if !s.owns(prog.partition) => crate::run::ranks::shell(prog),
                    _ => prog,
                })
            })
            .collect::<Result<_>>()?;
        self.generation += 1;
        self.build_exchanges();
        Ok(())
    }

    /// Bring the compiled programs up to date after the network's weights (not its structure)
    /// changed, as after an optimiser step: the same result as [`Executor::recompile`], much
    /// faster; residents are rewritten in place at the next run.
    pub fn update_weights(&mut self) -> Result<()> {
        update_weights(&self.network, &mut self.programs)?;
        self.refresh_fused();
        self.generation += 1;
        Ok(())
    }

    /// An empty `WeightStage` for these programs, for an optimiser to fill as it steps;
    /// `old` again if it still fits them.
    pub fn weight_stage(&self, old: Option<WeightStage>) -> Result<WeightStage> {
        match old {
            Some(s) if s.fits(&self.network, &self.programs) => Ok(s),
            _ => WeightStage::for_programs(&self.network, &self.programs),
        }
    }

    /// [`Executor::update_weights`] from weights an optimiser staged (the network's weights,
    /// as the stage holds them mapped).
    pub fn write_weights(&mut self, stage: &WeightStage) -> Result<()> {
        stage.write(&self.network, &mut self.programs)?;
        self.refresh_fused();
        self.generation += 1;
        Ok(())
    }

    /// Bumped whenever the compiled programs change (recompiled or weights rewritten).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The programs a run by rounds takes (as a training on a device runs), round by round:
    /// a system run's chips as one program where its links are unlimited, else each
    /// partition's own.
    pub fn run_programs(&self) -> Vec<&PartitionProgram> {
        self.run_units(|ri| matches!(self.fused.get(ri), Some(Some(_))))
            .into_iter()
            .map(|unit| match unit {
                RunUnit::Fused(ri) => &self.fused[ri].as_ref().expect("fused").program,
                RunUnit::Partition(p) => &self.programs[p],
            })
            .collect()
    }

    /// The units a run by rounds takes, round by round: a round whose chips run as one program
    /// (`fused(round)`), else each of its partitions.
    fn run_units(&self, fused: impl Fn(usize) -> bool) -> Vec<RunUnit> {
        let mut out = Vec::new();
        for (ri, round) in self.schedule.rounds.iter().enumerate() {
            if fused(ri) {
                out.push(RunUnit::Fused(ri));
            } else {
                out.extend(round.iter().map(|&p| RunUnit::Partition(p)));
            }
        }
        out
    }

    /// Run `f` on [`Executor::run_programs`] and their residents on `backend` (each prepared
    /// or brought up to date first).
    pub fn with_run_residents<B: Backend + ?Sized, R>(
        &self,
        backend: &B,
        f: impl FnOnce(&[&PartitionProgram], &[&Resident]) -> R,
    ) -> Result<R> {
        let mut guard = self.residents.lock().expect("not poisoned");
        let r = self.residents_on(backend, &mut guard)?;
        // What a run by rounds takes (see `run_units`): a round's fused program, else its
        // partitions' own residents.
        let rounds: Vec<UnitPlan> = (0..self.schedule.rounds.len())
            .map(UnitPlan::Round)
            .collect();
        self.bring_up(backend, r, &rounds)?;
        let r = &*r;
        let (programs, residents): (Vec<_>, Vec<_>) = self
            .run_units(|ri| self.round_fused(r, ri).is_some())
            .into_iter()
            .map(|unit| match unit {
                RunUnit::Fused(ri) => {
                    let (f, h) = self.round_fused(r, ri).expect("fused");
                    (&f.program, h)
                }
                RunUnit::Partition(p) => (
                    &self.programs[p],
                    r.handles[p].as_ref().expect("brought up"),
                ),
            })
            .unzip();
        Ok(f(&programs, &residents))
    }

    /// Prepare on `backend` now what a run takes (otherwise the first run does it), or bring
    /// it up to date: a fused wave's resident, not its partitions' own (those are prepared,
    /// or brought up to date, when a run takes them).
    pub fn prepare<B: Backend + ?Sized>(&self, backend: &B) -> Result<()> {
        let mut guard = self.residents.lock().expect("not poisoned");
        let r = self.residents_on(backend, &mut guard)?;
        let units = self.units(r, true);
        self.bring_up(backend, r, &units)
    }

    /// The residents on `backend`: those in `slot`, or afresh: every fused program the backend
    /// runs prepared there (up to date then), the partitions' own left to [`Self::bring_up`].
    fn residents_on<'g, B: Backend + ?Sized>(
        &self,
        backend: &B,
        slot: &'g mut Option<Residents>,
    ) -> Result<&'g mut Residents> {
        let fresh = !matches!(slot, Some(r) if r.key == backend.key());
        if fresh {
            let handles = self.programs.iter().map(|_| None).collect();
            let fused = self
                .fused
                .iter()
                .map(|f| f.as_ref().map(|f| backend.prepare(&f.program)).transpose())
                .collect::<Result<Vec<_>>>()?;
            let wave_fused = self
                .wave_fused
                .iter()
                .map(|f| match f {
                    Some(f) if backend.fuses(&f.program) => backend.prepare(&f.program).map(Some),
                    _ => Ok(None),
                })
                .collect::<Result<Vec<_>>>()?;
            let mut r = Residents {
                key: backend.key(),
                handles,
                fused,
                wave_fused,
                generations: PerResident::default(),
            };
            r.generations = PerResident::of(&r, self.generation);
            // Not prepared yet: older than any generation.
            r.generations.handles.fill(u64::MAX);
            *slot = Some(r);
        }
        Ok(slot.as_mut().expect("just set"))
    }

    /// Bring the residents a run of `units` takes ([`Executor::units`]) up to date with the
    /// programs, those that are stale (a partition's own not prepared yet: prepared now).
    fn bring_up<B: Backend + ?Sized>(
        &self,
        backend: &B,
        r: &mut Residents,
        units: &[UnitPlan],
    ) -> Result<()> {
        let mut needed = PerResident::of(r, false);
        for &unit in units {
            match unit {
                UnitPlan::Wave(w) => needed.wave_fused[w] = true,
                UnitPlan::Round(ri) if self.round_fused(r, ri).is_some() => needed.fused[ri] = true,
                UnitPlan::Round(ri) => {
                    for &p in &self.schedule.rounds[ri] {
                        needed.handles[p] = true;
                    }
                }
            }
        }
        let g = self.generation;
        // Every stale resident needed, at once over the threads (after each optimiser step of
        // a training, the fused wave's; its partitions' own, which hold the same weights
        // again, wait until a run takes them).
        let PerResident {
            handles: hg,
            fused: fg,
            wave_fused: wg,
        } = &mut r.generations;
        let PerResident {
            handles: hn,
            fused: fnd,
            wave_fused: wn,
        } = &needed;
        // A partition's own resident not prepared yet is prepared now (up to date then).
        let handles = r
            .handles
            .iter_mut()
            .zip(&self.programs)
            .zip(hg.iter_mut().zip(hn).map(|x| stale(g, x)))
            .filter_map(|((h, p), gen)| Some((h, p, gen?)));
        let fused = (r.fused.iter_mut().zip(&self.fused))
            .zip(fg.iter_mut().zip(fnd).map(|x| stale(g, x)))
            .chain(
                (r.wave_fused.iter_mut().zip(&self.wave_fused))
                    .zip(wg.iter_mut().zip(wn).map(|x| stale(g, x))),
            )
            .filter_map(|((h, f), gen)| {
                let program = &f.as_ref()?.program;
                // A fused program the backend does not run has no resident.
                h.is_some().then_some((h, program, gen?))
            });
        let todo: Vec<(&mut Option<Resident>, &PartitionProgram, &mut u64)> =
            handles.chain(fused).collect();
        todo.into_par_iter().try_for_each(|(h, p, gen)| {
            match h {
                Some(h) => backend.update(h, p)?,
                None => *h = Some(backend.prepare(p)?),
            }
            *gen = g;
            Ok::<(), Error>(())
        })
    }

    /// The units a run takes with `residents`, in order: each wave whose fused program the
    /// backend took (when `fuse_waves`) as one, every other wave round by round.
    fn units(&self, residents: &Residents, fuse_waves: bool) -> Vec<UnitPlan> {
        let mut wave_of = vec![0usize; self.programs.len()];
        for (w, wave) in self.schedule.waves.iter().enumerate() {
            for &pid in wave {
                wave_of[pid] = w;
            }
        }
        let mut units: Vec<UnitPlan> = Vec::with_capacity(self.schedule.rounds.len());
        for (ri, round) in self.schedule.rounds.iter().enumerate() {
            let wave = wave_of[round[0]];
            let whole = fuse_waves
                && matches!(
                    (self.wave_fused.get(wave), residents.wave_fused.get(wave)),
                    (Some(Some(_)), Some(Some(_)))
                );
            if !whole {
                units.push(UnitPlan::Round(ri));
            } else if units.last() != Some(&UnitPlan::Wave(wave)) {
                units.push(UnitPlan::Wave(wave));
            }
        }
        units
    }

    /// Round `ri`'s fused program and its resident, where it has them.
    fn round_fused<'a>(
        &'a self,
        residents: &'a Residents,
        ri: usize,
    ) -> Option<(&'a crate::plan::compile::FusedProgram, &'a Resident)> {
        match (self.fused.get(ri), residents.fused.get(ri)) {
            (Some(Some(f)), Some(Some(h))) => Some((f, h)),
            _ => None,
        }
    }

    /// The input spikes of `file` (from `path`, named in errors) for this network: every input
    /// population, each checked against the population's size and the network's steps. The
    /// spikes of the network's other populations are left out (a run's output holds every
    /// population's; [`Executor::ignored_in_file`] names them).
    pub fn inputs_from_file(
        &self,
        file: &SpikeFile,
        path: &std::path::Path,
    ) -> Result<Vec<(PopulationId, SpikeTrains)>> {
        let net = &self.network;
        if file.steps != net.steps {
            return Err(Error::input(
                "steps",
                format!(
                    "the file has {} steps, the network runs {}",
                    file.steps, net.steps
                ),
            )
            .in_file(path));
        }
        let mut inputs = Vec::new();
        for (name, lists) in &file.populations {
            let pop = net.population_id(name).ok_or_else(|| {
                Error::input(
                    format!("population '{name}'"),
                    format!(
                        "is not in network '{}' (its inputs: {})",
                        net.name,
                        net.inputs()
                            .iter()
                            .map(|&p| net.populations[p].name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
                .in_file(path)
            })?;
            if net.populations[pop].kind != PopulationKind::Input {
                continue;
            }
            let t = SpikeFile::lists_to_trains(lists, net.populations[pop].size, net.steps)
                .map_err(|e| match e {
                    Error::Input { item, problem } => {
                        Error::input(format!("population '{name}', {item}"), problem)
                    }
                    e => e,
                })
                .map_err(|e| e.in_file(path))?;
            inputs.push((pop, t));
        }
        every_input_given(net, |pop| inputs.iter().any(|&(p, _)| p == pop))
            .map_err(|e| e.in_file(path))?;
        Ok(inputs)
    }

    /// The populations of `file` that are in this network but not its inputs: their spikes
    /// are not input, [`Executor::inputs_from_file`] leaves them out.
    pub fn ignored_in_file<'a>(&self, file: &'a SpikeFile) -> Vec<&'a str> {
        let net = &self.network;
        file.populations
            .keys()
            .map(String::as_str)
            .filter(|name| {
                net.population_id(name)
                    .is_some_and(|p| net.populations[p].kind != PopulationKind::Input)
            })
            .collect()
    }

    /// Run a batch. `inputs` gives the spikes of each input population (same sample count).
    pub fn run<B: Backend + ?Sized>(
        &self,
        backend: &B,
        inputs: &[(PopulationId, SpikeTrains)],
        observe: Observe,
    ) -> Result<Execution> {
        self.run_with_noise(backend, inputs, observe, 0)
    }

    /// Check `inputs` against the network and put them into a new store.
    fn input_store(&self, inputs: &[(PopulationId, SpikeTrains)]) -> Result<SpikeStore> {
        let net = &self.network;
        let steps = net.steps;
        let samples = inputs.first().map(|(_, t)| t.samples()).unwrap_or(0);
        let mut store = SpikeStore::new(
            net.populations.iter().map(|p| p.size).collect(),
            samples,
            steps,
        );
        for (pop, t) in inputs {
            let p = net.populations.get(*pop).ok_or_else(|| {
                Error::input(
                    format!("population #{pop}"),
                    format!("the network has {} populations", net.populations.len()),
                )
            })?;
            let item = || format!("population '{}'", p.name);
            if p.kind != PopulationKind::Input {
                return Err(Error::input(item(), "is not an input population"));
            }
            if t.neurons != p.size || t.steps != steps || t.samples() != samples {
                return Err(Error::input(
                    item(),
                    format!(
                        "spikes for {} neurons, {} steps, {} samples; expected {} neurons, \
                         {steps} steps, {samples} samples",
                        t.neurons,
                        t.steps,
                        t.samples(),
                        p.size
                    ),
                ));
            }
            t.validate().map_err(|e| match e {
                Error::Input { item: i, problem } => {
                    Error::input(format!("population '{}', {i}", p.name), problem)
                }
                e => e,
            })?;
            store.set(*pop, t.clone());
        }
        every_input_given(net, |pop| store.get(pop).is_some())?;
        Ok(store)
    }

    /// Which membranes partition `pid` brings back for `observe`.
    fn membranes_of(&self, pid: usize, observe: Observe) -> Membranes {
        let net = &self.network;
        let readout = self.programs[pid]
            .neurons
            .iter()
            .any(|&(p, _)| net.populations[p].kind == PopulationKind::Readout);
        // A score other than the maximum over time is computed from the trace.
        let traced_score = self.programs[pid].neurons.iter().any(|&(p, _)| {
            net.populations[p].kind == PopulationKind::Readout && !net.populations[p].score.is_max()
        });
        match observe {
            Observe::AllTraces => Membranes::Trace,
            Observe::CompactTraces if self.programs[pid].cadc_with_codes().is_some() => {
                Membranes::Codes
            }
            Observe::CompactTraces => Membranes::Trace,
            Observe::Kept => Membranes::Keep,
            Observe::ReadoutTraces if readout => Membranes::Trace,
            Observe::Scores if traced_score => Membranes::Trace,
            Observe::Scores if readout => Membranes::Max,
            _ => Membranes::None,
        }
    }

    /// Per population: the CADC whose codes it keeps under [`Observe::CompactTraces`], if it
    /// does: a spiking population all of whose partitions record codes (each has the same
    /// CADC, one with [`Cadc::has_codes`]: emulated). Readouts keep values (their scores are
    /// computed from them), decoded where their partitions record codes.
    pub(crate) fn coded_populations(&self) -> Vec<Option<Cadc>> {
        let net = &self.network;
        let mut coded: Vec<Option<Option<Cadc>>> = vec![None; net.populations.len()];
        for prog in &self.programs {
            let q = prog.cadc_with_codes();
            for (_, pop, _, _) in prog.population_runs() {
                coded[pop] = match coded[pop] {
                    None => Some(q),
                    Some(was) => Some(if was == q { q } else { None }),
                };
            }
        }
        coded
            .into_iter()
            .zip(&net.populations)
            .map(|(q, p)| q.flatten().filter(|_| p.kind == PopulationKind::Lif))
            .collect()
    }

    /// [`Executor::run`] with the seed of the temporal noise of emulated partitions (vary it
    /// between batches; the same seed gives the same noise).
    pub fn run_with_noise<B: Backend + ?Sized>(
        &self,
        backend: &B,
        inputs: &[(PopulationId, SpikeTrains)],
        observe: Observe,
        noise_seed: u32,
    ) -> Result<Execution> {
        self.run_samples(backend, inputs, observe, noise_seed, 0)
    }

    /// [`Executor::run_with_noise`] on samples that are part of a larger batch, the first of
    /// them its sample `sample_base` (the noise of each sample depends on its index in the
    /// batch, so a batch run in parts gets the noise it gets whole).
    pub fn run_samples<B: Backend + ?Sized>(
        &self,
        backend: &B,
        inputs: &[(PopulationId, SpikeTrains)],
        observe: Observe,
        noise_seed: u32,
        sample_base: u32,
    ) -> Result<Execution> {
        self.run_samples_in(
            backend,
            inputs,
            observe,
            noise_seed,
            sample_base,
            &crate::dist::comm::Single,
        )
    }

    /// [`Executor::run_samples`] by the processes of `comm` together, where the executor was
    /// spread over them ([`Executor::distribute`]): each runs its own partitions of every
    /// round, a system run's processes exchange their cross-chip spikes after every window,
    /// and every process gets the whole result (every partition's spikes and membranes), the
    /// same as one process would. Every process must call it with the same inputs. Without a
    /// share (one process) `comm` is not used.
    pub fn run_samples_in<B: Backend + ?Sized>(
        &self,
        backend: &B,
        inputs: &[(PopulationId, SpikeTrains)],
        observe: Observe,
        noise_seed: u32,
        sample_base: u32,
        comm: &dyn crate::dist::comm::Communicator,
    ) -> Result<Execution> {
        // Spread both ways, the chips are shared by this process's group.
        let comm = comm.chips().unwrap_or(comm);
        let share = self.share.as_ref();
        if let Some(s) = share {
            if comm.size() != s.ranks || comm.rank() != s.rank {
                return Err(Error::input(
                    "--distribute chips",
                    format!(
                        "the network was spread for process {} of {}, this is process {} of {}",
                        s.rank,
                        s.ranks,
                        comm.rank(),
                        comm.size()
                    ),
                ));
            }
            if observe == Observe::Kept {
                return Err(Error::input(
                    "--distribute chips",
                    "training on a device keeps membranes there; a network spread over \
                     processes trains on the host (--device cpu)",
                ));
            }
        }
        let net = &self.network;
        // Codes where this backend records them and the outputs are not gathered.
        let observe = match observe {
            Observe::CompactTraces if share.is_some() || !backend.records_codes() => {
                Observe::AllTraces
            }
            o => o,
        };
        let coded = match observe {
            Observe::CompactTraces => self.coded_populations(),
            _ => vec![None; net.populations.len()],
        };
        let mut store = self.input_store(inputs)?;
        let samples = store.samples();
        let steps = net.steps as usize;
        // Neurons whose traces are recorded, and those of them kept as codes (1 byte, not 4).
        let (mut traced, mut codes_of) = (0u64, 0u64);
        for (p, q) in net.populations.iter().zip(&coded) {
            let on = match observe {
                Observe::AllTraces | Observe::CompactTraces => p.kind != PopulationKind::Input,
                Observe::Kept => false,
                Observe::ReadoutTraces => p.kind == PopulationKind::Readout,
                Observe::Scores => p.kind == PopulationKind::Readout && !p.score.is_max(),
            };
            if on {
                traced += p.size as u64;
                codes_of += if q.is_some() { p.size as u64 } else { 0 };
            }
        }
        // The backend's copy and the populations' arrays.
        crate::memory::check(
            || {
                format!(
                    "membrane traces of {samples} samples x {steps} steps x {traced} neurons{}",
                    match codes_of {
                        0 => String::new(),
                        n => format!(" ({n} of them as 8-bit codes)"),
                    }
                )
            },
            crate::memory::product(&[
                samples as u64,
                steps as u64,
                (traced - codes_of) * 4 + codes_of,
                2,
            ]),
        )?;
        // Training on a device keeps traces per program of a run there (a partition's, or a
        // system run's fused one: `Executor::run_programs`), so it runs by rounds.
        let fuse_waves = observe != Observe::Kept;
        let mut guard = self.residents.lock().expect("not poisoned");
        let residents = self.residents_on(backend, &mut guard)?;
        // Units of execution: a wave whose fused program the backend took runs as one (there
        // is no system then, so no exchanges); every other wave runs by its rounds, each with
        // its system's fused program and exchange where it has them. Their residents, and
        // only theirs, are brought up to date.
        let plan = self.units(residents, fuse_waves);
        self.bring_up(backend, residents, &plan)?;
        let residents = &*residents;
        let mut membrane: Vec<Option<Vec<f32>>> = vec![None; net.populations.len()];
        let mut codes: Vec<Option<CodeTrace>> = vec![None; net.populations.len()];
        let mut peak: Vec<Option<Vec<f32>>> = vec![None; net.populations.len()];
        let mut stats = ExecutionStats {
            per_partition: vec![Duration::ZERO; self.programs.len()],
            ..Default::default()
        };
        let (mut recorded, mut replayed) = (0usize, 0usize);
        let opts = RunOptions {
            steps: net.steps,
            noise_seed,
            sample_base,
            stepping: self.stepping,
        };
        let units: Vec<Unit<'_>> = plan
            .into_iter()
            .map(|u| match u {
                UnitPlan::Wave(w) => Unit {
                    members: &self.schedule.waves[w],
                    fused: match (&self.wave_fused[w], &residents.wave_fused[w]) {
                        (Some(f), Some(h)) => Some((f, h)),
                        _ => unreachable!("a fused wave's unit has its program and resident"),
                    },
                    exchange: None,
                },
                UnitPlan::Round(ri) => Unit {
                    members: &self.schedule.rounds[ri],
                    fused: self.round_fused(residents, ri),
                    exchange: self.exchanges.get(ri).and_then(Option::as_ref),
                },
            })
            .collect();
        for unit in &units {
            let round = unit.members;
            let t0 = Instant::now();
            for &pid in round {
                for b in &self.programs[pid].sources {
                    store.finalise(b.population);
                    replayed += store.get(b.population).map_or(0, |t| t.len());
                }
            }
            if let Some((f, h)) = unit.fused {
                // A system run with unlimited links (its chips as one program), or a fused
                // wave.
                let kinds: Vec<Membranes> = round
                    .iter()
                    .map(|&pid| match self.membranes_of(pid, observe) {
                        Membranes::Keep => Membranes::Trace,
                        m => m,
                    })
                    .collect();
                let traced = |k: &Membranes| matches!(k, Membranes::Trace | Membranes::Codes);
                // A training on a device keeps a system run's traces there too (in the fused
                // program's rows, every population of it whole: `DeviceTraining`).
                let kind = if observe == Observe::Kept && share.is_none() {
                    Membranes::Keep
                } else if kinds.iter().any(traced) {
                    if observe == Observe::CompactTraces && f.program.cadc_with_codes().is_some() {
                        Membranes::Codes
                    } else {
                        Membranes::Trace
                    }
                } else if kinds.contains(&Membranes::Max) {
                    Membranes::Max
                } else {
                    Membranes::None
                };
                // Traces of a whole that is one population's run go straight into its array
                // (a fused hidden layer in training: no copy of every trace).
                let dest = match (kind, &f.program.population_runs()[..]) {
                    (Membranes::Trace, &[(0, pop, first, _)]) if share.is_none() => {
                        let size = net.populations[pop].size;
                        Some(rows_in(&mut membrane[pop], samples * steps, size, first))
                    }
                    (Membranes::Codes, &[(0, pop, first, _)]) => coded[pop].map(|q| {
                        let size = net.populations[pop].size;
                        codes_in(&mut codes[pop], q, samples * steps, size, first)
                    }),
                    _ => None,
                };
                let t1 = Instant::now();
                let whole = {
                    let mut jobs = [Job {
                        program: &f.program,
                        resident: h,
                        membranes: kind,
                        dest,
                    }];
                    backend.run_round(&store, &mut jobs, &opts)?
                }
                .pop()
                .expect("one job, one output");
                let t2 = Instant::now();
                if let Some(ex) = unit.exchange.filter(|_| self.count_links) {
                    stats
                        .links
                        .get_or_insert_with(crate::model::system::LinkStats::default)
                        .add(&ex.count(&whole.spikes, &f.offsets));
                }
                // The whole's spikes and membranes go where its populations' belong, as one
                // partition's would.
                recorded += whole.spikes.len();
                self.record(
                    &f.program,
                    whole,
                    kind,
                    (samples, steps),
                    &mut store,
                    Traces {
                        membrane: &mut membrane,
                        codes: &mut codes,
                        coded: &coded,
                        peak: &mut peak,
                    },
                );
                // Traces only where they were asked for (the whole ran with the widest kind).
                let asked: Vec<PopulationId> = round
                    .iter()
                    .zip(&kinds)
                    .filter(|(_, k)| traced(k))
                    .flat_map(|(&pid, _)| self.programs[pid].population_runs())
                    .map(|(_, pop, _, _)| pop)
                    .collect();
                for &(_, pop, _, _) in &f.program.population_runs() {
                    if !asked.contains(&pop) {
                        if let Some(v) = membrane[pop].take() {
                            crate::pool::give(v);
                        }
                        if let Some(c) = codes[pop].take() {
                            crate::pool::give_bytes(c.codes);
                        }
                    }
                }
                for &pid in round {
                    stats.per_partition[pid] += t2 - t1;
                }
                stats.backend += t2 - t1;
                stats.host_replay += (t1 - t0) + t2.elapsed();
                stats.rounds += 1;
                continue;
            }
            // Jobs that are the only writer of one population's membranes in this round write
            // them straight into its array; the others into buffers copied below.
            let mut slots: Vec<Option<&mut Option<Vec<f32>>>> =
                membrane.iter_mut().map(Some).collect();
            let mut code_slots: Vec<Option<&mut Option<CodeTrace>>> =
                codes.iter_mut().map(Some).collect();
            let mut peak_slots: Vec<Option<&mut Option<Vec<f32>>>> =
                peak.iter_mut().map(Some).collect();
            let mut kinds = Vec::with_capacity(round.len());
            let mut jobs: Vec<Job<'_>> = Vec::with_capacity(round.len());
            let exchange = unit.exchange;
            for &pid in round {
                let prog = &self.programs[pid];
                let membranes = match self.membranes_of(pid, observe) {
                    Membranes::Keep if share.is_some() => Membranes::Trace,
                    m => m,
                };
                kinds.push(membranes);
                // Spread over processes: a round without links runs only this process's
                // partitions (a system run takes every chip and runs its own).
                if share.is_some_and(|s| exchange.is_none() && !s.owns(pid)) {
                    continue;
                }
                let runs = prog.population_runs();
                let sole = |pop: usize| {
                    round
                        .iter()
                        .filter(|&&q| self.programs[q].neurons.iter().any(|&(p, _)| p == pop))
                        .count()
                        == 1
                };
                let dest = match (membranes, runs.as_slice()) {
                    // Spread over processes, outputs are gathered before they are written.
                    _ if share.is_some() => None,
                    (Membranes::Trace, &[(0, pop, first, _)]) if sole(pop) => {
                        let size = net.populations[pop].size;
                        let slot = slots[pop].take().expect("one writer");
                        Some(rows_in(slot, samples * steps, size, first))
                    }
                    (Membranes::Codes, &[(0, pop, first, _)]) if sole(pop) => coded[pop].map(|q| {
                        let size = net.populations[pop].size;
                        let slot = code_slots[pop].take().expect("one writer");
                        codes_in(slot, q, samples * steps, size, first)
                    }),
                    (Membranes::Max, &[(0, pop, first, _)])
                        if sole(pop) && net.populations[pop].kind == PopulationKind::Readout =>
                    {
                        let size = net.populations[pop].size;
                        let slot = peak_slots[pop].take().expect("one writer");
                        Some(rows_in(slot, samples, size, first))
                    }
                    _ => None,
                };
                jobs.push(Job {
                    program: prog,
                    resident: residents.handles[pid].as_ref().expect("brought up"),
                    membranes,
                    dest,
                });
            }
            let t1 = Instant::now();
            let outs = match (share, exchange) {
                (Some(share), ex) => {
                    let owner: Vec<usize> = round.iter().map(|&p| share.owner[p]).collect();
                    let traffic = stats.ranks.get_or_insert_with(RankTraffic::default);
                    let mine = |k: usize| owner[k] == share.rank;
                    let local: Vec<Option<PartitionOutput>> = match ex {
                        Some(ex) => {
                            let ranks = Ranks {
                                comm,
                                owner: &owner,
                            };
                            let (outs, links) = backend.run_system(
                                &store,
                                &mut jobs,
                                ex,
                                &opts,
                                Some((&ranks, traffic)),
                            )?;
                            // Links that cannot be full are counted from the gathered outputs.
                            if ex.link_cap != 0 || ex.buffer_cap != 0 {
                                stats
                                    .links
                                    .get_or_insert_with(crate::model::system::LinkStats::default)
                                    .add(&links);
                            }
                            outs.into_iter()
                                .enumerate()
                                .map(|(k, o)| mine(k).then_some(o))
                                .collect()
                        }
                        None => {
                            let mut outs = if jobs.is_empty() {
                                Vec::new()
                            } else {
                                backend.run_round(&store, &mut jobs, &opts)?
                            }
                            .into_iter();
                            (0..round.len())
                                .map(|k| if mine(k) { outs.next() } else { None })
                                .collect()
                        }
                    };
                    let outs = crate::run::ranks::gather_outputs(comm, &owner, local, traffic)?;
                    let unlimited = |e: &&Exchange| e.link_cap == 0 && e.buffer_cap == 0;
                    if let Some(ex) = ex.filter(unlimited).filter(|_| self.count_links) {
                        let spikes: Vec<&SpikeTrains> = outs.iter().map(|o| &o.spikes).collect();
                        stats
                            .links
                            .get_or_insert_with(crate::model::system::LinkStats::default)
                            .add(&ex.count_chips(&spikes));
                    }
                    outs
                }
                (None, Some(ex)) => {
                    let (outs, links) = backend.run_system(&store, &mut jobs, ex, &opts, None)?;
                    stats
                        .links
                        .get_or_insert_with(crate::model::system::LinkStats::default)
                        .add(&links);
                    outs
                }
                (None, None) => backend.run_round(&store, &mut jobs, &opts)?,
            };
            drop(jobs);
            let t2 = Instant::now();
            for (&pid, (out, &kind)) in round.iter().zip(outs.into_iter().zip(&kinds)) {
                recorded += out.spikes.len();
                // Spikes are data: their memory is known only as they come.
                crate::memory::check(
                    || format!("the {recorded} spikes recorded so far"),
                    crate::memory::product(&[recorded as u64, 2 * SPIKE_BYTES]),
                )?;
                self.record(
                    &self.programs[pid],
                    out,
                    kind,
                    (samples, steps),
                    &mut store,
                    Traces {
                        membrane: &mut membrane,
                        codes: &mut codes,
                        coded: &coded,
                        peak: &mut peak,
                    },
                );
                stats.per_partition[pid] += t2 - t1;
            }
            stats.backend += t2 - t1;
            stats.host_replay += (t1 - t0) + t2.elapsed();
            stats.rounds += 1;
        }
        let t = Instant::now();
        store.finalise_all();
        stats.host_replay += t.elapsed();
        let per = samples.max(1) as f64;
        stats.spikes_recorded_per_sample = recorded as f64 / per;
        stats.spikes_replayed_per_sample = replayed as f64 / per;
        Ok(Execution {
            spikes: store,
            membrane,
            codes,
            peak,
            stats,
        })
    }

    /// Put one partition's output where it belongs: its spikes into the store (a piece per
    /// population it holds neurons of), its membranes into the populations' arrays.
    fn record(
        &self,
        prog: &PartitionProgram,
        out: PartitionOutput,
        membranes: Membranes,
        (samples, steps): (usize, usize),
        store: &mut SpikeStore,
        mut traces: Traces<'_>,
    ) {
        let net = &self.network;
        let n = prog.neuron_count();
        let runs = prog.population_runs();
        let PartitionOutput {
            mut spikes,
            membrane: mem,
            codes: cs,
        } = out;
        if let [(0, pop, first, len)] = runs[..] {
            debug_assert_eq!(len, n);
            if first != 0 {
                spikes.events.iter_mut().for_each(|e| e.neuron += first);
            }
            spikes.neurons = net.populations[pop].size;
            store.add_piece(pop, first, spikes);
        } else {
            // Each run's spikes of each sample counted, then copied into place sample by
            // sample (in their order, so every run's lists stay sorted), in parallel where
            // there are enough: no list per sample and run, no serial concatenation of them
            // (sequential MNIST's 89 000 spikes a batch: 0.67 ms so, 0.31 ms now, on the
            // 2-core Xeon VM). The runs cover the program's neurons in order.
            let r = runs.len().max(1);
            let mut run_of = vec![0u32; n];
            for (k, &(j0, _, _, len)) in runs.iter().enumerate() {
                run_of[j0..j0 + len].fill(k as u32);
            }
            let run = |e: &SpikeEvent| run_of.get(e.neuron as usize).map(|&k| k as usize);
            // One job (on the calling thread) where waking the pool would cost more.
            let min = if samples + spikes.len() >= PARALLEL_MIN {
                1
            } else {
                samples.max(1)
            };
            let mut counts = vec![0u32; samples * r];
            counts
                .par_chunks_mut(r)
                .enumerate()
                .with_min_len(min)
                .for_each(|(s, c)| {
                    for e in spikes.sample(s) {
                        if let Some(k) = run(e) {
                            c[k] += 1;
                        }
                    }
                });
            let mut trains: Vec<SpikeTrains> = runs
                .iter()
                .enumerate()
                .map(|(k, &(_, pop, _, _))| {
                    let mut offsets = Vec::with_capacity(samples + 1);
                    let mut total = 0u32;
                    offsets.push(total);
                    for c in counts.chunks_exact(r) {
                        total += c[k];
                        offsets.push(total);
                    }
                    let events = vec![SpikeEvent { step: 0, neuron: 0 }; total as usize];
                    SpikeTrains::from_flat(net.populations[pop].size, spikes.steps, offsets, events)
                })
                .collect();
            // Sample `s`'s part of run `k`'s events at `s * r + k`.
            let mut parts: Vec<&mut [SpikeEvent]> = Vec::new();
            parts.resize_with(samples * r, Default::default);
            for (k, tr) in trains.iter_mut().enumerate() {
                for (s, part) in sample_parts(&tr.offsets, &mut tr.events).enumerate() {
                    parts[s * r + k] = part;
                }
            }
            parts
                .par_chunks_mut(r)
                .enumerate()
                .with_min_len(min)
                .for_each(|(s, out)| {
                    for e in spikes.sample(s) {
                        let Some(k) = run(e) else { continue };
                        let (j0, _, first, _) = runs[k];
                        let (slot, rest) = std::mem::take(&mut out[k])
                            .split_first_mut()
                            .expect("counted");
                        *slot = SpikeEvent {
                            step: e.step,
                            neuron: e.neuron - j0 as u32 + first,
                        };
                        out[k] = rest;
                    }
                    debug_assert!(out.iter().all(|o| o.is_empty()), "every slot filled");
                });
            for (tr, &(_, pop, first, _)) in trains.into_iter().zip(&runs) {
                store.add_piece(pop, first, tr);
            }
        }
        let shape = (samples, steps);
        if let Some(m) = mem {
            self.scatter(
                &runs,
                n,
                Rows::Values(&m),
                membranes,
                shape,
                traces.reborrow(),
            );
            crate::pool::give(m);
        }
        if let Some(c) = cs {
            let q = prog.cadc.expect("codes come from programs with a CADC");
            self.scatter(
                &runs,
                n,
                Rows::Codes(&c, q),
                membranes,
                shape,
                traces.reborrow(),
            );
            crate::pool::give_bytes(c);
        }
        let Traces { membrane, peak, .. } = traces;
        if matches!(
            membranes,
            Membranes::Trace | Membranes::Keep | Membranes::Codes
        ) {
            // Scores of readouts from their traces: the same maximum a `Max` run records, or
            // the population's other score (membranes kept on a device are not here).
            for &(_, pop, _, _) in &runs {
                let p = &net.populations[pop];
                if p.kind != PopulationKind::Readout || membrane[pop].is_none() {
                    continue;
                }
                let size = p.size;
                let tr = membrane[pop].as_ref().expect("just written");
                let mut pk = crate::pool::take_zeroed(samples * size);
                if p.score.is_max() {
                    pk.fill(f32::NEG_INFINITY);
                    for s in 0..samples {
                        for t in 0..steps {
                            let row = &tr[(s * steps + t) * size..(s * steps + t + 1) * size];
                            for (x, &v) in pk[s * size..(s + 1) * size].iter_mut().zip(row) {
                                *x = x.max(v);
                            }
                        }
                    }
                } else {
                    for (s, x) in pk.iter_mut().enumerate() {
                        let (s, k) = (s / size, s % size);
                        *x = p.score.of(steps, |t| tr[(s * steps + t) * size + k]);
                    }
                }
                if let Some(old) = peak[pop].replace(pk) {
                    crate::pool::give(old);
                }
            }
        }
    }

    /// Copy a partition's membranes `m` (its `n` local neurons per row) into the populations'
    /// arrays: codes into the codes of populations that keep them, and as the values they
    /// stand for into the others'.
    fn scatter(
        &self,
        runs: &[(usize, PopulationId, u32, usize)],
        n: usize,
        m: Rows<'_>,
        membranes: Membranes,
        (samples, steps): (usize, usize),
        traces: Traces<'_>,
    ) {
        let Traces {
            membrane,
            codes,
            coded,
            peak,
        } = traces;
        for &(j0, pop, first, len) in runs {
            let p = &self.network.populations[pop];
            let (first, size) = (first as usize, p.size);
            let rows = match membranes {
                Membranes::None => 0,
                Membranes::Max => samples,
                Membranes::Trace | Membranes::Keep | Membranes::Codes => samples * steps,
            };
            // Rows of the population's array from column `first`, of the partition's from `j0`.
            let (to, from) = ((size, first), (n, j0));
            match (membranes, m) {
                (Membranes::None, _) => {}
                (Membranes::Max, Rows::Values(m)) => {
                    if p.kind == PopulationKind::Readout {
                        let dst = peak[pop].get_or_insert_with(|| crate::pool::take(rows * size));
                        copy_rows(dst, m, rows, to, from, len, |x| x);
                    }
                }
                (Membranes::Codes, Rows::Codes(m, q)) if coded[pop].is_some() => {
                    let dst = codes[pop].get_or_insert_with(|| CodeTrace::taken(q, rows * size));
                    copy_rows(&mut dst.codes, m, rows, to, from, len, |c| c);
                }
                // A population that keeps values (a readout beside coded chips).
                (Membranes::Codes, Rows::Codes(m, q)) => {
                    let dst = membrane[pop].get_or_insert_with(|| crate::pool::take(rows * size));
                    copy_rows(dst, m, rows, to, from, len, |c| q.value(c));
                }
                // A backend without a device of its own returns kept membranes like traces.
                (Membranes::Trace | Membranes::Keep, Rows::Values(m)) => {
                    let dst = membrane[pop].get_or_insert_with(|| crate::pool::take(rows * size));
                    copy_rows(dst, m, rows, to, from, len, |x| x);
                }
                (kind, _) => unreachable!("{kind:?} membranes came back in the other form"),
            }
        }
    }
}

/// Copy `rows` rows of `len` entries from `src` (rows of `n`, from column `j0`) to `dst` (rows
/// of `size`, from column `first`) through `f`; a large copy in pieces of rows on the worker
/// threads (a system run's traces dealt to its populations: sequential MNIST's 2.4 million
/// codes a batch took one core 0.9 ms while the other waited, 0.45 ms on both now, on the
/// 2-core Xeon VM), a small one on the calling thread (an MNIST readout's 100 000 membranes
/// at T = 100: handing them to the pool cost the training step 0.03 ms more than the copy).
/// An error naming the first input population of `net` that `given` says has no spikes.
fn every_input_given(net: &Network, given: impl Fn(PopulationId) -> bool) -> Result<()> {
    match net.inputs().into_iter().find(|&pop| !given(pop)) {
        Some(pop) => Err(Error::input(
            format!("population '{}'", net.populations[pop].name),
            "no spikes given for this input population",
        )),
        None => Ok(()),
    }
}

fn copy_rows<S: Copy + Sync, D: Send>(
    dst: &mut [D],
    src: &[S],
    rows: usize,
    (size, first): (usize, usize),
    (n, j0): (usize, usize),
    len: usize,
    f: impl Fn(S) -> D + Sync,
) {
    /// Values a piece on a thread takes (a row at the least).
    const PIECE: usize = 1 << 17;
    /// The least a copy on the threads moves.
    const THREADS_MIN: usize = 1 << 18;
    // Rows `r0..` of `dst` into `piece` (written out by index: zipping rows of `dst` and `src`
    // instead cost the MNIST readout's copy at T = 100 0.04 ms more a batch).
    let copy = |r0: usize, piece: &mut [D]| {
        for (i, row) in piece.chunks_exact_mut(size).enumerate() {
            let from = (r0 + i) * n + j0;
            for (d, &x) in row[first..first + len]
                .iter_mut()
                .zip(&src[from..from + len])
            {
                *d = f(x);
            }
        }
    };
    let dst = &mut dst[..rows * size];
    if rows * len < THREADS_MIN {
        copy(0, dst);
    } else {
        let per = (PIECE / len.max(1)).max(1);
        dst.par_chunks_mut(per * size)
            .enumerate()
            .for_each(|(k, piece)| copy(k * per, piece));
    }
}

/// A partition's membranes as they came back: values, or codes of a CADC.
#[derive(Clone, Copy)]
enum Rows<'a> {
    Values(&'a [f32]),
    Codes(&'a [u8], Cadc),
}

/// Where a run's membranes go: the populations' values and codes, which populations keep
/// codes ([`Executor::coded_populations`]), and the readouts' scores.
struct Traces<'a> {
    membrane: &'a mut [Option<Vec<f32>>],
    codes: &'a mut [Option<CodeTrace>],
    coded: &'a [Option<Cadc>],
    peak: &'a mut [Option<Vec<f32>>],
}

impl Traces<'_> {
    fn reborrow(&mut self) -> Traces<'_> {
        Traces {
            membrane: self.membrane,
            codes: self.codes,
            coded: self.coded,
            peak: self.peak,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `copy_rows` writes each row's `len` entries, and nothing else, on the calling thread
    /// and in pieces on the threads alike: against a copy written out entry by entry, for
    /// copies below and above the threads' threshold, columns from the start and further on,
    /// and a last piece shorter than the others.
    #[test]
    fn rows_are_copied_to_their_columns_on_one_thread_and_on_many() {
        // (rows, len, size, first, n, j0)
        let cases = [
            (7, 3, 5, 2, 4, 1),
            (100, 10, 10, 0, 394, 384),
            (6_000, 128, 128, 0, 394, 128),
            (2_100, 130, 200, 70, 300, 170),
            (3, 1 << 18, 1 << 18, 0, 1 << 18, 0),
        ];
        for (rows, len, size, first, n, j0) in cases {
            let src: Vec<u32> = (0..rows * n).map(|i| i as u32).collect();
            let mut got = vec![u64::MAX; rows * size];
            copy_rows(&mut got, &src, rows, (size, first), (n, j0), len, |x| {
                u64::from(x) * 3
            });
            let mut want = vec![u64::MAX; rows * size];
            for r in 0..rows {
                for c in 0..len {
                    want[r * size + first + c] = u64::from(src[r * n + j0 + c]) * 3;
                }
            }
            assert!(
                got == want,
                "rows {rows}, len {len}, size {size}, first {first}, n {n}, j0 {j0}"
            );
        }
    }
}

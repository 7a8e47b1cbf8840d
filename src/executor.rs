//! Running a whole plan: partitions in schedule order on one backend, the spikes of each
//! recorded into the [`SpikeStore`] and replayed as the input of the partitions that read them.
//! The executor knows nothing about how a backend computes.

use crate::analog::{compile_emulated, AnalogConfig, Chip, Mode as AnalogMode};
use crate::backend::{scale_exponents, Backend, PartitionOutput, PartitionProgram, RunOptions};
use crate::error::{Error, Result};
use crate::network::{Network, PopulationId, PopulationKind};
use crate::partition::{PartitionOptions, Plan};
use crate::schedule::{Mode, Schedule};
use crate::spikes::{SpikeEvent, SpikeTrains};
use crate::substrate::Substrate;
use rayon::prelude::*;
use std::time::{Duration, Instant};

/// Spikes of every population of a network for one batch, over global neuron indices.
#[derive(Clone, Debug, Default)]
pub struct SpikeStore {
    /// Per population (indexed by [`PopulationId`]); `None` until recorded or given.
    pub populations: Vec<Option<SpikeTrains>>,
}

impl SpikeStore {
    /// Spikes of population `p`.
    pub fn get(&self, p: PopulationId) -> Option<&SpikeTrains> {
        self.populations.get(p).and_then(|s| s.as_ref())
    }

    /// Add the spikes of `output` (local indices of `program`) to their populations.
    fn record(&mut self, network: &Network, program: &PartitionProgram, output: &SpikeTrains) {
        let mut pops: Vec<PopulationId> = program.neurons.iter().map(|&(p, _)| p).collect();
        pops.dedup();
        for pop in pops {
            let size = network.populations[pop].size;
            let old = self.populations[pop].take();
            let lists: Vec<Vec<SpikeEvent>> = (0..output.samples())
                .into_par_iter()
                .map(|s| {
                    let mut ev: Vec<SpikeEvent> = old
                        .as_ref()
                        .map(|t| t.sample(s).to_vec())
                        .unwrap_or_default();
                    let had = ev.len();
                    ev.extend(output.sample(s).iter().filter_map(|e| {
                        let (p, n) = program.neurons[e.neuron as usize];
                        (p == pop).then_some(SpikeEvent {
                            step: e.step,
                            neuron: n,
                        })
                    }));
                    if had > 0 {
                        ev.sort_unstable();
                    }
                    ev
                })
                .collect();
            self.populations[pop] =
                Some(SpikeTrains::from_sorted_samples(size, output.steps, lists));
        }
    }

    /// The input of `program`: recorded spikes of its channels, in channel indices.
    fn replay(&self, program: &PartitionProgram, samples: usize, steps: u32) -> SpikeTrains {
        // Channels are sorted by (population, neuron): one contiguous block per population,
        // looked up through a table over the population's neurons.
        let mut blocks: Vec<(PopulationId, Vec<u32>)> = Vec::new();
        for (k, &(pop, n)) in program.channels.iter().enumerate() {
            if blocks.last().is_none_or(|b| b.0 != pop) {
                let size = self.get(pop).map(|t| t.neurons).unwrap_or(0);
                blocks.push((pop, vec![u32::MAX; size]));
            }
            let lut = &mut blocks.last_mut().unwrap().1;
            if let Some(slot) = lut.get_mut(n as usize) {
                *slot = k as u32;
            }
        }
        let lists: Vec<Vec<SpikeEvent>> = (0..samples)
            .into_par_iter()
            .map(|s| {
                let mut ev = Vec::new();
                for (pop, lut) in &blocks {
                    let Some(t) = self.get(*pop) else { continue };
                    ev.extend(t.sample(s).iter().filter_map(|e| {
                        let k = lut[e.neuron as usize];
                        (k != u32::MAX).then_some(SpikeEvent {
                            step: e.step,
                            neuron: k,
                        })
                    }));
                }
                // Within one block the mapping keeps the (step, neuron) order.
                if blocks.len() > 1 {
                    ev.sort_unstable();
                }
                ev
            })
            .collect();
        SpikeTrains::from_sorted_samples(program.channels.len(), steps, lists)
    }
}

/// Time spent per phase of an execution.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExecutionStats {
    /// Host-side replay (gathering recorded spikes into partition inputs) and recording.
    pub host_replay: Duration,
    /// Time inside the backend.
    pub backend: Duration,
    /// Spikes recorded from partitions, per sample.
    pub spikes_recorded_per_sample: f64,
    /// Spikes replayed into partitions (from partitions or the host), per sample.
    pub spikes_replayed_per_sample: f64,
    /// Time inside the backend per partition (indexed by partition id).
    pub per_partition: Vec<Duration>,
}

/// Result of running a network on a batch.
#[derive(Clone, Debug)]
pub struct Execution {
    /// Spikes of every population (inputs included).
    pub spikes: SpikeStore,
    /// Membranes `[sample][step][neuron]` per population: readouts always, all populations
    /// when asked for.
    pub membrane: Vec<Option<Vec<f32>>>,
    /// Where the time went.
    pub stats: ExecutionStats,
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
    /// Per partition: emulated.
    pub emulated: Vec<bool>,
}

/// A network prepared for execution: its plan, schedule and compiled partitions.
#[derive(Clone, Debug)]
pub struct Executor {
    /// The network.
    pub network: Network,
    /// Its partitioning.
    pub plan: Plan,
    /// Its ordering.
    pub schedule: Schedule,
    /// One compiled program per partition.
    pub programs: Vec<PartitionProgram>,
    /// Analog emulation, if any.
    pub emulation: Option<Emulation>,
}

impl Executor {
    /// Partition, schedule and compile `network` for `chips` copies of `substrate`.
    pub fn new(
        network: Network,
        substrate: &Substrate,
        chips: usize,
        opts: &PartitionOptions,
    ) -> Result<Self> {
        let plan = Plan::new(&network, substrate, opts)?;
        let schedule = Schedule::new(&plan, Mode::for_chips(chips));
        let mut e = Executor {
            network,
            plan,
            schedule,
            programs: Vec::new(),
            emulation: None,
        };
        e.recompile();
        Ok(e)
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
        config.validate()?;
        let mut e = Self::new(network, substrate, chips, opts)?;
        e.emulation = Some(Emulation {
            chip: Chip::draw(substrate, &config),
            emulated: mode.per_partition(&e.network, &e.plan),
            config,
            mode,
        });
        e.recompile();
        Ok(e)
    }

    /// Rebuild the compiled programs after the network's weights changed.
    pub fn recompile(&mut self) {
        let (net, plan) = (&self.network, &self.plan);
        let ideal = scale_exponents(net, &|w| w);
        let emulated = self.emulation.as_ref().map(|em| {
            let wmax = plan.substrate.weight_max;
            scale_exponents(net, &|w| em.config.quantise_weight(w, wmax))
        });
        self.programs = plan
            .partitions
            .par_iter()
            .map(|p| match &self.emulation {
                Some(em) if em.emulated[p.id] => {
                    compile_emulated(net, plan, p.id, &em.config, &em.chip, emulated.as_deref())
                }
                _ => PartitionProgram::compile_with(net, plan, p, &|w| w, Some(&ideal)),
            })
            .collect();
    }

    /// Bring the compiled programs up to date after the network's weights (not its structure)
    /// changed, as after an optimiser step: the same result as [`Executor::recompile`], much
    /// faster.
    pub fn update_weights(&mut self) {
        let wmax = self.plan.substrate.weight_max;
        let ideal = |w: f32| w;
        let quantised = |w: f32| match &self.emulation {
            Some(em) => em.config.quantise_weight(w, wmax),
            None => w,
        };
        let maps: Vec<&(dyn Fn(f32) -> f32 + Sync)> = (0..self.programs.len())
            .map(|k| match &self.emulation {
                Some(em) if em.emulated[k] => &quantised as &(dyn Fn(f32) -> f32 + Sync),
                _ => &ideal as &(dyn Fn(f32) -> f32 + Sync),
            })
            .collect();
        crate::backend::update_weights(&self.network, &mut self.programs, &maps);
    }

    /// Run a batch. `inputs` gives the spikes of each input population (same sample count).
    /// Membranes of readout populations are always recorded, of all populations when
    /// `record_all_membranes`.
    pub fn run<B: Backend + ?Sized>(
        &self,
        backend: &B,
        inputs: &[(PopulationId, SpikeTrains)],
        record_all_membranes: bool,
    ) -> Result<Execution> {
        self.run_with_noise(backend, inputs, record_all_membranes, 0)
    }

    /// [`Executor::run`] with the seed of the temporal noise of emulated partitions (vary it
    /// between batches; the same seed gives the same noise).
    pub fn run_with_noise<B: Backend + ?Sized>(
        &self,
        backend: &B,
        inputs: &[(PopulationId, SpikeTrains)],
        record_all_membranes: bool,
        noise_seed: u32,
    ) -> Result<Execution> {
        let net = &self.network;
        let steps = net.steps;
        let samples = inputs.first().map(|(_, t)| t.samples()).unwrap_or(0);
        let mut store = SpikeStore {
            populations: vec![None; net.populations.len()],
        };
        for (pop, t) in inputs {
            let p = net
                .populations
                .get(*pop)
                .ok_or_else(|| Error::InvalidInput(format!("no population with id {pop}")))?;
            if p.kind != PopulationKind::Input {
                return Err(Error::InvalidInput(format!(
                    "'{}' is not an input population",
                    p.name
                )));
            }
            if t.neurons != p.size || t.steps != steps || t.samples() != samples {
                return Err(Error::InvalidInput(format!(
                    "input '{}': spikes for {} neurons, {} steps, {} samples; expected {} neurons, \
                     {steps} steps, {samples} samples",
                    p.name,
                    t.neurons,
                    t.steps,
                    t.samples(),
                    p.size
                )));
            }
            t.validate()?;
            store.populations[*pop] = Some(t.clone());
        }
        for pop in net.inputs() {
            if store.get(pop).is_none() {
                return Err(Error::InvalidInput(format!(
                    "no spikes given for input population '{}'",
                    net.populations[pop].name
                )));
            }
        }
        let mut membrane: Vec<Option<Vec<f32>>> = vec![None; net.populations.len()];
        let mut stats = ExecutionStats {
            per_partition: vec![Duration::ZERO; self.programs.len()],
            ..Default::default()
        };
        let (mut recorded, mut replayed) = (0usize, 0usize);
        for pid in self.schedule.order() {
            let prog = &self.programs[pid];
            let t0 = Instant::now();
            let input = store.replay(prog, samples, steps);
            replayed += input.len();
            let t1 = Instant::now();
            let want_membrane = record_all_membranes
                || prog
                    .neurons
                    .iter()
                    .any(|&(p, _)| net.populations[p].kind == PopulationKind::Readout);
            let out = backend.run(
                prog,
                &input,
                &RunOptions {
                    steps,
                    membrane: want_membrane,
                    noise_seed,
                    sample_base: 0,
                },
            )?;
            let t2 = Instant::now();
            recorded += out.spikes.len();
            store.record(net, prog, &out.spikes);
            let mut out = out;
            if let (Some(em), Some(m)) = (&self.emulation, out.membrane.as_mut()) {
                if em.emulated[pid] && em.config.quantise_readout {
                    let bits = self.plan.substrate.readout_bits;
                    m.iter_mut()
                        .for_each(|v| *v = em.config.quantise_readout(*v, bits));
                }
            }
            self.scatter_membrane(prog, &out, samples, record_all_membranes, &mut membrane);
            stats.backend += t2 - t1;
            stats.per_partition[pid] += t2 - t1;
            stats.host_replay += (t1 - t0) + t2.elapsed();
        }
        let per = samples.max(1) as f64;
        stats.spikes_recorded_per_sample = recorded as f64 / per;
        stats.spikes_replayed_per_sample = replayed as f64 / per;
        Ok(Execution {
            spikes: store,
            membrane,
            stats,
        })
    }

    fn scatter_membrane(
        &self,
        prog: &PartitionProgram,
        out: &PartitionOutput,
        samples: usize,
        all: bool,
        membrane: &mut [Option<Vec<f32>>],
    ) {
        let Some(m) = &out.membrane else { return };
        let net = &self.network;
        let steps = net.steps as usize;
        let n = prog.neuron_count();
        // Local neurons come in runs that are contiguous in their population: copy row slices.
        let mut j = 0;
        while j < n {
            let (pop, first) = prog.neurons[j];
            let mut len = 1;
            while j + len < n && prog.neurons[j + len] == (pop, first + len as u32) {
                len += 1;
            }
            let p = &net.populations[pop];
            if all || p.kind == PopulationKind::Readout {
                let dst = membrane[pop].get_or_insert_with(|| vec![0.0; samples * steps * p.size]);
                for row in 0..samples * steps {
                    let d = row * p.size + first as usize;
                    dst[d..d + len].copy_from_slice(&m[row * n + j..row * n + j + len]);
                }
            }
            j += len;
        }
    }
}

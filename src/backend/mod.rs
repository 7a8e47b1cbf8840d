//! Running one partition for a whole batch. [`PartitionProgram`] is a partition compiled to
//! flat arrays (neuron coefficients, synapses grouped by source, stages); a [`Backend`] runs it
//! over `T` steps for every sample of a batch from replayed input events. Backends differ only
//! in where they compute; everything above this module is generic over them.

mod cpu;

pub use cpu::CpuBackend;

use crate::error::Result;
use crate::network::{Network, PopulationId, PopulationKind};
use crate::neuron::NeuronCoeffs;
use crate::partition::{Partition, Plan};
use crate::spikes::SpikeTrains;
use std::time::Duration;

/// One synapse, grouped by source; laid out as the GPU's `Synapse` struct.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Synapse {
    /// Local target neuron.
    pub target: u32,
    /// Delay in steps (0 = same step, only towards a later stage).
    pub delay: u32,
    /// Weight in fixed point: units of the target's `NeuronCoeffs::input_scale`.
    pub weight: i32,
}

/// A partition compiled for execution.
#[derive(Clone, Debug)]
pub struct PartitionProgram {
    /// The partition's id in its plan.
    pub partition: usize,
    /// Global identity (population, neuron) of each local neuron, in stage order.
    pub neurons: Vec<(PopulationId, u32)>,
    /// Per local neuron.
    pub coeffs: Vec<NeuronCoeffs>,
    /// `stages + 1` bounds: stage `k` is local neurons `stage_bounds[k]..stage_bounds[k+1]`.
    pub stage_bounds: Vec<u32>,
    /// Global identity of each external input channel, sorted.
    pub channels: Vec<(PopulationId, u32)>,
    /// `channels + neurons + 1` offsets into `synapses`: sources are the input channels, then
    /// the local neurons.
    pub synapse_offsets: Vec<u32>,
    /// Synapses grouped by source.
    pub synapses: Vec<Synapse>,
    /// Largest delay.
    pub max_delay: u32,
    /// For each synapse, the (projection, weight index) it realises: lets an optimiser step
    /// update the weights without rebuilding the structure.
    pub weight_refs: Vec<(u32, u32)>,
}

impl PartitionProgram {
    /// Compile partition `part` of `plan` (ideal: weights as they are).
    pub fn compile(network: &Network, plan: &Plan, part: &Partition) -> Self {
        Self::compile_mapped(network, plan, part, &|w| w)
    }

    /// Compile partition `part` of `plan` with every weight passed through `weight` first
    /// (e.g. the chip's quantisation).
    pub fn compile_mapped(
        network: &Network,
        plan: &Plan,
        part: &Partition,
        weight: &dyn Fn(f32) -> f32,
    ) -> Self {
        Self::compile_with(network, plan, part, weight, None)
    }

    /// [`PartitionProgram::compile_mapped`] with the fixed-point exponents of every population
    /// already computed by [`scale_exponents`] (with the same `weight`), as when compiling
    /// every partition of a plan.
    pub fn compile_with(
        network: &Network,
        plan: &Plan,
        part: &Partition,
        weight: &dyn Fn(f32) -> f32,
        exponents: Option<&[i32]>,
    ) -> Self {
        let dt = plan.substrate.dt_us;
        let mut neurons = Vec::new();
        let mut coeffs = Vec::new();
        let mut stage_bounds = vec![0u32];
        let mut local_of = vec![Vec::new(); network.populations.len()];
        for (k, pr) in part.parts.iter().enumerate() {
            if k > 0 && pr.stage != part.parts[k - 1].stage {
                stage_bounds.push(neurons.len() as u32);
            }
            let pop = &network.populations[pr.neurons.population];
            let c = pop.params.coeffs(dt, pop.kind != PopulationKind::Readout);
            let lo = &mut local_of[pr.neurons.population];
            if lo.is_empty() {
                lo.resize(pop.size, u32::MAX);
            }
            for n in pr.neurons.range() {
                lo[n] = neurons.len() as u32;
                neurons.push((pr.neurons.population, n as u32));
                coeffs.push(c);
            }
        }
        stage_bounds.push(neurons.len() as u32);
        let scale_exp = match exponents {
            Some(e) => std::borrow::Cow::Borrowed(e),
            None => std::borrow::Cow::Owned(scale_exponents(network, weight)),
        };
        for (j, &(pop, _)) in neurons.iter().enumerate() {
            coeffs[j].input_scale = (2f64).powi(-scale_exp[pop]) as f32;
        }
        // Gather synapses by target, then regroup by source.
        let delays = network.effective_delays();
        let mut raw: Vec<(PopulationId, u32, Synapse, (u32, u32))> = Vec::new();
        for pr in &part.parts {
            let t = pr.neurons.population;
            for (p, &d) in delays.iter().enumerate() {
                let (s, tt) = network.endpoints(p);
                if tt != t {
                    continue;
                }
                let scale = (2f64).powi(scale_exp[t]);
                let ws = &network.projections[p].weights;
                network.for_each_synapse_index(p, pr.neurons.range(), |pre, post, k| {
                    raw.push((
                        s,
                        pre as u32,
                        Synapse {
                            target: local_of[t][post],
                            delay: d,
                            weight: fixed_point(weight(ws[k]), scale),
                        },
                        (p as u32, k as u32),
                    ));
                });
            }
        }
        let is_local = |pop: PopulationId, n: u32| {
            local_of[pop]
                .get(n as usize)
                .is_some_and(|&l| l != u32::MAX)
        };
        // External channels: every (population, neuron) some synapse reads that is not local,
        // in (population, neuron) order, found through a table per population.
        let mut used: Vec<Vec<bool>> = vec![Vec::new(); network.populations.len()];
        for (p, n, _, _) in &raw {
            if !is_local(*p, *n) {
                let u = &mut used[*p];
                if u.is_empty() {
                    u.resize(network.populations[*p].size, false);
                }
                u[*n as usize] = true;
            }
        }
        let mut channel_of: Vec<Vec<u32>> = vec![Vec::new(); network.populations.len()];
        let mut channels: Vec<(PopulationId, u32)> = Vec::new();
        for (p, u) in used.iter().enumerate() {
            if u.is_empty() {
                continue;
            }
            channel_of[p] = vec![u32::MAX; u.len()];
            for (n, &on) in u.iter().enumerate() {
                if on {
                    channel_of[p][n] = channels.len() as u32;
                    channels.push((p, n as u32));
                }
            }
        }
        let nch = channels.len();
        let source_index = |pop: PopulationId, n: u32| -> usize {
            if is_local(pop, n) {
                nch + local_of[pop][n as usize] as usize
            } else {
                channel_of[pop][n as usize] as usize
            }
        };
        let nsrc = nch + neurons.len();
        let mut counts = vec![0u32; nsrc + 1];
        let keyed: Vec<(usize, Synapse, (u32, u32))> = raw
            .into_iter()
            .map(|(p, n, syn, r)| (source_index(p, n), syn, r))
            .collect();
        for (k, _, _) in &keyed {
            counts[k + 1] += 1;
        }
        for i in 0..nsrc {
            counts[i + 1] += counts[i];
        }
        let mut fill = counts.clone();
        let mut synapses = vec![
            Synapse {
                target: 0,
                delay: 0,
                weight: 0
            };
            keyed.len()
        ];
        let mut weight_refs = vec![(0, 0); keyed.len()];
        for (k, syn, r) in keyed {
            synapses[fill[k] as usize] = syn;
            weight_refs[fill[k] as usize] = r;
            fill[k] += 1;
        }
        let max_delay = synapses.iter().map(|s| s.delay).max().unwrap_or(0);
        PartitionProgram {
            partition: part.id,
            neurons,
            coeffs,
            stage_bounds,
            channels,
            synapse_offsets: counts,
            synapses,
            max_delay,
            weight_refs,
        }
    }

    /// Local neurons.
    pub fn neuron_count(&self) -> usize {
        self.neurons.len()
    }

    /// Synapses of source `src` (channel index, or `channels + local neuron`).
    pub fn synapses_of(&self, src: usize) -> &[Synapse] {
        &self.synapses[self.synapse_offsets[src] as usize..self.synapse_offsets[src + 1] as usize]
    }
}

/// Fixed-point exponent of every population (0 for inputs): the largest power of two for which
/// every neuron's largest possible input per step (sum of absolute weights, after `weight`)
/// stays below 2^23 units, so sums are exact in i32 and in f32. Chosen per population, it does
/// not depend on partitioning.
pub fn scale_exponents(network: &Network, weight: &dyn Fn(f32) -> f32) -> Vec<i32> {
    let mut bound: Vec<Vec<f64>> = network
        .populations
        .iter()
        .map(|p| vec![0.0; p.size])
        .collect();
    for p in 0..network.projections.len() {
        let (_, t) = network.endpoints(p);
        let b = &mut bound[t];
        network.for_each_synapse(p, 0..b.len(), |_, post, w| {
            b[post] += (weight(w) as f64).abs()
        });
    }
    bound
        .iter()
        .map(|b| fixed_point_exponent(b.iter().cloned().fold(0.0, f64::max)))
        .collect()
}

/// `w` in fixed point with `scale` units per model unit.
#[inline]
pub fn fixed_point(w: f32, scale: f64) -> i32 {
    (w as f64 * scale).round() as i32
}

/// Bring compiled programs up to date with new weights (same structure): recompute every
/// population's fixed-point exponent from all its synapses (as [`scale_exponents`] does) and
/// every synapse's fixed-point weight. `weight[program]` maps a model weight to the one that
/// program realises (e.g. the chip's quantisation). The result equals compiling afresh.
pub fn update_weights(
    network: &Network,
    programs: &mut [PartitionProgram],
    weight: &[&(dyn Fn(f32) -> f32 + Sync)],
) {
    let mut bound: Vec<Vec<f64>> = network
        .populations
        .iter()
        .map(|p| vec![0.0; p.size])
        .collect();
    for (prog, map) in programs.iter().zip(weight) {
        for (syn, &(q, k)) in prog.synapses.iter().zip(&prog.weight_refs) {
            let (pop, n) = prog.neurons[syn.target as usize];
            let w = map(network.projections[q as usize].weights[k as usize]);
            bound[pop][n as usize] += (w as f64).abs();
        }
    }
    let exps: Vec<i32> = bound
        .iter()
        .map(|b| fixed_point_exponent(b.iter().cloned().fold(0.0, f64::max)))
        .collect();
    for (prog, map) in programs.iter_mut().zip(weight) {
        for (c, &(pop, _)) in prog.coeffs.iter_mut().zip(&prog.neurons) {
            c.input_scale = (2f64).powi(-exps[pop]) as f32;
        }
        let PartitionProgram {
            synapses,
            weight_refs,
            neurons,
            ..
        } = prog;
        for (syn, &(q, k)) in synapses.iter_mut().zip(weight_refs.iter()) {
            let pop = neurons[syn.target as usize].0;
            let w = map(network.projections[q as usize].weights[k as usize]);
            syn.weight = fixed_point(w, (2f64).powi(exps[pop]));
        }
    }
}

/// Exponent `e` of the fixed-point input resolution `2^-e` for a population whose neurons
/// receive at most `bound` (sum of absolute weights) per step.
pub fn fixed_point_exponent(bound: f64) -> i32 {
    if bound <= 0.0 {
        return 24;
    }
    ((1u64 << 23) as f64 / bound)
        .log2()
        .floor()
        .clamp(-100.0, 60.0) as i32
}

/// Check that `input` is over the channels of `program`.
pub fn check_input(program: &PartitionProgram, input: &SpikeTrains) -> Result<()> {
    if input.neurons != program.channels.len() {
        return Err(crate::error::Error::InvalidInput(format!(
            "partition {} has {} input channels, the input spikes {}",
            program.partition,
            program.channels.len(),
            input.neurons
        )));
    }
    Ok(())
}

/// What to record besides spikes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Time steps.
    pub steps: u32,
    /// Record the membrane (before reset) of every local neuron at every step.
    pub membrane: bool,
    /// Seed of the temporal noise of this run (only used by neurons with noise).
    pub noise_seed: u32,
    /// Index of the batch's first sample (noise is drawn per sample index).
    pub sample_base: u32,
}

/// Result of running one partition on a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionOutput {
    /// Spikes of the local neurons.
    pub spikes: SpikeTrains,
    /// Membranes `[sample][step][local neuron]`, when asked for.
    pub membrane: Option<Vec<f32>>,
}

/// Where a device backend's time went, summed over calls.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhaseTimings {
    /// Creating buffers and writing inputs.
    pub upload: Duration,
    /// Submitting and waiting for the kernels.
    pub dispatch: Duration,
    /// Mapping and copying results back.
    pub readback: Duration,
    /// Host work on results (sorting spikes per sample).
    pub host: Duration,
    /// Chunks dispatched.
    pub chunks: usize,
    /// Chunks rerun because a sample emitted more spikes than the output buffer held.
    pub reruns: usize,
}

/// Something that runs a compiled partition for a batch.
pub trait Backend: Sync {
    /// Name for reports (e.g. "cpu (2 threads)" or the adapter's name).
    fn name(&self) -> String;
    /// Run `program` for every sample of `input` (spikes over the program's channels).
    fn run(
        &self,
        program: &PartitionProgram,
        input: &SpikeTrains,
        opts: &RunOptions,
    ) -> Result<PartitionOutput>;

    /// Phase timings summed since the last call (then reset); `None` for backends that do not
    /// separate upload, dispatch and readback.
    fn take_timings(&self) -> Option<PhaseTimings> {
        None
    }
}

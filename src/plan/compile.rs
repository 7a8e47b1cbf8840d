//! Compiling a partition into a [`PartitionProgram`]: the flat arrays a backend runs (neuron
//! coefficients, synapses grouped by source, stage bounds), the table that maps the spikes of
//! each source population onto the partition's input channels, and the fixed-point input
//! resolution of every population. Written once per partition; after an optimiser step only
//! the weights and the fixed-point scales are rewritten in place ([`update_weights`]).
//! Nothing here runs anything or knows about devices.

use crate::error::Result;
use crate::model::analog::{Cadc, WeightMap};
use crate::model::network::{Network, PopulationId, PopulationKind};
use crate::model::neuron::NeuronCoeffs;
use crate::plan::partition::{Partition, Plan};
use crate::simd::{round_f32, round_f64, round_i32, widest};
use rayon::prelude::*;

/// One synapse, grouped by source: where it goes and when. Its weight is the element of
/// [`PartitionProgram::weights`] at the same index (kept apart, so that rewriting the weights
/// after an optimiser step, and copying them to a fused program or a backend, moves a plain
/// array of `i32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Synapse {
    /// Local target neuron.
    pub target: u32,
    /// Delay in steps (0 = same step, only towards a later stage).
    pub delay: u32,
}

/// Which model weight a synapse realises: projection and index into its weights.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct WeightRef {
    /// Projection index.
    pub projection: u32,
    /// Index into the projection's weights.
    pub index: u32,
}

/// A stretch of a program's synapses that realise one projection's weights at evenly spaced
/// indices, all into one target population: a dense projection's synapses from one source
/// (spaced by the projection's source count), at worst a single synapse. Rewriting the weights
/// walks these runs, with no lookup per synapse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightRun {
    /// First synapse of the run.
    pub synapse: u32,
    /// Synapses in the run.
    pub len: u32,
    /// Projection.
    pub projection: u32,
    /// Weight index of the first synapse.
    pub index: u32,
    /// Step between consecutive synapses' weight indices.
    pub stride: u32,
    /// Target population.
    pub population: u32,
}

/// The runs (see [`WeightRun`]) of a program's synapses, given in order as (the model weight
/// each realises, its target population).
fn weight_runs(synapses: impl Iterator<Item = (WeightRef, PopulationId)>) -> Vec<WeightRun> {
    let mut runs: Vec<WeightRun> = Vec::new();
    for (j, (r, pop)) in synapses.enumerate() {
        let pop = pop as u32;
        if let Some(last) = runs.last_mut() {
            if last.projection == r.projection && last.population == pop {
                if last.len == 1 && r.index > last.index {
                    last.stride = r.index - last.index;
                    last.len = 2;
                    continue;
                }
                let next = last.index as u64 + last.len as u64 * last.stride as u64;
                if last.len > 1 && r.index as u64 == next {
                    last.len += 1;
                    continue;
                }
            }
        }
        runs.push(WeightRun {
            synapse: j as u32,
            len: 1,
            projection: r.projection,
            index: r.index,
            stride: 1,
            population: pop,
        });
    }
    runs
}

/// The input channels a partition reads from one source population: channels
/// `first_channel..` in neuron order, found through `lut` over the span of source neurons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelBlock {
    /// The source population.
    pub population: PopulationId,
    /// Its first neuron that is a channel; `lut[k]` is neuron `span_start + k`.
    pub span_start: u32,
    /// Channel of each neuron of the span (`u32::MAX`: not read).
    pub lut: Vec<u32>,
}

impl ChannelBlock {
    /// The channel of source neuron `n`, if it is one.
    #[inline(always)]
    pub fn channel(&self, n: u32) -> Option<u32> {
        let k = n.wrapping_sub(self.span_start) as usize;
        match self.lut.get(k) {
            Some(&c) if c != u32::MAX => Some(c),
            _ => None,
        }
    }
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
    /// Global identity of each external input channel, sorted by (population, neuron).
    pub channels: Vec<(PopulationId, u32)>,
    /// One block per source population, in channel order.
    pub sources: Vec<ChannelBlock>,
    /// `channels + neurons + 1` offsets into `synapses`: sources are the input channels, then
    /// the local neurons.
    pub synapse_offsets: Vec<u32>,
    /// Synapses grouped by source.
    pub synapses: Vec<Synapse>,
    /// Each synapse's weight in fixed point (units of its target's
    /// `NeuronCoeffs::input_scale`), as many as `synapses`.
    pub weights: Vec<i32>,
    /// Largest delay.
    pub max_delay: u32,
    /// The model weight each synapse realises, as runs of evenly spaced weights (what
    /// rewriting the weights walks; [`PartitionProgram::weight_ref`] answers for one synapse).
    /// Kept as runs rather than a reference per synapse: 8 bytes a synapse less, for a program
    /// and again for a fused program holding it.
    pub weight_runs: Vec<WeightRun>,
    /// How this partition's weights reach the substrate.
    pub weight_map: WeightMap,
    /// Quantisation of every recorded membrane (emulated partitions), if any.
    pub cadc: Option<Cadc>,
}

/// What compiling every partition of a plan shares: effective delays, fixed-point exponents
/// and weight maps, computed once per network.
#[derive(Clone, Debug)]
pub struct CompileContext {
    /// Effective delay of every projection.
    pub delays: Vec<u32>,
    /// Source and target of every projection.
    pub ends: Vec<(PopulationId, PopulationId)>,
    /// How each population's incoming weights are realised.
    pub maps: Vec<WeightMap>,
    /// Fixed-point exponent of each population (see `exponents`).
    pub exponents: Vec<i32>,
}

impl CompileContext {
    /// The context for `network` with weight map `maps[population]`.
    pub fn new(network: &Network, maps: Vec<WeightMap>) -> Result<Self> {
        let exponents = exponents(network, &maps)?;
        Ok(CompileContext {
            delays: network.effective_delays()?,
            ends: network.all_endpoints()?,
            maps,
            exponents,
        })
    }

    /// Every population ideal.
    pub fn ideal(network: &Network) -> Result<Self> {
        Self::new(network, vec![WeightMap::Ideal; network.populations.len()])
    }
}

impl PartitionProgram {
    /// Its CADC, where it has one that [has codes](Cadc::has_codes) (an emulated partition):
    /// the readout whose 8-bit codes it can record ([`crate::Membranes::Codes`]).
    pub fn cadc_with_codes(&self) -> Option<Cadc> {
        self.cadc.filter(Cadc::has_codes)
    }

    /// Compile partition `part` of `plan` in ideal mode (weights as they are).
    pub fn compile(network: &Network, plan: &Plan, part: &Partition) -> Result<Self> {
        Self::compile_with(network, plan, part, &CompileContext::ideal(network)?)
    }

    /// Compile partition `part` of `plan` with the shared `ctx`.
    pub fn compile_with(
        network: &Network,
        plan: &Plan,
        part: &Partition,
        ctx: &CompileContext,
    ) -> Result<Self> {
        let dt = plan.substrate.dt_us;
        let npop = network.populations.len();
        let mut neurons = Vec::with_capacity(part.neuron_count());
        let mut coeffs = Vec::with_capacity(part.neuron_count());
        let mut stage_bounds = vec![0u32];
        let mut local_of = vec![Vec::new(); npop];
        for (k, pr) in part.parts.iter().enumerate() {
            if k > 0 && pr.stage != part.parts[k - 1].stage {
                stage_bounds.push(neurons.len() as u32);
            }
            let pop = &network.populations[pr.neurons.population];
            let spiking = pop.kind != PopulationKind::Readout;
            let mut c = pop.params.coeffs(dt, spiking);
            c.input_scale = input_scale(ctx.exponents[pr.neurons.population]);
            let lo = &mut local_of[pr.neurons.population];
            if lo.is_empty() {
                lo.resize(pop.size, u32::MAX);
            }
            let varied = !pop.per_neuron.is_empty();
            for n in pr.neurons.range() {
                lo[n] = neurons.len() as u32;
                neurons.push((pr.neurons.population, n as u32));
                if varied {
                    let mut cn = pop.neuron_params(n).coeffs(dt, spiking);
                    cn.input_scale = c.input_scale;
                    coeffs.push(cn);
                } else {
                    coeffs.push(c);
                }
            }
        }
        stage_bounds.push(neurons.len() as u32);
        let weight_map = part
            .parts
            .first()
            .map_or(WeightMap::Ideal, |p| ctx.maps[p.neurons.population]);
        // Gather synapses by target, then regroup by source.
        let mut raw: Vec<(PopulationId, u32, (Synapse, i32), WeightRef)> = Vec::new();
        for pr in &part.parts {
            let t = pr.neurons.population;
            let scale = (2f64).powi(ctx.exponents[t]);
            let map = ctx.maps[t];
            for (p, (&d, &(s, tt))) in ctx.delays.iter().zip(&ctx.ends).enumerate() {
                if tt != t {
                    continue;
                }
                let ws = &network.projections[p].weights;
                network.for_each_synapse_index(p, pr.neurons.range(), |pre, post, k| {
                    raw.push((
                        s,
                        pre as u32,
                        (
                            Synapse {
                                target: local_of[t][post],
                                delay: d,
                            },
                            fixed_point(map.apply(ws[k]), scale),
                        ),
                        WeightRef {
                            projection: p as u32,
                            index: k as u32,
                        },
                    ));
                })?;
            }
        }
        let is_local = |pop: PopulationId, n: u32| {
            local_of[pop]
                .get(n as usize)
                .is_some_and(|&l| l != u32::MAX)
        };
        // External channels: every (population, neuron) some synapse reads that is not local,
        // in (population, neuron) order.
        let mut used: Vec<Vec<bool>> = vec![Vec::new(); npop];
        for (p, n, _, _) in &raw {
            if !is_local(*p, *n) {
                let u = &mut used[*p];
                if u.is_empty() {
                    u.resize(network.populations[*p].size, false);
                }
                u[*n as usize] = true;
            }
        }
        let mut sources = Vec::new();
        let mut channels: Vec<(PopulationId, u32)> = Vec::new();
        for (p, u) in used.iter().enumerate() {
            let (Some(lo), Some(hi)) = (u.iter().position(|&x| x), u.iter().rposition(|&x| x))
            else {
                continue;
            };
            let mut lut = vec![u32::MAX; hi + 1 - lo];
            for (n, &on) in u.iter().enumerate().take(hi + 1).skip(lo) {
                if on {
                    lut[n - lo] = channels.len() as u32;
                    channels.push((p, n as u32));
                }
            }
            sources.push(ChannelBlock {
                population: p,
                span_start: lo as u32,
                lut,
            });
        }
        let nch = channels.len();
        let block_of: Vec<Option<usize>> = (0..npop)
            .map(|p| sources.iter().position(|b| b.population == p))
            .collect();
        let source_index = |pop: PopulationId, n: u32| -> usize {
            if is_local(pop, n) {
                nch + local_of[pop][n as usize] as usize
            } else {
                let b = &sources[block_of[pop].expect("a channel block per source")];
                b.channel(n).expect("every external source is a channel") as usize
            }
        };
        let nsrc = nch + neurons.len();
        // A spike from outside the partition arrives when its run's schedule delivers it:
        // replayed from the host at its step, or over a system's links a window later. The
        // extra step of a recurrent loop inside one chip (see `Network::effective_delays`)
        // does not apply to it; outside a system no external source is recurrent, so this is
        // the effective delay there.
        let keyed: Vec<(usize, (Synapse, i32), WeightRef)> = raw
            .into_iter()
            .map(|(p, n, (mut syn, w), r)| {
                if !is_local(p, n) {
                    syn.delay = network.projections[r.projection as usize].delay;
                }
                (source_index(p, n), (syn, w), r)
            })
            .collect();
        let mut offsets = vec![0u32; nsrc + 1];
        for (k, _, _) in &keyed {
            offsets[k + 1] += 1;
        }
        for i in 0..nsrc {
            offsets[i + 1] += offsets[i];
        }
        let mut fill = offsets.clone();
        let zero = Synapse {
            target: 0,
            delay: 0,
        };
        let mut synapses = vec![zero; keyed.len()];
        let mut weights = vec![0i32; keyed.len()];
        let mut weight_refs = vec![
            WeightRef {
                projection: 0,
                index: 0,
            };
            keyed.len()
        ];
        for (k, (syn, w), r) in keyed {
            synapses[fill[k] as usize] = syn;
            weights[fill[k] as usize] = w;
            weight_refs[fill[k] as usize] = r;
            fill[k] += 1;
        }
        let max_delay = synapses.iter().map(|s| s.delay).max().unwrap_or(0);
        let weight_runs = weight_runs(
            weight_refs
                .into_iter()
                .zip(synapses.iter().map(|s| neurons[s.target as usize].0)),
        );
        Ok(PartitionProgram {
            partition: part.id,
            neurons,
            coeffs,
            stage_bounds,
            channels,
            sources,
            synapse_offsets: offsets,
            synapses,
            weights,
            max_delay,
            weight_runs,
            weight_map,
            cadc: None,
        })
    }

    /// Local neurons.
    pub fn neuron_count(&self) -> usize {
        self.neurons.len()
    }

    /// Synapses of source `src` (channel index, or `channels + local neuron`).
    pub fn synapses_of(&self, src: usize) -> &[Synapse] {
        &self.synapses[self.synapse_range(src)]
    }

    /// The weights of [`PartitionProgram::synapses_of`] `src`, in the same order.
    pub fn weights_of(&self, src: usize) -> &[i32] {
        &self.weights[self.synapse_range(src)]
    }

    /// Indices of the synapses of source `src`.
    pub fn synapse_range(&self, src: usize) -> std::ops::Range<usize> {
        self.synapse_offsets[src] as usize..self.synapse_offsets[src + 1] as usize
    }

    /// The model weight synapse `j` realises.
    pub fn weight_ref(&self, j: usize) -> WeightRef {
        self.weight_refs_from(j)
            .next()
            .expect("a weight run covers every synapse")
    }

    /// The model weights synapses `j..` realise, in order.
    pub fn weight_refs_from(&self, j: usize) -> impl Iterator<Item = WeightRef> + '_ {
        self.weight_refs_at(self.run_at(j), j)
    }

    /// The weight run that holds synapse `j`, searched among all.
    fn run_at(&self, j: usize) -> usize {
        self.weight_runs
            .partition_point(|r| (r.synapse + r.len) as usize <= j)
    }

    /// The weight run that holds synapse `j`, walked to from run `hint` where that run starts
    /// at or before `j` (a caller going through a program's synapses in order), else searched
    /// among all.
    fn run_of(&self, j: usize, hint: usize) -> usize {
        let runs = &self.weight_runs;
        match runs.get(hint) {
            Some(r) if r.synapse as usize <= j => {
                hint + runs[hint..]
                    .iter()
                    .position(|r| (r.synapse + r.len) as usize > j)
                    .unwrap_or(runs.len() - hint)
            }
            _ => self.run_at(j),
        }
    }

    /// [`PartitionProgram::weight_refs_from`] `j`, which run `first` holds.
    fn weight_refs_at(&self, first: usize, j: usize) -> impl Iterator<Item = WeightRef> + '_ {
        self.weight_runs[first..].iter().flat_map(move |r| {
            let skip = j.saturating_sub(r.synapse as usize) as u32;
            (skip..r.len).map(move |k| WeightRef {
                projection: r.projection,
                index: r.index + k * r.stride,
            })
        })
    }

    /// True for a partition a single feed-forward pass computes: one stage, no synapse from
    /// its own neurons, one delay for every input.
    pub fn is_feedforward(&self) -> bool {
        let nch = self.channels.len();
        let delay = self.synapses.first().map_or(0, |s| s.delay);
        self.stage_bounds.len() == 2
            && self.synapse_offsets[nch] as usize == self.synapses.len()
            && self.synapses.iter().all(|s| s.delay == delay)
    }

    /// Runs of local neurons that are contiguous in one population: (first local neuron,
    /// population, first neuron, length), in local order.
    pub fn population_runs(&self) -> Vec<(usize, PopulationId, u32, usize)> {
        let mut runs = Vec::new();
        let mut j = 0;
        let n = self.neurons.len();
        while j < n {
            let (pop, first) = self.neurons[j];
            let mut len = 1;
            while j + len < n && self.neurons[j + len] == (pop, first + len as u32) {
                len += 1;
            }
            runs.push((j, pop, first, len));
            j += len;
        }
        runs
    }
}

/// Value of one fixed-point input unit for exponent `e`: `2^-e`.
pub fn input_scale(e: i32) -> f32 {
    (2f64).powi(-e) as f32
}

/// Exponent `e` of the fixed-point input resolution `2^-e` for a population whose neurons
/// receive at most `bound` (sum of absolute weights) per step: the largest power of two for
/// which that bound stays below 2^23 units, so every sum is exact in `i32` and in `f32`.
pub fn fixed_point_exponent(bound: f64) -> i32 {
    if bound <= 0.0 {
        return 24;
    }
    ((1u64 << 23) as f64 / bound)
        .log2()
        .floor()
        .clamp(-100.0, 60.0) as i32
}

/// `w` in fixed point with `scale` units per model unit.
#[inline(always)]
pub fn fixed_point(w: f32, scale: f64) -> i32 {
    round_f64(w as f64 * scale) as i32
}

/// Fixed-point exponent of every population (see [`fixed_point_exponent`]; 24 for inputs),
/// from the realised weights (`maps[population]` of the target). Chosen per population, it
/// does not depend on the partitioning.
pub fn exponents(network: &Network, maps: &[WeightMap]) -> Result<Vec<i32>> {
    let mut stage = WeightStage::new(network, maps)?;
    stage.stage_all(network);
    stage.exponents(network)
}

/// Largest sum of absolute input weights of one neuron the fixed-point input represents
/// exactly (2^23 units of the coarsest resolution, 2^100).
pub const MAX_SUMMED_INPUT: f64 = 1.0633823966279327e37;

/// Projections more than 1 % of whose non-zero weights round to zero at their target's
/// fixed-point resolution (set by the target's largest summed input; a few tiny weights of a
/// random initialisation always do): one line per projection naming it, the count and the
/// cause. A weight far larger than the others (say 1e30) makes every other
/// weight of its target vanish; this says so instead of dropping them silently.
pub fn precision_warnings(network: &Network, ctx: &CompileContext) -> Vec<String> {
    let mut out = Vec::new();
    for (p, &(_, t)) in ctx.ends.iter().enumerate() {
        let pr = &network.projections[p];
        let scale = (2f64).powi(ctx.exponents[t]);
        let map = ctx.maps[t];
        let (mut lost, mut nonzero) = (0usize, 0usize);
        for &w in &pr.weights {
            let v = map.apply(w);
            if v != 0.0 {
                nonzero += 1;
                if fixed_point(v, scale) == 0 {
                    lost += 1;
                }
            }
        }
        if lost > 0 && lost * 100 > nonzero {
            let largest = pr.weights.iter().fold(0f32, |a, w| a.max(w.abs()));
            out.push(format!(
                "projection '{}': {lost} of {nonzero} non-zero weights round to 0 at the input \
                 resolution of '{}' (2^{}), which its largest summed input sets (largest weight \
                 here {largest:e}); rescale the weights or split the projection",
                pr.name, network.populations[t].name, -ctx.exponents[t]
            ));
        }
    }
    out
}

/// Bring compiled programs up to date with new weights (same structure): every population's
/// fixed-point exponent from all its synapses and every synapse's fixed-point weight, each
/// program through its own weight map. Returns the new exponents. The result equals compiling
/// afresh. (An optimiser fills a [`WeightStage`] in its own pass instead of [`WeightStage::stage_all`].)
pub fn update_weights(network: &Network, programs: &mut [PartitionProgram]) -> Result<Vec<i32>> {
    let mut stage = WeightStage::for_programs(network, programs)?;
    stage.stage_all(network);
    stage.write(network, programs)
}

/// New weights on their way into compiled programs: each projection's weights through its
/// target's map, and for each dense projection the summed absolute mapped weight of every
/// target (what sets the fixed-point exponents). Filled in blocks of whole rows, by an
/// optimiser in the same pass as its step ([`WeightStage::slot`], [`stage_block`]) or by
/// [`WeightStage::stage_all`]; then [`WeightStage::write`] sets the exponents and rewrites the
/// programs' synapses run by run.
#[derive(Clone)]
pub struct WeightStage {
    ends: Vec<(PopulationId, PopulationId)>,
    /// Per population: the map of the weights into it.
    pop_maps: Vec<WeightMap>,
    /// Per projection: its target's map.
    maps: Vec<WeightMap>,
    /// Per projection: the row length (source count) if dense, else 0.
    rows: Vec<usize>,
    mapped: Vec<Vec<f32>>,
    /// Per dense projection: summed absolute mapped weight per target.
    row_bounds: Vec<Vec<f64>>,
}

impl std::fmt::Debug for WeightStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightStage")
            .field("projections", &self.ends.len())
            .field("weights", &self.mapped.iter().map(Vec::len).sum::<usize>())
            .finish()
    }
}

/// One projection's share of a [`WeightStage`], filled in blocks of whole rows.
pub struct StageSlot<'a> {
    /// The map of the projection's target.
    pub map: WeightMap,
    /// Row length (sources) of a dense projection, 0 otherwise.
    pub row: usize,
    mapped: &'a mut [f32],
    bounds: &'a mut [f64],
}

impl<'a> StageSlot<'a> {
    /// A block length of about `target` weights that is a whole number of rows.
    pub fn block_len(&self, target: usize) -> usize {
        match target.checked_div(self.row) {
            None => target.max(1),
            Some(rows) => rows.max(1) * self.row,
        }
    }

    /// The slot cut into blocks of `len` weights (from [`StageSlot::block_len`]): for each,
    /// its mapped weights and, for a dense projection, its rows' bounds.
    pub fn blocks(self, len: usize) -> Vec<(&'a mut [f32], &'a mut [f64])> {
        let n = self.mapped.len().div_ceil(len.max(1));
        let mut bounds: Vec<&'a mut [f64]> = match len.checked_div(self.row) {
            None => (0..n).map(|_| <&mut [f64]>::default()).collect(),
            Some(rows) => self.bounds.chunks_mut(rows.max(1)).collect(),
        };
        bounds.resize_with(n, Default::default);
        self.mapped.chunks_mut(len.max(1)).zip(bounds).collect()
    }
}

widest! {
/// Stage one block of new weights `w` (starting on a row boundary): `mapped = map(w)` and, for a
/// dense projection (`row > 0`), each row's summed absolute mapped weight into `bounds`.
pub fn stage_block(map: WeightMap, row: usize, w: &[f32], mapped: &mut [f32], bounds: &mut [f64]) {
    match map {
        WeightMap::Ideal => mapped.copy_from_slice(w),
        WeightMap::Quantised { scale, max } => {
            let m = max as f32;
            for (o, &x) in mapped.iter_mut().zip(w) {
                *o = round_f32(x * scale).clamp(-m, m) / scale;
            }
        }
    }
    if row > 0 {
        for (b, r) in bounds.iter_mut().zip(mapped.chunks(row)) {
            *b = abs_sum(r);
        }
    }
}
}

/// Sum of `|x|` in f64, in eight interleaved lanes combined in a fixed order (vectorisable,
/// deterministic).
#[inline(always)]
fn abs_sum(x: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += (v as f64).abs();
        }
    }
    for (l, &v) in lanes.iter_mut().zip(it.remainder()) {
        *l += (v as f64).abs();
    }
    ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6]))
        + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]))
}

/// Runs a tile of [`write_runs`] takes together (and weights of each it takes at once).
const TILE: usize = 16;

/// True if `runs` starts with [`TILE`] runs of one projection and population, each as long
/// and as strided as the first, each starting one weight after the one before: a dense
/// projection's rows read across (its weights lie by target, a program's synapses by source).
fn tile_at(runs: &[WeightRun]) -> bool {
    let Some(first) = runs.first() else {
        return false;
    };
    runs.len() >= TILE
        && first.stride as usize >= TILE
        && runs[..TILE].iter().zip(0u32..).all(|(r, k)| {
            r.projection == first.projection
                && r.population == first.population
                && r.len == first.len
                && r.stride == first.stride
                && r.index == first.index + k
        })
}

widest! {
    /// The fixed-point weight of every synapse of `runs` into `out` (the runs' weights, in
    /// order). [`TILE`] runs that read consecutive weights of strided rows ([`tile_at`]) go
    /// together: each row's [`TILE`] weights are read at once and written into the runs'
    /// outputs through a small tile, instead of one weight per cache line, run after run.
    /// The same value for every synapse either way.
    fn write_runs(runs: &[WeightRun], out: &mut [i32], mapped: &[Vec<f32>], scales: &[f32]) {
        let mut out = out;
        let mut runs = runs;
        while let Some(run) = runs.first() {
            let w = &mapped[run.projection as usize];
            let scale = scales[run.population as usize];
            let (i0, step, len) = (run.index as usize, run.stride as usize, run.len as usize);
            if tile_at(runs) {
                let (o, rest) = std::mem::take(&mut out).split_at_mut(TILE * len);
                out = rest;
                let mut tile = [[0i32; TILE]; TILE];
                for k0 in (0..len).step_by(TILE) {
                    let kn = TILE.min(len - k0);
                    for (kk, row) in tile.iter_mut().enumerate().take(kn) {
                        let at = i0 + (k0 + kk) * step;
                        let src: &[f32; TILE] =
                            w[at..at + TILE].try_into().expect("a tile's row");
                        for (x, &v) in row.iter_mut().zip(src) {
                            *x = round_i32(v * scale);
                        }
                    }
                    for (r, o) in o.chunks_exact_mut(len).enumerate() {
                        for (kk, x) in o[k0..k0 + kn].iter_mut().enumerate() {
                            *x = tile[kk][r];
                        }
                    }
                }
                runs = &runs[TILE..];
                continue;
            }
            let (o, rest) = std::mem::take(&mut out).split_at_mut(len);
            out = rest;
            for (k, o) in o.iter_mut().enumerate() {
                *o = round_i32(w[i0 + k * step] * scale);
            }
            runs = &runs[1..];
        }
    }
}

impl WeightStage {
    /// An empty stage for `network`, `maps[population]` the map of the weights into each
    /// population.
    pub fn new(network: &Network, maps: &[WeightMap]) -> Result<Self> {
        let ends = network.all_endpoints()?;
        let mut rows = Vec::with_capacity(ends.len());
        let mut row_bounds = Vec::with_capacity(ends.len());
        let mut mapped = Vec::with_capacity(ends.len());
        for (p, &(s, t)) in ends.iter().enumerate() {
            let pr = &network.projections[p];
            let n = network.weight_count(p)?;
            if pr.weights.len() != n {
                return Err(crate::error::Error::network(
                    format!("projection '{}'", pr.name),
                    format!(
                        "has {} weights, its connectivity needs {n} (call Network::prepare)",
                        pr.weights.len()
                    ),
                ));
            }
            let dense = pr.connectivity == crate::model::network::Connectivity::Dense;
            rows.push(if dense {
                network.populations[s].size
            } else {
                0
            });
            row_bounds.push(vec![
                0.0;
                if dense {
                    network.populations[t].size
                } else {
                    0
                }
            ]);
            mapped.push(vec![0.0; n]);
        }
        Ok(WeightStage {
            pop_maps: maps.to_vec(),
            maps: ends.iter().map(|&(_, t)| maps[t]).collect(),
            ends,
            rows,
            mapped,
            row_bounds,
        })
    }

    /// An empty stage with the maps of `programs` (ideal for populations no program holds).
    pub fn for_programs(network: &Network, programs: &[PartitionProgram]) -> Result<Self> {
        let mut maps = vec![WeightMap::Ideal; network.populations.len()];
        for prog in programs {
            for run in prog.population_runs() {
                maps[run.1] = prog.weight_map;
            }
        }
        Self::new(network, &maps)
    }

    /// True if this stage was made for programs like `programs` of `network` (same weight
    /// counts, same maps): a stage made before a recompilation with another emulation is not.
    pub fn fits(&self, network: &Network, programs: &[PartitionProgram]) -> bool {
        self.mapped.len() == network.projections.len()
            && self
                .mapped
                .iter()
                .zip(&network.projections)
                .all(|(m, p)| m.len() == p.weights.len())
            && programs.iter().all(|prog| {
                prog.population_runs()
                    .iter()
                    .all(|r| self.pop_maps.get(r.1) == Some(&prog.weight_map))
            })
    }

    /// Projection `p`'s share, to fill.
    pub fn slot(&mut self, p: usize) -> StageSlot<'_> {
        StageSlot {
            map: self.maps[p],
            row: self.rows[p],
            mapped: &mut self.mapped[p],
            bounds: &mut self.row_bounds[p],
        }
    }

    /// Every projection's slot at once ([`WeightStage::slot`]).
    pub fn slots(&mut self) -> Vec<StageSlot<'_>> {
        let (maps, rows) = (&self.maps, &self.rows);
        self.mapped
            .iter_mut()
            .zip(self.row_bounds.iter_mut())
            .enumerate()
            .map(|(p, (mapped, bounds))| StageSlot {
                map: maps[p],
                row: rows[p],
                mapped,
                bounds,
            })
            .collect()
    }

    /// Stage every weight of `network` as it is, in parallel blocks.
    pub fn stage_all(&mut self, network: &Network) {
        for p in 0..self.ends.len() {
            let w = &network.projections[p].weights;
            let slot = self.slot(p);
            let (map, row, len) = (slot.map, slot.row, slot.block_len(1 << 14));
            slot.blocks(len)
                .into_par_iter()
                .zip(w.par_chunks(len))
                .for_each(|((mapped, bounds), w)| stage_block(map, row, w, mapped, bounds));
        }
    }

    /// The fixed-point exponent of every population from the staged weights.
    pub fn exponents(&self, network: &Network) -> Result<Vec<i32>> {
        let mut bound: Vec<Vec<f64>> = network
            .populations
            .iter()
            .map(|p| vec![0.0; p.size])
            .collect();
        for (p, &(_, t)) in self.ends.iter().enumerate() {
            let b = &mut bound[t];
            if self.rows[p] > 0 {
                for (b, &r) in b.iter_mut().zip(&self.row_bounds[p]) {
                    *b += r;
                }
            } else {
                let w = &self.mapped[p];
                network.for_each_synapse_index(p, 0..b.len(), |_, post, k| {
                    b[post] += (w[k] as f64).abs()
                })?;
            }
        }
        bound
            .iter()
            .enumerate()
            .map(|(p, b)| {
                let most = b.iter().cloned().fold(0.0, f64::max);
                if most > MAX_SUMMED_INPUT {
                    return Err(crate::error::Error::network(
                        format!("population '{}'", network.populations[p].name),
                        format!(
                            "its neurons' summed absolute input weights reach {most:e}; the \
                             fixed-point input sums represent at most {MAX_SUMMED_INPUT:e}"
                        ),
                    ));
                }
                Ok(fixed_point_exponent(most))
            })
            .collect()
    }

    /// Set every population's exponent from the staged weights and rewrite the fixed-point
    /// weight of every synapse of `programs` (compiled from `network`), in parallel over
    /// groups of runs. Returns the exponents.
    pub fn write(&self, network: &Network, programs: &mut [PartitionProgram]) -> Result<Vec<i32>> {
        const GROUP: usize = 4096;
        let exps = self.exponents(network)?;
        // Powers of two: `w · scale` is exact in f32 as in f64, so rounding in f32 gives the
        // same fixed-point values as `fixed_point`.
        let scales: Vec<f32> = exps.iter().map(|&e| (2f64).powi(e) as f32).collect();
        let mut groups: Vec<(&[WeightRun], &mut [i32])> = Vec::new();
        for prog in programs.iter_mut() {
            for (c, &(pop, _)) in prog.coeffs.iter_mut().zip(&prog.neurons) {
                c.input_scale = input_scale(exps[pop]);
            }
            let mut runs: &[WeightRun] = &prog.weight_runs;
            let mut weights: &mut [i32] = &mut prog.weights;
            while !runs.is_empty() {
                let (mut k, mut len) = (0, 0);
                while k < runs.len() && len < GROUP {
                    len += runs[k].len as usize;
                    k += 1;
                }
                let (r, rr) = runs.split_at(k);
                let (w, wr) = std::mem::take(&mut weights).split_at_mut(len);
                groups.push((r, w));
                (runs, weights) = (rr, wr);
            }
        }
        groups
            .into_par_iter()
            .for_each(|(runs, out)| write_runs(runs, out, &self.mapped, &scales));
        Ok(exps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `write_runs` gives every synapse `round(w · scale)` of its own weight, whether its run
    /// goes in a tile or alone: tiles of runs of several lengths (shorter and longer than a
    /// tile's rows, not a multiple of them), a run breaking the sequence, strides just at
    /// the tile's width, other projections and populations between, and a tail of runs too
    /// short to make a tile.
    #[test]
    fn written_runs_are_each_synapse_weight_however_tiled() {
        let mut rng = crate::rng::Rng::new(9);
        let mapped: Vec<Vec<f32>> = (0..2)
            .map(|_| (0..8000).map(|_| rng.normal() as f32 * 3.0).collect())
            .collect();
        let scales = [4.0f32, 0.5];
        let mut runs = Vec::new();
        let mut push = |projection: u32, population: u32, index: u32, len: u32, stride: u32| {
            runs.push(WeightRun {
                synapse: 0,
                len,
                projection,
                index,
                stride,
                population,
            })
        };
        for (len, stride) in [(10, 256), (21, 40), (16, 16), (33, 100)] {
            for k in 0..37 {
                // Run 20 of each block breaks the sequence (its index jumps).
                let index = if k == 20 { 3000 } else { k };
                push(len % 2, stride % 2, index, len, stride);
            }
            push(1, 0, 5, 7, 3);
        }
        for k in 0..5 {
            push(0, 1, k, 12, 50);
        }
        let total: usize = runs.iter().map(|r| r.len as usize).sum();
        let mut expected = Vec::with_capacity(total);
        for r in &runs {
            for k in 0..r.len as usize {
                let w = mapped[r.projection as usize][r.index as usize + k * r.stride as usize];
                expected.push(round_i32(w * scales[r.population as usize]));
            }
        }
        let mut out = vec![i32::MIN; total];
        write_runs(&runs, &mut out, &mapped, &scales);
        assert_eq!(out, expected);
        assert!(tile_at(&runs), "the first runs make a tile");
    }

    /// A synapse as (source, target, projection, weight index), neurons as global identities.
    type SynapseRef = ((PopulationId, u32), (PopulationId, u32), u32, u32);

    /// Every synapse's model weight, read through `weight_ref`.
    fn synapse_refs(p: &PartitionProgram) -> Vec<SynapseRef> {
        let nch = p.channels.len();
        let mut out = Vec::new();
        for src in 0..p.synapse_offsets.len() - 1 {
            let from = if src < nch {
                p.channels[src]
            } else {
                p.neurons[src - nch]
            };
            for j in p.synapse_range(src) {
                let r = p.weight_ref(j);
                let to = p.neurons[p.synapses[j].target as usize];
                out.push((from, to, r.projection, r.index));
            }
        }
        out.sort_unstable();
        out
    }

    /// A program keeps its synapses' model weights as runs: `weight_ref` and `weight_refs_from`
    /// give each synapse the weight the network stores for its (source, target) pair, in the
    /// partitions (a hidden layer split over several, a readout) and in the fusion of the
    /// hidden layer's (runs taken stretch by stretch from the programs), read one by one and
    /// from the middle of a run on.
    #[test]
    fn weight_references_as_runs_name_each_synapses_weight() {
        use crate::model::network::{NetworkBuilder, WeightInit};
        use crate::model::neuron::NeuronParams;
        use crate::model::substrate::Substrate;
        use crate::plan::partition::{PartitionOptions, Plan};
        let sub = Substrate::bss2();
        let init = WeightInit {
            mean: 0.0,
            std: 0.5,
        };
        let net = NetworkBuilder::new("refs", 10, 3)
            .input("in", 300)
            .dense("h", 700, NeuronParams::default(), init)
            .dense("o", 40, NeuronParams::default(), init)
            .build(&sub)
            .unwrap();
        let plan = Plan::new(&net, &sub, &PartitionOptions::default()).unwrap();
        let progs: Vec<PartitionProgram> = plan
            .partitions
            .iter()
            .map(|p| PartitionProgram::compile(&net, &plan, p).unwrap())
            .collect();
        // Independently: each projection's weight index of (pre, post), from the network.
        let mut expected = Vec::new();
        for (k, prog) in progs.iter().enumerate() {
            assert!(
                prog.weight_runs.len() < prog.synapses.len() / 8,
                "partition {k}: runs"
            );
            for (from, to, proj, index) in synapse_refs(prog) {
                // Dense weights are stored [target, source].
                let (s, t) = [(0, 1), (1, 2)][proj as usize];
                assert_eq!((from.0, to.0), (s, t), "partition {k}: projection {proj}");
                let sources = net.populations[s].size as u32;
                assert_eq!(
                    index,
                    to.1 * sources + from.1,
                    "partition {k}: {from:?} -> {to:?}"
                );
                expected.push((from, to, proj, index));
            }
            // Read from the middle of the runs: the same as one by one.
            let mid = prog.synapses.len() / 3;
            let tail: Vec<WeightRef> = prog.weight_refs_from(mid).collect();
            let one: Vec<WeightRef> = (mid..prog.synapses.len())
                .map(|j| prog.weight_ref(j))
                .collect();
            assert_eq!(tail, one);
        }
        expected.sort_unstable();
        assert_eq!(expected.len(), 300 * 700 + 700 * 40);
        // The hidden layer's partitions as one wave.
        let wave: Vec<&PartitionProgram> = progs
            .iter()
            .filter(|p| p.neurons.iter().all(|n| n.0 == 1))
            .collect();
        assert!(wave.len() >= 2, "the hidden layer spans partitions");
        let live: Vec<Vec<bool>> = wave.iter().map(|p| vec![false; p.channels.len()]).collect();
        let fused = fuse(&wave, &live, 0).expect("one wave").program;
        let mut parts: Vec<_> = wave.iter().flat_map(|p| synapse_refs(p)).collect();
        parts.sort_unstable();
        assert_eq!(synapse_refs(&fused), parts);
    }

    #[test]
    fn inline_rounding_equals_the_standard_library_bit_for_bit() {
        let mut rng = crate::rng::Rng::new(5);
        let mut xs: Vec<f32> = vec![
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            0.49999997,
            -0.49999997,
            0.0,
            -0.0,
            -0.3,
            0.3,
            8_388_607.5,
            -8_388_607.5,
            8_388_608.0,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::MIN_POSITIVE,
        ];
        for _ in 0..100_000 {
            let scale = 10f64.powi(rng.below(12) as i32 - 4);
            xs.push(((rng.uniform() - 0.5) * scale) as f32);
            xs.push((rng.below(2000) as f32 - 1000.0) / 2.0);
        }
        for &x in &xs {
            assert_eq!(round_f32(x).to_bits(), x.round().to_bits(), "{x}");
            let y = x as f64 * 1.25;
            assert_eq!(round_f64(y).to_bits(), y.round().to_bits(), "{y}");
        }
        assert!(round_f32(f32::NAN).is_nan());
        for &x in xs.iter().filter(|x| x.abs() <= 8_388_608.0) {
            assert_eq!(round_i32(x), x.round() as i32, "{x}");
        }
        assert_eq!(round_i32(1e30), 8_388_608);
        assert_eq!(round_i32(-f32::INFINITY), -8_388_608);
        assert_eq!(round_i32(f32::NAN), -8_388_608);
    }
}

/// Append stretch `(program, first synapse there, length)` to `stretches`, joined to the last
/// where it continues it.
fn push_stretch(stretches: &mut Vec<(u32, u32, u32)>, (k, i, n): (u32, u32, u32)) {
    match stretches.last_mut() {
        Some((sk, si, len)) if *sk == k && *si + *len == i => *len += n,
        _ => stretches.push((k, i, n)),
    }
}

/// The partitions of one system run as one program: `programs[k]` (on chip `k`) side by side,
/// each input channel fed by another chip's neuron (`live[k][channel]`) turned into a synapse
/// from that neuron with `window` more steps of delay (a spike crossing the links arrives a
/// delivery delay later), every other channel kept as an input of the whole. Runs exactly as
/// the chips in lock-step with unlimited links do, in one pass over all their neurons. `None`
/// where the programs cannot be one: several stages, or different readout quantisation or
/// weight maps.
pub fn fuse(
    programs: &[&PartitionProgram],
    live: &[Vec<bool>],
    window: u32,
) -> Option<FusedProgram> {
    let first = programs.first()?;
    if programs.iter().any(|p| {
        p.stage_bounds.len() != 2 || p.cadc != first.cadc || p.weight_map != first.weight_map
    }) {
        return None;
    }
    let mut offsets = vec![0usize];
    let mut neurons = Vec::new();
    let mut coeffs = Vec::new();
    for p in programs {
        neurons.extend_from_slice(&p.neurons);
        coeffs.extend_from_slice(&p.coeffs);
        offsets.push(neurons.len());
    }
    let holder: std::collections::HashMap<(PopulationId, u32), usize> =
        neurons.iter().enumerate().map(|(j, &id)| (id, j)).collect();
    // The inputs of the whole: every channel not fed over the links, once.
    let mut channels: Vec<(PopulationId, u32)> = programs
        .iter()
        .zip(live)
        .flat_map(|(p, l)| {
            p.channels
                .iter()
                .zip(l)
                .filter(|(_, &on)| !on)
                .map(|(&c, _)| c)
        })
        .collect();
    channels.sort_unstable();
    channels.dedup();
    let nch = channels.len();
    let mut sources: Vec<ChannelBlock> = Vec::new();
    for (ch, &(pop, n)) in channels.iter().enumerate() {
        if sources.last().is_none_or(|b| b.population != pop) {
            sources.push(ChannelBlock {
                population: pop,
                span_start: n,
                lut: Vec::new(),
            });
        }
        let b = sources.last_mut().expect("just pushed");
        let k = (n - b.span_start) as usize;
        b.lut.resize(k + 1, u32::MAX);
        b.lut[k] = ch as u32;
    }
    let channel_of = |id: (PopulationId, u32)| channels.binary_search(&id).ok();
    // Every synapse under its source in the whole, in chip order: what feeds each source of
    // the whole is listed first (per source, the programs' sources in chip order), then the
    // whole is written in order, source after source, in pieces over the threads.
    let nsrc = nch + neurons.len();
    let mut synapse_offsets = vec![0u32; nsrc + 1];
    let mut feed_offsets = vec![0usize; nsrc + 1];
    let mut feeding: Vec<(u32, u32)> = Vec::new();
    for (k, p) in programs.iter().enumerate() {
        let pnch = p.channels.len();
        for src in 0..pnch + p.neurons.len() {
            let (source, extra) = if src < pnch {
                if live[k][src] {
                    let j = holder[&p.channels[src]];
                    ((nch + j) as u32, window)
                } else {
                    (channel_of(p.channels[src])? as u32, 0)
                }
            } else {
                ((nch + offsets[k] + src - pnch) as u32, 0)
            };
            synapse_offsets[source as usize + 1] += p.synapses_of(src).len() as u32;
            feed_offsets[source as usize + 1] += 1;
            feeding.push((source, extra));
        }
    }
    for i in 0..nsrc {
        synapse_offsets[i + 1] += synapse_offsets[i];
        feed_offsets[i + 1] += feed_offsets[i];
    }
    // Per source of the whole: (program, its source, extra delay), in chip order.
    let mut feeds = vec![(0u32, 0u32, 0u32); feed_offsets[nsrc]];
    let mut cursor = feed_offsets[..nsrc].to_vec();
    let mut each = feeding.into_iter();
    for (k, p) in programs.iter().enumerate() {
        for (src, (source, extra)) in each.by_ref().take(p.synapse_offsets.len() - 1).enumerate() {
            let at = &mut cursor[source as usize];
            feeds[*at] = (k as u32, src as u32, extra);
            *at += 1;
        }
    }
    drop(cursor);
    let total = synapse_offsets[nsrc] as usize;
    let mut synapses = vec![<Synapse as bytemuck::Zeroable>::zeroed(); total];
    let mut weights = vec![0i32; total];
    const PIECE: usize = 1 << 16;
    let ends = || synapse_offsets[1..].iter().map(|&e| e as usize);
    let pieces = crate::threads::pieces_at(&mut synapses, ends(), PIECE)
        .into_iter()
        .zip(crate::threads::pieces_at(&mut weights, ends(), PIECE))
        .collect::<Vec<_>>();
    // Where the whole's synapses come from, as stretches that one program holds
    // consecutively, per piece.
    let pieces: Vec<Vec<(u32, u32, u32)>> = pieces
        .into_par_iter()
        .map(|((items, _, mut syn_out), (_, _, mut w_out))| {
            let mut stretches: Vec<(u32, u32, u32)> = Vec::new();
            for &(k, src, extra) in &feeds[feed_offsets[items.start]..feed_offsets[items.end]] {
                let p = programs[k as usize];
                let range = p.synapse_range(src as usize);
                let n = range.len();
                if n == 0 {
                    continue;
                }
                let (syn_here, rest) = std::mem::take(&mut syn_out).split_at_mut(n);
                syn_out = rest;
                let first = offsets[k as usize] as u32;
                for (o, syn) in syn_here.iter_mut().zip(&p.synapses[range.clone()]) {
                    *o = Synapse {
                        target: syn.target + first,
                        delay: syn.delay + extra,
                    };
                }
                let (w_here, rest) = std::mem::take(&mut w_out).split_at_mut(n);
                w_out = rest;
                w_here.copy_from_slice(&p.weights[range.clone()]);
                push_stretch(&mut stretches, (k, range.start as u32, n as u32));
            }
            stretches
        })
        .collect();
    let mut stretches: Vec<(u32, u32, u32)> = Vec::new();
    for st in pieces.into_iter().flatten() {
        push_stretch(&mut stretches, st);
    }
    let max_delay = synapses.iter().map(|s| s.delay).max().unwrap_or(0);
    // The model weights of the whole's synapses, stretch by stretch from the runs of the
    // programs that hold them.
    // A program's stretches come in the order of its synapses (its sources in order), so
    // each search starts from the run the last one ended in.
    let mut hint = vec![0usize; programs.len()];
    let refs = stretches.iter().flat_map(|&(k, i, n)| {
        let (p, i) = (programs[k as usize], i as usize);
        let run = p.run_of(i, hint[k as usize]);
        hint[k as usize] = run;
        p.weight_refs_at(run, i).take(n as usize)
    });
    let weight_runs = weight_runs(refs.zip(synapses.iter().map(|s| neurons[s.target as usize].0)));
    debug_assert_eq!(
        weight_runs.iter().map(|r| r.len as usize).sum::<usize>(),
        synapses.len(),
        "the runs cover every synapse of the whole"
    );
    let n = neurons.len() as u32;
    Some(FusedProgram {
        program: PartitionProgram {
            partition: first.partition,
            neurons,
            coeffs,
            stage_bounds: vec![0, n],
            channels,
            sources,
            synapse_offsets,
            synapses,
            weights,
            max_delay,
            weight_runs,
            weight_map: first.weight_map,
            cadc: first.cadc,
        },
        offsets,
        stretches,
    })
}

/// The programs of a system run as one ([`fuse`]).
#[derive(Clone, Debug)]
pub struct FusedProgram {
    /// The whole.
    pub program: PartitionProgram,
    /// `chips + 1` bounds: chip k's neurons are `offsets[k]..offsets[k + 1]` of the whole.
    pub offsets: Vec<usize>,
    /// Where the whole's synapses come from, in order, as stretches that one program holds
    /// consecutively: (program, index of the stretch's first synapse there, length).
    stretches: Vec<(u32, u32, u32)>,
}

impl FusedProgram {
    /// Take the weights and coefficients of `programs` (the ones fused, after their weights
    /// changed; same structure): the same as fusing them again.
    pub fn refresh(&mut self, programs: &[&PartitionProgram]) {
        // In pieces of stretches over the threads (after every optimiser step of a training
        // with fused waves).
        const PIECE: usize = 1 << 14;
        let ends = self.stretches.iter().scan(0, |at, &(_, _, n)| {
            *at += n as usize;
            Some(*at)
        });
        let pieces = crate::threads::pieces_at(&mut self.program.weights, ends, PIECE);
        let stretches = &self.stretches;
        pieces.into_par_iter().for_each(|(items, _, mut out)| {
            for &(k, i, n) in &stretches[items] {
                let (i, n) = (i as usize, n as usize);
                let (here, r) = std::mem::take(&mut out).split_at_mut(n);
                here.copy_from_slice(&programs[k as usize].weights[i..i + n]);
                out = r;
            }
        });
        for (k, p) in programs.iter().enumerate() {
            self.program.coeffs[self.offsets[k]..self.offsets[k + 1]].copy_from_slice(&p.coeffs);
        }
    }
}

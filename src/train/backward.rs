//! The backward pass: gradients of the loss with respect to every weight, through time, from
//! the observables the forward pass recorded (spikes, and membranes time-major per sample,
//! `[step][neuron]`), with the SuperSpike surrogate for the spike's derivative and the reset
//! treated as a constant. Recurrent loops (a strongly connected component of populations,
//! whose projections take at least one step, plus a system's link delay where they cross
//! chips) are walked back through time together: step by step, every member of the loop, and
//! the gradient on each member's spikes from the loop's projections `d` steps later.
//!
//! Two phases, both parallel: per sample, the reverse-time recursion of every population,
//! vectorised across its neurons (no transposes: the recorded layout is the one it reads);
//! then per (chunk of samples, projection, block of source neurons), that chunk's weight
//! gradients from the source's spike events. The chunks' partial sums are combined in a fixed
//! binary tree over chunk indices, so the result does not depend on the number of threads (or
//! of processes that own whole subtrees of chunks).

use super::loss::{argmax, log_sum_exp};
use super::{BatchStats, TrainConfig};
use crate::error::{Error, Result};
use crate::model::network::{Network, PopulationId, PopulationKind, Score};
use crate::model::neuron::NeuronCoeffs;
use crate::plan::partition::LinkSteps;
use crate::run::executor::Execution;
use crate::simd::widest;
use crate::spikes::store::{SpikeEvent, SpikeTrains};
use rayon::prelude::*;

pub(crate) use crate::backend::BySource;

/// The network's structure as the backward pass needs it, computed once.
#[derive(Clone, Debug)]
pub struct Topology {
    /// Non-input populations, sources before targets.
    order: Vec<PopulationId>,
    /// The same populations as strongly connected components in topological order: the
    /// backward pass walks a component's members back through time together.
    comps: Vec<Vec<PopulationId>>,
    /// Whether some component is a recurrent loop.
    recurrent: bool,
    /// Per projection: (source, target, delay).
    ends: Vec<(PopulationId, PopulationId, usize)>,
    /// Per projection: synapses grouped by source neuron: offsets, then (target, weight index).
    by_source: Vec<BySource>,
    /// Per projection: dense (weights `[target][source]`, every source reaching every target)
    /// and with one delay.
    dense: Vec<bool>,
    /// Per projection: empty where every synapse has the delay of `ends`, else per synapse
    /// in `by_source` order the steps its spikes spend on a system's links on top of it.
    extra: Vec<Vec<u32>>,
    /// Per population: coefficients of the software model.
    coeffs: Vec<NeuronCoeffs>,
    /// The readout population.
    readout: PopulationId,
    /// The input population.
    input: PopulationId,
}

impl Topology {
    /// Check the network is trainable (one input, one readout) and index it; `links[p]`'s
    /// steps are added to the delays of projection `p`'s synapses (its spikes cross a
    /// system's links, see [`crate::Plan::link_delays`]; missing: none).
    pub fn new(net: &Network, dt: f32, links: &[LinkSteps]) -> Result<Self> {
        let mut order = Vec::new();
        let mut comps = Vec::new();
        let mut recurrent = false;
        let all_ends = net.all_endpoints()?;
        for comp in net.components()? {
            let p = comp[0];
            recurrent |= comp.len() > 1 || all_ends.contains(&(p, p));
            let members: Vec<PopulationId> = comp
                .into_iter()
                .filter(|&p| net.populations[p].kind != PopulationKind::Input)
                .collect();
            if !members.is_empty() {
                order.extend(&members);
                comps.push(members);
            }
        }
        let readouts: Vec<PopulationId> = (0..net.populations.len())
            .filter(|&p| net.populations[p].kind == PopulationKind::Readout)
            .collect();
        let [readout] = readouts[..] else {
            return Err(Error::network(
                format!("network '{}'", net.name),
                format!(
                    "has {} readout populations; training needs exactly one",
                    readouts.len()
                ),
            ));
        };
        let inputs = net.inputs();
        let [input] = inputs[..] else {
            return Err(Error::network(
                format!("network '{}'", net.name),
                format!(
                    "has {} input populations; training needs exactly one",
                    inputs.len()
                ),
            ));
        };
        let delays = net.effective_delays()?;
        let mut ends = Vec::new();
        let mut by_source = Vec::new();
        let mut extra = Vec::new();
        for (k, (&delay, &(s, t))) in delays.iter().zip(&all_ends).enumerate() {
            let link = links.get(k).unwrap_or(&LinkSteps::All(0));
            ends.push((s, t, (delay + link.uniform().unwrap_or(0)) as usize));
            let ns = net.populations[s].size;
            let mut lists: Vec<Vec<(u32, u32, u32)>> = vec![Vec::new(); ns];
            let mut i = 0;
            net.for_each_synapse_index(k, 0..net.populations[t].size, |pre, post, w| {
                let steps = match link {
                    LinkSteps::All(_) => 0,
                    LinkSteps::Each(v) => v.get(i).copied().unwrap_or(0),
                };
                lists[pre].push((post as u32, w as u32, steps));
                i += 1;
            })?;
            let mut offsets = vec![0u32];
            let mut flat = Vec::new();
            let mut steps = Vec::new();
            for l in lists {
                flat.extend(l.iter().map(|&(post, w, _)| (post, w)));
                if let LinkSteps::Each(_) = link {
                    steps.extend(l.iter().map(|&(_, _, d)| d));
                }
                offsets.push(flat.len() as u32);
            }
            by_source.push((offsets, flat));
            extra.push(steps);
        }
        // The backward pass takes τ, ϑ and the leak per population (a bias or an initial
        // membrane per neuron changes only the forward values it reads, and gets no gradient).
        for p in &net.populations {
            if p.kind != PopulationKind::Input && (!p.params.leak || !p.per_neuron.trainable()) {
                return Err(crate::error::Error::network(
                    format!("population '{}'", p.name),
                    "training needs leaky neurons with one τ_mem, τ_syn and threshold per \
                     population (this one has no leak, NIR's IF, or per-neuron τ or threshold)",
                ));
            }
        }
        let coeffs = net
            .populations
            .iter()
            .map(|p| p.params.coeffs(dt, p.kind == PopulationKind::Lif))
            .collect();
        let dense = net
            .projections
            .iter()
            .zip(&extra)
            .map(|(p, e)| {
                p.connectivity == crate::model::network::Connectivity::Dense && e.is_empty()
            })
            .collect();
        Ok(Topology {
            order,
            comps,
            recurrent,
            ends,
            by_source,
            dense,
            extra,
            coeffs,
            readout,
            input,
        })
    }

    /// The first projection whose synapses spend different steps on a system's links (some
    /// cross chips, others do not), if one does.
    pub fn per_synapse_delays(&self) -> Option<usize> {
        self.extra.iter().position(|e| !e.is_empty())
    }

    /// Whether the network has a recurrent loop.
    pub fn is_recurrent(&self) -> bool {
        self.recurrent
    }

    /// The recurrent loops: every strongly connected component of more than one population,
    /// or of one that projects onto itself.
    pub fn loops(&self) -> impl Iterator<Item = &[PopulationId]> {
        crate::backend::loops_of(&self.comps, &self.ends)
    }

    /// The readout population.
    pub fn readout(&self) -> PopulationId {
        self.readout
    }

    /// The input population.
    pub fn input(&self) -> PopulationId {
        self.input
    }

    /// This structure as a backend that trains on its device takes it.
    pub fn structure<'a>(
        &'a self,
        net: &'a Network,
        maps: &'a [crate::model::analog::WeightMap],
        programs: &'a [&'a crate::plan::compile::PartitionProgram],
    ) -> crate::backend::TrainStructure<'a> {
        crate::backend::TrainStructure {
            network: net,
            order: &self.order,
            comps: &self.comps,
            ends: &self.ends,
            by_source: &self.by_source,
            dense: &self.dense,
            coeffs: &self.coeffs,
            readout: self.readout,
            maps,
            programs,
        }
    }
}

/// The spike-count regulariser's loss (`lam`·count⁴ per neuron over its population size,
/// summed over samples) and the spikes of the spiking populations in `spikes`, as the
/// per-sample backward adds them (for a backward pass that runs elsewhere).
pub fn spike_regulariser(
    net: &Network,
    topo: &Topology,
    spikes: &crate::spikes::store::SpikeStore,
    lam: f32,
) -> (f64, f64) {
    let (mut loss, mut count_all) = (0.0f64, 0.0f64);
    let mut count: Vec<f32> = Vec::new();
    for &p in &topo.order {
        let pop = &net.populations[p];
        let Some(tr) = spikes.get(p) else {
            continue;
        };
        if pop.kind != PopulationKind::Lif {
            continue;
        }
        let n = pop.size;
        for s in 0..tr.samples() {
            count.clear();
            count.resize(n, 0.0);
            for e in tr.sample(s) {
                count[e.neuron as usize] += 1.0;
            }
            count_all += count.iter().sum::<f32>() as f64;
            for &k in &count {
                loss += (lam * k.powi(4) / n as f32) as f64;
            }
        }
    }
    (loss, count_all)
}

/// Samples per chunk of the gradient sum: partial sums over whole chunks are combined in a
/// fixed tree ([`tree`]; the gradients' by [`TreeStack`], as the chunks come). Fixed, so that
/// results do not depend on the machine.
pub const GRAD_CHUNK: usize = 16;

/// Loss and weight gradients of a batch from its recorded observables. `exec` must hold the
/// membranes of every population ([`crate::Observe::AllTraces`], or as codes where they
/// have them, [`crate::Observe::CompactTraces`]). Gradients are of the batch
/// mean, in each projection's weight layout; they do not include the weight regulariser (the
/// optimiser adds it, [`crate::Adam::step`]).
pub fn gradients(
    net: &Network,
    topo: &Topology,
    exec: &Execution,
    labels: &[u8],
    cfg: &TrainConfig,
    epoch: usize,
) -> (BatchStats, Vec<Vec<f32>>) {
    gradients_from(net, topo, exec, Upstream::Labels(labels), cfg, epoch)
}

/// What the backward pass starts from: the trainer's loss, or the gradients of a caller's
/// own loss on the readout scores and spike counts. Everything after the loss is the same
/// code, linear in these gradients, so a caller's loss that equals the trainer's gives the
/// trainer's weight gradients.
#[derive(Clone, Copy, Debug)]
pub enum Upstream<'a> {
    /// The trainer's loss: cross-entropy of the readout scores against these labels (one per
    /// sample), with the readout and spike-count regularisers of the [`TrainConfig`].
    Labels(&'a [u8]),
    /// A caller's loss (the PyTorch bridge): its gradient on the readout scores
    /// ([`readout_scores`], `[sample][class]`), and per population (indexed by id) on the
    /// spike count of each of its neurons, `[sample][neuron]` (empty: none). The
    /// [`TrainConfig`]'s loss terms are not added and the loss statistics stay 0.
    Given {
        /// ∂L/∂score, `[sample][class]`.
        scores: &'a [f32],
        /// ∂L/∂(spike count) per population, `[sample][neuron]`.
        counts: &'a [Vec<f32>],
    },
}

impl Upstream<'_> {
    /// Samples of the batch (`classes`: the readout's size).
    fn samples(&self, classes: usize) -> usize {
        match self {
            Upstream::Labels(labels) => labels.len(),
            Upstream::Given { scores, .. } => scores.len() / classes.max(1),
        }
    }
}

/// [`gradients`] from any [`Upstream`]: statistics and the weight gradients in each
/// projection's weight layout (without the weight regulariser).
pub fn gradients_from(
    net: &Network,
    topo: &Topology,
    exec: &Execution,
    upstream: Upstream<'_>,
    cfg: &TrainConfig,
    epoch: usize,
) -> (BatchStats, Vec<Vec<f32>>) {
    let b = upstream.samples(net.populations[topo.readout].size);
    let (stats, acc) = chunk_gradients_from(
        net,
        topo,
        exec,
        upstream,
        cfg,
        epoch,
        0..b.div_ceil(GRAD_CHUNK),
        0,
    );
    (stats, to_weight_layout(net, topo, acc))
}

/// The readout scores `[sample][class]` the backward pass differentiates: the readout's
/// [`Score`] of its recorded membranes (`exec` as for [`gradients`]) × `scale`.
pub fn readout_scores(net: &Network, topo: &Topology, exec: &Execution, scale: f32) -> Vec<f32> {
    let steps = net.steps as usize;
    let r = topo.readout;
    let c = net.populations[r].size;
    let m = exec.membrane[r].as_ref().expect("membranes recorded");
    let samples = m.len() / (steps * c).max(1);
    let (mut score, mut at, mut all) = (Vec::new(), Vec::new(), Vec::with_capacity(samples * c));
    for s in 0..samples {
        let ms = &m[s * steps * c..(s + 1) * steps * c];
        sample_scores(
            ms,
            steps,
            net.populations[r].score,
            scale,
            &mut score,
            &mut at,
        );
        all.extend_from_slice(&score);
    }
    all
}

/// One sample's scores from its readout membranes `m` (`[step][class]`), and for
/// [`Score::Max`] the first step of each class's maximum.
fn sample_scores(
    m: &[f32],
    steps: usize,
    mode: Score,
    scale: f32,
    score: &mut Vec<f32>,
    at: &mut Vec<usize>,
) {
    let c = m.len() / steps.max(1);
    score.clear();
    at.clear();
    at.resize(c, 0);
    if mode == Score::Max {
        // The maximum and the first step of it, in one pass over the steps (for a scale above
        // 0, which training uses, the score is `Score::of`'s: scaling keeps the order).
        score.resize(c, f32::NEG_INFINITY);
        for t in 0..steps {
            for k in 0..c {
                let v = m[t * c + k] * scale;
                if v > score[k] {
                    score[k] = v;
                    at[k] = t;
                }
            }
        }
        return;
    }
    for k in 0..c {
        score.push(mode.of(steps, |t| m[t * c + k]) * scale);
    }
}

/// Statistics and gradients (a dense projection's in its weight layout, the others' in
/// by-source order; see [`to_weight_layout`]) of chunks `chunks` of the batch, summed over the
/// chunks in the fixed tree of [`tree_split`]. For a range of chunks that is a node of the
/// whole batch's tree (as [`rank_chunks`] cuts it), this is that subtree's sum, which another
/// process, or another piece, may combine with the others. `exec` holds the batch's samples
/// from `exec_base` on (a process's shard), `labels` the whole batch's.
#[allow(clippy::too_many_arguments)]
pub fn chunk_gradients(
    net: &Network,
    topo: &Topology,
    exec: &Execution,
    labels: &[u8],
    cfg: &TrainConfig,
    epoch: usize,
    chunks: std::ops::Range<usize>,
    exec_base: usize,
) -> (BatchStats, Vec<Vec<f32>>) {
    let upstream = Upstream::Labels(labels);
    chunk_gradients_from(net, topo, exec, upstream, cfg, epoch, chunks, exec_base)
}

/// [`chunk_gradients`] from any [`Upstream`].
#[allow(clippy::too_many_arguments)]
pub fn chunk_gradients_from(
    net: &Network,
    topo: &Topology,
    exec: &Execution,
    upstream: Upstream<'_>,
    cfg: &TrainConfig,
    epoch: usize,
    chunks: std::ops::Range<usize>,
    exec_base: usize,
) -> (BatchStats, Vec<Vec<f32>>) {
    let b = upstream.samples(net.populations[topo.readout].size);
    let steps = net.steps as usize;
    let samples = chunks.start * GRAD_CHUNK..(chunks.end * GRAD_CHUNK).min(b);
    // Phase A: per sample, the current gradients of every population, time-major.
    let sizes: Vec<usize> = net.populations.iter().map(|p| p.size).collect();
    let mut gi: Vec<Vec<f32>> = net
        .populations
        .iter()
        .map(|p| match p.kind {
            PopulationKind::Input => Vec::new(),
            _ => crate::pool::take(samples.len() * steps * p.size),
        })
        .collect();
    // One slot per (sample, population): sample k's slots are `slots[k·P..(k+1)·P]`.
    let npop = sizes.len();
    let mut slots: Vec<&mut [f32]> = Vec::with_capacity(samples.len() * npop);
    let mut parts: Vec<std::slice::ChunksMut<f32>> = gi
        .iter_mut()
        .enumerate()
        .map(|(p, g)| g.chunks_mut((steps * sizes[p]).max(1)))
        .collect();
    for _ in samples.clone() {
        for part in parts.iter_mut() {
            slots.push(part.next().unwrap_or_default());
        }
    }
    drop(parts);
    // Groups of GROUP consecutive samples walk back together where a recurrent loop's
    // products gain from it (see `group_backward`); feed-forward networks walk one by one.
    let group = if topo.recurrent { GROUP } else { 1 };
    let stats: Vec<BatchStats> = slots
        .par_chunks_mut((npop * group).max(1))
        .enumerate()
        .map_init(Vec::new, |scr, (k, slots)| {
            let s = samples.start + k * group;
            let x = s - exec_base;
            group_backward(net, topo, exec, x, (upstream, s), b, cfg, epoch, slots, scr)
        })
        .flatten_iter()
        .collect();
    // Phase B: every chunk's weight gradients, then their sum over the chunks in the fixed
    // tree, per work item in the item's own (cache-sized) scratch. Items are blocks of
    // sources, or of targets (below). A dense projection's items by sources hold near
    // ITEM_FLOATS sums (`[source][target]`):
    // each of a source's spikes adds its whole row of target gradients (one (sample, step)'s,
    // contiguous, read in order) to the source's row of sums, which stays in the core's cache;
    // the item then writes its columns of the weight layout (`[target][source]`). A sparse
    // projection's items hold about BLOCK_SYNAPSES synapses in by-source order, each spike
    // adding its targets' gradients one by one, and write their sums in place. The blocks
    // only choose which sums an item holds: every sum is the same.
    const BLOCK_SYNAPSES: usize = 4096;
    const ITEM_FLOATS: usize = 16_384;
    // A dense projection whose every source fits an item's scratch for a block of ROW_BLOCK
    // targets or more (every chunk's sums, about half a core's cache) and whose sources spike
    // together is cut by targets instead (with the others like it, into at least as many
    // items as there are threads):
    // each item then reads, of a (sample, step)'s row of target gradients, its own block once
    // for every source that spiked at that step (the row read from memory once, not once per
    // spike), and writes its rows of the weight layout.
    const ROW_BLOCK: usize = 32;
    const ROWS_SCRATCH_FLOATS: usize = 3 << 17;
    let nchunks = chunks.len();
    let mut out: Vec<Vec<f32>> = topo
        .by_source
        .iter()
        .map(|(_, syn)| crate::pool::take(syn.len()))
        .collect();
    let mut items: Vec<Item<'_>> = Vec::new();
    // Per dense projection: the sources of each of its items (the last may hold fewer).
    let mut blocks: Vec<Option<usize>> = vec![None; out.len()];
    // Worth cutting a dense projection by targets where its sources spike together: two spikes
    // or more per (sample, step) on average (the MNIST pixels at T = 30: five; at T = 100 one
    // or two, and the blocks of sources were faster).
    let together = |q: usize| {
        exec.spikes
            .get(topo.ends[q].0)
            .is_some_and(|tr| tr.len() >= 2 * tr.samples() * steps)
    };
    // The widest block of projection `q`'s targets (a multiple of 16; all of them or a
    // `split`th) whose sums of every chunk fit the scratch.
    let rows_of = |q: usize, split: usize| {
        let ns = topo.by_source[q].0.len() - 1;
        let fit = ROWS_SCRATCH_FLOATS / (ns * nchunks).max(1);
        fit.min(sizes[topo.ends[q].1] / split) / 16 * 16
    };
    // With as many projections cut by targets as threads, each item takes all of its
    // projection's targets that fit the scratch (a spike's row of gradients read in one pass:
    // sequential MNIST's twelve recurrent and readout projections 1.06x against halves); with
    // fewer, every thread a share of each (MNIST's input layer at T = 30).
    let threads = rayon::current_num_threads().max(2);
    let by_targets = (0..out.len())
        .filter(|&q| topo.dense[q] && together(q) && rows_of(q, 1) >= ROW_BLOCK)
        .count();
    let split = if by_targets >= threads { 1 } else { threads };
    for (q, acc) in out.iter_mut().enumerate() {
        let (offs, _) = &topo.by_source[q];
        let ns = offs.len() - 1;
        let mut lo = 0;
        if topo.dense[q] {
            let nt = sizes[topo.ends[q].1];
            let layout = WeightLayout {
                weights: acc.as_mut_ptr(),
                sources: ns,
                targets: nt,
            };
            let rows = rows_of(q, split);
            if rows >= ROW_BLOCK && together(q) {
                let mut t0 = 0;
                while t0 < nt {
                    let t1 = (t0 + rows).min(nt);
                    items.push((q, t0..t1, Out::Rows(layout)));
                    t0 = t1;
                }
                continue;
            }
            let block = (ITEM_FLOATS / nt.max(1)).max(1);
            blocks[q] = Some(block);
            while lo < ns {
                let hi = (lo + block).min(ns);
                items.push((q, lo..hi, Out::Columns(layout)));
                lo = hi;
            }
            continue;
        }
        let mut rest: &mut [f32] = acc;
        while lo < ns {
            let mut hi = lo + 1;
            while hi < ns && (offs[hi + 1] - offs[lo]) as usize <= BLOCK_SYNAPSES {
                hi += 1;
            }
            let len = (offs[hi] - offs[lo]) as usize;
            let (a, r) = std::mem::take(&mut rest).split_at_mut(len);
            items.push((q, lo..hi, Out::Sums(a)));
            rest = r;
            lo = hi;
        }
    }
    // A dense projection cut into several items: its source spikes grouped by item once, so
    // that each item reads its own sources' spikes instead of every spike of the chunk.
    let buckets: Vec<Option<Buckets>> = blocks
        .par_iter()
        .enumerate()
        .map(|(q, &block)| {
            let (block, ns) = (block?, topo.by_source[q].0.len() - 1);
            let trains = exec.spikes.get(topo.ends[q].0)?;
            (block < ns).then(|| Buckets::new(trains, block, ns))
        })
        .collect();
    items.into_par_iter().for_each(|(q, range, acc)| {
        let (src, tgt, d) = topo.ends[q];
        let nt = sizes[tgt];
        let len = match &acc {
            Out::Sums(a) => a.len(),
            Out::Columns(_) => range.len() * nt,
            Out::Rows(c) => range.len() * c.sources,
        };
        let mut sums = TreeStack::new(nchunks, len);
        for ci in chunks.clone() {
            let part = sums.leaf();
            if let Some(trains) = exec.spikes.get(src) {
                let first = ci * GRAD_CHUNK;
                // The chunk's samples as `exec` numbers them.
                let span = first - exec_base..(first + GRAD_CHUNK).min(b) - exec_base;
                let g = &gi[tgt][(first - samples.start) * steps * nt..];
                let shape = (steps, nt, d);
                if let Out::Rows(c) = acc {
                    let shape = (steps, nt, d, c.sources);
                    accumulate_rows(trains, span, shape, g, range.clone(), part);
                } else if let Out::Columns(_) = acc {
                    let spikes = match &buckets[q] {
                        Some(b) => Spikes::Item(b, range.start / b.block),
                        None => Spikes::All(trains),
                    };
                    accumulate_dense(&spikes, span, shape, g, range.clone(), part);
                } else {
                    let by_source = &topo.by_source[q];
                    let extra = &topo.extra[q][..];
                    accumulate(
                        trains,
                        span,
                        shape,
                        g,
                        by_source,
                        extra,
                        range.clone(),
                        part,
                    );
                }
            }
            sums.push();
        }
        let sums = sums.finish();
        match acc {
            Out::Sums(acc) => acc.copy_from_slice(&sums[..len]),
            // SAFETY: the items of a dense projection hold disjoint blocks of sources, so
            // this item is the only one writing columns `range`, and nothing reads the
            // projection's sums before every item is done.
            Out::Columns(columns) => unsafe { columns.put(range, &sums[..len]) },
            // SAFETY: the items of a dense projection cut by targets hold disjoint blocks
            // of targets, so this item is the only one writing rows `range`, and nothing
            // reads the projection's sums before every item is done.
            Out::Rows(columns) => unsafe { columns.put_rows(range, &sums[..len]) },
        }
        crate::pool::give(sums);
    });
    gi.into_iter().for_each(crate::pool::give);
    // Statistics per chunk (summed in sample order), then over the chunks in the same tree.
    let mut chunk_stats: Vec<BatchStats> = chunks
        .map(|ci| {
            let lo = ci * GRAD_CHUNK - samples.start;
            let hi = ((ci + 1) * GRAD_CHUNK).min(b) - samples.start;
            stats[lo..hi]
                .iter()
                .cloned()
                .fold(BatchStats::default(), |a, b| a + b)
        })
        .collect();
    tree(
        &mut chunk_stats,
        &|a: &mut BatchStats, b: &mut BatchStats| *a = std::mem::take(a) + std::mem::take(b),
    );
    (chunk_stats.into_iter().next().unwrap_or_default(), out)
}

/// A dense projection's source spikes of every sample of a run, grouped by the phase-B item
/// (block of `block` consecutive sources) each belongs to; within a group in their order in
/// the run (by step, then neuron), so each source's spikes are added in the same order as
/// from the whole list.
struct Buckets {
    block: usize,
    items: usize,
    events: Vec<SpikeEvent>,
    /// `samples · items + 1` offsets: sample `s`'s spikes of item `i` are
    /// `events[offsets[s·items + i]..offsets[s·items + i + 1]]`.
    offsets: Vec<u32>,
}

impl Buckets {
    /// The spikes of `trains` (of `sources` sources) grouped by blocks of `block` sources.
    fn new(trains: &SpikeTrains, block: usize, sources: usize) -> Self {
        let n = trains.samples();
        let items = sources.div_ceil(block.max(1));
        let item = |e: &SpikeEvent| {
            debug_assert!((e.neuron as usize) < sources, "a spike of a known source");
            e.neuron as usize / block
        };
        let mut offsets = vec![0u32; n * items + 1];
        for s in 0..n {
            for e in trains.sample(s) {
                offsets[s * items + item(e) + 1] += 1;
            }
        }
        for k in 0..n * items {
            offsets[k + 1] += offsets[k];
        }
        let mut fill = offsets.clone();
        let mut events = vec![SpikeEvent { step: 0, neuron: 0 }; trains.events.len()];
        for s in 0..n {
            for e in trains.sample(s) {
                let at = &mut fill[s * items + item(e)];
                events[*at as usize] = *e;
                *at += 1;
            }
        }
        Buckets {
            block,
            items,
            events,
            offsets,
        }
    }
}

/// The spikes a phase-B item of a dense projection reads.
enum Spikes<'a> {
    /// Every spike of its source population.
    All(&'a SpikeTrains),
    /// Those of one item (the block's index).
    Item(&'a Buckets, usize),
}

impl Spikes<'_> {
    /// Sample `s`'s spikes (all, or the item's).
    fn sample(&self, s: usize) -> &[SpikeEvent] {
        match *self {
            Spikes::All(t) => t.sample(s),
            Spikes::Item(b, i) => {
                let k = s * b.items + i;
                &b.events[b.offsets[k] as usize..b.offsets[k + 1] as usize]
            }
        }
    }
}

/// A work item of phase B: a projection, a block of its sources (or of its targets, for a
/// dense projection cut by targets), and where the block's sums go.
type Item<'a> = (usize, std::ops::Range<usize>, Out<'a>);

/// Where a phase-B item's sums go.
enum Out<'a> {
    /// A sparse projection's: the item's own slice of the by-source order.
    Sums(&'a mut [f32]),
    /// A dense projection's: the item's columns (its sources) of the weight layout.
    Columns(WeightLayout),
    /// A dense projection's cut by targets: the item's rows (its targets) of the weight
    /// layout.
    Rows(WeightLayout),
}

/// A dense projection's gradients in its weight layout (`[target][source]`), written by the
/// phase-B items, each into the columns of its own block of sources ([`WeightLayout::put`])
/// or the rows of its own block of targets ([`WeightLayout::put_rows`]). A pointer, since the
/// columns of several items interleave in every row.
#[derive(Clone, Copy)]
struct WeightLayout {
    weights: *mut f32,
    sources: usize,
    targets: usize,
}

// SAFETY: the items that share a `WeightLayout` write disjoint columns or disjoint rows (see
// `WeightLayout::put`, `WeightLayout::put_rows`; one projection's items are cut one way), and
// the buffer outlives them (the items run to completion inside `chunk_gradients_from`).
unsafe impl Send for WeightLayout {}

impl WeightLayout {
    /// Write `sums` (`[source of sources][target]`) into columns `sources` of every row, a
    /// row (target) at a time so that each row's piece is one run of stores.
    ///
    /// # Safety
    /// No other thread reads or writes columns `sources` meanwhile, and `sources` lies within
    /// the layout.
    unsafe fn put(&self, sources: std::ops::Range<usize>, sums: &[f32]) {
        let width = sources.len();
        for t in 0..self.targets {
            // SAFETY: row `t`'s columns `sources` lie within the `targets × sources` layout
            // (the caller's promise on `sources`), and only this item touches them.
            let row = unsafe {
                std::slice::from_raw_parts_mut(
                    self.weights.add(t * self.sources + sources.start),
                    width,
                )
            };
            for (x, &y) in row.iter_mut().zip(sums[t..].iter().step_by(self.targets)) {
                *x = y;
            }
        }
    }

    /// Write `sums` (`[source][target of targets]`) into rows `targets`, each row's every
    /// column.
    ///
    /// # Safety
    /// No other thread reads or writes rows `targets` meanwhile, and `targets` lies within
    /// the layout.
    ///
    /// Sixteen sources at a time: their rows of `sums` stay in the core's L1 cache while every
    /// target's piece of them is written (row by row, each row read from every source's row
    /// of sums, which do not fit it: the MNIST training step at T = 30 spent 3.3 % of its
    /// time here, 2.4 % so).
    unsafe fn put_rows(&self, targets: std::ops::Range<usize>, sums: &[f32]) {
        const TILE: usize = 16;
        let width = targets.len();
        for s0 in (0..self.sources).step_by(TILE) {
            let s1 = (s0 + TILE).min(self.sources);
            for (k, t) in targets.clone().enumerate() {
                // SAFETY: row `t`'s columns `s0..s1` lie within the `targets × sources`
                // layout (the caller's promise on `targets`), and only this item touches them.
                let piece = unsafe {
                    std::slice::from_raw_parts_mut(self.weights.add(t * self.sources + s0), s1 - s0)
                };
                for (x, &y) in piece
                    .iter_mut()
                    .zip(sums[s0 * width + k..].iter().step_by(width))
                {
                    *x = y;
                }
            }
        }
    }
}

widest! {
    /// One work item of phase B for a dense projection: into `acc` (`[source of sources]
    /// [target]`), for every spike of those sources in samples `span`, the row of current
    /// gradients `g` (`[sample of span][step][target]`) `d` steps later; `shape` is (steps,
    /// targets, d).
    fn accumulate_dense(
        spikes: &Spikes<'_>,
        span: std::ops::Range<usize>,
        shape: (usize, usize, usize),
        g: &[f32],
        sources: std::ops::Range<usize>,
        acc: &mut [f32],
    ) {
        let (steps, nt, d) = shape;
        for (k, s) in span.enumerate() {
            let g = &g[k * steps * nt..(k + 1) * steps * nt];
            for e in spikes.sample(s) {
                let t = e.step as usize + d;
                let pre = e.neuron as usize;
                // (An item's own spikes are all of `sources`; every spike is checked alike.)
                if t >= steps || !sources.contains(&pre) {
                    continue;
                }
                let row = pre - sources.start;
                let git = &g[t * nt..(t + 1) * nt];
                for (x, &y) in acc[row * nt..(row + 1) * nt].iter_mut().zip(git) {
                    *x += y;
                }
            }
        }
    }
}

widest! {
    /// One work item of phase B for a dense projection cut by targets: into `acc` (`[source]
    /// [target of targets]`), for every spike in samples `span`, its block `targets` of the
    /// row of current gradients `g` (`[sample of span][step][target]`) `d` steps later;
    /// `shape` is (steps, targets, d, sources). Each source's sums add its spikes in the
    /// run's order, as [`accumulate_dense`] does.
    fn accumulate_rows(
        spikes: &SpikeTrains,
        span: std::ops::Range<usize>,
        shape: (usize, usize, usize, usize),
        g: &[f32],
        targets: std::ops::Range<usize>,
        acc: &mut [f32],
    ) {
        let (steps, nt, d, ns) = shape;
        let w = targets.len();
        for (k, s) in span.enumerate() {
            let g = &g[k * steps * nt..(k + 1) * steps * nt];
            for e in spikes.sample(s) {
                let t = e.step as usize + d;
                let pre = e.neuron as usize;
                if t >= steps || pre >= ns {
                    continue;
                }
                let git = &g[t * nt + targets.start..t * nt + targets.end];
                for (x, &y) in acc[pre * w..(pre + 1) * w].iter_mut().zip(git) {
                    *x += y;
                }
            }
        }
    }
}

widest! {
    /// One work item of phase B for a sparse projection: into `acc` (the by-source gradients
    /// of sources `range`), for every spike of those sources in samples `span`, the target's
    /// current gradient `g` (`[sample of span][step][target]`) `d` steps later (plus, per
    /// synapse, `extra` steps where it is not empty); `shape` is (steps, targets, d).
    fn accumulate(
        trains: &SpikeTrains,
        span: std::ops::Range<usize>,
        shape: (usize, usize, usize),
        g: &[f32],
        by_source: &BySource,
        extra: &[u32],
        range: std::ops::Range<usize>,
        acc: &mut [f32],
    ) {
        let (steps, nt, d) = shape;
        let (offs, syn) = by_source;
        let base = offs[range.start] as usize;
        for (k, s) in span.enumerate() {
            let g = &g[k * steps * nt..(k + 1) * steps * nt];
            for e in trains.sample(s) {
                let pre = e.neuron as usize;
                let t = e.step as usize + d;
                if t >= steps || !range.contains(&pre) {
                    continue;
                }
                let (a, z) = (offs[pre] as usize - base, offs[pre + 1] as usize - base);
                if extra.is_empty() {
                    let git = &g[t * nt..(t + 1) * nt];
                    for (x, &(post, _)) in acc[a..z].iter_mut().zip(&syn[a + base..z + base]) {
                        *x += git[post as usize];
                    }
                } else {
                    let synapses = syn[a + base..z + base].iter().zip(&extra[a + base..z + base]);
                    for (x, (&(post, _), &more)) in acc[a..z].iter_mut().zip(synapses) {
                        let t = t + more as usize;
                        if t < steps {
                            *x += g[t * nt + post as usize];
                        }
                    }
                }
            }
        }
    }
}

/// Where the fixed reduction tree splits `n` chunks: at the largest power of two below `n`
/// (half of `n` if it is one), so that a block of chunks aligned to a power of two is a
/// subtree (what one process may sum on its own).
pub fn tree_split(n: usize) -> usize {
    if n.is_power_of_two() {
        n / 2
    } else {
        1 << (usize::BITS - 1 - n.leading_zeros())
    }
}

/// Sum `items` into `items[0]` in the fixed tree of [`tree_split`]: `add(a, b)` adds `b` to
/// `a`.
pub fn tree<T>(items: &mut [T], add: &impl Fn(&mut T, &mut T)) {
    let n = items.len();
    if n <= 1 {
        return;
    }
    let (l, r) = items.split_at_mut(tree_split(n));
    tree(l, add);
    tree(r, add);
    add(&mut l[0], &mut r[0]);
}

/// The fixed tree of [`tree_split`] summed as its leaves come, one after another, in a few
/// parts instead of one per leaf: the sums of the complete subtrees so far, on a stack (a
/// binary counter: a leaf is pushed, and the top two are added while they hold as many leaves
/// each), and at the end the stack added from its top down. The tree splits `n` leaves at the
/// largest power of two below `n`, i.e. by the binary digits of `n` from the highest, so these
/// are its additions, each of the same two operands as [`tree`]'s: the sums are the same bit
/// for bit, while only the parts of the stack are live (a leaf's sums are added into them while
/// they are still in the cache, instead of every leaf's being kept, zeroed and read back).
struct TreeStack {
    /// The parts, `len` values each: as many in use as `leaves` has entries.
    buf: Vec<f32>,
    /// Leaves summed in each part in use.
    leaves: Vec<usize>,
    len: usize,
}

impl TreeStack {
    /// Room for the sums of a tree over `n` leaves of `len` values (in `buf`, taken from the
    /// pool; [`TreeStack::finish`] returns it, for the caller to give back).
    fn new(n: usize, len: usize) -> Self {
        // At most one part per binary digit of `n`, and the leaf being summed.
        let parts = (usize::BITS - n.leading_zeros()) as usize + 1;
        TreeStack {
            buf: crate::pool::take(parts * len),
            leaves: Vec::with_capacity(parts),
            len,
        }
    }

    /// The next leaf's part, zeroed, for the caller to sum into; then [`TreeStack::push`].
    fn leaf(&mut self) -> &mut [f32] {
        let at = self.leaves.len() * self.len;
        let part = &mut self.buf[at..at + self.len];
        part.fill(0.0);
        part
    }

    /// The leaf just summed into [`TreeStack::leaf`]'s part is complete: onto the stack, and
    /// complete subtrees of equal size added.
    fn push(&mut self) {
        self.leaves.push(1);
        while let [.., a, b] = self.leaves[..] {
            if a != b {
                break;
            }
            self.merge();
        }
    }

    /// The top part added into the one below it.
    fn merge(&mut self) {
        let k = self.leaves.len() - 1;
        let (below, top) = self.buf.split_at_mut(k * self.len);
        add_into(&mut below[(k - 1) * self.len..], &top[..self.len]);
        let b = self.leaves.pop().unwrap_or(0);
        self.leaves[k - 1] += b;
    }

    /// The whole tree's sums (the first `len` values of the returned buffer; zeros for no
    /// leaves), for the caller to give back to the pool.
    fn finish(mut self) -> Vec<f32> {
        while self.leaves.len() > 1 {
            self.merge();
        }
        if self.leaves.is_empty() {
            self.buf[..self.len].fill(0.0);
        }
        self.buf
    }
}

/// The chunks of a batch's `n` chunks each of `size` processes owns: the fixed reduction tree
/// ([`tree_split`]) cut into `size` subtrees (half the processes take each half of a tree, the
/// odd one out the right); with fewer chunks than processes some own none.
pub fn rank_chunks(n: usize, size: usize) -> Vec<std::ops::Range<usize>> {
    fn cut(lo: usize, hi: usize, ranks: usize, out: &mut Vec<std::ops::Range<usize>>) {
        if ranks <= 1 {
            out.push(lo..hi);
            return;
        }
        let mid = if hi - lo <= 1 {
            hi
        } else {
            lo + tree_split(hi - lo)
        };
        cut(lo, mid, ranks / 2, out);
        cut(mid, hi, ranks - ranks / 2, out);
    }
    let mut out = Vec::with_capacity(size);
    cut(0, n, size.max(1), &mut out);
    out
}

/// The sums of the subtrees [`rank_chunks`] cut a tree into (`parts[r]`: part `r`'s, `None`
/// where it owns no chunk), combined in the tree's order: the halves of `parts` are the
/// halves `rank_chunks` gives its parts, so the result is the whole tree's sum, bit for bit.
pub fn join_ranks<T>(parts: &mut [Option<T>], add: &impl Fn(T, T) -> T) -> Option<T> {
    if parts.len() <= 1 {
        return parts.first_mut().and_then(Option::take);
    }
    let (l, r) = parts.split_at_mut(parts.len() / 2);
    match (join_ranks(l, add), join_ranks(r, add)) {
        (Some(a), Some(b)) => Some(add(a, b)),
        (a, b) => a.or(b),
    }
}

/// Every process's subtree sums (`part`: this process's statistics and gradients from
/// [`chunk_gradients`], `None` if it owns no chunk), exchanged through `comm` and combined in
/// the order of the fixed tree, so every process gets what one process computes alone.
pub fn combine_ranks(
    comm: &dyn crate::dist::comm::Communicator,
    topo: &Topology,
    part: Option<(BatchStats, Vec<Vec<f32>>)>,
) -> (BatchStats, Vec<Vec<f32>>) {
    // One process owns the whole tree: nothing to exchange or combine.
    if comm.size() == 1 {
        if let Some(p) = part {
            return p;
        }
    }
    let lens: Vec<usize> = topo.by_source.iter().map(|(_, syn)| syn.len()).collect();
    let (flat, stats) = match &part {
        Some((st, acc)) => (acc.concat(), st.to_wire()),
        None => (Vec::new(), Vec::new()),
    };
    drop(part);
    let all = comm.all_gather(&flat);
    let all_stats = comm.all_gather_f64(&stats);
    let parts: Vec<Option<(BatchStats, Vec<f32>)>> = all
        .into_iter()
        .zip(all_stats)
        .map(|(g, s)| (!s.is_empty()).then(|| (BatchStats::from_wire(&s), g)))
        .collect();
    let mut parts = parts;
    let (st, flat) = join_ranks(&mut parts, &|(sa, mut a), (sb, b)| {
        add_into(&mut a, &b);
        (sa + sb, a)
    })
    .unwrap_or_default();
    let mut acc = Vec::with_capacity(lens.len());
    let mut at = 0;
    for len in lens {
        let mut v = crate::pool::take(len);
        if flat.len() >= at + len {
            v.copy_from_slice(&flat[at..at + len]);
        } else {
            v.fill(0.0);
        }
        acc.push(v);
        at += len;
    }
    (st, acc)
}

/// Two parts' statistics and gradients (per projection, as [`chunk_gradients`] gives them)
/// added, `b`'s buffers back to the pool.
pub fn add_parts(
    (sa, mut a): (BatchStats, Vec<Vec<f32>>),
    (sb, b): (BatchStats, Vec<Vec<f32>>),
) -> (BatchStats, Vec<Vec<f32>>) {
    for (x, y) in a.iter_mut().zip(b) {
        add_into(x, &y);
        crate::pool::give(y);
    }
    (sa + sb, a)
}

widest! {
    /// `a += b`, element by element.
    fn add_into(a: &mut [f32], b: &[f32]) {
        for (x, &y) in a.iter_mut().zip(b) {
            *x += y;
        }
    }
}

/// Gradients as [`chunk_gradients`] sums them (a dense projection's in its weight layout
/// already, the others' in by-source order) to each projection's weight layout; the synapses
/// of a convolution that share a weight add up.
pub fn to_weight_layout(net: &Network, topo: &Topology, mut acc: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    acc.par_iter_mut()
        .zip(&net.projections)
        .enumerate()
        .filter(|(q, _)| !topo.dense[*q])
        .for_each(|(q, (a, pr))| {
            let mut g = crate::pool::take_zeroed(pr.weights.len());
            for (x, &(_, k)) in a.iter().zip(&topo.by_source[q].1) {
                g[k as usize] += x;
            }
            crate::pool::give(std::mem::replace(a, g));
        });
    acc
}

widest! {
    /// One step back through time for a spiking population: from the gradients `gv` on the
    /// membranes and `carry` on the synaptic currents one step later, the recorded (gradient
    /// on the spikes, spike raster) of this step and its membranes, which `git` holds on
    /// entry, the current gradient of this step into `git`; `gv` and `carry` move one step
    /// back. (The caller writes a sample's membranes into its rows in one pass forward through
    /// memory before the walk back, so that a plain loop, not this recursion, takes the stores
    /// and loads that miss the cache.) `k` is (k_mem, a_syn, v_th,
    /// surrogate alpha). With `membrane_first` (hxtorch's order: the membrane integrates the
    /// previous step's current) a step's current reaches the loss through the next step's
    /// membrane, so `carry` holds a·g_i(t+1) + k·g_v(t+1) and is this step's current gradient;
    /// otherwise it holds a·g_i(t+1) and this step's membrane adds k·g_v(t).
    fn lif_step_back(
        git: &mut [f32],
        gv: &mut [f32],
        carry: &mut [f32],
        recorded: (&[f32], &[u8]),
        k: (f32, f32, f32, f32),
        membrane_first: bool,
    ) {
        let (k_mem, a_syn, v_th, alpha) = k;
        let n = git.len();
        let (gv, carry) = (&mut gv[..n], &mut carry[..n]);
        let (gst, ras) = (&recorded.0[..n], &recorded.1[..n]);
        for i in 0..n {
            // After a spike the reset cuts the membrane's gradient: `gv` masked to +0.0 (a
            // bit mask, not a branch, so that the loop vectorises).
            let keep = u32::from(ras[i] == 0).wrapping_neg();
            let x = alpha * (git[i] - v_th).abs() + 1.0;
            let gpre = f32::from_bits(gv[i].to_bits() & keep) + gst[i] / (x * x);
            let gcur = if membrane_first {
                carry[i]
            } else {
                carry[i] + k_mem * gpre
            };
            git[i] = gcur;
            gv[i] = (1.0 - k_mem) * gpre;
            carry[i] = if membrane_first {
                a_syn * gcur + k_mem * gpre
            } else {
                a_syn * gcur
            };
        }
    }
}

widest! {
    /// [`lif_step_back`] for a non-spiking population (a leaky integrator): `direct` is the
    /// loss's gradient on this step's membranes (the readout's). `k` is (k_mem, a_syn).
    fn li_step_back(
        git: &mut [f32],
        gv: &mut [f32],
        carry: &mut [f32],
        direct: Option<&[f32]>,
        k: (f32, f32),
        membrane_first: bool,
    ) {
        let (k_mem, a_syn) = k;
        for (i, ((g, v), c)) in git.iter_mut().zip(gv.iter_mut()).zip(carry.iter_mut()).enumerate() {
            let mut gpre = *v;
            if let Some(d) = direct {
                gpre += d[i];
            }
            let gcur = if membrane_first { *c } else { *c + k_mem * gpre };
            *g = gcur;
            *v = (1.0 - k_mem) * gpre;
            *c = if membrane_first {
                a_syn * gcur + k_mem * gpre
            } else {
                a_syn * gcur
            };
        }
    }
}

widest! {
    /// `dst += wᵀ·g` for dense weights `w` (`[target][source]`): the gradient on one step's
    /// source spikes from the targets' current gradients `g`.
    fn transpose_product(dst: &mut [f32], w: &[f32], g: &[f32]) {
        let ns = dst.len();
        if ns == 0 {
            return;
        }
        let rows = (w.len() / ns).min(g.len());
        // A block of columns at a time, its sums in registers while every row passes (each
        // element adds the rows one after another in row order: the same sums, bit for bit,
        // as one row at a time): WIDE_COLUMNS with AVX-512 (eight chains of additions for the
        // processor to overlap; with AVX2 they would fill its 16 registers: half as many),
        // then blocks of one vector.
        let mut at = 0;
        if crate::simd::wide_registers() {
            while at + WIDE_COLUMNS <= ns {
                columns_pass::<WIDE_COLUMNS>(dst, w, g, rows, at);
                at += WIDE_COLUMNS;
            }
        }
        while at + WIDE_COLUMNS / 2 <= ns {
            columns_pass::<{ WIDE_COLUMNS / 2 }>(dst, w, g, rows, at);
            at += WIDE_COLUMNS / 2;
        }
        while at + BLOCK_LANES <= ns {
            columns_pass::<BLOCK_LANES>(dst, w, g, rows, at);
            at += BLOCK_LANES;
        }
        rest_columns(dst, w, g, rows, at);
    }
}

/// Columns [`transpose_product`] keeps in registers at a time with AVX-512 (eight vectors).
const WIDE_COLUMNS: usize = 128;

/// Columns `at..at + N` of [`transpose_product`]: their sums held while the `rows` rows of
/// `w` pass, in row order.
#[inline(always)]
fn columns_pass<const N: usize>(dst: &mut [f32], w: &[f32], g: &[f32], rows: usize, at: usize) {
    let ns = dst.len();
    let mut sums: [f32; N] = dst[at..at + N].try_into().expect("N columns");
    for (row, &c) in w.chunks_exact(ns).zip(&g[..rows]) {
        let row: &[f32; N] = row[at..at + N].try_into().expect("N columns");
        for (s, &x) in sums.iter_mut().zip(row) {
            *s += x * c;
        }
    }
    dst[at..at + N].copy_from_slice(&sums);
}

/// `dst[i] += Σ_r w[r][i]·g[r]` for the columns `i` from `from` on, one at a time, the rows in
/// order (the columns the blocked passes leave).
#[inline(always)]
fn rest_columns(dst: &mut [f32], w: &[f32], g: &[f32], rows: usize, from: usize) {
    let ns = dst.len();
    for (i, x) in dst.iter_mut().enumerate().skip(from) {
        for (row, &c) in w.chunks_exact(ns).zip(&g[..rows]) {
            *x += row[i] * c;
        }
    }
}

/// [`transpose_product`] for several samples: `dst += wᵀ·g` for every pair (`dst`, `g`).
/// For a full group ([`GROUP`] pairs) the sums of 64 columns (with AVX-512,
/// [`crate::simd::wide_registers`]; else 16) of every pair stay in registers while the weight
/// rows pass, each block of a row read once for the group (a small matrix–matrix product); a
/// smaller group takes [`transpose_product`] pair by pair. Either way every `dst` element
/// adds the rows one after another in row order: the same sums, bit for bit, as
/// [`transpose_product`].
fn transpose_product_group(w: &[f32], pairs: &mut [(&mut [f32], &[f32])]) {
    transpose_product_blocks(w, pairs, crate::simd::wide_registers());
}

widest! {
    /// [`transpose_product_group`], [`WIDE_BLOCKS`] blocks of 16 columns a pass where `wide`
    /// (else one).
    fn transpose_product_blocks(w: &[f32], pairs: &mut [(&mut [f32], &[f32])], wide: bool) {
        const LANES: usize = BLOCK_LANES;
        let ns = pairs.first().map_or(0, |p| p.0.len());
        let full = pairs.len() == GROUP && ns > 0 && pairs.iter().all(|p| p.0.len() == ns);
        if !full {
            for (dst, g) in pairs.iter_mut() {
                transpose_product(dst, w, g);
            }
            return;
        }
        let [(d0, g0), (d1, g1), (d2, g2), (d3, g3)] = pairs else {
            unreachable!("a full group has GROUP = 4 pairs")
        };
        let rows = (w.len() / ns).min(g0.len()).min(g1.len()).min(g2.len()).min(g3.len());
        let (g0, g1, g2, g3) = (&g0[..rows], &g1[..rows], &g2[..rows], &g3[..rows]);
        let w = &w[..rows * ns];
        let full = ns / LANES * LANES;
        // `wide` (AVX-512): four blocks of columns a pass where there are four, sixteen sums
        // in registers (of 32), sixteen chains of additions for the processor to overlap and
        // each coefficient's broadcast used four times (with four sums, sequential MNIST's
        // training waited on each addition's latency and spent 42 % of its time here; two
        // blocks a pass made it 1.09-1.15x faster, four 1.06-1.21x more; three, five and six
        // were no faster than two). With AVX2 a block's four sums are eight registers
        // already, and sixteen spill (the same epoch ~15 % slower with two).
        let pass = WIDE_BLOCKS * LANES;
        let wide_end = if wide { full / pass * pass } else { 0 };
        let mut d = [&mut **d0, &mut **d1, &mut **d2, &mut **d3];
        let g = [g0, g1, g2, g3];
        for at in (0..wide_end).step_by(pass) {
            blocks_pass::<WIDE_BLOCKS>(w, ns, at, &mut d, g);
        }
        for at in (wide_end..full).step_by(LANES) {
            blocks_pass::<1>(w, ns, at, &mut d, g);
        }
        for (dst, g) in d.into_iter().zip(g) {
            rest_columns(dst, w, g, rows, full);
        }
    }
}

/// Columns in a block of [`transpose_product_blocks`] (16 lanes of f32: one AVX-512 register).
const BLOCK_LANES: usize = 16;

/// Blocks of [`BLOCK_LANES`] columns a pass of [`transpose_product_blocks`] takes with
/// AVX-512.
const WIDE_BLOCKS: usize = 4;

/// Columns `at..at + B·16` of the four pairs of a full group ([`transpose_product_blocks`]):
/// their sums held in registers (`B` × 4 vectors of 16 lanes) while the rows of `w` pass,
/// each row's blocks read once for the four; every element adds the rows in row order.
#[inline(always)]
fn blocks_pass<const B: usize>(
    w: &[f32],
    ns: usize,
    at: usize,
    d: &mut [&mut [f32]; GROUP],
    g: [&[f32]; GROUP],
) {
    const LANES: usize = BLOCK_LANES;
    let block = |x: &[f32], at: usize| -> [f32; LANES] {
        x[at..at + LANES].try_into().expect("a block of LANES")
    };
    let mut sums = [[[0f32; LANES]; GROUP]; B];
    for (b, s) in sums.iter_mut().enumerate() {
        for (k, s) in s.iter_mut().enumerate() {
            *s = block(d[k], at + b * LANES);
        }
    }
    let coef = g[0].iter().zip(g[1]).zip(g[2]).zip(g[3]);
    for (row, (((&c0, &c1), &c2), &c3)) in w.chunks_exact(ns).zip(coef) {
        let c = [c0, c1, c2, c3];
        // The row's B blocks as one slice (one bounds check a row, not one a block).
        let (blocks, _) = row[at..at + B * LANES].as_chunks::<LANES>();
        for (s, wr) in sums.iter_mut().zip(blocks) {
            for (s, &c) in s.iter_mut().zip(&c) {
                for l in 0..LANES {
                    s[l] += wr[l] * c;
                }
            }
        }
    }
    for (b, s) in sums.iter().enumerate() {
        for (k, s) in s.iter().enumerate() {
            d[k][at + b * LANES..at + (b + 1) * LANES].copy_from_slice(s);
        }
    }
}

/// Samples whose backward passes walk the components together: a recurrent projection's
/// weights are then read once per step for the group ([`transpose_product_group`]).
const GROUP: usize = 4;

/// The first step of sample `s` (as `exec` numbers it) at which a spike of any source reaches
/// the readout (`net.steps` if none does).
fn first_arrival(net: &Network, topo: &Topology, exec: &Execution, s: usize) -> usize {
    let steps = net.steps as usize;
    let mut first = steps;
    for &(src, tgt, d) in &topo.ends {
        if tgt != topo.readout {
            continue;
        }
        if let Some(tr) = exec.spikes.get(src) {
            for e in tr.sample(s) {
                first = first.min(e.step as usize + d);
            }
        }
    }
    first
}

/// Per-thread buffers of the per-sample backward, reused across samples and batches.
#[derive(Default)]
struct Scratch {
    score: Vec<f32>,
    at: Vec<usize>,
    row: Vec<f32>,
    gs: Vec<Vec<f32>>,
    gvd: Vec<f32>,
    /// Per member of the component being walked back: its raster, membrane and current
    /// gradients.
    raster: Vec<Vec<u8>>,
    count: Vec<f32>,
    gv: Vec<Vec<f32>>,
    carry: Vec<Vec<f32>>,
}

widest! {
/// One sample's loss and statistics, into `scr` the direct gradient on the readout's
/// membranes (`gvd`) and the regulariser's (or the caller's) gradients on the spikes (`gs`),
/// where [`group_backward`] starts the walk back.
fn sample_loss(
    net: &Network,
    topo: &Topology,
    exec: &Execution,
    s: usize,
    upstream: (Upstream<'_>, usize),
    batch: usize,
    cfg: &TrainConfig,
    epoch: usize,
    scr: &mut Scratch,
) -> BatchStats {
    let steps = net.steps as usize;
    let bf = batch as f32;
    let npop = net.populations.len();
    scr.gs.resize_with(npop, Vec::new);
    let mut stats = BatchStats {
        samples: 1,
        ..Default::default()
    };
    // Loss on the readout: direct gradient on its membrane at the steps its score reads.
    let r = topo.readout;
    let c = net.populations[r].size;
    let m =
        &exec.membrane[r].as_ref().expect("membranes recorded")[s * steps * c..(s + 1) * steps * c];
    let mode = net.populations[r].score;
    let (score, at) = (&mut scr.score, &mut scr.at);
    sample_scores(m, steps, mode, cfg.readout_scale, score, at);
    // The sample's label under the trainer's loss, its row of the given gradients otherwise.
    let (upstream, sb) = upstream;
    let label = match upstream {
        Upstream::Labels(labels) => labels[sb],
        Upstream::Given { .. } => 0,
    };
    let lse = log_sum_exp(score);
    if let Upstream::Labels(_) = upstream {
        stats.loss += (lse - score[label as usize]) as f64;
        stats.correct += usize::from(argmax(score) == label as usize);
    }
    scr.gvd.clear();
    scr.gvd.resize(steps * c, 0.0);
    // The first step at which a spike reaches the readout (`steps`: none does).
    let first_input = if mode == Score::Max && cfg.revive_silent_classes {
        first_arrival(net, topo, exec, s)
    } else {
        steps
    };
    for k in 0..c {
        let d = match upstream {
            Upstream::Labels(_) => {
                let p = (score[k] - lse).exp();
                let mut d = (p - f32::from(k == label as usize)) / bf;
                d += cfg.reg_readout * 4.0 * score[k].powi(3) / (bf * c as f32);
                stats.loss += (cfg.reg_readout * score[k].powi(4) / c as f32) as f64;
                d
            }
            Upstream::Given { scores, .. } => scores[sb * c + k],
        };
        match mode {
            // A maximum before the first input does not depend on the weights: with
            // `revive_silent_classes`, where the loss asks the score to rise, the gradient of
            // the mean from that input on instead. Where it asks it to fall, none: the score
            // cannot fall below the start, and pushing the trace further down would go on
            // without end.
            Score::Max if at[k] < first_input && first_input < steps && d < 0.0 => {
                let span = (steps - first_input) as f32;
                for t in first_input..steps {
                    scr.gvd[t * c + k] += cfg.readout_scale * d / span;
                }
            }
            Score::Max => scr.gvd[at[k] * c + k] += cfg.readout_scale * d,
            Score::Last { steps: last } => {
                let last = (last as usize).clamp(1, steps);
                for t in steps - last..steps {
                    scr.gvd[t * c + k] += cfg.readout_scale * d / last as f32;
                }
            }
            Score::Sum => {
                for t in 0..steps {
                    scr.gvd[t * c + k] += cfg.readout_scale * d;
                }
            }
        }
    }
    // Gradients on spikes: start with the spike-count regulariser.
    let lam = cfg.reg_spikes * cfg.reg_spikes_decay.powi(epoch as i32);
    for &p in &topo.order {
        let pop = &net.populations[p];
        let gs = &mut scr.gs[p];
        gs.clear();
        if pop.kind != PopulationKind::Lif {
            continue;
        }
        let n = pop.size;
        scr.count.clear();
        scr.count.resize(n, 0.0);
        if let Some(tr) = exec.spikes.get(p) {
            for e in tr.sample(s) {
                scr.count[e.neuron as usize] += 1.0;
            }
        }
        stats.hidden_spikes += scr.count.iter().sum::<f32>() as f64;
        let norm = bf * n as f32;
        let row = &mut scr.row;
        row.clear();
        row.resize(n, 0.0);
        let mut any = false;
        match upstream {
            Upstream::Labels(_) => {
                for (x, &k) in row.iter_mut().zip(&scr.count) {
                    stats.loss += (lam * k.powi(4) / n as f32) as f64;
                    *x = lam * 4.0 * k.powi(3) / norm;
                    any |= *x != 0.0;
                }
            }
            Upstream::Given { counts, .. } => {
                if let Some(given) = counts.get(p).filter(|g| !g.is_empty()) {
                    for (x, &g) in row.iter_mut().zip(&given[sb * n..(sb + 1) * n]) {
                        *x = g;
                        any |= g != 0.0;
                    }
                }
            }
        }
        // Every step starts from the row (or zeros): `x + 0.0`, as adding the row to zeros
        // gave (a −0 becomes +0), written once instead of zeros first and the row over them.
        if any {
            for x in row.iter_mut() {
                *x += 0.0;
            }
            for _ in 0..steps {
                gs.extend_from_slice(row);
            }
        } else {
            gs.resize(steps * n, 0.0);
        }
    }
    stats
}
}

widest! {
/// The samples of one group (`x0`, `x0` + 1, … as `exec` numbers them; `upstream`'s index is
/// the first's in the batch): their losses and statistics, and the current gradient
/// `gi[g·P + p]` (`[step][neuron]`) of every non-input population `p` of sample `g` of the
/// group (P populations). Each sample's arithmetic is that of a walk on its own; the group
/// shares the reading of the weights.
fn group_backward<'a>(
    net: &Network,
    topo: &Topology,
    exec: &Execution,
    x0: usize,
    upstream: (Upstream<'_>, usize),
    batch: usize,
    cfg: &TrainConfig,
    epoch: usize,
    gi: &mut [&'a mut [f32]],
    scrs: &mut Vec<Scratch>,
) -> Vec<BatchStats> {
    let steps = net.steps as usize;
    let npop = net.populations.len().max(1);
    let n = gi.len() / npop;
    assert!(n <= GROUP, "a group of {n} samples, at most {GROUP}");
    scrs.resize_with(n.max(scrs.len()), Scratch::default);
    let scrs = &mut scrs[..n];
    let (up, sb) = upstream;
    let stats = scrs
        .iter_mut()
        .enumerate()
        .map(|(g, scr)| {
            sample_loss(net, topo, exec, x0 + g, (up, sb + g), batch, cfg, epoch, scr)
        })
        .collect();
    let r = topo.readout;
    // Backward through time, targets before sources: a component's members together, step by
    // step (one member for a feed-forward population).
    for comp in topo.comps.iter().rev() {
        let m = comp.len();
        for (g, scr) in scrs.iter_mut().enumerate() {
            for v in [&mut scr.gv, &mut scr.carry] {
                v.resize_with(m.max(v.len()), Vec::new);
            }
            scr.raster.resize_with(m.max(scr.raster.len()), Vec::new);
            for (j, &p) in comp.iter().enumerate() {
                let size = net.populations[p].size;
                for v in [&mut scr.gv[j], &mut scr.carry[j]] {
                    v.clear();
                    v.resize(size, 0.0);
                }
                let raster = &mut scr.raster[j];
                raster.clear();
                if net.populations[p].kind == PopulationKind::Lif {
                    raster.resize(steps * size, 0);
                    if let Some(tr) = exec.spikes.get(p) {
                        for e in tr.sample(x0 + g) {
                            raster[e.step as usize * size + e.neuron as usize] = 1;
                        }
                    }
                    // The sample's membranes, every step, into the rows where its current
                    // gradients go, in one pass forward through memory (decoded a row per
                    // step inside the walk, each row of codes and of values missed the cache:
                    // the decode was 10 % of the emulated T = 100 MNIST training); the walk
                    // back then finds the latest rows still cached.
                    let at = (x0 + g) * steps * size..(x0 + g + 1) * steps * size;
                    let gip = &mut gi[g * npop + p][..steps * size];
                    match (&exec.membrane[p], &exec.codes[p]) {
                        (Some(v), _) => gip.copy_from_slice(&v[at]),
                        (None, Some(q)) => q.cadc.decode(&q.codes[at], gip),
                        (None, None) => panic!("membranes recorded"),
                    }
                }
            }
        }
        for t in (0..steps).rev() {
            for (j, &p) in comp.iter().enumerate() {
                let pop = &net.populations[p];
                let size = pop.size;
                let co = &topo.coeffs[p];
                let k = (co.k_mem, co.a_syn, co.v_th, cfg.surrogate_alpha);
                let mf = co.membrane_first != 0;
                let row = t * size..(t + 1) * size;
                for (g, scr) in scrs.iter_mut().enumerate() {
                    let git = &mut gi[g * npop + p][row.clone()];
                    let (gv, carry) = (&mut scr.gv[j][..], &mut scr.carry[j][..]);
                    if pop.kind == PopulationKind::Lif {
                        // `git` holds the step's membranes (written above).
                        let rec = (&scr.gs[p][row.clone()], &scr.raster[j][row.clone()]);
                        lif_step_back(git, gv, carry, rec, k, mf);
                    } else {
                        let direct = (p == r).then(|| &scr.gvd[row.clone()]);
                        li_step_back(git, gv, carry, direct, (k.0, k.1), mf);
                    }
                }
                // This step's current gradient onto the spikes `d` steps earlier of the
                // component's spiking members that project here.
                for (q, &(src, tgt, d)) in topo.ends.iter().enumerate() {
                    if tgt != p
                        || d > t
                        || !comp.contains(&src)
                        || net.populations[src].kind != PopulationKind::Lif
                    {
                        continue;
                    }
                    let ns = net.populations[src].size;
                    let at = (t - d) * ns..(t - d + 1) * ns;
                    let w = &net.projections[q].weights;
                    let samples = scrs.iter_mut().zip(gi.chunks(npop));
                    if topo.dense[q] {
                        // The group's (destination, coefficients), on the stack (this runs
                        // once a projection and step: no allocation).
                        let mut pairs: [(&mut [f32], &[f32]); GROUP] = Default::default();
                        for (pair, (scr, gs)) in pairs.iter_mut().zip(samples) {
                            *pair = (&mut scr.gs[src][at.clone()], &gs[p][row.clone()]);
                        }
                        transpose_product_group(w, &mut pairs[..n]);
                    } else if topo.extra[q].is_empty() {
                        let (offs, syn) = &topo.by_source[q];
                        for (scr, gs) in samples {
                            let git = &gs[p][row.clone()];
                            let dst = &mut scr.gs[src][at.clone()];
                            for (pre, x) in dst.iter_mut().enumerate() {
                                for &(post, kw) in &syn[offs[pre] as usize..offs[pre + 1] as usize] {
                                    *x += w[kw as usize] * git[post as usize];
                                }
                            }
                        }
                    } else {
                        // Synapses whose spikes cross a link arrive `extra` steps later: the
                        // gradient lands on spikes that many steps earlier (at least one step
                        // back, which the walk has not reached yet).
                        let (offs, syn) = &topo.by_source[q];
                        let extra = &topo.extra[q];
                        for (scr, gs) in samples {
                            let git = &gs[p][row.clone()];
                            let gsrc = &mut scr.gs[src];
                            for pre in 0..ns {
                                for k in offs[pre] as usize..offs[pre + 1] as usize {
                                    let dd = d + extra[k] as usize;
                                    if dd > t {
                                        continue;
                                    }
                                    let (post, kw) = syn[k];
                                    gsrc[(t - dd) * ns + pre] += w[kw as usize] * git[post as usize];
                                }
                            }
                        }
                    }
                }
            }
        }
        // Gradients on the spikes of spiking sources outside the component, over all steps.
        for (scr, gs) in scrs.iter_mut().zip(gi.chunks(npop)) {
            for &p in comp {
                let size = net.populations[p].size;
                let gip = &*gs[p];
                for (q, &(src, tgt, d)) in topo.ends.iter().enumerate() {
                    if tgt != p
                        || comp.contains(&src)
                        || net.populations[src].kind != PopulationKind::Lif
                        || d >= steps
                    {
                        continue;
                    }
                    let ns = net.populations[src].size;
                    let w = &net.projections[q].weights;
                    let gsrc = &mut scr.gs[src];
                    if topo.dense[q] {
                        for t in 0..steps - d {
                            let dst = &mut gsrc[t * ns..(t + 1) * ns];
                            transpose_product(dst, w, &gip[(t + d) * size..(t + d + 1) * size]);
                        }
                    } else {
                        let (offs, syn) = &topo.by_source[q];
                        let extra = &topo.extra[q];
                        for pre in 0..ns {
                            let synapses = offs[pre] as usize..offs[pre + 1] as usize;
                            for (k, &(post, kw)) in synapses.clone().zip(&syn[synapses]) {
                                let wk = w[kw as usize];
                                let dd = d + extra.get(k).map_or(0, |&e| e as usize);
                                for t in 0..steps.saturating_sub(dd) {
                                    gsrc[t * ns + pre] += wk * gip[(t + dd) * size + post as usize];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    stats
}
}

#[cfg(test)]
mod tests {
    use super::{
        accumulate_dense, accumulate_rows, transpose_product, transpose_product_blocks, Buckets,
        Spikes, TreeStack, WeightLayout,
    };
    use crate::spikes::store::{SpikeEvent, SpikeTrains};

    /// The stack sums leaves as they come in exactly the fixed tree's additions: for every
    /// count of leaves up to 40, bit for bit what the tree written out here gives (split at the
    /// largest power of two below the count, halves for a power of two; the left part plus the
    /// right), with values of many magnitudes, where the order of additions shows. The plain
    /// left-to-right sum differs for some counts, so the comparison can tell orders apart.
    #[test]
    fn the_stack_of_subtree_sums_adds_as_the_fixed_tree_bit_for_bit() {
        fn reference(leaves: &[Vec<f32>]) -> Vec<f32> {
            let n = leaves.len();
            if n == 1 {
                return leaves[0].clone();
            }
            let split = if n.is_power_of_two() {
                n / 2
            } else {
                1 << (usize::BITS - 1 - n.leading_zeros())
            };
            let (l, r) = (reference(&leaves[..split]), reference(&leaves[split..]));
            l.iter().zip(&r).map(|(a, b)| a + b).collect()
        }
        let mut rng = crate::rng::Rng::new(11);
        let len = 5;
        let mut orders_differ = false;
        for n in 0..=40usize {
            let leaves: Vec<Vec<f32>> = (0..n)
                .map(|_| {
                    (0..len)
                        .map(|_| (rng.normal() * 10f64.powi(rng.below(9) as i32 - 4)) as f32)
                        .collect()
                })
                .collect();
            let mut stack = TreeStack::new(n, len);
            for leaf in &leaves {
                stack.leaf().copy_from_slice(leaf);
                stack.push();
            }
            let got = stack.finish()[..len].to_vec();
            let want = if n == 0 {
                vec![0.0; len]
            } else {
                reference(&leaves)
            };
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{n} leaves");
            let plain = (0..len).map(|k| leaves.iter().map(|l| l[k]).sum::<f32>());
            orders_differ |= n > 0 && plain.zip(&want).any(|(a, b)| a.to_bits() != b.to_bits());
        }
        assert!(
            orders_differ,
            "the values should tell the orders of addition apart"
        );
    }

    /// A dense projection's weight gradients summed by blocks of targets (a narrower last
    /// block too) are those summed by blocks of sources, bit for bit, in the weight layout:
    /// every sum adds the same values in the same order. Spikes at the last steps, whose
    /// gradient `d` steps later lies beyond the run, add nothing either way.
    #[test]
    fn sums_by_blocks_of_targets_are_those_by_blocks_of_sources_bit_for_bit() {
        let mut rng = crate::rng::Rng::new(5);
        let (ns, nt, steps, d, samples) = (37usize, 40usize, 9usize, 2usize, 4usize);
        let lists: Vec<Vec<SpikeEvent>> = (0..samples)
            .map(|_| {
                let mut events = Vec::new();
                for step in 0..steps as u32 {
                    for neuron in 0..ns as u32 {
                        if rng.uniform() < 0.2 {
                            events.push(SpikeEvent { step, neuron });
                        }
                    }
                }
                events
            })
            .collect();
        let trains = SpikeTrains::from_samples(ns, steps as u32, lists);
        // Values of many magnitudes, so that a different order of additions would show.
        let g: Vec<f32> = (0..samples * steps * nt)
            .map(|_| (rng.normal() * 10f64.powi(rng.below(7) as i32 - 3)) as f32)
            .collect();
        let by_sources = {
            let mut acc = vec![0f32; ns * nt];
            let all = Spikes::All(&trains);
            accumulate_dense(&all, 0..samples, (steps, nt, d), &g, 0..ns, &mut acc);
            let mut w = vec![f32::NAN; nt * ns];
            let layout = WeightLayout {
                weights: w.as_mut_ptr(),
                sources: ns,
                targets: nt,
            };
            // SAFETY: one writer, every source of the layout.
            unsafe { layout.put(0..ns, &acc) };
            w
        };
        let mut by_targets = vec![f32::NAN; nt * ns];
        let layout = WeightLayout {
            weights: by_targets.as_mut_ptr(),
            sources: ns,
            targets: nt,
        };
        for block in [0..16, 16..32, 32..nt] {
            let mut acc = vec![0f32; ns * block.len()];
            let shape = (steps, nt, d, ns);
            accumulate_rows(&trains, 0..samples, shape, &g, block.clone(), &mut acc);
            // SAFETY: one writer at a time, rows within the layout.
            unsafe { layout.put_rows(block, &acc) };
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&by_targets), bits(&by_sources));
        assert!(by_sources.iter().filter(|x| **x != 0.0).count() > ns * nt / 2);
    }

    /// Grouped by item, each item sees exactly the spikes of its own sources, in the run's
    /// order (a partial last item and a silent sample included), and its weight-gradient sums
    /// are the bits of the sums over every spike; both are the naive sum up to rounding.
    #[test]
    fn bucketed_spikes_give_each_item_its_own_spikes_and_the_same_sums() {
        let mut rng = crate::rng::Rng::new(11);
        let (sources, steps, nt, d, block) = (100usize, 12usize, 5usize, 1usize, 16usize);
        let samples: Vec<Vec<SpikeEvent>> = (0..5)
            .map(|s| {
                let mut events = Vec::new();
                for step in 0..steps as u32 {
                    for neuron in 0..sources as u32 {
                        if s != 2 && rng.uniform() < 0.15 {
                            events.push(SpikeEvent { step, neuron });
                        }
                    }
                }
                events
            })
            .collect();
        let trains = SpikeTrains::from_samples(sources, steps as u32, samples);
        let buckets = Buckets::new(&trains, block, sources);
        let items = sources.div_ceil(block);
        assert_eq!(items, 7);
        let g: Vec<f32> = (0..5 * steps * nt)
            .map(|_| rng.uniform() as f32 * 2.0 - 1.0)
            .collect();
        for i in 0..items {
            let range = i * block..((i + 1) * block).min(sources);
            let item = Spikes::Item(&buckets, i);
            for s in 0..5 {
                let expected: Vec<SpikeEvent> = trains
                    .sample(s)
                    .iter()
                    .filter(|e| range.contains(&(e.neuron as usize)))
                    .copied()
                    .collect();
                assert_eq!(item.sample(s), &expected[..], "sample {s}, item {i}");
            }
            let mut by_item = vec![0f32; range.len() * nt];
            let mut by_all = by_item.clone();
            let shape = (steps, nt, d);
            accumulate_dense(&item, 0..5, shape, &g, range.clone(), &mut by_item);
            let all = Spikes::All(&trains);
            accumulate_dense(&all, 0..5, shape, &g, range.clone(), &mut by_all);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&by_item), bits(&by_all), "item {i}");
            for (row, pre) in range.clone().enumerate() {
                for tgt in 0..nt {
                    let naive: f64 = (0..5)
                        .flat_map(|s| trains.sample(s).iter().map(move |e| (s, e)))
                        .filter(|(_, e)| e.neuron as usize == pre && (e.step as usize) + d < steps)
                        .map(|(s, e)| g[(s * steps + e.step as usize + d) * nt + tgt] as f64)
                        .sum();
                    assert!((naive - by_item[row * nt + tgt] as f64).abs() < 1e-5);
                }
            }
        }
    }

    /// The group product gives every pair the single-sample product's bits, over full blocks
    /// of 16 columns taken WIDE_BLOCKS at a time or one at a time (both, whatever the
    /// processor), blocks left over from the wide passes, a remainder, full groups and
    /// smaller ones; the single-sample product is the in-order f32 sum bit for bit (over
    /// blocks of 128, 64 and 16 columns and a remainder) and the naive sum (rows in order, in
    /// f64) up to rounding.
    #[test]
    fn the_group_transposed_product_is_the_single_one_bit_for_bit() {
        let mut rng = crate::rng::Rng::new(5);
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect() };
        let cases = [
            (40, 13, 4),
            (16, 7, 4),
            (56, 11, 4),
            (64, 6, 4),
            (136, 5, 4),
            (200, 3, 4),
            (120, 5, 4),
            (5, 3, 4),
            (40, 13, 3),
            (33, 9, 1),
            (256, 10, 1),
            (300, 17, 2),
            (220, 6, 1),
        ];
        for (ns, rows, group) in cases {
            let w = draw(ns * rows);
            let gs: Vec<Vec<f32>> = (0..group).map(|_| draw(rows)).collect();
            let start: Vec<Vec<f32>> = (0..group).map(|_| draw(ns)).collect();
            let grouped = |wide: bool| {
                let mut out = start.clone();
                let mut pairs: Vec<(&mut [f32], &[f32])> = out
                    .iter_mut()
                    .zip(&gs)
                    .map(|(d, g)| (&mut d[..], &g[..]))
                    .collect();
                transpose_product_blocks(&w, &mut pairs, wide);
                out
            };
            let (by_one, by_wide) = (grouped(false), grouped(true));
            for k in 0..group {
                let mut single = start[k].clone();
                transpose_product(&mut single, &w, &gs[k]);
                let at = format!("ns {ns}, rows {rows}, group {group}");
                assert_eq!(by_one[k], single, "one block a pass, {at}");
                assert_eq!(by_wide[k], single, "WIDE_BLOCKS blocks a pass, {at}");
                for i in 0..ns {
                    // Row by row in f32, in row order: the same sums bit for bit.
                    let mut in_order = start[k][i];
                    for r in 0..rows {
                        in_order += w[r * ns + i] * gs[k][r];
                    }
                    assert_eq!(single[i].to_bits(), in_order.to_bits(), "{at}, column {i}");
                    let naive = start[k][i] as f64
                        + (0..rows)
                            .map(|r| w[r * ns + i] as f64 * gs[k][r] as f64)
                            .sum::<f64>();
                    assert!(
                        (naive - single[i] as f64).abs() < 1e-5,
                        "{naive} {}",
                        single[i]
                    );
                }
            }
        }
    }
}

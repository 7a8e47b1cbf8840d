//! The backward pass: gradients of the loss with respect to every weight, through time, from
//! the observables the forward pass recorded (spikes, and membranes time-major per sample,
//! `[step][neuron]`), with the SuperSpike surrogate for the spike's derivative and the reset
//! treated as a constant. Feed-forward networks only.
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
use crate::executor::Execution;
use crate::network::{Network, PopulationId, PopulationKind};
use crate::neuron::NeuronCoeffs;
use rayon::prelude::*;

/// One projection's synapses grouped by source neuron: offsets per source, then
/// (target neuron, weight index) pairs.
pub(crate) type BySource = (Vec<u32>, Vec<(u32, u32)>);

/// The network's structure as the backward pass needs it, computed once.
#[derive(Clone, Debug)]
pub struct Topology {
    /// Non-input populations, sources before targets.
    order: Vec<PopulationId>,
    /// Per projection: (source, target, delay).
    ends: Vec<(PopulationId, PopulationId, usize)>,
    /// Per projection: synapses grouped by source neuron: offsets, then (target, weight index).
    by_source: Vec<BySource>,
    /// Per projection: dense (weights `[target][source]`, every source reaching every target).
    dense: Vec<bool>,
    /// Per population: coefficients of the software model.
    coeffs: Vec<NeuronCoeffs>,
    /// The readout population.
    readout: PopulationId,
    /// The input population.
    input: PopulationId,
}

impl Topology {
    /// Check the network is trainable (feed-forward, one readout) and index it.
    pub fn new(net: &Network, dt: f32) -> Result<Self> {
        let mut order = Vec::new();
        let all_ends = net.all_endpoints()?;
        for comp in net.components()? {
            let p = comp[0];
            let looped = comp.len() > 1 || all_ends.contains(&(p, p));
            if looped {
                return Err(Error::network(
                    format!("population '{}'", net.populations[p].name),
                    "is in a recurrent loop; training supports feed-forward networks",
                ));
            }
            if net.populations[p].kind != PopulationKind::Input {
                order.push(p);
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
        for (k, (&delay, &(s, t))) in delays.iter().zip(&all_ends).enumerate() {
            ends.push((s, t, delay as usize));
            let ns = net.populations[s].size;
            let mut lists: Vec<Vec<(u32, u32)>> = vec![Vec::new(); ns];
            net.for_each_synapse_index(k, 0..net.populations[t].size, |pre, post, w| {
                lists[pre].push((post as u32, w as u32))
            })?;
            let mut offsets = vec![0u32];
            let mut flat = Vec::new();
            for l in lists {
                flat.extend(l);
                offsets.push(flat.len() as u32);
            }
            by_source.push((offsets, flat));
        }
        let coeffs = net
            .populations
            .iter()
            .map(|p| p.params.coeffs(dt, p.kind == PopulationKind::Lif))
            .collect();
        let dense = net
            .projections
            .iter()
            .map(|p| p.connectivity == crate::network::Connectivity::Dense)
            .collect();
        Ok(Topology {
            order,
            ends,
            by_source,
            dense,
            coeffs,
            readout,
            input,
        })
    }

    /// The readout population.
    pub fn readout(&self) -> PopulationId {
        self.readout
    }

    /// The input population.
    pub fn input(&self) -> PopulationId {
        self.input
    }
}

/// Samples per chunk of the gradient sum: partial sums over whole chunks are combined in a
/// fixed tree ([`tree_sum`]). Fixed, so that results do not depend on the machine.
pub const GRAD_CHUNK: usize = 16;

/// Loss and weight gradients of a batch from its recorded observables. `exec` must hold the
/// membranes of every population ([`crate::Observe::AllTraces`]). Gradients are of the batch
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
    let (stats, partials) = chunk_gradients(
        net,
        topo,
        exec,
        labels,
        cfg,
        epoch,
        0..labels.len().div_ceil(GRAD_CHUNK),
    );
    let (stats, acc) = tree_sum(stats, partials);
    let grads = to_weight_layout(net, topo, &acc);
    acc.into_iter().for_each(crate::pool::give);
    (stats, grads)
}

/// The per-chunk partial results of chunks `chunks` of the batch (statistics and gradients in
/// the projections' by-source order), for combining with [`tree_sum`].
#[allow(clippy::too_many_arguments)]
pub fn chunk_gradients(
    net: &Network,
    topo: &Topology,
    exec: &Execution,
    labels: &[u8],
    cfg: &TrainConfig,
    epoch: usize,
    chunks: std::ops::Range<usize>,
) -> (Vec<BatchStats>, Vec<Vec<Vec<f32>>>) {
    let b = labels.len();
    let steps = net.steps as usize;
    let samples = chunks.start * GRAD_CHUNK..(chunks.end * GRAD_CHUNK).min(b);
    // Phase A: per sample, the current gradients of every population, time-major.
    let sizes: Vec<usize> = net.populations.iter().map(|p| p.size).collect();
    let mut gi: Vec<Vec<f32>> = net
        .populations
        .iter()
        .map(|p| match p.kind {
            PopulationKind::Input => Vec::new(),
            _ => crate::pool::take_zeroed(samples.len() * steps * p.size),
        })
        .collect();
    let mut per_sample: Vec<Vec<&mut [f32]>> = (0..samples.len()).map(|_| Vec::new()).collect();
    for (p, g) in gi.iter_mut().enumerate() {
        let n = steps * sizes[p];
        if n == 0 || g.is_empty() {
            for slots in per_sample.iter_mut() {
                slots.push(&mut []);
            }
            continue;
        }
        for (slots, part) in per_sample.iter_mut().zip(g.chunks_mut(n)) {
            slots.push(part);
        }
    }
    let stats: Vec<BatchStats> = per_sample
        .into_par_iter()
        .enumerate()
        .map_init(Scratch::default, |scr, (k, mut slots)| {
            let s = samples.start + k;
            sample_backward(
                net, topo, exec, s, labels[s], b, cfg, epoch, &mut slots, scr,
            )
        })
        .collect();
    // Phase B: per (chunk, projection, block of sources), the chunk's weight gradients.
    let mut partials: Vec<Vec<Vec<f32>>> = chunks
        .clone()
        .map(|_| {
            topo.by_source
                .iter()
                .map(|(_, syn)| crate::pool::take_zeroed(syn.len()))
                .collect()
        })
        .collect();
    let mut items = Vec::new();
    for (ci, partial) in chunks.clone().zip(partials.iter_mut()) {
        for (q, acc) in partial.iter_mut().enumerate() {
            let (offs, _) = &topo.by_source[q];
            let ns = offs.len() - 1;
            let block = ns.div_ceil(8).max(1);
            let mut rest: &mut [f32] = acc;
            let mut lo = 0;
            while lo < ns {
                let hi = (lo + block).min(ns);
                let len = (offs[hi] - offs[lo]) as usize;
                let (a, r) = std::mem::take(&mut rest).split_at_mut(len);
                items.push((ci, q, lo..hi, a));
                rest = r;
                lo = hi;
            }
        }
    }
    items.into_par_iter().for_each(|(ci, q, range, acc)| {
        let (src, tgt, d) = topo.ends[q];
        let Some(trains) = exec.spikes.get(src) else {
            return;
        };
        let (offs, syn) = &topo.by_source[q];
        let nt = sizes[tgt];
        let base = offs[range.start] as usize;
        let first = ci * GRAD_CHUNK;
        for s in first..(first + GRAD_CHUNK).min(b) {
            let g =
                &gi[tgt][(s - samples.start) * steps * nt..(s - samples.start + 1) * steps * nt];
            for e in trains.sample(s) {
                let pre = e.neuron as usize;
                let t = e.step as usize + d;
                if t >= steps || !range.contains(&pre) {
                    continue;
                }
                let (a, z) = (offs[pre] as usize - base, offs[pre + 1] as usize - base);
                let git = &g[t * nt..(t + 1) * nt];
                if topo.dense[q] {
                    for (x, &y) in acc[a..z].iter_mut().zip(git) {
                        *x += y;
                    }
                } else {
                    for (x, &(post, _)) in acc[a..z].iter_mut().zip(&syn[a + base..z + base]) {
                        *x += git[post as usize];
                    }
                }
            }
        }
    });
    gi.into_iter().for_each(crate::pool::give);
    // Statistics per chunk, summed in sample order.
    let chunk_stats = chunks
        .map(|ci| {
            let lo = ci * GRAD_CHUNK - samples.start;
            let hi = ((ci + 1) * GRAD_CHUNK).min(b) - samples.start;
            stats[lo..hi]
                .iter()
                .cloned()
                .fold(BatchStats::default(), |a, b| a + b)
        })
        .collect();
    (chunk_stats, partials)
}

/// Combine per-chunk partial results in a fixed binary tree over chunk indices: the halves
/// split at the largest power of two below the count, so a block of chunks aligned to a power
/// of two is a subtree (what one process may sum on its own).
pub fn tree_sum(
    mut stats: Vec<BatchStats>,
    mut partials: Vec<Vec<Vec<f32>>>,
) -> (BatchStats, Vec<Vec<f32>>) {
    fn reduce(stats: &mut [BatchStats], parts: &mut [Vec<Vec<f32>>]) {
        let n = parts.len();
        if n <= 1 {
            return;
        }
        let mid = if n.is_power_of_two() {
            n / 2
        } else {
            1 << (usize::BITS - 1 - n.leading_zeros())
        };
        let (sl, sr) = stats.split_at_mut(mid);
        let (pl, pr) = parts.split_at_mut(mid);
        rayon::join(|| reduce(sl, pl), || reduce(sr, pr));
        sl[0] = std::mem::take(&mut sl[0]) + std::mem::take(&mut sr[0]);
        for (a, b) in pl[0].iter_mut().zip(&pr[0]) {
            a.par_iter_mut()
                .with_min_len(1 << 14)
                .zip(b.par_iter().with_min_len(1 << 14))
                .for_each(|(x, y)| *x += y);
        }
    }
    if partials.is_empty() {
        return (BatchStats::default(), Vec::new());
    }
    reduce(&mut stats, &mut partials);
    let first = std::mem::take(&mut partials[0]);
    partials.into_iter().flatten().for_each(crate::pool::give);
    (std::mem::take(&mut stats[0]), first)
}

/// Gradients in by-source order (as the backward accumulates them) to each projection's
/// weight layout; the synapses of a convolution that share a weight add up.
pub fn to_weight_layout(net: &Network, topo: &Topology, acc: &[Vec<f32>]) -> Vec<Vec<f32>> {
    net.projections
        .par_iter()
        .enumerate()
        .map(|(q, pr)| {
            let mut g = crate::pool::take_zeroed(pr.weights.len());
            let (offs, syn) = &topo.by_source[q];
            if topo.dense[q] {
                // by-source order is [source][target]; the weights are [target][source].
                let ns = offs.len() - 1;
                let nt = syn.len().checked_div(ns).unwrap_or(0);
                for (pre, row) in acc[q].chunks(nt.max(1)).enumerate() {
                    for (post, &x) in row.iter().enumerate() {
                        g[post * ns + pre] += x;
                    }
                }
            } else {
                for (x, &(_, k)) in acc[q].iter().zip(syn) {
                    g[k as usize] += x;
                }
            }
            g
        })
        .collect()
}

/// Per-thread buffers of the per-sample backward, reused across samples and batches.
#[derive(Default)]
struct Scratch {
    gs: Vec<Vec<f32>>,
    gvd: Vec<f32>,
    raster: Vec<u8>,
    count: Vec<f32>,
    gv: Vec<f32>,
    carry: Vec<f32>,
}

/// One sample: its loss and statistics, and the current gradient `gi[p]` (`[step][neuron]`)
/// of every non-input population.
#[allow(clippy::too_many_arguments)]
fn sample_backward(
    net: &Network,
    topo: &Topology,
    exec: &Execution,
    s: usize,
    label: u8,
    batch: usize,
    cfg: &TrainConfig,
    epoch: usize,
    gi: &mut [&mut [f32]],
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
    // Loss on the readout: direct gradient on its membrane at each neuron's maximum.
    let r = topo.readout;
    let c = net.populations[r].size;
    let m =
        &exec.membrane[r].as_ref().expect("membranes recorded")[s * steps * c..(s + 1) * steps * c];
    let mut score = vec![f32::NEG_INFINITY; c];
    let mut at = vec![0usize; c];
    for t in 0..steps {
        for k in 0..c {
            let v = m[t * c + k] * cfg.readout_scale;
            if v > score[k] {
                score[k] = v;
                at[k] = t;
            }
        }
    }
    let lse = log_sum_exp(&score);
    stats.loss += (lse - score[label as usize]) as f64;
    stats.correct += usize::from(argmax(&score) == label as usize);
    scr.gvd.clear();
    scr.gvd.resize(steps * c, 0.0);
    for k in 0..c {
        let p = (score[k] - lse).exp();
        let mut d = (p - f32::from(k == label as usize)) / bf;
        d += cfg.reg_readout * 4.0 * score[k].powi(3) / (bf * c as f32);
        stats.loss += (cfg.reg_readout * score[k].powi(4) / c as f32) as f64;
        scr.gvd[at[k] * c + k] += cfg.readout_scale * d;
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
        gs.resize(steps * n, 0.0);
        scr.count.clear();
        scr.count.resize(n, 0.0);
        if let Some(tr) = exec.spikes.get(p) {
            for e in tr.sample(s) {
                scr.count[e.neuron as usize] += 1.0;
            }
        }
        stats.hidden_spikes += scr.count.iter().sum::<f32>() as f64;
        let norm = bf * n as f32;
        let mut row = vec![0f32; n];
        let mut any = false;
        for (x, &k) in row.iter_mut().zip(&scr.count) {
            stats.loss += (lam * k.powi(4) / n as f32) as f64;
            *x = lam * 4.0 * k.powi(3) / norm;
            any |= *x != 0.0;
        }
        if any {
            for gst in gs.chunks_mut(n) {
                for (g, &x) in gst.iter_mut().zip(&row) {
                    *g += x;
                }
            }
        }
    }
    // Backward through time, targets before sources.
    for &p in topo.order.iter().rev() {
        let pop = &net.populations[p];
        let n = pop.size;
        let co = &topo.coeffs[p];
        let mem = &exec.membrane[p].as_ref().expect("membranes recorded")
            [s * steps * n..(s + 1) * steps * n];
        let spiking = pop.kind == PopulationKind::Lif;
        let gip = &mut *gi[p];
        scr.raster.clear();
        if spiking {
            scr.raster.resize(steps * n, 0);
            if let Some(tr) = exec.spikes.get(p) {
                for e in tr.sample(s) {
                    scr.raster[e.step as usize * n + e.neuron as usize] = 1;
                }
            }
        }
        scr.gv.clear();
        scr.gv.resize(n, 0.0);
        scr.carry.clear();
        scr.carry.resize(n, 0.0);
        let direct = (p == r).then_some(&scr.gvd[..]);
        let (k_mem, a_syn, v_th, alpha) = (co.k_mem, co.a_syn, co.v_th, cfg.surrogate_alpha);
        for t in (0..steps).rev() {
            let row = t * n..(t + 1) * n;
            let git = &mut gip[row.clone()];
            let (gv, carry) = (&mut scr.gv[..], &mut scr.carry[..]);
            if spiking {
                let (gst, ras, mt) = (
                    &scr.gs[p][row.clone()],
                    &scr.raster[row.clone()],
                    &mem[row.clone()],
                );
                for (((((g, v), c), &gsv), &sp), &mv) in git
                    .iter_mut()
                    .zip(gv.iter_mut())
                    .zip(carry.iter_mut())
                    .zip(gst)
                    .zip(ras)
                    .zip(mt)
                {
                    let mut gpre = if sp != 0 { 0.0 } else { *v };
                    let x = alpha * (mv - v_th).abs() + 1.0;
                    gpre += gsv / (x * x);
                    let gcur = *c + k_mem * gpre;
                    *g = gcur;
                    *v = (1.0 - k_mem) * gpre;
                    *c = a_syn * gcur;
                }
            } else {
                let gvt = direct.map(|d| &d[row.clone()]);
                for (k, ((g, v), c)) in git
                    .iter_mut()
                    .zip(gv.iter_mut())
                    .zip(carry.iter_mut())
                    .enumerate()
                {
                    let mut gpre = *v;
                    if let Some(d) = gvt {
                        gpre += d[k];
                    }
                    let gcur = *c + k_mem * gpre;
                    *g = gcur;
                    *v = (1.0 - k_mem) * gpre;
                    *c = a_syn * gcur;
                }
            }
        }
        // Gradients on the spikes of this population's spiking sources.
        let gip = &*gi[p];
        for (q, &(src, tgt, d)) in topo.ends.iter().enumerate() {
            if tgt != p || net.populations[src].kind != PopulationKind::Lif || d >= steps {
                continue;
            }
            let ns = net.populations[src].size;
            let w = &net.projections[q].weights;
            let gsrc = &mut scr.gs[src];
            if topo.dense[q] {
                for t in 0..steps - d {
                    let dst = &mut gsrc[t * ns..(t + 1) * ns];
                    for (post, &g) in gip[(t + d) * n..(t + d + 1) * n].iter().enumerate() {
                        for (x, &wk) in dst.iter_mut().zip(&w[post * ns..(post + 1) * ns]) {
                            *x += wk * g;
                        }
                    }
                }
            } else {
                let (offs, syn) = &topo.by_source[q];
                for pre in 0..ns {
                    for &(post, k) in &syn[offs[pre] as usize..offs[pre + 1] as usize] {
                        let wk = w[k as usize];
                        for t in 0..steps - d {
                            gsrc[t * ns + pre] += wk * gip[(t + d) * n + post as usize];
                        }
                    }
                }
            }
        }
    }
    stats
}

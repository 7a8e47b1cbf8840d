//! The backward pass: gradients of the loss with respect to every weight, through time, from
//! the observables the forward pass recorded (spikes and membranes), with the SuperSpike
//! surrogate for the spike's derivative and the reset treated as a constant. Feed-forward
//! networks only.

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
        Ok(Topology {
            order,
            ends,
            by_source,
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

/// Loss and weight gradients of a batch from its recorded observables. `exec` must hold the
/// membranes of every population (`record_all_membranes`). Gradients are of the batch mean.
pub fn gradients(
    net: &Network,
    topo: &Topology,
    exec: &Execution,
    labels: &[u8],
    cfg: &TrainConfig,
    epoch: usize,
) -> (BatchStats, Vec<Vec<f32>>) {
    let b = labels.len();
    // Weights in synapse order (grouped by source neuron), and gradients accumulated in the
    // same order: both contiguous in the inner loops; mapped back to weight indices at the end.
    let w_syn: Vec<Vec<f32>> = topo
        .by_source
        .iter()
        .enumerate()
        .map(|(q, (_, syn))| {
            syn.iter()
                .map(|&(_, k)| net.projections[q].weights[k as usize])
                .collect()
        })
        .collect();
    let zero = || -> (BatchStats, Vec<Vec<f32>>) {
        (
            BatchStats::default(),
            topo.by_source
                .iter()
                .map(|(_, syn)| vec![0.0; syn.len()])
                .collect(),
        )
    };
    // Fixed chunks of samples, each summed in order, then the chunks summed in order: the
    // result does not depend on how many threads there are or how work is stolen.
    let idx: Vec<usize> = (0..b).collect();
    let parts: Vec<(BatchStats, Vec<Vec<f32>>)> = idx
        .par_chunks(16)
        .map(|chunk| {
            let (mut stats, mut acc) = zero();
            for &s in chunk {
                let st = sample_gradients(
                    net, topo, exec, s, labels[s], b, cfg, epoch, &w_syn, &mut acc,
                );
                stats = stats.add(st);
            }
            (stats, acc)
        })
        .collect();
    let (mut stats, mut acc) = zero();
    for (st, a) in parts {
        stats = stats.add(st);
        for (x, y) in acc.iter_mut().zip(a) {
            for (u, v) in x.iter_mut().zip(y) {
                *u += v;
            }
        }
    }
    let mut grads: Vec<Vec<f32>> = net
        .projections
        .iter()
        .map(|p| vec![0.0; p.weights.len()])
        .collect();
    for (q, (_, syn)) in topo.by_source.iter().enumerate() {
        for (pos, &(_, k)) in syn.iter().enumerate() {
            grads[q][k as usize] += acc[q][pos];
        }
    }
    // Weight regulariser: mean(w⁴) per projection.
    for (q, pr) in net.projections.iter().enumerate() {
        let numel = pr.weights.len().max(1) as f32;
        for (k, &w) in pr.weights.iter().enumerate() {
            grads[q][k] += cfg.reg_weights * 4.0 * w.powi(3) / numel;
            stats.loss += (cfg.reg_weights * w.powi(4) / numel) as f64 * b as f64;
        }
    }
    (stats, grads)
}

#[allow(clippy::too_many_arguments)]
fn sample_gradients(
    net: &Network,
    topo: &Topology,
    exec: &Execution,
    s: usize,
    label: u8,
    batch: usize,
    cfg: &TrainConfig,
    epoch: usize,
    w_syn: &[Vec<f32>],
    acc: &mut [Vec<f32>],
) -> BatchStats {
    // Per-neuron time series are kept neuron-major (`[n][t]`): the recursion through time and
    // the gradient on a source's spikes then run over contiguous memory.
    let steps = net.steps as usize;
    let bf = batch as f32;
    let npop = net.populations.len();
    // Gradient with respect to each population's spikes, and direct membrane gradients.
    let mut gs: Vec<Vec<f32>> = net
        .populations
        .iter()
        .map(|p| match p.kind {
            PopulationKind::Input => Vec::new(),
            _ => vec![0.0; steps * p.size],
        })
        .collect();
    let mut gvd: Vec<Vec<f32>> = vec![Vec::new(); npop];
    let mut stats = BatchStats {
        samples: 1,
        ..Default::default()
    };
    // Loss on the readout.
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
    let mut g = vec![0.0f32; steps * c];
    for k in 0..c {
        let p = (score[k] - lse).exp();
        let mut d = (p - f32::from(k == label as usize)) / bf;
        d += cfg.reg_readout * 4.0 * score[k].powi(3) / (bf * c as f32);
        stats.loss += (cfg.reg_readout * score[k].powi(4) / c as f32) as f64;
        g[k * steps + at[k]] += cfg.readout_scale * d;
    }
    gvd[r] = g;
    // Spike rasters of spiking populations, and the spike-count regulariser.
    let lam = cfg.reg_spikes * cfg.reg_spikes_decay.powi(epoch as i32);
    let mut raster: Vec<Vec<bool>> = vec![Vec::new(); npop];
    for &p in &topo.order {
        let pop = &net.populations[p];
        if pop.kind != PopulationKind::Lif {
            continue;
        }
        let mut ras = vec![false; steps * pop.size];
        let mut count = vec![0f32; pop.size];
        if let Some(tr) = exec.spikes.get(p) {
            for e in tr.sample(s) {
                ras[e.neuron as usize * steps + e.step as usize] = true;
                count[e.neuron as usize] += 1.0;
            }
        }
        stats.hidden_spikes += count.iter().sum::<f32>() as f64;
        let norm = bf * pop.size as f32;
        for (n, &k) in count.iter().enumerate() {
            stats.loss += (lam * k.powi(4) / pop.size as f32) as f64;
            let d = lam * 4.0 * k.powi(3) / norm;
            if d != 0.0 {
                gs[p][n * steps..(n + 1) * steps]
                    .iter_mut()
                    .for_each(|x| *x += d);
            }
        }
        raster[p] = ras;
    }
    // Backward through time, targets before sources.
    for &p in topo.order.iter().rev() {
        let pop = &net.populations[p];
        let n = pop.size;
        let co = &topo.coeffs[p];
        let mem = &exec.membrane[p].as_ref().expect("membranes recorded")
            [s * steps * n..(s + 1) * steps * n];
        let spiking = pop.kind == PopulationKind::Lif;
        let mut gi = vec![0f32; steps * n];
        for j in 0..n {
            let (mut gv, mut carry) = (0f32, 0f32);
            let row = j * steps..(j + 1) * steps;
            let (gsj, gij) = (&gs[p][row.clone()], &mut gi[row.clone()]);
            let gvj = (!gvd[p].is_empty()).then(|| &gvd[p][row.clone()]);
            let ras = spiking.then(|| &raster[p][row]);
            for t in (0..steps).rev() {
                let mut gpre = gv;
                if let Some(ras) = ras {
                    if ras[t] {
                        gpre = 0.0;
                    }
                    let x = cfg.surrogate_alpha * (mem[t * n + j] - co.v_th).abs() + 1.0;
                    gpre += gsj[t] / (x * x);
                }
                if let Some(gvj) = gvj {
                    gpre += gvj[t];
                }
                let gcur = carry + co.k_mem * gpre;
                gij[t] = gcur;
                gv = (1.0 - co.k_mem) * gpre;
                carry = co.a_syn * gcur;
            }
        }
        // Time-major copy for the weight gradients (contiguous over targets per step).
        let mut gi_t = vec![0f32; steps * n];
        for j in 0..n {
            for t in 0..steps {
                gi_t[t * n + j] = gi[j * steps + t];
            }
        }
        for (q, &(src, tgt, d)) in topo.ends.iter().enumerate() {
            if tgt != p {
                continue;
            }
            let (offs, syn) = &topo.by_source[q];
            let ns = net.populations[src].size;
            // Weight gradients: spikes of the source times the current gradient on arrival.
            let events: &[crate::spikes::SpikeEvent] = match exec.spikes.get(src) {
                Some(tr) => tr.sample(s),
                None => &[],
            };
            let gq = &mut acc[q];
            for e in events {
                let t = e.step as usize + d;
                if t >= steps {
                    continue;
                }
                let pre = e.neuron as usize;
                let range = offs[pre] as usize..offs[pre + 1] as usize;
                let git = &gi_t[t * n..(t + 1) * n];
                for (g, &(post, _)) in gq[range.clone()].iter_mut().zip(&syn[range]) {
                    *g += git[post as usize];
                }
            }
            // Gradients on the source's spikes at every step: one vector update per synapse.
            if net.populations[src].kind == PopulationKind::Lif && d < steps {
                let ws = &w_syn[q];
                let gsrc = &mut gs[src];
                for pre in 0..ns {
                    let dst = &mut gsrc[pre * steps..pre * steps + steps - d];
                    let range = offs[pre] as usize..offs[pre + 1] as usize;
                    for (&wk, &(post, _)) in ws[range.clone()].iter().zip(&syn[range]) {
                        let from = &gi[post as usize * steps + d..(post as usize + 1) * steps];
                        for (x, &y) in dst.iter_mut().zip(from) {
                            *x += wk * y;
                        }
                    }
                }
            }
        }
    }
    stats
}

//! Surrogate-gradient training through time, hardware-in-the-loop style: the forward pass runs
//! on the emulator (any backend, partition by partition, spikes replayed) and records the
//! observables — spikes and membranes of every population; the backward pass recomputes the
//! model's gradients from those observables on the host (rayon over samples), with the
//! SuperSpike surrogate for the spike's derivative and the reset treated as a constant. Readout:
//! maximum over time of the non-spiking readout membrane, scaled, cross-entropy; Adam with step
//! decay; the reference experiment's regularisers. Feed-forward networks only (every
//! projection between different populations, no loops).

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::executor::{Execution, Executor, Observe};
use crate::network::{Network, PopulationId, PopulationKind};
use crate::neuron::NeuronCoeffs;
use crate::spikes::SpikeTrains;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Training hyper-parameters (defaults: the published MNIST set-up).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Samples per optimiser step.
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f32,
    /// Learning rate factor per epoch.
    pub lr_decay: f32,
    /// Readout score = this × max over time of the readout membrane.
    pub readout_scale: f32,
    /// SuperSpike steepness α: ∂s/∂v = 1/(α|v − ϑ| + 1)².
    pub surrogate_alpha: f32,
    /// Weight of mean(score⁴).
    pub reg_readout: f32,
    /// Weight of mean((spike count)⁴) of hidden neurons, in the first epoch.
    pub reg_spikes: f32,
    /// Factor per epoch on `reg_spikes`.
    pub reg_spikes_decay: f32,
    /// Weight of mean(w⁴).
    pub reg_weights: f32,
    /// Random rotation augmentation.
    pub augment: bool,
    /// Seed of shuffling, augmentation and noise.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch: 100,
            lr: 0.002,
            lr_decay: 0.97,
            readout_scale: 3.0,
            surrogate_alpha: 50.0,
            reg_readout: 1.6e-4,
            reg_spikes: 0.0025,
            reg_spikes_decay: 0.985,
            reg_weights: 0.0033,
            augment: true,
            seed: 1,
        }
    }
}

/// Adam state for every projection's weights.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Adam {
    /// First moments.
    pub m: Vec<Vec<f32>>,
    /// Second moments.
    pub v: Vec<Vec<f32>>,
    /// Steps taken.
    pub t: u64,
}

impl Adam {
    /// Zero state for `network`.
    pub fn new(network: &Network) -> Self {
        let z: Vec<Vec<f32>> = network
            .projections
            .iter()
            .map(|p| vec![0.0; p.weights.len()])
            .collect();
        Adam {
            m: z.clone(),
            v: z,
            t: 0,
        }
    }

    /// One step of size `lr` on every projection, then clamp weights to ±`limit`.
    pub fn step(&mut self, network: &mut Network, grads: &[Vec<f32>], lr: f32, limit: f32) {
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        self.t += 1;
        let c1 = 1.0 - b1.powi(self.t as i32);
        let c2 = 1.0 - b2.powi(self.t as i32);
        for (p, g) in grads.iter().enumerate() {
            let w = &mut network.projections[p].weights;
            let (m, v) = (&mut self.m[p], &mut self.v[p]);
            for k in 0..w.len() {
                m[k] = b1 * m[k] + (1.0 - b1) * g[k];
                v[k] = b2 * v[k] + (1.0 - b2) * g[k] * g[k];
                let step = lr * (m[k] / c1) / ((v[k] / c2).sqrt() + eps);
                w[k] = (w[k] - step).clamp(-limit, limit);
            }
        }
    }
}

/// One projection's synapses grouped by source neuron: offsets per source, then
/// (target neuron, weight index) pairs.
type BySource = (Vec<u32>, Vec<(u32, u32)>);

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
}

impl Topology {
    /// Check the network is trainable (feed-forward, one readout) and index it.
    pub fn new(net: &Network, dt: f32) -> Result<Self> {
        let mut order = Vec::new();
        for comp in net.components() {
            let p = comp[0];
            let looped =
                comp.len() > 1 || (0..net.projections.len()).any(|k| net.endpoints(k) == (p, p));
            if looped {
                return Err(Error::InvalidNetwork(format!(
                    "training supports feed-forward networks; population '{}' is in a recurrent loop",
                    net.populations[p].name
                )));
            }
            if net.populations[p].kind != PopulationKind::Input {
                order.push(p);
            }
        }
        let readouts: Vec<PopulationId> = (0..net.populations.len())
            .filter(|&p| net.populations[p].kind == PopulationKind::Readout)
            .collect();
        let [readout] = readouts[..] else {
            return Err(Error::InvalidNetwork(format!(
                "training needs exactly one readout population, the network has {}",
                readouts.len()
            )));
        };
        let delays = net.effective_delays();
        let mut ends = Vec::new();
        let mut by_source = Vec::new();
        for (k, &delay) in delays.iter().enumerate() {
            let (s, t) = net.endpoints(k);
            ends.push((s, t, delay as usize));
            let ns = net.populations[s].size;
            let mut lists: Vec<Vec<(u32, u32)>> = vec![Vec::new(); ns];
            net.for_each_synapse_index(k, 0..net.populations[t].size, |pre, post, w| {
                lists[pre].push((post as u32, w as u32))
            });
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
        })
    }

    /// The readout population.
    pub fn readout(&self) -> PopulationId {
        self.readout
    }
}

/// Loss, accuracy and activity of one batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchStats {
    /// Summed loss (cross-entropy plus regularisers) over samples.
    pub loss: f64,
    /// Correctly classified samples.
    pub correct: usize,
    /// Samples.
    pub samples: usize,
    /// Hidden spikes (all spiking populations) summed over samples.
    pub hidden_spikes: f64,
}

impl BatchStats {
    fn add(mut self, o: BatchStats) -> Self {
        self.loss += o.loss;
        self.correct += o.correct;
        self.samples += o.samples;
        self.hidden_spikes += o.hidden_spikes;
        self
    }
}

/// Readout scores `[sample][class]` from an execution: scale × the maximum over time of the
/// readout membrane.
pub fn scores(exec: &Execution, readout: PopulationId, scale: f32) -> Vec<f32> {
    exec.peak[readout]
        .as_ref()
        .expect("readout maxima are recorded")
        .iter()
        .map(|v| v * scale)
        .collect()
}

/// `ln Σ exp(v)`, computed stably (shifted by the maximum).
pub fn log_sum_exp(v: &[f32]) -> f32 {
    let top = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    top + v.iter().map(|x| (x - top).exp()).sum::<f32>().ln()
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

/// Run one batch forward on `backend` and return its statistics and gradients.
#[allow(clippy::too_many_arguments)] // one batch's whole context; a struct would only rename it
pub fn forward_backward<B: Backend + ?Sized>(
    exec: &Executor,
    topo: &Topology,
    backend: &B,
    inputs: &[(PopulationId, SpikeTrains)],
    labels: &[u8],
    cfg: &TrainConfig,
    epoch: usize,
    noise_seed: u32,
) -> Result<(BatchStats, Vec<Vec<f32>>)> {
    let out = exec.run_with_noise(backend, inputs, Observe::AllTraces, noise_seed)?;
    Ok(gradients(&exec.network, topo, &out, labels, cfg, epoch))
}

/// One epoch's record (a row of the CSV).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy (on the augmented samples, as trained).
    pub train_accuracy: f64,
    /// Mean test (or validation) cross-entropy.
    pub test_loss: f64,
    /// Test accuracy.
    pub test_accuracy: f64,
    /// Hidden spikes per sample.
    pub hidden_spikes: f64,
    /// Wall time of the epoch's training part in seconds.
    pub seconds: f64,
    /// Training samples per second.
    pub samples_per_s: f64,
}

/// What a checkpoint holds: enough to continue exactly where training stopped.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Weights of every projection.
    pub weights: Vec<Vec<f32>>,
    /// Optimiser state.
    pub adam: Adam,
    /// Epochs completed.
    pub epoch: usize,
    /// The configuration (its seed included).
    pub config: TrainConfig,
    /// Per-epoch history.
    pub history: Vec<EpochRecord>,
}

/// Training state: the executor (whose network holds the weights), the optimiser and history.
pub struct Trainer {
    /// The partitioned, possibly emulated network.
    pub exec: Executor,
    /// Its structure for the backward pass.
    pub topo: Topology,
    /// Optimiser.
    pub adam: Adam,
    /// Hyper-parameters.
    pub cfg: TrainConfig,
    /// Epochs completed.
    pub epoch: usize,
    /// History.
    pub history: Vec<EpochRecord>,
    /// Largest weight magnitude (the chip's range in emulated mode).
    pub weight_limit: f32,
}

impl Trainer {
    /// A trainer for `exec` (weights as they are).
    pub fn new(exec: Executor, cfg: TrainConfig) -> Result<Self> {
        let topo = Topology::new(&exec.network, exec.plan.substrate.dt_us)?;
        let weight_limit = match &exec.emulation {
            Some(em) if em.config.quantise_weights => {
                exec.plan.substrate.weight_max as f32 / em.config.weight_scale
            }
            _ => f32::INFINITY,
        };
        Ok(Trainer {
            adam: Adam::new(&exec.network),
            topo,
            exec,
            cfg,
            epoch: 0,
            history: Vec::new(),
            weight_limit,
        })
    }

    fn input_pop(&self) -> PopulationId {
        self.exec.network.inputs()[0]
    }

    /// Train one epoch over `data`; `progress(done, total)` after each batch.
    pub fn train_epoch<B: Backend + ?Sized>(
        &mut self,
        backend: &B,
        data: &crate::data::Dataset,
        mut progress: impl FnMut(usize, usize, &BatchStats),
    ) -> Result<BatchStats> {
        let mut rng = crate::rng::Rng::derive(self.cfg.seed, 1_000 + self.epoch as u64);
        let mut order: Vec<usize> = (0..data.len()).collect();
        for k in (1..order.len()).rev() {
            order.swap(k, rng.below(k + 1));
        }
        let lr = self.cfg.lr * self.cfg.lr_decay.powi(self.epoch as i32);
        let steps = self.exec.network.steps;
        let mut total = BatchStats::default();
        for (bi, idx) in order.chunks(self.cfg.batch.max(1)).enumerate() {
            let mut aug = crate::rng::Rng::derive(
                self.cfg.seed ^ 0xA5A5,
                (self.epoch * 1_000_000 + bi) as u64,
            );
            let spikes =
                crate::data::encode_batch(data, idx, steps, self.cfg.augment.then_some(&mut aug));
            let labels: Vec<u8> = idx.iter().map(|&i| data.labels[i]).collect();
            let noise = crate::neuron::pcg_hash(
                (self.epoch * 1_000_003 + bi) as u32 ^ self.cfg.seed as u32,
            );
            let (st, g) = forward_backward(
                &self.exec,
                &self.topo,
                backend,
                &[(self.input_pop(), spikes)],
                &labels,
                &self.cfg,
                self.epoch,
                noise,
            )?;
            self.adam
                .step(&mut self.exec.network, &g, lr, self.weight_limit);
            self.exec.update_weights();
            total = total.add(st);
            progress(
                (bi + 1) * self.cfg.batch.min(data.len()),
                data.len(),
                &total,
            );
        }
        self.epoch += 1;
        Ok(total)
    }

    /// Cross-entropy and accuracy on `data` (no augmentation, no regularisers).
    pub fn evaluate<B: Backend + ?Sized>(
        &self,
        backend: &B,
        data: &crate::data::Dataset,
        batch: usize,
    ) -> Result<BatchStats> {
        let steps = self.exec.network.steps;
        let r = self.topo.readout;
        let c = self.exec.network.populations[r].size;
        let mut total = BatchStats::default();
        let idx: Vec<usize> = (0..data.len()).collect();
        for (bi, chunk) in idx.chunks(batch.max(1)).enumerate() {
            let spikes = crate::data::encode_batch(data, chunk, steps, None);
            let noise = crate::neuron::pcg_hash(0xE7A1 ^ bi as u32);
            let out = self.exec.run_with_noise(
                backend,
                &[(self.input_pop(), spikes)],
                Observe::Scores,
                noise,
            )?;
            let sc = scores(&out, r, self.cfg.readout_scale);
            for (k, &i) in chunk.iter().enumerate() {
                let s = &sc[k * c..(k + 1) * c];
                let y = data.labels[i] as usize;
                let lse = log_sum_exp(s);
                total.loss += (lse - s[y]) as f64;
                total.correct += usize::from(argmax(s) == y);
                total.samples += 1;
            }
            for (p, pop) in self.exec.network.populations.iter().enumerate() {
                if let (PopulationKind::Lif, Some(t)) = (pop.kind, out.spikes.get(p)) {
                    total.hidden_spikes += t.len() as f64;
                }
            }
        }
        Ok(total)
    }

    /// The checkpoint of the current state.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            weights: self
                .exec
                .network
                .projections
                .iter()
                .map(|p| p.weights.clone())
                .collect(),
            adam: self.adam.clone(),
            epoch: self.epoch,
            config: self.cfg.clone(),
            history: self.history.clone(),
        }
    }

    /// Write the checkpoint atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let text = serde_json::to_string(&self.checkpoint()).expect("checkpoint serialises");
        crate::io::write_atomic(path, text.as_bytes())
    }

    /// Continue from a checkpoint written by [`Trainer::save`].
    pub fn resume(&mut self, path: &std::path::Path) -> Result<()> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let ck: Checkpoint = serde_json::from_str(&text).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let net = &mut self.exec.network;
        if ck.weights.len() != net.projections.len()
            || ck
                .weights
                .iter()
                .zip(&net.projections)
                .any(|(w, p)| w.len() != p.weights.len())
        {
            return Err(Error::Parse {
                path: path.to_path_buf(),
                message: "the checkpoint's weights do not fit this network".into(),
            });
        }
        for (p, w) in net.projections.iter_mut().zip(ck.weights) {
            p.weights = w;
        }
        self.exec.recompile();
        self.adam = ck.adam;
        self.epoch = ck.epoch;
        self.cfg = ck.config;
        self.history = ck.history;
        Ok(())
    }
}

//! Surrogate-gradient training through time, hardware-in-the-loop style: the forward pass runs
//! on the emulator (any backend, partition by partition, spikes replayed) and records the
//! observables — spikes and membranes of every population; the backward pass ([`backward`])
//! recomputes the model's gradients from those observables on the host, with the SuperSpike
//! surrogate, recurrent loops through time; the loss ([`loss`]) is the cross-entropy of the
//! readout's score (the maximum over time, or the readout's [`crate::Score`]); the optimiser
//! ([`optimiser`]) is Adam with the published schedule. A backend with a device of its own
//! (a GPU) runs the backward pass and the optimiser there instead, where it can
//! ([`Trainer::host_backward_reason`]). This module holds the configuration and the
//! [`Trainer`]: epochs, evaluation, checkpoints, divergence and silence checks.

pub mod backward;
pub mod loss;
pub mod optimiser;

pub use backward::{gradients, gradients_from, readout_scores, Topology, Upstream};
pub use loss::{argmax, log_sum_exp, scores};
pub use optimiser::Adam;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::network::PopulationKind;
use crate::run::executor::{Executor, Observe};
use crate::spikes::encode::Encoding;
use crate::spikes::store::SpikeTrains;
use serde::{Deserialize, Serialize};
use std::ops::Range;

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
    /// Warm-up: over the first this many epochs the learning rate rises linearly, epoch `e`
    /// (1-based) getting `e / lr_warmup` of the decayed rate (0: none). A network whose
    /// initial scores are far off takes its largest gradient steps at the start; smaller ones
    /// there keep them from silencing a layer for good.
    #[serde(skip_serializing_if = "is_zero")]
    pub lr_warmup: usize,
    /// Readout score = this × the readout membrane's maximum over time (or the readout's own
    /// score: the mean of its last steps, the sum).
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
    /// How images become input spikes (default: time-to-first-spike of every pixel).
    #[serde(skip_serializing_if = "is_latency")]
    pub encoding: Encoding,
    /// Early stopping: end with the weights of the epoch whose evaluation was best (highest
    /// accuracy; ties: lower loss, then the earlier epoch) instead of the last epoch's
    /// ([`Trainer::record`], [`Trainer::restore_best`]). The set evaluated every epoch must
    /// then be a validation set: selecting on the test set would overstate its accuracy.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub keep_best: bool,
    /// A readout scored by its maximum over time ([`Score::Max`]) gets no gradient for a
    /// class whose maximum comes before any spike reached the readout: there the membrane is
    /// its start (or noise) and does not depend on the weights, so a class pushed below its
    /// start on every sample stays there and is never predicted again. With this, such a
    /// class's gradient goes instead to its membrane's mean over the steps from the first
    /// spike the readout received on (the gradient of that mean), which raises the trace
    /// until its maximum comes after the input again. Off by default (the published MNIST
    /// set-up never needs it).
    ///
    /// [`Score::Max`]: crate::model::network::Score::Max
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub revive_silent_classes: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_latency(e: &Encoding) -> bool {
    *e == Encoding::Latency
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch: 100,
            lr: 0.002,
            lr_decay: 0.97,
            lr_warmup: 0,
            readout_scale: 3.0,
            surrogate_alpha: 50.0,
            reg_readout: 1.6e-4,
            reg_spikes: 0.0025,
            reg_spikes_decay: 0.985,
            reg_weights: 0.0033,
            augment: true,
            seed: 1,
            encoding: Encoding::Latency,
            keep_best: false,
            revive_silent_classes: false,
        }
    }
}

impl TrainConfig {
    /// The learning rate of epoch `epoch` (0-based): `lr` decayed by `lr_decay` per epoch,
    /// times the warm-up's factor.
    pub fn lr_at(&self, epoch: usize) -> f32 {
        let warm = if epoch < self.lr_warmup {
            (epoch + 1) as f32 / self.lr_warmup as f32
        } else {
            1.0
        };
        self.lr * self.lr_decay.powi(epoch as i32) * warm
    }

    /// Check every value: an error names the option and what it must be.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::option(
                "--epochs",
                0,
                "at least 1 (nothing to train)",
            ));
        }
        if self.batch == 0 {
            return Err(Error::option("--batch", 0, "at least 1 sample per step"));
        }
        let positive = |name: &str, v: f32| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::option(name, v, "a finite number above 0"))
            }
        };
        let non_negative = |name: &str, v: f32| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(Error::option(name, v, "a finite number of at least 0"))
            }
        };
        let factor = |name: &str, v: f32| {
            if v.is_finite() && v > 0.0 && v <= 1.0 {
                Ok(())
            } else {
                Err(Error::option(name, v, "a factor in (0, 1]"))
            }
        };
        positive("--lr", self.lr)?;
        factor("lr_decay", self.lr_decay)?;
        positive("readout_scale", self.readout_scale)?;
        positive("surrogate_alpha", self.surrogate_alpha)?;
        non_negative("reg_readout", self.reg_readout)?;
        non_negative("reg_spikes", self.reg_spikes)?;
        factor("reg_spikes_decay", self.reg_spikes_decay)?;
        non_negative("reg_weights", self.reg_weights)?;
        if self.encoding == (Encoding::Rows { steps_per_row: 0 }) {
            return Err(Error::option("steps_per_row", 0, "at least 1 step per row"));
        }
        Ok(())
    }
}

/// Loss, accuracy and activity of one batch (or a sum of batches).
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
    /// Cross-chip deliveries a system's links were asked for (0 without a system).
    pub link_deliveries: f64,
    /// Of those, dropped (bandwidth or receive buffer).
    pub link_dropped: f64,
    /// Per population (indexed by id; 0 for non-spiking ones): samples in which the
    /// population emitted no spike at all.
    pub silent_samples: Vec<usize>,
}

impl std::ops::Add for BatchStats {
    type Output = BatchStats;

    /// These plus `o`.
    fn add(mut self, o: BatchStats) -> Self {
        self.loss += o.loss;
        self.correct += o.correct;
        self.samples += o.samples;
        self.hidden_spikes += o.hidden_spikes;
        self.link_deliveries += o.link_deliveries;
        self.link_dropped += o.link_dropped;
        if self.silent_samples.len() < o.silent_samples.len() {
            self.silent_samples.resize(o.silent_samples.len(), 0);
        }
        for (a, b) in self.silent_samples.iter_mut().zip(&o.silent_samples) {
            *a += b;
        }
        self
    }
}

impl BatchStats {
    /// Mean loss per sample.
    pub fn mean_loss(&self) -> f64 {
        self.loss / self.samples.max(1) as f64
    }

    /// Fraction classified correctly.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.samples.max(1) as f64
    }

    /// Fraction of the cross-chip deliveries the links dropped (0 without any).
    pub fn link_drop_fraction(&self) -> f64 {
        self.link_dropped / self.link_deliveries.max(1.0)
    }

    /// These as numbers to send to other processes ([`BatchStats::from_wire`] reads them).
    pub fn to_wire(&self) -> Vec<f64> {
        let mut s = vec![
            self.loss,
            self.correct as f64,
            self.samples as f64,
            self.hidden_spikes,
            self.link_deliveries,
            self.link_dropped,
        ];
        s.extend(self.silent_samples.iter().map(|&x| x as f64));
        s
    }

    /// Stats sent by [`BatchStats::to_wire`].
    pub fn from_wire(s: &[f64]) -> Self {
        BatchStats {
            loss: s[0],
            correct: s[1] as usize,
            samples: s[2] as usize,
            hidden_spikes: s[3],
            link_deliveries: s[4],
            link_dropped: s[5],
            silent_samples: s[6..].iter().map(|&x| x as usize).collect(),
        }
    }
}

/// The first difference between the checkpoint's items `a` and the network's `b` (of kind
/// `what`), in words.
fn first_difference_in<T>(
    what: &str,
    a: &[T],
    b: &[T],
    fits: impl Fn(&T, &T) -> bool,
    describe: impl Fn(&T) -> String,
) -> Option<String> {
    if a.len() != b.len() {
        return Some(format!(
            "it was trained on a network with {} {what}s, this one has {}",
            a.len(),
            b.len()
        ));
    }
    let k = a.iter().zip(b).position(|(x, y)| !fits(x, y))?;
    Some(format!(
        "{what} #{k}: it was trained on {}, this network has {}",
        describe(&a[k]),
        describe(&b[k])
    ))
}

/// Samples of `spikes` (one train per population) in which each spiking population of
/// `network` emitted nothing.
fn silent_samples(
    network: &crate::model::network::Network,
    spikes: &crate::spikes::store::SpikeStore,
) -> Vec<usize> {
    network
        .populations
        .iter()
        .enumerate()
        .map(|(p, pop)| match (pop.kind, spikes.get(p)) {
            (PopulationKind::Lif, Some(t)) => {
                (0..t.samples()).filter(|&s| t.sample(s).is_empty()).count()
            }
            _ => 0,
        })
        .collect()
}

/// Warnings for spiking populations that were silent for (almost) all of `stats`' samples:
/// what usually helps, by name.
pub fn silence_warnings(
    network: &crate::model::network::Network,
    stats: &BatchStats,
    when: &str,
) -> Vec<String> {
    stats
        .silent_samples
        .iter()
        .enumerate()
        .filter(|&(_, &silent)| stats.samples > 0 && silent as f64 >= 0.99 * stats.samples as f64)
        .map(|(p, &silent)| {
            format!(
                "population '{}' emitted no spikes in {silent} of {} samples {when}; gradients \
                 cannot reach the layers before it. What usually helps: a larger initial weight \
                 (init.mean / init.std of the projections into it), a lower threshold v_th, or a \
                 weaker spike regulariser (reg_spikes)",
                network.populations[p].name, stats.samples
            )
        })
        .collect()
}

/// Where one optimiser step's time went.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepTimings {
    /// Inside the backend: the forward pass of every partition.
    pub forward: std::time::Duration,
    /// Gradients from the observables.
    pub backward: std::time::Duration,
    /// Adam, the regulariser and writing the weights (and resident copies) in place.
    pub optimiser: std::time::Duration,
    /// Everything else outside the backend: encoding, replay, bookkeeping.
    pub host: std::time::Duration,
    /// With several processes: exchanging the gradient sums (part of `host`).
    pub exchange: std::time::Duration,
    /// With several processes: bytes of this process's part of the exchange (its gradient sums
    /// and batch statistics), which the all-gather delivers to each of the others.
    pub exchanged_bytes: u64,
    /// Forward and backward passes this process ran one after another: the pieces its shard
    /// of the batch was cut into to fit the memory limit ([`Trainer::pieces`]; 1 where it fit).
    pub pieces: usize,
}

impl StepTimings {
    /// Add `o` to these.
    pub fn add(&mut self, o: &StepTimings) {
        self.forward += o.forward;
        self.backward += o.backward;
        self.optimiser += o.optimiser;
        self.host += o.host;
        self.exchange += o.exchange;
        self.exchanged_bytes += o.exchanged_bytes;
        self.pieces += o.pieces;
    }
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
    /// Mean test (or validation) cross-entropy; absent when there was no test set (absent
    /// from the checkpoint too, never `null`; older checkpoints' `null` reads as absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_loss: Option<f64>,
    /// Test accuracy; absent when there was no test set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_accuracy: Option<f64>,
    /// Hidden spikes per sample.
    pub hidden_spikes: f64,
    /// Wall time of the epoch's training part in seconds.
    pub seconds: f64,
    /// Training samples per second.
    pub samples_per_s: f64,
}

/// What a checkpoint holds: enough to continue exactly where training stopped. A key it does
/// not know is an error (as in network, substrate and spike files; no key of it was ever
/// removed, so every checkpoint this project wrote loads).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Time steps the network was trained with (absent in older checkpoints).
    #[serde(default)]
    pub steps: Option<u32>,
    /// The structure of the network it was trained on, checked on load so that the weights
    /// of another network with the same weight counts are refused (absent in older
    /// checkpoints, which load unchecked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structure: Option<Structure>,
    /// The mode it was trained in (absent in older checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<crate::model::analog::Mode>,
}

/// The fingerprint of a network's structure that a checkpoint carries: what its weights mean.
/// Steps, parameters and weights are not part of it (a checkpoint may change them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Structure {
    /// Every population in order.
    pub populations: Vec<PopulationShape>,
    /// Every projection in order.
    pub projections: Vec<ProjectionShape>,
}

/// A population as [`Structure`] records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopulationShape {
    /// Name.
    pub name: String,
    /// Neurons.
    pub size: usize,
    /// Input, LIF or readout.
    pub kind: PopulationKind,
    /// Image shape `[channels, height, width]`, where the network gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<[usize; 3]>,
}

/// A projection as [`Structure`] records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectionShape {
    /// Name.
    pub name: String,
    /// Source population.
    pub source: String,
    /// Target population.
    pub target: String,
    /// Connectivity: `dense`, `sparse`, or `conv2d k<kernel> s<stride> p<padding>`.
    pub connectivity: String,
    /// Number of weights.
    pub weights: usize,
}

impl Structure {
    /// The structure of `network`.
    pub fn of(network: &crate::model::network::Network) -> Self {
        use crate::model::network::Connectivity;
        Structure {
            populations: network
                .populations
                .iter()
                .map(|p| PopulationShape {
                    name: p.name.clone(),
                    size: p.size,
                    kind: p.kind,
                    shape: p.shape,
                })
                .collect(),
            projections: network
                .projections
                .iter()
                .enumerate()
                .map(|(k, p)| ProjectionShape {
                    name: p.name.clone(),
                    source: p.source.clone(),
                    target: p.target.clone(),
                    connectivity: match &p.connectivity {
                        Connectivity::Dense => "dense".into(),
                        Connectivity::Sparse { .. } => "sparse".into(),
                        Connectivity::Conv2d {
                            kernel,
                            stride,
                            padding,
                        } => format!("conv2d k{kernel} s{stride} p{padding}"),
                    },
                    weights: network.weight_count(k).unwrap_or(p.weights.len()),
                })
                .collect(),
        }
    }

    /// The first difference between this (the checkpoint's) and `now` (the network's), in
    /// words; `None` when they are equal.
    pub fn first_difference(&self, now: &Structure) -> Option<String> {
        first_difference_in(
            "population",
            &self.populations,
            &now.populations,
            PopulationShape::fits,
            describe_population,
        )
        .or_else(|| {
            first_difference_in(
                "projection",
                &self.projections,
                &now.projections,
                |a, b| a == b,
                describe_projection,
            )
        })
    }
}

impl PopulationShape {
    /// Whether weights trained with this population fit `now`: the same name, size and kind,
    /// and the same image shape where both give one. A shape lays the same neurons out as an
    /// image and changes no weight's meaning (projections are compared apart, convolutions
    /// with their kernels and weight counts): the MNIST example's network has none,
    /// `examples/networks/mnist.toml` gives its input `[1, 28, 28]`, and the example's
    /// checkpoint fits both.
    fn fits(&self, now: &Self) -> bool {
        let shapes = match (self.shape, now.shape) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        self.name == now.name && self.size == now.size && self.kind == now.kind && shapes
    }
}

fn describe_population(p: &PopulationShape) -> String {
    let shape = p.shape.map_or(String::new(), |s| format!(", shape {s:?}"));
    let kind = format!("{:?}", p.kind).to_lowercase();
    format!("'{}' ({} neurons, {kind}{shape})", p.name, p.size)
}

fn describe_projection(p: &ProjectionShape) -> String {
    format!(
        "'{}' ({} -> {}, {}, {} weights)",
        p.name, p.source, p.target, p.connectivity, p.weights
    )
}

impl Checkpoint {
    /// Read a checkpoint written by [`Trainer::save`].
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let ck: Self = crate::model::network::Format::Json.parse(&text, path)?;
        if let Some(s) = ck.steps.filter(|s| !(1..=crate::MAX_STEPS).contains(s)) {
            return Err(Error::input(
                "steps",
                format!("{s} recorded; a run takes 1 to {}", crate::MAX_STEPS),
            )
            .in_file(path));
        }
        Ok(ck)
    }

    /// Check the weights fit `network`: the same structure (where the checkpoint records
    /// one), one array per projection, each of its length, all finite.
    pub fn check_weights(
        &self,
        network: &crate::model::network::Network,
    ) -> std::result::Result<(), String> {
        if let Some(difference) = self
            .structure
            .as_ref()
            .and_then(|s| s.first_difference(&Structure::of(network)))
        {
            return Err(format!("another network: {difference}"));
        }
        if self.weights.len() != network.projections.len() {
            return Err(format!(
                "{} weight arrays, the network has {} projections",
                self.weights.len(),
                network.projections.len()
            ));
        }
        for (w, p) in self.weights.iter().zip(&network.projections) {
            if w.len() != p.weights.len() {
                return Err(format!(
                    "projection '{}': {} weights, the network needs {}",
                    p.name,
                    w.len(),
                    p.weights.len()
                ));
            }
            if let Some(k) = w.iter().position(|x| !x.is_finite()) {
                return Err(format!(
                    "projection '{}': weight {k} is not finite ({})",
                    p.name, w[k]
                ));
            }
        }
        Ok(())
    }

    /// Put the weights into `network` (checked first).
    pub fn apply_weights(
        &self,
        network: &mut crate::model::network::Network,
        path: &std::path::Path,
    ) -> Result<()> {
        self.check_weights(network)
            .map_err(|problem| Error::Checkpoint {
                path: path.to_path_buf(),
                problem,
            })?;
        for (p, w) in network.projections.iter_mut().zip(&self.weights) {
            p.weights.clone_from(w);
        }
        Ok(())
    }
}

/// Host memory one sample of a training batch takes while its backward pass runs on the host
/// (what [`Trainer::pieces`] fits a batch's pieces into and [`Trainer::new`] checks for the
/// smallest piece against the memory limit, `--max-memory`, before anything is allocated).
/// Spikes come on top: 8 bytes per spike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrainMemory {
    /// Neurons whose membranes are recorded (every non-input population).
    pub neurons: u64,
    /// Of them, those whose membranes are kept as the CADC's 8-bit codes (emulated hidden
    /// populations, [`crate::Observe::CompactTraces`]).
    pub coded: u64,
    /// Steps of a run.
    pub steps: u64,
    /// The recorded membranes, twice (the backend's copy and the populations' arrays): 4
    /// bytes per neuron and step, 1 for a code.
    pub traces: u64,
    /// The current gradients of the backward pass, `f32` per neuron and step.
    pub gradients: u64,
}

impl TrainMemory {
    /// The memory per sample of training `exec`'s network with the backward pass on the host,
    /// on a backend that records codes or not ([`crate::Backend::records_codes`]).
    pub fn of(exec: &Executor, codes: bool) -> Self {
        let network = &exec.network;
        let kept = exec.coded_populations();
        let (mut neurons, mut coded) = (0u64, 0u64);
        for (p, q) in network.populations.iter().zip(&kept) {
            if p.kind != PopulationKind::Input {
                neurons += p.size as u64;
                // A run spread over processes gathers values.
                if codes && q.is_some() && exec.share().is_none() {
                    coded += p.size as u64;
                }
            }
        }
        let steps = network.steps as u64;
        let per_step = (neurons - coded) * 4 + coded;
        TrainMemory {
            neurons,
            coded,
            steps,
            traces: crate::memory::product(&[per_step, steps, 2]),
            gradients: crate::memory::product(&[neurons, steps, 4]),
        }
    }

    /// Bytes per sample.
    pub fn per_sample(&self) -> u64 {
        self.traces.saturating_add(self.gradients)
    }
}

/// Training state: the executor (whose network holds the weights), the optimiser and history.
#[derive(Debug)]
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
    /// With `cfg.keep_best`: the checkpoint of the epoch whose evaluation was best so far
    /// ([`Trainer::record`]); `None` before the first evaluated epoch or without `keep_best`.
    pub best: Option<Checkpoint>,
    /// Largest weight magnitude (the chip's range in emulated mode).
    pub weight_limit: f32,
    /// Where the optimiser stages new weights for the programs (made at the first step).
    stage: Option<crate::plan::compile::WeightStage>,
    /// A training on the backend's device, with the executor generation it was last in step
    /// with (the host's weights are stale while it trains; [`Trainer::sync`]).
    device: Option<(u64, crate::backend::Resident)>,
    /// Says once that the backward pass runs on the host although the backend trains on its
    /// device ([`Trainer::host_backward_reason`]).
    host_note: std::sync::Once,
    /// The memory a batch's pieces must fit ([`Trainer::pieces`]).
    memory_budget: u64,
}

impl Trainer {
    /// A trainer for `exec` (weights as they are); `cfg` is checked.
    pub fn new(exec: Executor, cfg: TrainConfig) -> Result<Self> {
        cfg.validate()?;
        // Waves run fused (CPU; the GPU trains by rounds): the MNIST training step 12–15 %
        // faster than partition by partition (forward faster; the fused copy of the weights
        // rewritten after every optimiser step, in parallel), with the same results either way.
        // A batch that does not fit runs in pieces ([`Trainer::pieces`]); the smallest piece,
        // one chunk of samples, must fit: counted with codes where the executor has them (the
        // least it can need; each piece is checked again, on its backend, before it runs).
        let mem = TrainMemory::of(&exec, true);
        let least = cfg.batch.min(backward::GRAD_CHUNK);
        crate::memory::check(
            || {
                format!(
                    "the smallest piece of a training batch, {least} samples x {} per sample \
                     (membranes and current gradients of {} neurons x {} steps)",
                    crate::error::human_bytes(mem.per_sample()),
                    mem.neurons,
                    mem.steps
                )
            },
            mem.per_sample().saturating_mul(least as u64),
        )?;
        let topo = Topology::new(
            &exec.network,
            exec.plan.substrate.dt_us,
            &exec.plan.link_delays(&exec.network)?,
        )?;
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
            best: None,
            weight_limit,
            stage: None,
            device: None,
            host_note: std::sync::Once::new(),
            memory_budget: crate::memory::memory_limit(),
        })
    }

    /// Train one epoch over `data`; `progress(done, total, stats so far)` after each batch.
    /// A non-finite loss or weight stops it with [`Error::Diverged`] naming the epoch and the
    /// batch; the weights are then not to be saved.
    pub fn train_epoch<B: Backend + ?Sized>(
        &mut self,
        backend: &B,
        data: &crate::data::Dataset,
        progress: impl FnMut(usize, usize, &BatchStats),
    ) -> Result<BatchStats> {
        self.train_epoch_in(backend, &crate::dist::comm::Single, data, progress)
    }

    /// [`Trainer::train_epoch`] by the processes of `comm` together
    /// ([`Trainer::train_batch_in`]): every process sees the same data in the same order and
    /// ends with the same weights.
    pub fn train_epoch_in<B: Backend + ?Sized>(
        &mut self,
        backend: &B,
        comm: &dyn crate::dist::comm::Communicator,
        data: &crate::data::Dataset,
        mut progress: impl FnMut(usize, usize, &BatchStats),
    ) -> Result<BatchStats> {
        self.check_data(data)?;
        let [channels, h, w] = data.shape;
        if self.cfg.augment && channels == 1 && (h == 1 || w == 1) && h * w > 1 {
            return Err(Error::input(
                "training data",
                format!(
                    "images of shape {:?} are flat, but augmentation rotates every image: \
                     give the images their height and width, or turn augmentation off",
                    data.shape
                ),
            ));
        }
        let mut rng = crate::rng::Rng::derive(self.cfg.seed, 1_000 + self.epoch as u64);
        let mut order: Vec<usize> = (0..data.len()).collect();
        for k in (1..order.len()).rev() {
            order.swap(k, rng.below(k + 1));
        }
        let steps = self.exec.network.steps;
        let mut total = BatchStats::default();
        let mut done = 0;
        for (bi, idx) in order.chunks(self.cfg.batch).enumerate() {
            let t0 = std::time::Instant::now();
            let mut aug = crate::rng::Rng::derive(
                self.cfg.seed ^ 0xA5A5,
                (self.epoch * 1_000_000 + bi) as u64,
            );
            // With several processes, each encodes only its shard.
            let spikes = crate::spikes::encode::encode_part(
                data,
                idx,
                steps,
                self.cfg.encoding,
                self.cfg.augment.then_some(&mut aug),
                Self::batch_shard(idx.len(), self.samples_comm(comm)),
            );
            let labels: Vec<u8> = idx.iter().map(|&i| data.labels[i]).collect();
            let encode = t0.elapsed();
            let (st, _) = self.train_batch_in(backend, comm, spikes, &labels, bi, encode)?;
            total = total + st;
            done += idx.len();
            progress(done, data.len(), &total);
        }
        self.sync(backend)?;
        self.epoch += 1;
        Ok(total)
    }

    /// The backend's own training on its device, where this network can train there (see
    /// [`Trainer::host_backward_reason`]); the first time it cannot, it says why.
    pub fn device_training<'b, B: Backend + ?Sized>(
        &self,
        backend: &'b B,
    ) -> Option<&'b dyn crate::backend::DeviceTraining> {
        let dev = backend.device_training()?;
        if let Some(why) = self.host_backward_reason(dev) {
            self.host_note.call_once(|| {
                eprintln!(
                    "note: {why}: the backward pass runs on the CPU, the forward on the device"
                )
            });
            return None;
        }
        Some(dev)
    }

    /// Why this network's backward pass cannot run on `dev`, a device that trains there, if it
    /// cannot: the device needs every system run to be one program (unlimited links) and its
    /// runs on this process, one delay per projection, each population whole where it shares
    /// a program, recurrent loops within its workgroup memory, kernels it can run
    /// (`DeviceTraining::unfit`), and no reviving of silent classes.
    pub fn host_backward_reason(&self, dev: &dyn crate::backend::DeviceTraining) -> Option<String> {
        let net = &self.exec.network;
        if self.exec.share().is_some() {
            return Some("its runs are spread over processes by chips".into());
        }
        if !self.exec.exchanges_fused() {
            return Some(
                "a system run whose chips exchange spikes is not one program (its links are \
                 limited, or its chips differ in stages, readout or weight map): its chips \
                 step in lock-step windows on the host's cores and return their traces there"
                    .into(),
            );
        }
        if let Some(q) = self.topo.per_synapse_delays() {
            return Some(format!(
                "projection '{}' has synapses that cross chips and synapses that do not (the \
                 device's backward pass takes one delay a projection)",
                net.projections[q].name
            ));
        }
        // The device keeps the traces of a program of several populations as one row a
        // step, which needs each of them whole in it.
        let programs = self.exec.run_programs();
        for prog in &programs {
            let runs = prog.population_runs();
            if runs.len() < 2 {
                continue;
            }
            if let Some(&(_, pop, _, _)) = runs
                .iter()
                .find(|&&(_, p, first, len)| first != 0 || len != net.populations[p].size)
            {
                return Some(format!(
                    "a run holds part of population '{}' together with other populations (the \
                     device keeps such a run's traces by whole populations)",
                    net.populations[pop].name
                ));
            }
        }
        let most = dev.largest_loop();
        for l in self.topo.loops() {
            let name = &net.populations[l[0]].name;
            let neurons: usize = l.iter().map(|&p| net.populations[p].size).sum();
            if neurons > most {
                return Some(if l.len() > 1 {
                    format!(
                        "the recurrent loop of '{name}' spans {} populations of {neurons} \
                         neurons (the device walks loops of up to {most})",
                        l.len()
                    )
                } else {
                    format!(
                        "population '{name}' projects onto itself with {neurons} neurons (the \
                         device walks such loops of up to {most})"
                    )
                });
            }
        }
        let maps = self.exec.weight_maps();
        if let Some(why) = dev.unfit(&self.topo.structure(net, &maps, &programs)) {
            return Some(why);
        }
        // Reviving silent classes applies to the maximum over time only.
        let r = &net.populations[self.topo.readout()];
        (self.cfg.revive_silent_classes && r.score.is_max()).then(|| {
            format!(
                "readout '{}' revives silent classes (the device's loss does not)",
                r.name
            )
        })
    }

    /// Bring the host's weights, optimiser state and compiled programs up to date with a
    /// training on the backend's device (after [`Trainer::train_batch`]; [`Trainer::train_epoch`]
    /// does it at its end). Nothing to do for a backend that trains on the host.
    pub fn sync<B: Backend + ?Sized>(&mut self, backend: &B) -> Result<()> {
        let (Some(dev), Some((_, state))) = (self.device_training(backend), &self.device) else {
            return Ok(());
        };
        let mut weights = self.exec.network.weights();
        dev.read(state, &mut weights, &mut self.adam)?;
        for (p, w) in self.exec.network.projections.iter_mut().zip(weights) {
            p.weights = w;
        }
        self.exec.update_weights()?;
        if let Some((generation, _)) = &mut self.device {
            *generation = self.exec.generation();
        }
        Ok(())
    }

    /// The last batch's gradients on the backend's device (see
    /// `DeviceTraining::gradients`); `None` for a backend that trains on
    /// the host or before the first batch.
    pub fn device_gradients<B: Backend + ?Sized>(
        &self,
        backend: &B,
    ) -> Result<Option<Vec<Vec<f32>>>> {
        match (self.device_training(backend), &self.device) {
            (Some(dev), Some((_, state))) => dev.gradients(state).map(Some),
            _ => Ok(None),
        }
    }

    /// One optimiser step on a batch of encoded inputs (batch `bi` of the current epoch, which
    /// seeds its noise): forward, backward, Adam, weights rewritten in place. `host` is time
    /// already spent on the batch outside the backend (encoding), added to the timings'.
    pub fn train_batch<B: Backend + ?Sized>(
        &mut self,
        backend: &B,
        spikes: SpikeTrains,
        labels: &[u8],
        bi: usize,
        host: std::time::Duration,
    ) -> Result<(BatchStats, StepTimings)> {
        self.without_link_counts(|t| {
            if let Some(dev) = t.device_training(backend) {
                return t.train_batch_device(backend, dev, spikes, labels, bi, host);
            }
            let one = &crate::dist::comm::Single;
            crate::threads::on_pool(|| {
                t.train_batch_host(backend, one, one, spikes, labels, bi, host)
            })
        })
    }

    /// `f` on this trainer with its runs not counting the links' traffic: a training run's is
    /// never reported (only evaluation's), so it is not counted.
    fn without_link_counts<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        self.exec.set_count_links(false);
        let out = f(self);
        self.exec.set_count_links(true);
        out
    }

    /// The processes of `comm` that share out the samples: all of them, or none where the
    /// executor is spread over them by chips (then every process takes every sample).
    fn samples_comm<'c>(
        &self,
        comm: &'c dyn crate::dist::comm::Communicator,
    ) -> &'c dyn crate::dist::comm::Communicator {
        if self.exec.share().is_some() && comm.chips().is_none() {
            &crate::dist::comm::Single
        } else {
            comm
        }
    }

    /// Adam on the batch's gradients `g` (the weight regulariser's loss added to `st`), the
    /// weights written into the programs and the residents; its duration.
    fn optimiser_step<B: Backend + ?Sized>(
        &mut self,
        backend: &B,
        st: &mut BatchStats,
        g: Vec<Vec<f32>>,
        lr: f32,
        bi: usize,
    ) -> Result<std::time::Duration> {
        use std::time::Instant;
        let diverged = |what: String| Error::Diverged {
            epoch: self.epoch + 1,
            batch: bi + 1,
            what,
        };
        if !st.loss.is_finite() {
            return Err(diverged(format!("the loss is {}", st.loss)));
        }
        let t2 = Instant::now();
        let mut stage = self.exec.weight_stage(self.stage.take())?;
        let (reg_loss, finite) = self.adam.step(
            &mut self.exec.network,
            &g,
            optimiser::StepSize {
                lr,
                limit: self.weight_limit,
                reg: self.cfg.reg_weights,
            },
            &mut stage,
        );
        st.loss += reg_loss * st.samples as f64;
        g.into_iter().for_each(crate::pool::give);
        if !finite {
            return Err(diverged("a weight became non-finite".into()));
        }
        self.exec.write_weights(&stage)?;
        self.stage = Some(stage);
        self.exec.prepare(backend)?;
        Ok(t2.elapsed())
    }

    /// [`Trainer::train_batch`] by the processes of `comm` together (data parallel): each
    /// runs the forward and backward pass of its shard of the batch — the samples of its
    /// subtree of the fixed reduction tree over the batch's 16-sample chunks
    /// (`backward::rank_chunks`) — the processes exchange their subtree sums, and every one
    /// combines them in the tree's order and takes the same optimiser step. The weights are
    /// those of one process, bit for bit, for any number of processes. On a
    /// backend that trains on its device (a GPU), each process runs its shard's forward pass
    /// there and the backward pass and step on the host: the GPU's forward pass is the CPU's,
    /// so the weights are those of one process on the CPU.
    pub fn train_batch_in<B: Backend + ?Sized>(
        &mut self,
        backend: &B,
        comm: &dyn crate::dist::comm::Communicator,
        spikes: SpikeTrains,
        labels: &[u8],
        bi: usize,
        host: std::time::Duration,
    ) -> Result<(BatchStats, StepTimings)> {
        if comm.size() == 1 && comm.chips().is_none() {
            return self.train_batch(backend, spikes, labels, bi, host);
        }
        // Spread by chips, every process takes the whole batch and the backward pass of all
        // of it (the same on each: the forward pass gave every process every output).
        let samples = self.samples_comm(comm);
        self.without_link_counts(|t| {
            t.train_batch_host(backend, samples, comm, spikes, labels, bi, host)
        })
    }

    /// One optimiser step with the backward pass and step on the host, by the processes of
    /// `comm` together ([`Trainer::train_batch_in`]; one process: [`Trainer::train_batch`] on
    /// a backend that trains on the host). `spikes`: the whole batch's, or only this
    /// process's shard ([`Trainer::batch_shard`]). `chips`: the processes the executor is
    /// spread over, if it is (then `comm` is one process).
    #[allow(clippy::too_many_arguments)]
    fn train_batch_host<B: Backend + ?Sized>(
        &mut self,
        backend: &B,
        comm: &dyn crate::dist::comm::Communicator,
        chips: &dyn crate::dist::comm::Communicator,
        spikes: SpikeTrains,
        labels: &[u8],
        bi: usize,
        host: std::time::Duration,
    ) -> Result<(BatchStats, StepTimings)> {
        use std::time::Instant;
        let lr = self.cfg.lr_at(self.epoch);
        let noise = self.noise_seed(bi);
        let mut timings = StepTimings {
            host,
            ..Default::default()
        };
        let b = labels.len();
        let Range { start: s0, end: s1 } = Self::batch_shard(b, comm);
        // The shard starts on a chunk and ends on one or at the batch's end.
        let mine = s0.div_ceil(backward::GRAD_CHUNK)..s1.div_ceil(backward::GRAD_CHUNK);
        let spikes = if spikes.samples() == s1 - s0 {
            spikes
        } else if spikes.samples() == b {
            spikes.slice(s0..s1)
        } else {
            return Err(Error::input(
                "spikes",
                format!(
                    "{} samples for a batch of {b} of which this process takes {}",
                    spikes.samples(),
                    s1 - s0
                ),
            ));
        };
        let mut part = None;
        if s0 < s1 {
            // Where the membranes and gradients of the whole shard exceed the memory limit,
            // its chunks run in pieces one after another (the subtrees `rank_chunks` cuts its
            // tree into, each piece's samples with their own noise streams), their sums
            // combined in the tree's order: the same sums as in one piece, bit for bit.
            let codes = backend.records_codes();
            let pieces = self.cut(mine.len(), codes);
            let per_sample = TrainMemory::of(&self.exec, codes).per_sample();
            let mut parts = Vec::with_capacity(pieces.len());
            let mut spikes = Some(spikes);
            for piece in pieces {
                let chunks = mine.start + piece.start..mine.start + piece.end;
                let (p0, p1) = (
                    (chunks.start * backward::GRAD_CHUNK).min(s1),
                    (chunks.end * backward::GRAD_CHUNK).min(s1),
                );
                if p0 >= p1 {
                    parts.push(None);
                    continue;
                }
                // A batch larger than the trainer was made for may bring a chunk over the
                // limit that `Trainer::new` did not see.
                crate::memory::check_within(
                    || {
                        format!(
                            "a piece of a training batch, {} samples x {} per sample",
                            p1 - p0,
                            crate::error::human_bytes(per_sample)
                        )
                    },
                    per_sample.saturating_mul((p1 - p0) as u64),
                    self.memory_budget,
                )?;
                let input = if (p0, p1) == (s0, s1) {
                    spikes.take().expect("the shard is one piece")
                } else {
                    spikes
                        .as_ref()
                        .expect("pieces of the shard")
                        .slice(p0 - s0..p1 - s0)
                };
                let t0 = Instant::now();
                let out = self.exec.run_samples_in(
                    backend,
                    &[(self.topo.input(), input)],
                    Observe::CompactTraces,
                    noise,
                    p0 as u32,
                    chips,
                )?;
                timings.forward += out.stats.backend;
                timings.host += t0.elapsed().saturating_sub(out.stats.backend);
                let t1 = Instant::now();
                let (mut st, acc) = backward::chunk_gradients(
                    &self.exec.network,
                    &self.topo,
                    &out,
                    labels,
                    &self.cfg,
                    self.epoch,
                    chunks,
                    p0,
                );
                st.silent_samples = silent_samples(&self.exec.network, &out.spikes);
                timings.backward += t1.elapsed();
                timings.pieces += 1;
                parts.push(Some((st, acc)));
            }
            part = backward::join_ranks(&mut parts, &backward::add_parts);
        }
        if comm.size() > 1 {
            timings.exchanged_bytes = part.as_ref().map_or(0, |(st, acc)| {
                (4 * acc.iter().map(Vec::len).sum::<usize>() + 8 * st.to_wire().len()) as u64
            });
        }
        let t2 = Instant::now();
        let (mut st, acc) = backward::combine_ranks(comm, &self.topo, part);
        if comm.size() > 1 {
            timings.exchange = t2.elapsed();
        }
        timings.host += t2.elapsed();
        let t3 = Instant::now();
        let g = backward::to_weight_layout(&self.exec.network, &self.topo, acc);
        timings.backward += t3.elapsed();
        timings.optimiser = self.optimiser_step(backend, &mut st, g, lr, bi)?;
        Ok((st, timings))
    }

    /// How many pieces a training step on `backend` with the backward pass on the host
    /// ([`Trainer::train_batch`], [`Trainer::train_batch_in`]) runs `chunks` chunks of its
    /// samples in, one after another, so that each piece's membranes and current gradients
    /// fit the memory limit ([`Trainer::memory_budget`]): 1 where they fit together, and
    /// always 1 for an executor spread over processes by chips (whose runs are collective).
    /// Each piece's weight gradients are kept until the pieces are joined (one copy of the
    /// weights per piece on top of the estimate).
    pub fn pieces<B: Backend + ?Sized>(&self, chunks: usize, backend: &B) -> usize {
        let parts = self.cut(chunks, backend.records_codes());
        parts.iter().filter(|r| !r.is_empty()).count()
    }

    /// `chunks` chunks cut into subtrees of the reduction tree ([`backward::rank_chunks`],
    /// some perhaps empty) whose samples' memory fits the budget: the fewest parts among the
    /// cuts `rank_chunks` makes, a chunk a piece at the most.
    fn cut(&self, chunks: usize, codes: bool) -> Vec<Range<usize>> {
        if self.exec.share().is_some() {
            return backward::rank_chunks(chunks, 1);
        }
        let per_chunk = TrainMemory::of(&self.exec, codes)
            .per_sample()
            .saturating_mul(backward::GRAD_CHUNK as u64)
            .max(1);
        let fit = (self.memory_budget / per_chunk).max(1) as usize;
        // As many parts as the next power of two leave one chunk each.
        let most = chunks.max(1).next_power_of_two();
        let k = (1..most)
            .find(|&k| {
                backward::rank_chunks(chunks, k)
                    .iter()
                    .all(|r| r.len() <= fit)
            })
            .unwrap_or(most);
        backward::rank_chunks(chunks, k)
    }

    /// The memory limit [`Trainer::pieces`] fits a batch into: the process's
    /// ([`crate::memory::memory_limit`]) when the trainer was made.
    pub fn memory_budget(&self) -> u64 {
        self.memory_budget
    }

    /// Set the limit [`Trainer::pieces`] fits a batch into (the results do not depend on it).
    pub fn set_memory_budget(&mut self, bytes: u64) {
        self.memory_budget = bytes;
    }

    /// The samples of a batch of `b` that this process of `comm` trains in
    /// [`Trainer::train_batch_in`]: those of its subtree of the reduction tree over the
    /// batch's chunks (all of them for one process).
    pub fn batch_shard(b: usize, comm: &dyn crate::dist::comm::Communicator) -> Range<usize> {
        if comm.size() == 1 {
            return 0..b;
        }
        let mine = backward::rank_chunks(b.div_ceil(backward::GRAD_CHUNK), comm.size())
            [comm.rank()]
        .clone();
        (mine.start * backward::GRAD_CHUNK).min(b)..(mine.end * backward::GRAD_CHUNK).min(b)
    }

    /// The seed of the temporal noise of batch `bi` of the current epoch (the forward pass of
    /// [`Trainer::train_batch`] runs with it).
    pub fn noise_seed(&self, bi: usize) -> u32 {
        crate::model::neuron::pcg_hash((self.epoch * 1_000_003 + bi) as u32 ^ self.cfg.seed as u32)
    }

    /// [`Trainer::train_batch`] on a backend that trains on its device: per chunk of the batch
    /// (as many samples as the device's regions hold), the forward pass with the traces kept
    /// there and the backward pass there; then the optimiser step there. The host encodes,
    /// replays spikes and counts them for the spike regulariser's loss.
    fn train_batch_device<B: Backend + ?Sized>(
        &mut self,
        backend: &B,
        dev: &dyn crate::backend::DeviceTraining,
        spikes: SpikeTrains,
        labels: &[u8],
        bi: usize,
        host: std::time::Duration,
    ) -> Result<(BatchStats, StepTimings)> {
        use std::time::Instant;
        let lr = self.cfg.lr_at(self.epoch);
        let noise = self.noise_seed(bi);
        let lam = self.cfg.reg_spikes * self.cfg.reg_spikes_decay.powi(self.epoch as i32);
        let mut timings = StepTimings {
            host,
            ..Default::default()
        };
        let t0 = Instant::now();
        let generation = self.exec.generation();
        let mut state = match self.device.take() {
            Some((g, st)) if g == generation && st.backend() == backend.key() => st,
            _ => {
                let maps = self.exec.weight_maps();
                let weights = self.exec.network.weights();
                let (topo, net, adam) = (&self.topo, &self.exec.network, &self.adam);
                self.exec
                    .with_run_residents(backend, |programs, residents| {
                        let structure = topo.structure(net, &maps, programs);
                        dev.begin(&structure, residents, &weights, adam)
                    })??
            }
        };
        timings.host += t0.elapsed();
        let b = labels.len();
        let chunk = dev.chunk_samples(&state).max(1);
        let mut st = BatchStats {
            samples: b,
            ..Default::default()
        };
        let input = self.topo.input();
        let mut spikes = Some(spikes);
        for start in (0..b).step_by(chunk) {
            let end = (start + chunk).min(b);
            let part = if start == 0 && end == b {
                spikes.take().expect("one chunk")
            } else {
                spikes
                    .as_ref()
                    .expect("kept for the chunks")
                    .slice(start..end)
            };
            dev.keep(&mut state, end - start)?;
            let t1 = Instant::now();
            let out = self.exec.run_samples(
                backend,
                &[(input, part)],
                Observe::Kept,
                noise,
                start as u32,
            )?;
            timings.forward += out.stats.backend;
            timings.host += t1.elapsed().saturating_sub(out.stats.backend);
            let t2 = Instant::now();
            let (reg, count) =
                backward::spike_regulariser(&self.exec.network, &self.topo, &out.spikes, lam);
            st.loss += reg;
            st.hidden_spikes += count;
            let silent = silent_samples(&self.exec.network, &out.spikes);
            if st.silent_samples.len() < silent.len() {
                st.silent_samples.resize(silent.len(), 0);
            }
            for (a, s) in st.silent_samples.iter_mut().zip(silent) {
                *a += s;
            }
            timings.host += t2.elapsed();
            let t3 = Instant::now();
            dev.backward(
                &mut state,
                &crate::backend::TrainChunk {
                    spikes: &out.spikes,
                    labels,
                    first: start,
                    first_chunk: start == 0,
                    readout_scale: self.cfg.readout_scale,
                    score: self.exec.network.populations[self.topo.readout()].score,
                    alpha: self.cfg.surrogate_alpha,
                    reg_readout: self.cfg.reg_readout,
                    reg_spikes: lam,
                },
            )?;
            timings.backward += t3.elapsed();
        }
        let t4 = Instant::now();
        let r = dev.step(
            &mut state,
            b,
            optimiser::StepSize {
                lr,
                limit: self.weight_limit,
                reg: self.cfg.reg_weights,
            },
        )?;
        timings.optimiser = t4.elapsed();
        self.device = Some((generation, state));
        st.loss += r.loss + r.reg_loss * b as f64;
        st.correct = r.correct;
        if !r.finite {
            return Err(Error::Diverged {
                epoch: self.epoch + 1,
                batch: bi + 1,
                what: format!(
                    "the loss or a weight became non-finite on the device (loss {})",
                    r.loss
                ),
            });
        }
        Ok((st, timings))
    }

    /// An error unless `data` fits the network: images of the input population's size,
    /// labels below the readout's size.
    pub fn check_data(&self, data: &crate::data::Dataset) -> Result<()> {
        let net = &self.exec.network;
        let (input, readout) = (
            &net.populations[self.topo.input()],
            &net.populations[self.topo.readout()],
        );
        let inputs = self.cfg.encoding.inputs(data.shape);
        if inputs != input.size {
            return Err(Error::input(
                format!("population '{}'", input.name),
                format!(
                    "has {} neurons, the data's images give {inputs} inputs (images of {}: {})",
                    input.size,
                    data.shape.map(|d| d.to_string()).join(" x "),
                    match self.cfg.encoding {
                        crate::Encoding::Latency => "a pixel an input".to_string(),
                        crate::Encoding::Rows { steps_per_row } => format!(
                            "fed row by row, {steps_per_row} steps a row: a column an input"
                        ),
                    }
                ),
            ));
        }
        let need = self.cfg.encoding.steps(data.shape);
        if need > net.steps as u64 {
            return Err(Error::input(
                format!("network '{}'", net.name),
                format!(
                    "runs {} steps; {:?} of images {:?} needs {need}",
                    net.steps, self.cfg.encoding, data.shape
                ),
            ));
        }
        if data.classes > readout.size {
            return Err(Error::input(
                format!("population '{}'", readout.name),
                format!(
                    "has {} neurons, the data {} classes (labels up to {})",
                    readout.size,
                    data.classes,
                    data.classes.saturating_sub(1)
                ),
            ));
        }
        Ok(())
    }

    /// Cross-entropy and accuracy on `data` (no augmentation, no regularisers), in batches
    /// of `batch`.
    pub fn evaluate<B: Backend + ?Sized>(
        &self,
        backend: &B,
        data: &crate::data::Dataset,
        batch: usize,
    ) -> Result<BatchStats> {
        self.evaluate_in(backend, &crate::dist::comm::Single, data, batch)
    }

    /// [`Trainer::evaluate`] by the processes of `comm` together: each evaluates a contiguous
    /// share of the batches ([`crate::dist::comm::shard`]), every process gets every batch's
    /// stats and sums them in batch order, so the result is that of one process, bit for bit.
    pub fn evaluate_in<B: Backend + ?Sized>(
        &self,
        backend: &B,
        comm: &dyn crate::dist::comm::Communicator,
        data: &crate::data::Dataset,
        batch: usize,
    ) -> Result<BatchStats> {
        self.check_data(data)?;
        let steps = self.exec.network.steps;
        let r = self.topo.readout();
        let c = self.exec.network.populations[r].size;
        let idx: Vec<usize> = (0..data.len()).collect();
        let batches: Vec<&[usize]> = idx.chunks(batch.max(1)).collect();
        let mut wire = Vec::new();
        // Spread by chips, every process evaluates every batch (its chips of it).
        let (chips, comm) = (comm, self.samples_comm(comm));
        for bi in crate::dist::comm::shard(batches.len(), comm.size(), comm.rank()) {
            let chunk = batches[bi];
            let spikes = crate::spikes::encode::encode_part(
                data,
                chunk,
                steps,
                self.cfg.encoding,
                None,
                0..chunk.len(),
            );
            let noise = crate::model::neuron::pcg_hash(0xE7A1 ^ bi as u32);
            let out = self.exec.run_samples_in(
                backend,
                &[(self.topo.input(), spikes)],
                Observe::Scores,
                noise,
                0,
                chips,
            )?;
            let sc = scores(&out, r, self.cfg.readout_scale);
            let mut st = BatchStats {
                silent_samples: silent_samples(&self.exec.network, &out.spikes),
                ..Default::default()
            };
            if let Some(l) = &out.stats.links {
                st.link_deliveries = l.attempted() as f64;
                st.link_dropped = (l.attempted() - l.delivered.iter().sum::<u64>()) as f64;
            }
            for (k, &i) in chunk.iter().enumerate() {
                let s = &sc[k * c..(k + 1) * c];
                let y = data.labels[i] as usize;
                let lse = log_sum_exp(s);
                st.loss += (lse - s[y]) as f64;
                st.correct += usize::from(argmax(s) == y);
                st.samples += 1;
            }
            for (p, pop) in self.exec.network.populations.iter().enumerate() {
                if let (PopulationKind::Lif, Some(t)) = (pop.kind, out.spikes.get(p)) {
                    st.hidden_spikes += t.len() as f64;
                }
            }
            wire.push(st.to_wire());
        }
        // Every batch's stats in batch order (a process's batches are consecutive), summed
        // from the first.
        let width = 6 + self.exec.network.populations.len();
        let mut total = BatchStats::default();
        for flat in comm.all_gather_f64(&wire.concat()) {
            for one in flat.chunks_exact(width) {
                total = total + BatchStats::from_wire(one);
            }
        }
        Ok(total)
    }

    /// Append the record of the epoch just trained (`rec.test_*` its evaluation) to the
    /// history; with `cfg.keep_best`, the current state becomes [`Trainer::best`] when its
    /// evaluation is better than the best so far: a higher accuracy, or the same accuracy at a
    /// lower loss (a tie on both keeps the earlier epoch, so the choice is deterministic).
    pub fn record(&mut self, rec: EpochRecord) {
        let score = evaluation(&rec);
        self.history.push(rec);
        if !self.cfg.keep_best {
            return;
        }
        let Some((acc, loss)) = score else {
            return;
        };
        let better = match self
            .best
            .as_ref()
            .and_then(|b| evaluation(b.history.last()?))
        {
            None => true,
            Some((best_acc, best_loss)) => acc > best_acc || (acc == best_acc && loss < best_loss),
        };
        if better {
            self.best = Some(self.checkpoint());
        }
    }

    /// The epoch whose weights training ends with: with `cfg.keep_best` the best evaluated
    /// epoch ([`Trainer::record`]), else the last one (0 before any).
    pub fn selected_epoch(&self) -> usize {
        match (&self.best, self.cfg.keep_best) {
            (Some(b), true) => b.epoch,
            _ => self.history.last().map_or(self.epoch, |r| r.epoch),
        }
    }

    /// Put the weights of [`Trainer::best`] into the network and its programs, for evaluating
    /// them; returns its epoch (`None`, and nothing changes, without one). The optimiser
    /// state, epoch count and history stay those of the last epoch: a checkpoint saved after
    /// this is not one to resume from.
    pub fn restore_best<B: Backend + ?Sized>(&mut self, backend: &B) -> Result<Option<usize>> {
        // A training on the device holds the newest weights there: bring them back first, so
        // that the device state is rebuilt from the host's (restored) weights.
        self.sync(backend)?;
        self.device = None;
        let Some(best) = &self.best else {
            return Ok(None);
        };
        for (p, w) in self.exec.network.projections.iter_mut().zip(&best.weights) {
            p.weights.clone_from(w);
        }
        let epoch = best.epoch;
        self.exec.update_weights()?;
        Ok(Some(epoch))
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
            steps: Some(self.exec.network.steps),
            structure: Some(Structure::of(&self.exec.network)),
            mode: Some(self.mode()),
        }
    }

    /// The mode this trainer trains in (which partitions are emulated).
    pub fn mode(&self) -> crate::model::analog::Mode {
        self.exec
            .emulation
            .as_ref()
            .map_or(crate::model::analog::Mode::Ideal, |e| e.mode)
    }

    /// Write the checkpoint atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let text = serde_json::to_string(&self.checkpoint()).expect("checkpoint serialises");
        crate::files::write_atomic(path, text.as_bytes())
    }

    /// Continue from a checkpoint written by [`Trainer::save`], up to this trainer's
    /// `cfg.epochs`. Every array is checked against the network. What cannot change on
    /// resume (seed, batch size, steps) must equal the checkpoint's, else an error says which;
    /// the learning rate, the readout's score scale and the epoch count are this trainer's.
    /// Returns lines saying what was reconciled, for the caller to show.
    pub fn resume(&mut self, path: &std::path::Path) -> Result<Vec<String>> {
        let ck = Checkpoint::load(path)?;
        let err = |problem: String| Error::Checkpoint {
            path: path.to_path_buf(),
            problem,
        };
        ck.check_weights(&self.exec.network).map_err(err)?;
        ck.adam.check(&self.exec.network).map_err(err)?;
        if ck.history.len() > ck.epoch {
            return Err(err(format!(
                "{} epochs done but {} history records",
                ck.epoch,
                ck.history.len()
            )));
        }
        let (old, new) = (&ck.config, &self.cfg);
        if old.seed != new.seed {
            return Err(err(format!(
                "it was trained with --seed {}, the command line says {}: a resumed run keeps \
                 its seed (its shuffling and noise)",
                old.seed, new.seed
            )));
        }
        if old.batch != new.batch {
            return Err(err(format!(
                "it was trained with --batch {}, the command line says {}: a resumed run keeps \
                 its batch size",
                old.batch, new.batch
            )));
        }
        if let Some(steps) = ck.steps {
            if steps != self.exec.network.steps {
                return Err(err(format!(
                    "it was trained with {steps} steps, this network runs {}",
                    self.exec.network.steps
                )));
            }
        }
        if ck.epoch >= new.epochs {
            return Err(err(format!(
                "it has {} epochs done; ask for more with --epochs (now {})",
                ck.epoch, new.epochs
            )));
        }
        let mut said = vec![format!(
            "resuming after epoch {} of {} from {}",
            ck.epoch,
            new.epochs,
            path.display()
        )];
        if old.lr != new.lr {
            said.push(format!(
                "learning rate: {} from the command line (the checkpoint was trained with {}), \
                 decayed by {} per epoch from epoch {}",
                new.lr,
                old.lr,
                new.lr_decay,
                ck.epoch + 1
            ));
        }
        if old.readout_scale != new.readout_scale {
            said.push(format!(
                "readout score scale: {} from now on (the checkpoint was trained with {})",
                new.readout_scale, old.readout_scale
            ));
        }
        if let Some(m) = ck.mode.filter(|&m| m != self.mode()) {
            said.push(format!(
                "mode: {} from now on; epochs 1 to {} were trained {}",
                mode_name(self.mode()),
                ck.epoch,
                mode_name(m)
            ));
        }
        for (p, w) in self.exec.network.projections.iter_mut().zip(&ck.weights) {
            p.weights.clone_from(w);
        }
        self.exec.update_weights()?;
        self.adam = ck.adam;
        self.epoch = ck.epoch;
        self.history = ck.history;
        Ok(said)
    }
}

/// The evaluation (accuracy, loss) of an epoch's record, where it has one (a missing loss
/// counts as infinite).
fn evaluation(r: &EpochRecord) -> Option<(f64, f64)> {
    Some((r.test_accuracy?, r.test_loss.unwrap_or(f64::INFINITY)))
}

/// A mode as people say it.
fn mode_name(m: crate::model::analog::Mode) -> &'static str {
    match m {
        crate::model::analog::Mode::Ideal => "ideal",
        crate::model::analog::Mode::Emulated => "emulated",
        crate::model::analog::Mode::Mixed => "mixed (first layer emulated)",
    }
}

#[cfg(test)]
mod tests {
    use super::TrainConfig;

    /// A population's image shape is compared only where both structures give one; name,
    /// size and kind always.
    #[test]
    fn a_shape_given_on_one_side_only_fits_and_two_different_shapes_do_not() {
        use super::{PopulationShape, Structure};
        use crate::model::network::PopulationKind;
        let one = |shape: Option<[usize; 3]>, size: usize| Structure {
            populations: vec![PopulationShape {
                name: "input".into(),
                size,
                kind: PopulationKind::Input,
                shape,
            }],
            projections: Vec::new(),
        };
        let (flat, image) = (one(None, 784), one(Some([1, 28, 28]), 784));
        assert_eq!(flat.first_difference(&image), None);
        assert_eq!(image.first_difference(&flat), None);
        let other = one(Some([4, 14, 14]), 784);
        let d = image.first_difference(&other).expect("different shapes");
        assert!(
            d.contains("shape [1, 28, 28]") && d.contains("shape [4, 14, 14]"),
            "{d}"
        );
        let d = flat
            .first_difference(&one(Some([1, 28, 29]), 812))
            .expect("sizes");
        assert!(
            d.contains("784 neurons") && d.contains("812 neurons"),
            "{d}"
        );
    }

    #[test]
    fn the_learning_rate_warms_up_then_decays() {
        let cfg = TrainConfig {
            lr: 0.008,
            lr_decay: 0.5,
            lr_warmup: 4,
            ..Default::default()
        };
        let lrs: Vec<f32> = (0..6).map(|e| cfg.lr_at(e)).collect();
        // Epoch e (0-based) of the warm-up: (e + 1) / 4 of 0.008 * 0.5^e.
        let expect = [0.002, 0.002, 0.0015, 0.001, 0.0005, 0.00025];
        for (a, b) in lrs.iter().zip(expect) {
            assert!((a - b).abs() < 1e-9, "{lrs:?}");
        }
        let plain = TrainConfig::default();
        assert_eq!(plain.lr_at(0), plain.lr);
        assert!((plain.lr_at(2) - plain.lr * 0.97 * 0.97).abs() < 1e-9);
    }

    /// A checkpoint with a key it does not know (a typo in a hand-edited one) or steps no run
    /// takes is an error naming the file and the key; without them it loads.
    #[test]
    fn checkpoints_refuse_unknown_keys_and_impossible_steps() {
        let dir = std::env::temp_dir().join(format!("np-ck-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("checkpoint.json");
        let base = r#""weights": [[0.5]], "adam": {"m": [[0]], "v": [[0]], "t": 1},
            "epoch": 1, "config": {}, "history": []"#;
        for (extra, bad) in [
            ("", None),
            (r#", "steps": 30"#, None),
            (r#", "stpes": 30"#, Some("stpes")),
            (r#", "steps": 0"#, Some("0 recorded")),
        ] {
            std::fs::write(&path, format!("{{{base}{extra}}}")).unwrap();
            match (super::Checkpoint::load(&path), bad) {
                (Ok(ck), None) => assert_eq!(ck.weights, vec![vec![0.5]]),
                (Err(e), Some(word)) => {
                    let e = e.to_string();
                    assert!(e.contains(word) && e.contains("checkpoint.json"), "{e}");
                }
                (r, _) => panic!("{extra}: {:?}", r.map(|c| c.steps)),
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

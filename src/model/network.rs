//! What the user builds: populations and the projections between them, as plain validated data
//! that can be saved and loaded as TOML or JSON. Nothing here knows about chips or partitions.
//!
//! Timing convention: a spike emitted at step `t` reaches its targets at step `t + d`, where `d`
//! is the projection's `delay` plus one step for projections inside a recurrent loop (source and
//! target in the same strongly connected component), which keeps loops causal. Feed-forward
//! projections with delay 0 act within the same step, as in layer-by-layer training code.

use crate::error::{check_range, Error, Result};
use crate::model::neuron::NeuronParams;
use crate::model::substrate::Substrate;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::Path;

/// What a population is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PopulationKind {
    /// External spike sources (the encoded input), fed from the host.
    Input,
    /// Leaky integrate-and-fire neurons.
    #[default]
    Lif,
    /// Non-spiking leaky integrators whose membranes are read out (classification).
    Readout,
}

/// A group of neurons with the same parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Population {
    /// Unique name.
    pub name: String,
    /// Number of neurons.
    pub size: usize,
    /// What it is.
    #[serde(default)]
    pub kind: PopulationKind,
    /// Optional image shape `[channels, height, width]` (required as source or target of a
    /// convolution); its product must equal `size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<[usize; 3]>,
    /// Neuron parameters (ignored for inputs).
    #[serde(default)]
    pub params: NeuronParams,
    /// How a readout's membrane becomes its class score (readouts only; default: the maximum
    /// over time).
    #[serde(default, skip_serializing_if = "Score::is_max")]
    pub score: Score,
    /// Values of single neurons that replace `params`' (NIR graphs give every parameter per
    /// neuron, and the chip calibrates each neuron on its own).
    #[serde(default, skip_serializing_if = "PerNeuron::is_empty")]
    pub per_neuron: PerNeuron,
}

/// How a readout population's membrane trace becomes its class score (before the training's
/// `readout_scale`). In a network file: `score = { type = "last", steps = 5 }`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Score {
    /// The maximum over time (the published MNIST set-up).
    #[default]
    Max,
    /// The mean over the last `steps` steps (sequence tasks that decide at the end).
    Last {
        /// Steps, at least 1 and at most the run's.
        steps: u32,
    },
    /// The sum over all steps.
    Sum,
}

impl Score {
    /// Whether this is the default, [`Score::Max`].
    pub fn is_max(&self) -> bool {
        *self == Score::Max
    }

    /// The score of one neuron's trace `v(t)` (`trace(t)` for `t` in `0..steps`).
    pub fn of(&self, steps: usize, trace: impl Fn(usize) -> f32) -> f32 {
        match *self {
            Score::Max => (0..steps).map(&trace).fold(f32::NEG_INFINITY, f32::max),
            Score::Last { steps: k } => {
                let k = (k as usize).clamp(1, steps.max(1));
                (steps - k..steps).map(&trace).sum::<f32>() / k as f32
            }
            Score::Sum => (0..steps).map(&trace).sum(),
        }
    }
}

/// Parameters given neuron by neuron: each list is empty (every neuron takes the population's
/// value) or holds one value per neuron, in the units of [`NeuronParams`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PerNeuron {
    /// Membrane time constants (µs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tau_mem: Vec<f32>,
    /// Synaptic time constants (µs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tau_syn: Vec<f32>,
    /// Leak potentials.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub v_leak: Vec<f32>,
    /// Reset potentials.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub v_reset: Vec<f32>,
    /// Thresholds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub v_th: Vec<f32>,
    /// Constant currents (biases).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bias: Vec<f32>,
    /// Membranes at the start of a run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub v_init: Vec<f32>,
}

impl PerNeuron {
    /// Whether no parameter is given per neuron.
    pub fn is_empty(&self) -> bool {
        self.lists().iter().all(|(_, v)| v.is_empty())
    }

    /// Every list with its parameter's name.
    pub fn lists(&self) -> [(&'static str, &Vec<f32>); 7] {
        [
            ("tau_mem", &self.tau_mem),
            ("tau_syn", &self.tau_syn),
            ("v_leak", &self.v_leak),
            ("v_reset", &self.v_reset),
            ("v_th", &self.v_th),
            ("bias", &self.bias),
            ("v_init", &self.v_init),
        ]
    }

    /// Whether only values that do not enter the backward pass (bias, initial membrane, leak
    /// potential, reset) differ between neurons: training takes τ and ϑ per population.
    pub fn trainable(&self) -> bool {
        self.tau_mem.is_empty() && self.tau_syn.is_empty() && self.v_th.is_empty()
    }
}

impl Population {
    /// The parameters of neuron `n` (the population's, with its per-neuron values).
    pub fn neuron_params(&self, n: usize) -> NeuronParams {
        let mut p = self.params.clone();
        let q = &self.per_neuron;
        let at = |v: &Vec<f32>| v.get(n).copied();
        if let Some(x) = at(&q.tau_mem) {
            p.tau_mem = x;
        }
        if let Some(x) = at(&q.tau_syn) {
            p.tau_syn = x;
        }
        if let Some(x) = at(&q.v_leak) {
            p.v_leak = x;
        }
        if let Some(x) = at(&q.v_reset) {
            p.v_reset = x;
        }
        if let Some(x) = at(&q.v_th) {
            p.v_th = x;
        }
        if let Some(x) = at(&q.bias) {
            p.bias = x;
        }
        if let Some(x) = at(&q.v_init) {
            p.v_init = Some(x);
        }
        p
    }
}

/// Which way a projection's weights may point.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sign {
    /// Any sign; on the chip each input uses an excitatory and an inhibitory row.
    #[default]
    Signed,
    /// Weights ≥ 0, one row per input.
    Excitatory,
    /// Weights ≤ 0, one row per input.
    Inhibitory,
}

impl Sign {
    /// The sign as network files write it.
    pub fn name(self) -> &'static str {
        match self {
            Sign::Signed => "signed",
            Sign::Excitatory => "excitatory",
            Sign::Inhibitory => "inhibitory",
        }
    }
}

/// How a projection connects source to target neurons.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Connectivity {
    /// All-to-all; weights laid out `[target][source]`.
    #[default]
    Dense,
    /// 2-D convolution from a `[c, h, w]` source to a `[out_channels, oh, ow]` target; weights
    /// laid out `[out_channel][in_channel][ky][kx]`, shared across positions.
    Conv2d {
        /// Kernel height and width.
        kernel: usize,
        /// Stride (default 1).
        #[serde(default = "one")]
        stride: usize,
        /// Zero padding on each side (default 0).
        #[serde(default)]
        padding: usize,
    },
    /// An explicit list of `[source, target]` pairs; weights in the same order.
    Sparse {
        /// The synapses.
        connections: Vec<[u32; 2]>,
    },
}

fn one() -> usize {
    1
}

/// Random initial weights, drawn when a network has none stored.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WeightInit {
    /// Mean of the normal distribution.
    pub mean: f32,
    /// Standard deviation.
    pub std: f32,
}

impl Default for WeightInit {
    fn default() -> Self {
        WeightInit {
            mean: 0.0,
            std: 0.2,
        }
    }
}

/// Synapses from one population to another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Projection {
    /// Name (defaults to `source->target`).
    #[serde(default)]
    pub name: String,
    /// Source population name.
    pub source: String,
    /// Target population name.
    pub target: String,
    /// Connection pattern.
    #[serde(default)]
    pub connectivity: Connectivity,
    /// Allowed weight sign.
    #[serde(default)]
    pub sign: Sign,
    /// Extra transmission delay in steps.
    #[serde(default)]
    pub delay: u32,
    /// How to draw weights when `weights` is empty.
    #[serde(default)]
    pub init: WeightInit,
    /// The weights (layout per connectivity); empty = draw from `init`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<f32>,
}

/// A spiking network: plain data, validated on construction and load.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Seed for weights drawn from `init`.
    #[serde(default)]
    pub seed: u64,
    /// Time steps of one run (T).
    #[serde(default = "default_steps")]
    pub steps: u32,
    /// The populations.
    pub populations: Vec<Population>,
    /// The projections.
    #[serde(default)]
    pub projections: Vec<Projection>,
    /// Notes that tools keep with the network and neuropart never reads (the NIR import
    /// records the graph's node types, names and time step here, so that export restores
    /// them).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metadata: std::collections::BTreeMap<String, String>,
}

fn default_steps() -> u32 {
    30
}

/// Index of a population in [`Network::populations`].
pub type PopulationId = usize;

/// Largest delay a projection may have, in steps (a spike delayed beyond the run never
/// arrives; the bound keeps the arithmetic of delays exact).
pub const MAX_DELAY: u32 = 1 << 24;

/// Largest number of neurons a population may have (indices are 32-bit on every backend).
pub const MAX_POPULATION: usize = 1 << 31;

/// Largest number of steps a run may have (32-bit spike steps).
pub const MAX_STEPS: u32 = 1 << 30;

pub(crate) fn projection_name(pr: &Projection) -> String {
    if pr.name.is_empty() {
        format!("{}->{}", pr.source, pr.target)
    } else {
        pr.name.clone()
    }
}

impl Network {
    /// A copy of every projection's weights.
    pub fn weights(&self) -> Vec<Vec<f32>> {
        self.projections.iter().map(|p| p.weights.clone()).collect()
    }

    /// Index of the population called `name`.
    pub fn population_id(&self, name: &str) -> Option<PopulationId> {
        self.populations.iter().position(|p| p.name == name)
    }

    /// Source and target ids of projection `p`; an error names the projection and the
    /// population it names that does not exist.
    pub fn endpoints(&self, p: usize) -> Result<(PopulationId, PopulationId)> {
        let pr = self.projections.get(p).ok_or_else(|| {
            Error::network(
                format!("projection #{p}"),
                format!("the network has {} projections", self.projections.len()),
            )
        })?;
        let find = |n: &str| {
            self.population_id(n).ok_or_else(|| {
                Error::network(
                    format!("projection '{}'", projection_name(pr)),
                    format!("names unknown population '{n}'"),
                )
            })
        };
        Ok((find(&pr.source)?, find(&pr.target)?))
    }

    /// Source and target ids of every projection.
    pub fn all_endpoints(&self) -> Result<Vec<(PopulationId, PopulationId)>> {
        (0..self.projections.len())
            .map(|p| self.endpoints(p))
            .collect()
    }

    /// Check names, sizes, shapes, delays, weights and parameters (every size computed with
    /// checked arithmetic, so that absurd values are errors, never wrapped numbers), and fill
    /// in default projection names.
    pub fn validate(&mut self, substrate: &Substrate) -> Result<()> {
        for pr in &mut self.projections {
            if pr.name.is_empty() {
                pr.name = projection_name(pr);
            }
        }
        self.check(substrate)
    }

    /// [`Network::validate`] without changing anything.
    pub fn check(&self, substrate: &Substrate) -> Result<()> {
        if self.steps == 0 || self.steps > MAX_STEPS {
            return Err(Error::network(
                "steps",
                format!("{} steps; a run has 1 to {MAX_STEPS}", self.steps),
            ));
        }
        for (i, p) in self.populations.iter().enumerate() {
            if p.name.is_empty() {
                return Err(Error::network(format!("population #{i}"), "has no name"));
            }
            let item = || format!("population '{}'", p.name);
            if self.populations[..i].iter().any(|q| q.name == p.name) {
                return Err(Error::network(item(), "the name is used twice"));
            }
            match p.score {
                Score::Max => {}
                _ if p.kind != PopulationKind::Readout => {
                    return Err(Error::network(
                        item(),
                        "has a score, but only readout populations are scored",
                    ))
                }
                Score::Last { steps } if steps == 0 || steps > self.steps => {
                    return Err(Error::network(
                        item(),
                        format!(
                            "scores the last {steps} steps; a run has {} (1 to {} allowed)",
                            self.steps, self.steps
                        ),
                    ))
                }
                _ => {}
            }
            if p.size == 0 || p.size > MAX_POPULATION {
                return Err(Error::network(
                    item(),
                    format!(
                        "size {}; a population has 1 to {MAX_POPULATION} neurons",
                        p.size
                    ),
                ));
            }
            if let Some(s) = p.shape {
                let n = s.iter().try_fold(1usize, |a, &x| a.checked_mul(x));
                if n != Some(p.size) {
                    return Err(Error::network(
                        item(),
                        format!(
                            "shape {s:?} holds {} neurons but size is {}",
                            n.map_or("more than 2^64".to_string(), |n| n.to_string()),
                            p.size
                        ),
                    ));
                }
            }
            if p.kind != PopulationKind::Input {
                p.params
                    .validate(&p.name, substrate.dt_us, p.kind == PopulationKind::Lif)?;
                for (what, v) in p.per_neuron.lists() {
                    if !v.is_empty() && v.len() != p.size {
                        return Err(Error::network(
                            item(),
                            format!(
                                "per_neuron.{what} has {} values for {} neurons",
                                v.len(),
                                p.size
                            ),
                        ));
                    }
                }
                if !p.per_neuron.is_empty() {
                    for n in 0..p.size {
                        p.neuron_params(n).validate(
                            &format!("{} neuron {n}", item()),
                            substrate.dt_us,
                            p.kind == PopulationKind::Lif,
                        )?;
                    }
                }
            } else if !p.per_neuron.is_empty() {
                return Err(Error::network(
                    item(),
                    "an input population has no neuron parameters (per_neuron)",
                ));
            }
        }
        // Names locate weights (checkpoints, `weights(name)`, NIR nodes): one name, one
        // projection.
        let mut seen = std::collections::HashMap::new();
        for (i, pr) in self.projections.iter().enumerate() {
            let name = projection_name(pr);
            if let Some(j) = seen.insert(name.clone(), i) {
                return Err(Error::network(
                    format!("projection '{name}'"),
                    format!(
                        "the name is used by projections #{j} and #{i}; give each its own \
                         `name` (the default is source->target)"
                    ),
                ));
            }
        }
        let mut weights = 0u64;
        for i in 0..self.projections.len() {
            weights = weights.saturating_add(self.check_projection(i)? as u64);
        }
        crate::memory::check(
            || "the network's weights".to_string(),
            weights.saturating_mul(4),
        )
    }

    /// Check projection `i`; returns its number of weights.
    fn check_projection(&self, i: usize) -> Result<usize> {
        let pr = &self.projections[i];
        let item = || format!("projection '{}'", projection_name(pr));
        let (s, t) = self.endpoints(i)?;
        let (src, tgt) = (&self.populations[s], &self.populations[t]);
        if tgt.kind == PopulationKind::Input {
            return Err(Error::network(
                item(),
                format!("targets input population '{}'", tgt.name),
            ));
        }
        if src.kind == PopulationKind::Readout {
            return Err(Error::network(
                item(),
                format!(
                    "starts at readout population '{}', which does not spike",
                    src.name
                ),
            ));
        }
        if pr.delay > MAX_DELAY {
            return Err(Error::network(
                item(),
                format!("delay {} steps; at most {MAX_DELAY}", pr.delay),
            ));
        }
        let name = projection_name(pr);
        check_range(&name, "init.mean", pr.init.mean as f64, -1e6, 1e6)?;
        check_range(&name, "init.std", pr.init.std as f64, 0.0, 1e6)?;
        let expected = self.weight_count(i)?;
        if let Connectivity::Sparse { connections } = &pr.connectivity {
            for (k, &[a, b]) in connections.iter().enumerate() {
                if a as usize >= src.size || b as usize >= tgt.size {
                    return Err(Error::network(
                        item(),
                        format!(
                            "connection #{k} [{a}, {b}] is outside {} x {} neurons",
                            src.size, tgt.size
                        ),
                    ));
                }
            }
        }
        if !pr.weights.is_empty() && pr.weights.len() != expected {
            return Err(Error::network(
                item(),
                format!(
                    "has {} weights, its connectivity needs {expected}",
                    pr.weights.len()
                ),
            ));
        }
        for (k, &w) in pr.weights.iter().enumerate() {
            let ok = w.is_finite()
                && match pr.sign {
                    Sign::Signed => true,
                    Sign::Excitatory => w >= 0.0,
                    Sign::Inhibitory => w <= 0.0,
                };
            if !ok {
                return Err(Error::Parameter {
                    owner: name,
                    name: format!("weights[{k}]"),
                    value: w as f64,
                    reason: format!(
                        "must be finite and fit the projection's sign ({})",
                        pr.sign.name()
                    ),
                });
            }
        }
        Ok(expected)
    }

    /// Number of weights projection `p` stores; errors for shapes a convolution cannot use,
    /// with checked arithmetic.
    pub fn weight_count(&self, p: usize) -> Result<usize> {
        let (s, t) = self.endpoints(p)?;
        let (src, tgt) = (&self.populations[s], &self.populations[t]);
        let pr = &self.projections[p];
        let item = || format!("projection '{}'", projection_name(pr));
        let too_big = || Error::network(item(), "its size overflows 64-bit arithmetic");
        match &pr.connectivity {
            Connectivity::Dense => src.size.checked_mul(tgt.size).ok_or_else(too_big),
            Connectivity::Conv2d {
                kernel,
                stride,
                padding,
            } => {
                let (ins, outs) = conv_shapes(pr, src, tgt)?;
                if *kernel == 0 || *stride == 0 {
                    return Err(Error::network(
                        item(),
                        format!("kernel {kernel} and stride {stride} must be at least 1"),
                    ));
                }
                let out = |n: usize| -> Option<usize> {
                    n.checked_add(padding.checked_mul(2)?)?
                        .checked_sub(*kernel)
                        .map(|x| x / stride + 1)
                };
                match (out(ins[1]), out(ins[2])) {
                    (Some(oh), Some(ow)) if oh == outs[1] && ow == outs[2] => {}
                    (Some(oh), Some(ow)) => {
                        return Err(Error::network(
                            item(),
                            format!(
                                "a {}x{} input with kernel {kernel}, stride {stride}, padding \
                                 {padding} gives {oh}x{ow} outputs, but '{}' has shape {:?}",
                                ins[1], ins[2], tgt.name, outs
                            ),
                        ));
                    }
                    _ => {
                        return Err(Error::network(
                            item(),
                            format!(
                                "a {}x{} input with kernel {kernel}, stride {stride}, padding \
                                 {padding} has no valid output size (the kernel does not fit the \
                                 padded input, or the padded size overflows)",
                                ins[1], ins[2]
                            ),
                        ));
                    }
                }
                outs[0]
                    .checked_mul(ins[0])
                    .and_then(|x| x.checked_mul(*kernel))
                    .and_then(|x| x.checked_mul(*kernel))
                    .ok_or_else(too_big)
            }
            Connectivity::Sparse { connections } => Ok(connections.len()),
        }
    }

    /// Draw the weights of every projection that has none, from its `init` and the network
    /// seed (deterministic), respecting the projection's sign.
    pub fn materialise_weights(&mut self) -> Result<()> {
        for p in 0..self.projections.len() {
            if !self.projections[p].weights.is_empty() {
                continue;
            }
            let n = self.weight_count(p)?;
            let pr = &self.projections[p];
            let mut rng = Rng::derive(self.seed, p as u64);
            let ws = (0..n)
                .map(|_| {
                    let w = pr.init.mean + pr.init.std * rng.normal() as f32;
                    match pr.sign {
                        Sign::Signed => w,
                        Sign::Excitatory => w.abs(),
                        Sign::Inhibitory => -w.abs(),
                    }
                })
                .collect();
            self.projections[p].weights = ws;
        }
        Ok(())
    }

    /// Validate and draw missing weights: the state every other module expects.
    pub fn prepare(mut self, substrate: &Substrate) -> Result<Self> {
        self.validate(substrate)?;
        self.materialise_weights()?;
        Ok(self)
    }

    /// Call `f(source_neuron, target_neuron, weight)` for every synapse of projection `p`
    /// whose target lies in `targets`; the weights must be drawn ([`Network::prepare`]).
    pub fn for_each_synapse(
        &self,
        p: usize,
        targets: Range<usize>,
        mut f: impl FnMut(usize, usize, f32),
    ) -> Result<()> {
        let w = &self.projections[p].weights;
        if w.len() != self.weight_count(p)? {
            return Err(Error::network(
                format!("projection '{}'", projection_name(&self.projections[p])),
                format!(
                    "has {} weights, its connectivity needs {} (call Network::prepare)",
                    w.len(),
                    self.weight_count(p)?
                ),
            ));
        }
        self.for_each_synapse_index(p, targets, |pre, post, k| f(pre, post, w[k]))
    }

    /// Call `f(source_neuron, target_neuron, weight_index)` for every synapse of projection
    /// `p` whose target lies in `targets`; `weight_index` points into the projection's
    /// weights (shared between positions for a convolution). Needs no weights.
    pub fn for_each_synapse_index(
        &self,
        p: usize,
        targets: Range<usize>,
        mut f: impl FnMut(usize, usize, usize),
    ) -> Result<()> {
        self.weight_count(p)?;
        let (s, t) = self.endpoints(p)?;
        let (src, tgt) = (&self.populations[s], &self.populations[t]);
        let targets = targets.start.min(tgt.size)..targets.end.min(tgt.size);
        match &self.projections[p].connectivity {
            Connectivity::Dense => {
                for post in targets {
                    for pre in 0..src.size {
                        f(pre, post, post * src.size + pre);
                    }
                }
            }
            Connectivity::Conv2d {
                kernel,
                stride,
                padding,
            } => {
                let (ins, outs) = conv_shapes(&self.projections[p], src, tgt)?;
                let ([ic, ih, iw], [_, oh, ow]) = (ins, outs);
                let (k, stride, padding) = (*kernel, *stride, *padding);
                for post in targets {
                    let (o, y, x) = (post / (oh * ow), (post / ow) % oh, post % ow);
                    for c in 0..ic {
                        for ky in 0..k {
                            // y·stride + ky − padding, in range [0, ih): checked for padding.
                            let Some(iy) = (y * stride + ky).checked_sub(padding) else {
                                continue;
                            };
                            if iy >= ih {
                                continue;
                            }
                            for kx in 0..k {
                                let Some(ix) = (x * stride + kx).checked_sub(padding) else {
                                    continue;
                                };
                                if ix >= iw {
                                    continue;
                                }
                                let pre = (c * ih + iy) * iw + ix;
                                f(pre, post, ((o * ic + c) * k + ky) * k + kx);
                            }
                        }
                    }
                }
            }
            Connectivity::Sparse { connections } => {
                for (k, &[a, b]) in connections.iter().enumerate() {
                    if targets.contains(&(b as usize)) {
                        f(a as usize, b as usize, k);
                    }
                }
            }
        }
        Ok(())
    }

    /// Synapse rows each neuron of population `pop` needs at most (signed inputs count
    /// `rows_per_signed_input` times), and its largest fan-in in inputs.
    pub fn rows_needed(&self, pop: PopulationId, substrate: &Substrate) -> Result<(usize, usize)> {
        let size = self.populations[pop].size;
        let mut rows = vec![0usize; size];
        let mut fan_in = vec![0usize; size];
        for p in 0..self.projections.len() {
            let (_, t) = self.endpoints(p)?;
            if t != pop {
                continue;
            }
            let per = match self.projections[p].sign {
                Sign::Signed => substrate.rows_per_signed_input,
                _ => 1,
            };
            self.for_each_synapse_index(p, 0..size, |_, post, _| {
                rows[post] += per;
                fan_in[post] += 1;
            })?;
        }
        Ok((
            rows.into_iter().max().unwrap_or(0),
            fan_in.into_iter().max().unwrap_or(0),
        ))
    }

    /// Strongly connected components of the population graph, in topological order (every
    /// component after all components it receives from). Input populations are components
    /// of their own.
    pub fn components(&self) -> Result<Vec<Vec<PopulationId>>> {
        let n = self.populations.len();
        let mut succ = vec![Vec::new(); n];
        for (s, t) in self.all_endpoints()? {
            succ[s].push(t);
        }
        Ok(tarjan(n, &succ))
    }

    /// Component index of every population (same order as [`Network::components`]).
    pub fn component_of(&self) -> Result<Vec<usize>> {
        let mut of = vec![0; self.populations.len()];
        for (c, comp) in self.components()?.iter().enumerate() {
            for &p in comp {
                of[p] = c;
            }
        }
        Ok(of)
    }

    /// Effective delay in steps of every projection (see the module docs).
    pub fn effective_delays(&self) -> Result<Vec<u32>> {
        let of = self.component_of()?;
        self.all_endpoints()?
            .into_iter()
            .enumerate()
            .map(|(p, (s, t))| {
                let d = self.projections[p].delay;
                d.checked_add(u32::from(of[s] == of[t])).ok_or_else(|| {
                    Error::network(
                        format!("projection '{}'", projection_name(&self.projections[p])),
                        format!("delay {d} overflows"),
                    )
                })
            })
            .collect()
    }

    /// Ids of the input populations.
    pub fn inputs(&self) -> Vec<PopulationId> {
        (0..self.populations.len())
            .filter(|&p| self.populations[p].kind == PopulationKind::Input)
            .collect()
    }

    /// Parse from TOML or JSON text, validate and draw missing weights. `path` names the
    /// text in errors.
    pub fn from_str(
        text: &str,
        format: Format,
        path: &Path,
        substrate: &Substrate,
    ) -> Result<Self> {
        let net: Network = format.parse(text, path)?;
        net.prepare(substrate).map_err(|e| e.in_file(path))
    }

    /// [`Network::load`] without drawing the weights (the structure checked against
    /// `substrate`): for planning, which needs no weights, so that a network that cannot be
    /// partitioned is refused before its weights take time and memory.
    /// [`Network::materialise_weights`] draws them later.
    pub fn load_structure(path: &Path, substrate: &Substrate) -> Result<Self> {
        let text = read_network_text(path)?;
        let mut net: Network = Format::of(path, &text).parse(&text, path)?;
        net.validate(substrate).map_err(|e| e.in_file(path))?;
        Ok(net)
    }

    /// Load a `.toml` or `.json` network file (the format from the extension, any case, or
    /// from the content when the extension says neither).
    pub fn load(path: &Path, substrate: &Substrate) -> Result<Self> {
        let text = read_network_text(path)?;
        Self::from_str(&text, Format::of(path, &text), path, substrate)
    }

    /// Save as `.toml` or `.json` (by extension), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = match Format::of(path, "") {
            Format::Json => serde_json::to_string_pretty(self).map_err(|e| Error::Parse {
                path: path.to_path_buf(),
                format: "JSON",
                message: e.to_string(),
            })?,
            Format::Toml => toml::to_string(self).map_err(|e| Error::Parse {
                path: path.to_path_buf(),
                format: "TOML",
                message: e.to_string(),
            })?,
        };
        crate::files::write_atomic(path, text.as_bytes())
    }
}

/// The text of the network file `path`; an error that says where NIR graphs go for one (an
/// HDF5 file, `.nir`), as for any file that is not text.
fn read_network_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let nir = path.extension().is_some_and(|e| {
        ["nir", "h5", "hdf5"]
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x))
    });
    String::from_utf8(bytes).map_err(|_| {
        let what = if nir {
            "a NIR graph (HDF5)"
        } else {
            "not text"
        };
        Error::io(
            path,
            std::io::Error::other(format!(
                "{what}: network files are TOML or JSON; NIR graphs are read by the Python \
                 package (neuropart.from_nir)"
            )),
        )
    })
}

/// The shapes of a convolution's source and target; an error when one has none.
fn conv_shapes(
    pr: &Projection,
    src: &Population,
    tgt: &Population,
) -> Result<([usize; 3], [usize; 3])> {
    match (src.shape, tgt.shape) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(Error::network(
            format!("projection '{}'", projection_name(pr)),
            format!(
                "a conv2d projection needs a shape on '{}' and '{}'",
                src.name, tgt.name
            ),
        )),
    }
}

pub use crate::files::Format;

/// Tarjan's algorithm; returns components in topological order.
fn tarjan(n: usize, succ: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct St<'a> {
        succ: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut St, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on[v] = true;
        for k in 0..s.succ[v].len() {
            let w = s.succ[v][k];
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on[w] => s.low[v] = s.low[v].min(iw),
                _ => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            comp.sort_unstable();
            s.out.push(comp);
        }
    }
    let mut s = St {
        succ,
        index: vec![None; n],
        low: vec![0; n],
        on: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out.reverse();
    s.out
}

/// A layer-by-layer way to build a [`Network`]: each layer is fed by the one before.
#[derive(Clone, Debug)]
pub struct NetworkBuilder {
    net: Network,
}

impl NetworkBuilder {
    /// An empty network with `steps` time steps and weight seed `seed`.
    pub fn new(name: &str, steps: u32, seed: u64) -> Self {
        NetworkBuilder {
            net: Network {
                name: name.into(),
                seed,
                steps,
                populations: Vec::new(),
                projections: Vec::new(),
                metadata: Default::default(),
            },
        }
    }

    /// Set the time steps of one run.
    pub fn with_steps(mut self, steps: u32) -> Self {
        self.net.steps = steps;
        self
    }

    fn last(&self) -> String {
        self.net
            .populations
            .last()
            .map(|p| p.name.clone())
            .unwrap_or_default()
    }

    /// Add a population without projections.
    pub fn population(
        mut self,
        name: &str,
        size: usize,
        kind: PopulationKind,
        params: NeuronParams,
    ) -> Self {
        self.net.populations.push(Population {
            name: name.into(),
            size,
            kind,
            shape: None,
            params,
            score: Score::Max,
            per_neuron: PerNeuron::default(),
        });
        self
    }

    /// Add an input population of `size` spike sources.
    pub fn input(self, name: &str, size: usize) -> Self {
        self.population(name, size, PopulationKind::Input, NeuronParams::default())
    }

    /// Add an image-shaped input `[channels, height, width]`.
    pub fn input_image(mut self, name: &str, shape: [usize; 3]) -> Self {
        self = self.input(name, shape.iter().product());
        self.net.populations.last_mut().unwrap().shape = Some(shape);
        self
    }

    /// Add a projection between existing populations.
    pub fn project(
        mut self,
        source: &str,
        target: &str,
        connectivity: Connectivity,
        init: WeightInit,
    ) -> Self {
        self.net.projections.push(Projection {
            name: String::new(),
            source: source.into(),
            target: target.into(),
            connectivity,
            sign: Sign::Signed,
            delay: 0,
            init,
            weights: Vec::new(),
        });
        self
    }

    /// A dense layer of LIF neurons fed by the previous layer.
    pub fn dense(self, name: &str, size: usize, params: NeuronParams, init: WeightInit) -> Self {
        let prev = self.last();
        self.population(name, size, PopulationKind::Lif, params)
            .project(&prev, name, Connectivity::Dense, init)
    }

    /// A convolutional LIF layer with `out_channels` feature maps fed by the previous layer
    /// (which must have a shape).
    #[allow(clippy::too_many_arguments)] // mirrors the conv2d signature researchers know
    pub fn conv2d(
        mut self,
        name: &str,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        params: NeuronParams,
        init: WeightInit,
    ) -> Self {
        let prev = self.last();
        let [_, h, w] = self
            .net
            .populations
            .last()
            .and_then(|p| p.shape)
            .unwrap_or([1, 0, 0]);
        // Sizes that overflow become 0: validation then names the layer.
        let o = |n: usize| {
            n.checked_add(padding.saturating_mul(2))
                .and_then(|m| m.checked_sub(kernel))
                .map_or(0, |m| m / stride.max(1) + 1)
        };
        let shape = [out_channels, o(h), o(w)];
        self = self.population(name, shape.iter().product(), PopulationKind::Lif, params);
        self.net.populations.last_mut().unwrap().shape = Some(shape);
        self.project(
            &prev,
            name,
            Connectivity::Conv2d {
                kernel,
                stride,
                padding,
            },
            init,
        )
    }

    /// A dense non-spiking readout fed by the previous layer.
    pub fn readout(self, name: &str, size: usize, params: NeuronParams, init: WeightInit) -> Self {
        let prev = self.last();
        self.population(name, size, PopulationKind::Readout, params)
            .project(&prev, name, Connectivity::Dense, init)
    }

    /// A dense recurrent projection of the last layer onto itself.
    pub fn recurrent(self, init: WeightInit) -> Self {
        let prev = self.last();
        self.project(&prev, &prev, Connectivity::Dense, init)
    }

    /// Validate and draw the weights.
    pub fn build(self, substrate: &Substrate) -> Result<Network> {
        self.net.prepare(substrate)
    }
}

/// The paper's MNIST model: 784 inputs → 256 LIF → 10 readout, T = 30.
pub fn mnist_network(seed: u64) -> NetworkBuilder {
    NetworkBuilder::new("mnist", 30, seed)
        .input("input", 784)
        .dense(
            "hidden",
            256,
            NeuronParams::default(),
            WeightInit {
                mean: -0.05,
                std: 0.2,
            },
        )
        .readout(
            "readout",
            10,
            NeuronParams::default(),
            WeightInit {
                mean: 0.01,
                std: 0.2,
            },
        )
}

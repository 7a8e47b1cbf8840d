//! What the user builds: populations and the projections between them, as plain validated data
//! that can be saved and loaded as TOML or JSON. Nothing here knows about chips or partitions.
//!
//! Timing convention: a spike emitted at step `t` reaches its targets at step `t + d`, where `d`
//! is the projection's `delay` plus one step for projections inside a recurrent loop (source and
//! target in the same strongly connected component), which keeps loops causal. Feed-forward
//! projections with delay 0 act within the same step, as in layer-by-layer training code.

use crate::error::{check_range, Error, Result};
use crate::neuron::NeuronParams;
use crate::rng::Rng;
use crate::substrate::Substrate;
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
}

fn default_steps() -> u32 {
    30
}

/// Index of a population in [`Network::populations`].
pub type PopulationId = usize;

impl Network {
    /// Index of the population called `name`.
    pub fn population_id(&self, name: &str) -> Option<PopulationId> {
        self.populations.iter().position(|p| p.name == name)
    }

    /// Source and target ids of projection `p` (the network must be valid).
    pub fn endpoints(&self, p: usize) -> (PopulationId, PopulationId) {
        let pr = &self.projections[p];
        (
            self.population_id(&pr.source).expect("validated"),
            self.population_id(&pr.target).expect("validated"),
        )
    }

    /// Check names, sizes, shapes, weights and parameters; fill in default projection names.
    pub fn validate(&mut self, substrate: &Substrate) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::InvalidNetwork("steps must be at least 1".into()));
        }
        for (i, p) in self.populations.iter().enumerate() {
            if p.name.is_empty() {
                return Err(Error::InvalidNetwork(format!(
                    "population #{i} has no name"
                )));
            }
            if self.populations[..i].iter().any(|q| q.name == p.name) {
                return Err(Error::InvalidNetwork(format!(
                    "population name '{}' is used twice",
                    p.name
                )));
            }
            if p.size == 0 {
                return Err(Error::InvalidNetwork(format!(
                    "population '{}' has size 0",
                    p.name
                )));
            }
            if let Some(s) = p.shape {
                if s.iter().product::<usize>() != p.size {
                    return Err(Error::InvalidNetwork(format!(
                        "population '{}': shape {:?} has {} neurons but size is {}",
                        p.name,
                        s,
                        s.iter().product::<usize>(),
                        p.size
                    )));
                }
            }
            if p.kind != PopulationKind::Input {
                p.params.validate(&p.name, substrate.dt_us)?;
            }
        }
        for i in 0..self.projections.len() {
            if self.projections[i].name.is_empty() {
                let pr = &self.projections[i];
                self.projections[i].name = format!("{}->{}", pr.source, pr.target);
            }
            self.validate_projection(i)?;
        }
        Ok(())
    }

    fn validate_projection(&self, i: usize) -> Result<()> {
        let pr = &self.projections[i];
        let find = |n: &str| {
            self.population_id(n).ok_or_else(|| {
                Error::InvalidNetwork(format!(
                    "projection '{}' names unknown population '{n}'",
                    pr.name
                ))
            })
        };
        let (s, t) = (find(&pr.source)?, find(&pr.target)?);
        let (src, tgt) = (&self.populations[s], &self.populations[t]);
        if tgt.kind == PopulationKind::Input {
            return Err(Error::InvalidNetwork(format!(
                "projection '{}' targets input population '{}'",
                pr.name, tgt.name
            )));
        }
        if src.kind == PopulationKind::Readout {
            return Err(Error::InvalidNetwork(format!(
                "projection '{}' starts at readout population '{}', which does not spike",
                pr.name, src.name
            )));
        }
        check_range(&pr.name, "init.mean", pr.init.mean as f64, -1e6, 1e6)?;
        check_range(&pr.name, "init.std", pr.init.std as f64, 0.0, 1e6)?;
        let expected = match &pr.connectivity {
            Connectivity::Dense => src.size * tgt.size,
            Connectivity::Conv2d {
                kernel,
                stride,
                padding,
            } => {
                let (ins, outs) = match (src.shape, tgt.shape) {
                    (Some(a), Some(b)) => (a, b),
                    _ => {
                        return Err(Error::InvalidNetwork(format!(
                            "conv2d projection '{}' needs a shape on '{}' and '{}'",
                            pr.name, src.name, tgt.name
                        )))
                    }
                };
                if *kernel == 0 || *stride == 0 {
                    return Err(Error::InvalidNetwork(format!(
                        "conv2d projection '{}': kernel and stride must be at least 1",
                        pr.name
                    )));
                }
                let out = |n: usize| {
                    (n + 2 * padding)
                        .checked_sub(*kernel)
                        .map(|x| x / stride + 1)
                };
                match (out(ins[1]), out(ins[2])) {
                    (Some(oh), Some(ow)) if oh == outs[1] && ow == outs[2] => {}
                    (oh, ow) => {
                        return Err(Error::InvalidNetwork(format!(
                            "conv2d projection '{}': a {}x{} input with kernel {kernel}, stride \
                             {stride}, padding {padding} gives {:?}x{:?} outputs, but '{}' has shape {:?}",
                            pr.name, ins[1], ins[2], oh, ow, tgt.name, outs
                        )))
                    }
                }
                outs[0] * ins[0] * kernel * kernel
            }
            Connectivity::Sparse { connections } => {
                for (k, &[a, b]) in connections.iter().enumerate() {
                    if a as usize >= src.size || b as usize >= tgt.size {
                        return Err(Error::InvalidNetwork(format!(
                            "sparse projection '{}': connection #{k} [{a}, {b}] is outside \
                             {} x {} neurons",
                            pr.name, src.size, tgt.size
                        )));
                    }
                }
                connections.len()
            }
        };
        if !pr.weights.is_empty() && pr.weights.len() != expected {
            return Err(Error::InvalidNetwork(format!(
                "projection '{}' has {} weights, its connectivity needs {expected}",
                pr.name,
                pr.weights.len()
            )));
        }
        for (k, &w) in pr.weights.iter().enumerate() {
            let ok = w.is_finite()
                && match pr.sign {
                    Sign::Signed => true,
                    Sign::Excitatory => w >= 0.0,
                    Sign::Inhibitory => w <= 0.0,
                };
            if !ok {
                return Err(Error::InvalidParameter {
                    owner: pr.name.clone(),
                    name: format!("weights[{k}]"),
                    value: w as f64,
                    reason: format!("must be finite and fit sign {:?}", pr.sign),
                });
            }
        }
        Ok(())
    }

    /// Number of weights projection `p` stores.
    pub fn weight_count(&self, p: usize) -> usize {
        let (s, t) = self.endpoints(p);
        let (src, tgt) = (&self.populations[s], &self.populations[t]);
        match &self.projections[p].connectivity {
            Connectivity::Dense => src.size * tgt.size,
            Connectivity::Conv2d { kernel, .. } => {
                tgt.shape.unwrap()[0] * src.shape.unwrap()[0] * kernel * kernel
            }
            Connectivity::Sparse { connections } => connections.len(),
        }
    }

    /// Draw the weights of every projection that has none, from its `init` and the network
    /// seed (deterministic), respecting the projection's sign.
    pub fn materialise_weights(&mut self) {
        for p in 0..self.projections.len() {
            if !self.projections[p].weights.is_empty() {
                continue;
            }
            let n = self.weight_count(p);
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
    }

    /// Validate and draw missing weights: the state every other module expects.
    pub fn prepare(mut self, substrate: &Substrate) -> Result<Self> {
        self.validate(substrate)?;
        self.materialise_weights();
        Ok(self)
    }

    /// Call `f(source_neuron, target_neuron, weight)` for every synapse of projection `p`
    /// whose target lies in `targets` (weights must be materialised).
    pub fn for_each_synapse(
        &self,
        p: usize,
        targets: Range<usize>,
        mut f: impl FnMut(usize, usize, f32),
    ) {
        let w = &self.projections[p].weights;
        self.for_each_synapse_index(p, targets, |pre, post, k| f(pre, post, w[k]));
    }

    /// Call `f(source_neuron, target_neuron, weight_index)` for every synapse of projection
    /// `p` whose target lies in `targets`; `weight_index` points into the projection's
    /// weights (shared between positions for a convolution). Needs no weights.
    pub fn for_each_synapse_index(
        &self,
        p: usize,
        targets: Range<usize>,
        mut f: impl FnMut(usize, usize, usize),
    ) {
        let (s, t) = self.endpoints(p);
        let (src, tgt) = (&self.populations[s], &self.populations[t]);
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
                let [ic, ih, iw] = src.shape.unwrap();
                let [_, oh, ow] = tgt.shape.unwrap();
                let k = *kernel;
                for post in targets {
                    let (o, y, x) = (post / (oh * ow), (post / ow) % oh, post % ow);
                    for c in 0..ic {
                        for ky in 0..k {
                            let iy = (y * stride + ky) as isize - *padding as isize;
                            if iy < 0 || iy >= ih as isize {
                                continue;
                            }
                            for kx in 0..k {
                                let ix = (x * stride + kx) as isize - *padding as isize;
                                if ix < 0 || ix >= iw as isize {
                                    continue;
                                }
                                let pre = (c * ih + iy as usize) * iw + ix as usize;
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
    }

    /// Synapse rows each neuron of population `pop` needs at most (signed inputs count
    /// `rows_per_signed_input` times), and its largest fan-in in inputs.
    pub fn rows_needed(&self, pop: PopulationId, substrate: &Substrate) -> (usize, usize) {
        let size = self.populations[pop].size;
        let mut rows = vec![0usize; size];
        let mut fan_in = vec![0usize; size];
        for p in 0..self.projections.len() {
            let (_, t) = self.endpoints(p);
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
            });
        }
        (
            rows.into_iter().max().unwrap_or(0),
            fan_in.into_iter().max().unwrap_or(0),
        )
    }

    /// Strongly connected components of the population graph, in topological order (every
    /// component after all components it receives from). Input populations are components
    /// of their own.
    pub fn components(&self) -> Vec<Vec<PopulationId>> {
        let n = self.populations.len();
        let mut succ = vec![Vec::new(); n];
        for p in 0..self.projections.len() {
            let (s, t) = self.endpoints(p);
            succ[s].push(t);
        }
        tarjan(n, &succ)
    }

    /// Component index of every population (same order as [`Network::components`]).
    pub fn component_of(&self) -> Vec<usize> {
        let mut of = vec![0; self.populations.len()];
        for (c, comp) in self.components().iter().enumerate() {
            for &p in comp {
                of[p] = c;
            }
        }
        of
    }

    /// Effective delay in steps of every projection (see the module docs).
    pub fn effective_delays(&self) -> Vec<u32> {
        let of = self.component_of();
        (0..self.projections.len())
            .map(|p| {
                let (s, t) = self.endpoints(p);
                self.projections[p].delay + u32::from(of[s] == of[t])
            })
            .collect()
    }

    /// Ids of the input populations.
    pub fn inputs(&self) -> Vec<PopulationId> {
        (0..self.populations.len())
            .filter(|&p| self.populations[p].kind == PopulationKind::Input)
            .collect()
    }

    /// Parse from TOML or JSON text (`json` picks the format), validate and draw missing weights.
    pub fn from_str(text: &str, json: bool, path: &Path, substrate: &Substrate) -> Result<Self> {
        let parsed: std::result::Result<Network, String> = if json {
            serde_json::from_str(text).map_err(|e| e.to_string())
        } else {
            toml::from_str(text).map_err(|e| e.to_string())
        };
        let net = parsed.map_err(|message| Error::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        net.prepare(substrate)
    }

    /// Load a `.toml` or `.json` network file.
    pub fn load(path: &Path, substrate: &Substrate) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let json = path.extension().is_some_and(|e| e == "json");
        Self::from_str(&text, json, path, substrate)
    }

    /// Save as `.toml` or `.json` (by extension), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = if path.extension().is_some_and(|e| e == "json") {
            serde_json::to_string_pretty(self).expect("network serialises")
        } else {
            toml::to_string(self).map_err(|e| Error::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?
        };
        crate::io::write_atomic(path, text.as_bytes())
    }
}

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
            },
        }
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
        let o = |n: usize| ((n + 2 * padding).saturating_sub(kernel)) / stride.max(1) + 1;
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

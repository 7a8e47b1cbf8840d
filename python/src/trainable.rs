//! `neuropart.Trainable`: a network set up for training step by step from outside (the
//! PyTorch bridge, `neuropart.torch`). It owns a [`Trainer`] — the executor, the backward
//! pass's topology and the configuration — and exposes its two halves apart: `forward` runs
//! the emulator with every trace kept and returns the readout scores and spike counts with an
//! opaque [`Trace`]; `backward` takes the gradients of the caller's loss on those scores and
//! counts and returns the weight gradients, through the trainer's own backward pass
//! ([`neuropart::gradients_from`]). `gradients` and `train_step` are the trainer's own loss
//! and step, for comparison. It never computes a loss of its own in `backward`.

use crate::*;
use neuropart::{Execution, Upstream};

/// A network set up for training step by step from outside: forward with traces kept,
/// backward from the gradients of any loss on the scores and spike counts.
#[pyclass(module = "neuropart")]
pub(crate) struct Trainable {
    trainer: Trainer,
    device: String,
}

/// What a `Trainable.forward` kept for its backward pass: the traces and the weights they
/// were made with. Opaque.
#[pyclass(module = "neuropart")]
pub(crate) struct Trace {
    out: Execution,
    network: neuropart::Network,
    samples: usize,
}

impl Trainable {
    /// The input spikes `x` (`bool [batch, T, neurons]` of the input population) as the
    /// executor takes them.
    fn input(&self, py: Python<'_>, x: &Bound<'_, PyAny>) -> PyResult<SpikeTrains> {
        let net = &self.trainer.exec.network;
        let pop = &net.populations[self.trainer.topo.input()];
        let (steps, n) = (net.steps as usize, pop.size);
        let arr = spike_array(py, x, "x")?;
        let shape = arr.shape().to_vec();
        if shape.len() != 3 || shape[1] != steps || shape[2] != n {
            return Err(PyValueError::new_err(format!(
                "x has shape {shape:?}; '{}' needs [batch, {steps}, {n}] (T is fixed when the \
                 Trainable is made: set the network's steps first)",
                pop.name
            )));
        }
        let a = arr
            .as_array()
            .into_dimensionality::<ndarray::Ix3>()
            .map_err(|e| PyValueError::new_err(format!("x: {e}")))?;
        Ok(SpikeTrains::from_dense(a))
    }

    /// The forward pass on `spikes` with every trace kept (an emulated hidden population's as
    /// its CADC's 8-bit codes: the same values in a quarter of the memory).
    fn run(&self, py: Python<'_>, spikes: SpikeTrains, seed: u32) -> PyResult<Execution> {
        let backend = backend(&self.device)?;
        let b = backend.as_ref();
        let exec = &self.trainer.exec;
        let input = self.trainer.topo.input();
        py.detach(|| {
            in_pool(|| exec.run_samples(b, &[(input, spikes)], Observe::CompactTraces, seed, 0))
        })?
        .map_err(to_py)
    }

    fn labels(&self, y: &Bound<'_, PyAny>, samples: usize) -> PyResult<Vec<u8>> {
        let classes = self.trainer.exec.network.populations[self.trainer.topo.readout()].size;
        let y: Vec<i64> = labels_of(y, "y")?.as_array().iter().copied().collect();
        if y.len() != samples {
            return Err(PyValueError::new_err(format!(
                "{samples} samples but {} labels",
                y.len()
            )));
        }
        if let Some(&bad) = y.iter().find(|&&l| !(0..classes as i64).contains(&l)) {
            return Err(PyValueError::new_err(format!(
                "label {bad} is outside 0..{classes} (the readout's neurons)"
            )));
        }
        Ok(y.iter().map(|&l| l as u8).collect())
    }
}

fn stats_dict<'py>(py: Python<'py>, st: &neuropart::BatchStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("loss", st.mean_loss())?;
    d.set_item("accuracy", st.accuracy())?;
    d.set_item("hidden_spikes", st.hidden_spikes / st.samples.max(1) as f64)?;
    d.set_item("samples", st.samples)?;
    Ok(d)
}

fn arrays<'py>(py: Python<'py>, grads: Vec<Vec<f32>>) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, grads.into_iter().map(|g| g.into_pyarray(py)))
}

#[pymethods]
impl Trainable {
    /// Set up `network` for training on `device` in `mode` on `chips` chips of `substrate`;
    /// `config` overrides the trainer's hyper-parameters by name (`readout_scale`,
    /// `surrogate_alpha`, `lr`, `reg_spikes`, ...; as `neuropart train`'s configuration).
    #[new]
    #[pyo3(signature = (network, mode = "emulated", device = "auto", chips = 1,
        substrate = None, config = None))]
    fn new(
        network: PyRef<'_, Network>,
        mode: &str,
        device: &str,
        chips: i128,
        substrate: Option<PyRef<'_, Substrate>>,
        config: Option<Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let chips = count("chips", chips, 1, u64::MAX)? as usize;
        let mode = mode_of(mode)?;
        backend(device)?;
        let cfg: TrainConfig = match config {
            None => TrainConfig::default(),
            Some(d) => config_of(&d)?,
        };
        let sub = substrate_or_default(substrate);
        let exec = network.executor(&sub, mode, chips)?;
        let trainer = in_pool(|| Trainer::new(exec, cfg))?.map_err(to_py)?;
        Ok(Trainable {
            trainer,
            device: device.to_string(),
        })
    }

    /// Projection names, in order (the order of `weights`, `set_weights` and the gradients).
    #[getter]
    fn projections(&self) -> Vec<String> {
        Network::projection_names(&self.trainer.exec.network)
    }

    /// Names of the spiking populations, in order (the keys of `forward`'s spike counts).
    #[getter]
    fn spiking(&self) -> Vec<String> {
        let net = &self.trainer.exec.network;
        net.populations
            .iter()
            .filter(|p| p.kind == neuropart::PopulationKind::Lif)
            .map(|p| p.name.clone())
            .collect()
    }

    /// The network with the current weights (a copy).
    #[getter]
    fn network(&self) -> Network {
        Network {
            inner: self.trainer.exec.network.clone(),
        }
    }

    /// The trainer's hyper-parameters (a dict).
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json(py, &self.trainer.cfg)
    }

    /// Epochs done: sets the trainer's learning rate and spike-regulariser decay.
    #[getter]
    fn epoch(&self) -> usize {
        self.trainer.epoch
    }

    #[setter]
    fn set_epoch(&mut self, epoch: i128) -> PyResult<()> {
        self.trainer.epoch = count("epoch", epoch, 0, u32::MAX as u64)? as usize;
        Ok(())
    }

    /// Largest weight magnitude the trainer allows (the chip's range in emulated mode; inf
    /// in ideal mode).
    #[getter]
    fn weight_limit(&self) -> f32 {
        self.trainer.weight_limit
    }

    /// The seed of the temporal noise of batch `batch_index` of the current epoch in
    /// `train_step` (pass it to `forward` for the same noise).
    fn noise_seed(&self, batch_index: i128) -> PyResult<u32> {
        let bi = count("batch_index", batch_index, 0, u32::MAX as u64)? as usize;
        Ok(self.trainer.noise_seed(bi))
    }

    /// Every projection's weights (`float32`, each in its projection's layout).
    fn weights<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        arrays(py, self.trainer.exec.network.weights())
    }

    /// Replace every projection's weights (a list in projection order, each of its length,
    /// finite).
    fn set_weights(&mut self, weights: &Bound<'_, PyAny>) -> PyResult<()> {
        let list: Vec<Bound<'_, PyAny>> = weights.try_iter()?.collect::<PyResult<_>>()?;
        let names = self.projections();
        if list.len() != names.len() {
            return Err(PyValueError::new_err(format!(
                "{} weight arrays for {} projections {names:?}",
                list.len(),
                names.len()
            )));
        }
        let mut all = Vec::with_capacity(list.len());
        for ((w, name), p) in list
            .iter()
            .zip(&names)
            .zip(&self.trainer.exec.network.projections)
        {
            let w: Vec<f32> = array_of::<f32>(w, "float32", &format!("weights of '{name}'"))?
                .as_array()
                .iter()
                .copied()
                .collect();
            if w.len() != p.weights.len() {
                return Err(PyValueError::new_err(format!(
                    "projection '{name}' has {} weights, not {}",
                    p.weights.len(),
                    w.len()
                )));
            }
            if let Some(i) = w.iter().position(|x| !x.is_finite()) {
                return Err(PyValueError::new_err(format!(
                    "projection '{name}': weight {i} is not finite ({})",
                    w[i]
                )));
            }
            all.push(w);
        }
        let exec = &mut self.trainer.exec;
        for (p, w) in exec.network.projections.iter_mut().zip(all) {
            p.weights = w;
        }
        exec.update_weights().map_err(to_py)
    }

    /// The forward pass on input spikes `x` (`bool [batch, T, neurons]`) with noise `seed`:
    /// `(scores float32 [batch, classes], {spiking population: float32 [batch, neurons]
    /// spike counts}, trace)`. The scores are what the trainer's loss reads (the readout's
    /// score × `readout_scale`); `trace` is for `backward`.
    #[pyo3(signature = (x, seed = 0))]
    fn forward<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        seed: i128,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyDict>, Trace)> {
        let seed = count("seed", seed, 0, u32::MAX as u64)? as u32;
        let spikes = self.input(py, x)?;
        let samples = spikes.samples();
        let out = self.run(py, spikes, seed)?;
        let net = &self.trainer.exec.network;
        let topo = &self.trainer.topo;
        let scores = neuropart::readout_scores(net, topo, &out, self.trainer.cfg.readout_scale);
        let c = net.populations[topo.readout()].size;
        let scores = numpy::ndarray::Array2::from_shape_vec((samples, c), scores)
            .expect("one score per sample and class")
            .into_pyarray(py)
            .into_any();
        let counts = PyDict::new(py);
        for (p, pop) in net.populations.iter().enumerate() {
            if pop.kind != neuropart::PopulationKind::Lif {
                continue;
            }
            let mut k = numpy::ndarray::Array2::<f32>::zeros((samples, pop.size));
            if let Some(t) = out.spikes.get(p) {
                for s in 0..samples {
                    for e in t.sample(s) {
                        k[[s, e.neuron as usize]] += 1.0;
                    }
                }
            }
            counts.set_item(&pop.name, k.into_pyarray(py))?;
        }
        let trace = Trace {
            out,
            network: net.clone(),
            samples,
        };
        Ok((scores, counts, trace))
    }

    /// The weight gradients (a list in projection order, each in its projection's layout)
    /// of a loss whose gradient on `trace`'s scores is `dscores` (`float32 [batch,
    /// classes]`) and on its spike counts `dcounts` (`{population: float32 [batch,
    /// neurons]}`, absent populations: 0), through the trainer's backward pass with the
    /// weights of that forward pass.
    #[pyo3(signature = (trace, dscores, dcounts = None))]
    fn backward<'py>(
        &self,
        py: Python<'py>,
        trace: PyRef<'py, Trace>,
        dscores: &Bound<'py, PyAny>,
        dcounts: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let net = &trace.network;
        let topo = &self.trainer.topo;
        if neuropart::Structure::of(net) != neuropart::Structure::of(&self.trainer.exec.network) {
            return Err(PyValueError::new_err(
                "trace: made by the forward pass of another network",
            ));
        }
        let b = trace.samples;
        let c = net.populations[topo.readout()].size;
        let grad = |obj: &Bound<'py, PyAny>, what: &str, n: usize| -> PyResult<Vec<f32>> {
            let a = array_of::<f32>(obj, "float32", what)?;
            if a.shape() != [b, n] {
                return Err(PyValueError::new_err(format!(
                    "{what} has shape {:?}; the forward pass gives [{b}, {n}]",
                    a.shape()
                )));
            }
            let v: Vec<f32> = a.as_array().iter().copied().collect();
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(PyValueError::new_err(format!(
                    "{what}: sample {}, value {} is {} (gradients must be finite)",
                    i / n.max(1),
                    i % n.max(1),
                    v[i]
                )));
            }
            Ok(v)
        };
        let scores = grad(dscores, "dscores", c)?;
        let mut counts: Vec<Vec<f32>> = vec![Vec::new(); net.populations.len()];
        if let Some(d) = dcounts {
            for (k, v) in d.iter() {
                let name: String = k.extract()?;
                let p = net
                    .population_id(&name)
                    .filter(|&p| net.populations[p].kind == neuropart::PopulationKind::Lif)
                    .ok_or_else(|| {
                        PyValueError::new_err(format!(
                            "dcounts['{name}']: not a spiking population of the network"
                        ))
                    })?;
                counts[p] = grad(&v, &format!("dcounts['{name}']"), net.populations[p].size)?;
            }
        }
        let cfg = &self.trainer.cfg;
        let epoch = self.trainer.epoch;
        let out = &trace.out;
        let upstream = Upstream::Given {
            scores: &scores,
            counts: &counts,
        };
        let (_, g) = py.detach(|| {
            in_pool(|| neuropart::gradients_from(net, topo, out, upstream, cfg, epoch))
        })?;
        arrays(py, g)
    }

    /// The trainer's own loss and gradients on input spikes `x` with labels `y` (noise
    /// `seed`): `(gradients, stats)`, the gradients of the batch mean of the cross-entropy
    /// and the readout and spike regularisers (not the weight regulariser, which the
    /// optimiser adds), as `train_step` computes them.
    #[pyo3(signature = (x, y, seed = 0))]
    fn gradients<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        y: &Bound<'py, PyAny>,
        seed: i128,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyDict>)> {
        let seed = count("seed", seed, 0, u32::MAX as u64)? as u32;
        let spikes = self.input(py, x)?;
        let labels = self.labels(y, spikes.samples())?;
        let out = self.run(py, spikes, seed)?;
        let t = &self.trainer;
        let (st, g) = py.detach(|| {
            in_pool(|| {
                neuropart::gradients(&t.exec.network, &t.topo, &out, &labels, &t.cfg, t.epoch)
            })
        })?;
        Ok((arrays(py, g)?, stats_dict(py, &st)?))
    }

    /// One step of the trainer itself on input spikes `x` with labels `y`, as batch
    /// `batch_index` of the current epoch (its noise): forward, backward, Adam with the
    /// weight regulariser and the clamp to `weight_limit`. Returns the batch's stats.
    #[pyo3(signature = (x, y, batch_index = 0))]
    fn train_step<'py>(
        &mut self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        y: &Bound<'py, PyAny>,
        batch_index: i128,
    ) -> PyResult<Bound<'py, PyDict>> {
        let bi = count("batch_index", batch_index, 0, u32::MAX as u64)? as usize;
        let spikes = self.input(py, x)?;
        let labels = self.labels(y, spikes.samples())?;
        let backend = backend(&self.device)?;
        let b = backend.as_ref();
        let t = &mut self.trainer;
        let st = py
            .detach(|| {
                in_pool(|| {
                    let (st, _) = t.train_batch(b, spikes, &labels, bi, Default::default())?;
                    t.sync(b)?;
                    Ok::<_, neuropart::Error>(st)
                })
            })?
            .map_err(to_py)?;
        stats_dict(py, &st)
    }

    fn __repr__(&self) -> String {
        format!(
            "Trainable('{}', mode={:?}, device='{}')",
            self.trainer.exec.network.name,
            self.trainer.mode(),
            self.device
        )
    }
}

/// The [`TrainConfig`] a `config` dict gives (defaults for the keys it leaves out): a bad
/// entry is named with its key and value (serde's message alone gave a column of the JSON text,
/// and a NaN "expected value").
fn config_of(d: &Bound<'_, PyDict>) -> PyResult<TrainConfig> {
    let py = d.py();
    let json = py.import("json")?;
    let strict = pyo3::types::PyDict::new(py);
    strict.set_item("allow_nan", false)?;
    let dumps = |obj: &Bound<'_, PyAny>| -> PyResult<String> {
        json.getattr("dumps")?
            .call((obj,), Some(&strict))?
            .extract()
    };
    let parse = |text: &str| serde_json::from_str::<TrainConfig>(text);
    if let Some(cfg) = dumps(d.as_any()).ok().and_then(|t| parse(&t).ok()) {
        return Ok(cfg);
    }
    // Name the entry at fault: each alone.
    for (k, v) in d.iter() {
        let name = k.repr()?.to_string();
        let value = v.repr()?.to_string();
        let one = PyDict::new(py);
        one.set_item(&k, &v)?;
        let text = dumps(one.as_any()).map_err(|e| {
            // json's "Out of range float values are not JSON compliant" for NaN and inf.
            PyValueError::new_err(format!("config[{name}] = {value}: {}", e.value(py)))
        })?;
        parse(&text).map_err(|e| {
            // serde's position is within this one-entry text: leave it out.
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            PyValueError::new_err(format!("config[{name}] = {value}: {msg}"))
        })?;
    }
    // Every entry fits alone: the whole's own error.
    let text = dumps(d.as_any())?;
    parse(&text).map_err(|e| PyValueError::new_err(format!("config: {e}")))
}

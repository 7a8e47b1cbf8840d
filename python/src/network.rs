//! `neuropart.Network`: loading, weights, running, training and evaluating a network.

use crate::*;

/// A spiking network: populations and projections, validated.
#[pyclass(module = "neuropart", from_py_object)]
#[derive(Clone)]
pub(crate) struct Network {
    pub(crate) inner: neuropart::Network,
}

impl Network {
    fn load(path: PathBuf, substrate: Option<PyRef<'_, Substrate>>) -> PyResult<Self> {
        let sub = substrate_or_default(substrate);
        Ok(Network {
            inner: in_pool(|| neuropart::Network::load(&path, &sub))?.map_err(to_py)?,
        })
    }

    pub(crate) fn executor(
        &self,
        sub: &neuropart::Substrate,
        mode: Mode,
        chips: usize,
    ) -> PyResult<Executor> {
        in_pool(|| {
            Executor::emulated(
                self.inner.clone(),
                sub,
                chips.max(1),
                &PartitionOptions::default(),
                AnalogConfig::default(),
                mode,
            )
        })?
        .map_err(to_py)
    }
}

#[pymethods]
impl Network {
    /// Load a TOML network file.
    #[staticmethod]
    #[pyo3(signature = (path, substrate = None))]
    fn from_toml(path: PathBuf, substrate: Option<PyRef<'_, Substrate>>) -> PyResult<Self> {
        Self::load(path, substrate)
    }

    /// Load a JSON network file.
    #[staticmethod]
    #[pyo3(signature = (path, substrate = None))]
    fn from_json(path: PathBuf, substrate: Option<PyRef<'_, Substrate>>) -> PyResult<Self> {
        Self::load(path, substrate)
    }

    /// A network from TOML or JSON text.
    #[staticmethod]
    #[pyo3(signature = (text, format = "json", substrate = None))]
    fn from_str(
        text: &str,
        format: &str,
        substrate: Option<PyRef<'_, Substrate>>,
    ) -> PyResult<Self> {
        let fmt = match format {
            "json" => neuropart::Format::Json,
            "toml" => neuropart::Format::Toml,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "format '{format}': use 'json' or 'toml'"
                )))
            }
        };
        let sub = substrate_or_default(substrate);
        let path = PathBuf::from(format!("<{format} text>"));
        Ok(Network {
            inner: in_pool(|| neuropart::Network::from_str(text, fmt, &path, &sub))?
                .map_err(to_py)?,
        })
    }

    /// A network file with the weights of a checkpoint written by training.
    #[staticmethod]
    #[pyo3(signature = (network_path, checkpoint_path, substrate = None))]
    fn from_checkpoint(
        network_path: PathBuf,
        checkpoint_path: PathBuf,
        substrate: Option<PyRef<'_, Substrate>>,
    ) -> PyResult<Self> {
        let mut net = Self::load(network_path, substrate)?;
        let ck = Checkpoint::load(&checkpoint_path).map_err(to_py)?;
        ck.apply_weights(&mut net.inner, &checkpoint_path)
            .map_err(to_py)?;
        if let Some(steps) = ck.steps {
            net.inner.steps = steps;
        }
        Ok(net)
    }

    /// Write the network (with its weights) as TOML.
    fn to_toml(&self, path: PathBuf) -> PyResult<()> {
        let text = toml::to_string(&self.inner).map_err(|e| {
            PyRuntimeError::new_err(format!("{}: writing TOML: {e}", path.display()))
        })?;
        neuropart::io::write_atomic(&path, text.as_bytes()).map_err(to_py)
    }

    /// The network as a NIR graph, written to `path` when given (conventions in
    /// `neuropart._nir` and the README).
    #[pyo3(signature = (path = None, dt = None, convention = "nir", structure = true))]
    fn to_nir<'py>(
        slf: &Bound<'py, Self>,
        path: Option<PathBuf>,
        dt: Option<f64>,
        convention: &str,
        structure: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        py.import("neuropart._nir")?
            .getattr("to_nir")?
            .call1((slf, path, dt, convention, structure))
    }

    /// The network (with its weights) as JSON text.
    fn to_json_str(&self) -> String {
        serde_json::to_string(&self.inner).expect("a network serialises")
    }

    /// Its name.
    #[getter]
    fn name(&self) -> String {
        self.inner.name.clone()
    }

    /// Time steps of one run.
    #[getter]
    fn steps(&self) -> u32 {
        self.inner.steps
    }

    #[setter]
    fn set_steps(&mut self, steps: i128) -> PyResult<()> {
        let steps = count("steps", steps, 1, neuropart::MAX_STEPS as u64)? as u32;
        self.inner.steps = steps;
        Ok(())
    }

    /// Populations as dicts (name, size, kind, params, shape).
    #[getter]
    fn populations<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json(py, &self.inner.populations)
    }

    /// Projection names, in order.
    #[getter]
    fn projections(&self) -> Vec<String> {
        Self::projection_names(&self.inner)
    }

    /// The weights of projection `name` (its layout: dense `[target][source]`).
    fn weights<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let k = self.projection_index(name)?;
        Ok(self.inner.projections[k].weights.clone().into_pyarray(py))
    }

    /// Replace the weights of projection `name` (same length).
    fn set_weights(&mut self, name: &str, weights: &Bound<'_, PyAny>) -> PyResult<()> {
        let k = self.projection_index(name)?;
        // Any array-like of numbers, flattened in C order, as `run` and `train` take their
        // inputs; a dense projection's as a flat array or as [target, source] (a matrix of
        // another shape, its transpose above all, would be flattened into the wrong places).
        let a = array_of::<f32>(weights, "float32", "weights")?;
        let net = &self.inner;
        let pr = &net.projections[k];
        if pr.connectivity == neuropart::Connectivity::Dense && a.ndim() > 1 {
            let size = |p: &str| net.population_id(p).map_or(0, |i| net.populations[i].size);
            let (t, s) = (size(&pr.target), size(&pr.source));
            if a.shape() != [t, s] {
                return Err(PyValueError::new_err(format!(
                    "projection '{name}': weights of shape {:?}; a dense projection's are \
                     [target, source] = [{t}, {s}] (or flat, {} values){}",
                    a.shape(),
                    t * s,
                    if a.shape() == [s, t] {
                        " — this is its transpose"
                    } else {
                        ""
                    }
                )));
            }
        }
        let w: Vec<f32> = a.as_array().iter().copied().collect();
        let have = self.inner.projections[k].weights.len();
        if w.len() != have {
            return Err(PyValueError::new_err(format!(
                "projection '{name}' has {have} weights, not {}",
                w.len()
            )));
        }
        if let Some(i) = w.iter().position(|x| !x.is_finite()) {
            return Err(PyValueError::new_err(format!(
                "projection '{name}': weight {i} is not finite ({})",
                w[i]
            )));
        }
        self.inner.projections[k].weights = w;
        Ok(())
    }

    /// How the network partitions onto `substrate` (default BrainScaleS-2) with `chips` chips.
    #[pyo3(signature = (substrate = None, chips = 1, merge_layers = false))]
    fn plan(
        &self,
        substrate: Option<PyRef<'_, Substrate>>,
        chips: i128,
        merge_layers: bool,
    ) -> PyResult<Plan> {
        let chips = count("chips", chips, 1, u64::MAX)? as usize;
        let sub = substrate_or_default(substrate);
        let plan = neuropart::Plan::new(
            &self.inner,
            &sub,
            &PartitionOptions {
                merge_layers,
                ..Default::default()
            },
        )
        .map_err(to_py)?;
        let schedule = Schedule::new(&plan, chips);
        let report = PlanReport::new(&self.inner, &plan, &schedule);
        Ok(Plan {
            network: self.inner.clone(),
            plan,
            report,
        })
    }

    /// Run a batch: `inputs` maps input population names to `bool [batch, T, neurons]`
    /// arrays. Returns, per population, `bool [batch, T, neurons]` spikes (spiking
    /// populations) or `float32 [batch, T, neurons]` membranes (readouts).
    #[pyo3(signature = (inputs, device = "auto", mode = "ideal", chips = 1, seed = 0,
        substrate = None))]
    #[allow(clippy::too_many_arguments)]
    fn run<'py>(
        &self,
        py: Python<'py>,
        inputs: &Bound<'py, PyDict>,
        device: &str,
        mode: &str,
        chips: i128,
        seed: i128,
        substrate: Option<PyRef<'py, Substrate>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let chips = count("chips", chips, 1, u64::MAX)? as usize;
        let seed = count("seed", seed, 0, u32::MAX as u64)? as u32;
        // T comes from the input: a network runs any number of steps.
        if let Some((_, v)) = inputs.iter().next() {
            let shape: Vec<usize> = py
                .import("numpy")?
                .call_method1("shape", (&v,))?
                .extract()?;
            if shape.len() == 3
                && shape[1] != self.inner.steps as usize
                && (1..=neuropart::MAX_STEPS as usize).contains(&shape[1])
            {
                let mut other = self.clone();
                other.inner.steps = shape[1] as u32;
                return other.run(
                    py,
                    inputs,
                    device,
                    mode,
                    chips as i128,
                    seed as i128,
                    substrate,
                );
            }
        }
        let mode = mode_of(mode)?;
        let backend = backend(device)?;
        let net = &self.inner;
        let steps = net.steps as usize;
        check_run_memory(py, net, inputs)?;
        let mut given = Vec::new();
        let mut batch = None;
        for (k, v) in inputs.iter() {
            let name: String = k.extract()?;
            let pop = net.population_id(&name).ok_or_else(|| {
                PyValueError::new_err(format!("no population '{name}' in the network"))
            })?;
            if net.populations[pop].kind != neuropart::PopulationKind::Input {
                let inputs: Vec<String> = net
                    .inputs()
                    .iter()
                    .map(|&i| format!("'{}'", net.populations[i].name))
                    .collect();
                let kind = match net.populations[pop].kind {
                    neuropart::PopulationKind::Readout => "a readout",
                    _ => "a hidden (LIF) population",
                };
                return Err(PyValueError::new_err(format!(
                    "inputs['{name}']: '{name}' is {kind}, not an input; the network's inputs \
                     are [{}]",
                    inputs.join(", ")
                )));
            }
            let arr = spike_array(py, &v, &format!("inputs['{name}']"))?;
            let shape = arr.shape().to_vec();
            let n = net.populations[pop].size;
            if shape.len() != 3 || shape[1] != steps || shape[2] != n {
                return Err(PyValueError::new_err(format!(
                    "inputs['{name}'] has shape {shape:?}; the network needs [batch, {steps}, {n}]"
                )));
            }
            if *batch.get_or_insert(shape[0]) != shape[0] {
                return Err(PyValueError::new_err(
                    "the inputs have different batch sizes",
                ));
            }
            let a = arr
                .as_array()
                .into_dimensionality::<ndarray::Ix3>()
                .map_err(|e| PyValueError::new_err(format!("inputs['{name}']: {e}")))?;
            given.push((pop, SpikeTrains::from_dense(a)));
        }
        let sub = substrate_or_default(substrate);
        let exec = self.executor(&sub, mode, chips)?;
        let b = backend.as_ref();
        let mut out = py
            .detach(|| in_pool(|| exec.run_with_noise(b, &given, Observe::ReadoutTraces, seed)))?
            .map_err(to_py)?;
        let samples = batch.unwrap_or(0);
        let result = PyDict::new(py);
        for (p, pop) in net.populations.iter().enumerate() {
            let n = pop.size;
            match pop.kind {
                neuropart::PopulationKind::Readout => {
                    let arr = out
                        .take_membranes(p)
                        .unwrap_or_else(|| Array3::zeros((samples, steps, n)));
                    result.set_item(&pop.name, arr.into_pyarray(py))?;
                }
                neuropart::PopulationKind::Lif => {
                    let arr = out
                        .spikes_dense(p)
                        .unwrap_or_else(|| Array3::from_elem((samples, steps, n), false));
                    result.set_item(&pop.name, arr.into_pyarray(py))?;
                }
                neuropart::PopulationKind::Input => {}
            }
        }
        Ok(result)
    }

    /// Train on images `train_x` (`float32 [n, H, W]` or `[n, C, H, W]` in [0, 1]) with labels
    /// `train_y`, as `neuropart train` does (time-to-first-spike input, the published
    /// schedule); evaluate on `test_x`/`test_y` after each epoch when given; write
    /// `out/checkpoint.json` after each epoch when `out` is given (a checkpoint already there
    /// is replaced only with `force=True`); call `on_epoch(record)` after each epoch, with the
    /// network already holding that epoch's weights. The network's weights become the trained
    /// ones. Returns the records.
    #[pyo3(signature = (train_x, train_y, test_x = None, test_y = None, epochs = 15,
        mode = "emulated", device = "auto", out = None, on_epoch = None, batch = 100, seed = 1,
        augment = true, lr = 0.002, substrate = None, force = false))]
    #[allow(clippy::too_many_arguments)]
    fn train<'py>(
        slf: &Bound<'py, Self>,
        py: Python<'py>,
        train_x: &Bound<'py, PyAny>,
        train_y: &Bound<'py, PyAny>,
        test_x: Option<Bound<'py, PyAny>>,
        test_y: Option<Bound<'py, PyAny>>,
        epochs: i128,
        mode: &str,
        device: &str,
        out: Option<PathBuf>,
        on_epoch: Option<Bound<'py, PyAny>>,
        batch: i128,
        seed: i128,
        augment: bool,
        lr: f32,
        substrate: Option<PyRef<'py, Substrate>>,
        force: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let epochs = count("epochs", epochs, 1, u64::MAX)? as usize;
        let batch = count("batch", batch, 1, u64::MAX)? as usize;
        let seed = count("seed", seed, 0, u64::MAX)?;
        let mode = mode_of(mode)?;
        let backend = backend(device)?;
        check_augmentable(py, train_x, augment)?;
        let train = dataset(
            (&array_of(train_x, "float32", "train_x")?, "train_x"),
            (&labels_of(train_y, "train_y")?, "train_y"),
        )?;
        let test = match (&test_x, &test_y) {
            (Some(x), Some(y)) => Some(dataset(
                (&array_of(x, "float32", "test_x")?, "test_x"),
                (&labels_of(y, "test_y")?, "test_y"),
            )?),
            (None, None) => None,
            _ => {
                return Err(PyValueError::new_err(
                    "give both test_x and test_y, or neither",
                ))
            }
        };
        if let Some(dir) = &out {
            let existing = dir.join("checkpoint.json");
            if !force && existing.exists() {
                return Err(PyValueError::new_err(format!(
                    "out = '{}': {} is a checkpoint of an earlier training; pass force=True to \
                     replace it, or another folder",
                    dir.display(),
                    existing.display()
                )));
            }
            neuropart::io::check_writable(dir).map_err(to_py)?;
        }
        let cfg = TrainConfig {
            epochs,
            batch,
            seed,
            augment,
            lr,
            ..Default::default()
        };
        let sub = substrate_or_default(substrate);
        // The network is borrowed only here and between epochs, so that `on_epoch` may read it.
        let exec = slf.borrow().executor(&sub, mode, 1)?;
        let mut trainer = Trainer::new(exec, cfg).map_err(to_py)?;
        trainer.check_data(&train).map_err(to_py)?;
        if let Some(t) = &test {
            trainer.check_data(t).map_err(to_py)?;
        }
        let records = PyList::empty(py);
        let b = backend.as_ref();
        while trainer.epoch < epochs {
            let t0 = std::time::Instant::now();
            let st = py
                .detach(|| in_pool(|| trainer.train_epoch(b, &train, |_, _, _| {})))?
                .map_err(to_py)?;
            let seconds = t0.elapsed().as_secs_f64();
            let tst = match &test {
                Some(t) => Some(
                    py.detach(|| in_pool(|| trainer.evaluate(b, t, 500)))?
                        .map_err(to_py)?,
                ),
                None => None,
            };
            let rec = PyDict::new(py);
            rec.set_item("epoch", trainer.epoch)?;
            rec.set_item("train_loss", st.mean_loss())?;
            rec.set_item("train_accuracy", st.accuracy())?;
            rec.set_item("hidden_spikes", st.hidden_spikes / st.samples.max(1) as f64)?;
            rec.set_item("seconds", seconds)?;
            rec.set_item("samples_per_s", st.samples as f64 / seconds.max(1e-9))?;
            if let Some(t) = &tst {
                rec.set_item("test_loss", t.mean_loss())?;
                rec.set_item("test_accuracy", t.accuracy())?;
            }
            trainer.history.push(neuropart::EpochRecord {
                epoch: trainer.epoch,
                train_loss: st.mean_loss(),
                train_accuracy: st.accuracy(),
                test_loss: tst.as_ref().map(|t| t.mean_loss()),
                test_accuracy: tst.as_ref().map(|t| t.accuracy()),
                hidden_spikes: st.hidden_spikes / st.samples.max(1) as f64,
                seconds,
                samples_per_s: st.samples as f64 / seconds.max(1e-9),
            });
            if let Some(dir) = &out {
                trainer.save(&dir.join("checkpoint.json")).map_err(to_py)?;
            }
            slf.borrow_mut().inner = trainer.exec.network.clone();
            if let Some(cb) = &on_epoch {
                cb.call1((rec.clone(),))?;
            }
            records.append(rec)?;
            py.check_signals()?;
        }
        slf.borrow_mut().inner = trainer.exec.network.clone();
        Ok(records)
    }

    /// Loss, accuracy and hidden spikes per sample on images `x` with labels `y`.
    #[pyo3(signature = (x, y, mode = "emulated", device = "auto", batch = 500, substrate = None))]
    #[allow(clippy::too_many_arguments)]
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        y: &Bound<'py, PyAny>,
        mode: &str,
        device: &str,
        batch: i128,
        substrate: Option<PyRef<'py, Substrate>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let batch = count("batch", batch, 1, u64::MAX)? as usize;
        let mode = mode_of(mode)?;
        let backend = backend(device)?;
        let data = dataset(
            (&array_of(x, "float32", "x")?, "x"),
            (&labels_of(y, "y")?, "y"),
        )?;
        let sub = substrate_or_default(substrate);
        let exec = self.executor(&sub, mode, 1)?;
        let trainer = Trainer::new(exec, TrainConfig::default()).map_err(to_py)?;
        let b = backend.as_ref();
        let st = py
            .detach(|| in_pool(|| trainer.evaluate(b, &data, batch)))?
            .map_err(to_py)?;
        let d = PyDict::new(py);
        d.set_item("loss", st.mean_loss())?;
        d.set_item("accuracy", st.accuracy())?;
        d.set_item("hidden_spikes", st.hidden_spikes / st.samples.max(1) as f64)?;
        d.set_item("samples", st.samples)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let pops: Vec<String> = self
            .inner
            .populations
            .iter()
            .map(|p| format!("{}[{}]", p.name, p.size))
            .collect();
        format!(
            "Network('{}', T={}, {})",
            self.inner.name,
            self.inner.steps,
            pops.join(" -> ")
        )
    }
}

impl Network {
    /// Projection names as `projections` gives them.
    pub(crate) fn projection_names(net: &neuropart::Network) -> Vec<String> {
        net.projections
            .iter()
            .map(|p| {
                if p.name.is_empty() {
                    format!("{}->{}", p.source, p.target)
                } else {
                    p.name.clone()
                }
            })
            .collect()
    }

    fn projection_index(&self, name: &str) -> PyResult<usize> {
        self.projections()
            .iter()
            .position(|p| p == name)
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "no projection '{name}' (the network has {:?})",
                    self.projections()
                ))
            })
    }
}

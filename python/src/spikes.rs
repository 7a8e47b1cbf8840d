//! Spike lists to dense arrays.

use crate::*;

/// Spikes as a dense `bool [batch, T, neurons]` array, for tests and small batches.
#[pyfunction]
pub(crate) fn spikes_to_dense<'py>(
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

/// Set the memory this process may plan for: bytes as an int, or a size such as "512M",
/// "16G". Runs that would need more raise `MemoryError` before allocating; a training batch
/// that would need more runs in pieces one after another (`MemoryError` if 16 samples do
/// not fit).
/// The default is 80 % of the machine's memory.
#[pyfunction]
pub(crate) fn set_memory_limit(limit: &Bound<'_, PyAny>) -> PyResult<()> {
    let bytes = if let Ok(n) = limit.extract::<i128>() {
        if n <= 0 || n > u64::MAX as i128 {
            return Err(PyValueError::new_err(format!(
                "limit = {n}: a positive number of bytes"
            )));
        }
        n as u64
    } else if let Ok(s) = limit.extract::<String>() {
        neuropart::parse_size(&s).map_err(|e| {
            PyValueError::new_err(python_words(&e).replace("argument max_memory", "limit"))
        })?
    } else {
        return Err(PyTypeError::new_err(
            "limit: bytes as an int or a size such as '512M'",
        ));
    };
    neuropart::set_memory_limit(bytes);
    Ok(())
}

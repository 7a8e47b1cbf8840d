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

//! The classification loss: readout score = scale × the readout membrane's maximum over time
//! (or the readout's own score, [`crate::Score`]), log-softmax, cross-entropy; shared by
//! training and evaluation.

use crate::model::network::PopulationId;
use crate::run::executor::Execution;

/// Readout scores `[sample][class]` from an execution: scale × the readout membrane's maximum
/// over time, or its own score ([`crate::Score`]).
pub fn scores(exec: &Execution, readout: PopulationId, scale: f32) -> Vec<f32> {
    exec.peak[readout]
        .as_ref()
        .expect("readout maxima are recorded")
        .iter()
        .map(|v| v * scale)
        .collect()
}

/// `ln Σ exp(v)`, computed stably (shifted by the maximum).
pub fn log_sum_exp(v: &[f32]) -> f32 {
    let top = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    top + v.iter().map(|x| (x - top).exp()).sum::<f32>().ln()
}

pub use crate::run::executor::argmax;

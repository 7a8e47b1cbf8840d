//! The optimiser's state and one step's size: Adam's moments and step count per projection,
//! plain data shared by the trainer (`train::optimiser` owns the update and the schedule) and
//! the backends that train on their own device. Never computes a step.

use serde::{Deserialize, Serialize};

/// The step's size, the weights' range and the weight regulariser's strength.
#[derive(Clone, Copy, Debug)]
pub struct StepSize {
    /// Learning rate.
    pub lr: f32,
    /// Every weight is clamped to ±`limit`.
    pub limit: f32,
    /// Strength of the regulariser `reg · mean(w⁴)`.
    pub reg: f32,
}

/// Adam state for every projection's weights.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Adam {
    /// First moments.
    pub m: Vec<Vec<f32>>,
    /// Second moments.
    pub v: Vec<Vec<f32>>,
    /// Steps taken.
    pub t: u64,
}

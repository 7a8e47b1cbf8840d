//! Adam with the published schedule's step size, weights clamped to the chip's range in
//! emulated mode. Plain loops over each projection's weights.

use crate::network::Network;
use serde::{Deserialize, Serialize};

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

impl Adam {
    /// Zero state for `network`.
    pub fn new(network: &Network) -> Self {
        let z: Vec<Vec<f32>> = network
            .projections
            .iter()
            .map(|p| vec![0.0; p.weights.len()])
            .collect();
        Adam {
            m: z.clone(),
            v: z,
            t: 0,
        }
    }

    /// One step of size `lr` on every projection, then clamp weights to ±`limit`. Returns
    /// false (leaving the weights changed) if any weight became non-finite.
    pub fn step(&mut self, network: &mut Network, grads: &[Vec<f32>], lr: f32, limit: f32) -> bool {
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        self.t += 1;
        let c1 = 1.0 - b1.powi(self.t as i32);
        let c2 = 1.0 - b2.powi(self.t as i32);
        for (p, g) in grads.iter().enumerate() {
            let w = &mut network.projections[p].weights;
            let (m, v) = (&mut self.m[p], &mut self.v[p]);
            for k in 0..w.len() {
                m[k] = b1 * m[k] + (1.0 - b1) * g[k];
                v[k] = b2 * v[k] + (1.0 - b2) * g[k] * g[k];
                let step = lr * (m[k] / c1) / ((v[k] / c2).sqrt() + eps);
                w[k] = (w[k] - step).clamp(-limit, limit);
            }
        }
        network
            .projections
            .iter()
            .all(|p| p.weights.iter().all(|w| w.is_finite()))
    }

    /// Check the state fits `network` (one moment per weight of every projection).
    pub fn check(&self, network: &Network) -> std::result::Result<(), String> {
        let n = network.projections.len();
        if self.m.len() != n || self.v.len() != n {
            return Err(format!(
                "the optimiser state has {} and {} moment arrays, the network {n} projections",
                self.m.len(),
                self.v.len()
            ));
        }
        for (k, p) in network.projections.iter().enumerate() {
            for (name, arr) in [("first", &self.m[k]), ("second", &self.v[k])] {
                if arr.len() != p.weights.len() {
                    return Err(format!(
                        "{name} moments of projection '{}': {} values for {} weights",
                        p.name,
                        arr.len(),
                        p.weights.len()
                    ));
                }
                if let Some(i) = arr.iter().position(|x| !x.is_finite()) {
                    return Err(format!(
                        "{name} moment {i} of projection '{}' is not finite",
                        p.name
                    ));
                }
            }
        }
        Ok(())
    }
}

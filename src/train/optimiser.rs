//! Adam with the published schedule's step size, fused with the weight regulariser and the
//! clamp to the chip's range in emulated mode: one parallel pass over the weights.

use crate::network::Network;
use rayon::prelude::*;
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

    /// One step of size `lr` on every projection, fused with the weight regulariser
    /// `reg · mean(w⁴)` per projection (its gradient added to `grads`) and the clamp of every
    /// weight to ±`limit`: one parallel pass over the weights, no call per weight. Returns the
    /// regulariser's loss (of the weights before the step, per sample) and whether every
    /// weight is finite afterwards. The pass is split into fixed blocks summed in order, so the
    /// result does not depend on the number of threads.
    pub fn step(
        &mut self,
        network: &mut Network,
        grads: &[Vec<f32>],
        lr: f32,
        limit: f32,
        reg: f32,
    ) -> (f64, bool) {
        const BLOCK: usize = 1 << 14;
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        self.t += 1;
        let c1 = 1.0 - b1.powi(self.t as i32);
        let c2 = 1.0 - b2.powi(self.t as i32);
        let mut loss = 0.0;
        let mut finite = true;
        for (p, g) in grads.iter().enumerate() {
            let w = &mut network.projections[p].weights;
            let numel = w.len().max(1) as f32;
            let (m, v) = (&mut self.m[p], &mut self.v[p]);
            let blocks: Vec<(f64, bool)> = w
                .par_chunks_mut(BLOCK)
                .zip(m.par_chunks_mut(BLOCK))
                .zip(v.par_chunks_mut(BLOCK))
                .zip(g.par_chunks(BLOCK))
                .map(|(((w, m), v), g)| {
                    let mut loss = 0.0f64;
                    let mut finite = true;
                    for (((w, m), v), &g) in w.iter_mut().zip(m).zip(v).zip(g) {
                        let w3 = *w * *w * *w;
                        loss += (reg * (w3 * *w) / numel) as f64;
                        let g = g + reg * 4.0 * w3 / numel;
                        *m = b1 * *m + (1.0 - b1) * g;
                        *v = b2 * *v + (1.0 - b2) * g * g;
                        let step = lr * (*m / c1) / ((*v / c2).sqrt() + eps);
                        *w = (*w - step).clamp(-limit, limit);
                        finite &= w.is_finite();
                    }
                    (loss, finite)
                })
                .collect();
            for (l, f) in blocks {
                loss += l;
                finite &= f;
            }
        }
        (loss, finite)
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

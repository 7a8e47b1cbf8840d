//! Adam with the published schedule's step size, fused with the weight regulariser and the
//! clamp to the chip's range in emulated mode: one parallel pass over the weights.

use crate::model::network::Network;
use crate::plan::compile::{stage_block, WeightStage};
use crate::simd::widest;
use rayon::prelude::*;

pub use crate::adam::{Adam, StepSize};

/// What every weight's Adam update shares.
#[derive(Clone, Copy)]
struct AdamConsts {
    b1: f32,
    b2: f32,
    inv_c1: f32,
    inv_c2: f32,
    eps: f32,
    lr: f32,
    limit: f32,
    /// Regulariser strength over the projection's weight count.
    reg_n: f32,
}

widest! {
/// Adam with the regulariser on one block; returns the regulariser's loss of the block (summed
/// in eight f64 lanes combined in a fixed order) and whether every new weight is finite.
/// Written over lanes of eight so that it vectorises.
fn adam_block(k: &AdamConsts, w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) -> (f64, bool) {
    #[inline(always)]
    fn one(k: &AdamConsts, w: &mut f32, m: &mut f32, v: &mut f32, g: f32) -> (f32, bool) {
        let w3 = *w * *w * *w;
        let loss = k.reg_n * (w3 * *w);
        let g = g + 4.0 * k.reg_n * w3;
        *m = k.b1 * *m + (1.0 - k.b1) * g;
        *v = k.b2 * *v + (1.0 - k.b2) * g * g;
        let step = k.lr * (*m * k.inv_c1) / ((*v * k.inv_c2).sqrt() + k.eps);
        *w = (*w - step).clamp(-k.limit, k.limit);
        (loss, w.is_finite())
    }
    let mut lanes = [0f64; 8];
    let mut finite = [true; 8];
    let n8 = w.len() / 8 * 8;
    let (wa, wb) = w.split_at_mut(n8);
    let (ma, mb) = m.split_at_mut(n8);
    let (va, vb) = v.split_at_mut(n8);
    let (ga, gb) = g.split_at(n8);
    for (((w, m), v), g) in wa
        .chunks_exact_mut(8)
        .zip(ma.chunks_exact_mut(8))
        .zip(va.chunks_exact_mut(8))
        .zip(ga.chunks_exact(8))
    {
        for i in 0..8 {
            let (l, f) = one(k, &mut w[i], &mut m[i], &mut v[i], g[i]);
            lanes[i] += l as f64;
            finite[i] &= f;
        }
    }
    for (i, (((w, m), v), &g)) in wb.iter_mut().zip(mb).zip(vb).zip(gb).enumerate() {
        let (l, f) = one(k, w, m, v, g);
        lanes[i] += l as f64;
        finite[i] &= f;
    }
    let loss = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6]))
        + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
    (loss, finite.iter().all(|&f| f))
}
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
    /// `reg · mean(w⁴)` per projection (its gradient added to `grads`), the clamp of every
    /// weight to ±`limit` and the staging of the new weights for the programs (their map onto
    /// the substrate's range and the bounds that set the fixed-point exponents, see
    /// `WeightStage`): one parallel pass over the weights, no call per weight. Returns the
    /// regulariser's loss (of the weights before the step, per sample) and whether every
    /// weight is finite afterwards. The pass is split into fixed blocks of whole rows summed
    /// in order, so the result does not depend on the number of threads; the blocks of every
    /// projection share the threads (a recurrent network's many small projections, one block
    /// each, ran one after another).
    pub fn step(
        &mut self,
        network: &mut Network,
        grads: &[Vec<f32>],
        hyper: StepSize,
        stage: &mut WeightStage,
    ) -> (f64, bool) {
        const BLOCK: usize = 1 << 14;
        let StepSize { lr, limit, reg } = hyper;
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        self.t += 1;
        let c1 = 1.0 - b1.powi(self.t as i32);
        let c2 = 1.0 - b2.powi(self.t as i32);
        // Every block of every projection: (its constants, map, row length, weights, moments,
        // gradients, staged weights and bounds).
        let mut items = Vec::new();
        let projections = network.projections.iter_mut().map(|p| &mut p.weights);
        let moments = self.m.iter_mut().zip(self.v.iter_mut());
        for (((w, (m, v)), g), slot) in projections.zip(moments).zip(grads).zip(stage.slots()) {
            let k = AdamConsts {
                b1,
                b2,
                inv_c1: 1.0 / c1,
                inv_c2: 1.0 / c2,
                eps,
                lr,
                limit,
                reg_n: reg / w.len().max(1) as f32,
            };
            let (map, row, len) = (slot.map, slot.row, slot.block_len(BLOCK));
            let blocks = w
                .chunks_mut(len)
                .zip(m.chunks_mut(len))
                .zip(v.chunks_mut(len))
                .zip(g.chunks(len))
                .zip(slot.blocks(len));
            for ((((w, m), v), g), (mapped, bounds)) in blocks {
                items.push((k, map, row, w, m, v, g, mapped, bounds));
            }
        }
        let blocks: Vec<(f64, bool)> = items
            .into_par_iter()
            .map(|(k, map, row, w, m, v, g, mapped, bounds)| {
                let (loss, finite) = adam_block(&k, w, m, v, g);
                stage_block(map, row, w, mapped, bounds);
                (loss, finite)
            })
            .collect();
        // In order, as one projection after another summed them.
        let mut loss = 0.0;
        let mut finite = true;
        for (l, f) in blocks {
            loss += l;
            finite &= f;
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

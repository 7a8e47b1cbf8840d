//! The input encoder: pixel intensities to input spikes, time-to-first-spike as in the
//! reference experiments (one spike per pixel at most; brighter pixels spike earlier), with the
//! reference preprocessing. One encoder for training, evaluation, runs and benchmarks.

use crate::data::augment::{rotate_into, rotation_angle};
use crate::data::Dataset;
use crate::rng::Rng;
use crate::simd::widest;
use crate::spikes::store::{SpikeEvent, SpikeTrains};

/// Linear time-to-first-spike: a value `x` in `[lo, hi]` spikes at step
/// `T − round(T·(x − lo)/(hi − lo))`; a value at `lo` would spike at step `T`, outside the run,
/// so it stays silent. Events come sorted by (step, neuron).
pub fn ttfs(values: &[f32], lo: f32, hi: f32, steps: u32) -> Vec<SpikeEvent> {
    let mut enc = Encoder::default();
    enc.at.resize(values.len(), 0);
    ttfs_steps(values, lo, hi, steps, &mut enc.at);
    let mut out = Vec::new();
    enc.events_into(steps, &mut out);
    out
}

/// The reference experiment's input encoding of one image (values in [0, 1]): divided by its
/// maximum, ×1.2, clamped to [0, 1] (so the brightest pixels saturate), then linear
/// time-to-first-spike over [0, 1]. Training, evaluation, `run` and the benchmarks all encode
/// through this one function.
pub fn image(img: &[f32], steps: u32) -> Vec<SpikeEvent> {
    let mut out = Vec::new();
    Encoder::default().image_into(img, steps, &mut out);
    out
}

/// Encode images `idx` of `data` with [`image()`] for `steps` steps, each after the random
/// rotation of the reference experiment when `augment` gives a generator. The rotations are
/// drawn in image order, the images encoded in parallel (in groups, each with its own reused
/// buffers).
pub fn images(data: &Dataset, idx: &[usize], steps: u32, augment: Option<&mut Rng>) -> SpikeTrains {
    images_part(data, idx, steps, augment, 0..idx.len())
}

/// The images `idx[part]` of what [`images`] encodes for `idx` (the rotations of all of `idx`
/// drawn, so each image gets the rotation it gets in the whole): a process's shard of a batch.
pub fn images_part(
    data: &Dataset,
    idx: &[usize],
    steps: u32,
    augment: Option<&mut Rng>,
    part: std::ops::Range<usize>,
) -> SpikeTrains {
    use rayon::prelude::*;
    const GROUP: usize = 8;
    let angles: Vec<Option<f32>> = match augment {
        Some(rng) => idx
            .iter()
            .map(|_| rotation_angle(data.shape, rng))
            .collect(),
        None => vec![None; idx.len()],
    };
    let (idx, angles) = (&idx[part.clone()], &angles[part]);
    let [_, h, w] = data.shape;
    let groups: Vec<SpikeTrains> = idx
        .par_chunks(GROUP)
        .zip(angles.par_chunks(GROUP))
        .map_init(Encoder::default, |enc, (ids, angles)| {
            let mut events = Vec::new();
            let mut offsets = Vec::with_capacity(ids.len() + 1);
            offsets.push(0);
            for (&i, angle) in ids.iter().zip(angles) {
                match angle {
                    Some(deg) => {
                        let mut img = std::mem::take(&mut enc.rotated);
                        rotate_into(data.image(i), h, w, *deg, &mut img);
                        enc.image_into(&img, steps, &mut events);
                        enc.rotated = img;
                    }
                    None => enc.image_into(data.image(i), steps, &mut events),
                }
                offsets.push(events.len() as u32);
            }
            SpikeTrains::from_flat(data.image_size(), steps, offsets, events)
        })
        .collect();
    let mut all = SpikeTrains::empty(0, data.image_size(), steps);
    for g in &groups {
        all.append(g);
    }
    all
}

/// Buffers of the encoder, reused from image to image.
#[derive(Default)]
struct Encoder {
    /// Each value's step (`steps`: silent).
    at: Vec<u32>,
    /// The firing neurons.
    fired: Vec<u32>,
    /// Per step, where its events start.
    start: Vec<u32>,
    /// A rotated image.
    rotated: Vec<f32>,
}

impl Encoder {
    /// Append the events of [`image`] to `out`.
    fn image_into(&mut self, img: &[f32], steps: u32, out: &mut Vec<SpikeEvent>) {
        self.at.clear();
        self.at.resize(img.len(), 0);
        image_steps(img, steps, &mut self.at);
        self.events_into(steps, out);
    }

    /// Append the events of the steps in `self.at` to `out`, sorted by (step, neuron): the
    /// firing neurons gathered without a branch per neuron, then a counting pass over their
    /// steps (a sort when there are more steps than neurons).
    fn events_into(&mut self, steps: u32, out: &mut Vec<SpikeEvent>) {
        let at = &self.at;
        self.fired.clear();
        self.fired.resize(at.len(), 0);
        let mut k = 0;
        for (n, &step) in at.iter().enumerate() {
            self.fired[k] = n as u32;
            k += usize::from(step < steps);
        }
        let fired = &self.fired[..k];
        let base = out.len();
        out.resize(base + k, SpikeEvent { step: 0, neuron: 0 });
        let ev = &mut out[base..];
        if steps as usize > at.len() {
            for (e, &n) in ev.iter_mut().zip(fired) {
                *e = SpikeEvent {
                    step: at[n as usize],
                    neuron: n,
                };
            }
            ev.sort_unstable();
            return;
        }
        let start = &mut self.start;
        start.clear();
        start.resize(steps as usize + 1, 0);
        for &n in fired {
            start[at[n as usize] as usize + 1] += 1;
        }
        for t in 0..steps as usize {
            start[t + 1] += start[t];
        }
        for &n in fired {
            let step = at[n as usize];
            ev[start[step as usize] as usize] = SpikeEvent { step, neuron: n };
            start[step as usize] += 1;
        }
    }
}

/// `steps − round(tx)` for `tx` = T·x with x in [0, 1] (NaN counts as 0: silent).
#[inline(always)]
fn ttfs_step(steps: u32, tx: f32) -> u32 {
    // `max` drops NaN; the largest f32 below 2^32 bounds `r` for any `steps`.
    let r = crate::simd::round_f32(tx)
        .max(0.0)
        .min(steps as f32)
        .min(4_294_967_040.0);
    // SAFETY: `r` is finite, non-negative and below 2^32.
    steps.saturating_sub(unsafe { r.to_int_unchecked::<u32>() })
}

widest! {
    /// The step of each value under [`ttfs`] (`steps` for a silent one), into `at`.
    fn ttfs_steps(values: &[f32], lo: f32, hi: f32, steps: u32, at: &mut [u32]) {
        let span = (hi - lo).max(f32::MIN_POSITIVE);
        let t = steps as f32;
        for (a, &x) in at.iter_mut().zip(values) {
            let x = ((x - lo) / span).clamp(0.0, 1.0);
            // In [0, T] (NaN clamps to NaN, and becomes 0 → step T: silent).
            *a = ttfs_step(steps, t * x);
        }
    }
}

widest! {
    /// The step of each pixel under [`image`] (`steps` for a silent one), into `at`.
    fn image_steps(img: &[f32], steps: u32, at: &mut [u32]) {
        // The largest pixel, in sixteen lanes (`max` is exact in any order, so this is the
        // serial fold's value).
        let mut lanes = [0.0f32; 16];
        let mut chunks = img.chunks_exact(16);
        for c in &mut chunks {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l = l.max(v);
            }
        }
        let max = chunks
            .remainder()
            .iter()
            .chain(&lanes)
            .fold(0.0f32, |m, &v| m.max(v))
            .max(1e-6);
        let t = steps as f32;
        let step = |v: f32| {
            // `ttfs` over [0, 1] of the scaled value.
            let x = (v / max * 1.2).clamp(0.0, 1.0);
            ttfs_step(steps, t * x)
        };
        let mut out = at.chunks_exact_mut(16);
        let mut inp = img.chunks_exact(16);
        for (o, c) in (&mut out).zip(&mut inp) {
            for i in 0..16 {
                o[i] = step(c[i]);
            }
        }
        for (o, &v) in out.into_remainder().iter_mut().zip(inp.remainder()) {
            *o = step(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_scaled_by_their_maximum_then_encoded() {
        // max 0.5 → ×1.2/0.5: 0.5 → 1 (clamped from 1.2), 0.25 → 0.6, 0 → silent.
        let ev = image(&[0.5, 0.25, 0.0], 10);
        assert_eq!(
            ev,
            vec![
                SpikeEvent { step: 0, neuron: 0 },
                SpikeEvent { step: 4, neuron: 1 }
            ]
        );
    }

    #[test]
    fn both_orderings_equal_a_naive_encoder() {
        // The counting pass (steps ≤ values) and the sort (more steps) against the formula
        // applied value by value and sorted by (step, neuron).
        let mut rng = Rng::new(4);
        for steps in [1u32, 7, 30, 100, 5000] {
            let values: Vec<f32> = (0..784)
                .map(|_| {
                    if rng.uniform() < 0.3 {
                        rng.uniform() as f32
                    } else {
                        0.0
                    }
                })
                .collect();
            let mut naive: Vec<(u32, u32)> = Vec::new();
            for (n, &x) in values.iter().enumerate() {
                let step = steps as f64 - (steps as f64 * x as f64).round();
                if step < steps as f64 {
                    naive.push((step as u32, n as u32));
                }
            }
            naive.sort();
            let got: Vec<(u32, u32)> = ttfs(&values, 0.0, 1.0, steps)
                .iter()
                .map(|e| (e.step, e.neuron))
                .collect();
            assert_eq!(got, naive, "T = {steps}");
        }
    }

    #[test]
    fn bright_pixels_spike_first_dark_ones_never() {
        let ev = ttfs(&[0.0, 1.0, 0.5, 0.02], 0.0, 1.0, 30);
        assert_eq!(
            ev,
            vec![
                SpikeEvent { step: 0, neuron: 1 },
                SpikeEvent {
                    step: 15,
                    neuron: 2
                },
                SpikeEvent {
                    step: 29,
                    neuron: 3
                },
            ]
        );
    }
}

/// How a training or evaluation turns images into input spikes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Encoding {
    /// One input per pixel, time-to-first-spike over the whole run ([`image()`]).
    #[default]
    Latency,
    /// Row by row (sequential MNIST): one input per column; row `r` takes steps
    /// `r·k .. (r+1)·k` (`k = steps_per_row`), in which a pixel `x` in (0, 1] spikes once, at
    /// step `r·k + ⌊k·(1 − x)⌋` (bright early; 0 is silent). The run needs at least
    /// rows × k steps; any further steps have no input.
    Rows {
        /// Steps per row (k ≥ 1).
        steps_per_row: u32,
    },
}

impl Encoding {
    /// Input neurons this encoding gives an image of `shape` (channels × h × w).
    pub fn inputs(&self, shape: [usize; 3]) -> usize {
        match self {
            Encoding::Latency => shape.iter().product(),
            Encoding::Rows { .. } => shape[0] * shape[2],
        }
    }

    /// Steps the encoding of an image of `shape` needs (1 for [`Encoding::Latency`], which
    /// spreads over any run).
    pub fn steps(&self, shape: [usize; 3]) -> u64 {
        match self {
            Encoding::Latency => 1,
            Encoding::Rows { steps_per_row } => shape[1] as u64 * *steps_per_row as u64,
        }
    }
}

/// [`images_part`] with any [`Encoding`] (the rotations drawn the same way).
pub fn encode_part(
    data: &Dataset,
    idx: &[usize],
    steps: u32,
    encoding: Encoding,
    augment: Option<&mut Rng>,
    part: std::ops::Range<usize>,
) -> SpikeTrains {
    use rayon::prelude::*;
    let Encoding::Rows { steps_per_row: k } = encoding else {
        return images_part(data, idx, steps, augment, part);
    };
    let angles: Vec<Option<f32>> = match augment {
        Some(rng) => idx
            .iter()
            .map(|_| rotation_angle(data.shape, rng))
            .collect(),
        None => vec![None; idx.len()],
    };
    let [c, h, w] = data.shape;
    let lists: Vec<Vec<SpikeEvent>> = idx[part.clone()]
        .par_iter()
        .zip(&angles[part])
        .map_init(Vec::new, |rotated, (&i, angle)| {
            let img = match angle {
                Some(deg) => {
                    rotate_into(data.image(i), h, w, *deg, rotated);
                    &rotated[..]
                }
                None => data.image(i),
            };
            let mut ev = Vec::new();
            for (ch, plane) in img.chunks(h * w).enumerate().take(c) {
                for (r, row) in plane.chunks(w).enumerate() {
                    for (col, &x) in row.iter().enumerate() {
                        if x > 0.0 {
                            let late = ((k as f32 * (1.0 - x.min(1.0))) as u32).min(k - 1);
                            let step = r as u32 * k + late;
                            if step < steps {
                                ev.push(SpikeEvent {
                                    step,
                                    neuron: (ch * w + col) as u32,
                                });
                            }
                        }
                    }
                }
            }
            ev.sort_unstable();
            ev
        })
        .collect();
    SpikeTrains::from_sorted_samples(encoding.inputs(data.shape), steps, lists)
}

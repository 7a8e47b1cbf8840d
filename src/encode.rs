//! The input encoder: pixel intensities to input spikes, time-to-first-spike as in the
//! reference experiments (one spike per pixel at most; brighter pixels spike earlier), with the
//! reference preprocessing. One encoder for training, evaluation, runs and benchmarks.

use crate::data::augment::random_rotation;
use crate::data::Dataset;
use crate::rng::Rng;
use crate::spikes::{SpikeEvent, SpikeTrains};

/// Linear time-to-first-spike: a value `x` in `[lo, hi]` spikes at step
/// `T − round(T·(x − lo)/(hi − lo))`; a value at `lo` would spike at step `T`, outside the run,
/// so it stays silent.
pub fn ttfs(values: &[f32], lo: f32, hi: f32, steps: u32) -> Vec<SpikeEvent> {
    let span = (hi - lo).max(f32::MIN_POSITIVE);
    let mut ev: Vec<SpikeEvent> = values
        .iter()
        .enumerate()
        .filter_map(|(n, &x)| {
            let x = ((x - lo) / span).clamp(0.0, 1.0);
            let step = steps as i64 - (steps as f32 * x).round() as i64;
            (step < steps as i64).then_some(SpikeEvent {
                step: step.max(0) as u32,
                neuron: n as u32,
            })
        })
        .collect();
    ev.sort_unstable();
    ev
}

/// The reference experiment's input encoding of one image (values in [0, 1]): divided by its
/// maximum, ×1.2, clamped to [0, 1] (so the brightest pixels saturate), then linear
/// time-to-first-spike over [0, 1]. Training, evaluation, `run` and the benchmarks all encode
/// through this one function.
pub fn image(img: &[f32], steps: u32) -> Vec<SpikeEvent> {
    let max = img.iter().cloned().fold(0.0f32, f32::max).max(1e-6);
    let scaled: Vec<f32> = img
        .iter()
        .map(|v| (v / max * 1.2).clamp(0.0, 1.0))
        .collect();
    ttfs(&scaled, 0.0, 1.0, steps)
}

/// Encode images `idx` of `data` with [`image`] for `steps` steps, each after the random
/// rotation of the reference experiment when `augment` gives a generator.
pub fn images(
    data: &Dataset,
    idx: &[usize],
    steps: u32,
    mut augment: Option<&mut Rng>,
) -> SpikeTrains {
    let lists = idx
        .iter()
        .map(|&i| match augment.as_deref_mut() {
            Some(rng) => image(&random_rotation(data.image(i), data.shape, rng), steps),
            None => image(data.image(i), steps),
        })
        .collect();
    SpikeTrains::from_samples(data.image_size(), steps, lists)
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

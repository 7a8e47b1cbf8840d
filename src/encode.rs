//! Spike encoders: turn pixel intensities into input spikes. Time-to-first-spike as in the
//! reference experiments (one spike per pixel at most; brighter pixels spike earlier).

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

/// Encode a batch of images (each `pixels` values, row-major in `data`) with [`ttfs`] over
/// each image's own minimum and maximum.
pub fn ttfs_batch(data: &[f32], pixels: usize, steps: u32) -> SpikeTrains {
    let samples = data
        .chunks(pixels)
        .map(|img| {
            let lo = img.iter().cloned().fold(f32::INFINITY, f32::min);
            let hi = img.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            ttfs(img, lo, hi, steps)
        })
        .collect();
    SpikeTrains::from_samples(pixels, steps, samples)
}

#[cfg(test)]
mod tests {
    use super::*;

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

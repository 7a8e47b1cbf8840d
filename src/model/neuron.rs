//! The neuron model: current-based leaky integrate-and-fire with exponential synaptic currents,
//! and its non-spiking variant (leaky integrator) used as readout. Parameters, per-step
//! coefficients and state are separate; [`lif_step`] is the one pure step function that the CPU
//! backend calls (specialised, bit for bit) and `lif_step` in `shaders/neuron.wgsl` computes with
//! the same IEEE operations.
//!
//! Units: time in µs of hardware time, potentials in model units (the published MNIST set-up:
//! leak = reset = 0, threshold = 1, which the chip maps to 80 and 120 CADC LSB).

use crate::error::{check_range, Result};
use serde::{Deserialize, Serialize};

/// How one step of length `dt` is integrated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Integration {
    /// Forward Euler, exactly as the chip's training software computes it:
    /// `i ← i·(1 − dt/τ_syn) + in`, `v ← v + dt/τ_mem·(v_leak − v + i)`.
    #[default]
    Euler,
    /// Exponential integration: the same update with decay factors `exp(−dt/τ)`
    /// (`i ← i·e^{−dt/τ_syn} + in`, `v ← v + (1 − e^{−dt/τ_mem})·(v_leak − v + i)`), exact for
    /// the membrane when the current is held over the step.
    Exponential,
}

/// In which order one step updates the synaptic current and the membrane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Update {
    /// This step's input joins the current first and the membrane integrates the new current
    /// (`i ← a·i + in`, then `v ← v + k·(v_leak − v + i)`): an input reaches the membrane in
    /// the step it arrives.
    #[default]
    InputFirst,
    /// As the chip's training software (hxtorch): the membrane integrates the previous step's
    /// current, then the current decays and takes this step's input (`v ← v + k·(v_leak − v +
    /// i)`, then `i ← a·i + in`): an input reaches the membrane one step later.
    Hxtorch,
}

/// Parameters of one population's neurons.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NeuronParams {
    /// Membrane time constant τ_mem in µs.
    pub tau_mem: f32,
    /// Synaptic time constant τ_syn in µs.
    pub tau_syn: f32,
    /// Leak (resting) potential.
    pub v_leak: f32,
    /// Potential after a spike.
    pub v_reset: f32,
    /// Firing threshold ϑ.
    pub v_th: f32,
    /// Refractory period in µs (held at reset; 0 = none).
    pub refractory: f32,
    /// Integration scheme.
    pub integration: Integration,
    /// Order of the current and membrane updates within a step.
    pub update: Update,
    /// Whether the membrane leaks towards `v_leak` (false: a perfect integrator, NIR's `IF`:
    /// `v ← v + k_mem·i`).
    #[serde(skip_serializing_if = "is_true")]
    pub leak: bool,
    /// A constant current added to the synaptic current every step (an `Affine` or
    /// convolution bias; on the chip a per-neuron offset), in the current's units.
    #[serde(skip_serializing_if = "is_zero")]
    pub bias: f32,
    /// Membrane potential at the start of a run; none: at rest (`v_leak`). NIR graphs start at
    /// 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub v_init: Option<f32>,
    /// Emulated mode: hardware weight units per model unit of the weights into these neurons
    /// (their synaptic gain calibration); none: the analog configuration's `weight_scale`. The
    /// NIR import sets it so that the largest imported weight uses the chip's full range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_scale: Option<f32>,
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_zero(x: &f32) -> bool {
    *x == 0.0
}

impl Default for NeuronParams {
    /// The published MNIST experiment: τ_syn = 5.7 µs, τ_mem = 6 µs, leak = reset = 0, ϑ = 1,
    /// no refractory period.
    fn default() -> Self {
        NeuronParams {
            tau_mem: 6.0,
            tau_syn: 5.7,
            v_leak: 0.0,
            v_reset: 0.0,
            v_th: 1.0,
            refractory: 0.0,
            integration: Integration::Euler,
            update: Update::InputFirst,
            leak: true,
            bias: 0.0,
            v_init: None,
            weight_scale: None,
        }
    }
}

impl NeuronParams {
    /// Check ranges: finite values, positive time constants, time constants of at least one
    /// step under forward Euler (`dt` is the substrate's `dt_us`), and for spiking neurons a
    /// reset below the threshold (a reset at or above it would fire on every step).
    pub fn validate(&self, owner: &str, dt: f32, spiking: bool) -> Result<()> {
        check_range(owner, "tau_mem", self.tau_mem as f64, 1e-6, 1e9)?;
        check_range(owner, "tau_syn", self.tau_syn as f64, 1e-6, 1e9)?;
        check_range(owner, "v_leak", self.v_leak as f64, -1e9, 1e9)?;
        check_range(owner, "v_reset", self.v_reset as f64, -1e9, 1e9)?;
        check_range(owner, "v_th", self.v_th as f64, -1e9, 1e9)?;
        check_range(owner, "refractory", self.refractory as f64, 0.0, 1e9)?;
        check_range(owner, "bias", self.bias as f64, -1e9, 1e9)?;
        if let Some(v) = self.v_init {
            check_range(owner, "v_init", v as f64, -1e9, 1e9)?;
        }
        if let Some(s) = self.weight_scale {
            check_range(owner, "weight_scale", s as f64, 1e-9, 1e12)?;
        }
        if self.integration == Integration::Euler {
            // Forward Euler is unstable (oscillates) once dt exceeds a time constant.
            for (name, tau) in [("tau_mem", self.tau_mem), ("tau_syn", self.tau_syn)] {
                if tau < dt {
                    return Err(crate::error::Error::Parameter {
                        owner: owner.to_string(),
                        name: name.into(),
                        value: tau as f64,
                        reason: format!(
                            "forward Euler needs time constants of at least the substrate's \
                             time step dt_us = {dt} µs; lower dt_us or use \
                             integration = \"exponential\""
                        ),
                    });
                }
            }
        }
        if spiking && self.v_reset >= self.v_th {
            return Err(crate::error::Error::Parameter {
                owner: owner.to_string(),
                name: "v_reset".into(),
                value: self.v_reset as f64,
                reason: format!(
                    "must lie below the threshold v_th = {} (the neuron would fire on every step)",
                    self.v_th
                ),
            });
        }
        Ok(())
    }

    /// Per-step coefficients for step `dt` (µs).
    pub fn coeffs(&self, dt: f32, spiking: bool) -> NeuronCoeffs {
        let (a_syn, k_mem) = match self.integration {
            Integration::Euler => (1.0 - dt / self.tau_syn, dt / self.tau_mem),
            Integration::Exponential => (
                (-(dt as f64) / self.tau_syn as f64).exp() as f32,
                1.0 - (-(dt as f64) / self.tau_mem as f64).exp() as f32,
            ),
        };
        NeuronCoeffs {
            a_syn,
            k_mem,
            v_leak: self.v_leak,
            v_reset: self.v_reset,
            v_th: self.v_th,
            refractory_steps: (self.refractory / dt).round() as u32,
            spiking: spiking as u32,
            weight_gain: 1.0,
            input_scale: 1.0,
            noise_sd: 0.0,
            noise_key: 0,
            membrane_first: u32::from(self.update == Update::Hxtorch),
            bias: self.bias,
            v_init: self.v_init.unwrap_or(self.v_leak),
            leaky: u32::from(self.leak),
        }
    }
}

/// What one step needs, per neuron; laid out as the GPU's `Coeffs` struct.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct NeuronCoeffs {
    /// Synaptic decay per step.
    pub a_syn: f32,
    /// Membrane integration factor per step.
    pub k_mem: f32,
    /// Leak potential.
    pub v_leak: f32,
    /// Reset potential.
    pub v_reset: f32,
    /// Threshold.
    pub v_th: f32,
    /// Steps held at reset after a spike.
    pub refractory_steps: u32,
    /// 1 for spiking neurons, 0 for a non-spiking readout.
    pub spiking: u32,
    /// Multiplies every synaptic input (1 in ideal mode; analog gain variation otherwise).
    pub weight_gain: f32,
    /// Value of one unit of the fixed-point synaptic input (a power of two, see
    /// [`lif_step`]).
    pub input_scale: f32,
    /// Standard deviation of the temporal membrane noise per step (0 = none).
    pub noise_sd: f32,
    /// Identifies the neuron in the noise hash (same however the network is partitioned).
    pub noise_key: u32,
    /// 1: the membrane integrates the previous step's current ([`Update::Hxtorch`]); 0: this
    /// step's ([`Update::InputFirst`]).
    pub membrane_first: u32,
    /// Constant current added every step ([`NeuronParams::bias`]).
    pub bias: f32,
    /// Membrane at the start of a run.
    pub v_init: f32,
    /// 1: the membrane leaks towards `v_leak`; 0: it only integrates (NIR's `IF`).
    pub leaky: u32,
}

/// State of one neuron between steps.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LifState {
    /// Synaptic current.
    pub i: f32,
    /// Membrane potential.
    pub v: f32,
    /// Remaining refractory steps.
    pub refractory: u32,
}

impl LifState {
    /// State of a neuron with these coefficients at the start of a run (no current, membrane
    /// at `v_init`, which is `v_leak` unless set).
    pub fn rest(c: &NeuronCoeffs) -> Self {
        LifState {
            i: 0.0,
            v: c.v_init,
            refractory: 0,
        }
    }
}

/// Advance one neuron by one step. `input` is the sum of the weights of the spikes that arrive
/// this step in fixed point (units of `c.input_scale`): integer sums do not depend on the order
/// in which spikes are added, so the result is the same however the network is partitioned and
/// whichever backend adds them. The resolution is chosen per population so that the largest
/// possible input is exact in `f32` (see `PartitionProgram::compile`).
///
/// Returns the new state, whether the neuron spiked, and its membrane before reset (what
/// training needs for the surrogate). Written without branches so that loops over neurons
/// vectorise; `lif_step` in `shaders/neuron.wgsl` makes the same operations.
///
/// `noise` is this step's temporal membrane noise (see `membrane_noise`; 0 in ideal mode).
#[inline(always)]
pub fn lif_step(c: &NeuronCoeffs, s: LifState, input: i32, noise: f32) -> (LifState, bool, f32) {
    let i = c.a_syn * s.i + (c.weight_gain * (input as f32 * c.input_scale) + c.bias);
    let refractory = s.refractory > 0;
    // The current the membrane integrates: this step's, or the previous (hxtorch's order).
    let drive = if c.membrane_first != 0 { s.i } else { i };
    let leak = if c.leaky != 0 { c.v_leak - s.v } else { 0.0 };
    let integrated = s.v + c.k_mem * (leak + drive) + noise;
    let v = if refractory { c.v_reset } else { integrated };
    let spike = !refractory && c.spiking != 0 && v >= c.v_th;
    let next = LifState {
        i,
        v: if spike { c.v_reset } else { v },
        refractory: if spike {
            c.refractory_steps
        } else {
            s.refractory.saturating_sub(1)
        },
    };
    (next, spike, v)
}

/// PCG hash (one round): a well-mixed `u32` from a `u32`, identical in `shaders/*.wgsl`.
#[inline(always)]
pub fn pcg_hash(v: u32) -> u32 {
    let state = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// The part of the noise hash shared by every neuron at `step` of sample `sample` of the run
/// with seed `seed` (computed once per step, not per neuron).
#[inline(always)]
pub fn noise_base(seed: u32, sample: u32, step: u32) -> u32 {
    pcg_hash(seed ^ pcg_hash(sample ^ pcg_hash(step)))
}

/// Temporal membrane noise of neuron `c` given the step's [`noise_base`]: `c.noise_sd` times an
/// approximately standard normal number — the sum of four uniforms taken from the bytes of one
/// hash, scaled to unit variance — computed with integer hashes so that the CPU and the GPU
/// kernels produce bit-identical values.
#[inline(always)]
pub fn membrane_noise(c: &NeuronCoeffs, base: u32) -> f32 {
    if c.noise_sd == 0.0 {
        return 0.0;
    }
    let h = pcg_hash(c.noise_key ^ base);
    let bytes = (h & 255) + ((h >> 8) & 255) + ((h >> 16) & 255) + (h >> 24);
    // Each byte b stands for the uniform (b + 0.5) / 256; their sum has mean 2, variance 1/3.
    let sum = (bytes as f32 + 2.0) * (1.0 / 256.0);
    (sum - 2.0) * 1.732_050_8 * c.noise_sd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn euler_coefficients_are_the_published_ones() {
        let c = NeuronParams::default().coeffs(1.0, true);
        assert!((c.a_syn - (1.0 - 1.0 / 5.7)).abs() < 1e-7);
        assert!((c.k_mem - 1.0 / 6.0).abs() < 1e-7);
    }

    #[test]
    fn hand_computed_steps() {
        // τ_syn = 2, τ_mem = 4, dt = 1: a = 0.5, k = 0.25, threshold 1.
        let p = NeuronParams {
            tau_syn: 2.0,
            tau_mem: 4.0,
            refractory: 1.0,
            ..Default::default()
        };
        let c = p.coeffs(1.0, true);
        let mut s = LifState::rest(&c);
        let mut step = |input| {
            let (next, spike, v) = lif_step(&c, s, input, 0.0);
            s = next;
            (spike, v, s)
        };
        // step 0: i = 2, v = 0.5
        assert_eq!(step(2).1, 0.5);
        // step 1: i = 1, v = 0.5 + 0.25*(0.5) = 0.625
        assert_eq!(step(0).1, 0.625);
        // step 2: i = 0.5 + 3 = 3.5, v = 0.625 + 0.25*(2.875) = 1.34375 → spike, reset to 0
        let (spike, v, st) = step(3);
        assert_eq!((spike, v, st.v, st.refractory), (true, 1.34375, 0.0, 1));
        // step 3: refractory, held at reset while the current decays to 1.75
        let (spike, v, st) = step(0);
        assert_eq!((spike, v, st.i, st.refractory), (false, 0.0, 1.75, 0));
        // step 4: i = 0.875, v = 0.25*0.875 = 0.21875
        assert!(!step(0).0);
        assert_eq!(s.v, 0.21875);
    }

    #[test]
    fn membrane_noise_has_the_requested_spread() {
        let mut c = NeuronParams::default().coeffs(1.0, true);
        assert_eq!(membrane_noise(&c, noise_base(1, 2, 3)), 0.0);
        c.noise_sd = 0.5;
        let xs: Vec<f64> = (0..50_000)
            .map(|t| membrane_noise(&c, noise_base(9, t % 100, t / 100)) as f64)
            .collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64).sqrt();
        assert!(mean.abs() < 0.01 && (sd - 0.5).abs() < 0.01, "{mean} {sd}");
        let n = |seed, key| {
            let mut c = c;
            c.noise_key = key;
            membrane_noise(&c, noise_base(seed, 1, 1))
        };
        assert_eq!(n(9, 0), n(9, 0));
        assert_ne!(n(9, 0), n(10, 0));
        assert_ne!(n(9, 0), n(9, 1));
    }

    #[test]
    fn invalid_parameters_are_named() {
        let p = NeuronParams {
            tau_mem: f32::NAN,
            ..Default::default()
        };
        let e = p.validate("hidden", 1.0, true).unwrap_err().to_string();
        assert!(
            e.contains("tau_mem") && e.contains("hidden") && e.contains("finite"),
            "{e}"
        );
        let p = NeuronParams {
            tau_syn: -1.0,
            ..Default::default()
        };
        assert!(p
            .validate("h", 1.0, true)
            .unwrap_err()
            .to_string()
            .contains("tau_syn"));
        let p = NeuronParams {
            v_reset: 1.5,
            ..Default::default()
        };
        let e = p.validate("h", 1.0, true).unwrap_err().to_string();
        assert!(
            e.contains("v_reset") && e.contains("1.5") && e.contains("v_th = 1"),
            "{e}"
        );
        assert!(
            p.validate("readout", 1.0, false).is_ok(),
            "a readout does not fire"
        );
        let e = NeuronParams::default()
            .validate("h", 100.0, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tau_mem") && e.contains("dt_us = 100"), "{e}");
    }
}

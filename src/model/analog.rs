//! What makes the emulation analog: per-circuit fixed-pattern variation of time constants,
//! threshold, leak and synaptic gain (drawn once per emulated chip from a seed; a neuron gets
//! the mean variation of the circuits its placement gives it), temporal membrane noise, weight
//! quantisation to the chip's signed 6-bit range and quantisation of the membrane readout
//! (CADC). Each effect can be switched off; partitions can be emulated or ideal individually.
//! This module only describes the effects and applies them to compiled partitions.

use crate::error::{check_range, Result};
use crate::model::neuron::NeuronParams;
use crate::model::substrate::Substrate;
use crate::rng::Rng;
use crate::simd::{round_f32, round_i32};
use serde::{Deserialize, Serialize};

/// Magnitudes of the analog effects (0 switches an effect off).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalogConfig {
    /// Seed of the emulated chip's fixed-pattern variation.
    pub chip_seed: u64,
    /// Relative standard deviation of τ_mem between circuits.
    pub tau_mem_variation: f32,
    /// Relative standard deviation of τ_syn between circuits.
    pub tau_syn_variation: f32,
    /// Standard deviation of the threshold, relative to (threshold − leak).
    pub threshold_variation: f32,
    /// Standard deviation of the leak potential, relative to (threshold − leak).
    pub leak_variation: f32,
    /// Relative standard deviation of the synaptic gain.
    pub weight_gain_variation: f32,
    /// Standard deviation of the temporal membrane noise per step, in model units.
    pub membrane_noise: f32,
    /// Quantise weights to the chip's integer range (`w_hw = clamp(round(scale·w), ±weight_max)`).
    pub quantise_weights: bool,
    /// Hardware weight units per model unit.
    pub weight_scale: f32,
    /// Quantise recorded membranes like the CADC (`readout_bits` of the substrate).
    pub quantise_readout: bool,
    /// CADC code of the model's 0 (the leak potential: 80 LSB).
    pub readout_offset: f32,
    /// CADC LSB per model unit (threshold 1 ↔ 120 LSB: 40).
    pub readout_gain: f32,
}

impl Default for AnalogConfig {
    /// A few percent of fixed-pattern variation after calibration, about one CADC LSB of
    /// temporal noise, 6-bit weights, 8-bit readout (REFERENCE.md).
    fn default() -> Self {
        AnalogConfig {
            chip_seed: 1,
            tau_mem_variation: 0.03,
            tau_syn_variation: 0.03,
            threshold_variation: 0.03,
            leak_variation: 0.02,
            weight_gain_variation: 0.03,
            membrane_noise: 0.025,
            quantise_weights: true,
            weight_scale: 32.0,
            quantise_readout: true,
            readout_offset: 80.0,
            readout_gain: 40.0,
        }
    }
}

impl AnalogConfig {
    /// Check every magnitude is finite and in range.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("tau_mem_variation", self.tau_mem_variation),
            ("tau_syn_variation", self.tau_syn_variation),
            ("threshold_variation", self.threshold_variation),
            ("leak_variation", self.leak_variation),
            ("weight_gain_variation", self.weight_gain_variation),
            ("membrane_noise", self.membrane_noise),
        ] {
            check_range("analog", name, v as f64, 0.0, 0.5)?;
        }
        check_range(
            "analog",
            "weight_scale",
            self.weight_scale as f64,
            1e-6,
            1e9,
        )?;
        check_range(
            "analog",
            "readout_gain",
            self.readout_gain as f64,
            1e-6,
            1e9,
        )?;
        check_range(
            "analog",
            "readout_offset",
            self.readout_offset as f64,
            -1e9,
            1e9,
        )
    }

    /// The weight the chip realises for model weight `w` (clamped to ±`weight_max`, rounded to
    /// a hardware unit), in model units.
    pub fn quantise_weight(&self, w: f32, weight_max: i32) -> f32 {
        self.weight_map(weight_max).apply(w)
    }

    /// How emulated partitions realise weights on a chip whose largest weight is `weight_max`.
    pub fn weight_map(&self, weight_max: i32) -> WeightMap {
        if self.quantise_weights {
            WeightMap::Quantised {
                scale: self.weight_scale,
                max: weight_max,
            }
        } else {
            WeightMap::Ideal
        }
    }

    /// The CADC readout of a chip with `bits` readout bits, if readout quantisation is on.
    pub fn cadc(&self, bits: u32) -> Option<Cadc> {
        self.quantise_readout.then(|| Cadc {
            offset: self.readout_offset,
            gain: self.readout_gain,
            top: ((1u32 << bits) - 1) as f32,
        })
    }

    /// The membrane the CADC reports for model potential `v`.
    pub fn quantise_readout(&self, v: f32, bits: u32) -> f32 {
        self.cadc(bits).map_or(v, |c| c.quantise(v))
    }
}

/// One emulated chip: the fixed-pattern deviations of each of its circuits.
#[derive(Clone, Debug, PartialEq)]
pub struct Chip {
    tau_mem: Vec<f32>,
    tau_syn: Vec<f32>,
    threshold: Vec<f32>,
    leak: Vec<f32>,
    gain: Vec<f32>,
}

impl AnalogConfig {
    /// The configuration of chip `k` of a multi-chip system: chip 0 is this one, every other
    /// chip has its own variation, from a seed derived from the chip seed and `k`.
    pub fn for_system_chip(&self, k: usize) -> AnalogConfig {
        let mut c = self.clone();
        if k > 0 {
            c.chip_seed =
                crate::rng::Rng::derive(self.chip_seed, 0x5157_0000 + k as u64).next_u64();
        }
        c
    }
}

impl Chip {
    /// Draw the deviations of every circuit of `substrate` from `config.chip_seed`.
    pub fn draw(substrate: &Substrate, config: &AnalogConfig) -> Result<Self> {
        substrate.validate()?;
        let n = substrate.circuits();
        crate::memory::check(
            || format!("the fixed-pattern variation of {n} circuits"),
            crate::memory::product(&[n as u64, 5 * 4]),
        )?;
        let draw = |stream: u64, sd: f32| -> Vec<f32> {
            let mut r = Rng::derive(config.chip_seed, stream);
            (0..n).map(|_| sd * r.normal() as f32).collect()
        };
        Ok(Chip {
            tau_mem: draw(1, config.tau_mem_variation),
            tau_syn: draw(2, config.tau_syn_variation),
            threshold: draw(3, config.threshold_variation),
            leak: draw(4, config.leak_variation),
            gain: draw(5, config.weight_gain_variation),
        })
    }

    /// The parameters a neuron placed on `circuits` realises (joined circuits share one
    /// membrane, so their deviations average), and its synaptic gain.
    pub fn realise(&self, p: &NeuronParams, circuits: &[usize]) -> (NeuronParams, f32) {
        let mean = |v: &[f32]| circuits.iter().map(|&c| v[c]).sum::<f32>() / circuits.len() as f32;
        let span = (p.v_th - p.v_leak).abs().max(1e-6);
        let mut q = p.clone();
        // The chip's membrane always leaks: a perfect integrator (NIR's IF) becomes the longest
        // calibratable membrane time constant, its input scaled up by the same factor so that
        // one input moves the membrane as far as before; the remaining leak is the
        // approximation (README, NIR mapping).
        let mut boost = 1.0;
        if !p.leak {
            boost = LONGEST_TAU_MEM_US / p.tau_mem;
            q.tau_mem = LONGEST_TAU_MEM_US;
            q.leak = true;
            q.bias = p.bias * boost;
        }
        q.tau_mem *= (1.0 + mean(&self.tau_mem)).max(0.1);
        q.tau_syn = p.tau_syn * (1.0 + mean(&self.tau_syn)).max(0.1);
        q.v_th = p.v_th + span * mean(&self.threshold);
        q.v_leak = p.v_leak + span * mean(&self.leak);
        (q, (1.0 + mean(&self.gain)).max(0.0) * boost)
    }
}

/// The longest membrane time constant the chip calibrates (µs): where emulated integrators
/// without leak go.
pub const LONGEST_TAU_MEM_US: f32 = 2000.0;

/// Which partitions run emulated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every partition ideal: plain simulation.
    #[default]
    Ideal,
    /// Every partition emulated.
    Emulated,
    /// Only the partitions of the first hidden layer emulated, the rest ideal.
    Mixed,
}

/// How a population's model weights become the weights the substrate realises.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum WeightMap {
    /// As they are (ideal simulation).
    #[default]
    Ideal,
    /// The chip's integer range: `clamp(round(scale·w), −max, max) / scale`.
    Quantised {
        /// Hardware units per model unit.
        scale: f32,
        /// Largest hardware weight.
        max: i32,
    },
}

impl WeightMap {
    /// The realised weight of model weight `w`.
    #[inline(always)]
    pub fn apply(self, w: f32) -> f32 {
        match self {
            WeightMap::Ideal => w,
            WeightMap::Quantised { scale, max } => {
                let m = max as f32;
                round_f32(w * scale).clamp(-m, m) / scale
            }
        }
    }
}

/// Quantisation of recorded membranes like the chip's parallel readout (CADC): the code
/// `clamp(round(offset + v·gain), 0, top)` mapped back to model units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cadc {
    /// Code of the model's 0.
    pub offset: f32,
    /// Codes per model unit.
    pub gain: f32,
    /// Largest code (`2^bits − 1`).
    pub top: f32,
}

impl Cadc {
    /// The membrane the readout reports for model potential `v`. Monotone in `v`, so the
    /// maximum of quantised values is the quantised maximum.
    #[inline(always)]
    pub fn quantise(&self, v: f32) -> f32 {
        let code = round_f32(self.offset + v * self.gain).clamp(0.0, self.top);
        (code - self.offset) / self.gain
    }

    /// Whether codes can stand for the membranes: every code fits a byte (at most 8 bits), as
    /// [`Cadc::code`] needs, and the model's 0 is not code +0.0 (where [`Cadc::quantise`]
    /// keeps the sign of a potential that rounds to −0, which a code cannot hold).
    pub fn has_codes(&self) -> bool {
        self.top <= 255.0 && self.offset.to_bits() != 0
    }

    /// The code the readout reports for `v` (a CADC with [`Cadc::has_codes`]): the one
    /// [`Cadc::quantise`] maps back, so `value(code(v)) == quantise(v)` bit for bit for every
    /// `v` but NaN (whose quantised value is NaN; its code is 0).
    #[inline(always)]
    pub fn code(&self, v: f32) -> u8 {
        // Integer rounding and clamping (they vectorise; a float's `as u8` does not): the
        // code of `quantise` for every `v` but NaN, ties and beyond ±2^23 included.
        round_i32(self.offset + v * self.gain).clamp(0, self.top as i32) as u8
    }

    /// The membrane, in model units, that code `c` stands for.
    #[inline(always)]
    pub fn value(&self, c: u8) -> f32 {
        (f32::from(c) - self.offset) / self.gain
    }

    /// The membranes that `codes` stand for, into `values` (as many).
    pub fn decode(&self, codes: &[u8], values: &mut [f32]) {
        decode(*self, codes, values)
    }
}

crate::simd::widest! {
    /// [`Cadc::decode`], vectorised for the widest unit the processor has.
    fn decode(q: Cadc, codes: &[u8], values: &mut [f32]) {
        debug_assert_eq!(codes.len(), values.len(), "one value per code");
        for (v, &c) in values.iter_mut().zip(codes) {
            *v = q.value(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_quantise_to_the_signed_six_bit_range() {
        let c = AnalogConfig::default();
        assert_eq!(c.quantise_weight(0.5, 63), 16.0 / 32.0);
        assert_eq!(c.quantise_weight(0.51, 63), 16.0 / 32.0);
        assert_eq!(c.quantise_weight(0.52, 63), 17.0 / 32.0);
        assert_eq!(c.quantise_weight(5.0, 63), 63.0 / 32.0);
        assert_eq!(c.quantise_weight(-5.0, 63), -63.0 / 32.0);
        // CADC: 0 ↔ 80 LSB, 1 ↔ 120 LSB, 8 bit.
        assert_eq!(c.quantise_readout(1.0, 8), 1.0);
        assert_eq!(c.quantise_readout(0.01, 8), 0.0);
        assert_eq!(c.quantise_readout(0.02, 8), 0.025);
        assert_eq!(c.quantise_readout(-3.0, 8), -2.0);
        assert_eq!(c.quantise_readout(10.0, 8), 175.0 / 40.0);
    }

    #[test]
    fn codes_stand_for_the_quantised_membranes_bit_for_bit() {
        let c = AnalogConfig::default();
        let q = c.cadc(8).unwrap();
        assert!(q.has_codes() && !c.cadc(9).unwrap().has_codes());
        // With the model's 0 at code 0, quantise keeps −0.0 just below 0: no codes then.
        let zero = Cadc { offset: 0.0, ..q };
        assert_eq!(zero.quantise(-0.001).to_bits(), (-0.0f32).to_bits());
        assert_eq!(zero.value(zero.code(-0.001)).to_bits(), 0.0f32.to_bits());
        assert!(!zero.has_codes());
        // From below the range to above it, through every code and between them.
        let mut seen = [false; 256];
        let far = [
            f32::NAN,
            1e9,
            -1e9,
            f32::INFINITY,
            f32::NEG_INFINITY,
            9e6,
            -9e6,
        ];
        for v in (-4000..=12000).map(|i| i as f32 * 0.000_731).chain(far) {
            if v.is_nan() {
                // NaN has no code; it reads as code 0.
                assert_eq!(q.code(v), 0);
                continue;
            }
            let code = q.code(v);
            seen[code as usize] = true;
            assert_eq!(q.value(code).to_bits(), q.quantise(v).to_bits(), "{v}");
            // By hand: 0 is code 80, one model unit 40 codes.
            let expect = (80.0 + 40.0 * v).round().clamp(0.0, 255.0) as u8;
            assert_eq!(code, expect, "{v}");
        }
        assert!(seen.iter().all(|&s| s), "every code reached");
    }

    #[test]
    fn chip_variation_is_seeded_and_of_the_stated_size() {
        let s = Substrate::bss2();
        let c = AnalogConfig::default();
        let a = Chip::draw(&s, &c).unwrap();
        assert_eq!(a, Chip::draw(&s, &c).unwrap());
        let other = Chip::draw(
            &s,
            &AnalogConfig {
                chip_seed: 2,
                ..c.clone()
            },
        )
        .unwrap();
        assert_ne!(a, other);
        let sd = (a.tau_mem.iter().map(|x| x * x).sum::<f32>() / 512.0).sqrt();
        assert!((sd - 0.03).abs() < 0.005, "{sd}");
        // Joining circuits averages their deviations.
        let p = NeuronParams::default();
        let (one, _) = a.realise(&p, &[0]);
        let (two, _) = a.realise(&p, &[0, 1]);
        let expect = p.tau_mem * (1.0 + (a.tau_mem[0] + a.tau_mem[1]) / 2.0);
        assert!((two.tau_mem - expect).abs() < 1e-6);
        assert!((one.tau_mem - p.tau_mem * (1.0 + a.tau_mem[0])).abs() < 1e-6);
    }
}

//! The chip being emulated: how many neuron circuits it has, how many synapse rows feed each
//! circuit, how circuits join into logical neurons for more fan-in, and the resolutions of its
//! weights and readout. This module only describes; it never places or runs anything.
//!
//! Defaults are BrainScaleS-2 ("HICANN-X"): 2 hemispheres × 256 circuits, 256 synapse rows per
//! hemisphere, 6-bit weights, signed inputs on two rows, 8-bit CADC readout.

use crate::error::{Error, Result};
use crate::files::Format;
use crate::model::system::System;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One emulated chip. Every field can be changed to emulate a planned or scaled system.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Substrate {
    /// Human-readable name.
    pub name: String,
    /// Rows of neuron circuits (BSS-2: 2, one per synapse array).
    pub hemispheres: usize,
    /// Neuron circuits per hemisphere (BSS-2: 256).
    pub circuits_per_hemisphere: usize,
    /// Synapse rows of each hemisphere's array; each circuit column has one synapse per row
    /// (BSS-2: 256).
    pub synapse_rows_per_hemisphere: usize,
    /// Distinct sources one synapse row can carry, chosen by the synapse's address (6 bit: 64).
    pub sources_per_row: usize,
    /// Rows one signed input uses (BSS-2: 2, one excitatory and one inhibitory row).
    pub rows_per_signed_input: usize,
    /// Most circuits that may be joined into one logical neuron.
    pub max_circuits_per_neuron: usize,
    /// Round circuits per logical neuron up to a power of two, as the chip's software does for
    /// convenience (784 inputs: 7 → 8 circuits, as in the published MNIST model).
    pub power_of_two_neurons: bool,
    /// Largest weight magnitude (6 bit: 63).
    pub weight_max: i32,
    /// Bits of the parallel membrane readout (CADC: 8).
    pub readout_bits: u32,
    /// Time step of the emulation in µs of hardware time.
    pub dt_us: f32,
    /// Most input channels one run may read (0 = as many as the synapse rows address). Under
    /// time-to-first-spike input each channel carries at most one spike, so this bounds the
    /// input spikes of a run: a layer that needs more is run in several parts.
    pub input_channels_per_run: usize,
    /// Several of these chips joined by links into a multi-chip system (the `[system]`
    /// section); absent: one chip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<System>,
}

impl Default for Substrate {
    fn default() -> Self {
        Self::bss2()
    }
}

impl Substrate {
    /// The BrainScaleS-2 chip (HICANN-X) as published.
    pub fn bss2() -> Self {
        Substrate {
            name: "BrainScaleS-2".into(),
            hemispheres: 2,
            circuits_per_hemisphere: 256,
            synapse_rows_per_hemisphere: 256,
            sources_per_row: 64,
            rows_per_signed_input: 2,
            max_circuits_per_neuron: 512,
            power_of_two_neurons: true,
            weight_max: 63,
            readout_bits: 8,
            dt_us: 1.0,
            input_channels_per_run: 0,
            system: None,
        }
    }

    /// All neuron circuits of the chip.
    pub fn circuits(&self) -> usize {
        self.hemispheres * self.circuits_per_hemisphere
    }

    /// Synapse rows one circuit receives (its column of one array).
    pub fn rows_per_circuit(&self) -> usize {
        self.synapse_rows_per_hemisphere
    }

    /// Signed inputs one circuit can receive (BSS-2: 128).
    pub fn signed_inputs_per_circuit(&self) -> usize {
        self.rows_per_circuit() / self.rows_per_signed_input
    }

    /// Distinct sources the chip's synapse rows can address in one run, counting a signed
    /// source once per row pair.
    pub fn addressable_sources(&self) -> usize {
        self.hemispheres * self.synapse_rows_per_hemisphere * self.sources_per_row
            / self.rows_per_signed_input
    }

    /// Input channels one run may read: the addressable sources, or fewer if
    /// `input_channels_per_run` says so.
    pub fn channels_per_run(&self) -> usize {
        match self.input_channels_per_run {
            0 => self.addressable_sources(),
            n => n.min(self.addressable_sources()),
        }
    }

    /// Circuits a logical neuron needs for `rows` synapse rows (signed inputs count twice),
    /// after the power-of-two rounding if enabled. `None` if it exceeds the largest neuron.
    pub fn circuits_for_rows(&self, rows: usize) -> Option<usize> {
        let mut c = rows.div_ceil(self.rows_per_circuit()).max(1);
        if self.power_of_two_neurons {
            c = c.checked_next_power_of_two()?;
        }
        (c <= self.max_circuits_per_neuron.min(self.circuits())).then_some(c)
    }

    /// Check that every count is positive, within what the emulator can represent, and
    /// consistent (products computed with checked arithmetic: an absurd size is an error
    /// naming the fields, never a wrapped number).
    pub fn validate(&self) -> Result<()> {
        let err = |field: &str, problem: String| Error::Substrate {
            field: field.into(),
            problem,
        };
        const MAX: usize = 1 << 24;
        let counts = [
            ("hemispheres", self.hemispheres),
            ("circuits_per_hemisphere", self.circuits_per_hemisphere),
            (
                "synapse_rows_per_hemisphere",
                self.synapse_rows_per_hemisphere,
            ),
            ("sources_per_row", self.sources_per_row),
            ("rows_per_signed_input", self.rows_per_signed_input),
            ("max_circuits_per_neuron", self.max_circuits_per_neuron),
        ];
        for (name, v) in counts {
            if v == 0 || v > MAX {
                return Err(err(name, format!("{v}; must lie in 1..={MAX}")));
            }
        }
        let circuits = self
            .hemispheres
            .checked_mul(self.circuits_per_hemisphere)
            .filter(|&c| c <= MAX);
        if circuits.is_none() {
            return Err(err(
                "hemispheres x circuits_per_hemisphere",
                format!(
                    "{} x {} circuits; a chip has at most {MAX}",
                    self.hemispheres, self.circuits_per_hemisphere
                ),
            ));
        }
        let sources = self
            .hemispheres
            .checked_mul(self.synapse_rows_per_hemisphere)
            .and_then(|x| x.checked_mul(self.sources_per_row))
            .filter(|&x| x <= u32::MAX as usize);
        if sources.is_none() {
            return Err(err(
                "hemispheres x synapse_rows_per_hemisphere x sources_per_row",
                format!(
                    "{} x {} x {} addressable sources exceed 2^32",
                    self.hemispheres, self.synapse_rows_per_hemisphere, self.sources_per_row
                ),
            ));
        }
        if self.rows_per_signed_input > self.synapse_rows_per_hemisphere {
            return Err(err(
                "rows_per_signed_input",
                format!(
                    "{} exceeds synapse_rows_per_hemisphere ({})",
                    self.rows_per_signed_input, self.synapse_rows_per_hemisphere
                ),
            ));
        }
        if !(1..=1 << 20).contains(&self.weight_max) {
            return Err(err(
                "weight_max",
                format!("{}; must lie in 1..={}", self.weight_max, 1 << 20),
            ));
        }
        if !(1..=16).contains(&self.readout_bits) {
            return Err(err(
                "readout_bits",
                format!("{}; must lie in 1..=16", self.readout_bits),
            ));
        }
        crate::error::check_range(&self.name, "dt_us", self.dt_us as f64, 1e-6, 1e6)?;
        match &self.system {
            Some(s) => s.validate(),
            None => Ok(()),
        }
    }

    /// Chips that run at the same time: the system's, or 1.
    pub fn system_chips(&self) -> usize {
        self.system.as_ref().map_or(1, |s| s.chips)
    }

    /// Parse a substrate from TOML (or JSON, see [`Format`]); fields left out keep their
    /// BSS-2 defaults. `path` names the text in errors.
    pub fn from_str(text: &str, format: Format, path: &Path) -> Result<Self> {
        let s: Substrate = format.parse(text, path)?;
        s.validate().map_err(|e| e.in_file(path))?;
        Ok(s)
    }

    /// Load a substrate from a TOML (or JSON) file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_str(&text, Format::of(path, &text), path)
    }

    /// Save as TOML (or JSON, by extension), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = match Format::of(path, "") {
            Format::Json => serde_json::to_string_pretty(self).expect("plain data serialises"),
            Format::Toml => toml::to_string(self).expect("plain data serialises"),
        };
        crate::files::write_atomic(path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bss2_numbers() {
        let s = Substrate::bss2();
        assert_eq!(s.circuits(), 512);
        assert_eq!(s.signed_inputs_per_circuit(), 128);
        // 784 signed inputs = 1568 rows → 7 circuits → 8 after power-of-two rounding.
        assert_eq!(s.circuits_for_rows(1568), Some(8));
        assert_eq!(s.circuits_for_rows(512), Some(2));
        let mut exact = s.clone();
        exact.power_of_two_neurons = false;
        assert_eq!(exact.circuits_for_rows(1568), Some(7));
        assert_eq!(s.circuits_for_rows(512 * 256 + 1), None);
    }

    #[test]
    fn toml_overrides_keep_defaults() {
        let s = Substrate::from_str(
            "circuits_per_hemisphere = 1024\n",
            Format::Toml,
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(s.circuits(), 2048);
        assert_eq!(s.synapse_rows_per_hemisphere, 256);
        let err = Substrate::from_str("hemispheres = 0\n", Format::Toml, Path::new("x.toml"))
            .unwrap_err();
        assert!(err.to_string().contains("hemispheres"), "{err}");
        let err =
            Substrate::from_str("bogus = 1\n", Format::Toml, Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}

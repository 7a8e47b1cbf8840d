//! Layouts the host shares with the shaders: the simulation kernels' parameters
//! ([`SimParams`]) and state ([`GpuState`]), the binding table, dispatch grids and the CADC
//! width.

use super::*;

/// Binding numbers of the simulation kernels (as declared in `shaders/feedforward.wgsl` and
/// `shaders/lif.wgsl`).
pub mod binding {
    /// [`super::SimParams`] (uniform).
    pub const PARAMS: u32 = 0;
    /// Neuron coefficients (`NeuronCoeffs` per local neuron).
    pub const COEFFS: u32 = 1;
    /// The program: weights or synapses, source table, channel tables, CADC table.
    pub const PROGRAM: u32 = 2;
    /// The partition's input, `(step, channel)` pairs per sample (written by `gather.wgsl`).
    pub const INPUT: u32 = 3;
    /// Neuron state per sample (general kernel).
    pub const STATE: u32 = 4;
    /// Pending fixed-point input per sample and slot (general kernel).
    pub const PENDING: u32 = 5;
    /// Spike bits, then the loop-count word.
    pub const BITS: u32 = 6;
    /// Membranes (trace or maximum).
    pub const MEMBRANE: u32 = 7;
    /// Packed weights, a texture (feed-forward kernel; see
    /// `feedforward::Packed`).
    pub const WEIGHTS: u32 = 8;
    /// The partition's input as a texture, a copy of [`INPUT`] (feed-forward kernel).
    pub const INPUT_TEXTURE: u32 = 9;
}

/// Most workgroups along one dispatch dimension that every adapter allows.
pub(crate) const GRID_MAX: u64 = 65_535;

/// Most source populations one partition may read on the GPU (`MAX_SOURCES` in neuron.wgsl).
pub const MAX_SOURCES: usize = 16;

/// Mirrors `Params` in `shaders/neuron.wgsl` (checked against naga's layout by a test).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SimParams {
    /// Local neurons.
    pub neurons: u32,
    /// Input channels.
    pub channels: u32,
    /// Time steps.
    pub steps: u32,
    /// Ring-buffer slots of pending input (max delay + 1).
    pub slots: u32,
    /// Stages.
    pub stages: u32,
    /// Samples in this chunk.
    pub samples: u32,
    /// Index of the chunk's first sample in the store.
    pub store_sample: u32,
    /// Index of the chunk's first sample for the noise.
    pub noise_sample: u32,
    /// Workgroups along x.
    pub grid_x: u32,
    /// Feed-forward kernel: workgroups along the neurons (for each group of samples).
    pub blocks: u32,
    /// Spike-bit words per step.
    pub words: u32,
    /// 0 none, 1 maximum, 2 trace.
    pub record: u32,
    /// Start of the synapse offsets in the program (general kernel).
    pub syn_off_base: u32,
    /// Start of the synapses in the program (general kernel).
    pub syn_base: u32,
    /// Start of the source table in the program.
    pub source_base: u32,
    /// Start of the CADC table in the program.
    pub cadc_base: u32,
    /// Source populations.
    pub sources: u32,
    /// The feed-forward kernel's input delay.
    pub delay: u32,
    /// Seed of the temporal noise.
    pub noise_seed: u32,
    /// 1 when recorded membranes are CADC-quantised.
    pub cadc: u32,
    /// CADC code of 0.
    pub cadc_offset: f32,
    /// CADC codes per unit.
    pub cadc_gain: f32,
    /// Largest CADC code.
    pub cadc_top: f32,
    /// Samples of the batch in the store.
    pub store_samples: u32,
    /// Word of the bits buffer that reports the loop count.
    pub flag_word: u32,
    /// Always 0 (keeps the shader compiler from fusing multiply and add).
    pub zero: u32,
    /// Workgroups along x of the gather kernel.
    pub gather_grid_x: u32,
    /// Traces: the word of `membrane` where sample 0, step 0, local neuron 0 goes...
    pub mem_base: u32,
    /// ...and the words from one step's row to the next (the local neurons, or the whole
    /// population for traces kept on the device).
    pub mem_stride: u32,
    /// Padding to 16 bytes.
    pub pad: [u32; 3],
}

/// Neuron state as the general kernel stores it (`State` in neuron.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GpuState {
    /// Synaptic current.
    pub i: f32,
    /// Membrane.
    pub v: f32,
    /// Refractory steps left.
    pub refractory: u32,
}

/// Bits of the CADC of an emulated program (from its largest code).
pub(crate) fn cadc_bits(p: &PartitionProgram) -> u32 {
    p.cadc
        .map_or(0, |q| 32 - (q.top as u32).leading_zeros())
        .max(1)
}

/// Workgroups `groups` as a 2-D grid within the dispatch limits.
pub(crate) fn grid(groups: u64) -> Result<(u32, u32)> {
    let x = groups.clamp(1, GRID_MAX);
    let y = groups.div_ceil(x).max(1);
    if y > GRID_MAX {
        return Err(Error::Gpu(format!(
            "{groups} workgroups exceed a 2-D dispatch"
        )));
    }
    Ok((x as u32, y as u32))
}

//! Host side of `shaders/lif.wgsl`: any partition (stages, synapses between its own neurons,
//! delays), one workgroup per sample delivering synapses cooperatively with integer atomics.
//! This module owns the source, the pipeline and the program's word layout.

use crate::plan::compile::PartitionProgram;

/// The kernel's source (`shaders/params.wgsl` + `shaders/neuron.wgsl` + `shaders/lif.wgsl`).
pub const SOURCE: &str = concat!(
    include_str!("../../../shaders/params.wgsl"),
    include_str!("../../../shaders/neuron.wgsl"),
    include_str!("../../../shaders/lif.wgsl")
);

/// The pipeline, on the simulation kernels' bind group layout.
pub(super) fn pipeline(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
) -> wgpu::ComputePipeline {
    super::pipeline(device, layout, "lif.wgsl", SOURCE, "main")
}

/// One synapse as the kernel reads it (`lif.wgsl`: `SYNAPSE_WORDS` words from `syn_base + 3k`):
/// the program's [`crate::plan::compile::Synapse`] with its weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SynapseWords {
    /// Local target neuron.
    pub target: u32,
    /// Delay in steps.
    pub delay: u32,
    /// Fixed-point weight.
    pub weight: i32,
}

/// Words per synapse in the program.
pub const SYNAPSE_WORDS: u32 = (std::mem::size_of::<SynapseWords>() / 4) as u32;

/// Which of a synapse's words holds its weight.
pub const WEIGHT_WORD: u32 = (std::mem::offset_of!(SynapseWords, weight) / 4) as u32;

/// The program as `u32` words: stage bounds | synapse offsets | synapses ([`SynapseWords`]),
/// with the starts of the offsets and of the synapses.
pub fn program_words(p: &PartitionProgram) -> (Vec<u32>, u32, u32) {
    assert_eq!(p.synapses.len(), p.weights.len(), "one weight per synapse");
    let mut w = p.stage_bounds.clone();
    let syn_off_base = w.len() as u32;
    w.extend_from_slice(&p.synapse_offsets);
    let syn_base = w.len() as u32;
    w.reserve(p.synapses.len() * SYNAPSE_WORDS as usize);
    for (s, &weight) in p.synapses.iter().zip(&p.weights) {
        let words = SynapseWords {
            target: s.target,
            delay: s.delay,
            weight,
        };
        w.extend_from_slice(bytemuck::cast_slice(std::slice::from_ref(&words)));
    }
    (w, syn_off_base, syn_base)
}

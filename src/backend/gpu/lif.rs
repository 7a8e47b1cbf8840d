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

/// The program as `u32` words: stage bounds | synapse offsets | synapses (`Synapse` words:
/// target, delay, weight), with the starts of the offsets and of the synapses.
pub fn program_words(p: &PartitionProgram) -> (Vec<u32>, u32, u32) {
    let mut w = p.stage_bounds.clone();
    let syn_off_base = w.len() as u32;
    w.extend_from_slice(&p.synapse_offsets);
    let syn_base = w.len() as u32;
    w.reserve(3 * p.synapses.len());
    for (s, &weight) in p.synapses.iter().zip(&p.weights) {
        w.extend_from_slice(&[s.target, s.delay, weight as u32]);
    }
    (w, syn_off_base, syn_base)
}

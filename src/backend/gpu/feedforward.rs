//! Host side of `shaders/feedforward.wgsl`: feed-forward partitions (one stage, no synapses
//! from their own neurons, one delay for every input), one thread per (sample, neuron) gathering
//! its weights from a dense `[channel][neuron]` matrix. This module owns the source, the
//! pipeline and the matrix layout.

use crate::plan::compile::PartitionProgram;

/// The kernel's source (`shaders/params.wgsl` + `shaders/neuron.wgsl` +
/// `shaders/feedforward.wgsl`).
pub const SOURCE: &str = concat!(
    include_str!("../../../shaders/params.wgsl"),
    include_str!("../../../shaders/neuron.wgsl"),
    include_str!("../../../shaders/feedforward.wgsl")
);

/// The pipeline, on the simulation kernels' bind group layout.
pub(super) fn pipeline(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
) -> wgpu::ComputePipeline {
    super::pipeline(device, layout, "feedforward.wgsl", SOURCE, "main")
}

/// The dense `[channel][neuron]` fixed-point weights of a feed-forward partition, as the words
/// the kernel reads (a channel reaching a neuron through several synapses adds their weights).
pub fn dense_weights(p: &PartitionProgram) -> Vec<u32> {
    let nch = p.channels.len();
    let n = p.neuron_count();
    let mut w = vec![0i32; nch * n];
    for (ch, row) in w.chunks_mut(n.max(1)).enumerate().take(nch) {
        for s in p.synapses_of(ch) {
            row[s.target as usize] += s.weight;
        }
    }
    bytemuck::cast_vec(w)
}

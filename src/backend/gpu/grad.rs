//! Host side of `shaders/grad.wgsl`: weight gradients on the device, one thread per weight (or
//! per synapse, then per weight, for sparse projections), summed in a fixed order. This
//! module owns the source, the parameters' layout and the pipelines.

/// The kernel's source.
pub const SOURCE: &str = include_str!("../../../shaders/grad.wgsl");

/// Mirrors `GradParams` in `shaders/grad.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GradParams {
    /// Time steps.
    pub steps: u32,
    /// Source neurons.
    pub ns: u32,
    /// Target neurons.
    pub nt: u32,
    /// Delay in steps.
    pub delay: u32,
    /// The projection's first weight in the gradient buffer.
    pub w_base: u32,
    /// The target's region in the current gradients.
    pub tgt_base: u32,
    /// The source's spikes by neuron in the events buffer.
    pub csr_base: u32,
    /// 1 for the batch's first chunk (write), 0 (add).
    pub first: u32,
    /// Sparse: by-source list in the topology buffer.
    pub list: u32,
    /// Sparse: per-weight synapse lists in the topology buffer.
    pub by_weight: u32,
    /// Sparse: synapses.
    pub synapses: u32,
    /// Weights.
    pub numel: u32,
    /// Workgroups along x.
    pub grid_x: u32,
    /// Words from one step's row of the target's region to the next.
    pub tgt_stride: u32,
    /// Padding to 16 bytes.
    pub pad: [u32; 2],
}

/// Binding numbers (after the parameters at 0).
pub mod binding {
    /// Current gradients (read).
    pub const GI: u32 = 1;
    /// Spikes by neuron (read).
    pub const EVENTS: u32 = 2;
    /// Topology (read).
    pub const TOPO: u32 = 3;
    /// Weight gradients (written).
    pub const G: u32 = 4;
    /// Per-synapse gradients of a sparse projection (scratch).
    pub const SYN_GRAD: u32 = 5;
}

/// Layout and pipelines.
pub(super) struct GradKernels {
    pub layout: wgpu::BindGroupLayout,
    pub dense: wgpu::ComputePipeline,
    pub synapses: wgpu::ComputePipeline,
    pub weights: wgpu::ComputePipeline,
}

impl GradKernels {
    pub fn new(device: &wgpu::Device) -> Self {
        let layout = super::training_layout(
            device,
            "grad",
            std::mem::size_of::<GradParams>() as u64,
            &[
                (binding::GI, true),
                (binding::EVENTS, true),
                (binding::TOPO, true),
                (binding::G, false),
                (binding::SYN_GRAD, false),
            ],
        );
        let p = |entry| super::pipeline(device, &layout, "grad.wgsl", SOURCE, entry);
        GradKernels {
            dense: p("dense"),
            synapses: p("synapses"),
            weights: p("weights"),
            layout,
        }
    }
}

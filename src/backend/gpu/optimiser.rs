//! Host side of `shaders/optimiser.wgsl`: Adam with the weight regulariser, the mapping of
//! the weights onto the substrate, the bounds of every target's summed input and the
//! populations' fixed-point exponents, on the device. This module owns the source, the
//! parameters' layout and the pipelines.

/// The kernel's source.
pub const SOURCE: &str = include_str!("../../../shaders/optimiser.wgsl");

/// Threads per workgroup (a constant in the shader: it sizes the workgroup's partial sums).
pub const WG: u32 = 64;

/// Mirrors `OptParams` in `shaders/optimiser.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct OptParams {
    /// The projection's first weight.
    pub w_base: u32,
    /// Its weights.
    pub numel: u32,
    /// Learning rate.
    pub lr: f32,
    /// Weights are clamped to ± this.
    pub limit: f32,
    /// Regulariser strength over the weight count.
    pub reg_n: f32,
    /// 1 / (1 − β1^t).
    pub inv_c1: f32,
    /// 1 / (1 − β2^t).
    pub inv_c2: f32,
    /// β1.
    pub b1: f32,
    /// β2.
    pub b2: f32,
    /// ε.
    pub eps: f32,
    /// 1 when the target's weights are quantised.
    pub quantised: u32,
    /// Hardware units per model unit.
    pub map_scale: f32,
    /// Largest hardware weight.
    pub map_max: f32,
    /// Where this dispatch's workgroup partial sums go in the scalars buffer.
    pub partial_base: u32,
    /// Source neurons.
    pub ns: u32,
    /// Target neurons.
    pub nt: u32,
    /// The target's bounds in the scalars buffer.
    pub bound_base: u32,
    /// 1 if this projection is the first into its target.
    pub first_into: u32,
    /// Sparse: by-target weight lists in the topology buffer.
    pub by_target: u32,
    /// Exponents: populations in the table.
    pub populations: u32,
    /// Exponents: the (neurons, bounds' start) table in the topology buffer.
    pub pop_table: u32,
    /// Exponents: where the (scale, input scale) pairs go in the scalars buffer.
    pub exp_base: u32,
    /// Workgroups along x.
    pub grid_x: u32,
    /// Padding to 16 bytes.
    pub pad: u32,
}

/// Binding numbers (after the parameters at 0).
pub mod binding {
    /// Model weights.
    pub const W: u32 = 1;
    /// First moments.
    pub const M: u32 = 2;
    /// Second moments.
    pub const V: u32 = 3;
    /// Gradients (read).
    pub const G: u32 = 4;
    /// Mapped weights.
    pub const MAPPED: u32 = 5;
    /// Partial sums, bounds and exponents.
    pub const SCALARS: u32 = 6;
    /// Topology (read).
    pub const TOPO: u32 = 7;
}

/// Layout and pipelines.
pub(super) struct OptimiserKernels {
    pub layout: wgpu::BindGroupLayout,
    pub adam: wgpu::ComputePipeline,
    pub bounds_dense: wgpu::ComputePipeline,
    pub bounds_sparse: wgpu::ComputePipeline,
    pub exponents: wgpu::ComputePipeline,
}

impl OptimiserKernels {
    pub fn new(device: &wgpu::Device) -> Self {
        let layout = super::training_layout(
            device,
            "optimiser",
            std::mem::size_of::<OptParams>() as u64,
            &[
                (binding::W, false),
                (binding::M, false),
                (binding::V, false),
                (binding::G, true),
                (binding::MAPPED, false),
                (binding::SCALARS, false),
                (binding::TOPO, true),
            ],
        );
        let p = |entry| super::pipeline_with(device, &layout, "optimiser.wgsl", SOURCE, entry, &[]);
        OptimiserKernels {
            adam: p("adam"),
            bounds_dense: p("bounds_dense"),
            bounds_sparse: p("bounds_sparse"),
            exponents: p("exponents"),
            layout,
        }
    }
}

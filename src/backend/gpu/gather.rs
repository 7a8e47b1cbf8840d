//! Host side of `shaders/gather.wgsl`, the replay on the device: from the device copy of the
//! batch's spike store (every source population written once per batch) to one partition's
//! input, `(step, channel)` pairs per sample in step order. This module owns the source, the
//! layout and the pipeline.

/// The kernel's source (`shaders/params.wgsl` + `shaders/gather.wgsl`).
pub const SOURCE: &str = concat!(
    include_str!("../../../shaders/params.wgsl"),
    include_str!("../../../shaders/gather.wgsl")
);

/// Binding numbers of `shaders/gather.wgsl`.
pub mod binding {
    /// `SimParams` (uniform).
    pub const PARAMS: u32 = 0;
    /// The partition's program (source table, channel tables).
    pub const PROGRAM: u32 = 1;
    /// The device copy of the spike store.
    pub const STORE: u32 = 2;
    /// The partition's input (written).
    pub const INPUT: u32 = 3;
}

/// The pipeline and its layout.
pub(super) struct GatherKernel {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
}

impl GatherKernel {
    pub(super) fn new(device: &wgpu::Device) -> Self {
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("gather"),
            entries: &[
                super::uniform_entry(binding::PARAMS),
                super::storage_entry(binding::PROGRAM, true),
                super::storage_entry(binding::STORE, true),
                super::storage_entry(binding::INPUT, false),
            ],
        });
        GatherKernel {
            pipeline: super::pipeline(device, &layout, "gather.wgsl", SOURCE, "main"),
            layout,
        }
    }

    /// Encode the gather of one chunk (`grid` workgroups of one thread per sample).
    pub(super) fn encode(
        &self,
        device: &wgpu::Device,
        enc: &mut wgpu::CommandEncoder,
        [params, program, store, input]: [&wgpu::Buffer; 4],
        (gx, gy): (u32, u32),
    ) {
        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("gather"),
            layout: &self.layout,
            entries: &[
                (binding::PARAMS, params),
                (binding::PROGRAM, program),
                (binding::STORE, store),
                (binding::INPUT, input),
            ]
            .map(|(binding, b)| wgpu::BindGroupEntry {
                binding,
                resource: b.as_entire_binding(),
            }),
        });
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("gather"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(gx, gy, 1);
    }
}

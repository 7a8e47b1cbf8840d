//! Host side of `shaders/compact.wgsl`: from the spike bits a simulation kernel wrote to
//! compact events (count per sample, prefix sum, emit in (step, neuron) order), so that only
//! spikes that happened are read back. This module owns the source, the layout and the three
//! pipelines.

use super::{grid, WG};
use crate::error::Result;

/// The kernels' source (`shaders/compact.wgsl`).
pub const SOURCE: &str = include_str!("../../../shaders/compact.wgsl");

/// Mirrors `CompactParams` in `shaders/compact.wgsl` (checked against naga's layout by a test).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct CompactParams {
    /// Samples in the chunk.
    pub samples: u32,
    /// Steps.
    pub steps: u32,
    /// Spike-bit words per step.
    pub words: u32,
    /// Local neurons.
    pub neurons: u32,
    /// Events the output buffer holds.
    pub capacity: u32,
    /// Workgroups along x of `count` and `emit`.
    pub grid_x: u32,
    /// Runs of steps per sample, one thread each, and steps per run.
    pub segments: u32,
    pub seg_steps: u32,
}

/// Steps per compaction run for `neurons` neurons (`words` bit words a step) over `steps`
/// steps: all of them unless a thread would loop more than the software adapter allows
/// (a step's words and, at most, a spike of every neuron); and the runs per sample.
pub fn segments(steps: u32, words: u32, neurons: u32) -> (u32, u32) {
    let per = (LOOP_LIMIT / (words + neurons).max(1)).clamp(1, steps.max(1));
    (steps.max(1).div_ceil(per), per)
}

/// Loop iterations one invocation may run on the software adapter, with a margin.
pub const LOOP_LIMIT: u32 = 60_000;

/// Binding numbers of `shaders/compact.wgsl`.
pub mod binding {
    /// `CompactParams` (uniform).
    pub const PARAMS: u32 = 0;
    /// The spike bits (read).
    pub const BITS: u32 = 1;
    /// Per-run offsets (`samples · segments + 1`).
    pub const OFFSETS: u32 = 2;
    /// The compact events.
    pub const EVENTS: u32 = 3;
}

/// The three pipelines and their layout.
pub(super) struct CompactKernels {
    layout: wgpu::BindGroupLayout,
    count: wgpu::ComputePipeline,
    scan: wgpu::ComputePipeline,
    emit: wgpu::ComputePipeline,
}

impl CompactKernels {
    pub(super) fn new(device: &wgpu::Device) -> Self {
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("compact"),
            entries: &[
                super::uniform_entry(binding::PARAMS),
                super::storage_entry(binding::BITS, true),
                super::storage_entry(binding::OFFSETS, false),
                super::storage_entry(binding::EVENTS, false),
            ],
        });
        let p = |entry| super::pipeline(device, &layout, "compact.wgsl", SOURCE, entry);
        CompactKernels {
            count: p("count"),
            scan: p("scan"),
            emit: p("emit"),
            layout,
        }
    }

    /// Encode `count` and `scan` (when `count_too`) and `emit` over `runs` (a chunk's samples
    /// times its segments).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn encode(
        &self,
        device: &wgpu::Device,
        enc: &mut wgpu::CommandEncoder,
        params: &wgpu::Buffer,
        bits: &wgpu::Buffer,
        offsets: &wgpu::Buffer,
        events: &wgpu::Buffer,
        runs: u64,
        count_too: bool,
    ) -> Result<()> {
        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("compact"),
            layout: &self.layout,
            entries: &[
                (binding::PARAMS, params),
                (binding::BITS, bits),
                (binding::OFFSETS, offsets),
                (binding::EVENTS, events),
            ]
            .map(|(binding, b)| wgpu::BindGroupEntry {
                binding,
                resource: b.as_entire_binding(),
            }),
        });
        let (gx, gy) = grid(runs.div_ceil(WG as u64))?;
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("compact"),
            timestamp_writes: None,
        });
        pass.set_bind_group(0, &bind, &[]);
        if count_too {
            pass.set_pipeline(&self.count);
            pass.dispatch_workgroups(gx, gy, 1);
            pass.set_pipeline(&self.scan);
            pass.dispatch_workgroups(1, 1, 1);
        }
        pass.set_pipeline(&self.emit);
        pass.dispatch_workgroups(gx, gy, 1);
        Ok(())
    }
}

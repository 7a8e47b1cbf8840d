//! Host side of `shaders/loss.wgsl`: the training loss per sample on the device (readout score
//! (the maximum over time, the mean of the last steps or the sum), cross-entropy, readout
//! regulariser) and the direct gradients on the readout membrane. This module owns the source,
//! the parameters' layout and the pipeline.

/// The kernel's source.
pub const SOURCE: &str = include_str!("../../../shaders/loss.wgsl");

/// Most readout classes the kernel handles (`MAX_CLASSES` in the shader).
pub const MAX_CLASSES: usize = 64;

/// Mirrors `LossParams` in `shaders/loss.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LossParams {
    /// Samples in the chunk.
    pub samples: u32,
    /// Time steps.
    pub steps: u32,
    /// Readout neurons.
    pub classes: u32,
    /// The readout's region in the kept traces (rows of `stride` words).
    pub mem_base: u32,
    /// Samples of the whole batch.
    pub batch: f32,
    /// Score = this × the membrane's maximum over time, mean over the last steps or sum
    /// (`score`).
    pub readout_scale: f32,
    /// Readout regulariser strength.
    pub reg_readout: f32,
    /// Samples of the batch before the chunk.
    pub first: u32,
    /// Workgroups along x.
    pub grid_x: u32,
    /// Where the batch's per-sample (loss, correct) pairs start in the per-sample buffer.
    pub stats_base: u32,
    /// The readout's score: [`SCORE_MAX`], [`SCORE_LAST`] or [`SCORE_SUM`].
    pub score: u32,
    /// With [`SCORE_LAST`]: the steps it averages (1 to `steps`).
    pub last: u32,
    /// Words from one step's row of the readout's region to the next.
    pub stride: u32,
    /// Padding to 16 bytes.
    pub pad: [u32; 3],
}

/// [`LossParams::score`] of [`crate::Score::Max`].
pub const SCORE_MAX: u32 = 0;
/// [`LossParams::score`] of [`crate::Score::Last`].
pub const SCORE_LAST: u32 = 1;
/// [`LossParams::score`] of [`crate::Score::Sum`].
pub const SCORE_SUM: u32 = 2;

impl LossParams {
    /// [`LossParams::score`] and [`LossParams::last`] of `score` over `steps` steps.
    pub fn score_of(score: crate::Score, steps: u32) -> (u32, u32) {
        match score {
            crate::Score::Max => (SCORE_MAX, 0),
            crate::Score::Last { steps: k } => (SCORE_LAST, k.clamp(1, steps.max(1))),
            crate::Score::Sum => (SCORE_SUM, 0),
        }
    }
}

/// Binding numbers (after the parameters at 0).
pub mod binding {
    /// Kept traces (read).
    pub const MEM: u32 = 1;
    /// Labels of the batch (read).
    pub const LABELS: u32 = 2;
    /// Direct gradients and per-sample statistics (written).
    pub const PER_SAMPLE: u32 = 3;
}

/// Layout and pipeline.
pub(super) struct LossKernel {
    pub layout: wgpu::BindGroupLayout,
    pub pipeline: wgpu::ComputePipeline,
}

impl LossKernel {
    pub fn new(device: &wgpu::Device) -> Self {
        let layout = super::training_layout(
            device,
            "loss",
            std::mem::size_of::<LossParams>() as u64,
            &[
                (binding::MEM, true),
                (binding::LABELS, true),
                (binding::PER_SAMPLE, false),
            ],
        );
        let pipeline = super::pipeline(device, &layout, "loss.wgsl", SOURCE, "main");
        LossKernel { layout, pipeline }
    }
}

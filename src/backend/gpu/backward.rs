//! Host side of `shaders/backward.wgsl`: the spike raster of a population from its recorded
//! spikes, and the backward pass through time of one population on the device (one thread per
//! neuron), or of a recurrent loop's populations together (one workgroup per sample). This
//! module owns the source, the parameters' layout and the pipelines.

/// The kernel's source.
pub const SOURCE: &str = include_str!("../../../shaders/backward.wgsl");

/// Most neurons of a recurrent loop (all its populations together) whose backward pass runs
/// on the device (`MAX_LOOP` in the shader: their state lives in workgroup memory).
pub const MAX_LOOP_NEURONS: usize = 1024;

/// Words of a loop member's record in the events buffer (`MEMBER` in the shader): neurons,
/// trace region and stride, raster region, raster words, spikes' offset, spiking, outgoing
/// records' first and count, update order, then k_mem, a_syn and v_th as f32 bits.
pub const MEMBER_WORDS: usize = 13;

/// What the software adapter counts against its cut of an invocation's loops (65 535 in all,
/// silently) for one invocation of `backward`, `backward_loop` or the loss, at most, for the
/// training `s`: per step, a neuron's walk over its outgoing projections (every target of a
/// dense one, its own synapses of a sparse one), and a loop's neurons shared by the workgroup's
/// invocations, its regulariser's count over the steps before; the loss's walks over the
/// readout's steps and classes. llvmpipe counts about two for an iteration of most of these
/// loops (measured on lavapipe: a loop of 10 neurons onto themselves and 3 readouts, whose
/// count here is 19 a step, came back with zero gradients from 65 535 / 35 steps on; the same
/// without the loop, 6 here, from 65 535 / 11), so this is twice the iterations. (`raster_bits`
/// and the weight gradients loop over a neuron's spikes in a chunk: the chunk's samples are
/// bounded for them.)
pub fn loop_iterations(s: &crate::backend::TrainStructure<'_>) -> u64 {
    let net = s.network;
    let steps = net.steps as u64;
    // Per population: the iterations of one neuron's step (its records and their targets).
    let per_step: Vec<u64> = (0..net.populations.len())
        .map(|p| {
            let records = s.ends.iter().enumerate().filter(|(_, e)| e.0 == p);
            1 + records
                .map(|(q, e)| {
                    let fan = if s.dense[q] {
                        net.populations[e.1].size as u64
                    } else {
                        let offs = &s.by_source[q].0;
                        let most = offs.windows(2).map(|w| u64::from(w[1] - w[0])).max();
                        most.unwrap_or(0)
                    };
                    1 + fan
                })
                .sum::<u64>()
        })
        .collect();
    let wg = u64::from(super::WG);
    let share = |p: usize| (net.populations[p].size as u64).div_ceil(wg);
    let classes = net.populations[s.readout].size as u64;
    let loss = 2 * steps * (1 + classes) + 8 * classes;
    let looped: Vec<&[usize]> = s.loops().collect();
    let walks = s
        .comps
        .iter()
        .map(|comp| {
            if looped.contains(&comp.as_slice()) {
                // Per member (one iteration) its neurons (`share` each) and their regulariser
                // counts; then per step (one) per member (one) its neurons' steps.
                let init: u64 = comp.iter().map(|&p| 1 + share(p) * (1 + steps)).sum();
                let step: u64 = comp.iter().map(|&p| 1 + share(p) * per_step[p]).sum();
                init + steps * (1 + step)
            } else {
                steps * (1 + per_step[comp[0]])
            }
        })
        .max()
        .unwrap_or(0);
    2 * walks.max(loss)
}

/// Words per outgoing-projection record in the topology buffer (see the shader).
pub const OUT_RECORD: usize = 8;

/// Mirrors `BackParams` in `shaders/backward.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BackParams {
    /// Samples in the chunk.
    pub samples: u32,
    /// Time steps.
    pub steps: u32,
    /// The population's neurons.
    pub neurons: u32,
    /// Its region in the kept traces and in the current gradients (rows of `stride` words).
    pub mem_base: u32,
    /// Its region in the raster.
    pub raster_base: u32,
    /// Raster words per step.
    pub words: u32,
    /// Its spikes by neuron in the events buffer.
    pub csr_base: u32,
    /// 1 for a spiking population, 0 for the readout.
    pub spiking: u32,
    /// Membrane integration factor per step.
    pub k_mem: f32,
    /// Synaptic decay per step.
    pub a_syn: f32,
    /// Threshold.
    pub v_th: f32,
    /// SuperSpike steepness.
    pub alpha: f32,
    /// Spike-count regulariser strength (decayed for the epoch).
    pub lam: f32,
    /// Samples of the whole batch.
    pub batch: f32,
    /// Its outgoing-projection records in the topology buffer.
    pub out_first: u32,
    /// How many.
    pub out_count: u32,
    /// Workgroups along x.
    pub grid_x: u32,
    /// 1 in hxtorch's update order.
    pub membrane_first: u32,
    /// `backward_loop`: the loop's populations.
    pub members: u32,
    /// `backward_loop`: where their records ([`MEMBER_WORDS`] each) start in the events buffer.
    pub member_table: u32,
    /// Words from one step's row of its region to the next.
    pub stride: u32,
    /// Padding to 16 bytes.
    pub pad: [u32; 3],
}

/// Binding numbers (after the parameters at 0).
pub mod binding {
    /// Kept traces (read).
    pub const MEM: u32 = 1;
    /// Current gradients (written).
    pub const GI: u32 = 2;
    /// Spike raster (written by `raster_bits`).
    pub const RASTER: u32 = 3;
    /// Spikes by neuron (read).
    pub const EVENTS: u32 = 4;
    /// Topology (read).
    pub const TOPO: u32 = 5;
    /// Model weights (read).
    pub const WEIGHTS: u32 = 6;
    /// Direct gradients of the readout (read).
    pub const PER_SAMPLE: u32 = 7;
}

/// Layout and pipelines.
pub(super) struct BackwardKernels {
    pub layout: wgpu::BindGroupLayout,
    pub raster: wgpu::ComputePipeline,
    pub backward: wgpu::ComputePipeline,
    /// A recurrent loop's populations together: one workgroup per sample.
    pub backward_loop: wgpu::ComputePipeline,
}

impl BackwardKernels {
    pub fn new(device: &wgpu::Device) -> Self {
        let layout = super::training_layout(
            device,
            "backward",
            std::mem::size_of::<BackParams>() as u64,
            &[
                (binding::MEM, true),
                (binding::GI, false),
                (binding::RASTER, false),
                (binding::EVENTS, true),
                (binding::TOPO, true),
                (binding::WEIGHTS, true),
                (binding::PER_SAMPLE, true),
            ],
        );
        let raster = super::pipeline(device, &layout, "backward.wgsl", SOURCE, "raster_bits");
        let backward = super::pipeline(device, &layout, "backward.wgsl", SOURCE, "backward");
        let backward_loop =
            super::pipeline(device, &layout, "backward.wgsl", SOURCE, "backward_loop");
        BackwardKernels {
            layout,
            raster,
            backward,
            backward_loop,
        }
    }
}

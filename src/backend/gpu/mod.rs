//! The GPU backend: a long-lived wgpu context (adapter, device, queue, pipelines, the shared
//! bind group layout of the simulation kernels) and [`GpuBackend`], which prepares compiled
//! partitions into device buffers once and runs whole rounds of them in one submission.
//!
//! One module per shader file: [`feedforward`] (`shaders/feedforward.wgsl`), [`lif`]
//! (`shaders/lif.wgsl`), [`gather`] (`shaders/gather.wgsl`), [`compact`]
//! (`shaders/compact.wgsl`); `shaders/neuron.wgsl` is the model both simulation kernels share
//! and `shaders/params.wgsl` their parameters, whose layouts this module owns ([`SimParams`],
//! the binding table [`binding`]).
//!
//! Data flow of a round: the spikes of every source population are written once per batch
//! into one device buffer (the device copy of the host spike store, reused and grown, never
//! created per call); each partition's kernel reads them through its resident channel tables,
//! records spikes as bits, and [`compact`] turns the bits into events so that only spikes that
//! happened (and only the membranes asked for) are read back. Batches larger than the adapter's
//! buffer or dispatch limits run in chunks.

pub mod backward;
pub mod compact;
pub mod feedforward;
pub mod gather;
pub mod grad;
pub mod lif;
pub mod loss;
pub mod optimiser;
mod training;
pub mod weights;

use super::{
    check_sources, Backend, Job, Membranes, PartitionOutput, PhaseTimings, Resident, RunOptions,
};
use crate::error::{Error, Result};
use crate::model::analog::Cadc;
use crate::model::neuron::NeuronCoeffs;
use crate::plan::compile::PartitionProgram;
use crate::spikes::store::{SpikeEvent, SpikeStore, SpikeTrains};
use rayon::prelude::*;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Every WGSL program the crate compiles, with the `shaders/` files it is made of.
pub const SHADERS: &[(&[&str], &str)] = &[
    (&["params.wgsl", "neuron.wgsl", "lif.wgsl"], lif::SOURCE),
    (
        &["params.wgsl", "neuron.wgsl", "feedforward.wgsl"],
        feedforward::SOURCE,
    ),
    (&["params.wgsl", "gather.wgsl"], gather::SOURCE),
    (&["compact.wgsl"], compact::SOURCE),
    (&["loss.wgsl"], loss::SOURCE),
    (&["backward.wgsl"], backward::SOURCE),
    (&["grad.wgsl"], grad::SOURCE),
    (&["optimiser.wgsl"], optimiser::SOURCE),
    (&["weights.wgsl"], weights::SOURCE),
];

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
}

/// Threads per workgroup of every kernel.
pub const WG: u32 = 64;
/// Most workgroups along one dispatch dimension that every adapter allows.
const GRID_MAX: u64 = 65_535;
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
    /// Workgroups per sample (feed-forward kernel).
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

/// Rust structs and the WGSL structs they mirror, for the layout test: (WGSL struct, the
/// program that declares it, Rust size, Rust field offsets in declaration order).
pub fn mirrored_layouts() -> Vec<(&'static str, &'static str, usize, Vec<usize>)> {
    use std::mem::{offset_of, size_of};
    vec![
        (
            "Params",
            feedforward::SOURCE,
            size_of::<SimParams>(),
            vec![
                offset_of!(SimParams, neurons),
                offset_of!(SimParams, channels),
                offset_of!(SimParams, steps),
                offset_of!(SimParams, slots),
                offset_of!(SimParams, stages),
                offset_of!(SimParams, samples),
                offset_of!(SimParams, store_sample),
                offset_of!(SimParams, noise_sample),
                offset_of!(SimParams, grid_x),
                offset_of!(SimParams, blocks),
                offset_of!(SimParams, words),
                offset_of!(SimParams, record),
                offset_of!(SimParams, syn_off_base),
                offset_of!(SimParams, syn_base),
                offset_of!(SimParams, source_base),
                offset_of!(SimParams, cadc_base),
                offset_of!(SimParams, sources),
                offset_of!(SimParams, delay),
                offset_of!(SimParams, noise_seed),
                offset_of!(SimParams, cadc),
                offset_of!(SimParams, cadc_offset),
                offset_of!(SimParams, cadc_gain),
                offset_of!(SimParams, cadc_top),
                offset_of!(SimParams, store_samples),
                offset_of!(SimParams, flag_word),
                offset_of!(SimParams, zero),
                offset_of!(SimParams, gather_grid_x),
                offset_of!(SimParams, mem_base),
                offset_of!(SimParams, mem_stride),
                offset_of!(SimParams, pad),
                offset_of!(SimParams, pad) + 4,
                offset_of!(SimParams, pad) + 8,
            ],
        ),
        (
            "Coeffs",
            feedforward::SOURCE,
            size_of::<NeuronCoeffs>(),
            vec![
                offset_of!(NeuronCoeffs, a_syn),
                offset_of!(NeuronCoeffs, k_mem),
                offset_of!(NeuronCoeffs, v_leak),
                offset_of!(NeuronCoeffs, v_reset),
                offset_of!(NeuronCoeffs, v_th),
                offset_of!(NeuronCoeffs, refractory_steps),
                offset_of!(NeuronCoeffs, spiking),
                offset_of!(NeuronCoeffs, weight_gain),
                offset_of!(NeuronCoeffs, input_scale),
                offset_of!(NeuronCoeffs, noise_sd),
                offset_of!(NeuronCoeffs, noise_key),
                offset_of!(NeuronCoeffs, membrane_first),
                offset_of!(NeuronCoeffs, bias),
                offset_of!(NeuronCoeffs, v_init),
                offset_of!(NeuronCoeffs, leaky),
            ],
        ),
        (
            "State",
            lif::SOURCE,
            size_of::<GpuState>(),
            vec![
                offset_of!(GpuState, i),
                offset_of!(GpuState, v),
                offset_of!(GpuState, refractory),
            ],
        ),
        ("LossParams", loss::SOURCE, size_of::<loss::LossParams>(), {
            use loss::LossParams as P;
            vec![
                offset_of!(P, samples),
                offset_of!(P, steps),
                offset_of!(P, classes),
                offset_of!(P, mem_base),
                offset_of!(P, batch),
                offset_of!(P, readout_scale),
                offset_of!(P, reg_readout),
                offset_of!(P, first),
                offset_of!(P, grid_x),
                offset_of!(P, stats_base),
                offset_of!(P, pad),
                offset_of!(P, pad) + 4,
            ]
        }),
        (
            "BackParams",
            backward::SOURCE,
            size_of::<backward::BackParams>(),
            {
                use backward::BackParams as P;
                vec![
                    offset_of!(P, samples),
                    offset_of!(P, steps),
                    offset_of!(P, neurons),
                    offset_of!(P, mem_base),
                    offset_of!(P, raster_base),
                    offset_of!(P, words),
                    offset_of!(P, csr_base),
                    offset_of!(P, spiking),
                    offset_of!(P, k_mem),
                    offset_of!(P, a_syn),
                    offset_of!(P, v_th),
                    offset_of!(P, alpha),
                    offset_of!(P, lam),
                    offset_of!(P, batch),
                    offset_of!(P, out_first),
                    offset_of!(P, out_count),
                    offset_of!(P, grid_x),
                    offset_of!(P, membrane_first),
                    offset_of!(P, pad),
                    offset_of!(P, pad) + 4,
                ]
            },
        ),
        ("GradParams", grad::SOURCE, size_of::<grad::GradParams>(), {
            use grad::GradParams as P;
            vec![
                offset_of!(P, steps),
                offset_of!(P, ns),
                offset_of!(P, nt),
                offset_of!(P, delay),
                offset_of!(P, w_base),
                offset_of!(P, tgt_base),
                offset_of!(P, csr_base),
                offset_of!(P, first),
                offset_of!(P, list),
                offset_of!(P, by_weight),
                offset_of!(P, synapses),
                offset_of!(P, numel),
                offset_of!(P, grid_x),
                offset_of!(P, pad),
                offset_of!(P, pad) + 4,
                offset_of!(P, pad) + 8,
            ]
        }),
        (
            "OptParams",
            optimiser::SOURCE,
            size_of::<optimiser::OptParams>(),
            {
                use optimiser::OptParams as P;
                vec![
                    offset_of!(P, w_base),
                    offset_of!(P, numel),
                    offset_of!(P, lr),
                    offset_of!(P, limit),
                    offset_of!(P, reg_n),
                    offset_of!(P, inv_c1),
                    offset_of!(P, inv_c2),
                    offset_of!(P, b1),
                    offset_of!(P, b2),
                    offset_of!(P, eps),
                    offset_of!(P, quantised),
                    offset_of!(P, map_scale),
                    offset_of!(P, map_max),
                    offset_of!(P, partial_base),
                    offset_of!(P, ns),
                    offset_of!(P, nt),
                    offset_of!(P, bound_base),
                    offset_of!(P, first_into),
                    offset_of!(P, by_target),
                    offset_of!(P, populations),
                    offset_of!(P, pop_table),
                    offset_of!(P, exp_base),
                    offset_of!(P, grid_x),
                    offset_of!(P, pad),
                ]
            },
        ),
        (
            "WriteParams",
            weights::SOURCE,
            size_of::<weights::WriteParams>(),
            {
                use weights::WriteParams as P;
                vec![
                    offset_of!(P, words),
                    offset_of!(P, table_base),
                    offset_of!(P, exp_at),
                    offset_of!(P, neurons),
                    offset_of!(P, grid_x),
                    offset_of!(P, pad),
                    offset_of!(P, pad) + 4,
                    offset_of!(P, pad) + 8,
                ]
            },
        ),
        (
            "CompactParams",
            compact::SOURCE,
            size_of::<compact::CompactParams>(),
            vec![
                offset_of!(compact::CompactParams, samples),
                offset_of!(compact::CompactParams, steps),
                offset_of!(compact::CompactParams, words),
                offset_of!(compact::CompactParams, neurons),
                offset_of!(compact::CompactParams, capacity),
                offset_of!(compact::CompactParams, grid_x),
                offset_of!(compact::CompactParams, pad),
                offset_of!(compact::CompactParams, pad) + 4,
            ],
        ),
    ]
}

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// Keep the Vulkan loader and Mesa's window-system code quiet on machines without a desktop
/// session: where `XDG_RUNTIME_DIR` is not set, point it at a private folder (created with mode
/// 0700), so that every run on the software adapter does not print "XDG_RUNTIME_DIR is invalid
/// or not set". Call it at the start of `main`, before other threads exist (it changes the
/// process environment).
pub fn quiet_vulkan_loader() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("neuropart-runtime-{}", uid()));
    if std::fs::create_dir_all(&dir).is_ok() {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        // SAFETY (edition 2021: a safe call): done before any thread is started.
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
    }
}

fn uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map_or(0, |m| m.uid())
}

/// An error naming `WGPU_BACKEND` when it names no backend wgpu knows.
fn check_backend_variable() -> Result<()> {
    const KNOWN: [&str; 12] = [
        "vulkan",
        "vk",
        "dx12",
        "d3d12",
        "metal",
        "mtl",
        "gl",
        "gles",
        "opengl",
        "webgpu",
        "primary",
        "secondary",
    ];
    let Ok(v) = std::env::var("WGPU_BACKEND") else {
        return Ok(());
    };
    for name in v.split(',').map(|s| s.trim().to_ascii_lowercase()) {
        if !name.is_empty() && !KNOWN.contains(&name.as_str()) {
            return Err(Error::Gpu(format!(
                "WGPU_BACKEND={v}: '{name}' is not a backend; use one or more of vulkan, gl, \
                 metal, dx12 (comma-separated)"
            )));
        }
    }
    Ok(())
}

/// Device, queue and pipelines, created once and reused for every partition and batch.
pub struct GpuContext {
    /// The adapter's description.
    pub info: wgpu::AdapterInfo,
    /// Limits granted to the device.
    pub limits: wgpu::Limits,
    device: wgpu::Device,
    queue: wgpu::Queue,
    key: u64,
    sim_layout: wgpu::BindGroupLayout,
    feedforward: wgpu::ComputePipeline,
    general: wgpu::ComputePipeline,
    gather: gather::GatherKernel,
    compact: compact::CompactKernels,
    loss: loss::LossKernel,
    backward: backward::BackwardKernels,
    grad: grad::GradKernels,
    optimiser: optimiser::OptimiserKernels,
    weights: weights::WeightsKernel,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuContext({})", self.describe())
    }
}

fn storage_entry(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

/// The layout of a training kernel: its parameters at binding 0 (a uniform read at a dynamic
/// offset of one buffer that holds every dispatch's parameters, `params` bytes each), then the
/// storage buffers `(binding, read-only)`.
fn training_layout(
    device: &wgpu::Device,
    label: &str,
    params: u64,
    storage: &[(u32, bool)],
) -> wgpu::BindGroupLayout {
    let mut entries = vec![wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: true,
            min_binding_size: std::num::NonZeroU64::new(params),
        },
        count: None,
    }];
    for &(binding, read_only) in storage {
        entries.push(storage_entry(binding, read_only));
    }
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(label),
        entries: &entries,
    })
}

fn uniform_entry(binding: u32) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

/// A compute pipeline for entry point `entry` of `source` with `layout`.
fn pipeline(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
    label: &str,
    source: &'static str,
    entry: &str,
) -> wgpu::ComputePipeline {
    pipeline_with(device, layout, label, source, entry, &[("WG", WG as f64)])
}

/// [`pipeline`] with other override constants.
fn pipeline_with(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
    label: &str,
    source: &'static str,
    entry: &str,
    constants: &[(&str, f64)],
) -> wgpu::ComputePipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(label),
        bind_group_layouts: &[Some(layout)],
        immediate_size: 0,
    });
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(label),
        layout: Some(&pl),
        module: &module,
        entry_point: Some(entry),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants,
            zero_initialize_workgroup_memory: true,
        },
        cache: None,
    })
}

impl GpuContext {
    /// Pick an adapter (honouring `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and
    /// `WGPU_POWER_PREF`), create the device with the adapter's own limits and compile the
    /// kernels.
    pub fn new() -> Result<Self> {
        Self::for_process(None)
    }

    /// As [`GpuContext::new`], for the process of index `local_rank` among several on one
    /// machine: without `WGPU_ADAPTER_NAME` it takes GPU `local_rank` modulo the GPUs found
    /// (those of the first backend that has any, in the driver's order), so that processes
    /// spread over a machine's GPUs. With no hardware GPU it falls back to what `new` picks.
    pub fn for_process(local_rank: Option<usize>) -> Result<Self> {
        check_backend_variable()?;
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pollster::block_on(select_adapter(&instance, local_rank))?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("neuropart"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::Gpu(format!("cannot open device on '{}': {e}", info.name)))?;
        if limits.max_storage_buffers_per_shader_stage < 7 {
            return Err(Error::Gpu(format!(
                "adapter '{}' allows {} storage buffers per shader stage, the kernels need 7",
                info.name, limits.max_storage_buffers_per_shader_stage
            )));
        }
        let (sim_layout, feedforward, general, gather, compact) =
            scoped(&device, "compiling the shaders", || {
                let sim_layout =
                    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                        label: Some("simulation"),
                        entries: &[
                            uniform_entry(binding::PARAMS),
                            storage_entry(binding::COEFFS, true),
                            storage_entry(binding::PROGRAM, true),
                            storage_entry(binding::INPUT, true),
                            storage_entry(binding::STATE, false),
                            storage_entry(binding::PENDING, false),
                            storage_entry(binding::BITS, false),
                            storage_entry(binding::MEMBRANE, false),
                        ],
                    });
                let ff = feedforward::pipeline(&device, &sim_layout);
                let general = lif::pipeline(&device, &sim_layout);
                let gather = gather::GatherKernel::new(&device);
                let compact = compact::CompactKernels::new(&device);
                (sim_layout, ff, general, gather, compact)
            })?;
        let (loss, backward, grad, optimiser, weights) =
            scoped(&device, "compiling the training shaders", || {
                (
                    loss::LossKernel::new(&device),
                    backward::BackwardKernels::new(&device),
                    grad::GradKernels::new(&device),
                    optimiser::OptimiserKernels::new(&device),
                    weights::WeightsKernel::new(&device),
                )
            })?;
        Ok(GpuContext {
            info,
            limits,
            device,
            queue,
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            sim_layout,
            feedforward,
            general,
            gather,
            compact,
            loss,
            backward,
            grad,
            optimiser,
            weights,
        })
    }

    /// "name (backend, type)".
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }

    /// Largest storage buffer one binding may use.
    fn max_binding(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// True for a software adapter (llvmpipe/lavapipe), which cuts long shader loops short.
    fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }
}

async fn select_adapter(
    instance: &wgpu::Instance,
    local_rank: Option<usize>,
) -> Result<wgpu::Adapter> {
    if let Ok(want) = std::env::var("WGPU_ADAPTER_NAME") {
        let want = want.to_lowercase();
        let adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
        let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        return adapters
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&want))
            .ok_or_else(|| {
                Error::Gpu(format!(
                    "WGPU_ADAPTER_NAME={want} matches none of the adapters found: {names:?}"
                ))
            });
    }
    if let Some(local) = local_rank {
        let hardware: Vec<wgpu::Adapter> = instance
            .enumerate_adapters(wgpu::Backends::all())
            .await
            .into_iter()
            .filter(|a| {
                matches!(
                    a.get_info().device_type,
                    wgpu::DeviceType::DiscreteGpu
                        | wgpu::DeviceType::IntegratedGpu
                        | wgpu::DeviceType::VirtualGpu
                )
            })
            .collect();
        // One physical GPU shows up once per backend (Vulkan, GL, ...): count one backend's.
        if let Some(first) = hardware.first().map(|a| a.get_info().backend) {
            let mut same: Vec<wgpu::Adapter> = hardware
                .into_iter()
                .filter(|a| a.get_info().backend == first)
                .collect();
            let k = local % same.len();
            return Ok(same.swap_remove(k));
        }
    }
    instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::from_env()
                .unwrap_or(wgpu::PowerPreference::HighPerformance),
            force_fallback_adapter: false,
            compatible_surface: None,
            ..Default::default()
        })
        .await
        .map_err(|e| {
            Error::Gpu(format!(
                "no GPU adapter found ({e}); install a Vulkan driver (e.g. `apt-get install \
                 mesa-vulkan-drivers libvulkan1` for the software adapter) or set WGPU_BACKEND"
            ))
        })
}

/// Which kernel runs a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// `shaders/feedforward.wgsl`: dense weights, one thread per (sample, neuron).
    Feedforward,
    /// `shaders/lif.wgsl`: synapse lists, stages, delays; one workgroup per sample.
    General,
}

/// A partition prepared for the GPU: its buffers, created once.
pub struct GpuProgram {
    kernel: Kernel,
    neurons: u32,
    channels: u32,
    slots: u32,
    stages: u32,
    delay: u32,
    syn_off_base: u32,
    syn_base: u32,
    source_base: u32,
    cadc_base: u32,
    cadc: Option<Cadc>,
    sources: Vec<usize>,
    coeffs: wgpu::Buffer,
    program: wgpu::Buffer,
    /// Expected spikes per sample (f32 bits), learned from earlier batches: sizes the compact
    /// readback.
    spikes_per_sample: AtomicU32,
}

/// The program buffer's words: the kernel's part (dense weights, or stage bounds, synapse
/// offsets and synapses), then the source table, the channel tables and the CADC table.
struct ProgramWords {
    words: Vec<u32>,
    syn_off_base: u32,
    syn_base: u32,
    source_base: u32,
    cadc_base: u32,
}

fn program_words(p: &PartitionProgram, kernel: Kernel, cadc_bits: Option<u32>) -> ProgramWords {
    let (mut words, syn_off_base, syn_base) = match kernel {
        Kernel::Feedforward => (feedforward::dense_weights(p), 0, 0),
        Kernel::General => lif::program_words(p),
    };
    let source_base = words.len() as u32;
    let mut lut_at = source_base as usize + 4 * p.sources.len();
    for b in &p.sources {
        words.extend([
            b.population as u32,
            b.span_start,
            b.lut.len() as u32,
            lut_at as u32,
        ]);
        lut_at += b.lut.len();
    }
    for b in &p.sources {
        words.extend_from_slice(&b.lut);
    }
    let cadc_base = words.len() as u32;
    if let (Some(q), Some(bits)) = (p.cadc, cadc_bits) {
        let top = (1u32 << bits) - 1;
        words.extend((0..=top).map(|code| ((code as f32 - q.offset) / q.gain).to_bits()));
    }
    ProgramWords {
        words,
        syn_off_base,
        syn_base,
        source_base,
        cadc_base,
    }
}

/// A buffer that is kept and grown, never shrunk.
#[derive(Default)]
struct Grown {
    buf: Option<wgpu::Buffer>,
}

impl Grown {
    /// The buffer, at least `size` bytes (created or replaced when smaller).
    fn ensure(
        &mut self,
        device: &wgpu::Device,
        label: &str,
        size: u64,
        usage: wgpu::BufferUsages,
        created: &mut usize,
    ) -> &wgpu::Buffer {
        let size = size.max(16).next_multiple_of(16);
        if self.buf.as_ref().is_none_or(|b| b.size() < size) {
            // Room to grow without a new buffer for every slightly larger batch.
            let size = size + size / 4;
            self.buf = Some(device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: size.next_multiple_of(16),
                usage,
                mapped_at_creation: false,
            }));
            *created += 1;
        }
        self.buf.as_ref().expect("just ensured")
    }
}

/// Buffers of the k-th partition of a round, reused by every round and batch.
#[derive(Default)]
struct Slot {
    params: Grown,
    input: Grown,
    compact_params: Grown,
    state: Grown,
    pending: Grown,
    bits: Grown,
    membrane: Grown,
    offsets: Grown,
    events: Grown,
    staging: Grown,
}

/// The device copy of one batch's spike store, and the slots.
#[derive(Default)]
struct Workspace {
    /// Which store the device copy belongs to.
    store_id: u64,
    store: Grown,
    /// Mapped and filled on the host, then copied into `store`.
    upload: Grown,
    /// Host buffer a region is converted in before it is copied into `upload`.
    scratch: Vec<u32>,
    /// Words of the store buffer in use.
    used: u64,
    /// Where kept traces go.
    kept: KeptTraces,
    /// Population and version of every region written for this store.
    staged: Vec<(usize, u64)>,
    slots: Vec<Slot>,
}

/// Where traces kept on the device for training go ([`Membranes::Keep`]): one buffer, a
/// `[sample][step][neuron]` region per population, set up by the device training
/// (`training.rs`) before each forward pass.
#[derive(Default)]
struct KeptTraces {
    buf: Option<wgpu::Buffer>,
    /// Per population: the first word of its region, if it has one.
    regions: Vec<Option<u64>>,
    /// Per population: neurons.
    sizes: Vec<usize>,
}

/// Runs partitions on a GPU through wgpu.
pub struct GpuBackend {
    ctx: Arc<GpuContext>,
    timings: Mutex<PhaseTimings>,
    ws: Mutex<Workspace>,
    /// Upper bound on one chunk's samples (tests use it to force chunking).
    pub max_chunk: usize,
}

impl GpuBackend {
    /// A backend on a fresh context (see [`GpuContext::new`]).
    pub fn new() -> Result<Self> {
        Ok(Self::with_context(Arc::new(GpuContext::new()?)))
    }

    /// A backend on a fresh context for the process of index `local_rank` on its machine
    /// (see [`GpuContext::for_process`]).
    pub fn for_process(local_rank: usize) -> Result<Self> {
        Ok(Self::with_context(Arc::new(GpuContext::for_process(
            Some(local_rank),
        )?)))
    }

    /// A backend sharing an existing context.
    pub fn with_context(ctx: Arc<GpuContext>) -> Self {
        GpuBackend {
            ctx,
            timings: Mutex::new(PhaseTimings::default()),
            ws: Mutex::new(Workspace::default()),
            max_chunk: usize::MAX,
        }
    }

    /// The context.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    fn record_timings(&self, t: &PhaseTimings) {
        self.timings.lock().expect("not poisoned").add(t);
    }
}

impl Backend for GpuBackend {
    fn name(&self) -> String {
        format!("gpu: {}", self.ctx.describe())
    }

    fn key(&self) -> u64 {
        self.ctx.key
    }

    fn prepare(&self, p: &PartitionProgram) -> Result<Resident> {
        let ctx = &*self.ctx;
        if p.sources.len() > MAX_SOURCES {
            return Err(Error::Gpu(format!(
                "partition {} reads {} source populations; the GPU kernels read at most \
                 {MAX_SOURCES} (use --device cpu)",
                p.partition,
                p.sources.len()
            )));
        }
        let limit = ctx.max_binding();
        let dense_bytes = p.channels.len() as u64 * p.neuron_count() as u64 * 4;
        let kernel = if p.is_feedforward() && dense_bytes <= limit.min(1 << 30) {
            Kernel::Feedforward
        } else {
            Kernel::General
        };
        let bits = p.cadc.map(|_| cadc_bits(p));
        let pw = program_words(p, kernel, bits);
        if (pw.words.len() as u64) * 4 > limit {
            return Err(Error::Gpu(format!(
                "partition {} has {} synapses ({} MiB), more than one GPU buffer may hold ({} MiB)",
                p.partition,
                p.synapses.len(),
                (pw.words.len() * 4) >> 20,
                limit >> 20
            )));
        }
        let mut t = PhaseTimings::default();
        let (coeffs, program) = scoped(&ctx.device, "creating a partition's buffers", || {
            let make = |label: &str, bytes: &[u8]| {
                let b = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: (bytes.len() as u64).max(16).next_multiple_of(16),
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                ctx.queue.write_buffer(&b, 0, bytes);
                b
            };
            (
                make("coeffs", bytemuck::cast_slice(&p.coeffs)),
                make("program", bytemuck::cast_slice(&pw.words)),
            )
        })?;
        t.buffers_created += 2;
        self.record_timings(&t);
        Ok(Resident::new(
            ctx.key,
            GpuProgram {
                kernel,
                neurons: p.neuron_count() as u32,
                channels: p.channels.len() as u32,
                slots: p.max_delay + 1,
                stages: (p.stage_bounds.len() - 1) as u32,
                delay: p.synapses.first().map_or(0, |s| s.delay),
                syn_off_base: pw.syn_off_base,
                syn_base: pw.syn_base,
                source_base: pw.source_base,
                cadc_base: pw.cadc_base,
                cadc: p.cadc,
                sources: p.sources.iter().map(|b| b.population).collect(),
                coeffs,
                program,
                spikes_per_sample: AtomicU32::new((p.neuron_count() as f32 / 4.0).to_bits()),
            },
        ))
    }

    fn update(&self, resident: &mut Resident, p: &PartitionProgram) -> Result<()> {
        let g = resident.get_mut::<GpuProgram>()?;
        let t0 = Instant::now();
        let words = match g.kernel {
            Kernel::Feedforward => feedforward::dense_weights(p),
            Kernel::General => lif::program_words(p).0,
        };
        let q = &self.ctx.queue;
        q.write_buffer(&g.coeffs, 0, bytemuck::cast_slice(&p.coeffs));
        q.write_buffer(&g.program, 0, bytemuck::cast_slice(&words));
        self.record_timings(&PhaseTimings {
            upload: t0.elapsed(),
            bytes_up: (words.len() * 4 + std::mem::size_of_val(&p.coeffs[..])) as u64,
            ..Default::default()
        });
        Ok(())
    }

    fn run_round(
        &self,
        store: &SpikeStore,
        jobs: &mut [Job<'_>],
        opts: &RunOptions,
    ) -> Result<Vec<PartitionOutput>> {
        let mut t = PhaseTimings::default();
        let result = self.run_round_timed(store, jobs, opts, &mut t);
        self.record_timings(&t);
        result
    }

    fn take_timings(&self) -> Option<PhaseTimings> {
        Some(std::mem::take(
            &mut *self.timings.lock().expect("not poisoned"),
        ))
    }

    fn device_training(&self) -> Option<&dyn super::DeviceTraining> {
        Some(self)
    }
}

/// Bits of the CADC of an emulated program (from its largest code).
fn cadc_bits(p: &PartitionProgram) -> u32 {
    p.cadc
        .map_or(0, |q| 32 - (q.top as u32).leading_zeros())
        .max(1)
}

/// Bytes one sample of a job needs in each per-sample buffer.
struct PerSample {
    state: u64,
    pending: u64,
    bits: u64,
    membrane: u64,
}

impl PerSample {
    fn of(g: &GpuProgram, steps: u64, membranes: Membranes) -> Self {
        let n = g.neurons as u64;
        let general = g.kernel == Kernel::General;
        PerSample {
            state: if general {
                n * std::mem::size_of::<GpuState>() as u64
            } else {
                0
            },
            pending: if general { g.slots as u64 * n * 4 } else { 0 },
            bits: steps * n.div_ceil(32) * 4,
            membrane: match membranes {
                // Kept traces go to the workspace's kept buffer.
                Membranes::None | Membranes::Keep => 0,
                Membranes::Max => n * 4,
                Membranes::Trace => steps * n * 4,
            },
        }
    }

    fn largest(&self) -> u64 {
        self.state
            .max(self.pending)
            .max(self.bits)
            .max(self.membrane)
    }
}

/// Workgroups `groups` as a 2-D grid within the dispatch limits.
fn grid(groups: u64) -> Result<(u32, u32)> {
    let x = groups.clamp(1, GRID_MAX);
    let y = groups.div_ceil(x).max(1);
    if y > GRID_MAX {
        return Err(Error::Gpu(format!(
            "{groups} workgroups exceed a 2-D dispatch"
        )));
    }
    Ok((x as u32, y as u32))
}

/// What one job's chunk left in its staging buffer (byte offsets).
struct StagingLayout {
    offsets: u64,
    flag: u64,
    membrane: u64,
    membrane_len: u64,
    events: u64,
    capacity: u64,
    size: u64,
}

impl GpuBackend {
    /// Write the spikes of population `pop` into the device copy of the store, unless this
    /// store's current version is already there.
    fn stage(
        &self,
        ws: &mut Workspace,
        store: &SpikeStore,
        pops: &[usize],
        t: &mut PhaseTimings,
    ) -> Result<()> {
        let ctx = &*self.ctx;
        let dir_len = store.populations() as u64;
        if ws.store_id != store.id() {
            ws.store_id = store.id();
            ws.used = dir_len;
            ws.staged.clear();
        }
        let mut regions: Vec<(usize, u64, &SpikeTrains)> = Vec::new();
        let mut words = 0u64;
        for &pop in pops {
            let s = store.stored(pop).expect("checked by check_sources");
            if ws.staged.iter().any(|&(p, v)| p == pop && v == s.version)
                || regions.iter().any(|r| r.0 == pop)
            {
                continue;
            }
            let tr = &*s.trains;
            if store.steps() as u64 * tr.neurons as u64 > u32::MAX as u64 {
                return Err(Error::Gpu(format!(
                    "population #{pop}: {} neurons x {} steps exceed the GPU kernels' 32-bit \
                     spike indices (use --device cpu or fewer steps)",
                    tr.neurons,
                    store.steps()
                )));
            }
            words += region_len(tr).next_multiple_of(2) as u64;
            regions.push((pop, s.version, tr));
        }
        if regions.is_empty() {
            return Ok(());
        }
        ws.used = ws.used.next_multiple_of(2);
        let need = ws.used + words;
        if need * 4 > ctx.max_binding() {
            return Err(Error::Gpu(format!(
                "the batch's spikes need {} MiB on the device, more than one GPU buffer may \
                 hold ({} MiB); use a smaller batch",
                (need * 4) >> 20,
                ctx.max_binding() >> 20
            )));
        }
        let device = &ctx.device;
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        let old = ws.store.buf.clone();
        let buf = ws
            .store
            .ensure(
                device,
                "spike store",
                need * 4,
                usage,
                &mut t.buffers_created,
            )
            .clone();
        if let Some(old) = old.filter(|o| *o != buf) {
            // Grown mid-batch: keep what was written for this store (submitted now, so that
            // the directory entries written below land after it).
            let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("grow"),
            });
            enc.copy_buffer_to_buffer(&old, 0, &buf, 0, (ws.used * 4).next_multiple_of(4));
            ctx.queue.submit([enc.finish()]);
        }
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("stage"),
        });
        // Fill a kept, mapped upload buffer in place (in parallel pieces, no intermediate
        // copy), then copy it into the store buffer on the device.
        let upload = ws
            .upload
            .ensure(
                device,
                "upload",
                words * 4,
                wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
                &mut t.buffers_created,
            )
            .clone();
        map_all(device, &[&upload], wgpu::MapMode::Write)?;
        let mut at_upload = 0u64;
        let mut placed = Vec::with_capacity(regions.len());
        for (pop, version, tr) in regions {
            let len = region_len(tr) as u64;
            placed.push((at_upload, tr));
            enc.copy_buffer_to_buffer(&upload, at_upload * 4, &buf, ws.used * 4, len * 4);
            ctx.queue
                .write_buffer(&buf, pop as u64 * 4, bytemuck::bytes_of(&(ws.used as u32)));
            ws.used += len.next_multiple_of(2);
            at_upload += len.next_multiple_of(2);
            ws.staged.push((pop, version));
            t.bytes_up += len * 4 + 4;
        }
        write_regions(&upload, &placed, &mut ws.scratch)?;
        upload.unmap();
        ctx.queue.submit([enc.finish()]);
        Ok(())
    }

    fn run_round_timed(
        &self,
        store: &SpikeStore,
        jobs: &mut [Job<'_>],
        opts: &RunOptions,
        t: &mut PhaseTimings,
    ) -> Result<Vec<PartitionOutput>> {
        let ctx = &*self.ctx;
        let samples = store.samples();
        let steps = opts.steps as u64;
        let mut progs = Vec::with_capacity(jobs.len());
        let mut pops = Vec::new();
        for job in jobs.iter() {
            check_sources(store, job.program)?;
            let g = job.resident.get::<GpuProgram>()?;
            if ctx.is_software() {
                let words = (g.neurons as u64).div_ceil(32);
                if steps * (words + g.neurons as u64) > 60_000 {
                    return Err(Error::Gpu(format!(
                        "partition {}: {} steps of {} neurons exceed what one invocation of the \
                         software adapter '{}' may loop (65 535 iterations); use --device cpu, \
                         fewer steps, or a real GPU",
                        job.program.partition, steps, g.neurons, ctx.info.name
                    )));
                }
            }
            if ctx.is_software() {
                let most = (0..samples)
                    .map(|s| {
                        g.sources
                            .iter()
                            .map(|&p| store.get(p).map_or(0, |t| t.sample(s).len() as u64))
                            .sum::<u64>()
                    })
                    .max()
                    .unwrap_or(0);
                if steps * (g.sources.len() as u64 + 1) + most > 60_000 {
                    return Err(Error::Gpu(format!(
                        "partition {}: a sample with {most} input spikes over {steps} steps \
                         exceeds what one invocation of the software adapter '{}' may loop \
                         (65 535 iterations); use --device cpu, fewer steps, or a real GPU",
                        job.program.partition, ctx.info.name
                    )));
                }
            }
            pops.extend_from_slice(&g.sources);
            progs.push(g);
        }
        let mut guard = self.ws.lock().expect("not poisoned");
        let ws = &mut *guard;
        let t0 = Instant::now();
        self.stage(ws, store, &pops, t)?;
        t.upload += t0.elapsed();
        let store_buf = ws.store.buf.clone().expect("staged");
        if ws.slots.len() < jobs.len() {
            ws.slots.resize_with(jobs.len(), Slot::default);
        }
        // The largest chunk every per-sample buffer of every job fits.
        let limit = ctx.max_binding();
        let mut chunk = samples.max(1).min(self.max_chunk.max(1)) as u64;
        for (g, job) in progs.iter().zip(jobs.iter()) {
            let per = PerSample::of(g, steps, job.membranes);
            chunk = chunk.min(limit / per.largest().max(1));
            let blocks = match g.kernel {
                Kernel::Feedforward => (g.neurons as u64).div_ceil(WG as u64).max(1),
                Kernel::General => 1,
            };
            chunk = chunk.min(GRID_MAX * GRID_MAX / blocks);
        }
        if chunk == 0 {
            return Err(Error::Gpu(format!(
                "one sample of a partition needs more than one GPU buffer may hold ({} MiB)",
                limit >> 20
            )));
        }
        let mut outs: Vec<(Vec<u32>, Vec<SpikeEvent>, Vec<f32>)> = jobs
            .iter()
            .map(|_| (vec![0u32], Vec::new(), Vec::new()))
            .collect();
        let mut s0 = 0usize;
        while s0 < samples {
            let c = (chunk as usize).min(samples - s0);
            self.run_chunk(
                ws, &store_buf, store, jobs, &progs, opts, s0, c, &mut outs, t,
            )?;
            s0 += c;
        }
        let t1 = Instant::now();
        let result = outs
            .into_iter()
            .zip(jobs.iter())
            .map(|((offsets, events, membrane), job)| PartitionOutput {
                spikes: SpikeTrains {
                    neurons: job.program.neuron_count(),
                    steps: opts.steps,
                    offsets,
                    events,
                },
                membrane: (matches!(job.membranes, Membranes::Max | Membranes::Trace)
                    && job.dest.is_none())
                .then_some(membrane),
            })
            .collect();
        t.host += t1.elapsed();
        Ok(result)
    }

    /// Run samples `s0..s0 + c` of every job in one submission and append their results.
    #[allow(clippy::too_many_arguments)]
    fn run_chunk(
        &self,
        ws: &mut Workspace,
        store_buf: &wgpu::Buffer,
        store: &SpikeStore,
        jobs: &mut [Job<'_>],
        progs: &[&GpuProgram],
        opts: &RunOptions,
        s0: usize,
        c: usize,
        outs: &mut [(Vec<u32>, Vec<SpikeEvent>, Vec<f32>)],
        t: &mut PhaseTimings,
    ) -> Result<()> {
        let ctx = &*self.ctx;
        let device = &ctx.device;
        let steps = opts.steps as u64;
        let t_up = Instant::now();
        let mut layouts = Vec::with_capacity(jobs.len());
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("round"),
        });
        let created = &mut t.buffers_created;
        for (k, (job, g)) in jobs.iter().zip(progs).enumerate() {
            // Kept traces: the population's region of the kept buffer, rows of its size.
            let kept = if job.membranes == Membranes::Keep {
                let runs = job.program.population_runs();
                let &[(0, pop, first, _)] = &runs[..] else {
                    return Err(Error::Gpu(format!(
                        "partition {} holds neurons of {} populations; training on the GPU \
                         needs one population per partition (use --device cpu)",
                        job.program.partition,
                        runs.len()
                    )));
                };
                let (Some(buf), Some(&Some(region))) =
                    (ws.kept.buf.clone(), ws.kept.regions.get(pop))
                else {
                    return Err(Error::Gpu(format!(
                        "partition {}: no device region for the kept traces of population #{pop}",
                        job.program.partition
                    )));
                };
                let size = ws.kept.sizes[pop] as u64;
                Some((buf, region + s0 as u64 * steps * size + first as u64, size))
            } else {
                None
            };
            let slot = &mut ws.slots[k];
            let per = PerSample::of(g, steps, job.membranes);
            let n = g.neurons as u64;
            let words = n.div_ceil(32);
            let bits_bytes = c as u64 * per.bits + 4;
            let rw = wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST;
            let spp = f32::from_bits(g.spikes_per_sample.load(Ordering::Relaxed));
            let capacity = ((spp * 1.1 + 1.0) as u64 * c as u64 + 64)
                .min(c as u64 * steps * n)
                .min(ctx.max_binding() / 4)
                .max(16);
            let membrane_len = c as u64 * per.membrane;
            // Room for every event of the sources in this chunk (the gather keeps a subset).
            let source_events: u64 = g
                .sources
                .iter()
                .map(|&pop| {
                    let o = &store.get(pop).expect("checked").offsets;
                    (o[s0 + c] - o[s0]) as u64
                })
                .sum();
            let input_words = 2 * c as u64 + 2 * source_events;
            let layout = {
                let offsets = 0u64;
                let flag = (c as u64 + 1) * 4;
                let membrane = (flag + 4).next_multiple_of(8);
                let events = (membrane + membrane_len).next_multiple_of(8);
                StagingLayout {
                    offsets,
                    flag,
                    membrane,
                    membrane_len,
                    events,
                    capacity,
                    size: events + capacity * 4,
                }
            };
            let uniform = wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST;
            let params_buf = slot
                .params
                .ensure(
                    device,
                    "params",
                    std::mem::size_of::<SimParams>() as u64,
                    uniform,
                    created,
                )
                .clone();
            let cparams_buf = slot
                .compact_params
                .ensure(
                    device,
                    "compact params",
                    std::mem::size_of::<compact::CompactParams>() as u64,
                    uniform,
                    created,
                )
                .clone();
            let input = slot
                .input
                .ensure(
                    device,
                    "input",
                    input_words * 4,
                    wgpu::BufferUsages::STORAGE,
                    created,
                )
                .clone();
            let state = slot
                .state
                .ensure(
                    device,
                    "state",
                    c as u64 * per.state,
                    wgpu::BufferUsages::STORAGE,
                    created,
                )
                .clone();
            let pending = slot
                .pending
                .ensure(
                    device,
                    "pending",
                    c as u64 * per.pending,
                    wgpu::BufferUsages::STORAGE,
                    created,
                )
                .clone();
            let bits = slot
                .bits
                .ensure(device, "spike bits", bits_bytes, rw, created)
                .clone();
            let membrane = slot
                .membrane
                .ensure(device, "membrane", membrane_len, rw, created)
                .clone();
            let (membrane, mem_base, mem_stride) = match kept {
                Some((buf, base, size)) => (buf, base as u32, size as u32),
                None => (membrane, 0, n as u32),
            };
            let offsets = slot
                .offsets
                .ensure(device, "offsets", (c as u64 + 1) * 4, rw, created)
                .clone();
            let events = slot
                .events
                .ensure(device, "events", capacity * 4, rw, created)
                .clone();
            let staging = slot
                .staging
                .ensure(
                    device,
                    "readback",
                    layout.size,
                    wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    created,
                )
                .clone();
            let blocks = match g.kernel {
                Kernel::Feedforward => n.div_ceil(WG as u64).max(1),
                Kernel::General => 1,
            };
            let (gx, gy) = grid(c as u64 * blocks)?;
            let (cgx, cgy) = grid((c as u64).div_ceil(WG as u64))?;
            let (cadc, cadc_offset, cadc_gain, cadc_top) = match g.cadc {
                Some(q) => (1, q.offset, q.gain, q.top),
                None => (0, 0.0, 1.0, 0.0),
            };
            let params = SimParams {
                neurons: g.neurons,
                channels: g.channels,
                steps: opts.steps,
                slots: g.slots,
                stages: g.stages,
                samples: c as u32,
                store_sample: s0 as u32,
                noise_sample: opts.sample_base + s0 as u32,
                grid_x: gx,
                blocks: blocks as u32,
                words: words as u32,
                record: match job.membranes {
                    Membranes::None => 0,
                    Membranes::Max => 1,
                    Membranes::Trace | Membranes::Keep => 2,
                },
                syn_off_base: g.syn_off_base,
                syn_base: g.syn_base,
                source_base: g.source_base,
                cadc_base: g.cadc_base,
                sources: g.sources.len() as u32,
                delay: g.delay,
                noise_seed: opts.noise_seed,
                cadc,
                cadc_offset,
                cadc_gain,
                cadc_top,
                store_samples: store.samples() as u32,
                flag_word: (c as u64 * steps * words) as u32,
                zero: 0,
                gather_grid_x: cgx,
                mem_base,
                mem_stride,
                pad: [0; 3],
            };
            let cparams = compact::CompactParams {
                samples: c as u32,
                steps: opts.steps,
                words: words as u32,
                neurons: g.neurons,
                capacity: capacity as u32,
                grid_x: cgx,
                pad: [0; 2],
            };
            ctx.queue
                .write_buffer(&params_buf, 0, bytemuck::bytes_of(&params));
            ctx.queue
                .write_buffer(&cparams_buf, 0, bytemuck::bytes_of(&cparams));
            t.bytes_up += (std::mem::size_of::<SimParams>()
                + std::mem::size_of::<compact::CompactParams>()) as u64;
            enc.clear_buffer(&bits, 0, Some(bits_bytes.next_multiple_of(4)));
            ctx.gather.encode(
                device,
                &mut enc,
                [&params_buf, &g.program, store_buf, &input],
                (cgx, cgy),
            );
            let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("simulation"),
                layout: &ctx.sim_layout,
                entries: &[
                    (binding::PARAMS, &params_buf),
                    (binding::COEFFS, &g.coeffs),
                    (binding::PROGRAM, &g.program),
                    (binding::INPUT, &input),
                    (binding::STATE, &state),
                    (binding::PENDING, &pending),
                    (binding::BITS, &bits),
                    (binding::MEMBRANE, &membrane),
                ]
                .map(|(binding, b)| wgpu::BindGroupEntry {
                    binding,
                    resource: b.as_entire_binding(),
                }),
            });
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("simulate"),
                    timestamp_writes: None,
                });
                pass.set_pipeline(match g.kernel {
                    Kernel::Feedforward => &ctx.feedforward,
                    Kernel::General => &ctx.general,
                });
                pass.set_bind_group(0, &bind, &[]);
                pass.dispatch_workgroups(gx, gy, 1);
            }
            ctx.compact.encode(
                device,
                &mut enc,
                &cparams_buf,
                &bits,
                &offsets,
                &events,
                c as u64,
                true,
            )?;
            enc.copy_buffer_to_buffer(&offsets, 0, &staging, layout.offsets, (c as u64 + 1) * 4);
            enc.copy_buffer_to_buffer(&bits, c as u64 * per.bits, &staging, layout.flag, 4);
            if membrane_len > 0 {
                enc.copy_buffer_to_buffer(&membrane, 0, &staging, layout.membrane, membrane_len);
            }
            enc.copy_buffer_to_buffer(&events, 0, &staging, layout.events, capacity * 4);
            t.bytes_down += layout.size;
            layouts.push((layout, staging, cparams_buf, bits, offsets, events));
        }
        t.upload += t_up.elapsed();
        let t_disp = Instant::now();
        scoped(device, "running the simulation kernels", || {
            ctx.queue.submit([enc.finish()]);
        })?;
        let stagings: Vec<&wgpu::Buffer> = layouts.iter().map(|l| &l.1).collect();
        map_all(device, &stagings, wgpu::MapMode::Read)?;
        t.dispatch += t_disp.elapsed();
        t.chunks += 1;
        // Read offsets, membranes and events; jobs whose events overflowed run `emit` again.
        let t_rb = Instant::now();
        let mut overflow = Vec::new();
        let mut raw: Vec<(Vec<u32>, Vec<u32>)> = Vec::with_capacity(jobs.len());
        for (k, (layout, staging, ..)) in layouts.iter().enumerate() {
            let view = staging
                .get_mapped_range(..layout.size)
                .map_err(|e| Error::Gpu(format!("mapping a result buffer: {e:?}")))?;
            let words: &[u32] = bytemuck::cast_slice(&view);
            let offsets = words[..c + 1].to_vec();
            let flag = words[(layout.flag / 4) as usize];
            if flag > 0 && ctx.is_software() {
                return Err(Error::Gpu(format!(
                    "partition {}: a kernel invocation ran {flag} loop iterations, at the limit \
                     of the software adapter '{}' (65 535), which cuts longer runs short; use \
                     --device cpu, fewer steps, or a real GPU",
                    jobs[k].program.partition, ctx.info.name
                )));
            }
            let m0 = (layout.membrane / 4) as usize;
            let mem: &[f32] =
                bytemuck::cast_slice(&words[m0..m0 + (layout.membrane_len / 4) as usize]);
            match &mut jobs[k].dest {
                Some(d) => {
                    // Rows of this chunk into the job's destination.
                    let n = progs[k].neurons as usize;
                    let rows = mem.len() / n.max(1);
                    let first = s0 * rows / c.max(1);
                    for (r, src) in mem.chunks(n.max(1)).enumerate() {
                        let at = (first + r) * d.stride + d.offset;
                        d.data[at..at + n].copy_from_slice(src);
                    }
                }
                None => outs[k].2.extend_from_slice(mem),
            }
            let total = offsets[c] as u64;
            let e0 = (layout.events / 4) as usize;
            let events = if total <= layout.capacity {
                words[e0..e0 + total as usize].to_vec()
            } else {
                overflow.push(k);
                Vec::new()
            };
            raw.push((offsets, events));
        }
        for (_, staging, ..) in &layouts {
            staging.unmap();
        }
        t.readback += t_rb.elapsed();
        if !overflow.is_empty() {
            self.rerun_emit(ws, &layouts, &overflow, &mut raw, c, t)?;
        }
        // Unpack flat indices into (step, neuron) events and learn the spike rate.
        let t_host = Instant::now();
        for (k, (offsets, flat)) in raw.into_iter().enumerate() {
            let n = progs[k].neurons;
            let total = flat.len();
            let unpack = |(out, inp): (&mut [SpikeEvent], &[u32])| {
                for (e, &w) in out.iter_mut().zip(inp) {
                    *e = SpikeEvent {
                        step: w / n,
                        neuron: w % n,
                    };
                }
            };
            let mut events = vec![SpikeEvent { step: 0, neuron: 0 }; total];
            if total >= crate::spikes::store::PARALLEL_MIN {
                let size = total.div_ceil(rayon::current_num_threads() * 4);
                events
                    .par_chunks_mut(size)
                    .zip(flat.par_chunks(size))
                    .for_each(unpack);
            } else {
                unpack((&mut events, &flat));
            }
            let (all_offsets, all_events, _) = &mut outs[k];
            let base = *all_offsets.last().expect("starts with 0");
            all_offsets.extend(offsets[1..].iter().map(|o| o + base));
            all_events.extend_from_slice(&events);
            let rate = total as f32 / c.max(1) as f32;
            progs[k]
                .spikes_per_sample
                .store(rate.to_bits(), Ordering::Relaxed);
        }
        t.host += t_host.elapsed();
        Ok(())
    }

    /// Grow the event buffers of the `overflow` jobs to their spike counts and run `emit`
    /// again (the spike bits are still on the device), reading the events back.
    fn rerun_emit(
        &self,
        ws: &mut Workspace,
        layouts: &[(
            StagingLayout,
            wgpu::Buffer,
            wgpu::Buffer,
            wgpu::Buffer,
            wgpu::Buffer,
            wgpu::Buffer,
        )],
        overflow: &[usize],
        raw: &mut [(Vec<u32>, Vec<u32>)],
        c: usize,
        t: &mut PhaseTimings,
    ) -> Result<()> {
        let ctx = &*self.ctx;
        let device = &ctx.device;
        let t0 = Instant::now();
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("emit again"),
        });
        let mut reads = Vec::new();
        for &k in overflow {
            let total = raw[k].0[c] as u64;
            t.rereads += 1;
            if total * 4 > ctx.max_binding() {
                return Err(Error::Gpu(format!(
                    "{total} spikes in one chunk exceed one GPU buffer ({} MiB); use a smaller \
                     batch",
                    ctx.max_binding() >> 20
                )));
            }
            let (_, _, cparams_buf, bits, offsets, _) = &layouts[k];
            let slot = &mut ws.slots[k];
            let rw = wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST;
            let events = slot
                .events
                .ensure(device, "events", total * 4, rw, &mut t.buffers_created)
                .clone();
            let staging = slot
                .staging
                .ensure(
                    device,
                    "readback",
                    total * 4,
                    wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    &mut t.buffers_created,
                )
                .clone();
            // Same parameters with room for every event.
            ctx.queue.write_buffer(
                cparams_buf,
                std::mem::offset_of!(compact::CompactParams, capacity) as u64,
                bytemuck::bytes_of(&(total as u32)),
            );
            ctx.compact.encode(
                device,
                &mut enc,
                cparams_buf,
                bits,
                offsets,
                &events,
                c as u64,
                false,
            )?;
            enc.copy_buffer_to_buffer(&events, 0, &staging, 0, (total * 4).max(4));
            t.bytes_down += total * 4;
            reads.push((k, staging, total));
        }
        t.upload += t0.elapsed();
        let t1 = Instant::now();
        ctx.queue.submit([enc.finish()]);
        let stagings: Vec<&wgpu::Buffer> = reads.iter().map(|r| &r.1).collect();
        map_all(device, &stagings, wgpu::MapMode::Read)?;
        t.dispatch += t1.elapsed();
        let t2 = Instant::now();
        for (k, staging, total) in reads {
            let view = staging
                .get_mapped_range(..(total * 4).max(4).next_multiple_of(4))
                .map_err(|e| Error::Gpu(format!("mapping a result buffer: {e:?}")))?;
            raw[k].1 = bytemuck::cast_slice::<u8, u32>(&view)[..total as usize].to_vec();
            drop(view);
            staging.unmap();
        }
        t.readback += t2.elapsed();
        Ok(())
    }
}

/// Words of a population's region of the device store: [neurons, offsets (samples + 1),
/// events].
fn region_len(tr: &SpikeTrains) -> usize {
    2 + tr.samples() + tr.len()
}

/// Write populations' regions into the mapped `upload` buffer at their word offsets:
/// [neurons, offsets, events], each event as the flat index step·neurons + neuron, converted
/// in a kept host buffer and copied in one piece (measured on the software adapter: faster
/// than writing the mapped memory element by element, and than waking the thread pool after
/// a device wait).
fn write_regions(
    upload: &wgpu::Buffer,
    regions: &[(u64, &SpikeTrains)],
    scratch: &mut Vec<u32>,
) -> Result<()> {
    for &(at, tr) in regions {
        let n = tr.neurons as u32;
        scratch.clear();
        scratch.push(n);
        scratch.extend_from_slice(&tr.offsets);
        scratch.extend(tr.events.iter().map(|e| e.step * n + e.neuron));
        let len = scratch.len() as u64;
        let mut view = upload
            .get_mapped_range_mut(at * 4..(at + len) * 4)
            .map_err(|e| Error::Gpu(format!("mapping the upload buffer: {e:?}")))?;
        view.copy_from_slice(bytemuck::cast_slice(scratch));
    }
    Ok(())
}

/// Map every buffer (for reading or writing) and wait once for all of them.
fn map_all(device: &wgpu::Device, bufs: &[&wgpu::Buffer], mode: wgpu::MapMode) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    for b in bufs {
        let tx = tx.clone();
        b.map_async(mode, .., move |r| {
            let _ = tx.send(r);
        });
    }
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Gpu(format!("waiting for the kernels: {e}")))?;
    for _ in bufs {
        rx.recv()
            .map_err(|e| Error::Gpu(format!("readback: {e}")))?
            .map_err(|e| Error::Gpu(format!("mapping a result buffer: {e}")))?;
    }
    Ok(())
}

/// Run `f` with the device's validation and out-of-memory errors captured and returned as
/// [`Error::Gpu`] (naming `what`) instead of wgpu's default panic.
fn scoped<T>(device: &wgpu::Device, what: &str, f: impl FnOnce() -> T) -> Result<T> {
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let val = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let r = f();
    let v = pollster::block_on(val.pop());
    let o = pollster::block_on(oom.pop());
    match v.or(o) {
        Some(e) => Err(Error::Gpu(format!("{what}: {e}"))),
        None => Ok(r),
    }
}

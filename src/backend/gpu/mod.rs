//! The GPU backend: a long-lived wgpu context (adapter, device, queue, pipelines, the shared
//! bind group layout of the simulation kernels) and [`GpuBackend`], which prepares compiled
//! partitions into device buffers once and runs whole rounds of them in one submission.
//!
//! One module per shader file: [`feedforward`] (`shaders/feedforward.wgsl`), [`lif`]
//! (`shaders/lif.wgsl`), [`gather`] (`shaders/gather.wgsl`), [`compact`]
//! (`shaders/compact.wgsl`); `shaders/neuron.wgsl` is the model both simulation kernels share
//! and `shaders/params.wgsl` their parameters, whose layouts [`layout`] owns ([`SimParams`],
//! the binding table [`binding`]; `mirror` lists them for the layout test). This module is the
//! context; `program` holds a prepared partition's buffers, `forward` runs a round (staging,
//! chunks, read-back) and `training` the device-resident training step.
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
mod forward;
pub mod gather;
pub mod grad;
pub mod layout;
pub mod lif;
pub mod loss;
mod mirror;
pub mod optimiser;
mod program;
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
use forward::*;
pub use layout::*;
pub use mirror::mirrored_layouts;
use program::*;
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

/// Threads per workgroup of every kernel but feedforward.wgsl (`feedforward::threads`).
pub const WG: u32 = 64;

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
    /// What the texture bindings hold for kernels that do not read them (one row).
    no_texture: wgpu::TextureView,
    /// feedforward.wgsl, one per way of holding the weights ([`feedforward::pipelines`]).
    feedforward: [wgpu::ComputePipeline; feedforward::WIDTHS.len()],
    /// Threads per workgroup of feedforward.wgsl ([`feedforward::threads`]).
    ff_threads: u32,
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

/// A texture of unsigned words at `binding` (read with `textureLoad`).
fn texture_entry(binding: u32) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Texture {
            sample_type: wgpu::TextureSampleType::Uint,
            view_dimension: wgpu::TextureViewDimension::D2,
            multisampled: false,
        },
        count: None,
    }
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
        if limits.max_texture_dimension_2d < feedforward::TEXEL_ROW {
            return Err(Error::Gpu(format!(
                "adapter '{}' allows 2D textures {} texels wide, the feed-forward kernel \
                 reads textures {} wide",
                info.name,
                limits.max_texture_dimension_2d,
                feedforward::TEXEL_ROW
            )));
        }
        if limits.max_storage_buffers_per_shader_stage < 7 {
            return Err(Error::Gpu(format!(
                "adapter '{}' allows {} storage buffers per shader stage, the kernels need 7",
                info.name, limits.max_storage_buffers_per_shader_stage
            )));
        }
        let ff_threads = feedforward::threads(
            limits
                .max_compute_invocations_per_workgroup
                .min(limits.max_compute_workgroup_size_x),
        );
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
                            texture_entry(binding::WEIGHTS),
                            texture_entry(binding::INPUT_TEXTURE),
                        ],
                    });
                let ff = feedforward::pipelines(&device, &sim_layout, ff_threads);
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
        let (_, no_texture) = feedforward::texture(&device, "unused", 1);
        Ok(GpuContext {
            info,
            limits,
            device,
            queue,
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            sim_layout,
            no_texture,
            feedforward,
            ff_threads,
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
    pub fn is_software(&self) -> bool {
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

/// Runs partitions on a GPU through wgpu.
pub struct GpuBackend {
    ctx: Arc<GpuContext>,
    timings: Mutex<PhaseTimings>,
    ws: Mutex<Workspace>,
    /// Upper bound on one chunk's samples (tests use it to force chunking).
    pub max_chunk: usize,
    /// Upper bound on the bytes of a dense weight matrix of 32-bit words, and of the packed
    /// weights (tests lower it to force packing).
    pub max_dense: u64,
}

impl GpuBackend {
    /// How the feed-forward kernel would hold `p`'s weights: `Some(32)`, 32-bit words in the
    /// program (one stage and one delay, the dense matrix within a buffer and 1 GiB);
    /// `Some(16)` or `Some(8)`, packed in a texture (a program too large for that, such as a
    /// fused wave; `feedforward::Packed`); `None`: the general kernel runs it. Sizes count
    /// the blocked layout's padding ([`feedforward::blocked_words`]: a channel's weights take
    /// whole blocks of 32, 64 or 128 neurons at 32, 16 or 8 bits), so a narrow program never
    /// packs: its packed weights would take as many words as the 32-bit ones.
    pub fn weight_bits(&self, p: &PartitionProgram) -> Option<u32> {
        if !p.is_feedforward() {
            return None;
        }
        if self.fits_words(p) {
            return Some(32);
        }
        feedforward::Packed::fits(p, self.packed_window())
    }

    /// Whether feed-forward `p`'s dense weights fit as 32-bit words ([`GpuBackend::weight_bits`]).
    fn fits_words(&self, p: &PartitionProgram) -> bool {
        let limit = self.ctx.max_binding().min(self.max_dense);
        let dense_bytes =
            4 * feedforward::blocked_words(p.channels.len() as u64, p.neuron_count() as u64, 32);
        dense_bytes <= limit.min(1 << 30)
    }

    /// Words of packed weights, at most: what the texture's rows hold on this device
    /// (the device's largest 2D texture, [`feedforward::TEXEL_ROW`] texels of 4 words a row).
    fn packed_window(&self) -> u64 {
        let rows = self.ctx.limits.max_texture_dimension_2d as u64;
        (rows * feedforward::TEXEL_ROW as u64 * 4).min(self.max_dense / 4)
    }

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
            max_dense: u64::MAX,
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
        // The kernel `weight_bits` says, the packed weights' layout found once (two passes
        // over the synapses) rather than by `weight_bits` and again by `Packed::of`.
        let words = p.is_feedforward() && self.fits_words(p);
        let packed = if p.is_feedforward() && !words {
            feedforward::Packed::of(p, self.packed_window())
        } else {
            None
        };
        let kernel = if words || packed.is_some() {
            Kernel::Feedforward
        } else {
            Kernel::General
        };
        let bits = p.cadc.map(|_| cadc_bits(p));
        let pw = program_words(p, kernel, packed.as_ref().map(|w| &w.shifts[..]), bits);
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
        let (coeffs, program, packed) =
            scoped(&ctx.device, "creating a partition's buffers", || {
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
                let packed = packed.map(|w| {
                    let (texture, view) =
                        feedforward::weights_texture(&ctx.device, &ctx.queue, &w.words);
                    PackedWeights {
                        bits: w.bits,
                        words: w.words.len(),
                        texture,
                        view,
                    }
                });
                (
                    make("coeffs", bytemuck::cast_slice(&p.coeffs)),
                    make("program", bytemuck::cast_slice(&pw.words)),
                    packed,
                )
            })?;
        t.buffers_created += if packed.is_some() { 3 } else { 2 };
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
                packed,
                spikes_per_sample: AtomicU32::new((p.neuron_count() as f32 / 4.0).to_bits()),
            },
        ))
    }

    /// A wave runs as one program where that program runs on the feed-forward kernel (one
    /// dispatch, threads per sample and neurons), not where it would be one workgroup per
    /// sample walking every synapse of the wave.
    fn fuses(&self, whole: &PartitionProgram) -> bool {
        self.weight_bits(whole).is_some()
    }

    fn update(&self, resident: &mut Resident, p: &PartitionProgram) -> Result<()> {
        // Updates of several residents run at once: their upload times add up to the host's
        // time spent, which may exceed the wall time.
        let g = resident.get_mut::<GpuProgram>()?;
        let t0 = Instant::now();
        let q = &self.ctx.queue;
        if let Some(pw) = &g.packed {
            let w = feedforward::Packed::of(p, self.packed_window())
                .filter(|w| w.bits == pw.bits && w.words.len() == pw.words);
            let Some(w) = w else {
                // The new weights need another width (or no longer pack): prepared anew, as
                // they now fit.
                *resident = self.prepare(p)?;
                return Ok(());
            };
            q.write_buffer(&g.coeffs, 0, bytemuck::cast_slice(&p.coeffs));
            q.write_buffer(&g.program, 0, bytemuck::cast_slice(&w.shifts));
            feedforward::write_texture(q, &pw.texture, &w.words);
            self.record_timings(&PhaseTimings {
                upload: t0.elapsed(),
                bytes_up: ((w.shifts.len() + w.words.len()) * 4
                    + std::mem::size_of_val(&p.coeffs[..])) as u64,
                ..Default::default()
            });
            return Ok(());
        }
        let words = match g.kernel {
            Kernel::Feedforward => feedforward::dense_weights(p),
            Kernel::General => lif::program_words(p).0,
        };
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
        if let Some(j) = jobs.iter().find(|j| j.membranes == Membranes::Codes) {
            return Err(Error::Gpu(format!(
                "partition {} asked for its membranes as CADC codes; this backend records \
                 values (it does not say `records_codes`)",
                j.program.partition
            )));
        }
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

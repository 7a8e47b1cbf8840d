//! The GPU backend: a long-lived wgpu context (adapter, device, queue, cached pipelines) and
//! [`GpuBackend`], which runs a compiled partition for a whole batch with the kernels under
//! `shaders/`. Batches larger than the adapter's buffer or dispatch limits are split into
//! chunks. Nothing here decides what to run; the executor above does.

mod lif;

use crate::backend::{Backend, PartitionOutput, PartitionProgram, PhaseTimings, RunOptions};
use crate::error::{Error, Result};
use crate::spikes::SpikeTrains;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use lif::{FEEDFORWARD_WGSL, LIF_WGSL};

/// Every WGSL program the crate compiles, with the `shaders/` files it is made of.
pub const SHADERS: &[(&[&str], &str)] = &[
    (&["neuron.wgsl", "lif.wgsl"], LIF_WGSL),
    (&["neuron.wgsl", "feedforward.wgsl"], FEEDFORWARD_WGSL),
];

/// Device, queue and pipelines, created once and reused for every partition and batch.
pub struct GpuContext {
    /// The adapter's description.
    pub info: wgpu::AdapterInfo,
    /// Limits granted to the device.
    pub limits: wgpu::Limits,
    device: wgpu::Device,
    queue: wgpu::Queue,
    lif: lif::LifKernel,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuContext({})", self.describe())
    }
}

impl GpuContext {
    /// Pick an adapter (honouring `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and
    /// `WGPU_POWER_PREF`), create the device with the adapter's own limits and compile the
    /// kernels.
    pub fn new() -> Result<Self> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pollster::block_on(select_adapter(&instance))?;
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
        let lif = scoped(
            &device,
            "compiling shaders/lif.wgsl and shaders/feedforward.wgsl",
            || lif::LifKernel::new(&device),
        )?;
        Ok(GpuContext {
            info,
            limits,
            device,
            queue,
            lif,
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
}

async fn select_adapter(instance: &wgpu::Instance) -> Result<wgpu::Adapter> {
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
    ctx: std::sync::Arc<GpuContext>,
    timings: Mutex<PhaseTimings>,
    /// Upper bound on one chunk's samples (tests use it to force chunking).
    pub max_chunk: usize,
}

impl GpuBackend {
    /// A backend on a fresh context (see [`GpuContext::new`]).
    pub fn new() -> Result<Self> {
        Ok(Self::with_context(std::sync::Arc::new(GpuContext::new()?)))
    }

    /// A backend sharing an existing context.
    pub fn with_context(ctx: std::sync::Arc<GpuContext>) -> Self {
        GpuBackend {
            ctx,
            timings: Mutex::new(PhaseTimings::default()),
            max_chunk: usize::MAX,
        }
    }

    /// The context.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }
}

impl Backend for GpuBackend {
    fn name(&self) -> String {
        format!("gpu: {}", self.ctx.describe())
    }

    fn run(
        &self,
        program: &PartitionProgram,
        input: &SpikeTrains,
        opts: &RunOptions,
    ) -> Result<PartitionOutput> {
        crate::backend::check_input(program, input)?;
        let mut t = PhaseTimings::default();
        let out = lif::run(&self.ctx, program, input, opts, self.max_chunk, &mut t)?;
        let mut all = self.timings.lock().unwrap();
        all.upload += t.upload;
        all.dispatch += t.dispatch;
        all.readback += t.readback;
        all.host += t.host;
        all.chunks += t.chunks;
        all.reruns += t.reruns;
        Ok(out)
    }

    fn take_timings(&self) -> Option<PhaseTimings> {
        Some(std::mem::take(&mut *self.timings.lock().unwrap()))
    }
}

/// Which backend to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// The host's cores.
    Cpu,
    /// A GPU adapter; an error if there is none.
    Gpu,
    /// A GPU adapter if there is one, else the CPU (with one line saying why).
    Auto,
}

/// Open the backend for `choice`, printing which adapter is used to stderr.
pub fn open_backend(choice: DeviceChoice) -> Result<Box<dyn Backend>> {
    match choice {
        DeviceChoice::Cpu => Ok(Box::new(crate::backend::CpuBackend)),
        DeviceChoice::Gpu => {
            let g = GpuBackend::new()?;
            eprintln!("using {}", g.name());
            Ok(Box::new(g))
        }
        DeviceChoice::Auto => match GpuBackend::new() {
            Ok(g) => {
                eprintln!("using {}", g.name());
                Ok(Box::new(g))
            }
            Err(e) => {
                eprintln!("no usable GPU ({e}); running on the CPU");
                Ok(Box::new(crate::backend::CpuBackend))
            }
        },
    }
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

/// Time a closure into `slot`.
fn timed<T>(slot: &mut Duration, f: impl FnOnce() -> T) -> T {
    let t0 = Instant::now();
    let r = f();
    *slot += t0.elapsed();
    r
}

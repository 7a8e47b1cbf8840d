//! Host side of `shaders/lif.wgsl` (any partition: one workgroup per sample, stages and
//! internal synapses) and `shaders/feedforward.wgsl` (feed-forward partitions: one thread per
//! sample and neuron, no barriers): their shared bind group layout (binding numbers as in the
//! shaders), their pipelines, and [`run`], which picks the kernel, uploads a partition and a
//! batch chunk by chunk, dispatches, and reads back compact spike events (and membranes when
//! asked).

use super::{scoped, timed, GpuContext};
use crate::backend::{PartitionOutput, PartitionProgram, PhaseTimings, RunOptions};
use crate::error::{Error, Result};
use crate::spikes::{SpikeEvent, SpikeTrains};
use wgpu::util::DeviceExt;

/// The general kernel's source (`shaders/neuron.wgsl` + `shaders/lif.wgsl`).
pub const LIF_WGSL: &str = concat!(
    include_str!("../../shaders/neuron.wgsl"),
    include_str!("../../shaders/lif.wgsl")
);
/// The feed-forward kernel's source (`shaders/neuron.wgsl` + `shaders/feedforward.wgsl`).
pub const FEEDFORWARD_WGSL: &str = concat!(
    include_str!("../../shaders/neuron.wgsl"),
    include_str!("../../shaders/feedforward.wgsl")
);

/// Threads per workgroup (one workgroup integrates one sample).
const WG: u32 = 64;
/// Most workgroups along one dispatch dimension that every adapter allows.
const GRID_MAX: u64 = 65_535;

/// Mirrors the shader's `Params`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    neurons: u32,
    channels: u32,
    steps: u32,
    slots: u32,
    stages: u32,
    samples: u32,
    grid_x: u32,
    out_capacity: u32,
    record_membrane: u32,
    syn_off_base: u32,
    syn_base: u32,
    events_base: u32,
    blocks: u32,
    delay: u32,
    noise_seed: u32,
    sample_base: u32,
    /// Always 0: keeps the shader compiler from fusing multiply and add (see neuron.wgsl).
    zero: u32,
    pad: [u32; 3],
}

pub(super) struct LifKernel {
    layout: wgpu::BindGroupLayout,
    general: wgpu::ComputePipeline,
    feedforward: wgpu::ComputePipeline,
}

fn storage(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
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

impl LifKernel {
    pub(super) fn new(device: &wgpu::Device) -> Self {
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("lif"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                },
                storage(1, true),  // coeffs
                storage(2, true),  // program
                storage(3, true),  // input
                storage(4, false), // state
                storage(5, false), // pending
                storage(6, false), // output
                storage(7, false), // membrane
            ],
        });
        let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("lif"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = |label: &str, src: &'static str| {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: Some(&pl),
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &[("WG", WG as f64)],
                    zero_initialize_workgroup_memory: true,
                },
                cache: None,
            })
        };
        LifKernel {
            general: pipeline("lif.wgsl", LIF_WGSL),
            feedforward: pipeline("feedforward.wgsl", FEEDFORWARD_WGSL),
            layout,
        }
    }
}

/// For a feed-forward partition (one stage, no synapses from its own neurons, one delay for
/// every input), the dense `[channel][neuron]` fixed-point weights and that delay.
fn dense_weights(p: &PartitionProgram, limit: u64) -> Option<(Vec<i32>, u32)> {
    let nch = p.channels.len();
    let n = p.neuron_count();
    if p.stage_bounds.len() != 2
        || p.synapse_offsets[nch] as usize != p.synapses.len()
        || (nch as u64 * n as u64 * 4) > limit.min(1 << 30)
    {
        return None;
    }
    let delay = p.synapses.first().map_or(0, |s| s.delay);
    if p.synapses.iter().any(|s| s.delay != delay) {
        return None;
    }
    let mut w = vec![0i32; nch * n];
    for ch in 0..nch {
        for s in p.synapses_of(ch) {
            w[ch * n + s.target as usize] += s.weight;
        }
    }
    Some((w, delay))
}

/// The program as one `u32` array: stage bounds | synapse offsets | synapses.
fn program_words(p: &PartitionProgram) -> (Vec<u32>, u32, u32) {
    let mut w = p.stage_bounds.clone();
    let syn_off_base = w.len() as u32;
    w.extend_from_slice(&p.synapse_offsets);
    let syn_base = w.len() as u32;
    w.extend_from_slice(bytemuck::cast_slice(&p.synapses));
    (w, syn_off_base, syn_base)
}

/// Pad to at least 16 bytes: bindings may not be empty.
fn padded(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if bytes.len() >= 16 {
        bytes.into()
    } else {
        let mut v = bytes.to_vec();
        v.resize(16, 0);
        v.into()
    }
}

/// Bytes one sample needs in each per-sample buffer.
struct PerSample {
    state: u64,
    pending: u64,
    output: u64,
    membrane: u64,
}

pub(super) fn run(
    ctx: &GpuContext,
    program: &PartitionProgram,
    input: &SpikeTrains,
    opts: &RunOptions,
    max_chunk: usize,
    t: &mut PhaseTimings,
) -> Result<PartitionOutput> {
    let n = program.neuron_count() as u64;
    let steps = opts.steps as u64;
    let samples = input.samples();
    let limit = ctx.max_binding();
    let dense = dense_weights(program, limit);
    let (words, syn_off_base, syn_base) = match &dense {
        Some((w, _)) => (bytemuck::cast_slice(w).to_vec(), 0, 0),
        None => program_words(program),
    };
    if (words.len() as u64) * 4 > limit {
        return Err(Error::Gpu(format!(
            "partition {} has {} synapses ({} MiB), more than one GPU buffer may hold ({} MiB)",
            program.partition,
            program.synapses.len(),
            (words.len() * 4) >> 20,
            limit >> 20
        )));
    }
    let device = &ctx.device;
    let (coeff_buf, prog_buf) = timed(&mut t.upload, || {
        let c = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("coeffs"),
            contents: &padded(bytemuck::cast_slice(&program.coeffs)),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let p = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("program"),
            contents: &padded(bytemuck::cast_slice(&words)),
            usage: wgpu::BufferUsages::STORAGE,
        });
        (c, p)
    });
    let blocks = if dense.is_some() {
        n.div_ceil(WG as u64).max(1)
    } else {
        1
    };
    let mut capacity = (4 * n).clamp(16, (n * steps).max(1));
    let mut lists: Vec<Vec<SpikeEvent>> = Vec::with_capacity(samples);
    let mut membrane = opts
        .membrane
        .then(|| Vec::with_capacity(samples * (steps * n) as usize));
    let mut s0 = 0;
    while s0 < samples {
        let per = PerSample {
            state: if dense.is_some() { 0 } else { n * 12 },
            pending: if dense.is_some() {
                0
            } else {
                (program.max_delay as u64 + 1) * n * 4
            },
            output: 4 + capacity * 8,
            membrane: if opts.membrane { steps * n * 4 } else { 0 },
        };
        let fit = [per.state, per.pending, per.output, per.membrane]
            .iter()
            .filter(|&&b| b > 0)
            .map(|&b| limit / b)
            .min()
            .unwrap_or(u64::MAX)
            .min(GRID_MAX * GRID_MAX / blocks)
            .min(max_chunk as u64)
            .min((samples - s0) as u64) as usize;
        if fit == 0 {
            return Err(Error::Gpu(format!(
                "one sample of partition {} needs more than one GPU buffer may hold ({} MiB)",
                program.partition,
                limit >> 20
            )));
        }
        // Shrink until the chunk's input events fit one buffer too.
        let mut chunk = fit;
        while chunk > 1
            && (chunk as u64 + 1 + 2 * (input.offsets[s0 + chunk] - input.offsets[s0]) as u64) * 4
                > limit
        {
            chunk /= 2;
        }
        match run_chunk(
            ctx,
            program,
            &coeff_buf,
            &prog_buf,
            (syn_off_base, syn_base),
            dense.as_ref().map(|d| d.1),
            &input.slice(s0..s0 + chunk),
            opts.sample_base + s0 as u32,
            opts,
            capacity,
            &per,
            t,
        )? {
            ChunkResult::Done(ev, mem) => {
                lists.extend(ev);
                if let (Some(all), Some(m)) = (membrane.as_mut(), mem) {
                    all.extend_from_slice(&m);
                }
                s0 += chunk;
            }
            ChunkResult::Overflow(needed) => {
                t.reruns += 1;
                capacity = needed as u64;
            }
        }
    }
    let spikes = timed(&mut t.host, || {
        SpikeTrains::from_samples(program.neuron_count(), opts.steps, lists)
    });
    Ok(PartitionOutput { spikes, membrane })
}

enum ChunkResult {
    Done(Vec<Vec<SpikeEvent>>, Option<Vec<f32>>),
    Overflow(u32),
}

#[allow(clippy::too_many_arguments)]
fn run_chunk(
    ctx: &GpuContext,
    program: &PartitionProgram,
    coeff_buf: &wgpu::Buffer,
    prog_buf: &wgpu::Buffer,
    (syn_off_base, syn_base): (u32, u32),
    feedforward_delay: Option<u32>,
    input: &SpikeTrains,
    sample_base: u32,
    opts: &RunOptions,
    capacity: u64,
    per: &PerSample,
    t: &mut PhaseTimings,
) -> Result<ChunkResult> {
    let device = &ctx.device;
    let samples = input.samples() as u64;
    // General kernel: one workgroup per sample; feed-forward: one per WG neurons of a sample.
    let blocks = match feedforward_delay {
        Some(_) => (program.neuron_count() as u64).div_ceil(WG as u64).max(1),
        None => 1,
    };
    let groups = samples * blocks;
    let grid_x = groups.min(GRID_MAX);
    let grid_y = groups.div_ceil(grid_x);
    if grid_y > GRID_MAX {
        return Err(Error::Gpu(format!(
            "{groups} workgroups exceed a 2-D dispatch"
        )));
    }
    let params = Params {
        neurons: program.neuron_count() as u32,
        channels: program.channels.len() as u32,
        steps: opts.steps,
        slots: program.max_delay + 1,
        stages: (program.stage_bounds.len() - 1) as u32,
        samples: samples as u32,
        grid_x: grid_x as u32,
        out_capacity: capacity as u32,
        record_membrane: opts.membrane as u32,
        syn_off_base,
        syn_base,
        events_base: samples as u32 + 1,
        blocks: blocks as u32,
        delay: feedforward_delay.unwrap_or(0),
        noise_seed: opts.noise_seed,
        sample_base,
        zero: 0,
        pad: [0; 3],
    };
    let usage_rw = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
    let make = |label: &str, size: u64, usage: wgpu::BufferUsages| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size.max(16).next_multiple_of(4),
            usage,
            mapped_at_creation: false,
        })
    };
    // Spike counts and events, then one word: the most loop iterations of an invocation, when
    // it came near the software adapter's limit.
    let out_bytes = samples * per.output + 4;
    let mem_bytes = samples * per.membrane;
    let (bind, out_buf, mem_buf, out_read, mem_read) = timed(&mut t.upload, || {
        scoped(device, "allocating GPU buffers", || {
            let mut words: Vec<u32> = Vec::with_capacity(input.offsets.len() + 2 * input.len());
            words.extend_from_slice(&input.offsets);
            words.extend_from_slice(bytemuck::cast_slice(&input.events));
            let in_buf = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("input"),
                contents: &padded(bytemuck::cast_slice(&words)),
                usage: wgpu::BufferUsages::STORAGE,
            });
            let par_buf = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck::bytes_of(&params),
                usage: wgpu::BufferUsages::UNIFORM,
            });
            let state = make("state", samples * per.state, wgpu::BufferUsages::STORAGE);
            let pending = make(
                "pending",
                samples * per.pending,
                wgpu::BufferUsages::STORAGE,
            );
            let out_buf = make("output", out_bytes, usage_rw);
            let mem_buf = make("membrane", mem_bytes, usage_rw);
            let read = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
            let out_read = make("output readback", out_bytes, read);
            let mem_read = opts
                .membrane
                .then(|| make("membrane readback", mem_bytes, read));
            let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("lif"),
                layout: &ctx.lif.layout,
                entries: &[
                    (0, &par_buf),
                    (1, coeff_buf),
                    (2, prog_buf),
                    (3, &in_buf),
                    (4, &state),
                    (5, &pending),
                    (6, &out_buf),
                    (7, &mem_buf),
                ]
                .map(|(binding, b)| wgpu::BindGroupEntry {
                    binding,
                    resource: b.as_entire_binding(),
                }),
            });
            (bind, out_buf, mem_buf, out_read, mem_read)
        })
    })?;
    timed(&mut t.dispatch, || {
        scoped(device, "running shaders/lif.wgsl", || {
            let mut enc = device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("lif") });
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("lif"),
                    timestamp_writes: None,
                });
                pass.set_pipeline(match feedforward_delay {
                    Some(_) => &ctx.lif.feedforward,
                    None => &ctx.lif.general,
                });
                pass.set_bind_group(0, &bind, &[]);
                pass.dispatch_workgroups(grid_x as u32, grid_y as u32, 1);
            }
            enc.copy_buffer_to_buffer(&out_buf, 0, &out_read, 0, out_buf.size());
            if let Some(mr) = &mem_read {
                enc.copy_buffer_to_buffer(&mem_buf, 0, mr, 0, mem_buf.size());
            }
            ctx.queue.submit([enc.finish()]);
        })?;
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the kernel: {e}")))
    })?;
    t.chunks += 1;
    let words: Vec<u32> = timed(&mut t.readback, || read_back(device, &out_read, out_bytes))?;
    let iterations = words[(samples * (1 + 2 * capacity)) as usize];
    if iterations > 0 && ctx.info.device_type == wgpu::DeviceType::Cpu {
        return Err(Error::Gpu(format!(
            "partition {}: a kernel invocation ran {iterations} loop iterations, at the limit of \
             the software adapter '{}' (65 535), which cuts longer runs short; use --device cpu, \
             fewer steps, or a real GPU",
            program.partition, ctx.info.name
        )));
    }
    let counts = &words[..samples as usize];
    let most = counts.iter().copied().max().unwrap_or(0);
    if most as u64 > capacity {
        return Ok(ChunkResult::Overflow(most));
    }
    let lists = timed(&mut t.host, || {
        (0..samples as usize)
            .map(|s| {
                let base = samples as usize + 2 * s * capacity as usize;
                (0..counts[s] as usize)
                    .map(|k| SpikeEvent {
                        step: words[base + 2 * k],
                        neuron: words[base + 2 * k + 1],
                    })
                    .collect()
            })
            .collect()
    });
    let mem = match &mem_read {
        Some(mr) => Some(timed(&mut t.readback, || {
            read_back(device, mr, mem_bytes).map(|w| bytemuck::cast_slice::<u32, f32>(&w).to_vec())
        })?),
        None => None,
    };
    Ok(ChunkResult::Done(lists, mem))
}

fn read_back(device: &wgpu::Device, buf: &wgpu::Buffer, bytes: u64) -> Result<Vec<u32>> {
    let slice = buf.slice(..);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Gpu(format!("waiting for readback: {e}")))?;
    rx.recv()
        .map_err(|e| Error::Gpu(format!("readback: {e}")))?
        .map_err(|e| Error::Gpu(format!("mapping a result buffer: {e}")))?;
    let view = slice
        .get_mapped_range()
        .map_err(|e| Error::Gpu(format!("mapping a result buffer: {e:?}")))?;
    let words = bytemuck::cast_slice::<u8, u32>(&view[..bytes as usize]).to_vec();
    drop(view);
    buf.unmap();
    Ok(words)
}

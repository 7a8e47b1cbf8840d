//! The forward run of a round on the GPU: the device copy of the spike store, per-partition
//! slots, staging of results, chunks within the adapter's limits.

use super::*;

/// A buffer that is kept and grown, never shrunk.
#[derive(Default)]
pub(crate) struct Grown {
    pub(crate) buf: Option<wgpu::Buffer>,
}

impl Grown {
    /// The buffer, at least `size` bytes (created or replaced when smaller).
    pub(crate) fn ensure(
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

/// A texture of [`feedforward::TEXEL_ROW`] texels (four words each) a row, replaced by a
/// taller one when it has too few rows.
#[derive(Default)]
pub(crate) struct GrownTexture {
    pub(crate) tex: Option<(wgpu::Texture, wgpu::TextureView)>,
}

impl GrownTexture {
    /// The texture, with room for at least `words` words (created or replaced when smaller),
    /// of at most `most` rows (the device's largest 2D texture; an error if they do not fit).
    pub(crate) fn ensure(
        &mut self,
        device: &wgpu::Device,
        words: u64,
        most: u32,
        created: &mut usize,
    ) -> Result<&(wgpu::Texture, wgpu::TextureView)> {
        let rows = feedforward::texture_rows(words);
        if rows > most as u64 {
            return Err(Error::Gpu(format!(
                "a chunk's input of {words} words needs a texture of {rows} rows of {} texels, \
                 the device allows {most} rows (use a smaller batch)",
                feedforward::TEXEL_ROW
            )));
        }
        let rows = rows as u32;
        if self.tex.as_ref().is_none_or(|(t, _)| t.height() < rows) {
            // Room to grow, as [`Grown`] has, within the device's limit.
            let rows = (rows + rows / 4).min(most);
            self.tex = Some(feedforward::texture(device, "input events", rows));
            *created += 1;
        }
        Ok(self.tex.as_ref().expect("just ensured"))
    }
}

/// Buffers of the k-th partition of a round, reused by every round and batch.
#[derive(Default)]
pub(crate) struct Slot {
    pub(crate) params: Grown,
    pub(crate) input: Grown,
    /// `input` as the feed-forward kernel reads it ([`feedforward::copy_to_texture`]).
    pub(crate) input_texture: GrownTexture,
    pub(crate) compact_params: Grown,
    pub(crate) state: Grown,
    pub(crate) pending: Grown,
    pub(crate) bits: Grown,
    pub(crate) membrane: Grown,
    pub(crate) offsets: Grown,
    pub(crate) events: Grown,
    pub(crate) staging: Grown,
}

/// The device copy of one batch's spike store, and the slots.
#[derive(Default)]
pub(crate) struct Workspace {
    /// Which store the device copy belongs to.
    pub(crate) store_id: u64,
    pub(crate) store: Grown,
    /// Mapped and filled on the host, then copied into `store`.
    pub(crate) upload: Grown,
    /// Host buffer a region is converted in before it is copied into `upload`.
    pub(crate) scratch: Vec<u32>,
    /// Words of the store buffer in use.
    pub(crate) used: u64,
    /// Where kept traces go.
    pub(crate) kept: KeptTraces,
    /// Population and version of every region written for this store.
    pub(crate) staged: Vec<(usize, u64)>,
    pub(crate) slots: Vec<Slot>,
}

/// Where traces kept on the device for training go ([`Membranes::Keep`]): one buffer, a
/// `[sample][step][neuron]` region per population, set up by the device training
/// (`training.rs`) before each forward pass.
#[derive(Default)]
pub(crate) struct KeptTraces {
    pub(crate) buf: Option<wgpu::Buffer>,
    /// Per population: the first word of its region, if it has one.
    pub(crate) regions: Vec<Option<u64>>,
    /// Per population: words from one step's row of its region to the next (its neurons, or
    /// those of the program it shares with other populations).
    pub(crate) strides: Vec<usize>,
}

/// Bytes one sample of a job needs in each per-sample buffer.
pub(crate) struct PerSample {
    pub(crate) state: u64,
    pub(crate) pending: u64,
    pub(crate) bits: u64,
    pub(crate) membrane: u64,
}

impl PerSample {
    pub(crate) fn of(g: &GpuProgram, steps: u64, membranes: Membranes) -> Self {
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
                Membranes::Codes => unreachable!("refused by `run_round`: no `records_codes`"),
            },
        }
    }

    pub(crate) fn largest(&self) -> u64 {
        self.state
            .max(self.pending)
            .max(self.bits)
            .max(self.membrane)
    }
}

/// What one job's chunk left in its staging buffer (byte offsets).
pub(crate) struct StagingLayout {
    pub(crate) offsets: u64,
    pub(crate) flag: u64,
    pub(crate) membrane: u64,
    pub(crate) membrane_len: u64,
    pub(crate) events: u64,
    pub(crate) capacity: u64,
    pub(crate) size: u64,
    /// Compaction runs per sample ([`compact::segments`]): the staged offsets are per run.
    pub(crate) segments: u32,
}

impl GpuBackend {
    /// Write the spikes of population `pop` into the device copy of the store, unless this
    /// store's current version is already there.
    pub(crate) fn stage(
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

    pub(crate) fn run_round_timed(
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
                // Compaction runs a step at a time at least (`compact::segments`).
                let words = (g.neurons as u64).div_ceil(32);
                if words + g.neurons as u64 > compact::LOOP_LIMIT as u64 {
                    return Err(Error::Gpu(format!(
                        "partition {}: one step of {} neurons exceeds what one invocation of the \
                         software adapter '{}' may loop (65 535 iterations); use --device cpu \
                         or a real GPU",
                        job.program.partition, g.neurons, ctx.info.name
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
                // The gather's loops, and the feed-forward kernel's: a step, its events (one
                // or two an iteration: one each is an upper bound), the step that ends them,
                // and its neurons; its neurons before and after.
                let qn = feedforward::per_thread(g.weight_bits());
                if steps * (g.sources.len() as u64 + 2 + qn) + most + 2 * qn
                    > compact::LOOP_LIMIT as u64
                {
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
            let per_sample = match g.kernel {
                // At most (every sample in workgroups of its own).
                Kernel::Feedforward => feedforward::grid(g.neurons, 32, 1, ctx.ff_threads).0,
                Kernel::General => 1,
            };
            chunk = chunk.min(GRID_MAX * GRID_MAX / per_sample);
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
                codes: None,
            })
            .collect();
        t.host += t1.elapsed();
        Ok(result)
    }

    /// Run samples `s0..s0 + c` of every job in one submission and append their results.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_chunk(
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
            // Kept traces: the population's region of the kept buffer, rows of its stride (a
            // program of several populations writes one row for all of them: their regions
            // lie side by side, see `training.rs`).
            let kept = if job.membranes == Membranes::Keep {
                let runs = job.program.population_runs();
                let (_, pop, first, _) = runs[0];
                let (Some(buf), Some(&Some(region))) =
                    (ws.kept.buf.clone(), ws.kept.regions.get(pop))
                else {
                    return Err(Error::Gpu(format!(
                        "partition {}: no device region for the kept traces of population #{pop}",
                        job.program.partition
                    )));
                };
                let stride = ws.kept.strides[pop] as u64;
                let base = region + first as u64;
                let side_by_side = runs.iter().all(|&(l, p, f, _)| {
                    ws.kept
                        .regions
                        .get(p)
                        .copied()
                        .flatten()
                        .map(|r| r + f as u64)
                        == Some(base + l as u64)
                        && ws.kept.strides[p] as u64 == stride
                });
                if runs.len() > 1 && !side_by_side {
                    return Err(Error::Gpu(format!(
                        "partition {}: the kept traces of its {} populations do not lie side \
                         by side on the device",
                        job.program.partition,
                        runs.len()
                    )));
                }
                Some((buf, base + s0 as u64 * steps * stride, stride))
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
            let (segments, seg_steps) = compact::segments(opts.steps, words as u32, g.neurons);
            let layout = {
                let offsets = 0u64;
                let flag = (c as u64 * segments as u64 + 1) * 4;
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
                    segments,
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
                    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                    created,
                )
                .clone();
            let input_texture = match g.kernel {
                Kernel::Feedforward => Some(
                    slot.input_texture
                        .ensure(
                            device,
                            input_words,
                            ctx.limits.max_texture_dimension_2d,
                            created,
                        )?
                        .clone(),
                ),
                Kernel::General => None,
            };
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
            let runs = c as u64 * segments as u64;
            let offsets = slot
                .offsets
                .ensure(device, "offsets", (runs + 1) * 4, rw, created)
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
            let wbits = g.weight_bits();
            // Workgroups along the neurons (per group of samples), and in all.
            let (blocks, groups) = match g.kernel {
                Kernel::Feedforward => {
                    feedforward::grid(g.neurons, wbits, c as u64, ctx.ff_threads)
                }
                Kernel::General => (1, c as u64),
            };
            let (gx, gy) = grid(groups)?;
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
                    Membranes::Codes => unreachable!("refused by `run_round`"),
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
                grid_x: grid(runs.div_ceil(WG as u64))?.0,
                segments,
                seg_steps,
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
            if let Some((texture, _)) = &input_texture {
                feedforward::copy_to_texture(&mut enc, &input, input_words, texture);
            }
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
                })
                .into_iter()
                .chain([
                    wgpu::BindGroupEntry {
                        binding: binding::WEIGHTS,
                        resource: wgpu::BindingResource::TextureView(
                            g.packed.as_ref().map_or(&ctx.no_texture, |w| &w.view),
                        ),
                    },
                    wgpu::BindGroupEntry {
                        binding: binding::INPUT_TEXTURE,
                        resource: wgpu::BindingResource::TextureView(
                            input_texture.as_ref().map_or(&ctx.no_texture, |(_, v)| v),
                        ),
                    },
                ])
                .collect::<Vec<_>>(),
            });
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("simulate"),
                    timestamp_writes: None,
                });
                pass.set_pipeline(match g.kernel {
                    Kernel::Feedforward => &ctx.feedforward[feedforward::pipeline_index(wbits)],
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
                runs,
                true,
            )?;
            enc.copy_buffer_to_buffer(&offsets, 0, &staging, layout.offsets, (runs + 1) * 4);
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
            // Per sample: the offset of its first run.
            let per = layout.segments as usize;
            let offsets: Vec<u32> = (0..=c).map(|s| words[s * per]).collect();
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
    pub(crate) fn rerun_emit(
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
                c as u64 * layouts[k].0.segments as u64,
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
pub(crate) fn region_len(tr: &SpikeTrains) -> usize {
    2 + tr.samples() + tr.len()
}

/// Write populations' regions into the mapped `upload` buffer at their word offsets:
/// [neurons, offsets, events], each event as the flat index step·neurons + neuron, converted
/// in a kept host buffer and copied in one piece (measured on the software adapter: faster
/// than writing the mapped memory element by element, and than waking the thread pool after
/// a device wait).
pub(crate) fn write_regions(
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
pub(crate) fn map_all(
    device: &wgpu::Device,
    bufs: &[&wgpu::Buffer],
    mode: wgpu::MapMode,
) -> Result<()> {
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
pub(crate) fn scoped<T>(device: &wgpu::Device, what: &str, f: impl FnOnce() -> T) -> Result<T> {
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

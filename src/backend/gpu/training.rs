//! Training on the GPU ([`DeviceTraining`] for [`GpuBackend`]): the model weights, the
//! optimiser's moments, the kept traces of the forward pass, the current gradients and the
//! weight gradients all live on the device; per chunk of a batch the host uploads only the
//! spikes (by neuron, compact) and the labels, and per batch it reads back one word pair per
//! sample (loss, correct) and the regulariser's partial sums.
//!
//! Kernels per chunk: [`super::backward`] `raster_bits` (spikes to bits), [`super::loss`],
//! `backward` per population (targets first; a recurrent loop's populations together in
//! `backward_loop`), [`super::grad`] per projection; per batch: [`super::optimiser`] (`adam`,
//! bounds, exponents) and [`super::weights`] per partition and population in it, which writes
//! the fixed-point weights into the resident program the next forward pass reads. Every
//! dispatch's parameters go into one uniform buffer read at dynamic offsets.

use super::backward::{binding as back_b, BackParams, MEMBER_WORDS, OUT_RECORD};
use super::grad::{binding as grad_b, GradParams};
use super::loss::{binding as loss_b, LossParams, MAX_CLASSES};
use super::optimiser::{binding as opt_b, OptParams};
use super::weights::{binding as write_b, WriteParams};
use super::{map_all, scoped, GpuBackend, GpuProgram, Grown, Kernel, WG};
use crate::adam::{Adam, StepSize};
use crate::backend::{DeviceStepStats, DeviceTraining, Resident, TrainChunk, TrainStructure};
use crate::error::{Error, Result};
use crate::model::analog::WeightMap;
use crate::model::network::PopulationKind;
use crate::model::neuron::NeuronCoeffs;

/// Adam's constants (as src/train/optimiser.rs).
const B1: f32 = 0.9;
const B2: f32 = 0.999;
const EPS: f32 = 1e-8;

/// One projection on the device.
struct Proj {
    w_base: u32,
    numel: u32,
    src: usize,
    tgt: usize,
    delay: u32,
    dense: bool,
    ns: u32,
    nt: u32,
    /// Sparse: by-source list, per-weight synapse lists, by-target weight lists in `topo`.
    list: u32,
    by_weight: u32,
    by_target: u32,
    synapses: u32,
    map: WeightMap,
    /// Its `adam` workgroups' partial sums in `scalars`.
    partial_base: u32,
    /// The first projection into its target (its bounds are written, the others add).
    first_into: bool,
}

/// One population on the device.
struct Pop {
    size: u32,
    kind: PopulationKind,
    /// Its `[sample][step][neuron]` region in the kept traces and in `gi` (non-input).
    region: Option<u32>,
    /// Words from one step's row of its region to the next: its neurons, or those of the
    /// partition it shares with other populations (their regions then interleave, one row
    /// of the partition's neurons a step, as its forward pass writes them).
    stride: u32,
    /// Its `[sample][step][word]` region in `raster` (spiking populations).
    raster: Option<u32>,
    words: u32,
    /// Outgoing-projection records in `topo`.
    out_first: u32,
    out_count: u32,
    /// Its bounds in `scalars` (populations with inputs).
    bound_base: Option<u32>,
}

/// One partition's resident program and the word tables in `tables` of its neurons of each
/// population.
struct Prog {
    program: wgpu::Buffer,
    coeffs: wgpu::Buffer,
    runs: Vec<ProgRun>,
}

/// The neurons of one population in a partition: their first local neuron, their
/// population, and the program words of the synapses into them (a table in `tables`).
struct ProgRun {
    first: u32,
    neurons: u32,
    pop: usize,
    words: u32,
    table_base: u32,
}

/// The state of a training on the GPU (held by the trainer in a [`Resident`]).
pub(super) struct GpuTraining {
    steps: u32,
    projs: Vec<Proj>,
    pops: Vec<Pop>,
    order: Vec<usize>,
    /// The recurrent loops' populations, each in the order they step back together.
    loops: Vec<Vec<usize>>,
    readout: usize,
    coeffs: Vec<NeuronCoeffs>,
    progs: Vec<Prog>,
    /// Samples the per-chunk regions hold.
    capacity: usize,
    total_weights: u64,
    w: wgpu::Buffer,
    m: wgpu::Buffer,
    v: wgpu::Buffer,
    g: wgpu::Buffer,
    mapped: wgpu::Buffer,
    scalars: wgpu::Buffer,
    topo: wgpu::Buffer,
    tables: wgpu::Buffer,
    kept: wgpu::Buffer,
    gi: wgpu::Buffer,
    raster: wgpu::Buffer,
    syn_grad: wgpu::Buffer,
    events: Grown,
    labels: Grown,
    per_sample: Grown,
    arena: Grown,
    staging: Grown,
    /// Words of `scalars`: the partial sums, then the bounds, then the exponent pairs.
    partials: u32,
    exp_base: u32,
    /// Populations with inputs, as (neurons, bounds' start, population) triples in `topo`.
    pop_table: u32,
    pop_table_len: u32,
    /// Optimiser steps taken.
    t: u64,
}

/// Parameters of every dispatch of one submission, at offsets aligned for dynamic binding.
struct Arena {
    bytes: Vec<u8>,
    align: usize,
}

impl Arena {
    fn new(align: u32) -> Self {
        Arena {
            bytes: Vec::new(),
            align: align.max(16) as usize,
        }
    }

    fn push<T: bytemuck::Pod>(&mut self, p: &T) -> u32 {
        let at = self.bytes.len().next_multiple_of(self.align);
        self.bytes.resize(at, 0);
        self.bytes.extend_from_slice(bytemuck::bytes_of(p));
        at as u32
    }
}

/// `(key, value)` pairs grouped by key (a counting sort, stable): `n + 1` offsets and the
/// values.
fn csr(n: usize, pairs: impl Iterator<Item = (usize, u32)> + Clone) -> (Vec<u32>, Vec<u32>) {
    let mut offsets = vec![0u32; n + 1];
    for (k, _) in pairs.clone() {
        offsets[k + 1] += 1;
    }
    for i in 0..n {
        offsets[i + 1] += offsets[i];
    }
    let mut fill = offsets.clone();
    let mut list = vec![0u32; offsets[n] as usize];
    for (k, v) in pairs {
        list[fill[k] as usize] = v;
        fill[k] += 1;
    }
    (offsets, list)
}

/// Workgroups for `threads` threads as a 2-D grid.
fn groups(threads: u64) -> Result<(u32, u32)> {
    super::grid(threads.div_ceil(WG as u64).max(1))
}

fn words32(n: u64, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| {
        Error::Gpu(format!(
            "{what}: {n} words exceed the GPU kernels' 32-bit indices"
        ))
    })
}

impl GpuBackend {
    fn storage(&self, label: &str, bytes: u64, extra: wgpu::BufferUsages) -> wgpu::Buffer {
        self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(16).next_multiple_of(16),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC
                | extra,
            mapped_at_creation: false,
        })
    }

    fn bind(
        &self,
        layout: &wgpu::BindGroupLayout,
        arena: &wgpu::Buffer,
        params: u64,
        storage: &[(u32, &wgpu::Buffer)],
    ) -> wgpu::BindGroup {
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: arena,
                offset: 0,
                size: std::num::NonZeroU64::new(params),
            }),
        }];
        for &(binding, b) in storage {
            entries.push(wgpu::BindGroupEntry {
                binding,
                resource: b.as_entire_binding(),
            });
        }
        self.ctx
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout,
                entries: &entries,
            })
    }

    /// Upload `arena` into `st.arena` (grown) and return the buffer.
    fn upload_arena(&self, st: &mut GpuTraining, arena: &Arena) -> wgpu::Buffer {
        let mut created = 0;
        let buf = st
            .arena
            .ensure(
                &self.ctx.device,
                "training parameters",
                arena.bytes.len() as u64 + 256,
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                &mut created,
            )
            .clone();
        self.ctx.queue.write_buffer(&buf, 0, &arena.bytes);
        buf
    }

    /// Copy `(buffer, byte offset, bytes)` pieces into the staging buffer, wait, and return
    /// them as words.
    fn read_back(
        &self,
        st: &mut GpuTraining,
        mut enc: wgpu::CommandEncoder,
        pieces: &[(&wgpu::Buffer, u64, u64)],
    ) -> Result<Vec<u32>> {
        let device = &self.ctx.device;
        let total: u64 = pieces.iter().map(|p| p.2).sum();
        let mut created = 0;
        let staging = st
            .staging
            .ensure(
                device,
                "training readback",
                total,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                &mut created,
            )
            .clone();
        let mut at = 0;
        for &(buf, offset, bytes) in pieces {
            if bytes > 0 {
                enc.copy_buffer_to_buffer(buf, offset, &staging, at, bytes);
            }
            at += bytes;
        }
        scoped(device, "running the training kernels", || {
            self.ctx.queue.submit([enc.finish()]);
        })?;
        map_all(device, &[&staging], wgpu::MapMode::Read)?;
        let words = {
            let view = staging
                .get_mapped_range(..total.max(4))
                .map_err(|e| Error::Gpu(format!("mapping the training readback: {e:?}")))?;
            bytemuck::cast_slice::<u8, u32>(&view[..total as usize]).to_vec()
        };
        staging.unmap();
        Ok(words)
    }
}

impl DeviceTraining for GpuBackend {
    fn largest_loop(&self) -> usize {
        super::backward::MAX_LOOP_NEURONS
    }

    fn unfit(&self, s: &TrainStructure<'_>) -> Option<String> {
        if !self.ctx.is_software() {
            return None;
        }
        let (n, most) = (
            super::backward::loop_iterations(s),
            super::compact::LOOP_LIMIT,
        );
        (n > u64::from(most)).then(|| {
            format!(
                "one invocation of its backward kernels would count up to {n} loop iterations \
                 on the software adapter '{}', which cuts them at 65 535 (taken here up to \
                 {most}; a real GPU has no such limit)",
                self.ctx.info.name
            )
        })
    }

    fn begin(
        &self,
        s: &TrainStructure<'_>,
        residents: &[&Resident],
        weights: &[Vec<f32>],
        adam: &Adam,
    ) -> Result<Resident> {
        let net = s.network;
        let npop = net.populations.len();
        let steps = net.steps;
        let limit = self.ctx.max_binding() / 4;
        let readout_size = net.populations[s.readout].size;
        if readout_size > MAX_CLASSES {
            return Err(Error::Gpu(format!(
                "the readout has {readout_size} neurons; training on the GPU handles at most \
                 {MAX_CLASSES} (use --device cpu)"
            )));
        }
        // Weights, concatenated.
        let mut projs = Vec::with_capacity(s.ends.len());
        let mut total = 0u64;
        for (q, &(src, tgt, delay)) in s.ends.iter().enumerate() {
            let numel = weights[q].len() as u64;
            projs.push(Proj {
                w_base: words32(total, "the weights")?,
                numel: words32(numel, "a projection's weights")?,
                src,
                tgt,
                delay: delay as u32,
                dense: s.dense[q],
                ns: net.populations[src].size as u32,
                nt: net.populations[tgt].size as u32,
                list: 0,
                by_weight: 0,
                by_target: 0,
                synapses: s.by_source[q].1.len() as u32,
                map: s.maps[tgt],
                partial_base: 0,
                first_into: !s.ends[..q].iter().any(|e| e.1 == tgt),
            });
            total += numel;
        }
        words32(total, "the weights")?;
        // Populations: regions per sample in the kept traces / gi, raster, bounds.
        let mut pops: Vec<Pop> = net
            .populations
            .iter()
            .map(|p| Pop {
                size: p.size as u32,
                kind: p.kind,
                region: None,
                stride: p.size as u32,
                raster: None,
                words: (p.size as u32).div_ceil(32),
                out_first: 0,
                out_count: 0,
                bound_base: None,
            })
            .collect();
        let per_sample_trace: u64 = pops
            .iter()
            .filter(|p| p.kind != PopulationKind::Input)
            .map(|p| steps as u64 * p.size as u64)
            .sum();
        let per_sample_raster: u64 = pops
            .iter()
            .filter(|p| p.kind == PopulationKind::Lif)
            .map(|p| steps as u64 * p.words as u64)
            .sum();
        let capacity = (limit / per_sample_trace.max(1))
            .min(limit / per_sample_raster.max(1))
            .min(u32::MAX as u64 / per_sample_trace.max(1)) as usize;
        if capacity == 0 {
            return Err(Error::Gpu(format!(
                "one sample's traces ({} MiB) exceed what one GPU buffer may hold ({} MiB)",
                (per_sample_trace * 4) >> 20,
                (limit * 4) >> 20
            )));
        }
        // Each chunk at most a few thousand samples (the regions are allocated for it), and
        // no more than the backend's chunk limit (tests force chunking with it).
        let capacity = capacity.min(4096).min(self.max_chunk.max(1));
        // On the software adapter, which cuts an invocation's loops at 65 535 iterations (two
        // counted for most: `backward::loop_iterations`), no more samples than keep a neuron's
        // spikes of a chunk (at most one a step and sample: `raster_bits` and the weight
        // gradients loop over them) within that.
        let capacity = if self.ctx.is_software() {
            capacity.min((super::compact::LOOP_LIMIT / 2 / steps.max(1)).max(1) as usize)
        } else {
            capacity
        };
        // A program of several populations (a recurrent loop's on one chip, a system run's)
        // writes one row of traces a step for all of them: their regions interleave. Per
        // population: its program (index in `s.programs`) and first local neuron there.
        let mut shared: Vec<Option<(usize, u32)>> = vec![None; npop];
        for (k, prog) in s.programs.iter().enumerate() {
            let runs = prog.population_runs();
            if runs.len() < 2 {
                continue;
            }
            for &(local, pop, first, len) in &runs {
                if first != 0 || len != net.populations[pop].size {
                    return Err(Error::Gpu(format!(
                        "partition {} holds part of population '{}' together with other \
                         populations; training on the GPU needs the populations of such a \
                         partition whole (use --device cpu)",
                        prog.partition, net.populations[pop].name
                    )));
                }
                shared[pop] = Some((k, local as u32));
                pops[pop].stride = prog.neuron_count() as u32;
            }
        }
        let (mut trace_at, mut raster_at) = (0u64, 0u64);
        let rows = capacity as u64 * steps as u64;
        // Per program of several populations: its joint region, allocated where its first
        // population comes.
        let mut joint: Vec<Option<u64>> = vec![None; s.programs.len()];
        for (p, pop) in pops.iter_mut().enumerate() {
            if pop.kind != PopulationKind::Input {
                let (base, local) = match shared[p] {
                    None => (None, 0),
                    Some((k, local)) => (joint[k], local as u64),
                };
                let base = base.unwrap_or_else(|| {
                    let at = trace_at;
                    trace_at += rows * pop.stride as u64;
                    if let Some((k, _)) = shared[p] {
                        joint[k] = Some(at);
                    }
                    at
                });
                pop.region = Some(words32(base + local, "the kept traces")?);
            }
            if pop.kind == PopulationKind::Lif {
                pop.raster = Some(words32(raster_at, "the raster")?);
                raster_at += rows * pop.words as u64;
            }
        }
        // Topology words: outgoing records per population (targets in reverse order, then
        // projection order, as the host adds them), sparse lists, the exponent table.
        let mut topo: Vec<u32> = Vec::new();
        let rank: Vec<usize> = (0..npop)
            .map(|p| s.order.iter().position(|&o| o == p).unwrap_or(usize::MAX))
            .collect();
        let records_at = topo.len();
        let mut records: Vec<Vec<usize>> = vec![Vec::new(); npop];
        for (q, pr) in projs.iter().enumerate() {
            records[pr.src].push(q);
        }
        for list in records.iter_mut() {
            list.sort_by_key(|&q| (std::cmp::Reverse(rank[projs[q].tgt]), q));
        }
        let records_len: usize = records.iter().map(|r| r.len() * OUT_RECORD).sum();
        topo.resize(records_at + records_len, 0);
        // Sparse lists first (their starts go into the records).
        for (q, pr) in projs.iter_mut().enumerate() {
            if pr.dense {
                continue;
            }
            let (offs, syn) = &s.by_source[q];
            pr.list = words32(topo.len() as u64, "the topology")?;
            topo.extend_from_slice(offs);
            for &(post, k) in syn {
                topo.extend([post, k]);
            }
            // Per weight: its synapses in by-source order; per target: the weight of each
            // synapse into it, in source order.
            pr.by_weight = words32(topo.len() as u64, "the topology")?;
            let (offsets, list) = csr(
                pr.numel as usize,
                syn.iter()
                    .enumerate()
                    .map(|(j, &(_, k))| (k as usize, j as u32)),
            );
            topo.extend_from_slice(&offsets);
            topo.extend_from_slice(&list);
            pr.by_target = words32(topo.len() as u64, "the topology")?;
            let (offsets, list) = csr(
                pr.nt as usize,
                syn.iter().map(|&(post, k)| (post as usize, k)),
            );
            topo.extend_from_slice(&offsets);
            topo.extend_from_slice(&list);
        }
        let mut at = records_at;
        for (p, list) in records.iter().enumerate() {
            pops[p].out_first = at as u32;
            pops[p].out_count = list.len() as u32;
            for &q in list {
                let pr = &projs[q];
                let tgt_region = pops[pr.tgt].region.unwrap_or(0);
                topo[at..at + OUT_RECORD].copy_from_slice(&[
                    pr.w_base,
                    pr.nt,
                    pr.delay,
                    u32::from(pr.dense),
                    tgt_region,
                    pr.list,
                    pr.ns,
                    pops[pr.tgt].stride,
                ]);
                at += OUT_RECORD;
            }
        }
        // Scalars: partial sums, bounds, exponent pairs; the exponent table.
        let mut partials = 0u32;
        for pr in projs.iter_mut() {
            pr.partial_base = partials;
            partials += pr.numel.div_ceil(super::optimiser::WG).max(1);
        }
        let mut bounds_at = partials;
        let pop_table = words32(topo.len() as u64, "the topology")?;
        let mut pop_table_len = 0;
        for (p, pop) in pops.iter_mut().enumerate() {
            if projs.iter().any(|pr| pr.tgt == p) {
                pop.bound_base = Some(bounds_at);
                topo.extend([pop.size, bounds_at, p as u32]);
                pop_table_len += 1;
                bounds_at += pop.size;
            }
        }
        let exp_base = bounds_at;
        let scalars_len = exp_base as u64 + 2 * npop as u64;
        // Program word tables.
        let mut tables: Vec<u32> = Vec::new();
        let mut progs = Vec::with_capacity(s.programs.len());
        for (prog, resident) in s.programs.iter().zip(residents) {
            let gp = resident.get::<GpuProgram>()?;
            if gp.packed.is_some() {
                return Err(Error::Gpu(format!(
                    "partition {}: its dense weights ({} channels x {} neurons) are packed \
                     beyond one GPU buffer; training on the GPU reads them from one (use \
                     --device cpu)",
                    prog.partition,
                    prog.channels.len(),
                    prog.neuron_count()
                )));
            }
            let pairs = super::weights::word_of_synapses(
                prog,
                gp.kernel == Kernel::Feedforward,
                gp.syn_base,
            );
            // Per population of the partition, the words of the synapses into its neurons
            // (a word's synapses share their target).
            let mut runs = Vec::new();
            for (first, pop, _, len) in prog.population_runs() {
                let into = |j: u32| {
                    let target = prog.synapses[j as usize].target as usize;
                    (first..first + len).contains(&target)
                };
                let table_base = words32(tables.len() as u64, "the weight tables")?;
                let mut words: Vec<u32> = Vec::new();
                let mut offsets: Vec<u32> = vec![0];
                let mut list: Vec<u32> = Vec::new();
                let mut last = None;
                for &(word, j) in pairs.iter().filter(|&&(_, j)| into(j)) {
                    if last == Some(word) {
                        *offsets.last_mut().expect("one per word") += 1;
                    } else {
                        words.push(word);
                        offsets.push(offsets.last().copied().unwrap_or(0) + 1);
                    }
                    last = Some(word);
                    let r = prog.weight_ref(j as usize);
                    list.push(projs[r.projection as usize].w_base + r.index);
                }
                runs.push(ProgRun {
                    first: first as u32,
                    neurons: len as u32,
                    pop,
                    words: words.len() as u32,
                    table_base,
                });
                tables.extend_from_slice(&words);
                tables.extend_from_slice(&offsets);
                tables.extend_from_slice(&list);
            }
            progs.push(Prog {
                program: gp.program.clone(),
                coeffs: gp.coeffs.clone(),
                runs,
            });
        }
        // Buffers, filled.
        let q = &self.ctx.queue;
        let flat = |parts: &[Vec<f32>]| -> Vec<f32> { parts.concat() };
        let st = scoped(&self.ctx.device, "creating the training buffers", || {
            let none = wgpu::BufferUsages::empty();
            let w = self.storage("weights", total * 4, none);
            let m = self.storage("first moments", total * 4, none);
            let v = self.storage("second moments", total * 4, none);
            q.write_buffer(&w, 0, bytemuck::cast_slice(&flat(weights)));
            q.write_buffer(&m, 0, bytemuck::cast_slice(&flat(&adam.m)));
            q.write_buffer(&v, 0, bytemuck::cast_slice(&flat(&adam.v)));
            let topo_buf = self.storage("training topology", topo.len() as u64 * 4, none);
            q.write_buffer(&topo_buf, 0, bytemuck::cast_slice(&topo));
            let tables_buf = self.storage("weight tables", tables.len() as u64 * 4, none);
            q.write_buffer(&tables_buf, 0, bytemuck::cast_slice(&tables));
            let most_synapses = projs
                .iter()
                .filter(|p| !p.dense)
                .map(|p| p.synapses as u64)
                .max()
                .unwrap_or(0);
            GpuTraining {
                steps,
                order: s.order.to_vec(),
                loops: s.loops().map(<[usize]>::to_vec).collect(),
                readout: s.readout,
                coeffs: s.coeffs.to_vec(),
                progs,
                capacity,
                total_weights: total,
                g: self.storage("gradients", total * 4, none),
                mapped: self.storage("mapped weights", total * 4, none),
                scalars: self.storage("training scalars", scalars_len * 4, none),
                topo: topo_buf,
                tables: tables_buf,
                kept: self.storage("kept traces", trace_at * 4, none),
                gi: self.storage("current gradients", trace_at * 4, none),
                raster: self.storage("spike raster", raster_at * 4, none),
                syn_grad: self.storage("synapse gradients", most_synapses * 4, none),
                w,
                m,
                v,
                events: Grown::default(),
                labels: Grown::default(),
                per_sample: Grown::default(),
                arena: Grown::default(),
                staging: Grown::default(),
                partials,
                exp_base,
                pop_table,
                pop_table_len,
                t: adam.t,
                projs,
                pops,
            }
        })?;
        Ok(Resident::new(self.ctx.key, st))
    }

    fn chunk_samples(&self, state: &Resident) -> usize {
        state.get::<GpuTraining>().map_or(1, |st| st.capacity)
    }

    fn keep(&self, state: &mut Resident, samples: usize) -> Result<()> {
        let st = state.get_mut::<GpuTraining>()?;
        if samples > st.capacity {
            return Err(Error::Gpu(format!(
                "a chunk of {samples} samples; the device regions hold {}",
                st.capacity
            )));
        }
        let mut ws = self.ws.lock().expect("not poisoned");
        ws.kept.buf = Some(st.kept.clone());
        ws.kept.regions = st.pops.iter().map(|p| p.region.map(u64::from)).collect();
        ws.kept.strides = st.pops.iter().map(|p| p.stride as usize).collect();
        Ok(())
    }

    fn backward(&self, state: &mut Resident, chunk: &TrainChunk<'_>) -> Result<()> {
        let st = state.get_mut::<GpuTraining>()?;
        let device = &self.ctx.device;
        let samples = chunk.spikes.samples();
        let steps = st.steps;
        let batch = chunk.labels.len();
        // The spikes of every population by neuron: offsets, then sample·steps + step.
        let mut events: Vec<u32> = Vec::new();
        let mut csr_at = vec![0u32; st.pops.len()];
        for (p, pop) in st.pops.iter().enumerate() {
            let Some(tr) = chunk.spikes.get(p) else {
                continue;
            };
            if pop.kind == PopulationKind::Readout {
                continue;
            }
            csr_at[p] = words32(events.len() as u64, "the chunk's spikes")?;
            let (offsets, list) = csr(
                pop.size as usize,
                (0..samples).flat_map(|s| {
                    tr.sample(s)
                        .iter()
                        .map(move |e| (e.neuron as usize, s as u32 * steps + e.step))
                }),
            );
            events.extend_from_slice(&offsets);
            events.extend_from_slice(&list);
        }
        // Each recurrent loop's populations, as `backward_loop` reads them.
        let mut member_tables = Vec::with_capacity(st.loops.len());
        for l in &st.loops {
            member_tables.push(words32(events.len() as u64, "the chunk's spikes")?);
            for &m in l {
                let (pop, c) = (&st.pops[m], &st.coeffs[m]);
                let record: [u32; MEMBER_WORDS] = [
                    pop.size,
                    pop.region.unwrap_or(0),
                    pop.stride,
                    pop.raster.unwrap_or(0),
                    pop.words,
                    csr_at[m],
                    u32::from(pop.kind == PopulationKind::Lif),
                    pop.out_first,
                    pop.out_count,
                    c.membrane_first,
                    c.k_mem.to_bits(),
                    c.a_syn.to_bits(),
                    c.v_th.to_bits(),
                ];
                events.extend_from_slice(&record);
            }
        }
        let labels: Vec<u32> = chunk.labels.iter().map(|&l| l as u32).collect();
        let classes = st.pops[st.readout].size as u64;
        let per_sample_words = st.capacity as u64 * classes * 2 + batch as u64 * 2;
        let mut created = 0;
        let rw = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        let events_buf = st
            .events
            .ensure(
                device,
                "training spikes",
                events.len() as u64 * 4,
                rw,
                &mut created,
            )
            .clone();
        let labels_buf = st
            .labels
            .ensure(device, "labels", labels.len() as u64 * 4, rw, &mut created)
            .clone();
        let per_sample = st
            .per_sample
            .ensure(
                device,
                "per-sample results",
                per_sample_words * 4,
                rw,
                &mut created,
            )
            .clone();
        let q = &self.ctx.queue;
        q.write_buffer(&events_buf, 0, bytemuck::cast_slice(&events));
        q.write_buffer(&labels_buf, 0, bytemuck::cast_slice(&labels));
        // Parameters of every dispatch.
        let mut arena = Arena::new(self.ctx.limits.min_uniform_buffer_offset_alignment);
        let mut rasters = Vec::new();
        let back = |p: usize, st: &GpuTraining| -> Result<BackParams> {
            let pop = &st.pops[p];
            let c = &st.coeffs[p];
            Ok(BackParams {
                samples: samples as u32,
                steps,
                neurons: pop.size,
                mem_base: pop.region.unwrap_or(0),
                raster_base: pop.raster.unwrap_or(0),
                words: pop.words,
                csr_base: csr_at[p],
                spiking: u32::from(pop.kind == PopulationKind::Lif),
                k_mem: c.k_mem,
                a_syn: c.a_syn,
                v_th: c.v_th,
                alpha: chunk.alpha,
                lam: chunk.reg_spikes,
                batch: batch as f32,
                out_first: pop.out_first,
                out_count: pop.out_count,
                grid_x: 0,
                membrane_first: c.membrane_first,
                members: 0,
                member_table: 0,
                stride: pop.stride,
                pad: [0; 3],
            })
        };
        for (p, pop) in st.pops.iter().enumerate() {
            if pop.kind == PopulationKind::Lif && chunk.spikes.get(p).is_some() {
                let mut bp = back(p, st)?;
                let grid = groups(pop.size as u64)?;
                bp.grid_x = grid.0;
                rasters.push((arena.push(&bp), grid));
            }
        }
        let (lgx, lgy) = groups(samples as u64)?;
        let (score, last) = LossParams::score_of(chunk.score, steps);
        let loss_at = arena.push(&LossParams {
            samples: samples as u32,
            steps,
            classes: classes as u32,
            mem_base: st.pops[st.readout].region.unwrap_or(0),
            batch: batch as f32,
            readout_scale: chunk.readout_scale,
            reg_readout: chunk.reg_readout,
            first: chunk.first as u32,
            grid_x: lgx,
            stats_base: words32(st.capacity as u64 * classes * 2, "the per-sample results")?,
            score,
            last,
            stride: st.pops[st.readout].stride,
            pad: [0; 3],
        });
        let mut backs = Vec::new();
        for &p in st.order.iter().rev() {
            let mut bp = back(p, st)?;
            // A recurrent loop's populations step back together, a sample at a time, the
            // loop dispatched where its last population comes (targets before sources).
            if let Some((k, l)) = st.loops.iter().enumerate().find(|(_, l)| l.contains(&p)) {
                if l.last() != Some(&p) {
                    continue;
                }
                bp.members = l.len() as u32;
                bp.member_table = member_tables[k];
                let grid = super::grid(samples as u64)?;
                bp.grid_x = grid.0;
                backs.push((true, arena.push(&bp), grid));
                continue;
            }
            let grid = groups(samples as u64 * st.pops[p].size as u64)?;
            bp.grid_x = grid.0;
            backs.push((false, arena.push(&bp), grid));
        }
        let mut grads = Vec::new();
        for pr in &st.projs {
            let Some(_) = chunk.spikes.get(pr.src) else {
                continue;
            };
            if st.pops[pr.src].kind == PopulationKind::Readout {
                continue;
            }
            let mut gp = GradParams {
                steps,
                ns: pr.ns,
                nt: pr.nt,
                delay: pr.delay,
                w_base: pr.w_base,
                tgt_base: st.pops[pr.tgt].region.unwrap_or(0),
                tgt_stride: st.pops[pr.tgt].stride,
                csr_base: csr_at[pr.src],
                first: u32::from(chunk.first_chunk),
                list: pr.list,
                by_weight: pr.by_weight,
                synapses: pr.synapses,
                numel: pr.numel,
                grid_x: 0,
                pad: [0; 2],
            };
            if pr.dense {
                let grid = groups(pr.ns as u64 * pr.nt as u64)?;
                gp.grid_x = grid.0;
                grads.push((true, arena.push(&gp), grid, None));
            } else {
                let sg = groups(pr.synapses as u64)?;
                let wg = groups(pr.numel as u64)?;
                gp.grid_x = sg.0;
                let a = arena.push(&gp);
                gp.grid_x = wg.0;
                let b = arena.push(&gp);
                grads.push((false, a, sg, Some((b, wg))));
            }
        }
        // A gradient this chunk does not reach (no source spikes recorded) starts at zero.
        let arena_buf = self.upload_arena(st, &arena);
        let ctx = &*self.ctx;
        let bk = self.bind(
            &ctx.backward.layout,
            &arena_buf,
            std::mem::size_of::<BackParams>() as u64,
            &[
                (back_b::MEM, &st.kept),
                (back_b::GI, &st.gi),
                (back_b::RASTER, &st.raster),
                (back_b::EVENTS, &events_buf),
                (back_b::TOPO, &st.topo),
                (back_b::WEIGHTS, &st.w),
                (back_b::PER_SAMPLE, &per_sample),
            ],
        );
        let lb = self.bind(
            &ctx.loss.layout,
            &arena_buf,
            std::mem::size_of::<LossParams>() as u64,
            &[
                (loss_b::MEM, &st.kept),
                (loss_b::LABELS, &labels_buf),
                (loss_b::PER_SAMPLE, &per_sample),
            ],
        );
        let gb = self.bind(
            &ctx.grad.layout,
            &arena_buf,
            std::mem::size_of::<GradParams>() as u64,
            &[
                (grad_b::GI, &st.gi),
                (grad_b::EVENTS, &events_buf),
                (grad_b::TOPO, &st.topo),
                (grad_b::G, &st.g),
                (grad_b::SYN_GRAD, &st.syn_grad),
            ],
        );
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("backward"),
        });
        if chunk.first_chunk {
            enc.clear_buffer(&st.g, 0, None);
        }
        enc.clear_buffer(&st.raster, 0, None);
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("backward"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&ctx.backward.raster);
            for &(at, (x, y)) in &rasters {
                pass.set_bind_group(0, &bk, &[at]);
                pass.dispatch_workgroups(x, y, 1);
            }
            pass.set_pipeline(&ctx.loss.pipeline);
            pass.set_bind_group(0, &lb, &[loss_at]);
            pass.dispatch_workgroups(lgx, lgy, 1);
            for &(looped, at, (x, y)) in &backs {
                pass.set_pipeline(if looped {
                    &ctx.backward.backward_loop
                } else {
                    &ctx.backward.backward
                });
                pass.set_bind_group(0, &bk, &[at]);
                pass.dispatch_workgroups(x, y, 1);
            }
            for (dense, at, (x, y), second) in &grads {
                pass.set_pipeline(if *dense {
                    &ctx.grad.dense
                } else {
                    &ctx.grad.synapses
                });
                pass.set_bind_group(0, &gb, &[*at]);
                pass.dispatch_workgroups(*x, *y, 1);
                if let Some((b, (x, y))) = second {
                    pass.set_pipeline(&ctx.grad.weights);
                    pass.set_bind_group(0, &gb, &[*b]);
                    pass.dispatch_workgroups(*x, *y, 1);
                }
            }
        }
        scoped(device, "running the backward kernels", || {
            ctx.queue.submit([enc.finish()]);
        })?;
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the backward kernels: {e}")))?;
        Ok(())
    }

    fn step(
        &self,
        state: &mut Resident,
        samples: usize,
        size: StepSize,
    ) -> Result<DeviceStepStats> {
        let st = state.get_mut::<GpuTraining>()?;
        let ctx = &*self.ctx;
        st.t += 1;
        let c1 = 1.0 - B1.powi(st.t as i32);
        let c2 = 1.0 - B2.powi(st.t as i32);
        let mut arena = Arena::new(ctx.limits.min_uniform_buffer_offset_alignment);
        let mut adams = Vec::new();
        let mut bounds = Vec::new();
        for pr in &st.projs {
            let (quantised, map_scale, map_max) = match pr.map {
                WeightMap::Ideal => (0, 1.0, 0.0),
                WeightMap::Quantised { scale, max } => (1, scale, max as f32),
            };
            let mut op = OptParams {
                w_base: pr.w_base,
                numel: pr.numel,
                lr: size.lr,
                limit: size.limit,
                reg_n: size.reg / pr.numel.max(1) as f32,
                inv_c1: 1.0 / c1,
                inv_c2: 1.0 / c2,
                b1: B1,
                b2: B2,
                eps: EPS,
                quantised,
                map_scale,
                map_max,
                partial_base: pr.partial_base,
                ns: pr.ns,
                nt: pr.nt,
                bound_base: st.pops[pr.tgt].bound_base.unwrap_or(0),
                first_into: u32::from(pr.first_into),
                by_target: pr.by_target,
                populations: st.pop_table_len,
                pop_table: st.pop_table,
                exp_base: st.exp_base,
                grid_x: 0,
                pad: 0,
            };
            let ga = super::grid((pr.numel as u64).div_ceil(super::optimiser::WG as u64))?;
            op.grid_x = ga.0;
            adams.push((arena.push(&op), ga));
            let gb = groups(pr.nt as u64)?;
            op.grid_x = gb.0;
            bounds.push((pr.dense, arena.push(&op), gb));
        }
        let ge = groups(st.pop_table_len as u64)?;
        let exp_at = arena.push(&OptParams {
            populations: st.pop_table_len,
            pop_table: st.pop_table,
            exp_base: st.exp_base,
            grid_x: ge.0,
            ..Default::default()
        });
        // Per partition and population in it: its neurons' weights and input scale.
        let mut writes = Vec::new();
        for (k, pg) in st.progs.iter().enumerate() {
            for run in &pg.runs {
                let gw = groups(run.words.max(run.neurons) as u64)?;
                let at = arena.push(&WriteParams {
                    words: run.words,
                    table_base: run.table_base,
                    exp_at: st.exp_base + 2 * run.pop as u32,
                    neurons: run.neurons,
                    grid_x: gw.0,
                    first: run.first,
                    pad: [0; 2],
                });
                writes.push((k, at, gw));
            }
        }
        let arena_buf = self.upload_arena(st, &arena);
        let ob = self.bind(
            &ctx.optimiser.layout,
            &arena_buf,
            std::mem::size_of::<OptParams>() as u64,
            &[
                (opt_b::W, &st.w),
                (opt_b::M, &st.m),
                (opt_b::V, &st.v),
                (opt_b::G, &st.g),
                (opt_b::MAPPED, &st.mapped),
                (opt_b::SCALARS, &st.scalars),
                (opt_b::TOPO, &st.topo),
            ],
        );
        let wbs: Vec<wgpu::BindGroup> = st
            .progs
            .iter()
            .map(|pg| {
                self.bind(
                    &ctx.weights.layout,
                    &arena_buf,
                    std::mem::size_of::<WriteParams>() as u64,
                    &[
                        (write_b::PROGRAM, &pg.program),
                        (write_b::COEFFS, &pg.coeffs),
                        (write_b::TABLE, &st.tables),
                        (write_b::MAPPED, &st.mapped),
                        (write_b::SCALARS, &st.scalars),
                    ],
                )
            })
            .collect();
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("optimiser"),
            });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("optimiser"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&ctx.optimiser.adam);
            for &(at, (x, y)) in &adams {
                pass.set_bind_group(0, &ob, &[at]);
                pass.dispatch_workgroups(x, y, 1);
            }
            for &(dense, at, (x, y)) in &bounds {
                pass.set_pipeline(if dense {
                    &ctx.optimiser.bounds_dense
                } else {
                    &ctx.optimiser.bounds_sparse
                });
                pass.set_bind_group(0, &ob, &[at]);
                pass.dispatch_workgroups(x, y, 1);
            }
            pass.set_pipeline(&ctx.optimiser.exponents);
            pass.set_bind_group(0, &ob, &[exp_at]);
            pass.dispatch_workgroups(ge.0, ge.1, 1);
            pass.set_pipeline(&ctx.weights.pipeline);
            for &(k, at, (x, y)) in &writes {
                pass.set_bind_group(0, &wbs[k], &[at]);
                pass.dispatch_workgroups(x, y, 1);
            }
        }
        let classes = st.pops[st.readout].size as u64;
        let stats_from = st.capacity as u64 * classes * 2 * 4;
        let per_sample = st
            .per_sample
            .buf
            .clone()
            .ok_or_else(|| Error::Gpu("an optimiser step before any backward pass".into()))?;
        let scalars = st.scalars.clone();
        let words = self.read_back(
            st,
            enc,
            &[
                (&per_sample, stats_from, 2 * samples as u64 * 4),
                (&scalars, 0, st_partials(st) * 4),
            ],
        )?;
        let (stats, partials) = words.split_at(2 * samples);
        let mut out = DeviceStepStats::default();
        for pair in stats.chunks(2) {
            out.loss += f32::from_bits(pair[0]) as f64;
            out.correct += usize::from(f32::from_bits(pair[1]) > 0.5);
        }
        out.reg_loss = partials.iter().map(|&x| f32::from_bits(x) as f64).sum();
        out.finite = out.loss.is_finite() && out.reg_loss.is_finite();
        Ok(out)
    }

    fn read(&self, state: &Resident, weights: &mut [Vec<f32>], adam: &mut Adam) -> Result<()> {
        let st = state.get::<GpuTraining>()?;
        let bytes = st.total_weights * 4;
        let mut staging = Grown::default();
        let mut created = 0;
        let buf = staging
            .ensure(
                &self.ctx.device,
                "weights readback",
                3 * bytes,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                &mut created,
            )
            .clone();
        let mut enc = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("read weights"),
            });
        for (k, b) in [&st.w, &st.m, &st.v].into_iter().enumerate() {
            if bytes > 0 {
                enc.copy_buffer_to_buffer(b, 0, &buf, k as u64 * bytes, bytes);
            }
        }
        self.ctx.queue.submit([enc.finish()]);
        map_all(&self.ctx.device, &[&buf], wgpu::MapMode::Read)?;
        {
            let view = buf
                .get_mapped_range(..(3 * bytes).max(4))
                .map_err(|e| Error::Gpu(format!("mapping the weights: {e:?}")))?;
            let all: &[f32] = bytemuck::cast_slice(&view[..3 * bytes as usize]);
            let n = st.total_weights as usize;
            for (pr, k) in st.projs.iter().zip(0..) {
                let (a, b) = (pr.w_base as usize, (pr.w_base + pr.numel) as usize);
                weights[k].copy_from_slice(&all[a..b]);
                adam.m[k].copy_from_slice(&all[n + a..n + b]);
                adam.v[k].copy_from_slice(&all[2 * n + a..2 * n + b]);
            }
        }
        buf.unmap();
        adam.t = st.t;
        Ok(())
    }

    fn gradients(&self, state: &Resident) -> Result<Vec<Vec<f32>>> {
        let st = state.get::<GpuTraining>()?;
        let bytes = st.total_weights * 4;
        let mut staging = Grown::default();
        let mut created = 0;
        let buf = staging
            .ensure(
                &self.ctx.device,
                "gradients readback",
                bytes,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                &mut created,
            )
            .clone();
        let mut enc = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("read gradients"),
            });
        if bytes > 0 {
            enc.copy_buffer_to_buffer(&st.g, 0, &buf, 0, bytes);
        }
        self.ctx.queue.submit([enc.finish()]);
        map_all(&self.ctx.device, &[&buf], wgpu::MapMode::Read)?;
        let out = {
            let view = buf
                .get_mapped_range(..bytes.max(4))
                .map_err(|e| Error::Gpu(format!("mapping the gradients: {e:?}")))?;
            let all: &[f32] = bytemuck::cast_slice(&view[..bytes as usize]);
            st.projs
                .iter()
                .map(|pr| all[pr.w_base as usize..(pr.w_base + pr.numel) as usize].to_vec())
                .collect()
        };
        buf.unmap();
        Ok(out)
    }
}

/// Words of the regulariser's partial sums.
fn st_partials(st: &GpuTraining) -> u64 {
    st.partials as u64
}

//! Feed-forward programs run by columns: a chunk of samples at once, a block of target neurons
//! at a time. Where every synapse of a program comes from an input channel (a layer, or a fused
//! wave of partitions reading the same sources), the input of every step is known before the
//! neurons run, so the synaptic sums of the whole chunk can be formed first, a block of target
//! neurons at a time, instead of the whole weight row being read again for every spike of every
//! sample: a dense layer's block ([`Dense`]) row by row, each row's sums in registers while the
//! block's weights stay in the cache; other programs source by source, each source's weights to
//! the block read once and added for every spike of that source in the chunk (samples × steps
//! of them) into the block's sums, which stay in the cache.
//!
//! The sums are integers (fixed point), so the order of the additions does not change them; the
//! neurons are then stepped exactly as [`super::advance`] steps them, and each sample's spikes
//! come out in (step, neuron) order: the results are bit-identical to the sample-by-sample path
//! (tested in `tests/spine.rs`; the block layout of dense weights against the compiled synapse
//! list below). Never used for programs with synapses between their own neurons, several
//! stages or spikes arriving over links.

use super::narrow::{put, resolution, Narrow, TruncateFrom};
use super::{
    keep_membranes, reset, row_in, rows_per_sample, update_segment, write_peaks, CpuProgram,
    Delivery, MemOut, Membranes, Run, RunOptions, Scratch, Segment, State,
};
use crate::model::neuron::noise_base;
use crate::plan::compile::{ChannelBlock, PartitionProgram};
use crate::spikes::store::{SpikeEvent, SpikeTrains};

/// Bytes of synaptic sums one block of a program that is not dense keeps (samples × steps ×
/// block neurons × 4): a quarter of the 16 MiB L3 cache per thread on the machines we
/// measure. Such a program's weights are rows, and a block reads a piece of each; long pieces
/// let the prefetchers follow, which outweighs sums in L3 instead of L2 (the large network's
/// fused waves, rows in place: 256 KiB 128, 1 MiB 186, 4 MiB 196–208, 16 MiB 140 samples/s).
const BLOCK_BYTES: usize = 4 << 20;

/// Samples × steps that one chunk aims at: enough spikes per source for its weights to be read
/// once for many of them, few enough that a block stays a few dozen neurons wide or more.
pub(super) const CHUNK_ROWS: usize = 512;

/// Bytes of weights from which a program runs by columns unless told otherwise. Where its
/// weights stay in a core's caches (L2: 512 KiB, and the L3 share around it), stepping sample
/// by sample reads them from there and keeps its ring of pending input in L1, which a block's
/// sums cannot match (MNIST training, 784 x 64 per partition: forward 3.9 ms per batch by
/// columns against 3.4 ms by samples, one sitting; the MNIST network's 784 x 256 weights, 784
/// KiB, ran equally fast either way).
const WIDE_BYTES: usize = 1 << 20;

/// Whether `program` can run by columns: neurons in one stage, no synapse from its own.
pub(super) fn eligible(program: &PartitionProgram) -> bool {
    let (nch, n) = (program.channels.len(), program.neuron_count());
    n > 0
        && program.stage_bounds.len() == 2
        && program.synapse_offsets[nch] == program.synapse_offsets[nch + n]
}

/// Whether `program`'s weights do not fit a core's cache ([`WIDE_BYTES`]).
pub(super) fn wide(program: &PartitionProgram) -> bool {
    program.synapses.len() * std::mem::size_of::<i32>() >= WIDE_BYTES
}

/// Target neurons per block for `rows` (samples × steps) of sums: as many as fit
/// [`BLOCK_BYTES`], a multiple of 16 (whole vectors), or every neuron.
fn block_width(rows: usize, n: usize) -> usize {
    let w = (BLOCK_BYTES / (rows.max(1) * 4)) / 16 * 16;
    if w >= n {
        n
    } else {
        w.max(16)
    }
}

/// Buffers of one thread for the chunk's input and spikes, reused across chunks; a block's
/// neuron state and sums live in the thread's [`Scratch`].
#[derive(Default)]
pub(super) struct ColumnScratch {
    /// Per channel + 1 (by rows for a dense layer: per row + 1): where its spikes start in
    /// `entries`.
    offsets: Vec<u32>,
    cursor: Vec<u32>,
    /// The chunk's input spikes by channel: (local sample × steps + step, step); for a dense
    /// layer by row ([`gather_rows`]): (channel, 0).
    entries: Vec<(u32, u32)>,
    /// Channels with at least one spike in the chunk (none for a dense layer).
    active: Vec<u32>,
    segments: Vec<Segment>,
    /// Per local sample: its spikes, block after block.
    spikes: Vec<Vec<SpikeEvent>>,
    per_step: Vec<u32>,
}

/// What one chunk runs.
pub(super) struct Chunk<'a> {
    /// The program as prepared for the CPU.
    pub prog: &'a CpuProgram,
    /// The program as compiled (its synapse list, for sources delivered one by one).
    pub program: &'a PartitionProgram,
    /// Where each channel block's spikes come from.
    pub sources: &'a [(&'a ChannelBlock, &'a SpikeTrains)],
    /// The samples of the batch this chunk runs.
    pub range: std::ops::Range<usize>,
    /// Steps, noise seed and the batch's first sample index.
    pub opts: &'a RunOptions,
    /// Which membranes to write.
    pub membranes: Membranes,
}

crate::simd::widest! {
    /// Run the chunk's samples: their spikes appended to `events` (each sample's in (step,
    /// neuron) order), one count per sample to `counts`, membranes into `mem` (the chunk's rows,
    /// as [`super::run_sample`] writes them).
    pub(super) fn run_chunk(
        c: &Chunk<'_>,
        scratch: &mut Scratch,
        mem: &mut MemOut<'_>,
        events: &mut Vec<SpikeEvent>,
        counts: &mut Vec<u32>,
    ) {
        let prog = c.prog;
        let (n, steps, m) = (prog.n, c.opts.steps as usize, c.range.len());
        let rows = m * steps;
        match &prog.dense {
            Some(_) => gather_rows(c, &mut scratch.columns),
            None => gather(c, &mut scratch.columns),
        }
        let width = match &prog.dense {
            Some(d) => d.width,
            None => block_width(rows, n),
        };
        // The block's synaptic sums in `pending`, rows (local sample × steps + step).
        let Scratch {
            pending,
            cur,
            mem: v,
            refr,
            spiked,
            vrow,
            peak,
            columns:
                ColumnScratch {
                    offsets,
                    entries,
                    active,
                    segments,
                    spikes,
                    per_step,
                    ..
                },
            ..
        } = scratch;
        spikes.resize_with(m.max(spikes.len()), Vec::new);
        spikes.iter_mut().for_each(Vec::clear);
        let per = rows_per_sample(c.membranes, steps);
        let (stride, offset) = (mem.stride, mem.offset);
        let stage = &prog.stages[0].2;
        for lo in (0..n).step_by(width) {
            let hi = (lo + width).min(n);
            let w = hi - lo;
            reset(pending, rows * w, 0);
            if let Some(d) = &prog.dense {
                d.row_sums(lo, w, offsets, entries, pending);
            }
            for &ch in active.iter() {
                let es = &entries[offsets[ch as usize] as usize..offsets[ch as usize + 1] as usize];
                match prog.deliveries[ch as usize] {
                    Delivery::Dense { .. } => unreachable!("a dense layer's sums come by rows"),
                    Delivery::Run(r) => add_run(&c.program.weights, r, lo, hi, es, steps, pending),
                    Delivery::Runs(ref range) => {
                        for &r in &prog.runs[range.clone()] {
                            add_run(&c.program.weights, r, lo, hi, es, steps, pending);
                        }
                    }
                    Delivery::List(ref range) => {
                        let (syns, ws) = (&c.program.synapses, &c.program.weights);
                        for (syn, &weight) in syns[range.clone()].iter().zip(&ws[range.clone()]) {
                            let j = syn.target as usize;
                            if j < lo || j >= hi {
                                continue;
                            }
                            let d = syn.delay as usize;
                            for &(row, step) in es {
                                if step as usize + d < steps {
                                    pending[(row as usize + d) * w + j - lo] += weight;
                                }
                            }
                        }
                    }
                }
            }
            // A dense layer's sums are in units of its weights' common power of two.
            if let Some(d) = prog.dense.as_ref().filter(|d| d.shift > 0) {
                pending[..rows * w].iter_mut().for_each(|p| *p <<= d.shift);
            }
            segments.clear();
            segments.extend(stage.iter().filter_map(|s| {
                let (a, b) = (s.lo.max(lo), s.hi.min(hi));
                // A segment cut by the block has no padded coefficients of its own.
                let pad_at = s.pad_at.filter(|_| (a, b) == (s.lo, s.hi));
                (a < b).then_some(Segment {
                    lo: a,
                    hi: b,
                    kind: s.kind,
                    pad_at,
                })
            }));
            if w == n && prog.by_lanes(c.opts.stepping, steps) {
                super::lanes::run(c, segments, &pending[..rows * n], mem, per, &mut spikes[..m]);
                continue;
            }
            for (i, out) in spikes.iter_mut().enumerate().take(m) {
                let sample = c.opts.sample_base + (c.range.start + i) as u32;
                reset(cur, w, 0.0);
                v.clear();
                v.extend_from_slice(&prog.rest[lo..hi]);
                reset(refr, w, 0);
                reset(spiked, w, 0);
                reset(vrow, w, 0.0);
                reset(peak, w, f32::NEG_INFINITY);
                for t in 0..steps {
                    let input = &mut pending[(i * steps + t) * w..(i * steps + t + 1) * w];
                    let base = if prog.noisy {
                        noise_base(c.opts.noise_seed, sample, t as u32)
                    } else {
                        0
                    };
                    // Membranes into the block's row first, then copied to the trace (a
                    // plain loop takes the stores that miss the cache).
                    let vout: &mut [f32] = &mut vrow[..];
                    let mut any = false;
                    for seg in segments.iter() {
                        let (a, b) = (seg.lo - lo, seg.hi - lo);
                        any |= update_segment(
                            seg,
                            &prog.coeffs,
                            base,
                            &mut input[a..b],
                            State {
                                cur: &mut cur[a..b],
                                mem: &mut v[a..b],
                                refr: &mut refr[a..b],
                                spiked: &mut spiked[a..b],
                                v: &mut vout[a..b],
                            },
                            c.membranes != Membranes::None,
                        );
                    }
                    let codes: &mut [u8] = match c.membranes {
                        Membranes::Codes => {
                            &mut row_in(mem.codes, stride, offset, i * per + t, n)[lo..hi]
                        }
                        _ => &mut [],
                    };
                    keep_membranes(c.membranes, prog.cadc, peak, vout, codes);
                    if matches!(c.membranes, Membranes::Trace | Membranes::Keep) {
                        row_in(mem.data, stride, offset, i * per + t, n)[lo..hi]
                            .copy_from_slice(vout);
                    }
                    if any {
                        for k in super::set_flags(spiked) {
                            out.push(SpikeEvent {
                                step: t as u32,
                                neuron: (lo + k) as u32,
                            });
                        }
                    }
                }
                if c.membranes == Membranes::Max {
                    write_peaks(prog.cadc, peak, &mut mem.row(i, n)[lo..hi]);
                }
            }
        }
        // Each sample's spikes in (step, neuron) order: blocks come in neuron order, so a
        // stable placement by step is enough.
        for out in spikes.iter().take(m) {
            if width >= n {
                events.extend_from_slice(out);
            } else {
                reset(per_step, steps + 1, 0);
                for e in out {
                    per_step[e.step as usize + 1] += 1;
                }
                for t in 0..steps {
                    per_step[t + 1] += per_step[t];
                }
                let at = events.len();
                events.resize(at + out.len(), SpikeEvent { step: 0, neuron: 0 });
                for e in out {
                    let k = &mut per_step[e.step as usize];
                    events[at + *k as usize] = *e;
                    *k += 1;
                }
            }
            counts.push(out.len() as u32);
        }
    }
}

/// The chunk's input spikes grouped by channel (within a channel by sample, then step), and the
/// channels that have any.
fn gather(c: &Chunk<'_>, s: &mut ColumnScratch) {
    let steps = c.opts.steps;
    let nch = c.prog.nch;
    group(c, s, nch, |i, ch, step| {
        Some((ch as usize, (i as u32 * steps + step, step)))
    });
    s.active.clear();
    s.active
        .extend((0..nch as u32).filter(|&k| s.offsets[k as usize] < s.offsets[k as usize + 1]));
}

/// A dense layer's input for the chunk by rows: per row (local sample × steps + step of
/// arrival, its delivery's delay after the spike), the channels whose spikes arrive then
/// (`offsets` into `entries`, whose first halves hold the channels); `active` is left empty.
fn gather_rows(c: &Chunk<'_>, s: &mut ColumnScratch) {
    let steps = c.opts.steps as usize;
    let deliveries = &c.prog.deliveries;
    group(c, s, c.range.len() * steps, |i, ch, step| {
        match deliveries[ch as usize] {
            Delivery::Dense { delay } => Some(step as usize + delay)
                .filter(|&t| t < steps)
                .map(|t| (i * steps + t, (ch, 0))),
            // A channel without synapses.
            _ => None,
        }
    });
    s.active.clear();
}

/// The chunk's input spikes that `place` keeps, each as the entry it gives under the key it
/// gives (below `keys`), grouped by key into `entries` (`offsets`: keys + 1) by a counting
/// sort: within a key in the order of [`each`].
fn group(
    c: &Chunk<'_>,
    s: &mut ColumnScratch,
    keys: usize,
    place: impl Fn(usize, u32, u32) -> Option<(usize, (u32, u32))>,
) {
    reset(&mut s.offsets, keys + 1, 0);
    each(c, |i, ch, step| {
        if let Some((k, _)) = place(i, ch, step) {
            s.offsets[k + 1] += 1;
        }
    });
    for k in 0..keys {
        s.offsets[k + 1] += s.offsets[k];
    }
    s.cursor.clear();
    s.cursor.extend_from_slice(&s.offsets[..keys]);
    reset(&mut s.entries, s.offsets[keys] as usize, (0, 0));
    each(c, |i, ch, step| {
        if let Some((k, entry)) = place(i, ch, step) {
            let at = &mut s.cursor[k];
            s.entries[*at as usize] = entry;
            *at += 1;
        }
    });
}

/// Every input spike of the chunk that reaches a channel before the end: (local sample,
/// channel, step), in sample order.
#[inline(always)]
fn each(c: &Chunk<'_>, mut f: impl FnMut(usize, u32, u32)) {
    let steps = c.opts.steps as usize;
    for (i, sample) in c.range.clone().enumerate() {
        for (block, trains) in c.sources {
            for e in trains.sample(sample) {
                if (e.step as usize) < steps {
                    if let Some(ch) = block.channel(e.neuron) {
                        f(i, ch, e.step);
                    }
                }
            }
        }
    }
}

/// Add run `r`'s weights to the targets `lo..hi` (the block) for every spike `entries` holds.
#[inline(always)]
fn add_run(
    weights: &[i32],
    r: Run,
    lo: usize,
    hi: usize,
    entries: &[(u32, u32)],
    steps: usize,
    pending: &mut [i32],
) {
    let (a, b) = (r.first.max(lo), (r.first + r.len).min(hi));
    if a < b {
        let ws = &weights[r.at + a - r.first..r.at + b - r.first];
        add(ws, a - lo, r.delay, entries, steps, hi - lo, pending);
    }
}

/// Add `ws` at `at..` of the block's row (`w` wide) `delay` steps after every spike `entries`
/// holds that arrives before the end.
#[inline(always)]
fn add(
    ws: &[i32],
    at: usize,
    delay: usize,
    entries: &[(u32, u32)],
    steps: usize,
    w: usize,
    pending: &mut [i32],
) {
    for &(row, step) in entries {
        if step as usize + delay < steps {
            let x = (row as usize + delay) * w + at;
            for (p, y) in pending[x..x + ws.len()].iter_mut().zip(ws) {
                *p += y;
            }
        }
    }
}

/// Neurons per block of a dense layer's weights: a row's 128 sums are eight AVX-512 vectors.
/// The block's weights (every channel's: 2 MiB for the large network's wide layer in 16 bits)
/// lie in the L3 cache while the chunk's rows pass. Measured there (the large network, 32
/// samples, one sitting): blocks of 128 neurons 699 / 713 samples/s, 64 629 / 486 (weights
/// in L2), 16 330; 32 ran at 85 (its sums compiled to scalar code, see `rows_into`).
const DENSE_WIDTH: usize = 128;

/// The weights of a dense layer (every channel that has synapses reaches every neuron, in
/// order, with one delay) laid out block by block: `weights[(b * nch + ch) * width + k]` is
/// channel `ch`'s weight to neuron `b * width + k`, zero beyond the last neuron. A block's
/// weights are then one contiguous stretch that streams past the block's sums, instead of
/// short pieces of rows a layer's width apart (which the prefetchers do not follow).
///
/// A row's sums are formed in registers: for each row of the chunk (sample and step), the
/// block's weights of every channel whose spike arrives then are added, and the row stored
/// once. The block's weights stay in the cache while the rows pass; adding each spike's
/// weights into sums held in memory (by channel, each row's sums loaded and stored for every
/// spike) took the L2 cache's loads and stores (the large network: 520 samples/s that way).
///
/// The weights are held at the resolution they have ([`Narrow`]): every fixed-point weight is
/// `held << shift`, with `shift` the largest power of two that divides them all, in the
/// narrowest integers that hold the multiples. An emulated layer's weights are its 6-bit
/// codes times one power of two (bytes); an ideal layer's usually need 16 bits. The sums are
/// formed in units of `2^shift` and shifted once before the neurons read them: integer sums,
/// so the result is the same bit for bit.
#[derive(Clone, Debug)]
pub(super) struct Dense {
    width: usize,
    n: usize,
    nch: usize,
    shift: u32,
    weights: Narrow,
}

/// The sums of the rows `offsets` delimits in `entries` (each entry's first half a channel) for
/// the block whose weights are `block` (`N` a channel), each row's first `w` sums (`w` <= `N`)
/// stored into `out` one after another. `N` is 16, 64 or 128: with 32 the compiler unrolled
/// the sums into scalar code kept on the stack (a layer of 30 neurons from 16 000 inputs 1.8x
/// slower than adding each spike into sums in memory), and so it did for every width when the
/// sums were written as `N / 16` arrays of 16.
#[inline(always)]
fn rows_into<W: Copy + Into<i32>, const N: usize>(
    block: &[W],
    offsets: &[u32],
    entries: &[(u32, u32)],
    w: usize,
    out: &mut [i32],
) {
    for (row, out) in offsets.windows(2).zip(out.chunks_exact_mut(w)) {
        let mut acc = [0i32; N];
        for &(ch, _) in &entries[row[0] as usize..row[1] as usize] {
            let at = ch as usize * N;
            let ws: &[W; N] = block[at..at + N].try_into().expect("N weights");
            for (a, &x) in acc.iter_mut().zip(ws) {
                *a += x.into();
            }
        }
        out.copy_from_slice(&acc[..w]);
    }
}

impl Dense {
    /// A dense program's run weights (of `prog`) in blocks (its deliveries become
    /// [`Delivery::Dense`]); `None`, and nothing changed, where the program is not dense.
    pub(super) fn take(p: &mut CpuProgram, prog: &PartitionProgram) -> Option<Dense> {
        let nch = prog.channels.len();
        let n = p.n;
        let full = |d: &Delivery| match d {
            Delivery::Run(r) => r.first == 0 && r.len == n,
            Delivery::List(range) => range.is_empty(),
            _ => false,
        };
        if n == 0 || !p.deliveries.iter().take(nch).all(full) {
            return None;
        }
        for d in p.deliveries.iter_mut().take(nch) {
            if let Delivery::Run(r) = *d {
                *d = Delivery::Dense { delay: r.delay };
            }
        }
        let mut dense = Dense {
            width: 0,
            n,
            nch,
            shift: 0,
            weights: Narrow::I32(Vec::new()),
        };
        dense.rewrite(prog);
        Some(dense)
    }

    /// Lay out `prog`'s weights (same structure) in blocks, each channel's row where its
    /// synapses lie (a channel without synapses: zeros), at the narrowest width that holds
    /// them: when the program is prepared, and after every optimiser step.
    pub(super) fn rewrite(&mut self, prog: &PartitionProgram) {
        use rayon::prelude::*;
        let (nch, n) = (self.nch, self.n);
        let (shift, bytes) = resolution(&prog.weights);
        self.shift = shift;
        // A layer of fewer neurons: 16 or 64, the fewest that hold them (see `rows_into`).
        let width = [16, 64]
            .into_iter()
            .find(|&w| n <= w)
            .unwrap_or(DENSE_WIDTH);
        self.width = width;
        let len = n.div_ceil(width) * nch * width;
        // The same width again (an optimiser step's new weights, mostly): the blocks rewritten
        // in place, their padding still zero.
        if self.weights.held() != (bytes, len) {
            self.weights = Narrow::zeros(bytes, len);
        }
        fn blocks<W: TruncateFrom + Send>(
            out: &mut [W],
            prog: &PartitionProgram,
            (nch, width, n, shift): (usize, usize, usize, u32),
        ) {
            out.par_chunks_mut((nch * width).max(1))
                .enumerate()
                .for_each(|(k, block)| {
                    let (lo, hi) = (k * width, ((k + 1) * width).min(n));
                    for ch in 0..nch {
                        let row = prog.synapse_range(ch);
                        if !row.is_empty() {
                            let piece = &prog.weights[row.start + lo..row.start + hi];
                            put(&mut block[ch * width..], piece, shift);
                        }
                    }
                });
        }
        let dims = (nch, width, n, shift);
        match &mut self.weights {
            Narrow::I8(out) => blocks(out, prog, dims),
            Narrow::I16(out) => blocks(out, prog, dims),
            Narrow::I32(out) => blocks(out, prog, dims),
        }
    }

    /// The sums of every row (`offsets` into `entries`, from [`gather_rows`]) for the `w`
    /// neurons of the block that starts at `lo`, into `out` (rows × `w`).
    #[inline(always)]
    fn row_sums(
        &self,
        lo: usize,
        w: usize,
        offsets: &[u32],
        entries: &[(u32, u32)],
        out: &mut [i32],
    ) {
        let at = self.block_at(lo, 0);
        let len = self.nch * self.width;
        macro_rules! by_width {
            ($ws:expr) => {{
                let block = &$ws[at..at + len];
                match self.width {
                    16 => rows_into::<_, 16>(block, offsets, entries, w, out),
                    64 => rows_into::<_, 64>(block, offsets, entries, w, out),
                    DENSE_WIDTH => rows_into::<_, DENSE_WIDTH>(block, offsets, entries, w, out),
                    other => unreachable!("no dense blocks of {other} neurons"),
                }
            }};
        }
        match &self.weights {
            Narrow::I8(ws) => by_width!(ws),
            Narrow::I16(ws) => by_width!(ws),
            Narrow::I32(ws) => by_width!(ws),
        }
    }

    /// Where channel `ch`'s weights to the block that starts at neuron `lo` begin.
    #[inline(always)]
    fn block_at(&self, lo: usize, ch: usize) -> usize {
        (lo / self.width * self.nch + ch) * self.width
    }

    /// Add channel `ch`'s weights to `row` (one value per neuron).
    #[inline(always)]
    pub(super) fn deliver(&self, ch: usize, row: &mut [i32]) {
        #[inline(always)]
        fn each<W: Copy + Into<i32>>(d: &Dense, ws: &[W], ch: usize, row: &mut [i32]) {
            for (lo, piece) in (0..d.n).step_by(d.width).zip(row.chunks_mut(d.width)) {
                let (at, len) = (d.block_at(lo, ch), piece.len());
                for (p, &w) in piece.iter_mut().zip(&ws[at..at + len]) {
                    *p += w.into() << d.shift;
                }
            }
        }
        match &self.weights {
            Narrow::I8(ws) => each(self, ws, ch, row),
            Narrow::I16(ws) => each(self, ws, ch, row),
            Narrow::I32(ws) => each(self, ws, ch, row),
        }
    }

    /// The fixed-point weight held at `at` (see [`Dense::block_at`]).
    #[cfg(test)]
    fn weight(&self, at: usize) -> i32 {
        self.weights.get(at) << self.shift
    }

    /// Bytes a weight takes here.
    #[cfg(test)]
    fn weight_bytes(&self) -> usize {
        self.weights.held().0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::network::{NetworkBuilder, WeightInit};
    use crate::model::neuron::NeuronParams;
    use crate::model::substrate::Substrate;
    use crate::plan::partition::{PartitionOptions, Plan};

    /// A dense layer of `size` neurons from `inputs` (ideal, weights drawn with `seed`), its
    /// partitions compiled and fused into one program, as a wave runs.
    fn fused_layer(inputs: usize, size: usize, seed: u64) -> PartitionProgram {
        let sub = Substrate::bss2();
        let init = WeightInit {
            mean: 0.0,
            std: 0.5,
        };
        let net = NetworkBuilder::new("layer", 10, seed)
            .input("in", inputs)
            .dense("h", size, NeuronParams::default(), init)
            .build(&sub)
            .unwrap();
        let plan = Plan::new(&net, &sub, &PartitionOptions::default()).unwrap();
        let parts: Vec<PartitionProgram> = plan
            .partitions
            .iter()
            .filter(|p| p.neuron_count() > 0)
            .map(|p| PartitionProgram::compile(&net, &plan, p).unwrap())
            .collect();
        let refs: Vec<&PartitionProgram> = parts.iter().collect();
        let live: Vec<Vec<bool>> = parts
            .iter()
            .map(|p| vec![false; p.channels.len()])
            .collect();
        match refs.len() {
            1 => parts[0].clone(),
            _ => {
                crate::plan::compile::fuse(&refs, &live, 0)
                    .expect("one wave")
                    .program
            }
        }
    }

    /// A row's sums are its channels' weights added (a channel as often as it appears), for a
    /// layer of 40 neurons from 8 000 inputs (blocks of 64 neurons, 16-bit weights): against
    /// the compiled synapse list, summed here one weight at a time.
    #[test]
    fn row_sums_add_each_rows_channels_weights() {
        let program = fused_layer(8000, 40, 4);
        let prog = CpuProgram::new(&program);
        let d = prog.dense.as_ref().expect("1.3 MB of weights: dense");
        assert_eq!((d.width, d.weight_bytes()), (64, 2));
        let nch = program.channels.len();
        let mut rng = crate::rng::Rng::new(3);
        let mut offsets = vec![0u32];
        let mut entries = Vec::new();
        for row in 0..30 {
            // Row 7 empty; the others up to 300 channels, repeats allowed.
            let count = if row == 7 { 0 } else { rng.below(300) };
            for _ in 0..count {
                entries.push((rng.below(nch) as u32, 0));
            }
            offsets.push(entries.len() as u32);
        }
        let mut out = vec![-1i32; 30 * 40];
        d.row_sums(0, 40, &offsets, &entries, &mut out);
        for row in 0..30 {
            for j in 0..40 {
                let mut sum = 0i64;
                for &(ch, _) in &entries[offsets[row] as usize..offsets[row + 1] as usize] {
                    sum += program.weights_of(ch as usize)[j] as i64;
                }
                let got = (out[row * 40 + j] as i64) << d.shift;
                assert_eq!(got, sum, "row {row}, neuron {j}");
            }
        }
    }

    /// A dense layer's weights in blocks equal the compiled synapse list, weight for weight,
    /// after preparation and after updates with other weights, at the narrowest width that
    /// holds them (the initial ideal weights, past 16 bits at this fan-in, in 32; 6-bit values
    /// in bytes; multiples of 8 held as multiples; 15-bit values in 16); delivering a channel
    /// adds exactly its row.
    #[test]
    fn dense_blocks_hold_the_compiled_weights() {
        let mut program = fused_layer(1000, 300, 9);
        assert_eq!(program.neuron_count(), 300);
        let mut prog = CpuProgram::new(&program);
        let nch = program.channels.len();
        assert_eq!(nch, 1000);
        let check = |prog: &CpuProgram, program: &PartitionProgram, bytes: usize, shift: u32| {
            let d = prog
                .dense
                .as_ref()
                .expect("a wide dense layer is held in blocks");
            assert_eq!((d.width, d.weight_bytes(), d.shift), (128, bytes, shift));
            for ch in 0..nch {
                let row: Vec<i32> = program.weights_of(ch).to_vec();
                assert_eq!(row.len(), 300);
                for (j, &w) in row.iter().enumerate() {
                    let (b, k) = (j / 128, j % 128);
                    assert_eq!(
                        d.weight((b * nch + ch) * 128 + k),
                        w,
                        "channel {ch}, neuron {j}"
                    );
                }
                // Padding beyond the last neuron stays zero.
                let last = (2 * nch + ch) * 128;
                assert!((last + 44..last + 128).all(|at| d.weight(at) == 0));
                let mut sums = vec![7i32; 300];
                d.deliver(ch, &mut sums);
                let expected: Vec<i32> = row.iter().map(|w| w + 7).collect();
                assert_eq!(sums, expected, "channel {ch} delivered");
            }
        };
        let largest = program.weights.iter().map(|w| w.abs()).max().unwrap();
        assert!(largest > 32767, "{largest}");
        let shift = program
            .weights
            .iter()
            .fold(0, |a, w| a | w)
            .trailing_zeros();
        check(&prog, &program, 4, shift);
        for (k, w) in program.weights.iter_mut().enumerate() {
            *w = (k % 127) as i32 - 63;
        }
        prog.update(&program);
        check(&prog, &program, 1, 0);
        for (k, w) in program.weights.iter_mut().enumerate() {
            *w = ((k % 255) as i32 - 127) * 8;
        }
        prog.update(&program);
        check(&prog, &program, 1, 3);
        program.weights[4321] = 40_000 * 8;
        prog.update(&program);
        check(&prog, &program, 4, 3);
        for (k, w) in program.weights.iter_mut().enumerate() {
            *w = (k % 60_001) as i32 - 30_000;
        }
        prog.update(&program);
        check(&prog, &program, 2, 0);
    }
}

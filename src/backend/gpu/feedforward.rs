//! Host side of `shaders/feedforward.wgsl`: feed-forward partitions (one stage, no synapses
//! from their own neurons, one delay for every input), one thread per sample and few neurons
//! gathering their weights from a dense `[channel][neuron]` matrix. This module owns the
//! source, the pipelines (one per way of holding the weights) and the matrix layouts.

use crate::plan::compile::PartitionProgram;

/// The kernel's source (`shaders/params.wgsl` + `shaders/neuron.wgsl` +
/// `shaders/feedforward.wgsl`).
pub const SOURCE: &str = concat!(
    include_str!("../../../shaders/params.wgsl"),
    include_str!("../../../shaders/neuron.wgsl"),
    include_str!("../../../shaders/feedforward.wgsl")
);

/// Neurons per thread (`QN` in the kernel) for weights of `bits` bits: 4 for 32-bit words, one
/// vec4 of packed words otherwise (8 at 16 bits, 16 at 8).
pub const fn per_thread(bits: u32) -> u64 {
    match bits {
        32 => 4,
        b => 128 / b as u64,
    }
}

/// The most neurons one thread takes (`QMAX` in the kernel).
pub const MOST_PER_THREAD: u64 = 16;

/// Threads of a workgroup side by side along the neurons (`LANES`); the others take other
/// samples. On the software adapter, whose 8 SIMD lanes run a workgroup's threads 8 at a time,
/// the samples of a workgroup then read the same 128 bytes of each weight row in turn (from
/// the cache but for the first), where with one sample per workgroup every event's row came
/// from memory.
pub const LANES: u64 = 8;

/// Threads per workgroup (`WG`): `THREADS / LANES` samples.
pub const THREADS: u32 = 256;

/// Workgroups for `samples` samples of `neurons` neurons, `per_thread` each: along the neurons
/// (the kernel's `P.blocks`), and in all.
pub(crate) fn grid(neurons: u32, per_thread: u64, samples: u64) -> (u64, u64) {
    let along = (neurons as u64).div_ceil(per_thread).div_ceil(LANES).max(1);
    (along, along * samples.div_ceil(THREADS as u64 / LANES))
}

/// The ways of holding the weights, one pipeline each: bits per weight, and whether packed
/// weights span both bindings (the kernel's `WBITS` and `SPLIT`). The software adapter runs
/// every branch of a kernel, so that each way compiles only its own path: the large network's
/// wide layer ran 1.7x faster with the width a pipeline constant than read from the
/// parameters.
pub const WIDTHS: [(u32, bool); 5] = [(32, false), (16, false), (16, true), (8, false), (8, true)];

/// The pipelines, one per [`WIDTHS`] in order, on the simulation kernels' bind group layout.
pub(super) fn pipelines(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
) -> [wgpu::ComputePipeline; WIDTHS.len()] {
    WIDTHS.map(|(bits, split)| {
        let constants = [
            ("WG", THREADS as f64),
            ("LANES", LANES as f64),
            ("WBITS", bits as f64),
            ("SPLIT", f64::from(u8::from(split))),
            ("QN", per_thread(bits) as f64),
        ];
        super::pipeline_with(
            device,
            layout,
            "feedforward.wgsl",
            SOURCE,
            "main",
            &constants,
        )
    })
}

/// The index in [`pipelines`] of the kernel for weights of `bits` bits, spanning both bindings
/// or not.
pub(super) fn pipeline_index(bits: u32, split: bool) -> usize {
    WIDTHS
        .iter()
        .position(|&w| w == (bits, split && bits != 32))
        .expect("a width the kernel is specialised for")
}

/// The dense `[channel][neuron]` fixed-point weights of a feed-forward partition, as the words
/// the kernel reads (a channel reaching a neuron through several synapses adds their weights).
pub fn dense_weights(p: &PartitionProgram) -> Vec<u32> {
    bytemuck::cast_vec(dense(p))
}

fn dense(p: &PartitionProgram) -> Vec<i32> {
    let nch = p.channels.len();
    let n = p.neuron_count();
    let mut w = vec![0i32; nch * n];
    for (ch, row) in w.chunks_mut(n.max(1)).enumerate().take(nch) {
        for (s, &w) in p.synapses_of(ch).iter().zip(p.weights_of(ch)) {
            row[s.target as usize] += w;
        }
    }
    w
}

/// The dense matrix of a program too large for one buffer as 32-bit words: each neuron's
/// weights as multiples of a power of two (its `shift`: fixed-point weights are the chip's
/// 6-bit codes times a per-target scale in emulation, and trailing zeros in general), the
/// multiples in 8 or 16 bits (the fewest that hold all of them), packed from the low bits up
/// into vec4s of words, one thread's neurons ([`per_thread`]) each; by blocks of [`LANES`]
/// threads' neurons, each block holding every channel's vec4s for its threads (so that a
/// workgroup reads one contiguous stretch: as channel rows 16 KB long, each event's vec4s lay
/// on another page), padded with zeros; the words split after a whole vec4 over two bindings
/// of at most `window` words each (the kernel's `packed_vec`).
pub struct Packed {
    /// Bits per weight: 8 or 16.
    pub bits: u32,
    /// Per neuron: the weights are the packed values shifted left by this.
    pub shifts: Vec<u32>,
    /// The words of the first binding (a multiple of 4), then the rest.
    pub first: Vec<u32>,
    pub second: Vec<u32>,
}

impl Packed {
    /// `p`'s dense weights packed, if they fit two bindings of `window` words each.
    pub fn of(p: &PartitionProgram, window: u64) -> Option<Packed> {
        let (bits, shifts) = Self::layout(p, window)?;
        let n = p.neuron_count().max(1);
        let per = (32 / bits) as usize;
        let qn = per_thread(bits) as usize;
        let mask = (1u32 << bits) - 1;
        let (lanes, nch) = (LANES as usize, p.channels.len());
        let mut words = vec![0u32; Self::words(nch as u64, n as u64, bits) as usize];
        for (ch, w) in dense(p).chunks(n).enumerate() {
            for (j, (&x, &s)) in w.iter().zip(&shifts).enumerate() {
                let (g, k) = (j / qn, j % qn);
                let at = ((g / lanes * nch + ch) * lanes + g % lanes) * 4 + k / per;
                words[at] |= ((x >> s) as u32 & mask) << ((k % per) as u32 * bits);
            }
        }
        let second = words.split_off(words.len().min(Self::first_words(window) as usize));
        Some(Packed {
            bits,
            shifts,
            first: words,
            second,
        })
    }

    /// Words of the packed weights of `channels` channels to `neurons` neurons, `bits` bits
    /// each: blocks of [`LANES`] threads' neurons, each block every channel's vec4 for each of
    /// its threads.
    fn words(channels: u64, neurons: u64, bits: u32) -> u64 {
        neurons.div_ceil(per_thread(bits)).div_ceil(LANES) * LANES * channels * 4
    }

    /// Words the first binding takes, at most: whole vec4s within `window`.
    fn first_words(window: u64) -> u64 {
        window / 4 * 4
    }

    /// The bits per weight `p`'s packed dense weights take, if they fit two bindings of
    /// `window` words each.
    pub fn fits(p: &PartitionProgram, window: u64) -> Option<u32> {
        Self::layout(p, window).map(|(bits, _)| bits)
    }

    /// Bits per weight and the neurons' shifts, if the packed weights fit.
    fn layout(p: &PartitionProgram, window: u64) -> Option<(u32, Vec<u32>)> {
        let n = p.neuron_count();
        let words = |bits| Self::words(p.channels.len() as u64, n as u64, bits);
        if words(8) > 2 * Self::first_words(window) {
            return None;
        }
        // Each channel's sums, a row at a time (several synapses may join a channel to a
        // neuron): first the shifts (the fewest trailing zeros of a neuron's nonzero
        // weights), then the range of the shifted weights.
        let mut row = vec![0i32; n];
        let mut each_cell = |f: &mut dyn FnMut(usize, i32)| {
            for ch in 0..p.channels.len() {
                let syns = p.synapses_of(ch);
                for (s, &w) in syns.iter().zip(p.weights_of(ch)) {
                    row[s.target as usize] += w;
                }
                for s in syns {
                    let j = s.target as usize;
                    if row[j] != 0 {
                        f(j, row[j]);
                        row[j] = 0;
                    }
                }
            }
        };
        let mut shifts = vec![31u32; n];
        each_cell(&mut |j, x| shifts[j] = shifts[j].min(x.trailing_zeros()));
        for s in &mut shifts {
            if *s == 31 {
                *s = 0;
            }
        }
        let (mut lo, mut hi) = (0i32, 0i32);
        each_cell(&mut |j, x| {
            lo = lo.min(x >> shifts[j]);
            hi = hi.max(x >> shifts[j]);
        });
        let bits = if lo >= -128 && hi <= 127 {
            8
        } else if lo >= -32_768 && hi <= 32_767 {
            16
        } else {
            return None;
        };
        (words(bits) <= 2 * Self::first_words(window)).then_some((bits, shifts))
    }
}

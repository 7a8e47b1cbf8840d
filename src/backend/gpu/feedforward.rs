//! Host side of `shaders/feedforward.wgsl`: feed-forward partitions (one stage, no synapses
//! from their own neurons, one delay for every input), one thread per (sample, neuron) gathering
//! its weights from a dense `[channel][neuron]` matrix. This module owns the source, the
//! pipeline and the matrix layout.

use crate::plan::compile::PartitionProgram;

/// The kernel's source (`shaders/params.wgsl` + `shaders/neuron.wgsl` +
/// `shaders/feedforward.wgsl`).
pub const SOURCE: &str = concat!(
    include_str!("../../../shaders/params.wgsl"),
    include_str!("../../../shaders/neuron.wgsl"),
    include_str!("../../../shaders/feedforward.wgsl")
);

/// Neurons per thread of the `quad` entry point (`Q` in the kernel).
pub const QUAD: u64 = 4;

/// Whether a chunk of a program with 32-bit weights runs on `quad` (Q neurons per thread;
/// packed weights always do) rather than `main` (one): where its samples' input events
/// average more than 8 per step, so that reading an event once for Q neurons pays for the
/// longer per-thread updates. On the software adapter: the large
/// network's wide layer (~900 events per step) 2.1x faster on `quad`; MNIST (~1.5 per step)
/// 2.4x slower.
pub(crate) fn quad(events_per_sample: u64, steps: u64) -> bool {
    events_per_sample > 8 * steps
}

/// Workgroups per sample for `neurons` neurons, `per_thread` each.
pub(crate) fn blocks(neurons: u32, per_thread: u64) -> u64 {
    (neurons as u64)
        .div_ceil(per_thread)
        .div_ceil(super::WG as u64)
        .max(1)
}

/// The pipelines (`main`, `quad`), on the simulation kernels' bind group layout.
pub(super) fn pipelines(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
) -> [wgpu::ComputePipeline; 2] {
    ["main", "quad"].map(|entry| super::pipeline(device, layout, "feedforward.wgsl", SOURCE, entry))
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
/// multiples in 8 or 16 bits (the fewest that hold all of them), packed from the low bits up,
/// the words split over two bindings of at most `window` words each (the kernel's `weights`).
pub struct Packed {
    /// Bits per weight: 8 or 16.
    pub bits: u32,
    /// Per neuron: the weights are the packed values shifted left by this.
    pub shifts: Vec<u32>,
    /// The words of the first binding, then the rest.
    pub first: Vec<u32>,
    pub second: Vec<u32>,
}

impl Packed {
    /// `p`'s dense weights packed, if they fit two bindings of `window` words each.
    pub fn of(p: &PartitionProgram, window: u64) -> Option<Packed> {
        let (bits, shifts) = Self::layout(p, window)?;
        let n = p.neuron_count().max(1);
        let per = (32 / bits) as usize;
        let mask = (1u32 << bits) - 1;
        let mut w = dense(p);
        for row in w.chunks_mut(n) {
            for (x, &s) in row.iter_mut().zip(&shifts) {
                *x >>= s;
            }
        }
        let mut words: Vec<u32> = w
            .chunks(per)
            .map(|c| {
                c.iter().enumerate().fold(0u32, |acc, (k, &x)| {
                    acc | ((x as u32 & mask) << (k as u32 * bits))
                })
            })
            .collect();
        let second = words.split_off(words.len().min(window as usize));
        Some(Packed {
            bits,
            shifts,
            first: words,
            second,
        })
    }

    /// The bits per weight `p`'s packed dense weights take, if they fit two bindings of
    /// `window` words each.
    pub fn fits(p: &PartitionProgram, window: u64) -> Option<u32> {
        Self::layout(p, window).map(|(bits, _)| bits)
    }

    /// Bits per weight and the neurons' shifts, if the packed weights fit.
    fn layout(p: &PartitionProgram, window: u64) -> Option<(u32, Vec<u32>)> {
        let n = p.neuron_count();
        let cells = p.channels.len() as u64 * n as u64;
        if cells.div_ceil(4) > 2 * window {
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
        (cells.div_ceil(32 / bits as u64) <= 2 * window).then_some((bits, shifts))
    }
}

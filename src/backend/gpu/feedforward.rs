//! Host side of `shaders/feedforward.wgsl`: feed-forward partitions (one stage, no synapses
//! from their own neurons, one delay for every input), one thread per sample and few neurons
//! reading their weights from a dense matrix in the blocked layout ([`position`]). This module
//! owns the source, the pipelines (one per way of holding the weights) and the layout.

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

/// Threads of a workgroup side by side along the neurons (`LANES`); the others take other
/// samples. On the software adapter, whose 8 SIMD lanes run a workgroup's threads 8 at a time,
/// the samples of a workgroup then read the same stretch of weights in turn ([`position`]:
/// from the cache but for the first), where with one sample per workgroup every event's
/// weights came from memory.
pub const LANES: u64 = 8;

/// Threads per workgroup (`WG`), `THREADS / LANES` samples, where the device allows that
/// many ([`threads`]).
pub const THREADS: u32 = 256;

/// Threads per workgroup on a device allowing `most` invocations along x: [`THREADS`],
/// or fewer samples per workgroup (a whole number of them, at least one).
pub(super) fn threads(most: u32) -> u32 {
    THREADS
        .min(most / LANES as u32 * LANES as u32)
        .max(LANES as u32)
}

/// Blocks of [`LANES`] threads along `neurons` neurons at `bits` bits per weight.
fn blocks_along(neurons: u64, bits: u32) -> u64 {
    neurons.div_ceil(per_thread(bits)).div_ceil(LANES)
}

/// Workgroups of `threads` threads for `samples` samples of `neurons` neurons at `bits` bits
/// per weight: along the neurons (the kernel's `P.blocks`), and in all.
pub(crate) fn grid(neurons: u32, bits: u32, samples: u64, threads: u32) -> (u64, u64) {
    let along = blocks_along(neurons as u64, bits).max(1);
    (along, along * samples.div_ceil(threads as u64 / LANES))
}

/// The ways of holding the weights, one pipeline each: bits per weight (the kernel's
/// `WBITS`; 32 in the program, 16 and 8 packed in a texture). The software adapter runs every
/// branch of a kernel, so that each way compiles only its own path: the large network's wide
/// layer ran 1.7x faster with the width a pipeline constant than read from the parameters.
pub const WIDTHS: [u32; 3] = [32, 16, 8];

/// Texels per row of the packed weights' texture (the kernel's `TEXW`): each texel one vec4
/// of packed words (64 KiB a row), the vec4s in order along the rows.
pub const TEXEL_ROW: u32 = 4096;

/// Rows of the packed weights' texture for `words` packed words (at least one).
pub fn texture_rows(words: u64) -> u64 {
    words.div_ceil(4).div_ceil(TEXEL_ROW as u64).max(1)
}

/// The pipelines, one per [`WIDTHS`] in order, on the simulation kernels' bind group layout,
/// with workgroups of `threads` threads ([`threads`]).
pub(super) fn pipelines(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
    threads: u32,
) -> [wgpu::ComputePipeline; WIDTHS.len()] {
    WIDTHS.map(|bits| {
        let constants = [
            ("WG", threads as f64),
            ("LANES", LANES as f64),
            ("WBITS", bits as f64),
            ("TEXW", TEXEL_ROW as f64),
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

/// The index in [`pipelines`] of the kernel for weights of `bits` bits.
pub(super) fn pipeline_index(bits: u32) -> usize {
    WIDTHS
        .iter()
        .position(|&w| w == bits)
        .expect("a width the kernel is specialised for")
}

/// A texture of `rows` rows of [`TEXEL_ROW`] texels, each a vec4 of words, as the kernel
/// reads its packed weights and its input; texels in order along the rows.
pub(super) fn texture(
    device: &wgpu::Device,
    label: &str,
    rows: u32,
) -> (wgpu::Texture, wgpu::TextureView) {
    let texture = device.create_texture(&wgpu::TextureDescriptor {
        label: Some(label),
        size: wgpu::Extent3d {
            width: TEXEL_ROW,
            height: rows,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba32Uint,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
    (texture, view)
}

/// A texture for packed weights of `words` words, written with them.
pub(super) fn weights_texture(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    words: &[u32],
) -> (wgpu::Texture, wgpu::TextureView) {
    let (texture, view) = texture(
        device,
        "packed weights",
        texture_rows(words.len() as u64) as u32,
    );
    write_texture(queue, &texture, words);
    (texture, view)
}

/// A rectangle of a texture's rows that a run of words fills.
struct RowPart {
    /// Its first row.
    row: u32,
    /// Texels along each row.
    width: u32,
    /// Rows.
    rows: u32,
    /// Its first word among the words.
    first: u64,
}

impl RowPart {
    /// Whether it holds no texel.
    fn is_empty(&self) -> bool {
        self.width == 0 || self.rows == 0
    }

    /// Where it lies in `texture`.
    fn place<'a>(&self, texture: &'a wgpu::Texture) -> wgpu::TexelCopyTextureInfo<'a> {
        wgpu::TexelCopyTextureInfo {
            texture,
            mip_level: 0,
            origin: wgpu::Origin3d {
                x: 0,
                y: self.row,
                z: 0,
            },
            aspect: wgpu::TextureAspect::All,
        }
    }

    /// Its words' layout in memory from byte `offset`: whole rows of the texture apart.
    fn layout(&self, offset: u64) -> wgpu::TexelCopyBufferLayout {
        wgpu::TexelCopyBufferLayout {
            offset,
            bytes_per_row: Some(TEXEL_ROW * 16),
            rows_per_image: Some(self.rows),
        }
    }

    /// Its size in texels.
    fn extent(&self) -> wgpu::Extent3d {
        wgpu::Extent3d {
            width: self.width,
            height: self.rows,
            depth_or_array_layers: 1,
        }
    }
}

/// The whole rows, then the part of the last one, that `words` words take from the first
/// texel (either may be empty).
fn row_parts(words: u64) -> [RowPart; 2] {
    let row = TEXEL_ROW as u64 * 4;
    let full = words / row;
    let rest = words.div_ceil(4) - full * TEXEL_ROW as u64;
    [
        RowPart {
            row: 0,
            width: TEXEL_ROW,
            rows: full as u32,
            first: 0,
        },
        RowPart {
            row: full as u32,
            width: rest as u32,
            rows: 1,
            first: full * row,
        },
    ]
}

/// Encode a copy of the first `words` words of `buffer` (a storage buffer whose size is a
/// multiple of 16 bytes) into `texture` from its first texel (the last texel's words beyond
/// `words` are whatever the buffer holds there: the kernel does not read them).
pub(super) fn copy_to_texture(
    enc: &mut wgpu::CommandEncoder,
    buffer: &wgpu::Buffer,
    words: u64,
    texture: &wgpu::Texture,
) {
    for part in row_parts(words).iter().filter(|part| !part.is_empty()) {
        enc.copy_buffer_to_texture(
            wgpu::TexelCopyBufferInfo {
                buffer,
                layout: part.layout(part.first * 4),
            },
            part.place(texture),
            part.extent(),
        );
    }
}

/// `words` (a whole number of vec4s) into `texture` from its first texel: the whole rows,
/// then the part of the last one (texels beyond are never read).
pub(super) fn write_texture(queue: &wgpu::Queue, texture: &wgpu::Texture, words: &[u32]) {
    assert_eq!(words.len() % 4, 0, "packed weights are whole vec4s");
    for part in row_parts(words.len() as u64)
        .iter()
        .filter(|part| !part.is_empty())
    {
        let first = part.first as usize;
        let data = &words[first..first + 4 * (part.width * part.rows) as usize];
        queue.write_texture(
            part.place(texture),
            bytemuck::cast_slice(data),
            part.layout(0),
            part.extent(),
        );
    }
}

/// The dense fixed-point weights of a feed-forward partition as the 32-bit words the kernel
/// reads (a channel reaching a neuron through several synapses adds their weights), in the
/// blocked layout ([`position`]).
pub fn dense_weights(p: &PartitionProgram) -> Vec<u32> {
    blocked(p, 32, &[])
}

/// Words of a blocked matrix of `channels` channels to `neurons` neurons, `bits` bits each
/// (`position`).
pub fn blocked_words(channels: u64, neurons: u64, bits: u32) -> u64 {
    blocks_along(neurons, bits) * LANES * channels * 4
}

/// Where the weight of channel `ch` to neuron `j` lies among the words of a blocked matrix of
/// `channels` channels, `bits` bits per weight: (word, lowest bit). Each thread's neurons
/// ([`per_thread`]) take one vec4 of words per channel, packed from the low bits up; the
/// vec4s go by blocks of [`LANES`] threads, each block every channel's vec4s for its threads
/// (`[block][channel][thread of the block]`), so that a workgroup reads one contiguous
/// stretch (by channel rows, 16 to 32 KB long for a wide layer, each event's vec4s lay on
/// another page and line). Padding is zero.
pub fn position(channels: usize, ch: usize, j: usize, bits: u32) -> (usize, u32) {
    let (qn, per, lanes) = (
        per_thread(bits) as usize,
        (32 / bits) as usize,
        LANES as usize,
    );
    let (g, k) = (j / qn, j % qn);
    let at = ((g / lanes * channels + ch) * lanes + g % lanes) * 4 + k / per;
    (at, (k % per) as u32 * bits)
}

/// `p`'s dense weights in the blocked layout at `bits` bits, each neuron's shifted right by
/// its `shifts` (none: 0).
fn blocked(p: &PartitionProgram, bits: u32, shifts: &[u32]) -> Vec<u32> {
    let (n, nch) = (p.neuron_count(), p.channels.len());
    let mask = u32::MAX >> (32 - bits);
    let mut words = vec![0u32; blocked_words(nch as u64, n as u64, bits) as usize];
    for (ch, row) in dense(p).chunks(n.max(1)).enumerate().take(nch) {
        for (j, &x) in row.iter().enumerate() {
            let (at, low) = position(nch, ch, j, bits);
            words[at] |= ((x >> shifts.get(j).copied().unwrap_or(0)) as u32 & mask) << low;
        }
    }
    words
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
/// multiples in 8 or 16 bits (the fewest that hold all of them) in the blocked layout
/// ([`position`]), for a texture of at most `window` words ([`weights_texture`]; the kernel's
/// `packed_vec`).
pub struct Packed {
    /// Bits per weight: 8 or 16.
    pub bits: u32,
    /// Per neuron: the weights are the packed values shifted left by this.
    pub shifts: Vec<u32>,
    /// The words (a whole number of vec4s).
    pub words: Vec<u32>,
}

impl Packed {
    /// `p`'s dense weights packed, if they fit `window` words.
    pub fn of(p: &PartitionProgram, window: u64) -> Option<Packed> {
        let (bits, shifts) = Self::layout(p, window)?;
        let words = blocked(p, bits, &shifts);
        Some(Packed {
            bits,
            shifts,
            words,
        })
    }

    /// The bits per weight `p`'s packed dense weights take, if they fit `window` words.
    pub fn fits(p: &PartitionProgram, window: u64) -> Option<u32> {
        Self::layout(p, window).map(|(bits, _)| bits)
    }

    /// Bits per weight and the neurons' shifts, if the packed weights fit.
    fn layout(p: &PartitionProgram, window: u64) -> Option<(u32, Vec<u32>)> {
        let n = p.neuron_count();
        let words = |bits| blocked_words(p.channels.len() as u64, n as u64, bits);
        if words(8) > window {
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
        (words(bits) <= window).then_some((bits, shifts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn row_parts_cover_each_texel_of_the_words_once_in_order() {
        // Texel k of the words lies at (k % TEXEL_ROW, k / TEXEL_ROW): the parts together hold
        // texels 0..ceil(words / 4), each once, and each part's first word is its first
        // texel's.
        let row = TEXEL_ROW as u64;
        for words in [0, 3, 4, 4 * row - 4, 4 * row, 4 * row + 1, 12 * row + 36] {
            let mut texels = Vec::new();
            for part in row_parts(words) {
                let start = part.row as u64 * row;
                assert_eq!(part.first, start * 4, "{words} words");
                for r in 0..part.rows as u64 {
                    for x in 0..part.width as u64 {
                        texels.push(start + r * row + x);
                    }
                }
            }
            let want: Vec<u64> = (0..words.div_ceil(4)).collect();
            assert_eq!(texels, want, "{words} words");
            assert!(texture_rows(words) * row >= words.div_ceil(4));
        }
    }

    #[test]
    fn blocked_positions_give_each_workgroup_one_stretch_and_each_thread_one_vec4() {
        // Properties the kernel and its speed rely on, for widths and sizes around the
        // blocks: every (channel, neuron) has its own bits within the words; a thread's
        // neurons for one channel lie in one aligned vec4; the threads of one block of LANES
        // read one contiguous stretch for all channels (what a workgroup reads); the
        // positions fill the blocks from the first word.
        for bits in [32, 16, 8] {
            let qn = per_thread(bits) as usize;
            for (channels, neurons) in [(1, 1), (3, 31), (5, 64), (2, 129), (7, 300)] {
                let total = blocked_words(channels as u64, neurons as u64, bits) as usize;
                let mut seen = HashSet::new();
                let stretch = channels * LANES as usize * 4;
                for ch in 0..channels {
                    for j in 0..neurons {
                        let (at, low) = position(channels, ch, j, bits);
                        let what = format!("bits {bits}, {channels}x{neurons}, ({ch}, {j})");
                        assert!(at < total && low + bits <= 32, "{what}: {at}, {low}");
                        assert!(seen.insert((at, low)), "{what} shares its bits");
                        let first = j / qn * qn;
                        let (at0, _) = position(channels, ch, first, bits);
                        assert_eq!(at0 % 4, 0, "{what}: its thread's vec4 is aligned");
                        assert_eq!(at / 4, at0 / 4, "{what}: in its thread's vec4");
                        let block = j / qn / LANES as usize;
                        assert_eq!(at / stretch, block, "{what}: in its block's stretch");
                    }
                }
                assert!(total.div_ceil(stretch) == neurons.div_ceil(qn * LANES as usize));
            }
        }
    }
}

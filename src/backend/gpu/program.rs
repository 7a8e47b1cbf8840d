//! A partition prepared for the GPU: which kernel runs it and its buffers, created once.

use super::*;

/// Which kernel runs a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// `shaders/feedforward.wgsl`: dense weights, one thread per sample and few neurons.
    Feedforward,
    /// `shaders/lif.wgsl`: synapse lists, stages, delays; one workgroup per sample.
    General,
}

/// A partition prepared for the GPU: its buffers, created once.
pub struct GpuProgram {
    pub(crate) kernel: Kernel,
    pub(crate) neurons: u32,
    pub(crate) channels: u32,
    pub(crate) slots: u32,
    pub(crate) stages: u32,
    pub(crate) delay: u32,
    pub(crate) syn_off_base: u32,
    pub(crate) syn_base: u32,
    pub(crate) source_base: u32,
    pub(crate) cadc_base: u32,
    pub(crate) cadc: Option<Cadc>,
    pub(crate) sources: Vec<usize>,
    pub(crate) coeffs: wgpu::Buffer,
    pub(crate) program: wgpu::Buffer,
    /// Feed-forward programs whose dense weights are too large for one buffer as 32-bit
    /// words: the weights packed ([`feedforward::Packed`]), outside `program`.
    pub(crate) packed: Option<PackedWeights>,
    /// Expected spikes per sample (f32 bits), learned from earlier batches: sizes the compact
    /// readback.
    pub(crate) spikes_per_sample: AtomicU32,
}

impl GpuProgram {
    /// Bits per weight the feed-forward kernel reads: 32 in `program`, or the packed width.
    pub(crate) fn weight_bits(&self) -> u32 {
        self.packed.as_ref().map_or(32, |w| w.bits)
    }
}

/// Packed dense weights on the device: bits per weight and the texture
/// ([`super::feedforward::weights_texture`]).
pub(crate) struct PackedWeights {
    pub(crate) bits: u32,
    /// The packed words (what the texture holds from its first texel).
    pub(crate) words: usize,
    pub(crate) texture: wgpu::Texture,
    pub(crate) view: wgpu::TextureView,
}

/// The program buffer's words: the kernel's part (dense weights, or the neurons' shifts of
/// weights `packed` elsewhere, or stage bounds, synapse offsets and synapses), then the source table, the channel tables and
/// the CADC table.
pub(crate) struct ProgramWords {
    pub(crate) words: Vec<u32>,
    pub(crate) syn_off_base: u32,
    pub(crate) syn_base: u32,
    pub(crate) source_base: u32,
    pub(crate) cadc_base: u32,
}

pub(crate) fn program_words(
    p: &PartitionProgram,
    kernel: Kernel,
    packed: Option<&[u32]>,
    cadc_bits: Option<u32>,
) -> ProgramWords {
    let (mut words, syn_off_base, syn_base) = match kernel {
        Kernel::Feedforward if let Some(shifts) = packed => (shifts.to_vec(), 0, 0),
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

//! Host side of `shaders/weights.wgsl`: the fixed-point weights and input scales written into a
//! resident partition program on the device after an optimiser step. This module owns the
//! source, the parameters' layout, the pipeline and the table of which weights make each
//! program word.

use crate::model::neuron::NeuronCoeffs;
use crate::plan::compile::PartitionProgram;

/// The kernel's source.
pub const SOURCE: &str = include_str!("../../../shaders/weights.wgsl");

/// Mirrors `WriteParams` in `shaders/weights.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct WriteParams {
    /// Program words to write.
    pub words: u32,
    /// Their table in the tables buffer.
    pub table_base: u32,
    /// The population's (scale, input scale) pair in the scalars buffer.
    pub exp_at: u32,
    /// The partition's neurons of the population...
    pub neurons: u32,
    /// Workgroups along x.
    pub grid_x: u32,
    /// ...from this local neuron on.
    pub first: u32,
    /// Padding to 16 bytes.
    pub pad: [u32; 2],
}

/// Binding numbers (after the parameters at 0).
pub mod binding {
    /// The resident program's words.
    pub const PROGRAM: u32 = 1;
    /// The resident coefficients, as words.
    pub const COEFFS: u32 = 2;
    /// Word tables (read).
    pub const TABLE: u32 = 3;
    /// Mapped weights (read).
    pub const MAPPED: u32 = 4;
    /// Exponents (read).
    pub const SCALARS: u32 = 5;
}

/// Layout and pipeline.
pub(super) struct WeightsKernel {
    pub layout: wgpu::BindGroupLayout,
    pub pipeline: wgpu::ComputePipeline,
}

impl WeightsKernel {
    pub fn new(device: &wgpu::Device) -> Self {
        let layout = super::training_layout(
            device,
            "weights",
            std::mem::size_of::<WriteParams>() as u64,
            &[
                (binding::PROGRAM, false),
                (binding::COEFFS, false),
                (binding::TABLE, true),
                (binding::MAPPED, true),
                (binding::SCALARS, true),
            ],
        );
        let words = (std::mem::size_of::<NeuronCoeffs>() / 4) as f64;
        let at = (std::mem::offset_of!(NeuronCoeffs, input_scale) / 4) as f64;
        let pipeline = super::pipeline_with(
            device,
            &layout,
            "weights.wgsl",
            SOURCE,
            "main",
            &[
                ("WG", super::WG as f64),
                ("COEFF_WORDS", words),
                ("INPUT_SCALE_WORD", at),
            ],
        );
        WeightsKernel { layout, pipeline }
    }
}

/// Which program word each synapse's weight goes to: `(word, synapse)` for every synapse of
/// `p` in the program `words` layout the GPU backend chose (`dense`: the feed-forward kernel's
/// blocked matrix, [`super::feedforward::position`], whose words add the weights of every
/// synapse of one channel to one neuron; otherwise the general kernel's synapse words from
/// `syn_base`), sorted by word.
pub fn word_of_synapses(p: &PartitionProgram, dense: bool, syn_base: u32) -> Vec<(u32, u32)> {
    let nch = p.channels.len();
    let mut out = Vec::with_capacity(p.synapses.len());
    for src in 0..p.synapse_offsets.len() - 1 {
        let (a, b) = (p.synapse_offsets[src], p.synapse_offsets[src + 1]);
        for j in a..b {
            let word = if dense {
                debug_assert!(src < nch, "feed-forward programs have no local sources");
                let target = p.synapses[j as usize].target as usize;
                super::feedforward::position(nch, src, target, 32).0 as u32
            } else {
                syn_base + super::lif::SYNAPSE_WORDS * j + super::lif::WEIGHT_WORD
            };
            out.push((word, j));
        }
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::word_of_synapses;
    use crate::backend::gpu::lif::program_words;
    use crate::model::network::{NetworkBuilder, WeightInit};
    use crate::model::neuron::NeuronParams;
    use crate::model::substrate::Substrate;
    use crate::plan::compile::PartitionProgram;
    use crate::plan::partition::{PartitionOptions, Plan};

    /// The general kernel's program holds every synapse's target, delay and weight in its
    /// words, and the word the optimiser's write targets for a synapse is its weight.
    #[test]
    fn synapse_words_hold_each_synapse_and_its_weight() {
        let sub = Substrate::bss2();
        let w = |mean, std| WeightInit { mean, std };
        let net = NetworkBuilder::new("words", 8, 3)
            .input("in", 30)
            .dense("h", 50, NeuronParams::default(), w(0.1, 0.5))
            .recurrent(w(0.0, 0.3))
            .build(&sub)
            .unwrap();
        let plan = Plan::new(&net, &sub, &PartitionOptions::default()).unwrap();
        let mut checked = 0;
        for part in plan.partitions.iter().filter(|p| p.neuron_count() > 0) {
            let p = PartitionProgram::compile(&net, &plan, part).unwrap();
            let (words, _, syn_base) = program_words(&p);
            assert!(p.weights.iter().any(|&x| x != 0), "weights to find");
            for (word, j) in word_of_synapses(&p, false, syn_base) {
                let j = j as usize;
                let at = syn_base as usize + 3 * j;
                assert_eq!(words[at], p.synapses[j].target, "synapse {j}");
                assert_eq!(words[at + 1], p.synapses[j].delay, "synapse {j}");
                assert_eq!(word as usize, at + 2, "synapse {j}");
                assert_eq!(words[word as usize] as i32, p.weights[j], "synapse {j}");
                checked += 1;
            }
        }
        assert_eq!(checked, 30 * 50 + 50 * 50);
    }
}

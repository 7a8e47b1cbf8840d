//! The CPU backend: rayon over the samples of a batch, each sample integrated step by step with
//! [`crate::neuron::lif_step`]. Synaptic input is event-driven: an input spike adds its weights
//! to a ring buffer of pending input per neuron, so the work is proportional to spikes × fan-out
//! plus neurons × steps, never a dense matrix product. This is the reference for every kernel.

use super::{Backend, PartitionOutput, PartitionProgram, RunOptions};
use crate::error::{Error, Result};
use crate::neuron::{lif_step, LifState};
use crate::spikes::{SpikeEvent, SpikeTrains};
use rayon::prelude::*;

/// Runs partitions on the host's cores.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn run(
        &self,
        program: &PartitionProgram,
        input: &SpikeTrains,
        opts: &RunOptions,
    ) -> Result<PartitionOutput> {
        if input.neurons != program.channels.len() {
            return Err(Error::InvalidInput(format!(
                "partition {} has {} input channels, the input spikes {}",
                program.partition,
                program.channels.len(),
                input.neurons
            )));
        }
        let per_sample: Vec<(Vec<SpikeEvent>, Vec<f32>)> = (0..input.samples())
            .into_par_iter()
            .map(|s| run_sample(program, input.sample(s), opts))
            .collect();
        let mut membrane = opts.membrane.then(|| {
            Vec::with_capacity(input.samples() * opts.steps as usize * program.neuron_count())
        });
        let mut samples = Vec::with_capacity(per_sample.len());
        for (ev, m) in per_sample {
            samples.push(ev);
            if let Some(all) = membrane.as_mut() {
                all.extend_from_slice(&m);
            }
        }
        Ok(PartitionOutput {
            spikes: SpikeTrains::from_samples(program.neuron_count(), opts.steps, samples),
            membrane,
        })
    }
}

/// One sample of one partition; events come out sorted by (step, neuron) already.
fn run_sample(
    prog: &PartitionProgram,
    input: &[SpikeEvent],
    opts: &RunOptions,
) -> (Vec<SpikeEvent>, Vec<f32>) {
    let n = prog.neuron_count();
    let nch = prog.channels.len();
    let slots = prog.max_delay as usize + 1;
    let steps = opts.steps as usize;
    let mut pending = vec![0i32; slots * n];
    let mut state: Vec<LifState> = prog.coeffs.iter().map(LifState::rest).collect();
    let mut out = Vec::new();
    let mut trace = if opts.membrane {
        vec![0f32; steps * n]
    } else {
        Vec::new()
    };
    let mut next = 0;
    for t in 0..steps {
        // Replayed input spikes of this step.
        while next < input.len() && input[next].step as usize == t {
            deliver(prog, input[next].neuron as usize, t, slots, steps, &mut pending);
            next += 1;
        }
        let slot = (t % slots) * n;
        for stage in prog.stage_bounds.windows(2) {
            for j in stage[0] as usize..stage[1] as usize {
                let (spiked, v) = lif_step(&prog.coeffs[j], &mut state[j], pending[slot + j]);
                if opts.membrane {
                    trace[t * n + j] = v;
                }
                if spiked {
                    out.push(SpikeEvent {
                        step: t as u32,
                        neuron: j as u32,
                    });
                    deliver(prog, nch + j, t, slots, steps, &mut pending);
                }
            }
        }
        pending[slot..slot + n].fill(0);
    }
    (out, trace)
}

#[inline]
fn deliver(
    prog: &PartitionProgram,
    src: usize,
    t: usize,
    slots: usize,
    steps: usize,
    pending: &mut [i32],
) {
    let n = prog.neuron_count();
    for syn in prog.synapses_of(src) {
        let at = t + syn.delay as usize;
        if at < steps {
            pending[(at % slots) * n + syn.target as usize] += syn.weight;
        }
    }
}

//! The CPU backend: rayon over the samples of a batch, each sample integrated step by step with
//! [`crate::neuron::lif_step`]. Synaptic input is event-driven: an input spike adds its weights
//! to a ring buffer of pending input per neuron, so the work is proportional to spikes × fan-out
//! plus neurons × steps, never a dense matrix product. This is the reference for every kernel.
//!
//! For speed, neuron state is kept as separate arrays (the update loop vectorises) and a
//! source whose synapses reach a contiguous run of targets with one delay (every dense
//! projection) is delivered as one vector add.

use super::{Backend, PartitionOutput, PartitionProgram, RunOptions};
use crate::error::Result;
use crate::neuron::{lif_step, membrane_noise, noise_base, LifState, NeuronCoeffs};
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
        super::check_input(program, input)?;
        let fanout = Fanout::new(program);
        let per_sample: Vec<(Vec<SpikeEvent>, Vec<f32>)> = (0..input.samples())
            .into_par_iter()
            .map(|s| {
                run_sample_best(
                    program,
                    &fanout,
                    input.sample(s),
                    opts,
                    opts.sample_base + s as u32,
                )
            })
            .collect();
        let mut membrane = opts.membrane.then(|| {
            Vec::with_capacity(input.samples() * opts.steps as usize * program.neuron_count())
        });
        let mut offsets = Vec::with_capacity(per_sample.len() + 1);
        offsets.push(0u32);
        let total: usize = per_sample.iter().map(|(e, _)| e.len()).sum();
        let mut events = Vec::with_capacity(total);
        for (ev, m) in per_sample {
            events.extend_from_slice(&ev);
            offsets.push(events.len() as u32);
            if let Some(all) = membrane.as_mut() {
                all.extend_from_slice(&m);
            }
        }
        Ok(PartitionOutput {
            spikes: SpikeTrains {
                neurons: program.neuron_count(),
                steps: opts.steps,
                offsets,
                events,
            },
            membrane,
        })
    }
}

/// How each source's synapses are delivered.
enum Delivery {
    /// Weights `weights[at..at+len]` to targets `first..first+len`, one delay.
    Run {
        first: usize,
        len: usize,
        at: usize,
        delay: usize,
    },
    /// Synapses `range` of the program, one by one.
    List(std::ops::Range<usize>),
}

struct Fanout {
    per_source: Vec<Delivery>,
    weights: Vec<i32>,
    coeffs: SoaCoeffs,
}

impl Fanout {
    fn new(prog: &PartitionProgram) -> Self {
        let weights: Vec<i32> = prog.synapses.iter().map(|s| s.weight).collect();
        let per_source = prog
            .synapse_offsets
            .windows(2)
            .map(|w| {
                let (a, b) = (w[0] as usize, w[1] as usize);
                let syn = &prog.synapses[a..b];
                let contiguous = !syn.is_empty()
                    && syn.iter().enumerate().all(|(k, s)| {
                        s.target == syn[0].target + k as u32 && s.delay == syn[0].delay
                    });
                if contiguous {
                    Delivery::Run {
                        first: syn[0].target as usize,
                        len: syn.len(),
                        at: a,
                        delay: syn[0].delay as usize,
                    }
                } else {
                    Delivery::List(a..b)
                }
            })
            .collect();
        Fanout {
            per_source,
            weights,
            coeffs: SoaCoeffs::new(&prog.coeffs),
        }
    }

    #[inline(always)]
    fn deliver(
        &self,
        prog: &PartitionProgram,
        src: usize,
        t: usize,
        slots: usize,
        steps: usize,
        pending: &mut [i32],
    ) {
        let n = prog.neuron_count();
        match &self.per_source[src] {
            Delivery::Run {
                first,
                len,
                at,
                delay,
            } => {
                let when = t + delay;
                if when < steps {
                    let base = (when % slots) * n + first;
                    for (p, w) in pending[base..base + len]
                        .iter_mut()
                        .zip(&self.weights[*at..at + len])
                    {
                        *p += w;
                    }
                }
            }
            Delivery::List(range) => {
                for syn in &prog.synapses[range.clone()] {
                    let when = t + syn.delay as usize;
                    if when < steps {
                        pending[(when % slots) * n + syn.target as usize] += syn.weight;
                    }
                }
            }
        }
    }
}

/// Neuron coefficients as separate arrays, so the update loop loads them as vectors.
struct SoaCoeffs {
    a_syn: Vec<f32>,
    k_mem: Vec<f32>,
    v_leak: Vec<f32>,
    v_reset: Vec<f32>,
    v_th: Vec<f32>,
    refractory_steps: Vec<u32>,
    spiking: Vec<u32>,
    weight_gain: Vec<f32>,
    input_scale: Vec<f32>,
    noise_sd: Vec<f32>,
    noise_key: Vec<u32>,
    noisy: bool,
}

impl SoaCoeffs {
    fn new(c: &[NeuronCoeffs]) -> Self {
        SoaCoeffs {
            a_syn: c.iter().map(|c| c.a_syn).collect(),
            k_mem: c.iter().map(|c| c.k_mem).collect(),
            v_leak: c.iter().map(|c| c.v_leak).collect(),
            v_reset: c.iter().map(|c| c.v_reset).collect(),
            v_th: c.iter().map(|c| c.v_th).collect(),
            refractory_steps: c.iter().map(|c| c.refractory_steps).collect(),
            spiking: c.iter().map(|c| c.spiking).collect(),
            weight_gain: c.iter().map(|c| c.weight_gain).collect(),
            input_scale: c.iter().map(|c| c.input_scale).collect(),
            noise_sd: c.iter().map(|c| c.noise_sd).collect(),
            noise_key: c.iter().map(|c| c.noise_key).collect(),
            noisy: c.iter().any(|c| c.noise_sd != 0.0),
        }
    }

    #[inline(always)]
    fn get(&self, j: usize) -> NeuronCoeffs {
        NeuronCoeffs {
            a_syn: self.a_syn[j],
            k_mem: self.k_mem[j],
            v_leak: self.v_leak[j],
            v_reset: self.v_reset[j],
            v_th: self.v_th[j],
            refractory_steps: self.refractory_steps[j],
            spiking: self.spiking[j],
            weight_gain: self.weight_gain[j],
            input_scale: self.input_scale[j],
            noise_sd: self.noise_sd[j],
            noise_key: self.noise_key[j],
            _pad: 0,
        }
    }
}

/// Neuron arrays of one sample: current, membrane, refractory counter, spiked this step.
type StateArrays<'a> = (&'a mut [f32], &'a mut [f32], &'a mut [u32], &'a mut [bool]);

/// Update neurons `lo..lo + inputs.len()` by one step; returns whether any spiked. `TRACE` and
/// `NOISE` are compile-time so that the common loop has no branches.
#[inline(always)]
fn update<const TRACE: bool, const NOISE: bool>(
    (c, base, lo, inputs): (&SoaCoeffs, u32, usize, &[i32]),
    (cur, mem, refr, spiked): StateArrays<'_>,
    trace: &mut [f32],
) -> bool {
    let hi = lo + inputs.len();
    let (cur, mem, refr, spiked) = (
        &mut cur[lo..hi],
        &mut mem[lo..hi],
        &mut refr[lo..hi],
        &mut spiked[lo..hi],
    );
    let mut any = false;
    for k in 0..inputs.len() {
        let s = LifState {
            i: cur[k],
            v: mem[k],
            refractory: refr[k],
        };
        let coeffs = c.get(lo + k);
        let noise = if NOISE {
            membrane_noise(&coeffs, base)
        } else {
            0.0
        };
        let (s, spike, v) = lif_step(&coeffs, s, inputs[k], noise);
        cur[k] = s.i;
        mem[k] = s.v;
        refr[k] = s.refractory;
        spiked[k] = spike;
        any |= spike;
        if TRACE {
            trace[lo + k] = v;
        }
    }
    any
}

/// [`run_sample`] compiled for the widest vector unit the processor has. The arithmetic is
/// the same (Rust never fuses multiply and add on its own), only the vector width differs.
fn run_sample_best(
    prog: &PartitionProgram,
    fanout: &Fanout,
    input: &[SpikeEvent],
    opts: &RunOptions,
    sample: u32,
) -> (Vec<SpikeEvent>, Vec<f32>) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor supports AVX2, checked just above.
        return unsafe { run_sample_avx2(prog, fanout, input, opts, sample) };
    }
    run_sample(prog, fanout, input, opts, sample)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_sample_avx2(
    prog: &PartitionProgram,
    fanout: &Fanout,
    input: &[SpikeEvent],
    opts: &RunOptions,
    sample: u32,
) -> (Vec<SpikeEvent>, Vec<f32>) {
    run_sample(prog, fanout, input, opts, sample)
}

/// One sample of one partition; events come out sorted by (step, neuron).
#[inline(always)]
fn run_sample(
    prog: &PartitionProgram,
    fanout: &Fanout,
    input: &[SpikeEvent],
    opts: &RunOptions,
    sample: u32,
) -> (Vec<SpikeEvent>, Vec<f32>) {
    let n = prog.neuron_count();
    let nch = prog.channels.len();
    let slots = prog.max_delay as usize + 1;
    let steps = opts.steps as usize;
    let mut pending = vec![0i32; slots * n];
    let (mut cur, mut mem, mut refr) = (vec![0f32; n], vec![0f32; n], vec![0u32; n]);
    for (j, c) in prog.coeffs.iter().enumerate() {
        mem[j] = LifState::rest(c).v;
    }
    let mut spiked = vec![false; n];
    let mut out = Vec::new();
    let mut trace = if opts.membrane {
        vec![0f32; steps * n]
    } else {
        Vec::new()
    };
    let mut next = 0;
    for t in 0..steps {
        while next < input.len() && input[next].step as usize == t {
            let ch = input[next].neuron as usize;
            fanout.deliver(prog, ch, t, slots, steps, &mut pending);
            next += 1;
        }
        let slot = (t % slots) * n;
        let base = noise_base(opts.noise_seed, sample, t as u32);
        for stage in prog.stage_bounds.windows(2) {
            let (lo, hi) = (stage[0] as usize, stage[1] as usize);
            let inputs = &pending[slot + lo..slot + hi];
            let args = (&fanout.coeffs, base, lo, inputs);
            let state = (&mut cur[..], &mut mem[..], &mut refr[..], &mut spiked[..]);
            let any = match (opts.membrane, fanout.coeffs.noisy) {
                (true, true) => update::<true, true>(args, state, &mut trace[t * n..(t + 1) * n]),
                (true, false) => update::<true, false>(args, state, &mut trace[t * n..(t + 1) * n]),
                (false, true) => update::<false, true>(args, state, &mut []),
                (false, false) => update::<false, false>(args, state, &mut []),
            };
            if any {
                for (j, &spike) in spiked.iter().enumerate().take(hi).skip(lo) {
                    if spike {
                        out.push(SpikeEvent {
                            step: t as u32,
                            neuron: j as u32,
                        });
                        fanout.deliver(prog, nch + j, t, slots, steps, &mut pending);
                    }
                }
            }
        }
        pending[slot..slot + n].fill(0);
    }
    (out, trace)
}

//! Programs of a few neurons (a readout's ten) stepped [`LANES`] samples at a time.
//!
//! Sample by sample, a step of a ten-neuron readout costs what a step costs whatever its
//! neurons (its input's cursors, the pending ring, the update's dispatch and a vector loop that
//! a ten-neuron segment barely fills): 500 – 570 instructions a sample and step, a quarter of
//! MNIST inference at T = 100 for 10 of its 266 neurons. Here the neurons' state is held as
//! `[neuron][lane]`, one lane per sample of a group, so that each neuron's update runs as one
//! vector operation over the group; the synaptic input comes from the chunk's sums that
//! [`super::columns`] forms for every sample and step first.
//!
//! Every lane computes exactly what [`super::update_segment`] computes for that sample (the
//! same expressions in the same order; noise from the sample's own [`noise_base`]), the
//! membranes are kept as [`super::keep_membranes`] keeps them and each sample's spikes come out
//! in (step, neuron) order: bit-identical to stepping sample by sample (tested in
//! `tests/spine.rs`). Only for programs whose every segment has no refractory period
//! ([`Kind::Uniform`] and [`Kind::Varied`]).

use super::columns::Chunk;
use super::{keep_membranes, noise_value, row_in, write_peaks, Kind, MemOut, Membranes, Segment};
use crate::model::neuron::{noise_base, NeuronCoeffs};
use crate::spikes::store::SpikeEvent;

/// Samples stepped together: one 512-bit vector of `f32`.
pub(super) const LANES: usize = 16;

/// The most neurons a program stepped by lanes has: its state (`[neuron][lane]`, five arrays)
/// stays in registers and L1.
pub(super) const MAX_NEURONS: usize = 16;

/// Bytes of synaptic sums a chunk of a program stepped by lanes may take (samples × steps × its
/// neurons × 4): a group of [`LANES`] samples at most this, else the program steps sample by
/// sample (its sums grow with T, the ring of pending input by samples does not). 1 MiB: a
/// readout of 10 at T = 100 in chunks of 64 takes 256 KiB.
pub(super) const SUMS_BYTES: usize = 1 << 20;

/// Work items per thread a program stepped by lanes aims at (each at least a group of
/// [`LANES`] where the batch has that many samples per thread), and the most groups one holds.
const ITEMS_PER_THREAD: usize = 2;
const GROUPS_PER_ITEM: usize = 4;

/// Whether a program of `n` neurons in `stages`, one that can run by columns, steps by lanes:
/// few neurons, one stage, no refractory period.
pub(super) fn eligible(n: usize, columns: bool, stages: &[(usize, usize, Vec<Segment>)]) -> bool {
    columns
        && (1..=MAX_NEURONS).contains(&n)
        && stages.len() == 1
        && stages[0]
            .2
            .iter()
            .all(|s| matches!(s.kind, Kind::Uniform(_) | Kind::Varied { .. }))
}

/// Whether a group of [`LANES`] samples of a program of `n` neurons at `steps` steps keeps its
/// sums within [`SUMS_BYTES`].
pub(super) fn fits(n: usize, steps: usize) -> bool {
    LANES * steps * n * std::mem::size_of::<i32>() <= SUMS_BYTES
}

/// Samples per work item of a program of `n` neurons stepped by lanes, of `samples` on
/// `threads` threads with `steps` steps: [`ITEMS_PER_THREAD`] items a thread of whole groups
/// of [`LANES`] (at most [`GROUPS_PER_ITEM`], and the chunk's sums within [`SUMS_BYTES`]);
/// where the batch has fewer than a group per item, the samples shared by the threads (a
/// group partly empty: every thread busy).
pub(super) fn chunk(samples: usize, threads: usize, steps: usize, n: usize) -> usize {
    let per = samples.div_ceil(threads.max(1) * ITEMS_PER_THREAD);
    if per < LANES {
        return samples.div_ceil(threads.max(1)).max(1);
    }
    let sums = steps.max(1) * n.max(1) * std::mem::size_of::<i32>();
    let fit = (SUMS_BYTES / sums / LANES * LANES).max(LANES);
    per.next_multiple_of(LANES)
        .min(GROUPS_PER_ITEM * LANES)
        .min(fit)
}

/// One group's state, `[neuron][lane]`.
struct Group {
    cur: [f32; MAX_NEURONS * LANES],
    mem: [f32; MAX_NEURONS * LANES],
    v: [f32; MAX_NEURONS * LANES],
    peak: [f32; MAX_NEURONS * LANES],
    input: [i32; MAX_NEURONS * LANES],
    spiked: [u8; MAX_NEURONS * LANES],
    base: [u32; LANES],
}

/// Step the chunk `c`'s samples [`LANES`] at a time, its program's `segments` (one stage,
/// every neuron) from the chunk's synaptic `sums` (rows sample × steps + step, the program's
/// neurons wide): membranes into `mem` (`per` rows a sample, as [`super::run_sample`] writes
/// them), each sample's spikes appended to its list in `spikes`.
#[inline(always)]
pub(super) fn run(
    c: &Chunk<'_>,
    segments: &[Segment],
    sums: &[i32],
    mem: &mut MemOut<'_>,
    per: usize,
    spikes: &mut [Vec<SpikeEvent>],
) {
    let prog = c.prog;
    let (n, steps, samples) = (prog.n, c.opts.steps as usize, c.range.len());
    let (stride, offset) = (mem.stride, mem.offset);
    for g0 in (0..samples).step_by(LANES) {
        let lanes = (samples - g0).min(LANES);
        let mut g = Group {
            cur: [0.0; MAX_NEURONS * LANES],
            mem: [0.0; MAX_NEURONS * LANES],
            v: [0.0; MAX_NEURONS * LANES],
            peak: [f32::NEG_INFINITY; MAX_NEURONS * LANES],
            input: [0; MAX_NEURONS * LANES],
            spiked: [0; MAX_NEURONS * LANES],
            base: [0; LANES],
        };
        for (j, &rest) in prog.rest.iter().enumerate() {
            g.mem[j * LANES..(j + 1) * LANES].fill(rest);
        }
        for t in 0..steps {
            for l in 0..lanes {
                let row = &sums[((g0 + l) * steps + t) * n..][..n];
                for (j, &x) in row.iter().enumerate() {
                    g.input[j * LANES + l] = x;
                }
            }
            if prog.noisy {
                for (l, base) in g.base[..lanes].iter_mut().enumerate() {
                    let sample = c.opts.sample_base + (c.range.start + g0 + l) as u32;
                    *base = noise_base(c.opts.noise_seed, sample, t as u32);
                }
            }
            let mut any = 0u8;
            for seg in segments {
                for j in seg.lo..seg.hi {
                    let at = j * LANES;
                    let (input, cur, mem, v, spiked) = (
                        &g.input[at..at + LANES],
                        &mut g.cur[at..at + LANES],
                        &mut g.mem[at..at + LANES],
                        &mut g.v[at..at + LANES],
                        &mut g.spiked[at..at + LANES],
                    );
                    any |= match seg.kind {
                        Kind::Uniform(k) => {
                            neuron::<false>(&k, &g.base, input, cur, mem, v, spiked)
                        }
                        Kind::Varied { noisy: false } => {
                            let k = prog.coeffs.get(j);
                            neuron::<false>(&k, &g.base, input, cur, mem, v, spiked)
                        }
                        Kind::Varied { noisy: true } => {
                            let k = prog.coeffs.get(j);
                            neuron::<true>(&k, &g.base, input, cur, mem, v, spiked)
                        }
                        Kind::General { .. } => unreachable!("no lanes for refractory periods"),
                    };
                }
            }
            // What a step keeps, as [`super::advance`] keeps it: the maxima element by element
            // (the layout does not matter to them), else each sample's row.
            match c.membranes {
                Membranes::None => {}
                Membranes::Max => {
                    keep_membranes(Membranes::Max, prog.cadc, &mut g.peak, &mut g.v, &mut [])
                }
                kind => {
                    for l in 0..lanes {
                        let mut v = [0.0f32; MAX_NEURONS];
                        for (j, x) in v[..n].iter_mut().enumerate() {
                            *x = g.v[j * LANES + l];
                        }
                        let r = (g0 + l) * per + t;
                        let codes: &mut [u8] = match kind {
                            Membranes::Codes => row_in(mem.codes, stride, offset, r, n),
                            _ => &mut [],
                        };
                        keep_membranes(kind, prog.cadc, &mut [], &mut v[..n], codes);
                        if matches!(kind, Membranes::Trace | Membranes::Keep) {
                            row_in(mem.data, stride, offset, r, n).copy_from_slice(&v[..n]);
                        }
                    }
                }
            }
            if any != 0 {
                for j in 0..n {
                    for (l, out) in spikes[g0..g0 + lanes].iter_mut().enumerate() {
                        if g.spiked[j * LANES + l] != 0 {
                            out.push(SpikeEvent {
                                step: t as u32,
                                neuron: j as u32,
                            });
                        }
                    }
                }
            }
        }
        if c.membranes == Membranes::Max {
            for l in 0..lanes {
                let mut peak = [0.0f32; MAX_NEURONS];
                for (j, p) in peak[..n].iter_mut().enumerate() {
                    *p = g.peak[j * LANES + l];
                }
                write_peaks(prog.cadc, &peak[..n], mem.row(g0 + l, n));
            }
        }
    }
}

/// One neuron's step in every lane: [`super::uniform_loop`]'s arithmetic for neuron `c`
/// (both update orders, leaky or not), and with `NOISE` [`super::varied_loop`]'s (whose
/// neurons integrate the current input first: the other order with coefficients per neuron
/// is [`Kind::General`], not stepped here), the noise from each lane's `base`; returns whether
/// any lane spiked.
#[inline(always)]
fn neuron<const NOISE: bool>(
    c: &NeuronCoeffs,
    base: &[u32; LANES],
    input: &[i32],
    cur: &mut [f32],
    mem: &mut [f32],
    v: &mut [f32],
    spiked: &mut [u8],
) -> u8 {
    let (input, cur, mem, v, spiked) = (
        &input[..LANES],
        &mut cur[..LANES],
        &mut mem[..LANES],
        &mut v[..LANES],
        &mut spiked[..LANES],
    );
    let (mf, leaky, spiking) = (c.membrane_first != 0, c.leaky != 0, c.spiking != 0);
    let mut any = 0u8;
    for l in 0..LANES {
        let ni = c.a_syn * cur[l] + (c.weight_gain * (input[l] as f32 * c.input_scale) + c.bias);
        let drive = if mf { cur[l] } else { ni };
        let leak = if leaky { c.v_leak - mem[l] } else { 0.0 };
        let mut nv = mem[l] + c.k_mem * (leak + drive);
        if NOISE {
            nv += noise_value(c.noise_sd, c.noise_key, base[l]);
        }
        let spike = spiking & (nv >= c.v_th);
        cur[l] = ni;
        v[l] = nv;
        mem[l] = if spike { c.v_reset } else { nv };
        spiked[l] = spike as u8;
        any |= spike as u8;
    }
    any
}

//! Model parallelism: the partitions (chips) of every round of a plan spread over processes
//! (`--distribute chips`). Each process compiles and holds only its own partitions' synapses
//! and runs only them; a system run exchanges its cross-chip spikes after every window
//! ([`crate::backend::Backend::run_system`] with ranks), and after every round the processes
//! gather each other's outputs, so that every process records the whole round as one process
//! would and the next round, the scores and training see the same data everywhere. Which
//! process owns which partition depends only on the plan and the process count; nothing here
//! combines numbers in an order that depends on it.

use crate::backend::{PartitionOutput, RankTraffic};
use crate::dist::comm::Communicator;
use crate::error::{Error, Result};
use crate::plan::compile::PartitionProgram;
use crate::plan::partition::Plan;
use crate::plan::schedule::Schedule;
use crate::spikes::store::{SpikeEvent, SpikeTrains};

/// Expected work of a partition, in synapse-events: its synapses (delivered per input spike)
/// plus a synapse's worth per neuron for the neurons' own integration.
fn work(plan: &Plan, p: usize) -> u64 {
    let part = &plan.partitions[p];
    part.synapse_count as u64 + part.neuron_count() as u64
}

/// This process's share of a run spread over `ranks` processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankShare {
    /// Processes.
    pub ranks: usize,
    /// This one.
    pub rank: usize,
    /// Per partition: the process that runs it.
    pub owner: Vec<usize>,
}

impl RankShare {
    /// Process `rank` of `ranks`: the partitions of every round of `schedule` dealt out to the
    /// processes, largest expected work first, each to the least loaded process of the round
    /// so far, so that the processes of a round finish together; ties go to the process that
    /// holds the least over all rounds (its memory), then the lower index.
    pub fn new(plan: &Plan, schedule: &Schedule, ranks: usize, rank: usize) -> Self {
        let mut owner = vec![0; plan.partitions.len()];
        let mut held = vec![0u64; ranks.max(1)];
        for round in &schedule.rounds {
            let mut order: Vec<usize> = round.clone();
            order.sort_by_key(|&p| (std::cmp::Reverse(work(plan, p)), p));
            let mut load = vec![0u64; ranks.max(1)];
            for p in order {
                let r = (0..load.len())
                    .min_by_key(|&r| (load[r], held[r], r))
                    .expect("one process");
                load[r] += work(plan, p);
                held[r] += plan.partitions[p].synapse_count as u64;
                owner[p] = r;
            }
        }
        RankShare { ranks, rank, owner }
    }

    /// Whether this process runs partition `p`.
    pub fn owns(&self, p: usize) -> bool {
        self.owner[p] == self.rank
    }

    /// Per process: the compiled bytes of the synapses it holds (`bytes_per_synapse` each).
    pub fn memory(&self, plan: &Plan, bytes_per_synapse: u64) -> Vec<u64> {
        let mut m = vec![0u64; self.ranks.max(1)];
        for (p, &r) in self.owner.iter().enumerate() {
            m[r] += plan.partitions[p].synapse_count as u64 * bytes_per_synapse;
        }
        m
    }
}

/// `program` without its synapses: what a process keeps of another's partition (its neurons,
/// channels and sources, which say where the outputs it receives belong).
pub fn shell(mut program: PartitionProgram) -> PartitionProgram {
    program.synapses = Vec::new();
    program.weights = Vec::new();
    program.weight_runs = Vec::new();
    program.synapse_offsets.iter_mut().for_each(|o| *o = 0);
    program
}

/// Every process's outputs of one round, on every process: `outs[k]` is job `k`'s output
/// where this process ran it (`owner[k]` is this process), `None` elsewhere. One collective.
pub fn gather_outputs(
    comm: &dyn Communicator,
    owner: &[usize],
    outs: Vec<Option<PartitionOutput>>,
    traffic: &mut RankTraffic,
) -> Result<Vec<PartitionOutput>> {
    let mut words: Vec<u32> = Vec::new();
    for (k, out) in outs.iter().enumerate() {
        if let Some(o) = out {
            encode(k, o, &mut words);
        }
    }
    let t = std::time::Instant::now();
    let all = comm.all_gather_bytes(bytemuck::cast_slice(&words));
    traffic.gather += t.elapsed();
    traffic.gathers += 1;
    traffic.gather_bytes_sent += words.len() as u64 * 4;
    let mut result: Vec<Option<PartitionOutput>> = outs;
    for (r, bytes) in all.iter().enumerate() {
        if r == comm.rank() {
            continue;
        }
        traffic.gather_bytes_received += bytes.len() as u64;
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(bytes);
        let mut at = 0;
        while at < words.len() {
            let (k, out) = decode(&words, &mut at).ok_or_else(|| {
                Error::input(
                    format!("the outputs process {r} sent"),
                    format!("{} bytes that are not outputs of partitions", bytes.len()),
                )
            })?;
            if owner.get(k) != Some(&r) || result[k].is_some() {
                return Err(Error::input(
                    format!("the outputs process {r} sent"),
                    format!("job {k} of the round, which process {r} does not run"),
                ));
            }
            result[k] = Some(out);
        }
    }
    result
        .into_iter()
        .enumerate()
        .map(|(k, o)| {
            o.ok_or_else(|| {
                Error::input(
                    "the processes' outputs",
                    format!(
                        "job {k} of the round came from no process (its owner is process {})",
                        owner.get(k).copied().unwrap_or(usize::MAX)
                    ),
                )
            })
        })
        .collect()
}

/// Job `k`'s output as words: k, neurons, steps, samples, events, membrane values (low and
/// high word, `u32::MAX` twice: none), then the offsets, the events and the membranes.
fn encode(k: usize, o: &PartitionOutput, words: &mut Vec<u32>) {
    // Runs spread over processes record membranes as values.
    debug_assert!(o.codes.is_none(), "codes are not gathered");
    let s = &o.spikes;
    let mem = o.membrane.as_ref().map_or(u64::MAX, |m| m.len() as u64);
    words.extend_from_slice(&[
        k as u32,
        s.neurons as u32,
        s.steps,
        (s.offsets.len() - 1) as u32,
        s.events.len() as u32,
        mem as u32,
        (mem >> 32) as u32,
    ]);
    words.extend_from_slice(&s.offsets);
    words.extend_from_slice(bytemuck::cast_slice(&s.events));
    if let Some(m) = &o.membrane {
        words.extend_from_slice(bytemuck::cast_slice(m));
    }
}

fn decode(words: &[u32], at: &mut usize) -> Option<(usize, PartitionOutput)> {
    let head = words.get(*at..*at + 7)?;
    let (k, neurons, steps, samples, events) = (
        head[0] as usize,
        head[1] as usize,
        head[2],
        head[3] as usize,
        head[4] as usize,
    );
    let mem = head[5] as u64 | (head[6] as u64) << 32;
    *at += 7;
    let mut take = |n: usize| -> Option<&[u32]> {
        let w = words.get(*at..at.checked_add(n)?)?;
        *at += n;
        Some(w)
    };
    let offsets = take(samples + 1)?.to_vec();
    let ev: Vec<SpikeEvent> = bytemuck::pod_collect_to_vec(take(events.checked_mul(2)?)?);
    let membrane = if mem == u64::MAX {
        None
    } else {
        Some(bytemuck::pod_collect_to_vec(take(mem as usize)?))
    };
    Some((
        k,
        PartitionOutput {
            spikes: SpikeTrains {
                neurons,
                steps,
                offsets,
                events: ev,
            },
            membrane,
            codes: None,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_round_trip_through_words() {
        let o = PartitionOutput {
            spikes: SpikeTrains {
                neurons: 3,
                steps: 7,
                offsets: vec![0, 2, 2, 3],
                events: vec![
                    SpikeEvent { step: 1, neuron: 2 },
                    SpikeEvent { step: 6, neuron: 0 },
                    SpikeEvent { step: 0, neuron: 1 },
                ],
            },
            membrane: Some(vec![0.5, -1.25, f32::MIN_POSITIVE]),
            codes: None,
        };
        let none = PartitionOutput {
            spikes: SpikeTrains::empty(2, 4, 7),
            membrane: None,
            codes: None,
        };
        let mut w = Vec::new();
        encode(5, &o, &mut w);
        encode(1, &none, &mut w);
        let mut at = 0;
        let (k, a) = decode(&w, &mut at).expect("first");
        assert_eq!((k, &a.spikes, &a.membrane), (5, &o.spikes, &o.membrane));
        let (k, b) = decode(&w, &mut at).expect("second");
        assert_eq!((k, &b.spikes, b.membrane), (1, &none.spikes, None));
        assert_eq!(at, w.len());
        // Cut short: no output, no panic.
        let cut = &w[..w.len() - 1];
        let mut at = 0;
        assert!(decode(cut, &mut at).is_some());
        assert!(decode(cut, &mut at).is_none());
        assert!(decode(&w[..5], &mut 0).is_none());
    }
}

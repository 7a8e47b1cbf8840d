//! Ordering a plan's partitions for execution: the partition graph (an edge wherever one
//! partition replays another's spikes) sorted into waves of mutually independent partitions,
//! then into rounds of at most `chips` partitions each. Also what a real system would spend:
//! chip runs, host round trips and recorded/replayed channels. Nothing here runs anything.

use crate::plan::partition::{Origin, Plan};
use serde::Serialize;

/// What running a schedule costs on real hardware, per batch entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CostReport {
    /// Substrate runs (one per partition).
    pub chip_runs: usize,
    /// Rounds of (configure, run, read back): a host round trip each.
    pub host_round_trips: usize,
    /// Neurons whose spikes are recorded to the host because another partition reads them.
    pub recorded_channels: usize,
    /// Input channels fed from recorded spikes of other partitions.
    pub replayed_channels: usize,
    /// Input channels fed from the host's encoded input.
    pub host_input_channels: usize,
    /// Input channels fed live over a system's links by a partition of the same system run.
    pub linked_channels: usize,
}

/// Partitions ordered into waves and rounds.
#[derive(Clone, Debug, Serialize)]
pub struct Schedule {
    /// Chips: partitions that may run at the same time (1: sequential emulation).
    pub chips: usize,
    /// Waves: every partition's dependencies lie in earlier waves.
    pub waves: Vec<Vec<usize>>,
    /// Rounds: partitions that run at the same time (a wave split by the number of chips).
    pub rounds: Vec<Vec<usize>>,
    /// The cost report.
    pub cost: CostReport,
}

impl Schedule {
    /// Schedule `plan` for `chips` chips (at least 1). A plan placed on a system
    /// ([`Plan::system`]) runs as its system runs, each one round on the system's chips;
    /// `chips` is then ignored.
    pub fn new(plan: &Plan, chips: usize) -> Schedule {
        let chips = match &plan.substrate.system {
            Some(s) if plan.system.is_some() => s.chips,
            _ => chips.max(1),
        };
        let n = plan.partitions.len();
        let mut level = vec![0usize; n];
        // Partition ids are already topological, so one pass fixes every level.
        for p in &plan.partitions {
            for d in p.dependencies() {
                debug_assert!(d < p.id, "partition ids are topological (Plan::new)");
                level[p.id] = level[p.id].max(level[d] + 1);
            }
        }
        let depth = level.iter().map(|l| l + 1).max().unwrap_or(0);
        let mut waves = vec![Vec::new(); depth];
        for (p, &l) in level.iter().enumerate() {
            waves[l].push(p);
        }
        let rounds: Vec<Vec<usize>> = match &plan.system {
            Some(sp) => sp.runs.clone(),
            None => waves
                .iter()
                .flat_map(|w| w.chunks(chips).map(|c| c.to_vec()))
                .collect(),
        };
        // Recorded once even if several partitions replay it: mark the spans actually read.
        let mut read: Vec<Vec<bool>> = Vec::new();
        let (mut replayed, mut host, mut linked) = (0, 0, 0);
        for p in &plan.partitions {
            for s in &p.sources {
                match s.origin {
                    Origin::Host => host += s.channels,
                    Origin::Link(_) => linked += s.channels,
                    Origin::Partition(_) => {
                        replayed += s.channels;
                        if read.len() <= s.population {
                            read.resize(s.population + 1, Vec::new());
                        }
                        let mask = &mut read[s.population];
                        if mask.len() < s.span.1 {
                            mask.resize(s.span.1, false);
                        }
                        mask[s.span.0..s.span.1].fill(true);
                    }
                }
            }
        }
        let recorded = read.iter().flatten().filter(|&&r| r).count();
        let cost = CostReport {
            chip_runs: n,
            host_round_trips: rounds.len(),
            recorded_channels: recorded,
            replayed_channels: replayed,
            host_input_channels: host,
            linked_channels: linked,
        };
        Schedule {
            chips,
            waves,
            rounds,
            cost,
        }
    }

    /// Partitions in execution order.
    pub fn order(&self) -> impl Iterator<Item = usize> + '_ {
        self.rounds.iter().flatten().copied()
    }
}

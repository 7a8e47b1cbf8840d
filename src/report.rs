//! Human- and machine-readable views of a plan: the text `neuropart plan` prints and the same
//! as JSON (the placement drawing is [`crate::plot::placement`]). Presentation only.

use crate::network::Network;
use crate::partition::{Origin, Plan};
use crate::schedule::Schedule;
use serde::Serialize;
use std::fmt::Write as _;

/// One placed range, by name.
#[derive(Clone, Debug, Serialize)]
pub struct RangeReport {
    /// Population name.
    pub population: String,
    /// First neuron.
    pub offset: usize,
    /// Neurons.
    pub size: usize,
    /// Circuits per logical neuron.
    pub circuits_per_neuron: usize,
    /// Synapse rows the most connected neuron uses.
    pub rows_per_neuron: usize,
}

/// One source, by name.
#[derive(Clone, Debug, Serialize)]
pub struct SourceReport {
    /// Population name.
    pub population: String,
    /// "host" or "partition N".
    pub origin: String,
    /// Input channels.
    pub channels: usize,
    /// Span of source neurons.
    pub span: (usize, usize),
}

/// One partition.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionReport {
    /// Id.
    pub id: usize,
    /// Logical neurons.
    pub neurons: usize,
    /// Circuits used of the substrate's.
    pub circuits_used: usize,
    /// Circuits available.
    pub circuits_available: usize,
    /// Largest synapse-row use of one circuit column.
    pub rows_used: usize,
    /// Placed ranges.
    pub ranges: Vec<RangeReport>,
    /// Inputs.
    pub sources: Vec<SourceReport>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct PlanReport {
    /// Network name.
    pub network: String,
    /// Substrate name.
    pub substrate: String,
    /// Chips.
    pub chips: usize,
    /// Partitions.
    pub partitions: Vec<PartitionReport>,
    /// The schedule (waves, rounds, cost).
    pub schedule: Schedule,
}

impl PlanReport {
    /// Build the report.
    pub fn new(network: &Network, plan: &Plan, schedule: &Schedule) -> Self {
        let chips = schedule.chips;
        let name = |p: usize| network.populations[p].name.clone();
        let partitions = plan
            .partitions
            .iter()
            .map(|p| PartitionReport {
                id: p.id,
                neurons: p.neuron_count(),
                circuits_used: p.circuits_used,
                circuits_available: plan.substrate.circuits(),
                rows_used: p
                    .parts
                    .iter()
                    .map(|r| r.rows_per_neuron.div_ceil(r.circuits_per_neuron))
                    .max()
                    .unwrap_or(0),
                ranges: p
                    .parts
                    .iter()
                    .map(|r| RangeReport {
                        population: name(r.neurons.population),
                        offset: r.neurons.offset,
                        size: r.neurons.size,
                        circuits_per_neuron: r.circuits_per_neuron,
                        rows_per_neuron: r.rows_per_neuron,
                    })
                    .collect(),
                sources: p
                    .sources
                    .iter()
                    .map(|s| SourceReport {
                        population: name(s.population),
                        origin: match s.origin {
                            Origin::Host => "host".into(),
                            Origin::Partition(k) => format!("partition {k}"),
                        },
                        channels: s.channels,
                        span: s.span,
                    })
                    .collect(),
            })
            .collect();
        PlanReport {
            network: network.name.clone(),
            substrate: plan.substrate.name.clone(),
            chips,
            partitions,
            schedule: schedule.clone(),
        }
    }

    /// The text `neuropart plan` prints.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "network '{}' on {} x {}: {} partitions",
            self.network,
            self.chips,
            self.substrate,
            self.partitions.len()
        );
        for p in &self.partitions {
            let _ = writeln!(
                s,
                "partition {}: {} neurons, {}/{} circuits, up to {} synapse rows per circuit",
                p.id, p.neurons, p.circuits_used, p.circuits_available, p.rows_used
            );
            for r in &p.ranges {
                let _ = writeln!(
                    s,
                    "  {}[{}..{}]: {} neurons x {} circuits ({} synapse rows each)",
                    r.population,
                    r.offset,
                    r.offset + r.size,
                    r.size,
                    r.circuits_per_neuron,
                    r.rows_per_neuron
                );
            }
            for src in &p.sources {
                let _ = writeln!(
                    s,
                    "  <- {}[{}..{}] from {}: {} channels",
                    src.population, src.span.0, src.span.1, src.origin, src.channels
                );
            }
        }
        let sch = &self.schedule;
        let _ = writeln!(s, "waves:");
        for (k, w) in sch.waves.iter().enumerate() {
            let _ = writeln!(s, "  wave {k}: partitions {}", id_ranges(w));
        }
        let width = sch.rounds.iter().map(Vec::len).max().unwrap_or(0);
        let listed = if sch.rounds.len() <= 16 {
            sch.rounds
                .iter()
                .map(|r| id_ranges(r))
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            format!(
                "{} ... {}",
                id_ranges(&sch.rounds[0]),
                id_ranges(sch.rounds.last().expect("more than 16"))
            )
        };
        let _ = writeln!(
            s,
            "rounds ({} chip{}: up to {width} partition{} at the same time): {} rounds: {listed}",
            sch.chips,
            if sch.chips == 1 { "" } else { "s" },
            if width == 1 { "" } else { "s" },
            sch.rounds.len(),
        );
        let c = &sch.cost;
        let _ = writeln!(
            s,
            "cost: {} chip runs, {} host round trips, {} channels recorded, {} replayed from \
             partitions, {} from the host (per sample, at most one spike each under TTFS input)",
            c.chip_runs,
            c.host_round_trips,
            c.recorded_channels,
            c.replayed_channels,
            c.host_input_channels
        );
        s
    }
}

/// Partition ids as bracketed runs of consecutive ids: `[0-255]`, `[4]`, `[1, 3-5]`.
pub fn id_ranges(ids: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut k = 0;
    while k < ids.len() {
        let mut e = k;
        while e + 1 < ids.len() && ids[e + 1] == ids[e] + 1 {
            e += 1;
        }
        parts.push(if e == k {
            ids[k].to_string()
        } else {
            format!("{}-{}", ids[k], ids[e])
        });
        k = e + 1;
    }
    format!("[{}]", parts.join(", "))
}

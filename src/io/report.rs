//! Human- and machine-readable views of a plan: the text `neuropart plan` prints and the same
//! as JSON (the placement drawing is [`crate::io::plot::placement`]). Presentation only.

use crate::model::network::Network;
use crate::plan::partition::{Origin, Plan};
use crate::plan::schedule::Schedule;
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
    /// The chip of its system run it lies on (with a system).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chip: Option<usize>,
    /// Its system run (with a system).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_run: Option<usize>,
}

/// One link's expected traffic.
#[derive(Clone, Debug, Serialize)]
pub struct LinkReport {
    /// Its name ("chip 3 -> hub").
    pub link: String,
    /// Source neurons whose spikes cross it (one event per spike of each).
    pub channels: u64,
}

/// The placement on a multi-chip system.
#[derive(Clone, Debug, Serialize)]
pub struct SystemReport {
    /// Chips of the system.
    pub chips: usize,
    /// Topology.
    pub topology: crate::model::system::LinkTopology,
    /// How feed-forward partitions were placed.
    pub placement: crate::plan::partition::Placement,
    /// Per system run: the partitions, the k-th on chip k.
    pub system_runs: Vec<Vec<usize>>,
    /// Most chips one system run uses.
    pub chips_used: usize,
    /// Circuits used per chip, per system run.
    pub circuits_per_chip: Vec<Vec<usize>>,
    /// The delivery delay (the lock-step window) in steps.
    pub delay_steps: u32,
    /// Synapses whose source lies on another chip of the same run.
    pub cross_chip_synapses: usize,
    /// Expected traffic per link that carries any (busiest first).
    pub links: Vec<LinkReport>,
    /// Estimated hardware time per sample: system runs × (configure + T·dt + host round
    /// trip), in µs.
    pub hardware_us_per_sample: f64,
    /// What the real system would object to.
    pub warnings: Vec<String>,
}

impl SystemReport {
    /// The report of `plan`'s placement (`None` without a system) for runs of `steps`.
    pub fn new(plan: &Plan, steps: u32) -> Option<Self> {
        let (sys, sp) = (plan.substrate.system.as_ref()?, plan.system.as_ref()?);
        let links = sys.links();
        let mut busy: Vec<LinkReport> = sp
            .link_channels
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(l, &c)| LinkReport {
                link: links.names[l].clone(),
                channels: c,
            })
            .collect();
        busy.sort_by_key(|l| std::cmp::Reverse(l.channels));
        let mut warnings = Vec::new();
        let latency = links.longest_route() as f32 * sys.hop_latency_us;
        let used_links = sp.link_channels.iter().any(|&c| c > 0);
        if used_links && latency > sys.delivery_delay_us {
            warnings.push(format!(
                "the delivery delay ({} us) is shorter than the latency of the longest route \
                 ({} hops x {} us = {latency} us): a real system would drop those spikes as late",
                sys.delivery_delay_us,
                links.longest_route(),
                sys.hop_latency_us
            ));
        }
        let dt = plan.substrate.dt_us;
        let delay = sys.delay_steps(dt);
        if (delay as f32 * dt - sys.delivery_delay_us).abs() > 1e-3 * dt {
            warnings.push(format!(
                "the delivery delay of {} us is emulated as {delay} step{} of {dt} us",
                sys.delivery_delay_us,
                if delay == 1 { "" } else { "s" }
            ));
        }
        Some(SystemReport {
            chips: sys.chips,
            topology: sys.topology,
            placement: sp.placement,
            system_runs: sp.runs.clone(),
            chips_used: sp.runs.iter().map(Vec::len).max().unwrap_or(0),
            circuits_per_chip: sp
                .runs
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|&p| plan.partitions[p].circuits_used)
                        .collect()
                })
                .collect(),
            delay_steps: sp.delay_steps,
            cross_chip_synapses: sp.cross_chip_synapses,
            links: busy,
            hardware_us_per_sample: sys.hardware_us(sp.runs.len(), steps, dt),
            warnings,
        })
    }

    /// Lines for a person.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "system: {} chips ({}), {} placement: {} system run{}, up to {} chips at the same \
             time, delivery delay {} step{}",
            self.chips,
            self.topology.name(),
            format!("{:?}", self.placement).to_lowercase(),
            self.system_runs.len(),
            if self.system_runs.len() == 1 { "" } else { "s" },
            self.chips_used,
            self.delay_steps,
            if self.delay_steps == 1 { "" } else { "s" },
        );
        for (r, (run, circ)) in self
            .system_runs
            .iter()
            .zip(&self.circuits_per_chip)
            .enumerate()
        {
            if r == 8 && self.system_runs.len() > 9 {
                let _ = writeln!(s, "  ... {} more system runs", self.system_runs.len() - 8);
                break;
            }
            let chips: Vec<String> = run
                .iter()
                .zip(circ)
                .enumerate()
                .map(|(c, (p, u))| format!("chip {c}: partition {p} ({u} circuits)"))
                .collect();
            let shown = if chips.len() > 6 {
                format!(
                    "{}, ... {}",
                    chips[..5].join(", "),
                    chips.last().expect("many")
                )
            } else {
                chips.join(", ")
            };
            let _ = writeln!(s, "  system run {r}: {shown}");
        }
        let _ = writeln!(
            s,
            "  cross-chip synapses: {}; links carrying spikes: {}",
            self.cross_chip_synapses,
            self.links.len()
        );
        for l in self.links.iter().take(6) {
            let _ = writeln!(
                s,
                "    {}: spikes of {} neurons (one event per spike)",
                l.link, l.channels
            );
        }
        if self.links.len() > 6 {
            let _ = writeln!(s, "    ... {} more links", self.links.len() - 6);
        }
        let _ = writeln!(
            s,
            "  estimated hardware time: {:.1} us per sample (system runs x (configure + T x dt + \
             host round trip))",
            self.hardware_us_per_sample
        );
        for w in &self.warnings {
            let _ = writeln!(s, "  warning: {w}");
        }
        s
    }
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
    /// The placement on a multi-chip system, if the substrate has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemReport>,
    /// What the network's synapses take in memory when it runs.
    pub memory: MemoryReport,
}

/// The memory a network's synapses take when it runs (`neuropart plan`): what `--max-memory`
/// is checked against, besides the run's recorded spikes and traces.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryReport {
    /// Synapses of every partition.
    pub synapses: u64,
    /// The network's weights (f32), bytes.
    pub weight_bytes: u64,
    /// The compiled synapses, bytes (at most
    /// [`crate::memory::COMPILED_BYTES_PER_SYNAPSE`] each).
    pub compiled_bytes: u64,
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
                            Origin::Link(k) => format!("partition {k} over links"),
                        },
                        channels: s.channels,
                        span: s.span,
                    })
                    .collect(),
                chip: p.chip,
                system_run: p.system_run,
            })
            .collect();
        let synapses = plan.synapse_count();
        PlanReport {
            network: network.name.clone(),
            substrate: plan.substrate.name.clone(),
            chips,
            partitions,
            schedule: schedule.clone(),
            system: SystemReport::new(plan, network.steps),
            memory: MemoryReport {
                synapses,
                weight_bytes: crate::memory::product(&[synapses, 4]),
                compiled_bytes: crate::memory::product(&[
                    synapses,
                    crate::memory::COMPILED_BYTES_PER_SYNAPSE,
                ]),
            },
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
        let m = &self.memory;
        let _ = writeln!(
            s,
            "memory: {} synapses: {} of weights (f32) and up to {} compiled when it runs ({} \
             bytes a synapse)",
            m.synapses,
            crate::error::human_bytes(m.weight_bytes),
            crate::error::human_bytes(m.compiled_bytes),
            crate::memory::COMPILED_BYTES_PER_SYNAPSE
        );
        if let Some(sys) = &self.system {
            s += &sys.text();
        }
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

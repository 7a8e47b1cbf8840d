//! Human- and machine-readable views of a plan: the text `neuropart plan` prints, the same as
//! JSON, and a PNG of the placement on the chip (like the paper's Fig. 3B). Presentation only.

use crate::draw::{lighten, Canvas, PALETTE};
use crate::error::Result;
use crate::network::Network;
use crate::partition::{Origin, Plan};
use crate::schedule::Schedule;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

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
    pub fn new(network: &Network, plan: &Plan, schedule: &Schedule, chips: usize) -> Self {
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
            "rounds ({:?}: up to {width} partition{} at the same time): {} rounds: {listed}",
            sch.mode,
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

/// Draw each partition's placement on the chip: synapse array above and below, the
/// neuron-circuit rows between, one colour per population, alternating shades per logical
/// neuron, shaded synapse rows in use.
pub fn draw_placement(network: &Network, plan: &Plan, path: &Path) -> Result<()> {
    let sub = &plan.substrate;
    let cols = sub.circuits_per_hemisphere as i64;
    let cw = (900 / cols).clamp(1, 4);
    let rows = sub.synapse_rows_per_hemisphere as i64;
    let rh = 64.max(rows / 4).min(rows);
    let row_scale = rows as f64 / rh as f64;
    let nh = sub.hemispheres as i64;
    let arrays_h = rh * nh.min(2);
    let panel_h = 26 + arrays_h + nh * 14 + 12;
    let width = 20 + cols * cw + 20;
    let n = plan.partitions.len() as i64;
    let mut cv = Canvas::new(width as u32, (panel_h * n + 10) as u32);
    for (pi, part) in plan.partitions.iter().enumerate() {
        let y0 = pi as i64 * panel_h + 6;
        let names: Vec<String> = part
            .parts
            .iter()
            .map(|r| {
                format!(
                    "{}[{}..{}] x{}c",
                    network.populations[r.neurons.population].name,
                    r.neurons.offset,
                    r.neurons.offset + r.neurons.size,
                    r.circuits_per_neuron
                )
            })
            .collect();
        let fan: usize = part.channel_count();
        cv.text(
            20,
            y0,
            &format!("run {}: {}  <- {} inputs", part.id, names.join(" "), fan),
            1,
            [0, 0, 0],
        );
        // Which circuit holds which (part, neuron).
        let mut owner: Vec<Option<(usize, usize)>> = vec![None; sub.circuits()];
        for (k, r) in part.parts.iter().enumerate() {
            for j in 0..r.neurons.size {
                for c in part.circuit_of(sub, k, j) {
                    if c < owner.len() {
                        owner[c] = Some((k, j));
                    }
                }
            }
        }
        let top = y0 + 14;
        for h in 0..nh {
            // Array of hemisphere 0 above its neuron row, of hemisphere 1 below its row.
            let row_y = top + rh + h * 14 + 2;
            let array_y = if h == 0 { top } else { top + rh + nh * 14 + 4 };
            for col in 0..cols {
                let c = (h * cols + col) as usize;
                let x = 20 + col * cw;
                if let Some((k, j)) = owner[c] {
                    let r = &part.parts[k];
                    let base = PALETTE[r.neurons.population % PALETTE.len()];
                    let colour = if j % 2 == 0 {
                        base
                    } else {
                        lighten(base, 0.45)
                    };
                    cv.rect(x, row_y, cw, 12, colour);
                    let used = r.rows_per_neuron.div_ceil(r.circuits_per_neuron) as f64;
                    let used_px = (used / row_scale).ceil() as i64;
                    if h < 2 {
                        let (ya, hgt) = if h == 0 {
                            (array_y + rh - used_px, used_px)
                        } else {
                            (array_y, used_px)
                        };
                        cv.rect(x, ya, cw, hgt, lighten(base, 0.6));
                    }
                } else {
                    cv.rect(x, row_y, cw, 12, [235, 235, 235]);
                }
            }
            if h < 2 {
                cv.frame(19, array_y - 1, cols * cw + 2, rh + 2, [120, 120, 120]);
            }
        }
    }
    cv.save(path)
}

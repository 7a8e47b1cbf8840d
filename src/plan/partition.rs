//! Cutting a network into partitions that each fit one substrate, the way the chip's own
//! software does it: every neuron in exactly one partition, every recurrent subnetwork
//! (strongly connected component) whole inside one, logical neurons joined from as many circuits
//! as their fan-in needs, and a layer too large for one substrate split into `{offset, size}`
//! ranges. This module decides *where* neurons go; it never runs anything.

use crate::error::{Error, Result};
use crate::model::network::{Network, PopulationId, PopulationKind};
use crate::model::substrate::Substrate;
use serde::Serialize;
use std::ops::Range;

/// A contiguous range of one population's neurons.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NeuronRange {
    /// The population.
    pub population: PopulationId,
    /// First neuron.
    pub offset: usize,
    /// Number of neurons.
    pub size: usize,
}

impl NeuronRange {
    /// The neuron indices.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.size
    }
}

/// A population range placed on a substrate's circuits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlacedRange {
    /// Which neurons.
    pub neurons: NeuronRange,
    /// Circuits joined into each logical neuron.
    pub circuits_per_neuron: usize,
    /// Synapse rows the most connected neuron uses (signed inputs count twice).
    pub rows_per_neuron: usize,
    /// First slot: counted separately for neurons spanning all hemispheres and for single-row
    /// neurons (see [`Partition::circuit_of`]).
    pub first_slot: usize,
    /// Stage within a time step: zero-delay connections inside a partition go from a lower
    /// stage to a higher one.
    pub stage: usize,
}

/// Where a partition's input spikes come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Encoded input from the host.
    Host,
    /// Recorded from another partition and replayed.
    Partition(usize),
    /// Sent live over the system's links by another partition of the same system run.
    Link(usize),
}

/// Spikes one partition reads from outside itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Source {
    /// Source population.
    pub population: PopulationId,
    /// Where its spikes come from.
    pub origin: Origin,
    /// Span of the source neurons needed (first..last+1).
    pub span: (usize, usize),
    /// Distinct source neurons needed (each one input channel of the partition).
    pub channels: usize,
}

/// One run of the substrate: a set of placed neuron ranges and the sources it reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// Index in [`Plan::partitions`] (also a valid topological order).
    pub id: usize,
    /// The neurons, in stage order.
    pub parts: Vec<PlacedRange>,
    /// Circuits in use.
    pub circuits_used: usize,
    /// Circuits used by neurons spanning all hemispheres (placed first).
    pub spanning_circuits: usize,
    /// External inputs.
    pub sources: Vec<Source>,
    /// Synapses onto this partition's neurons.
    pub synapse_count: usize,
    /// The chip of its system run it lies on (with a `[system]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chip: Option<usize>,
    /// The system run it belongs to (with a `[system]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_run: Option<usize>,
}

impl Partition {
    /// Neurons on this partition.
    pub fn neuron_count(&self) -> usize {
        self.parts.iter().map(|p| p.neurons.size).sum()
    }

    /// Distinct external input channels.
    pub fn channel_count(&self) -> usize {
        self.sources.iter().map(|s| s.channels).sum()
    }

    /// Partitions this one reads replayed spikes from (not those of its own system run, whose
    /// spikes arrive over links while both run).
    pub fn dependencies(&self) -> Vec<usize> {
        let mut d: Vec<usize> = self
            .sources
            .iter()
            .filter_map(|s| match s.origin {
                Origin::Partition(p) => Some(p),
                Origin::Host | Origin::Link(_) => None,
            })
            .collect();
        d.sort_unstable();
        d.dedup();
        d
    }

    /// Circuits (global index `hemisphere * circuits_per_hemisphere + column`) of neuron
    /// `k` of part `part`. A logical neuron whose circuit count is a multiple of the number of
    /// hemispheres spans all hemispheres in the same columns (as on BSS-2); a smaller one sits
    /// in consecutive circuits of one row.
    pub fn circuit_of(&self, substrate: &Substrate, part: usize, k: usize) -> Vec<usize> {
        let p = &self.parts[part];
        let c = p.circuits_per_neuron;
        let h = substrate.hemispheres;
        let cph = substrate.circuits_per_hemisphere;
        let slot = p.first_slot + k * c;
        if c.is_multiple_of(h) {
            // Spanning neurons take the same columns in every hemisphere, from column 0 up.
            let col = slot / h;
            (0..h)
                .flat_map(|hh| (0..c / h).map(move |j| hh * cph + col + j))
                .collect()
        } else {
            // Single-row neurons fill the columns the spanning ones left, row by row.
            let col0 = self.spanning_circuits.div_ceil(h);
            let free = cph - col0;
            (slot..slot + c)
                .map(|s| (s / free) * cph + col0 + s % free)
                .collect()
        }
    }
}

/// How feed-forward partitions are placed on the chips of a system.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Concurrent when the whole network fits one system run, else sequential.
    #[default]
    Auto,
    /// As many partitions as the system has chips per system run, in dependency order;
    /// partitions of one run that depend on each other exchange spikes over the links while
    /// they run.
    Concurrent,
    /// Only independent partitions share a system run (a wave split by the chips); every
    /// dependency between feed-forward partitions goes through the host. A recurrent
    /// subnetwork larger than a chip still spans chips of one run.
    Sequential,
}

/// Choices the partitioner may make.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionOptions {
    /// Put consecutive layers that each fit one substrate into one run ("may share one run").
    /// Off by default, as in the paper's figures.
    pub merge_layers: bool,
    /// How partitions are placed on a system's chips (no effect without a `[system]`).
    pub placement: Placement,
}

/// A plan's placement on a multi-chip system.
#[derive(Clone, Debug, Serialize)]
pub struct SystemPlan {
    /// The placement used (never `auto`).
    pub placement: Placement,
    /// Per system run: its partitions, the k-th on chip k.
    pub runs: Vec<Vec<usize>>,
    /// The window of the lock-step execution: the delivery delay in steps.
    pub delay_steps: u32,
    /// Synapses whose source neuron lies on another chip of the same system run.
    pub cross_chip_synapses: usize,
    /// Per link: source neurons whose spikes cross it (each crossing is one event per spike),
    /// summed over the system runs.
    pub link_channels: Vec<u64>,
    /// Per projection: its synapses whose source lies on another chip of the same run.
    pub cross_per_projection: Vec<usize>,
}

/// The result of partitioning: partitions in a topological order, and the substrate they fit.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// The substrate every partition fits.
    pub substrate: Substrate,
    /// The partitions; ids increase along dependencies (between system runs).
    pub partitions: Vec<Partition>,
    /// The placement on the substrate's system, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemPlan>,
}

struct Unit {
    ranges: Vec<NeuronRange>,
    circuits: usize,
    whole: bool,
    /// The recurrent subnetwork spanning chips it is a piece of.
    spans: Option<usize>,
}

impl Plan {
    /// Synapses of every partition together.
    pub fn synapse_count(&self) -> u64 {
        self.partitions.iter().map(|p| p.synapse_count as u64).sum()
    }

    /// Partition `network` (validated, weights drawn) for `substrate`, without placing the
    /// partitions on a system's chips ([`Plan::new`] does that too); with each partition, the
    /// recurrent subnetwork spanning chips it is a piece of.
    pub(crate) fn cut(
        network: &Network,
        substrate: &Substrate,
        opts: &PartitionOptions,
    ) -> Result<(Plan, Vec<Option<usize>>)> {
        substrate.validate()?;
        network.check(substrate)?;
        // Planning keeps a few counters per neuron (fan-in, rows, channel masks).
        let neurons: u64 = network.populations.iter().map(|p| p.size as u64).sum();
        crate::memory::check(
            || format!("planning {} neurons", neurons),
            crate::memory::product(&[neurons, 32]),
        )?;
        let npop = network.populations.len();
        let ends = network.all_endpoints()?;
        // Circuits per logical neuron, and rows, per population.
        let mut circuits = vec![0usize; npop];
        let mut rows = vec![0usize; npop];
        let max_rows = substrate.max_circuits_per_neuron.min(substrate.circuits())
            * substrate.rows_per_circuit();
        for (p, pop) in network.populations.iter().enumerate() {
            if pop.kind == PopulationKind::Input {
                continue;
            }
            let (r, fan_in) = network.rows_needed(p, substrate)?;
            rows[p] = r;
            circuits[p] = substrate
                .circuits_for_rows(r)
                .ok_or_else(|| Error::FanInExceeded {
                    population: pop.name.clone(),
                    fan_in,
                    needed: r,
                    available: max_rows,
                    max_circuits: substrate.max_circuits_per_neuron.min(substrate.circuits()),
                })?;
        }
        let total = substrate.circuits();
        let mut self_loop = vec![false; npop];
        for &(s, t) in &ends {
            if s == t {
                self_loop[s] = true;
            }
        }
        // Units in topological order.
        let mut units = Vec::new();
        for comp in network.components()? {
            if network.populations[comp[0]].kind == PopulationKind::Input {
                continue;
            }
            let need: usize = comp
                .iter()
                .map(|&p| network.populations[p].size * circuits[p])
                .sum();
            let recurrent = comp.len() > 1 || self_loop[comp[0]];
            if recurrent {
                if need > total {
                    let names: Vec<&str> = comp
                        .iter()
                        .map(|&p| network.populations[p].name.as_str())
                        .collect();
                    let Some(system) = &substrate.system else {
                        return Err(Error::RecurrentTooLarge {
                            populations: names.join(", "),
                            needed: need,
                            available: total,
                        });
                    };
                    let sizes: Vec<(PopulationId, usize, usize)> = comp
                        .iter()
                        .map(|&p| (p, network.populations[p].size, circuits[p]))
                        .collect();
                    let pieces = split_component(&sizes, total, system.chips).ok_or_else(|| {
                        Error::RecurrentTooLargeForSystem {
                            populations: names.join(", "),
                            needed: need,
                            chips: system.chips,
                            per_chip: total,
                        }
                    })?;
                    let group = units.len();
                    for ranges in pieces {
                        let circuits = ranges.iter().map(|r| r.size * circuits[r.population]).sum();
                        units.push(Unit {
                            ranges,
                            circuits,
                            whole: false,
                            spans: Some(group),
                        });
                    }
                    continue;
                }
                units.push(Unit {
                    ranges: comp
                        .iter()
                        .map(|&p| NeuronRange {
                            population: p,
                            offset: 0,
                            size: network.populations[p].size,
                        })
                        .collect(),
                    circuits: need,
                    whole: true,
                    spans: None,
                });
                continue;
            }
            let p = comp[0];
            let size = network.populations[p].size;
            let per = total / circuits[p];
            // More pieces while a piece reads more input channels than one run may: the
            // fewest that fit, found by doubling and then bisecting (each test scans the
            // layer's synapses once).
            let limit = substrate.channels_per_run();
            let fits = |pieces: usize| -> Result<bool> {
                for (o, l) in split_range(size, pieces) {
                    if channels_of(network, &ends, p, o..o + l)? > limit {
                        return Ok(false);
                    }
                }
                Ok(true)
            };
            let mut pieces = size.div_ceil(per);
            if !fits(pieces)? {
                let mut lo = pieces;
                let mut hi = (pieces * 2).min(size);
                while hi < size && !fits(hi)? {
                    lo = hi;
                    hi = (hi * 2).min(size);
                }
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if fits(mid)? {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                pieces = hi;
            }
            for (offset, len) in split_range(size, pieces) {
                units.push(Unit {
                    ranges: vec![NeuronRange {
                        population: p,
                        offset,
                        size: len,
                    }],
                    circuits: len * circuits[p],
                    whole: pieces == 1,
                    spans: None,
                });
            }
        }
        // Group units into partitions.
        let mut groups: Vec<(Vec<NeuronRange>, usize, bool)> = Vec::new();
        let mut spans: Vec<Option<usize>> = Vec::new();
        for u in units {
            if let Some(last) = groups.last_mut() {
                if opts.merge_layers && u.whole && last.2 && last.1 + u.circuits <= total {
                    last.0.extend(u.ranges);
                    last.1 += u.circuits;
                    continue;
                }
            }
            groups.push((u.ranges, u.circuits, u.whole));
            spans.push(u.spans);
        }
        let mut owner: Vec<Vec<(Range<usize>, usize)>> = vec![Vec::new(); npop];
        for (id, g) in groups.iter().enumerate() {
            for r in &g.0 {
                owner[r.population].push((r.range(), id));
            }
        }
        let delays = network.effective_delays()?;
        let mut partitions = Vec::with_capacity(groups.len());
        for (id, (ranges, used, _)) in groups.into_iter().enumerate() {
            // Stages: a range follows every range of this partition it receives from with delay 0.
            let mut stage = vec![0usize; ranges.len()];
            for (j, rj) in ranges.iter().enumerate() {
                for (&d, &(s, t)) in delays.iter().zip(&ends) {
                    if t != rj.population || d != 0 {
                        continue;
                    }
                    for (i, ri) in ranges[..j].iter().enumerate() {
                        if ri.population == s {
                            stage[j] = stage[j].max(stage[i] + 1);
                        }
                    }
                }
            }
            let mut order: Vec<usize> = (0..ranges.len()).collect();
            order.sort_by_key(|&j| (stage[j], ranges[j].population, ranges[j].offset));
            // Spanning neurons take columns from the left in every hemisphere; single-row
            // neurons fill what is left. Each kind counts its own slots.
            let h = substrate.hemispheres;
            let (mut span_slot, mut row_slot) = (0, 0);
            let mut parts = Vec::new();
            for &j in &order {
                let r = &ranges[j];
                let c = circuits[r.population];
                let slot = if c.is_multiple_of(h) {
                    &mut span_slot
                } else {
                    &mut row_slot
                };
                parts.push(PlacedRange {
                    neurons: r.clone(),
                    circuits_per_neuron: c,
                    rows_per_neuron: rows[r.population],
                    first_slot: *slot,
                    stage: stage[j],
                });
                *slot += c * r.size;
            }
            let spanning_circuits = parts
                .iter()
                .filter(|p| p.circuits_per_neuron.is_multiple_of(h))
                .map(|p| p.circuits_per_neuron * p.neurons.size)
                .sum();
            let (sources, synapse_count) = sources_of(network, &ends, &parts, &owner, id)?;
            let channels: usize = sources.iter().map(|s| s.channels).sum();
            if channels > substrate.channels_per_run() {
                let by_field = substrate.input_channels_per_run != 0
                    && substrate.input_channels_per_run < substrate.addressable_sources();
                return Err(Error::InputSourcesExceeded {
                    population: parts
                        .iter()
                        .map(|p| {
                            let r = &p.neurons;
                            format!(
                                "{}[{}..{}]",
                                network.populations[r.population].name,
                                r.offset,
                                r.offset + r.size
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                    needed: channels,
                    available: substrate.channels_per_run(),
                    limit: if by_field {
                        format!(
                            "the substrate's input_channels_per_run = {}",
                            substrate.input_channels_per_run
                        )
                    } else {
                        "the substrate's synapse-row addressing (hemispheres x \
                         synapse_rows_per_hemisphere x sources_per_row / rows_per_signed_input)"
                            .to_string()
                    },
                });
            }
            partitions.push(Partition {
                id,
                parts,
                circuits_used: used,
                spanning_circuits,
                sources,
                synapse_count,
                chip: None,
                system_run: None,
            });
        }
        let plan = Plan {
            substrate: substrate.clone(),
            partitions,
            system: None,
        };
        Ok((plan, spans))
    }
}

/// The steps a system's links add to the synapses of one projection ([`Plan::link_delays`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkSteps {
    /// The same for every synapse: the delivery delay where every synapse crosses chips of
    /// one system run, 0 where none does.
    All(u32),
    /// Per synapse, in the order of [`Network::for_each_synapse_index`] over all targets: a
    /// projection whose source and target populations are each split over chips, so that some
    /// of its spikes cross a link and the others stay on their chip (two delays).
    Each(Vec<u32>),
}

impl LinkSteps {
    /// The steps of every synapse where they are all the same.
    pub fn uniform(&self) -> Option<u32> {
        match self {
            LinkSteps::All(d) => Some(*d),
            LinkSteps::Each(_) => None,
        }
    }
}

impl Plan {
    /// Steps each projection's spikes spend on a system's links, per projection: the same for
    /// all its synapses, or (where only some cross chips of one system run) per synapse.
    pub fn link_delays(&self, network: &Network) -> Result<Vec<LinkSteps>> {
        let n = network.projections.len();
        let Some(sp) = &self.system else {
            return Ok(vec![LinkSteps::All(0); n]);
        };
        (0..n)
            .map(|p| {
                let cross = sp.cross_per_projection.get(p).copied().unwrap_or(0);
                if cross == 0 {
                    return Ok(LinkSteps::All(0));
                }
                let (src, tgt) = network.endpoints(p)?;
                // (run, chip) of every neuron of the two populations (NONE: not in a system
                // run's partitions).
                const NONE: (usize, usize) = (usize::MAX, usize::MAX);
                let mut at_src = vec![NONE; network.populations[src].size];
                let mut at_tgt = vec![NONE; network.populations[tgt].size];
                for (r, run) in sp.runs.iter().enumerate() {
                    for (c, &part) in run.iter().enumerate() {
                        for placed in &self.partitions[part].parts {
                            let nr = &placed.neurons;
                            if nr.population == src {
                                at_src[nr.range()].fill((r, c));
                            }
                            if nr.population == tgt {
                                at_tgt[nr.range()].fill((r, c));
                            }
                        }
                    }
                }
                let mut steps = Vec::new();
                let mut crossing = 0;
                network.for_each_synapse_index(p, 0..at_tgt.len(), |pre, post, _| {
                    let (a, b) = (at_src[pre], at_tgt[post]);
                    let crosses = a != NONE && a.0 == b.0 && a.1 != b.1;
                    crossing += usize::from(crosses);
                    steps.push(if crosses { sp.delay_steps } else { 0 });
                })?;
                if crossing != cross {
                    return Err(Error::network(
                        format!(
                            "projection '{}'",
                            crate::model::network::projection_name(&network.projections[p])
                        ),
                        format!(
                            "the plan counts {cross} synapses crossing chips, the placement of \
                             its neurons {crossing}"
                        ),
                    ));
                }
                Ok(if crossing == steps.len() {
                    LinkSteps::All(sp.delay_steps)
                } else {
                    LinkSteps::Each(steps)
                })
            })
            .collect()
    }
}

/// Split a recurrent subnetwork (`(population, neurons, circuits per neuron)` in order) into
/// contiguous ranges for the fewest chips of `per_chip` circuits, at most `chips`, each chip's
/// share as even as whole neurons allow. `None` if it does not fit `chips` chips.
fn split_component(
    pops: &[(PopulationId, usize, usize)],
    per_chip: usize,
    chips: usize,
) -> Option<Vec<Vec<NeuronRange>>> {
    let need: usize = pops.iter().map(|&(_, n, c)| n * c).sum();
    let widest = pops.iter().map(|&(_, _, c)| c).max().unwrap_or(1);
    for k in need.div_ceil(per_chip).max(1)..=chips {
        // Each chip is filled past cap − widest ≥ ⌈need/k⌉ − 1 circuits before the next one
        // starts, so k chips hold the component unless the cap had to be cut to the chip.
        let cap = (need.div_ceil(k) + widest - 1).min(per_chip);
        let mut pieces: Vec<Vec<NeuronRange>> = vec![Vec::new()];
        let mut used = 0;
        for &(p, n, c) in pops {
            let mut first = 0;
            while first < n {
                if used + c > cap {
                    pieces.push(Vec::new());
                    used = 0;
                }
                let fit = ((cap - used) / c).min(n - first);
                pieces.last_mut().expect("one piece").push(NeuronRange {
                    population: p,
                    offset: first,
                    size: fit,
                });
                used += fit * c;
                first += fit;
            }
        }
        if pieces.len() <= k {
            return Some(pieces);
        }
    }
    None
}

/// Split `n` items into `pieces` contiguous `(offset, size)` ranges whose sizes differ by at
/// most one.
pub fn split_range(n: usize, pieces: usize) -> Vec<(usize, usize)> {
    let pieces = pieces.max(1);
    let (base, extra) = (n / pieces, n % pieces);
    let mut out = Vec::with_capacity(pieces);
    let mut off = 0;
    for k in 0..pieces {
        let len = base + usize::from(k < extra);
        out.push((off, len));
        off += len;
    }
    out
}

/// Distinct source neurons that neurons `range` of population `pop` read.
fn channels_of(
    network: &Network,
    ends: &[(PopulationId, PopulationId)],
    pop: PopulationId,
    range: Range<usize>,
) -> Result<usize> {
    let mut seen: Vec<Vec<bool>> = vec![Vec::new(); network.populations.len()];
    let mut count = 0;
    for (p, &(s, t)) in ends.iter().enumerate() {
        if t != pop || s == pop {
            continue;
        }
        let mask = &mut seen[s];
        if mask.is_empty() {
            mask.resize(network.populations[s].size, false);
        }
        network.for_each_synapse_index(p, range.clone(), |pre, _, _| {
            if !mask[pre] {
                mask[pre] = true;
                count += 1;
            }
        })?;
    }
    Ok(count)
}

fn sources_of(
    network: &Network,
    ends: &[(PopulationId, PopulationId)],
    parts: &[PlacedRange],
    owner: &[Vec<(Range<usize>, usize)>],
    me: usize,
) -> Result<(Vec<Source>, usize)> {
    let npop = network.populations.len();
    let mut needed: Vec<Vec<bool>> = vec![Vec::new(); npop];
    let mut synapses = 0;
    for part in parts {
        for (p, &(s, t)) in ends.iter().enumerate() {
            if t != part.neurons.population {
                continue;
            }
            let mask = &mut needed[s];
            if mask.is_empty() {
                mask.resize(network.populations[s].size, false);
            }
            network.for_each_synapse_index(p, part.neurons.range(), |pre, _, _| {
                mask[pre] = true;
                synapses += 1;
            })?;
        }
    }
    let mut out = Vec::new();
    for (pop, mask) in needed.iter().enumerate() {
        if mask.is_empty() {
            continue;
        }
        let origins: Vec<(Range<usize>, Origin)> =
            if network.populations[pop].kind == PopulationKind::Input {
                vec![(0..mask.len(), Origin::Host)]
            } else {
                owner[pop]
                    .iter()
                    .filter(|(_, id)| *id != me)
                    .map(|(r, id)| (r.clone(), Origin::Partition(*id)))
                    .collect()
            };
        for (r, origin) in origins {
            let used: Vec<usize> = r.clone().filter(|&n| mask[n]).collect();
            if let (Some(&a), Some(&b)) = (used.first(), used.last()) {
                out.push(Source {
                    population: pop,
                    origin,
                    span: (a, b + 1),
                    channels: used.len(),
                });
            }
        }
    }
    Ok((out, synapses))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_range_is_balanced_and_covers() {
        assert_eq!(split_range(10, 3), vec![(0, 4), (4, 3), (7, 3)]);
        assert_eq!(
            split_range(256, 4),
            vec![(0, 64), (64, 64), (128, 64), (192, 64)]
        );
    }
}

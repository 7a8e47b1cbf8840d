//! Partitions onto the chips of a multi-chip system: which system run each partition belongs
//! to and which chip of it it lies on. The pieces of a recurrent subnetwork that spans chips
//! share one run; feed-forward partitions share runs as the [`Placement`] says. Sources read
//! from a partition of the same run become live link sources ([`Origin::Link`]); the rest
//! stay replayed through the host. Also counts what the links will carry. Decides only;
//! never runs anything.

use crate::error::Result;
use crate::model::network::{Network, PopulationId};
use crate::model::substrate::Substrate;
use crate::model::system::System;
use crate::plan::partition::{Origin, Partition, PartitionOptions, Placement, Plan, SystemPlan};
use std::collections::BTreeMap;

impl Plan {
    /// Partition `network` (validated, weights drawn) for `substrate`, and with a `[system]`
    /// place the partitions on its chips and into system runs.
    pub fn new(network: &Network, substrate: &Substrate, opts: &PartitionOptions) -> Result<Plan> {
        let (mut plan, spans) = Plan::cut(network, substrate, opts)?;
        if let Some(system) = &substrate.system {
            plan.system = Some(place(
                network,
                &mut plan.partitions,
                &spans,
                system,
                substrate.dt_us,
                opts.placement,
            )?);
        }
        Ok(plan)
    }
}

/// Place `partitions` (in plan order; consecutive partitions with the same `spans[k]` are the
/// pieces of one recurrent subnetwork) on `system`.
fn place(
    network: &Network,
    partitions: &mut [Partition],
    spans: &[Option<usize>],
    system: &System,
    dt_us: f32,
    placement: Placement,
) -> Result<SystemPlan> {
    let n = partitions.len();
    // Units: a recurrent subnetwork's pieces, or one partition.
    let mut unit_of = vec![0usize; n];
    let mut units: Vec<Vec<usize>> = Vec::new();
    for p in 0..n {
        let joins = p > 0 && spans[p].is_some() && spans[p] == spans[p - 1];
        if !joins {
            units.push(Vec::new());
        }
        unit_of[p] = units.len() - 1;
        units.last_mut().expect("a unit").push(p);
    }
    let placement = match placement {
        Placement::Auto if n <= system.chips => Placement::Concurrent,
        Placement::Auto => Placement::Sequential,
        p => p,
    };
    let mut runs: Vec<Vec<usize>> = Vec::new();
    match placement {
        Placement::Concurrent => {
            for u in &units {
                if runs.last().is_none_or(|r| r.len() + u.len() > system.chips) {
                    runs.push(Vec::new());
                }
                runs.last_mut().expect("a run").extend(u);
            }
        }
        _ => {
            // Levels of units: one more than any unit they replay from.
            let mut level = vec![0usize; units.len()];
            for (k, u) in units.iter().enumerate() {
                for &p in u {
                    for d in partitions[p].dependencies() {
                        if unit_of[d] != k {
                            level[k] = level[k].max(level[unit_of[d]] + 1);
                        }
                    }
                }
            }
            let depth = level.iter().map(|l| l + 1).max().unwrap_or(0);
            for l in 0..depth {
                let start = runs.len();
                for (_, u) in units.iter().enumerate().filter(|(k, _)| level[*k] == l) {
                    let full = runs.last().is_none_or(|r| r.len() + u.len() > system.chips);
                    if runs.len() == start || full {
                        runs.push(Vec::new());
                    }
                    runs.last_mut().expect("a run").extend(u);
                }
            }
        }
    }
    for (r, run) in runs.iter().enumerate() {
        for (c, &p) in run.iter().enumerate() {
            partitions[p].system_run = Some(r);
            partitions[p].chip = Some(c);
        }
    }
    let run_of: Vec<usize> = partitions
        .iter()
        .map(|p| p.system_run.expect("placed"))
        .collect();
    for p in partitions.iter_mut() {
        for s in &mut p.sources {
            if let Origin::Partition(k) = s.origin {
                if run_of[k] == run_of[p.id] {
                    s.origin = Origin::Link(k);
                }
            }
        }
    }
    let links = system.links();
    let (cross_per_projection, link_channels) = traffic(network, partitions, &runs, &links)?;
    Ok(SystemPlan {
        placement,
        runs,
        delay_steps: system.delay_steps(dt_us),
        cross_chip_synapses: cross_per_projection.iter().sum(),
        link_channels,
        cross_per_projection,
    })
}

/// Cross-chip synapses per projection, and per link the source neurons whose spikes cross it.
fn traffic(
    network: &Network,
    partitions: &[Partition],
    runs: &[Vec<usize>],
    links: &crate::model::system::Links,
) -> Result<(Vec<usize>, Vec<u64>)> {
    let ends = network.all_endpoints()?;
    let mut cross = vec![0usize; ends.len()];
    let mut per_link = vec![0u64; links.names.len()];
    for run in runs {
        // The chip of each neuron of this run, per population.
        let mut chip_of: BTreeMap<PopulationId, Vec<u32>> = BTreeMap::new();
        for (c, &p) in run.iter().enumerate() {
            for r in &partitions[p].parts {
                let v = chip_of.entry(r.neurons.population).or_insert_with(|| {
                    vec![u32::MAX; network.populations[r.neurons.population].size]
                });
                v[r.neurons.range()].fill(c as u32);
            }
        }
        // (population, neuron) → the chips that read it over links.
        let mut readers: BTreeMap<(PopulationId, u32), Vec<u32>> = BTreeMap::new();
        for (c, &p) in run.iter().enumerate() {
            let part = &partitions[p];
            if !part
                .sources
                .iter()
                .any(|s| matches!(s.origin, Origin::Link(_)))
            {
                continue;
            }
            for r in &part.parts {
                for (proj, &(s, t)) in ends.iter().enumerate() {
                    if t != r.neurons.population {
                        continue;
                    }
                    let Some(owners) = chip_of.get(&s) else {
                        continue;
                    };
                    network.for_each_synapse_index(proj, r.neurons.range(), |pre, _, _| {
                        let from = owners[pre];
                        if from != u32::MAX && from != c as u32 {
                            cross[proj] += 1;
                            let v = readers.entry((s, pre as u32)).or_default();
                            if !v.contains(&(c as u32)) {
                                v.push(c as u32);
                            }
                        }
                    })?;
                }
            }
        }
        let mut seen = vec![usize::MAX; links.names.len()];
        for (k, ((pop, neuron), dests)) in readers.iter().enumerate() {
            let from = chip_of[pop][*neuron as usize] as usize;
            for &d in dests {
                for &l in links.route(from, d as usize) {
                    if seen[l as usize] != k {
                        seen[l as usize] = k;
                        per_link[l as usize] += 1;
                    }
                }
            }
        }
    }
    Ok((cross, per_link))
}

//! A multi-chip system: `chips` copies of the [`crate::Substrate`] joined by links that carry
//! spikes between chips while they run, as the `[system]` section of a substrate file
//! describes it. This module owns the description (topology, delivery delay, bandwidth,
//! receive buffer, what overflow does, the times of the hardware-time estimate), the links of
//! each topology and the route of every chip pair, and the [`Router`] that decides, window by
//! window and in one fixed order, which spikes reach which chip. It never places or runs
//! partitions.
//!
//! Defaults are those of the published BrainScaleS-2 multi-chip setups (Ilmberger & Schemmel
//! 2025, arXiv 2512.03781): chips joined through an aggregator FPGA (a star), chip-to-chip
//! latency below 1.3 µs over 4 hops at all spike rates, and every event released at a fixed
//! destination delay (at most 8.18 µs) that must exceed the latency; 2 µs is the default.

use crate::error::{check_range, Error, Result};
use serde::{Deserialize, Serialize};

/// How the chips of a system are joined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkTopology {
    /// Every chip has one link (each direction) to a central aggregator that routes between
    /// them (BrainScaleS-2: one FPGA per chip, an aggregator FPGA between them).
    #[default]
    Star,
    /// Stars of `chips_per_backplane` chips (one aggregator per backplane), the backplanes'
    /// aggregators joined by one link each to a top aggregator (BrainScaleS-2: two backplanes
    /// of 12 chips in one case).
    Backplanes,
    /// A grid `mesh_width` chips wide, links between neighbours, routed x first, then y.
    Mesh2d,
    /// The grid with wrap-around links (shortest way round, ties towards increasing index).
    Torus,
    /// A direct link for every ordered pair of chips.
    AllToAll,
}

impl LinkTopology {
    /// The name a substrate file uses.
    pub fn name(self) -> &'static str {
        match self {
            LinkTopology::Star => "star",
            LinkTopology::Backplanes => "backplanes",
            LinkTopology::Mesh2d => "mesh2d",
            LinkTopology::Torus => "torus",
            LinkTopology::AllToAll => "all-to-all",
        }
    }
}

/// What happens to a spike that a link or a receive buffer cannot take in a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// Dropped and counted per link and reason, as the chip software's loss counters do.
    #[default]
    Drop,
    /// The run stops with an error naming the link or chip and the window.
    Error,
}

/// A multi-chip system (the `[system]` section of a substrate file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct System {
    /// Chips in the system.
    pub chips: usize,
    /// How they are joined.
    pub topology: LinkTopology,
    /// Chips per backplane (topology `backplanes`; BrainScaleS-2: 12).
    pub chips_per_backplane: usize,
    /// Chips per row of the grid (topologies `mesh2d` and `torus`; 0: the smallest width
    /// whose square holds every chip).
    pub mesh_width: usize,
    /// Every cross-chip spike arrives exactly this long after it was sent, in µs of hardware
    /// time (BrainScaleS-2: a fixed destination delay up to 8.18 µs that must exceed the
    /// latency of 1.3 µs; default 2 µs). Rounded to whole time steps, at least one.
    pub delivery_delay_us: f32,
    /// Latency of one hop in µs (BrainScaleS-2: 1.3 µs over 4 hops). Only checked against
    /// the delivery delay: a route slower than the delay would lose its events as late on
    /// the real system, which the plan says.
    pub hop_latency_us: f32,
    /// Events one link carries per µs in each direction (0: unlimited; the published
    /// latency holds at all spike rates, so the default is unlimited; EXTOLL links carry
    /// 100 Gb/s, about 1 500 events/µs of 64 bits).
    pub link_events_per_us: f32,
    /// Events a chip's receive buffer holds per window (0: unlimited).
    pub receive_buffer: usize,
    /// What a full link or buffer does.
    pub overflow: Overflow,
    /// Hardware time to configure and settle one system run per sample, in µs (the
    /// published MNIST runs last T + 2 µs: default 2 µs).
    pub configure_us: f32,
    /// Host round trip between system runs, in µs (reading spikes back and replaying them;
    /// an assumption to set for the system at hand: default 1 000 µs, the order of an
    /// FPGA-to-host transfer).
    pub host_round_trip_us: f32,
}

impl Default for System {
    fn default() -> Self {
        System {
            chips: 4,
            topology: LinkTopology::Star,
            chips_per_backplane: 12,
            mesh_width: 0,
            delivery_delay_us: 2.0,
            hop_latency_us: 1.3 / 4.0,
            link_events_per_us: 0.0,
            receive_buffer: 0,
            overflow: Overflow::Drop,
            configure_us: 2.0,
            host_round_trip_us: 1000.0,
        }
    }
}

/// Most chips a system may have (routes are kept for every pair).
pub const MAX_CHIPS: usize = 4096;

impl System {
    /// Check every field (names the field and the value).
    pub fn validate(&self) -> Result<()> {
        let err = |field: &str, problem: String| Error::Substrate {
            field: format!("system.{field}"),
            problem,
        };
        if !(1..=MAX_CHIPS).contains(&self.chips) {
            return Err(err(
                "chips",
                format!("{}; must lie in 1..={MAX_CHIPS}", self.chips),
            ));
        }
        if self.topology == LinkTopology::Backplanes && self.chips_per_backplane == 0 {
            return Err(err("chips_per_backplane", "0; must be at least 1".into()));
        }
        if self.mesh_width > self.chips {
            return Err(err(
                "mesh_width",
                format!("{} exceeds the {} chips", self.mesh_width, self.chips),
            ));
        }
        let name = "[system]";
        check_range(
            name,
            "delivery_delay_us",
            self.delivery_delay_us as f64,
            0.0,
            1e6,
        )?;
        check_range(name, "hop_latency_us", self.hop_latency_us as f64, 0.0, 1e6)?;
        check_range(
            name,
            "link_events_per_us",
            self.link_events_per_us as f64,
            0.0,
            1e9,
        )?;
        check_range(name, "configure_us", self.configure_us as f64, 0.0, 1e9)?;
        check_range(
            name,
            "host_round_trip_us",
            self.host_round_trip_us as f64,
            0.0,
            1e9,
        )?;
        if self.receive_buffer > u32::MAX as usize {
            return Err(err(
                "receive_buffer",
                format!("{}; must be below 2^32", self.receive_buffer),
            ));
        }
        Ok(())
    }

    /// The delivery delay in whole steps of `dt_us` (at least 1): the window of the
    /// lock-step execution.
    pub fn delay_steps(&self, dt_us: f32) -> u32 {
        ((self.delivery_delay_us / dt_us).round() as u32).max(1)
    }

    /// Events one link takes per window of `window` steps (0: unlimited).
    pub fn link_capacity(&self, window: u32, dt_us: f32) -> u32 {
        if self.link_events_per_us == 0.0 {
            0
        } else {
            ((self.link_events_per_us * window as f32 * dt_us).floor() as u32).max(1)
        }
    }

    /// Width of the grid (mesh and torus).
    pub fn grid_width(&self) -> usize {
        if self.mesh_width > 0 {
            self.mesh_width
        } else {
            (1..=self.chips).find(|w| w * w >= self.chips).unwrap_or(1)
        }
    }

    /// The links of the system and the route between every pair of chips.
    pub fn links(&self) -> Links {
        let n = self.chips;
        let mut names = Vec::new();
        let mut ends = Vec::new();
        let mut routes = vec![Vec::new(); n * n];
        match self.topology {
            LinkTopology::Star => {
                for c in 0..n {
                    names.push(format!("chip {c} -> hub"));
                    names.push(format!("hub -> chip {c}"));
                    ends.push((Node::Chip(c), Node::Hub(0)));
                    ends.push((Node::Hub(0), Node::Chip(c)));
                }
                for a in 0..n {
                    for b in 0..n {
                        if a != b {
                            routes[a * n + b] = vec![2 * a as u32, 2 * b as u32 + 1];
                        }
                    }
                }
            }
            LinkTopology::Backplanes => {
                let per = self.chips_per_backplane;
                let planes = n.div_ceil(per);
                for c in 0..n {
                    names.push(format!("chip {c} -> backplane {}", c / per));
                    names.push(format!("backplane {} -> chip {c}", c / per));
                    ends.push((Node::Chip(c), Node::Hub(1 + c / per)));
                    ends.push((Node::Hub(1 + c / per), Node::Chip(c)));
                }
                for p in 0..planes {
                    names.push(format!("backplane {p} -> top"));
                    names.push(format!("top -> backplane {p}"));
                    ends.push((Node::Hub(1 + p), Node::Hub(0)));
                    ends.push((Node::Hub(0), Node::Hub(1 + p)));
                }
                let up = |p: usize| (2 * n + 2 * p) as u32;
                for a in 0..n {
                    for b in 0..n {
                        if a == b {
                            continue;
                        }
                        let (pa, pb) = (a / per, b / per);
                        routes[a * n + b] = if pa == pb {
                            vec![2 * a as u32, 2 * b as u32 + 1]
                        } else {
                            vec![2 * a as u32, up(pa), up(pb) + 1, 2 * b as u32 + 1]
                        };
                    }
                }
            }
            LinkTopology::Mesh2d | LinkTopology::Torus => {
                let w = self.grid_width();
                let h = n.div_ceil(w);
                let wrap = self.topology == LinkTopology::Torus;
                // Link 4·node + direction (0: +x, 1: −x, 2: +y, 3: −y).
                for c in 0..w * h {
                    let (x, y) = (c % w, c / w);
                    let to = [
                        ((x + 1) % w, y),
                        ((x + w - 1) % w, y),
                        (x, (y + 1) % h),
                        (x, (y + h - 1) % h),
                    ];
                    for (d, (tx, ty)) in ["+x", "-x", "+y", "-y"].into_iter().zip(to) {
                        names.push(format!("chip {c} {d}"));
                        ends.push((Node::Chip(c), Node::Chip(ty * w + tx)));
                    }
                }
                let step = |from: usize, to: usize, size: usize| -> (bool, usize) {
                    // (forward?, hops) along one axis.
                    if !wrap {
                        return (to >= from, from.abs_diff(to));
                    }
                    let fwd = (to + size - from) % size;
                    let back = (from + size - to) % size;
                    if fwd <= back {
                        (true, fwd)
                    } else {
                        (false, back)
                    }
                };
                for a in 0..n {
                    for b in 0..n {
                        if a == b {
                            continue;
                        }
                        let (mut x, mut y) = (a % w, a / w);
                        let (bx, by) = (b % w, b / w);
                        let mut r = Vec::new();
                        let (fx, hx) = step(x, bx, w);
                        for _ in 0..hx {
                            r.push((4 * (y * w + x) + usize::from(!fx)) as u32);
                            x = if fx { (x + 1) % w } else { (x + w - 1) % w };
                        }
                        let (fy, hy) = step(y, by, h);
                        for _ in 0..hy {
                            r.push((4 * (y * w + x) + 2 + usize::from(!fy)) as u32);
                            y = if fy { (y + 1) % h } else { (y + h - 1) % h };
                        }
                        routes[a * n + b] = r;
                    }
                }
            }
            LinkTopology::AllToAll => {
                for a in 0..n {
                    for b in 0..n {
                        if a != b {
                            routes[a * n + b] = vec![names.len() as u32];
                            names.push(format!("chip {a} -> chip {b}"));
                            ends.push((Node::Chip(a), Node::Chip(b)));
                        }
                    }
                }
            }
        }
        Links {
            chips: n,
            names,
            ends,
            routes,
        }
    }

    /// Hardware time per sample of `system_runs` runs of `steps` steps of `dt_us`:
    /// runs × (configure + T·dt + host round trip), in µs.
    pub fn hardware_us(&self, system_runs: usize, steps: u32, dt_us: f32) -> f64 {
        system_runs as f64
            * (self.configure_us as f64
                + steps as f64 * dt_us as f64
                + self.host_round_trip_us as f64)
    }
}

/// An end of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    /// A chip (on a grid: a grid position, which may hold no chip).
    Chip(usize),
    /// An aggregator: 0 the star's hub or the backplanes' top, 1 + p backplane p's.
    Hub(usize),
}

/// The directed links of a system and the route (link ids, in order) of every chip pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Links {
    /// Chips.
    pub chips: usize,
    /// A name per link ("chip 3 -> hub").
    pub names: Vec<String>,
    /// Per link: where it starts and ends.
    pub ends: Vec<(Node, Node)>,
    /// `routes[a·chips + b]`: the links a spike from chip `a` to chip `b` crosses.
    pub routes: Vec<Vec<u32>>,
}

impl Links {
    /// The route from chip `a` to chip `b`.
    pub fn route(&self, a: usize, b: usize) -> &[u32] {
        &self.routes[a * self.chips + b]
    }

    /// Most hops of any route.
    pub fn longest_route(&self) -> usize {
        self.routes.iter().map(Vec::len).max().unwrap_or(0)
    }
}

/// Why a spike did not arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// A link on its route had carried its window's share of events.
    Bandwidth,
    /// The receiving chip's buffer was full for the window.
    Buffer,
}

/// Traffic of a system's links, summed over the samples of a run (and over runs by
/// [`LinkStats::add`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// Samples counted.
    pub samples: u64,
    /// Windows counted (per sample).
    pub windows: u64,
    /// Per link: events it carried.
    pub carried: Vec<u64>,
    /// Per link: most events it carried in one window of one sample.
    pub peak: Vec<u32>,
    /// Per link: events it could not take (bandwidth).
    pub dropped_bandwidth: Vec<u64>,
    /// Per chip: events delivered to it.
    pub delivered: Vec<u64>,
    /// Per chip: events its receive buffer refused.
    pub dropped_buffer: Vec<u64>,
    /// Spikes sent over the links (each counted once, however many chips receive it).
    pub sent: u64,
}

impl LinkStats {
    /// Counters for `links` links and `chips` chips, all zero.
    pub fn new(links: usize, chips: usize) -> Self {
        LinkStats {
            carried: vec![0; links],
            peak: vec![0; links],
            dropped_bandwidth: vec![0; links],
            delivered: vec![0; chips],
            dropped_buffer: vec![0; chips],
            ..Default::default()
        }
    }

    /// Add `o` (same system) to these.
    pub fn add(&mut self, o: &LinkStats) {
        if self.carried.is_empty() && self.delivered.is_empty() {
            *self = o.clone();
            return;
        }
        let sum = |a: &mut Vec<u64>, b: &Vec<u64>| {
            a.resize(a.len().max(b.len()), 0);
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        };
        sum(&mut self.carried, &o.carried);
        sum(&mut self.dropped_bandwidth, &o.dropped_bandwidth);
        sum(&mut self.delivered, &o.delivered);
        sum(&mut self.dropped_buffer, &o.dropped_buffer);
        self.peak.resize(self.peak.len().max(o.peak.len()), 0);
        self.peak
            .iter_mut()
            .zip(&o.peak)
            .for_each(|(x, y)| *x = (*x).max(*y));
        self.samples += o.samples;
        self.windows += o.windows;
        self.sent += o.sent;
    }

    /// These as numbers to send to other processes ([`LinkStats::from_wire`] reads them).
    pub fn to_wire(&self) -> Vec<f64> {
        let mut v = vec![
            self.samples as f64,
            self.windows as f64,
            self.sent as f64,
            self.carried.len() as f64,
            self.delivered.len() as f64,
        ];
        v.extend(self.carried.iter().map(|&x| x as f64));
        v.extend(self.peak.iter().map(|&x| x as f64));
        v.extend(self.dropped_bandwidth.iter().map(|&x| x as f64));
        v.extend(self.delivered.iter().map(|&x| x as f64));
        v.extend(self.dropped_buffer.iter().map(|&x| x as f64));
        v
    }

    /// Stats written by [`LinkStats::to_wire`] (counts below 2^53 travel exactly); `None` if
    /// `v` is not such a vector.
    pub fn from_wire(v: &[f64]) -> Option<Self> {
        let head: &[f64; 5] = v.get(..5)?.try_into().ok()?;
        let [samples, windows, sent, l, c] = *head;
        let rest = &v[5..];
        let (l, c) = (l as usize, c as usize);
        if rest.len() != 3 * l + 2 * c {
            return None;
        }
        let u = |a: usize, n: usize| rest[a..a + n].iter().map(|&x| x as u64).collect();
        Some(LinkStats {
            samples: samples as u64,
            windows: windows as u64,
            sent: sent as u64,
            carried: u(0, l),
            peak: rest[l..2 * l].iter().map(|&x| x as u32).collect(),
            dropped_bandwidth: u(2 * l, l),
            delivered: u(3 * l, c),
            dropped_buffer: u(3 * l + c, c),
        })
    }

    /// Spikes that did not arrive, by reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::Bandwidth => self.dropped_bandwidth.iter().sum(),
            DropReason::Buffer => self.dropped_buffer.iter().sum(),
        }
    }

    /// Deliveries that were meant to happen (delivered + dropped).
    pub fn attempted(&self) -> u64 {
        self.delivered.iter().sum::<u64>()
            + self.dropped(DropReason::Bandwidth)
            + self.dropped(DropReason::Buffer)
    }

    /// Lines for a person: totals, drops by reason, the busiest links.
    pub fn text(&self, links: &Links) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let per = self.samples.max(1) as f64;
        let _ = writeln!(
            s,
            "links: {:.1} spikes sent per sample, {:.1} deliveries per sample, dropped {} \
             (bandwidth) + {} (receive buffer) of {} deliveries ({:.2} %)",
            self.sent as f64 / per,
            self.delivered.iter().sum::<u64>() as f64 / per,
            self.dropped(DropReason::Bandwidth),
            self.dropped(DropReason::Buffer),
            self.attempted(),
            100.0 * (self.attempted() - self.delivered.iter().sum::<u64>()) as f64
                / self.attempted().max(1) as f64
        );
        let mut busy: Vec<usize> = (0..self.carried.len())
            .filter(|&l| self.carried[l] > 0)
            .collect();
        busy.sort_by_key(|&l| (std::cmp::Reverse(self.carried[l]), l));
        for &l in busy.iter().take(8) {
            let _ = writeln!(
                s,
                "  {}: {:.1} events per sample, peak {} per window, {} dropped",
                links.names.get(l).map_or("?", String::as_str),
                self.carried[l] as f64 / per,
                self.peak[l],
                self.dropped_bandwidth[l]
            );
        }
        if busy.len() > 8 {
            let _ = writeln!(s, "  ... {} more links carried events", busy.len() - 8);
        }
        s
    }
}

/// Decides, for one sample and one window at a time, which cross-chip spikes arrive: every
/// spike in the fixed order (step, sending chip, neuron), multicast along the union of its
/// routes (a link carries it once however many destinations lie behind it), each link taking
/// at most its window's capacity and each chip's buffer at most `receive_buffer` events.
/// The same decisions whatever thread, device or process runs the chips.
#[derive(Clone, Debug)]
pub struct Router<'a> {
    links: &'a Links,
    link_cap: u32,
    buffer_cap: u32,
    overflow: Overflow,
    /// Per link: events this window; the event that last used it, and whether it got through.
    used: Vec<u32>,
    stamp: Vec<u64>,
    passed: Vec<bool>,
    /// Per chip: events received this window.
    received: Vec<u32>,
    event: u64,
}

impl<'a> Router<'a> {
    /// A router for `links` with `link_cap` events per link and window and `buffer_cap`
    /// events per chip and window (0: unlimited).
    pub fn new(links: &'a Links, link_cap: u32, buffer_cap: u32, overflow: Overflow) -> Self {
        Router {
            links,
            link_cap,
            buffer_cap,
            overflow,
            used: vec![0; links.names.len()],
            stamp: vec![u64::MAX; links.names.len()],
            passed: vec![false; links.names.len()],
            received: vec![0; links.chips],
            event: 0,
        }
    }

    /// Start a window: every link and buffer empty.
    pub fn begin_window(&mut self, stats: &mut LinkStats) {
        self.used.fill(0);
        self.received.fill(0);
        stats.windows += 1;
    }

    /// End a window: the peaks.
    pub fn end_window(&mut self, stats: &mut LinkStats) {
        for (p, &u) in stats.peak.iter_mut().zip(&self.used) {
            *p = (*p).max(u);
        }
    }

    /// Route one spike from chip `from` to the chips `to` (in increasing order), whose routes
    /// together cross the links `tree` (each once); calls `deliver(k)` for each `to[k]` it
    /// reaches. An error only with [`Overflow::Error`].
    #[inline]
    pub fn route(
        &mut self,
        from: usize,
        to: &[u32],
        tree: &[u32],
        stats: &mut LinkStats,
        mut deliver: impl FnMut(usize),
    ) -> Result<()> {
        stats.sent += 1;
        if self.link_cap == 0 && self.buffer_cap == 0 {
            // Nothing can be full: every link of the tree carries it, every chip gets it.
            for &l in tree {
                self.used[l as usize] += 1;
                stats.carried[l as usize] += 1;
            }
            for (k, &dst) in to.iter().enumerate() {
                stats.delivered[dst as usize] += 1;
                deliver(k);
            }
            return Ok(());
        }
        self.event += 1;
        for (k, &dst) in to.iter().enumerate() {
            let dst = dst as usize;
            let mut ok = true;
            for &l in self.links.route(from, dst) {
                let l = l as usize;
                if self.stamp[l] != self.event {
                    self.stamp[l] = self.event;
                    self.passed[l] = self.link_cap == 0 || self.used[l] < self.link_cap;
                    if self.passed[l] {
                        self.used[l] += 1;
                        stats.carried[l] += 1;
                    } else {
                        stats.dropped_bandwidth[l] += 1;
                        if self.overflow == Overflow::Error {
                            return Err(Error::input(
                                format!("link '{}'", self.links.names[l]),
                                format!(
                                    "more than {} events in one window (system overflow = \
                                     \"error\")",
                                    self.link_cap
                                ),
                            ));
                        }
                    }
                }
                if !self.passed[l] {
                    ok = false;
                    break;
                }
            }
            if !ok {
                continue;
            }
            if self.buffer_cap != 0 && self.received[dst] >= self.buffer_cap {
                stats.dropped_buffer[dst] += 1;
                if self.overflow == Overflow::Error {
                    return Err(Error::input(
                        format!("chip {dst}"),
                        format!(
                            "more than {} events for its receive buffer in one window (system \
                             overflow = \"error\")",
                            self.buffer_cap
                        ),
                    ));
                }
                continue;
            }
            self.received[dst] += 1;
            stats.delivered[dst] += 1;
            deliver(k);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys(topology: LinkTopology, chips: usize) -> System {
        System {
            chips,
            topology,
            chips_per_backplane: 3,
            ..System::default()
        }
    }

    #[test]
    fn routes_follow_the_topology() {
        let star = sys(LinkTopology::Star, 4).links();
        assert_eq!(star.names.len(), 8);
        assert_eq!(star.route(1, 3), &[2, 7]);
        let bp = sys(LinkTopology::Backplanes, 6).links();
        // Same backplane: up and down; across: up, backplane up, backplane down, down.
        assert_eq!(bp.route(0, 2).len(), 2);
        assert_eq!(bp.route(0, 4).len(), 4);
        assert_eq!(bp.names[bp.route(0, 4)[1] as usize], "backplane 0 -> top");
        assert_eq!(bp.names[bp.route(0, 4)[2] as usize], "top -> backplane 1");
        // A 3-wide grid of 9: 0 -> 8 is 2 hops in x then 2 in y; on the torus 1 + 1.
        let mesh = sys(LinkTopology::Mesh2d, 9).links();
        assert_eq!(mesh.route(0, 8).len(), 4);
        let names: Vec<&str> = mesh
            .route(0, 8)
            .iter()
            .map(|&l| mesh.names[l as usize].as_str())
            .collect();
        assert_eq!(names, ["chip 0 +x", "chip 1 +x", "chip 2 +y", "chip 5 +y"]);
        let torus = sys(LinkTopology::Torus, 9).links();
        let names: Vec<&str> = torus
            .route(0, 8)
            .iter()
            .map(|&l| torus.names[l as usize].as_str())
            .collect();
        assert_eq!(names, ["chip 0 -x", "chip 2 -y"]);
        let all = sys(LinkTopology::AllToAll, 3).links();
        assert_eq!(all.names.len(), 6);
        assert_eq!(all.longest_route(), 1);
    }

    #[test]
    fn router_shares_links_between_destinations_and_drops_in_order() {
        let links = sys(LinkTopology::Star, 3).links();
        // One event per link and window, unlimited buffers.
        let mut r = Router::new(&links, 1, 0, Overflow::Drop);
        let mut st = LinkStats::new(links.names.len(), 3);
        r.begin_window(&mut st);
        let mut got = Vec::new();
        // Chip 0 to chips 1 and 2: the uplink carries it once, both downlinks once.
        r.route(0, &[1, 2], &[], &mut st, |k| got.push(k)).unwrap();
        assert_eq!(got, [0, 1]);
        assert_eq!(st.carried[0], 1);
        // Chip 1 to chip 2: its uplink is free, the downlink to 2 is full: dropped there.
        got.clear();
        r.route(1, &[2], &[], &mut st, |k| got.push(k)).unwrap();
        assert!(got.is_empty());
        assert_eq!(st.dropped_bandwidth[5], 1);
        r.end_window(&mut st);
        assert_eq!(st.peak[0], 1);
        // Next window: room again.
        r.begin_window(&mut st);
        r.route(1, &[2], &[], &mut st, |k| got.push(k)).unwrap();
        assert_eq!(got, [0]);
        // Buffers: one event per chip and window.
        let mut r = Router::new(&links, 0, 1, Overflow::Drop);
        let mut st = LinkStats::new(links.names.len(), 3);
        r.begin_window(&mut st);
        let mut n = 0;
        for _ in 0..3 {
            r.route(0, &[1], &[], &mut st, |_| n += 1).unwrap();
        }
        assert_eq!((n, st.dropped_buffer[1], st.delivered[1]), (1, 2, 1));
        let mut r = Router::new(&links, 0, 1, Overflow::Error);
        r.begin_window(&mut st);
        r.route(0, &[1], &[], &mut st, |_| {}).unwrap();
        let e = r
            .route(0, &[1], &[], &mut st, |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("chip 1") && e.contains("receive buffer"), "{e}");
    }

    #[test]
    fn unlimited_links_count_as_the_general_rule_does() {
        // The fast path (no limits) against the general one with limits never reached.
        let sys = System {
            chips: 9,
            topology: LinkTopology::Torus,
            ..System::default()
        };
        let links = sys.links();
        let mut fast = Router::new(&links, 0, 0, Overflow::Drop);
        let mut slow = Router::new(&links, u32::MAX, u32::MAX, Overflow::Drop);
        let (mut a, mut b) = (
            LinkStats::new(links.names.len(), 9),
            LinkStats::new(links.names.len(), 9),
        );
        fast.begin_window(&mut a);
        slow.begin_window(&mut b);
        for from in 0..9usize {
            let to: Vec<u32> = (0..9).filter(|&c| c != from as u32 && c % 2 == 0).collect();
            let mut tree: Vec<u32> = Vec::new();
            for &d in &to {
                for &l in links.route(from, d as usize) {
                    if !tree.contains(&l) {
                        tree.push(l);
                    }
                }
            }
            let (mut x, mut y) = (Vec::new(), Vec::new());
            fast.route(from, &to, &tree, &mut a, |k| x.push(k)).unwrap();
            slow.route(from, &to, &[], &mut b, |k| y.push(k)).unwrap();
            assert_eq!(x, y);
        }
        fast.end_window(&mut a);
        slow.end_window(&mut b);
        assert_eq!(a, b);
        assert!(a.carried.iter().sum::<u64>() > 9);
    }

    #[test]
    fn delay_and_capacity_in_steps() {
        let s = System::default();
        assert_eq!(s.delay_steps(1.0), 2);
        assert_eq!(s.delay_steps(5.0), 1);
        assert_eq!(s.link_capacity(2, 1.0), 0);
        let s = System {
            link_events_per_us: 2.5,
            ..System::default()
        };
        assert_eq!(s.link_capacity(2, 1.0), 5);
        assert!(System {
            chips: 0,
            ..System::default()
        }
        .validate()
        .is_err());
        assert!(System {
            delivery_delay_us: f32::NAN,
            ..System::default()
        }
        .validate()
        .is_err());
    }
}

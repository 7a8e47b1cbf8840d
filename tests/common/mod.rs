//! Shared test helpers: a naive whole-network reference simulator written independently of the
//! partitioner and backends, and generators of random networks and input spikes.
#![allow(dead_code)]

use neuropart::comm::ThreadGroup;
use neuropart::NeuronParams;
use neuropart::Rng;
use neuropart::Substrate;
use neuropart::{Connectivity, Network, Population, PopulationKind, Projection, Sign, WeightInit};
use neuropart::{LinkTopology, NetworkBuilder, System};
use neuropart::{SpikeEvent, SpikeTrains};

/// Whole-network result of the reference: spike raster and membrane per population,
/// `[sample][step][neuron]`.
pub struct Reference {
    pub spikes: Vec<Vec<bool>>,
    pub membrane: Vec<Vec<f32>>,
}

/// The synapses `(post, pre, weight)` of projection `p`, enumerated by hand from its
/// connectivity (not with the crate's synapse enumeration): dense weights as laid out
/// `[target][source]`, a naive convolution over the source image, a sparse projection's
/// connection list (duplicates kept: each is a synapse of its own).
pub fn hand_synapses(net: &Network, p: usize) -> Vec<(usize, usize, f64)> {
    let pr = &net.projections[p];
    let src = &net.populations[net.population_id(&pr.source).unwrap()];
    let tgt = &net.populations[net.population_id(&pr.target).unwrap()];
    let (ns, nt) = (src.size, tgt.size);
    let mut w = Vec::new();
    match &pr.connectivity {
        Connectivity::Dense => {
            for post in 0..nt {
                for pre in 0..ns {
                    w.push((post, pre, pr.weights[post * ns + pre] as f64));
                }
            }
        }
        Connectivity::Conv2d {
            kernel,
            stride,
            padding,
        } => {
            let [ic, ih, iw] = src.shape.unwrap();
            let [oc, oh, ow] = tgt.shape.unwrap();
            let (k, st, pad) = (*kernel as i64, *stride as i64, *padding as i64);
            for o in 0..oc {
                for y in 0..oh as i64 {
                    for x in 0..ow as i64 {
                        let post = (o * oh + y as usize) * ow + x as usize;
                        for c in 0..ic {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let (iy, ix) = (y * st + ky - pad, x * st + kx - pad);
                                    if iy < 0 || ix < 0 || iy >= ih as i64 || ix >= iw as i64 {
                                        continue;
                                    }
                                    let pre = (c * ih + iy as usize) * iw + ix as usize;
                                    let widx = ((o * ic + c) * k as usize + ky as usize)
                                        * k as usize
                                        + kx as usize;
                                    w.push((post, pre, pr.weights[widx] as f64));
                                }
                            }
                        }
                    }
                }
            }
        }
        Connectivity::Sparse { connections } => {
            for (k, &[a, b]) in connections.iter().enumerate() {
                w.push((b as usize, a as usize, pr.weights[k] as f64));
            }
        }
    }
    w
}

/// Simulate the whole network naively: every population every step, dense loops over all
/// synapses (matrices built by hand, [`dense_matrix`]), populations in topological order of
/// their components. Implements the model as specified (fixed-point input sums with
/// resolution 2^-e, e = floor(log2(2^23 / max Σ|w|)), forward Euler / exponential
/// coefficients, reset and refractory), not by calling the backends' code.
#[allow(clippy::needless_range_loop)] // the naive reference indexes on purpose
pub fn reference(net: &Network, dt: f32, inputs: &[(usize, SpikeTrains)]) -> Reference {
    reference_on_system(net, dt, inputs, None).0
}

/// Neurons placed on the chips of a multi-chip system, for [`reference_on_system`].
pub struct ChipsOf {
    /// Per population, per neuron: its chip (`usize::MAX`: the host's input).
    pub chip: Vec<Vec<usize>>,
    /// The delivery delay in steps (also the window of the buffer limit).
    pub window: usize,
    /// Spikes a chip may receive per window (0: unlimited).
    pub buffer: usize,
}

/// [`reference`] on a multi-chip system: a synapse between neurons on different chips has
/// the projection's delay plus the delivery delay (and not the extra step of a loop on one
/// chip); with a receive buffer, the spikes of each window are offered in the order (step,
/// sending chip, population, neuron), each to its reading chips in increasing order, and a
/// chip takes at most `buffer` per window; the rest are dropped (second result: per chip).
#[allow(clippy::needless_range_loop)] // the naive reference indexes on purpose
pub fn reference_on_system(
    net: &Network,
    dt: f32,
    inputs: &[(usize, SpikeTrains)],
    chips: Option<&ChipsOf>,
) -> (Reference, Vec<u64>) {
    let steps = net.steps as usize;
    let npop = net.populations.len();
    let samples = inputs[0].1.samples();
    let order: Vec<usize> = net.components().unwrap().into_iter().flatten().collect();
    let comp = net.component_of().unwrap();
    // Dense weight matrices and delays per projection.
    struct P {
        src: usize,
        tgt: usize,
        delay: Vec<usize>, // [post][pre]
        cross: Vec<bool>,  // [post][pre]: between chips
        w: Vec<i64>,       // [post][pre] fixed point
    }
    let syns: Vec<Vec<(usize, usize, f64)>> = (0..net.projections.len())
        .map(|p| hand_synapses(net, p))
        .collect();
    let ends: Vec<(usize, usize)> = (0..net.projections.len())
        .map(|p| {
            let pr = &net.projections[p];
            (
                net.population_id(&pr.source).unwrap(),
                net.population_id(&pr.target).unwrap(),
            )
        })
        .collect();
    let mut exps = vec![0i32; npop];
    for t in 0..npop {
        let mut bound = vec![0f64; net.populations[t].size];
        for (p, &(_, tt)) in ends.iter().enumerate() {
            if tt == t {
                for &(post, _, w) in &syns[p] {
                    bound[post] += w.abs();
                }
            }
        }
        let b = bound.iter().cloned().fold(0.0, f64::max);
        exps[t] = if b <= 0.0 {
            24
        } else {
            ((8388608.0 / b).log2().floor()) as i32
        };
    }
    let projs: Vec<P> = ends
        .iter()
        .enumerate()
        .map(|(p, &(s, t))| {
            let scale = 2f64.powi(exps[t]);
            // One fixed-point weight per synapse, summed per (post, pre).
            let ns = net.populations[s].size;
            let mut w = vec![0i64; ns * net.populations[t].size];
            for &(post, pre, x) in &syns[p] {
                w[post * ns + pre] += (x * scale).round() as i64;
            }
            let d = net.projections[p].delay as usize;
            let nt = net.populations[t].size;
            let mut delay = vec![d + usize::from(comp[s] == comp[t]); ns * nt];
            let mut cross = vec![false; ns * nt];
            if let Some(c) = chips {
                for post in 0..nt {
                    for pre in 0..ns {
                        let (a, b) = (c.chip[s][pre], c.chip[t][post]);
                        if a != usize::MAX && a != b {
                            delay[post * ns + pre] = d + c.window;
                            cross[post * ns + pre] = true;
                        }
                    }
                }
            }
            P {
                src: s,
                tgt: t,
                delay,
                cross,
                w,
            }
        })
        .collect();
    let mut spikes: Vec<Vec<bool>> = net
        .populations
        .iter()
        .map(|p| vec![false; samples * steps * p.size])
        .collect();
    let mut membrane: Vec<Vec<f32>> = net
        .populations
        .iter()
        .map(|p| vec![0.0; samples * steps * p.size])
        .collect();
    for (pop, t) in inputs {
        let n = net.populations[*pop].size;
        for s in 0..samples {
            for e in t.sample(s) {
                spikes[*pop][(s * steps + e.step as usize) * n + e.neuron as usize] = true;
            }
        }
    }
    // Per chip, per population, per (sample, step, neuron): the spike reached that chip.
    let nchips = chips.map_or(0, |c| {
        c.chip
            .iter()
            .flatten()
            .filter(|&&x| x != usize::MAX)
            .max()
            .map_or(0, |m| m + 1)
    });
    let mut delivered: Vec<Vec<Vec<bool>>> = (0..nchips)
        .map(|_| {
            net.populations
                .iter()
                .map(|p| vec![false; samples * steps * p.size])
                .collect()
        })
        .collect();
    // Per population, per neuron: the other chips that read it.
    let mut readers: Vec<Vec<Vec<usize>>> = net
        .populations
        .iter()
        .map(|p| vec![Vec::new(); p.size])
        .collect();
    for pr in &projs {
        let ns = net.populations[pr.src].size;
        for post in 0..net.populations[pr.tgt].size {
            for pre in 0..ns {
                if pr.cross[post * ns + pre] {
                    let b = chips.unwrap().chip[pr.tgt][post];
                    if !readers[pr.src][pre].contains(&b) {
                        readers[pr.src][pre].push(b);
                    }
                }
            }
        }
    }
    readers.iter_mut().flatten().for_each(|v| v.sort_unstable());
    let mut dropped = vec![0u64; nchips];
    for s in 0..samples {
        let mut received = vec![0usize; nchips];
        let mut cur: Vec<Vec<f32>> = net.populations.iter().map(|p| vec![0.0; p.size]).collect();
        let mut vm: Vec<Vec<f32>> = net
            .populations
            .iter()
            .map(|p| {
                (0..p.size)
                    .map(|j| {
                        let q = p.neuron_params(j);
                        q.v_init.unwrap_or(q.v_leak)
                    })
                    .collect()
            })
            .collect();
        let mut refr: Vec<Vec<u32>> = net.populations.iter().map(|p| vec![0; p.size]).collect();
        for t in 0..steps {
            for &pop in &order {
                let p = &net.populations[pop];
                if p.kind == PopulationKind::Input {
                    continue;
                }
                let scale = 2f64.powi(-exps[pop]) as f32;
                for j in 0..p.size {
                    let c = p.neuron_params(j).coeffs(dt, p.kind == PopulationKind::Lif);
                    let mut acc: i64 = 0;
                    for pr in projs.iter().filter(|pr| pr.tgt == pop) {
                        let ns = net.populations[pr.src].size;
                        for pre in 0..ns {
                            let d = pr.delay[j * ns + pre];
                            if t < d {
                                continue;
                            }
                            let at = (s * steps + t - d) * ns + pre;
                            let arrived = if pr.cross[j * ns + pre] {
                                let dst = chips.unwrap().chip[pop][j];
                                delivered[dst][pr.src][at]
                            } else {
                                true
                            };
                            if spikes[pr.src][at] && arrived {
                                acc += pr.w[j * ns + pre];
                            }
                        }
                    }
                    cur[pop][j] = c.a_syn * cur[pop][j] + (1.0 * (acc as f32 * scale) + c.bias);
                    let idx = (s * steps + t) * p.size + j;
                    if refr[pop][j] > 0 {
                        refr[pop][j] -= 1;
                        vm[pop][j] = c.v_reset;
                        membrane[pop][idx] = c.v_reset;
                        continue;
                    }
                    // No leak (NIR's IF): the membrane only integrates.
                    let leak = if c.leaky != 0 {
                        c.v_leak - vm[pop][j]
                    } else {
                        0.0
                    };
                    vm[pop][j] += c.k_mem * (leak + cur[pop][j]);
                    membrane[pop][idx] = vm[pop][j];
                    if p.kind == PopulationKind::Lif && vm[pop][j] >= c.v_th {
                        spikes[pop][idx] = true;
                        vm[pop][j] = c.v_reset;
                        refr[pop][j] = c.refractory_steps;
                    }
                }
            }
            // The links: this step's spikes, chip by chip, offered to their readers.
            if let Some(c) = chips {
                if t % c.window == 0 {
                    received.fill(0);
                }
                for a in 0..nchips {
                    for pop in 0..npop {
                        let n = net.populations[pop].size;
                        for j in 0..n {
                            if c.chip[pop][j] != a || !spikes[pop][(s * steps + t) * n + j] {
                                continue;
                            }
                            for &b in &readers[pop][j] {
                                if c.buffer == 0 || received[b] < c.buffer {
                                    received[b] += 1;
                                    delivered[b][pop][(s * steps + t) * n + j] = true;
                                } else {
                                    dropped[b] += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (Reference { spikes, membrane }, dropped)
}

/// Convert a raster `[sample][step][neuron]` to trains.
pub fn raster_to_trains(r: &[bool], samples: usize, steps: u32, n: usize) -> SpikeTrains {
    let lists = (0..samples)
        .map(|s| {
            let mut v = Vec::new();
            for t in 0..steps as usize {
                for j in 0..n {
                    if r[(s * steps as usize + t) * n + j] {
                        v.push(SpikeEvent {
                            step: t as u32,
                            neuron: j as u32,
                        });
                    }
                }
            }
            v
        })
        .collect();
    SpikeTrains::from_samples(n, steps, lists)
}

/// Random input spikes: each channel spikes at each step with probability `p`.
pub fn random_spikes(rng: &mut Rng, samples: usize, n: usize, steps: u32, p: f64) -> SpikeTrains {
    let lists = (0..samples)
        .map(|_| {
            let mut v = Vec::new();
            for t in 0..steps {
                for j in 0..n {
                    if rng.uniform() < p {
                        v.push(SpikeEvent {
                            step: t,
                            neuron: j as u32,
                        });
                    }
                }
            }
            v
        })
        .collect();
    SpikeTrains::from_samples(n, steps, lists)
}

/// A small substrate that forces real partitioning of small random networks.
pub fn small_substrate() -> Substrate {
    Substrate {
        name: "tiny".into(),
        circuits_per_hemisphere: 32,
        synapse_rows_per_hemisphere: 32,
        ..Substrate::bss2()
    }
}

fn params(rng: &mut Rng) -> NeuronParams {
    NeuronParams {
        tau_mem: 3.0 + 10.0 * rng.uniform() as f32,
        tau_syn: 2.0 + 6.0 * rng.uniform() as f32,
        v_th: 0.5 + rng.uniform() as f32,
        v_reset: -0.1 * rng.uniform() as f32,
        refractory: (rng.below(3)) as f32,
        ..Default::default()
    }
}

/// A random network: an image input, 1–3 hidden layers (dense, convolutional, or dense plus a
/// sparse projection from the input), recurrence (self-loops, E/I pairs) on some layers, random
/// delays, and a readout; weights strong enough that neurons spike.
pub fn random_network(seed: u64, substrate: &Substrate) -> Network {
    let mut rng = Rng::new(seed);
    let init = WeightInit {
        mean: 0.15,
        std: 0.6,
    };
    let (hh, ww) = (2 + rng.below(3), 3 + rng.below(6));
    let n_in = hh * ww;
    let mut pops = vec![Population {
        name: "in".into(),
        size: n_in,
        kind: PopulationKind::Input,
        shape: Some([1, hh, ww]),
        params: NeuronParams::default(),
        score: Default::default(),
        per_neuron: Default::default(),
    }];
    let mut projs = Vec::new();
    let mut prev = 0usize;
    let layers = 1 + rng.below(3);
    for l in 0..layers {
        let name = format!("h{l}");
        let prev_name = pops[prev].name.clone();
        let choice = rng.below(3);
        match (choice, pops[prev].shape) {
            (1, Some([c, h, w])) if h >= 1 && w >= 1 => {
                let k = 1 + rng.below(3.min(h).min(w));
                let oc = 1 + rng.below(3);
                let shape = [oc, h - k + 1, w - k + 1];
                pops.push(Population {
                    name: name.clone(),
                    size: shape.iter().product(),
                    kind: PopulationKind::Lif,
                    shape: Some(shape),
                    params: params(&mut rng),
                    score: Default::default(),
                    per_neuron: Default::default(),
                });
                let _ = c;
                let mut pr = proj(&prev_name, &name, 0, init.mean);
                pr.connectivity = Connectivity::Conv2d {
                    kernel: k,
                    stride: 1,
                    padding: 0,
                };
                pr.init = init;
                projs.push(pr);
            }
            _ => {
                let size = 4 + rng.below(40);
                pops.push(Population {
                    name: name.clone(),
                    size,
                    kind: PopulationKind::Lif,
                    shape: None,
                    params: params(&mut rng),
                    score: Default::default(),
                    per_neuron: Default::default(),
                });
                let mut pr = proj(&prev_name, &name, 0, init.mean);
                pr.init = init;
                projs.push(pr);
                if choice == 2 {
                    let conns: Vec<[u32; 2]> = (0..size * 3)
                        .map(|_| [rng.below(n_in) as u32, rng.below(size) as u32])
                        .collect();
                    let mut sp = proj("in", &name, 0, 0.3);
                    // Its own name: the dense projection has the default one.
                    sp.name = format!("in->{name} sparse");
                    sp.connectivity = Connectivity::Sparse { connections: conns };
                    projs.push(sp);
                }
            }
        }
        let me = pops.len() - 1;
        if rng.below(3) == 0 && pops[me].size <= 12 {
            if rng.below(2) == 0 {
                projs.push(proj(&name, &name, rng.below(2) as u32, 0.2));
            } else {
                let inh = format!("{name}_inh");
                pops.push(Population {
                    name: inh.clone(),
                    size: 3 + rng.below(5),
                    kind: PopulationKind::Lif,
                    shape: None,
                    params: params(&mut rng),
                    score: Default::default(),
                    per_neuron: Default::default(),
                });
                projs.push(proj(&name, &inh, 0, 0.5));
                projs.push(proj(&inh, &name, rng.below(2) as u32, -0.6));
            }
        }
        prev = me;
    }
    pops.push(Population {
        name: "out".into(),
        size: 2 + rng.below(8),
        kind: PopulationKind::Readout,
        shape: None,
        params: params(&mut rng),
        score: Default::default(),
        per_neuron: Default::default(),
    });
    let mut ro = proj(&pops[prev].name.clone(), "out", 0, init.mean);
    ro.init = init;
    projs.push(ro);
    for p in &mut projs {
        if rng.below(4) == 0 {
            p.delay += 1 + rng.below(2) as u32;
        }
    }
    nir_features(&mut pops, seed);
    Network {
        name: format!("random{seed}"),
        seed,
        steps: 12 + rng.below(10) as u32,
        populations: pops,
        projections: projs,
        metadata: Default::default(),
    }
    .prepare(substrate)
    .unwrap()
}

/// What NIR graphs bring, on some populations (drawn from their own stream, so that the rest
/// of the network is as before): biases (per population or per neuron), membranes that start
/// away from rest, integrators without leak, thresholds per neuron.
fn nir_features(pops: &mut [Population], seed: u64) {
    let mut rng = Rng::derive(seed, 0x004e_4952);
    for p in pops.iter_mut().filter(|p| p.kind != PopulationKind::Input) {
        let n = p.size;
        match rng.below(6) {
            0 => p.params.bias = 0.05 * (rng.uniform() as f32 - 0.3),
            1 => {
                p.per_neuron.bias = (0..n).map(|_| 0.1 * (rng.uniform() as f32 - 0.4)).collect();
                p.per_neuron.v_init = (0..n).map(|_| 0.3 * rng.uniform() as f32).collect();
            }
            2 => {
                p.params.leak = false;
                p.params.v_init = Some(0.2 * rng.uniform() as f32);
            }
            3 => {
                let th = p.params.v_th;
                p.per_neuron.v_th = (0..n)
                    .map(|_| th * (0.8 + 0.4 * rng.uniform() as f32))
                    .collect();
            }
            _ => {}
        }
    }
}

fn proj(s: &str, t: &str, delay: u32, mean: f32) -> Projection {
    Projection {
        name: String::new(),
        source: s.into(),
        target: t.into(),
        connectivity: Connectivity::Dense,
        sign: Sign::Signed,
        delay,
        init: WeightInit { mean, std: 0.3 },
        weights: Vec::new(),
    }
}

/// Run `f` in `size` simulated processes (one thread each, [`ThreadGroup::run`]: a process
/// that fails stops the others), results in rank order.
pub fn in_processes<T: Send>(size: usize, f: impl Fn(&ThreadGroup) -> T + Sync) -> Vec<T> {
    ThreadGroup::run(size, f)
}

/// A chip of 32 circuits (rows enough for 128 signed inputs per circuit).
pub fn tiny_chip(system: System) -> Substrate {
    Substrate {
        name: "tiny".into(),
        circuits_per_hemisphere: 16,
        system: Some(system),
        ..Substrate::bss2()
    }
}

/// Fast neurons (τ_mem 6, τ_syn 4 µs) with threshold `v_th`: small test networks spike within
/// a few steps.
pub fn fast(v_th: f32) -> NeuronParams {
    NeuronParams {
        tau_mem: 6.0,
        tau_syn: 4.0,
        v_th,
        ..Default::default()
    }
}

/// Two recurrent populations in one loop (a: 40, b: 30, a -> a, a -> b, b -> a with a delay),
/// 70 circuits: three tiny chips; a readout on a fourth.
pub fn looped(sub: &Substrate) -> Network {
    let p = fast(0.6);
    let w = |mean: f32, std: f32| WeightInit { mean, std };
    let mut net = NetworkBuilder::new("looped", 40, 11)
        .input("in", 20)
        .dense("a", 40, p.clone(), w(0.2, 0.5))
        .recurrent(w(0.0, 0.25))
        .dense("b", 30, p.clone(), w(0.1, 0.4))
        .project("b", "a", Connectivity::Dense, w(-0.05, 0.3))
        .readout("out", 5, p, w(0.0, 0.3))
        .build(sub)
        .unwrap();
    let k = net
        .projections
        .iter()
        .position(|q| q.source == "b" && q.target == "a");
    net.projections[k.unwrap()].delay = 2;
    net
}

pub fn system(chips: usize, delay_us: f32, buffer: usize) -> System {
    System {
        chips,
        topology: LinkTopology::Star,
        delivery_delay_us: delay_us,
        receive_buffer: buffer,
        ..System::default()
    }
}

/// 1 000 inputs -> 2 600 neurons, each reading 120 random inputs (a sparse projection that
/// spans six BrainScaleS-2 chips) -> 10 readouts, over `steps` steps.
pub fn sparse_layer(sub: &Substrate, steps: u32) -> Network {
    let mut rng = Rng::new(5);
    let connections: Vec<[u32; 2]> = (0..2600u32)
        .flat_map(|t| {
            let picks: Vec<u32> = (0..120).map(|_| rng.below(1000) as u32).collect();
            picks.into_iter().map(move |s| [s, t])
        })
        .collect::<std::collections::HashSet<_>>()
        .into_iter()
        .collect();
    let lif = NeuronParams::default();
    NetworkBuilder::new("sparse", steps, 4)
        .input("in", 1000)
        .population("h", 2600, PopulationKind::Lif, lif.clone())
        .project(
            "in",
            "h",
            Connectivity::Sparse { connections },
            WeightInit {
                mean: 0.05,
                std: 0.3,
            },
        )
        .readout(
            "out",
            10,
            lif,
            WeightInit {
                mean: 0.0,
                std: 0.3,
            },
        )
        .build(sub)
        .unwrap()
}

/// `net` on one chip of `sub`, default partitioning: ideal, or emulated with the default
/// analog configuration.
pub fn ideal_or_emulated(net: &Network, sub: &Substrate, emulated: bool) -> neuropart::Executor {
    let opts = neuropart::PartitionOptions::default();
    if emulated {
        neuropart::Executor::emulated(
            net.clone(),
            sub,
            1,
            &opts,
            neuropart::AnalogConfig::default(),
            neuropart::Mode::Emulated,
        )
    } else {
        neuropart::Executor::new(net.clone(), sub, 1, &opts)
    }
    .unwrap()
}

/// Random spikes (probability `p` per input and step) for `samples` samples of `net`'s first
/// input population.
pub fn first_input(
    net: &Network,
    rng: &mut Rng,
    samples: usize,
    p: f64,
) -> [(usize, SpikeTrains); 1] {
    let pop = net.inputs()[0];
    let n = net.populations[pop].size;
    [(pop, random_spikes(rng, samples, n, net.steps, p))]
}

/// Require the same weights in every projection of `a` and `b`.
pub fn assert_same_weights(a: &Network, b: &Network, what: &str) {
    for (x, y) in a.projections.iter().zip(&b.projections) {
        assert_eq!(x.weights, y.weights, "{what}: weights of '{}'", x.name);
    }
}

/// Require that `compact` (a run with [`neuropart::Observe::CompactTraces`]) recorded what
/// `all` (the same run with `AllTraces`) did: the same spikes and scores, and every membrane
/// either the same value or a code that stands for it bit for bit. Returns the populations
/// kept as codes.
pub fn assert_codes_stand_for_values(
    all: &neuropart::Execution,
    compact: &neuropart::Execution,
    what: &str,
) -> Vec<usize> {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    let mut coded = Vec::new();
    for p in 0..all.membrane.len() {
        assert_eq!(
            all.spikes.get(p),
            compact.spikes.get(p),
            "{what}: spikes of {p}"
        );
        assert_eq!(all.peak[p], compact.peak[p], "{what}: scores of {p}");
        assert!(all.codes[p].is_none(), "{what}: AllTraces records values");
        match &compact.codes[p] {
            Some(c) => {
                assert!(compact.membrane[p].is_none(), "{what}: {p} both ways");
                let values = all.membrane[p].as_ref().expect("traced");
                assert_eq!(bits(&c.values()), bits(values), "{what}: codes of {p}");
                coded.push(p);
            }
            None => assert_eq!(
                all.membrane[p].as_deref().map(bits),
                compact.membrane[p].as_deref().map(bits),
                "{what}: membranes of {p}"
            ),
        }
    }
    coded
}

/// Runs of `exec` (noise seed `seed`) with every trace as values and with compact traces: the
/// codes stand for the same membranes, and the backward pass gives the same gradients and loss
/// from either. Returns the populations kept as codes. (Give each call its own seed: buffers
/// come back from the pool holding an earlier run's codes, which a row left unwritten would
/// keep.)
pub fn compact_equals_values(
    exec: &neuropart::Executor,
    samples: usize,
    seed: u32,
    what: &str,
) -> Vec<usize> {
    let net = &exec.network;
    let mut rng = neuropart::Rng::new(8);
    let input = first_input(net, &mut rng, samples, 0.19);
    let run = |observe| {
        exec.run_with_noise(&neuropart::CpuBackend, &input, observe, seed)
            .unwrap()
    };
    let (all, compact) = (
        run(neuropart::Observe::AllTraces),
        run(neuropart::Observe::CompactTraces),
    );
    let coded = assert_codes_stand_for_values(&all, &compact, what);
    let delays = exec.plan.link_delays(net).unwrap();
    let topo = neuropart::Topology::new(net, 1.0, &delays).unwrap();
    let readout = net
        .populations
        .iter()
        .rposition(|p| p.kind == PopulationKind::Readout)
        .expect("a readout");
    let classes = net.populations[readout].size;
    let labels: Vec<u8> = (0..samples).map(|s| (s % classes) as u8).collect();
    let cfg = neuropart::TrainConfig::default();
    let (sa, ga) = neuropart::gradients(net, &topo, &all, &labels, &cfg, 0);
    let (sb, gb) = neuropart::gradients(net, &topo, &compact, &labels, &cfg, 0);
    assert_eq!(sa, sb, "{what}: loss and statistics");
    assert_eq!(ga, gb, "{what}: gradients");
    assert!(
        ga.iter().flatten().any(|&g| g != 0.0),
        "{what}: some gradient"
    );
    coded
}

/// The MNIST network (seed 4), its input weights excitatory enough that hidden neurons spike a
/// few times per sample, on BrainScaleS-2 in `mode`.
pub fn active_mnist(mode: neuropart::Mode, config: neuropart::AnalogConfig) -> neuropart::Executor {
    let sub = Substrate::bss2();
    let mut net = neuropart::mnist_network(4).build(&sub).unwrap();
    for w in &mut net.projections[0].weights {
        *w = 0.2 * w.abs();
    }
    let opts = neuropart::PartitionOptions::default();
    neuropart::Executor::emulated(net, &sub, 1, &opts, config, mode).unwrap()
}

/// After new weights, a run on `backend` brings up to date the residents it takes and only
/// those (a fused wave's; its partitions' own when a run takes them): a run partition by
/// partition (`Observe::Kept`) after a run of the fused wave sees the new weights, as does a
/// run of the fused wave after a run by partitions, each equal to an executor that never saw
/// the old weights (`exec`: a network with fused waves whose hidden layer spikes). The CPU's:
/// a GPU runs by partitions only while it trains (`Observe::Kept` needs the training's device
/// regions), which tests/gpu_train.rs covers step after step against the CPU.
pub fn runs_take_new_weights<B: neuropart::Backend + ?Sized>(
    backend: &B,
    mut exec: neuropart::Executor,
) {
    use neuropart::Observe;
    let mut rng = Rng::new(4);
    let input = first_input(&exec.network, &mut rng, 6, 0.19);
    let run = |e: &neuropart::Executor, observe: Observe| {
        let out = e.run_with_noise(backend, &input, observe, 3).unwrap();
        out.spikes.get(1).unwrap().clone()
    };
    // Every resident prepared with the old weights: the fused wave's by a run of scores, the
    // partitions' own by a run that keeps traces (partition by partition).
    let old = run(&exec, Observe::Scores);
    assert_eq!(run(&exec, Observe::Kept), old, "the same spikes either way");
    assert!(!old.is_empty(), "the hidden layer spikes");
    for round in 0..2 {
        for w in &mut exec.network.projections[0].weights {
            *w *= 1.4 + 0.2 * rng.normal() as f32;
        }
        exec.update_weights().unwrap();
        exec.prepare(backend).unwrap();
        let fresh = exec.clone();
        // Round 0: fused first, then by partitions; round 1 the other way round.
        let order = if round == 0 {
            [Observe::Scores, Observe::Kept]
        } else {
            [Observe::Kept, Observe::Scores]
        };
        for observe in order {
            let (now, expect) = (run(&exec, observe), run(&fresh, observe));
            assert_eq!(now, expect, "round {round}, {observe:?}: hidden spikes");
            assert_ne!(now, old, "round {round}, {observe:?}: the weights changed");
        }
    }
}

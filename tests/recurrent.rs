//! Training recurrent networks: the backward pass through time of loops (a self-connection and
//! a loop between two populations, with delays, across the chips of a system with the links'
//! delivery delay), ideal, emulated and mixed, against finite differences of a forward model
//! written here; readout scores over the last steps and over all steps.

mod common;

use common::{random_spikes, system, tiny_chip};
use neuropart::prelude::*;
use neuropart::{gradients, Score, Topology, TrainConfig};
use neuropart::{AnalogConfig, Mode, Rng};
use neuropart::{Connectivity, NetworkBuilder, NeuronParams, Update, WeightInit};

const STEPS: u32 = 30;
const SAMPLES: usize = 6;
const INPUTS: usize = 6;

/// in(6) -> h(24) with h -> h, h -> g(24), g -> h (one extra step), readout(3) from g and h.
/// Projections: 0 in->h, 1 h->h, 2 h->g, 3 g->out, 4 g->h, 5 h->out.
fn net(sub: &Substrate, update: Update, score: Score) -> Network {
    let p = NeuronParams {
        update,
        ..common::fast(0.5)
    };
    let w = |mean: f32, std: f32| WeightInit { mean, std };
    let mut net = NetworkBuilder::new("rec", STEPS, 21)
        .input("in", INPUTS)
        .dense("h", 24, p.clone(), w(0.35, 0.5))
        .recurrent(w(0.0, 0.3))
        .dense("g", 24, p.clone(), w(0.05, 0.4))
        .readout("out", 3, p, w(0.0, 0.4))
        .project("g", "h", Connectivity::Dense, w(-0.05, 0.3))
        .project("h", "out", Connectivity::Dense, w(0.0, 0.3))
        .build(sub)
        .unwrap();
    net.projections[4].delay = 1;
    net.populations[3].score = score;
    net
}

/// `net` on `sub` in `mode`, one chip per wave, the default analog effects.
fn emulated(net: Network, sub: &Substrate, mode: Mode) -> Executor {
    Executor::emulated(
        net,
        sub,
        1,
        &PartitionOptions::default(),
        AnalogConfig::default(),
        mode,
    )
    .unwrap()
}

fn no_reg() -> TrainConfig {
    TrainConfig {
        reg_readout: 0.0,
        reg_spikes: 0.0,
        reg_weights: 0.0,
        augment: false,
        ..Default::default()
    }
}

/// The forward model of the network, written out here: forward Euler (REFERENCE.md), the
/// spikes and the membranes the emulator recorded held as constants where the surrogate
/// gradient holds them (the spike raster `S`, the reset), and every spike `S + σ(v) − σ(v̄)`
/// with σ(x) = x / (α|x| + 1), whose derivative is SuperSpike's 1/(α|x| + 1)². Its exact
/// gradient is the surrogate gradient, so finite differences of it check the backward pass.
struct Model {
    /// Per population (0 = input): size, spiking.
    pops: Vec<(usize, bool)>,
    /// Per projection: (source, target, delay in steps).
    ends: Vec<(usize, usize, usize)>,
    /// Per projection, per weight (`[target][source]`): steps on a system's links on top.
    links: Vec<Vec<usize>>,
    a: f64,
    k: f64,
    th: f64,
    membrane_first: bool,
    score: Score,
    scale: f64,
    alpha: f64,
}

/// What the emulator recorded for one sample: per population `[step][neuron]` spikes (0/1)
/// and membranes (before reset).
struct Recorded {
    spikes: Vec<Vec<f64>>,
    membrane: Vec<Vec<f64>>,
}

impl Model {
    fn sigma(&self, x: f64) -> f64 {
        x / (self.alpha * x.abs() + 1.0)
    }

    /// Mean loss over the samples and every population's membranes `[sample][pop][t·n+i]`
    /// before the correction `corr` (added to the membranes the spikes and scores read, so that
    /// they read the recorded values at the weights of the recording; without it the spikes are
    /// the recorded ones, which gives the membranes the correction is found from).
    fn forward(
        &self,
        w: &[Vec<f64>],
        rec: &[Recorded],
        labels: &[u8],
        corr: Option<&Vec<Vec<Vec<f64>>>>,
    ) -> (f64, Vec<Vec<Vec<f64>>>) {
        let t_n = STEPS as usize;
        let mut loss = 0.0;
        let mut raws = Vec::new();
        for (s, r) in rec.iter().enumerate() {
            let np = self.pops.len();
            let mut spikes: Vec<Vec<f64>> =
                (0..np).map(|p| vec![0.0; t_n * self.pops[p].0]).collect();
            spikes[0].clone_from(&r.spikes[0]);
            let mut raw: Vec<Vec<f64>> = (0..np).map(|p| vec![0.0; t_n * self.pops[p].0]).collect();
            let mut cur: Vec<Vec<f64>> = (0..np).map(|p| vec![0.0; self.pops[p].0]).collect();
            let mut mem: Vec<Vec<f64>> = (0..np).map(|p| vec![0.0; self.pops[p].0]).collect();
            for t in 0..t_n {
                // Populations in index order: every delay-0 projection goes forward in it.
                for p in 1..np {
                    let n = self.pops[p].0;
                    let mut input = vec![0.0; n];
                    for (q, &(src, tgt, d)) in self.ends.iter().enumerate() {
                        if tgt != p || d > t {
                            continue;
                        }
                        let ns = self.pops[src].0;
                        for post in 0..n {
                            for pre in 0..ns {
                                let d = d + self.links[q][post * ns + pre];
                                if d <= t {
                                    input[post] +=
                                        w[q][post * ns + pre] * spikes[src][(t - d) * ns + pre];
                                }
                            }
                        }
                    }
                    for i in 0..n {
                        let prev_i = cur[p][i];
                        cur[p][i] = self.a * cur[p][i] + input[i];
                        let drive = if self.membrane_first {
                            prev_i
                        } else {
                            cur[p][i]
                        };
                        let v = mem[p][i] + self.k * (0.0 - mem[p][i] + drive);
                        raw[p][t * n + i] = v;
                        if self.pops[p].1 {
                            let recorded = r.spikes[p][t * n + i];
                            let vbar = r.membrane[p][t * n + i];
                            // Without a correction (finding it), the recorded spikes only.
                            spikes[p][t * n + i] = recorded
                                + corr.map_or(0.0, |c| {
                                    self.sigma(v + c[s][p][t * n + i] - self.th)
                                        - self.sigma(vbar - self.th)
                                });
                            mem[p][i] = if recorded > 0.0 { 0.0 } else { v };
                        } else {
                            mem[p][i] = v;
                        }
                    }
                }
            }
            // The readout (last population): its score, log-softmax, cross-entropy.
            let p = np - 1;
            let c = self.pops[p].0;
            let v =
                |t: usize, k: usize| raw[p][t * c + k] + corr.map_or(0.0, |x| x[s][p][t * c + k]);
            let score: Vec<f64> = (0..c)
                .map(|k| {
                    self.scale
                        * match self.score {
                            // At the first step of the recorded maximum (a trace that
                            // stays flat at its maximum has ties that rounding must not
                            // break differently).
                            Score::Max => {
                                let m = &r.membrane[p];
                                let at = (0..t_n).fold(0, |a, t| {
                                    if m[t * c + k] > m[a * c + k] {
                                        t
                                    } else {
                                        a
                                    }
                                });
                                v(at, k)
                            }
                            Score::Last { steps } => {
                                let l = steps as usize;
                                (t_n - l..t_n).map(|t| v(t, k)).sum::<f64>() / l as f64
                            }
                            Score::Sum => (0..t_n).map(|t| v(t, k)).sum(),
                        }
                })
                .collect();
            let top = score.iter().cloned().fold(f64::MIN, f64::max);
            let lse = top + score.iter().map(|x| (x - top).exp()).sum::<f64>().ln();
            loss += lse - score[labels[s] as usize];
            raws.push(raw);
        }
        (loss / rec.len() as f64, raws)
    }
}

/// Largest relative error of the backward pass's gradients against central finite differences
/// of [`Model`], over a spread of weights of every projection, for `exec` (its plan's link
/// delays `links` expected on the projections, added to the model's delays).
fn check(exec: &Executor, links: [usize; 6], label: &str) -> f64 {
    let delays = exec.plan.link_delays(&exec.network).unwrap();
    assert_eq!(
        delays,
        links
            .iter()
            .map(|&d| neuropart::LinkSteps::All(d as u32))
            .collect::<Vec<_>>(),
        "{label}: link delays"
    );
    let per_weight = (0..6)
        .map(|q| vec![links[q]; exec.network.projections[q].weights.len()])
        .collect();
    check_with(exec, per_weight, label)
}

/// [`check`] with the link delays given per projection and weight (`[target][source]`).
fn check_with(exec: &Executor, links: Vec<Vec<usize>>, label: &str) -> f64 {
    let network = &exec.network;
    let mut rng = Rng::new(4);
    let input = random_spikes(&mut rng, SAMPLES, INPUTS, STEPS, 0.25);
    let labels: Vec<u8> = (0..SAMPLES).map(|s| (s % 3) as u8).collect();
    let out = exec
        .run_samples(&CpuBackend, &[(0, input.clone())], Observe::AllTraces, 7, 0)
        .unwrap();
    let delays = exec.plan.link_delays(network).unwrap();
    let topo = Topology::new(network, 1.0, &delays).unwrap();
    assert!(topo.is_recurrent());
    let cfg = no_reg();
    let (st, g) = gradients(network, &topo, &out, &labels, &cfg, 0);
    // Recorded spikes and membranes per sample.
    let t_n = STEPS as usize;
    let rec: Vec<Recorded> = (0..SAMPLES)
        .map(|s| {
            let spikes = (0..4)
                .map(|p| {
                    let n = network.populations[p].size;
                    let mut r = vec![0.0; t_n * n];
                    if let Some(tr) = out.spikes.get(p) {
                        for e in tr.sample(s) {
                            r[e.step as usize * n + e.neuron as usize] = 1.0;
                        }
                    }
                    r
                })
                .collect();
            let membrane = (0..4)
                .map(|p| {
                    let n = network.populations[p].size;
                    out.membrane[p].as_ref().map_or(vec![0.0; t_n * n], |m| {
                        m[s * t_n * n..(s + 1) * t_n * n]
                            .iter()
                            .map(|&x| x as f64)
                            .collect()
                    })
                })
                .collect();
            Recorded { spikes, membrane }
        })
        .collect();
    let hidden_spikes: f64 = rec.iter().map(|r| r.spikes[1].iter().sum::<f64>()).sum();
    let g_spikes: f64 = rec.iter().map(|r| r.spikes[2].iter().sum::<f64>()).sum();
    assert!(
        hidden_spikes > 50.0 && g_spikes > 20.0,
        "{label}: the loop must be active ({hidden_spikes}, {g_spikes} spikes)"
    );
    let pp = &network.populations[1].params;
    // Delays as the network's timing convention says: +1 inside a loop, +the link delay.
    let base = [0usize, 1, 1, 0, 2, 0];
    let model = Model {
        pops: vec![(INPUTS, false), (24, true), (24, true), (3, false)],
        ends: vec![
            (0, 1, base[0]),
            (1, 1, base[1]),
            (1, 2, base[2]),
            (2, 3, base[3]),
            (2, 1, base[4]),
            (1, 3, base[5]),
        ],
        links,
        a: 1.0 - 1.0 / pp.tau_syn as f64,
        k: 1.0 / pp.tau_mem as f64,
        th: pp.v_th as f64,
        membrane_first: pp.update == Update::Hxtorch,
        score: network.populations[3].score,
        scale: cfg.readout_scale as f64,
        alpha: cfg.surrogate_alpha as f64,
    };
    let w0: Vec<Vec<f64>> = network
        .projections
        .iter()
        .map(|p| p.weights.iter().map(|&x| x as f64).collect())
        .collect();
    // The correction that makes the model read the recorded membranes at w0.
    let (_, raw) = model.forward(&w0, &rec, &labels, None);
    let corr: Vec<Vec<Vec<f64>>> = raw
        .iter()
        .zip(&rec)
        .map(|(rs, r)| {
            rs.iter()
                .zip(&r.membrane)
                .map(|(a, b)| b.iter().zip(a).map(|(x, y)| x - y).collect())
                .collect()
        })
        .collect();
    let (l0, _) = model.forward(&w0, &rec, &labels, Some(&corr));
    let lib = st.loss / SAMPLES as f64;
    assert!(
        (l0 - lib).abs() <= 1e-4 * lib.abs().max(1.0),
        "{label}: the model's loss {l0}, the emulator's {lib}"
    );
    let mut worst: f64 = 0.0;
    for (q, gq) in g.iter().enumerate() {
        let mut picks: Vec<usize> = (0..gq.len()).filter(|&k| gq[k].abs() > 1e-6).collect();
        assert!(
            picks.len() >= 8,
            "{label}: projection {q}: {} live weights",
            picks.len()
        );
        let step = picks.len() / 8;
        picks = picks.into_iter().step_by(step).collect();
        picks.extend((0..gq.len()).filter(|&k| gq[k] == 0.0).take(2));
        for k in picks {
            let eps = 1e-5;
            let mut wp = w0.clone();
            wp[q][k] += eps;
            let mut wm = w0.clone();
            wm[q][k] -= eps;
            let fd = (model.forward(&wp, &rec, &labels, Some(&corr)).0
                - model.forward(&wm, &rec, &labels, Some(&corr)).0)
                / (2.0 * eps);
            let an = gq[k] as f64;
            let err = (fd - an).abs() / (fd.abs().max(an.abs()) + 1e-4);
            assert!(
                err < 1e-2,
                "{label}: projection {q} weight {k}: finite difference {fd}, gradient {an}"
            );
            worst = worst.max(err);
        }
    }
    eprintln!("{label}: largest relative gradient error {worst:.2e}");
    worst
}

#[test]
fn recurrent_gradients_on_one_chip_match_finite_differences() {
    let sub = Substrate::bss2();
    for (update, score) in [
        (Update::InputFirst, Score::Max),
        (Update::InputFirst, Score::Sum),
        (Update::Hxtorch, Score::Last { steps: 5 }),
    ] {
        let exec = Executor::new(net(&sub, update, score), &sub, 1, &Default::default()).unwrap();
        check(&exec, [0; 6], &format!("one chip, {update:?}, {score:?}"));
    }
}

#[test]
fn recurrent_gradients_across_chips_include_the_link_delay() {
    // h on chip 0, g on chip 1, the readout on chip 2, one system run: every projection
    // between them crosses a link and arrives 2 steps (2 µs) later.
    let sub = tiny_chip(system(3, 2.0, 0));
    for mode in [Mode::Ideal, Mode::Emulated, Mode::Mixed] {
        let net = net(&sub, Update::InputFirst, Score::Last { steps: 4 });
        let exec = emulated(net, &sub, mode);
        let sp = exec.plan.system.as_ref().unwrap();
        assert_eq!(sp.runs, vec![vec![0, 1, 2]], "one system run");
        let chips: Vec<usize> = exec
            .plan
            .partitions
            .iter()
            .map(|p| p.chip.unwrap())
            .collect();
        assert_eq!(chips, [0, 1, 2]);
        check(&exec, [0, 0, 2, 2, 2, 2], &format!("system, {mode:?}"));
    }
}

#[test]
fn readout_scores_come_from_the_network_file_and_are_checked() {
    let sub = Substrate::bss2();
    let text = |score: &str, kind: &str| {
        format!(
            "name = \"s\"\nsteps = 12\n[[populations]]\nname = \"in\"\nsize = 4\nkind = \"input\"\n\
             [[populations]]\nname = \"out\"\nsize = 3\nkind = \"{kind}\"\nscore = {score}\n\
             [[projections]]\nsource = \"in\"\ntarget = \"out\"\ninit = {{ mean = 0.5, std = 0.3 }}\n"
        )
    };
    let parse = |t: String| {
        Network::from_str(
            &t,
            neuropart::Format::Toml,
            std::path::Path::new("s.toml"),
            &sub,
        )
    };
    let e = parse(text("{ type = \"last\", steps = 0 }", "readout")).unwrap_err();
    assert!(e.to_string().contains("last 0 steps"), "{e}");
    let e = parse(text("{ type = \"last\", steps = 13 }", "readout")).unwrap_err();
    assert!(e.to_string().contains("a run has 12"), "{e}");
    let e = parse(text("{ type = \"sum\" }", "lif")).unwrap_err();
    assert!(e.to_string().contains("only readout populations"), "{e}");
    // Evaluation's scores equal the trace's mean over the last steps / sum, computed here.
    let mut rng = Rng::new(3);
    let input = random_spikes(&mut rng, 5, 4, 12, 0.3);
    for (score, k) in [
        ("{ type = \"last\", steps = 3 }", 3usize),
        ("{ type = \"sum\" }", 12),
    ] {
        let net = parse(text(score, "readout")).unwrap();
        // Defaults are not written back; other scores are.
        let again = toml::to_string(&net).unwrap();
        assert!(again.contains("score"), "{again}");
        let exec = Executor::new(net, &sub, 1, &Default::default()).unwrap();
        let scores = exec
            .run(&CpuBackend, &[(0, input.clone())], Observe::Scores)
            .unwrap();
        let traces = exec
            .run(&CpuBackend, &[(0, input.clone())], Observe::ReadoutTraces)
            .unwrap();
        let m = traces.membrane[1].as_ref().unwrap();
        let got = scores.peak[1].as_ref().unwrap();
        for s in 0..5 {
            for c in 0..3 {
                let sum: f32 = (12 - k..12).map(|t| m[(s * 12 + t) * 3 + c]).sum();
                let want = if k == 12 { sum } else { sum / k as f32 };
                assert!((got[s * 3 + c] - want).abs() <= 1e-5 * want.abs().max(1.0));
            }
        }
    }
    let net = parse(text("{ type = \"max\" }", "readout")).unwrap();
    assert!(!toml::to_string(&net).unwrap().contains("score"));
}

#[test]
fn rows_encoding_feeds_one_row_every_k_steps() {
    // A 2x3 image: row 0 = (1, 0, 0.5), row 1 = (0.25, 0, 0); k = 4.
    let data = neuropart::Dataset {
        shape: [1, 2, 3],
        pixels: vec![1.0, 0.0, 0.5, 0.25, 0.0, 0.0],
        labels: vec![0],
        classes: 1,
    };
    let enc = neuropart::Encoding::Rows { steps_per_row: 4 };
    assert_eq!(enc.inputs(data.shape), 3);
    let t = neuropart::encode::encode_part(&data, &[0], 10, enc, None, 0..1);
    let got: Vec<(u32, u32)> = t.sample(0).iter().map(|e| (e.step, e.neuron)).collect();
    // Step r·k + ⌊k·(1 − x)⌋: (0, 0), (2, 2), (4 + 3, 0).
    assert_eq!(got, [(0, 0), (2, 2), (7, 0)]);
}

#[test]
fn a_recurrent_network_learns_sequential_mnist_rows() {
    // Real data, a small recurrent layer, the rows one every 2 steps: the loss decreases and
    // the accuracy beats chance clearly after three short epochs.
    let (train, test) = neuropart::data::mnist(&neuropart::data::cache_dir("mnist")).unwrap();
    let (train, test) = (train.take(2000), test.take(500));
    let sub = Substrate::bss2();
    let p = NeuronParams {
        tau_mem: 10.0,
        ..Default::default()
    };
    let w = |mean: f32, std: f32| WeightInit { mean, std };
    let mut net = NetworkBuilder::new("rows", 60, 2)
        .input("rows", 28)
        .dense("h", 64, p.clone(), w(0.05, 0.4))
        .recurrent(w(0.0, 0.06))
        .readout("out", 10, p, w(0.0, 0.15))
        .build(&sub)
        .unwrap();
    net.populations[2].score = Score::Sum;
    let exec = Executor::new(net, &sub, 1, &Default::default()).unwrap();
    let mut tr = neuropart::Trainer::new(
        exec,
        TrainConfig {
            batch: 50,
            lr: 0.005,
            augment: false,
            readout_scale: 0.05,
            surrogate_alpha: 10.0,
            reg_spikes: 0.0,
            encoding: neuropart::Encoding::Rows { steps_per_row: 2 },
            ..Default::default()
        },
    )
    .unwrap();
    assert!(tr.topo.is_recurrent());
    let before = tr.evaluate(&CpuBackend, &test, 250).unwrap();
    let e1 = tr.train_epoch(&CpuBackend, &train, |_, _, _| {}).unwrap();
    tr.train_epoch(&CpuBackend, &train, |_, _, _| {}).unwrap();
    let e2 = tr.train_epoch(&CpuBackend, &train, |_, _, _| {}).unwrap();
    let after = tr.evaluate(&CpuBackend, &test, 250).unwrap();
    assert!(
        e2.mean_loss() < 0.9 * e1.mean_loss(),
        "training loss {} -> {}",
        e1.mean_loss(),
        e2.mean_loss()
    );
    assert!(
        after.accuracy() > 0.5 && after.accuracy() > before.accuracy() + 0.3,
        "test accuracy {} -> {}",
        before.accuracy(),
        after.accuracy()
    );
}

#[test]
fn a_training_batch_over_the_memory_limit_runs_in_pieces_and_one_chunk_over_it_is_refused() {
    // T = 784 with 256 recurrent neurons and 10 readouts: 266 neurons x 784 steps of f32
    // membranes (twice) and current gradients per sample, ideal. (On a chip that holds the
    // loop.)
    let sub = Substrate {
        circuits_per_hemisphere: 1024,
        ..Substrate::bss2()
    };
    let w = WeightInit::default();
    let net = NetworkBuilder::new("long", 784, 1)
        .input("rows", 28)
        .dense("h", 256, NeuronParams::default(), w)
        .recurrent(w)
        .readout("out", 10, NeuronParams::default(), w)
        .build(&sub)
        .unwrap();
    let per_sample = 266 * 784 * 4 * 3;
    let exec = Executor::new(net.clone(), &sub, 1, &Default::default()).unwrap();
    assert_eq!(
        neuropart::TrainMemory::of(&exec, true).per_sample(),
        per_sample
    );
    // Emulated, the hidden membranes are kept as the CADC's 8-bit codes (the readout's as
    // values): 256 x 784 x 1 byte + 10 x 784 x 4, twice, and the gradients as before.
    let em = emulated(net, &sub, Mode::Emulated);
    let mem = neuropart::TrainMemory::of(&em, true);
    assert_eq!(mem.coded, 256);
    assert_eq!(mem.per_sample(), (256 + 40) * 784 * 2 + 266 * 784 * 4);
    // On a backend that records values (a GPU with the backward pass on the host), f32.
    assert_eq!(
        neuropart::TrainMemory::of(&em, false).per_sample(),
        per_sample
    );
    // Other tests of this binary need far less than the limits set here.
    neuropart::set_memory_limit(100 * per_sample - 1);
    let big = neuropart::Trainer::new(exec.clone(), TrainConfig::default());
    neuropart::set_memory_limit(16 * per_sample - 1);
    let e = neuropart::Trainer::new(exec.clone(), TrainConfig::default()).unwrap_err();
    let small = neuropart::Trainer::new(
        exec,
        TrainConfig {
            batch: 15,
            ..Default::default()
        },
    );
    neuropart::set_memory_limit(0);
    // A batch of 100 is 7 chunks of 16 samples: the tree cuts them 4 + 3, then 2 + 2 + 2 + 1.
    let mut big = big.unwrap();
    assert_eq!(big.memory_budget(), 100 * per_sample - 1);
    assert_eq!(big.pieces(7, &CpuBackend), 2, "6 chunks fit, 7 do not");
    let mut pieces = |budget: u64| {
        big.set_memory_budget(budget);
        big.pieces(7, &CpuBackend)
    };
    assert_eq!(pieces(64 * per_sample), 2, "pieces of 4 and 3 chunks");
    assert_eq!(pieces(63 * per_sample), 4, "pieces of 2, 2, 2 and 1 chunks");
    assert_eq!(pieces(16 * per_sample), 7, "one chunk a piece");
    assert_eq!(pieces(per_sample), 7, "never fewer samples than a chunk");
    assert!(
        e.to_string().contains("16 samples") && e.to_string().contains("per sample"),
        "{e}"
    );
    assert!(
        small.is_ok(),
        "a batch smaller than a chunk needs only its own samples"
    );
}

#[test]
fn a_batch_in_pieces_trains_to_the_same_weights_as_in_one() {
    // The recurrent network across three chips with link delays, emulated (noise streams per
    // sample), a batch of 80 (five chunks) for three steps: with room for one chunk at a time
    // it runs in five pieces, with room for two in three (2 + 2 + 1); two processes (threads)
    // take four chunks and one, the first in four pieces; every way ends with the weights and
    // losses of one piece, bit for bit (summed in another order they differ).
    let sub = tiny_chip(system(3, 2.0, 0));
    let per_sample = {
        let net = net(&sub, Update::InputFirst, Score::Sum);
        neuropart::TrainMemory::of(&emulated(net, &sub, Mode::Emulated), true).per_sample()
    };
    let run = |budget: Option<u64>, comm: &dyn neuropart::comm::Communicator| {
        let exec = emulated(
            net(&sub, Update::InputFirst, Score::Sum),
            &sub,
            Mode::Emulated,
        );
        let cfg = TrainConfig {
            batch: 80,
            ..no_reg()
        };
        let mut t = neuropart::Trainer::new(exec, cfg).unwrap();
        if let Some(b) = budget {
            t.set_memory_budget(b);
        }
        let mut rng = Rng::new(5);
        let (mut losses, mut pieces) = (Vec::new(), Vec::new());
        for bi in 0..3 {
            let spikes = random_spikes(&mut rng, 80, INPUTS, STEPS, 0.08);
            let labels: Vec<u8> = (0..80).map(|k| (k * 7 % 3) as u8).collect();
            let (st, timings) = t
                .train_batch_in(&CpuBackend, comm, spikes, &labels, bi, Default::default())
                .unwrap();
            losses.push(st.loss);
            pieces.push(timings.pieces);
        }
        (pieces, t.exec.network.clone(), losses)
    };
    let one = &neuropart::comm::Single;
    let (pieces, whole, loss) = run(None, one);
    assert_eq!(pieces, [1, 1, 1]);
    for (budget, want) in [(16 * per_sample, 5), (32 * per_sample, 3)] {
        let (pieces, net, l) = run(Some(budget), one);
        assert_eq!(pieces, [want; 3], "pieces run per batch");
        common::assert_same_weights(&whole, &net, &format!("{want} pieces"));
        assert_eq!(loss, l, "{want} pieces: losses");
    }
    // A batch larger than the trainer was made for, whose one-chunk piece is over the limit:
    // refused, naming the piece.
    let exec = emulated(
        net(&sub, Update::InputFirst, Score::Sum),
        &sub,
        Mode::Emulated,
    );
    let mut t = neuropart::Trainer::new(
        exec,
        TrainConfig {
            batch: 4,
            ..no_reg()
        },
    )
    .unwrap();
    t.set_memory_budget(10 * per_sample);
    let spikes = random_spikes(&mut Rng::new(5), 16, INPUTS, STEPS, 0.08);
    let e = t
        .train_batch(&CpuBackend, spikes, &[0; 16], 0, Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("a piece of a training batch, 16 samples"), "{e}");
    let ranks = neuropart::comm::ThreadGroup::run(2, |comm| run(Some(16 * per_sample), comm));
    for (rank, (pieces, net, l), want) in ranks
        .into_iter()
        .enumerate()
        .map(|(r, x)| (r, x, [4, 1][r]))
    {
        assert_eq!(pieces, [want; 3], "process {rank}: pieces run per batch");
        common::assert_same_weights(&whole, &net, &format!("process {rank} in pieces"));
        assert_eq!(loss, l, "process {rank}: losses");
    }
}

#[test]
fn recurrent_gradients_with_populations_split_over_chips_take_each_synapses_delay() {
    // Chips of 16 circuits: h's 24 neurons on chips 0 and 1, g's on chips 1 and 2, the readout
    // on chip 3, one system run. h -> h, h -> g and g -> h then have synapses within a chip
    // and synapses that cross a link (2 steps later): two delays in one projection.
    let sub = Substrate {
        circuits_per_hemisphere: 8,
        ..tiny_chip(system(4, 2.0, 0))
    };
    for mode in [Mode::Ideal, Mode::Emulated] {
        let net = net(&sub, Update::InputFirst, Score::Last { steps: 4 });
        let exec = emulated(net, &sub, mode);
        let plan = &exec.plan;
        assert_eq!(plan.system.as_ref().unwrap().runs, vec![vec![0, 1, 2, 3]]);
        // Each neuron's chip, from the plan's partitions; a synapse crosses a link where its
        // source and target neurons sit on different chips.
        let network = &exec.network;
        let mut chip: Vec<Vec<Option<usize>>> = network
            .populations
            .iter()
            .map(|p| vec![None; p.size])
            .collect();
        for part in &plan.partitions {
            for r in &part.parts {
                let n = &r.neurons;
                chip[n.population][n.range()].fill(part.chip);
            }
        }
        assert_ne!(chip[1][0], chip[1][23], "h spans two chips");
        let mut mixed = 0;
        let links: Vec<Vec<usize>> = (0..network.projections.len())
            .map(|q| {
                let (src, tgt) = network.endpoints(q).unwrap();
                let ns = network.populations[src].size;
                let nt = network.populations[tgt].size;
                let v: Vec<usize> = (0..nt * ns)
                    .map(|k| {
                        let (post, pre) = (k / ns, k % ns);
                        match (chip[src][pre], chip[tgt][post]) {
                            (Some(a), Some(b)) if a != b => 2,
                            _ => 0,
                        }
                    })
                    .collect();
                mixed += usize::from(v.contains(&0) && v.iter().any(|&d| d > 0));
                v
            })
            .collect();
        assert_eq!(mixed, 3, "h -> h, h -> g and g -> h have two delays");
        let said = plan.link_delays(network).unwrap();
        for (q, (l, want)) in said.iter().zip(&links).enumerate() {
            let crossing = match l {
                neuropart::LinkSteps::All(d) => {
                    if *d > 0 {
                        want.len()
                    } else {
                        0
                    }
                }
                neuropart::LinkSteps::Each(v) => v.iter().filter(|&&d| d > 0).count(),
            };
            let expected = want.iter().filter(|&&d| d > 0).count();
            assert_eq!(crossing, expected, "projection {q}");
        }
        check_with(&exec, links, &format!("split populations, {mode:?}"));
    }
}

#[test]
fn compact_traces_across_chips_are_the_codes_of_the_same_membranes() {
    // Emulated: the chips as one program (unlimited links; its codes copied into h's and g's,
    // the readout's decoded) and in lock-step windows (a receive buffer that never fills);
    // mixed (only h emulated; the chips' readouts differ, so windows either way).
    let mut seed = 0;
    for buffer in [0, 1_000_000] {
        let sub = tiny_chip(system(3, 2.0, buffer));
        for (mode, expect) in [(Mode::Emulated, vec![1, 2]), (Mode::Mixed, vec![1])] {
            let exec = emulated(net(&sub, Update::InputFirst, Score::Sum), &sub, mode);
            let what = format!("system, buffer {buffer}, {mode:?}");
            seed += 1;
            let coded = common::compact_equals_values(&exec, SAMPLES, seed, &what);
            assert_eq!(coded, expect, "{what}");
        }
    }
}

//! The spine's invariants: dynamics against hand-computed values, whole versus partitioned
//! execution, plan and schedule invariants on random networks, the paper's MNIST plan, and
//! clear errors for bad input.

mod common;

use common::*;
use neuropart::prelude::*;
use neuropart::NeuronParams;
use neuropart::PartitionProgram;
use neuropart::Rng;
use neuropart::Schedule;
use neuropart::{Network, NetworkBuilder, PopulationKind, WeightInit};
use neuropart::{Origin, PartitionOptions, Plan};
use std::collections::HashSet;
use std::path::Path;

/// One LIF neuron fed by three input channels with known weights and spike times.
fn single_neuron(weights: Vec<f32>, steps: u32) -> Network {
    let mut net = NetworkBuilder::new("one", steps, 0)
        .input("in", weights.len())
        .dense(
            "n",
            1,
            NeuronParams {
                tau_mem: 6.0,
                tau_syn: 5.7,
                v_th: 1.0,
                ..Default::default()
            },
            WeightInit::default(),
        )
        .build(&Substrate::bss2())
        .unwrap();
    net.projections[0].weights = weights;
    net
}

/// Closed form of the Euler-discretised neuron (f64): with a = 1 − dt/τ_syn, b = 1 − dt/τ_mem,
/// k = dt/τ_mem, a current jump w at step s contributes i_t = w·a^(t−s) and, while no spike
/// resets the membrane, v_t = Σ w·k·(b^(n+1) − a^(n+1))/(b − a), n = t − s.
fn closed_form(events: &[(u32, f64)], t: u32) -> f64 {
    let (a, b, k) = (1.0 - 1.0 / 5.7f64, 1.0 - 1.0 / 6.0f64, 1.0 / 6.0f64);
    events
        .iter()
        .filter(|(s, _)| *s <= t)
        .map(|&(s, w)| {
            let n = (t - s) as i32;
            w * k * (b.powi(n + 1) - a.powi(n + 1)) / (b - a)
        })
        .sum()
}

#[test]
fn one_neuron_matches_closed_form_and_fires_at_hand_computed_step() {
    // Sub-threshold: the whole trace follows the closed form.
    let w = [0.75f64, 0.5, -0.25];
    let times = [2u32, 5, 9];
    let net = single_neuron(w.iter().map(|&x| x as f32).collect(), 30);
    let exec = Executor::new(net, &Substrate::bss2(), 1, &PartitionOptions::default()).unwrap();
    let ev: Vec<SpikeEvent> = times
        .iter()
        .enumerate()
        .map(|(j, &t)| SpikeEvent {
            step: t,
            neuron: j as u32,
        })
        .collect();
    let input = SpikeTrains::from_samples(3, 30, vec![ev]);
    let out = exec
        .run(&CpuBackend, &[(0, input)], Observe::AllTraces)
        .unwrap();
    let trace = out.membrane[1].as_ref().unwrap();
    let events: Vec<(u32, f64)> = times.iter().cloned().zip(w.iter().cloned()).collect();
    for t in 0..30 {
        let expect = closed_form(&events, t);
        assert!(
            (trace[t as usize] as f64 - expect).abs() < 1e-5,
            "step {t}: {} vs {expect}",
            trace[t as usize]
        );
    }
    assert!(
        out.spikes.get(1).unwrap().is_empty(),
        "stays below threshold"
    );

    // Supra-threshold: two strong inputs at steps 0 and 1. By the closed form the membrane
    // first reaches 1 at the step found below; the neuron must spike exactly there, once.
    let net = single_neuron(vec![2.0, 2.0], 30);
    let events = [(0u32, 2.0f64), (1, 2.0)];
    let first = (0..30).find(|&t| closed_form(&events, t) >= 1.0).unwrap();
    // Hand check of that step: v_0 = 2/6 = 0.333, v_1 = 0.333 + (3.649 − 0.333)/6 = 0.886,
    // v_2 = 0.886 + (3.011 − 0.886)/6 = 1.240 → spike at step 2.
    assert_eq!(first, 2);
    let exec = Executor::new(net, &Substrate::bss2(), 1, &PartitionOptions::default()).unwrap();
    let input = SpikeTrains::from_samples(
        2,
        30,
        vec![vec![
            SpikeEvent { step: 0, neuron: 0 },
            SpikeEvent { step: 1, neuron: 1 },
        ]],
    );
    let out = exec
        .run(&CpuBackend, &[(0, input)], Observe::AllTraces)
        .unwrap();
    let spikes: Vec<u32> = out
        .spikes
        .get(1)
        .unwrap()
        .sample(0)
        .iter()
        .map(|e| e.step)
        .collect();
    // After the reset at step 2 the remaining current (a²·2 + a·2 = 3.011·a, decaying by a
    // per step) drives the membrane up again: v_t = b·v_{t−1} + k·i_t from v = 0, reset to 0
    // at every crossing; computed in f64 here for every remaining step.
    let a = 1.0 - 1.0 / 5.7f64;
    let (b, k) = (1.0 - 1.0 / 6.0f64, 1.0 / 6.0f64);
    let i2 = 2.0 * a * a + 2.0 * a;
    let mut expect = vec![2u32];
    let mut v = 0.0;
    for t in 3..30 {
        v = b * v + k * i2 * a.powi(t - 2);
        if v >= 1.0 {
            expect.push(t as u32);
            v = 0.0;
        }
    }
    assert_eq!(spikes, expect, "every spike step, not only the first");
}

#[test]
fn results_and_inputs_are_arrays_indexed_by_sample_step_neuron() {
    use neuropart::ndarray::{Array3, Axis};
    // The single neuron of the closed form: sample 0 gets no input, sample 1 the three input
    // spikes; the input goes in as a dense array.
    let w = [0.75f64, 0.5, -0.25];
    let times = [2u32, 5, 9];
    let net = single_neuron(w.iter().map(|&x| x as f32).collect(), 30);
    let exec = Executor::new(net, &Substrate::bss2(), 1, &PartitionOptions::default()).unwrap();
    let mut dense = Array3::from_elem((2, 30, 3), false);
    for (j, &t) in times.iter().enumerate() {
        dense[[1, t as usize, j]] = true;
    }
    let input = SpikeTrains::from_dense(dense.view());
    assert_eq!(input.sample(0), &[], "sample 0 has no spikes");
    assert_eq!(input.sample(1).len(), 3);
    assert_eq!(
        input.to_dense(),
        dense,
        "dense -> trains -> dense is the identity"
    );
    // A transposed (non-contiguous) view reads by index, not by memory order.
    let mut flipped = Array3::from_elem((3, 30, 2), false);
    flipped.assign(&dense.view().permuted_axes([2, 1, 0]));
    let back = SpikeTrains::from_dense(flipped.view().permuted_axes([2, 1, 0]));
    assert_eq!(back, input);

    let out = exec
        .run(&CpuBackend, &[(0, input)], Observe::AllTraces)
        .unwrap();
    let m = out.membranes(1).expect("recorded");
    assert_eq!(m.dim(), (2, 30, 1));
    let events: Vec<(u32, f64)> = times.iter().cloned().zip(w.iter().cloned()).collect();
    for t in 0..30 {
        assert_eq!(m[[0, t, 0]], 0.0, "no input, no membrane (step {t})");
        let expect = closed_form(&events, t as u32);
        assert!((m[[1, t, 0]] as f64 - expect).abs() < 1e-5, "step {t}");
    }
    let spikes = out.spikes_dense(1).unwrap();
    assert_eq!(spikes.dim(), (2, 30, 1));
    assert!(!spikes.iter().any(|&x| x), "stays below threshold");
    assert_eq!(
        out.spikes_dense(0).unwrap(),
        dense,
        "the input as it went in"
    );

    // Scores are the readout's maximum membrane over time, per sample and neuron: the MNIST
    // network on three images (blank, one bright pixel, a bright block), its first layer made
    // excitatory and its readout weights large so that the block's spikes show.
    let sub = Substrate::bss2();
    let mut net = neuropart::mnist_network(1).build(&sub).unwrap();
    for w in &mut net.projections[0].weights {
        *w = w.abs();
    }
    for w in &mut net.projections[1].weights {
        *w *= 8.0;
    }
    let exec = Executor::new(net, &sub, 1, &PartitionOptions::default()).unwrap();
    let mut images = vec![vec![0.0f32; 784]; 3];
    images[1][400] = 1.0;
    images[2][100..700].fill(1.0);
    let trains: Vec<Vec<SpikeEvent>> = images
        .iter()
        .map(|im| neuropart::encode::image(im, 30))
        .collect();
    let input = SpikeTrains::from_samples(784, 30, trains);
    let out = exec
        .run(&CpuBackend, &[(0, input)], Observe::ReadoutTraces)
        .unwrap();
    let r = out.membranes(2).expect("recorded");
    assert_eq!(r.dim(), (3, 30, 10));
    let scores = out.scores(2).expect("a readout");
    assert_eq!(scores.dim(), (3, 10));
    for s in 0..3 {
        for n in 0..10 {
            let max = (0..30)
                .map(|t| r[[s, t, n]])
                .fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(scores[[s, n]], max, "sample {s}, neuron {n}");
        }
    }
    let row = |s: usize| scores.index_axis(Axis(0), s).to_vec();
    assert_ne!(row(0), row(2), "the samples differ");
}

fn assert_same_as_reference(
    net: &Network,
    substrate: &Substrate,
    opts: &PartitionOptions,
    seed: u64,
) -> usize {
    let mut rng = Rng::new(seed ^ 0xABCD);
    let samples = 3;
    let input_pop = net.inputs()[0];
    let n_in = net.populations[input_pop].size;
    let input = random_spikes(&mut rng, samples, n_in, net.steps, 0.25);
    let reference = reference(net, substrate.dt_us, &[(input_pop, input.clone())]);
    let exec = Executor::new(net.clone(), substrate, 1, opts).unwrap();
    let out = exec
        .run(&CpuBackend, &[(input_pop, input)], Observe::AllTraces)
        .unwrap();
    let mut total = 0;
    for (p, pop) in net.populations.iter().enumerate() {
        if pop.kind == PopulationKind::Input {
            continue;
        }
        let expect = raster_to_trains(&reference.spikes[p], samples, net.steps, pop.size);
        let got = out.spikes.get(p).unwrap();
        assert_eq!(got, &expect, "seed {seed}: spikes of '{}' differ", pop.name);
        total += got.len();
        let m = out.membrane[p].as_ref().unwrap();
        assert_eq!(
            m, &reference.membrane[p],
            "seed {seed}: membrane of '{}'",
            pop.name
        );
    }
    total
}

#[test]
fn whole_and_partitioned_runs_give_identical_spikes() {
    let tiny = small_substrate();
    let big = Substrate::bss2();
    let mut partitioned_somewhere = false;
    let mut spikes = 0;
    for seed in 0..12 {
        let net = random_network(seed, &tiny);
        let plan_tiny = Plan::new(&net, &tiny, &PartitionOptions::default()).unwrap();
        let merged = PartitionOptions {
            merge_layers: true,
            ..Default::default()
        };
        let plan_big = Plan::new(&net, &big, &merged).unwrap();
        assert_eq!(
            plan_big.partitions.len(),
            1,
            "seed {seed}: fits one BSS-2 whole"
        );
        partitioned_somewhere |= plan_tiny.partitions.len() > 3;
        // Whole (one partition, stages inside), and partitioned on the tiny chip, both equal to
        // the naive whole-network reference.
        spikes += assert_same_as_reference(&net, &big, &merged, seed);
        spikes += assert_same_as_reference(&net, &tiny, &PartitionOptions::default(), seed);
        spikes += assert_same_as_reference(&net, &tiny, &merged, seed);
    }
    assert!(
        partitioned_somewhere,
        "some network was split into several partitions"
    );
    assert!(
        spikes > 500,
        "networks must actually spike ({spikes} spikes)"
    );
}

#[test]
fn plan_invariants_hold_on_random_networks() {
    for seed in 0..40 {
        let sub = if seed % 2 == 0 {
            small_substrate()
        } else {
            Substrate::bss2()
        };
        let net = random_network(seed, &sub);
        for merge in [false, true] {
            let plan = Plan::new(
                &net,
                &sub,
                &PartitionOptions {
                    merge_layers: merge,
                    ..Default::default()
                },
            )
            .unwrap();
            check_plan(&net, &plan, seed);
            for chips in [1, 2, 3] {
                check_schedule(&plan, &Schedule::new(&plan, chips), chips);
            }
        }
    }
}

fn check_plan(net: &Network, plan: &Plan, seed: u64) {
    let sub = &plan.substrate;
    // Coverage: every non-input neuron exactly once.
    for (p, pop) in net.populations.iter().enumerate() {
        if pop.kind == PopulationKind::Input {
            continue;
        }
        let mut seen = vec![0; pop.size];
        for part in &plan.partitions {
            for r in part.parts.iter().filter(|r| r.neurons.population == p) {
                for n in r.neurons.range() {
                    seen[n] += 1;
                }
            }
        }
        assert!(
            seen.iter().all(|&c| c == 1),
            "seed {seed}: '{}' coverage {seen:?}",
            pop.name
        );
    }
    // Every synapse exactly once: the synapses the compiled programs hold, as (projection,
    // source neuron, target neuron, weight), are exactly those enumerated by hand from the
    // network (`hand_synapses`), each once.
    let mut expected: Vec<(u32, usize, usize, u32)> = Vec::new();
    for p in 0..net.projections.len() {
        for (post, pre, w) in hand_synapses(net, p) {
            expected.push((p as u32, pre, post, (w as f32).to_bits()));
        }
    }
    let mut compiled: Vec<(u32, usize, usize, u32)> = Vec::new();
    for part in &plan.partitions {
        let prog = PartitionProgram::compile(net, plan, part).unwrap();
        let nch = prog.channels.len();
        for src in 0..prog.synapse_offsets.len() - 1 {
            let (_, pre) = if src < nch {
                prog.channels[src]
            } else {
                prog.neurons[src - nch]
            };
            let a = prog.synapse_offsets[src] as usize;
            for (syn, r) in prog.synapses_of(src).iter().zip(prog.weight_refs_from(a)) {
                let (_, post) = prog.neurons[syn.target as usize];
                let w = net.projections[r.projection as usize].weights[r.index as usize];
                compiled.push((r.projection, pre as usize, post as usize, w.to_bits()));
            }
        }
    }
    expected.sort_unstable();
    compiled.sort_unstable();
    assert_eq!(compiled, expected, "seed {seed}: synapse coverage");
    // Substrate constraints.
    for part in &plan.partitions {
        let used: usize = part
            .parts
            .iter()
            .map(|r| r.neurons.size * r.circuits_per_neuron)
            .sum();
        assert_eq!(used, part.circuits_used);
        assert!(used <= sub.circuits(), "seed {seed}: circuits {used}");
        let mut circuits = HashSet::new();
        for (k, r) in part.parts.iter().enumerate() {
            assert!(r.circuits_per_neuron <= sub.max_circuits_per_neuron);
            assert!(
                r.rows_per_neuron <= r.circuits_per_neuron * sub.rows_per_circuit(),
                "seed {seed}: fan-in rows {} > {} circuits",
                r.rows_per_neuron,
                r.circuits_per_neuron
            );
            let (rows, _) = net.rows_needed(r.neurons.population, sub).unwrap();
            assert_eq!(rows, r.rows_per_neuron);
            for j in 0..r.neurons.size {
                for c in part.circuit_of(sub, k, j) {
                    assert!(c < sub.circuits(), "seed {seed}: circuit {c} off the chip");
                    assert!(circuits.insert(c), "seed {seed}: circuit {c} used twice");
                }
            }
        }
        assert!(part.channel_count() <= sub.addressable_sources());
        for s in &part.sources {
            if let Origin::Partition(d) = s.origin {
                assert!(d < part.id, "sources come from earlier partitions");
            }
        }
    }
    // Recurrent components whole inside one partition.
    let ends = net.all_endpoints().unwrap();
    for comp in net.components().unwrap() {
        let looped = comp.len() > 1 || ends.contains(&(comp[0], comp[0]));
        if !looped || net.populations[comp[0]].kind == PopulationKind::Input {
            continue;
        }
        let homes: HashSet<usize> = comp
            .iter()
            .flat_map(|&p| {
                plan.partitions
                    .iter()
                    .filter(move |part| part.parts.iter().any(|r| r.neurons.population == p))
                    .map(|part| part.id)
            })
            .collect();
        assert_eq!(
            homes.len(),
            1,
            "seed {seed}: component {comp:?} split over {homes:?}"
        );
    }
}

fn check_schedule(plan: &Plan, sch: &Schedule, chips: usize) {
    let mut wave_of = vec![usize::MAX; plan.partitions.len()];
    for (w, wave) in sch.waves.iter().enumerate() {
        for &p in wave {
            assert_eq!(wave_of[p], usize::MAX, "partition {p} in two waves");
            wave_of[p] = w;
        }
    }
    let mut round_of = vec![usize::MAX; plan.partitions.len()];
    for (r, round) in sch.rounds.iter().enumerate() {
        assert!(round.len() <= chips);
        for &p in round {
            assert_eq!(round_of[p], usize::MAX);
            round_of[p] = r;
        }
    }
    for p in &plan.partitions {
        assert_ne!(wave_of[p.id], usize::MAX, "every partition scheduled");
        for d in p.dependencies() {
            assert!(
                wave_of[d] < wave_of[p.id],
                "dependency {d} of {} in a later wave",
                p.id
            );
            assert!(round_of[d] < round_of[p.id]);
        }
    }
}

#[test]
fn mnist_plans_to_four_hidden_partitions_and_a_readout() {
    let sub = Substrate::bss2();
    let net = Network::load(Path::new("examples/networks/mnist.toml"), &sub).unwrap();
    let plan = Plan::new(&net, &sub, &PartitionOptions::default()).unwrap();
    assert_eq!(plan.partitions.len(), 5);
    for p in &plan.partitions[..4] {
        assert_eq!(p.parts.len(), 1);
        assert_eq!(p.parts[0].neurons.size, 64);
        assert_eq!(p.parts[0].circuits_per_neuron, 8);
        assert_eq!(p.circuits_used, 512);
        assert_eq!(p.channel_count(), 784);
        assert_eq!(p.dependencies(), Vec::<usize>::new());
    }
    let r = &plan.partitions[4];
    assert_eq!(
        (r.parts[0].neurons.size, r.parts[0].circuits_per_neuron),
        (10, 2)
    );
    assert_eq!(r.dependencies(), vec![0, 1, 2, 3]);
    let seq = Schedule::new(&plan, 1);
    assert_eq!(seq.waves, vec![vec![0, 1, 2, 3], vec![4]]);
    assert_eq!(seq.cost.host_round_trips, 5);
    let four = Schedule::new(&plan, 4);
    assert_eq!(four.rounds, vec![vec![0, 1, 2, 3], vec![4]]);
    assert_eq!(four.cost.host_round_trips, 2);
    assert_eq!(four.cost.chip_runs, 5);
    assert_eq!(four.cost.replayed_channels, 256);
    // A chip with 4x the circuits holds the hidden layer in one run.
    let big = Substrate {
        circuits_per_hemisphere: 1024,
        ..sub
    };
    assert_eq!(
        Plan::new(&net, &big, &PartitionOptions::default())
            .unwrap()
            .partitions
            .len(),
        2
    );
}

fn err_of(toml_text: &str) -> String {
    match Network::from_str(
        toml_text,
        neuropart::Format::Toml,
        Path::new("bad.toml"),
        &Substrate::bss2(),
    ) {
        Ok(_) => panic!("accepted:\n{toml_text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_input_gives_clear_errors() {
    // Recurrent population larger than one substrate: 600 neurons with a self-loop.
    let sub = Substrate::bss2();
    let net = NetworkBuilder::new("r", 10, 0)
        .input("in", 10)
        .dense("big", 600, NeuronParams::default(), WeightInit::default())
        .recurrent(WeightInit::default())
        .build(&sub)
        .unwrap();
    let e = Plan::new(&net, &sub, &PartitionOptions::default())
        .unwrap_err()
        .to_string();
    // 10 + 600 signed inputs = 1220 rows → 5 → 8 circuits; 600 × 8 = 4800 > 512.
    assert!(
        e.contains("recurrent") && e.contains("big") && e.contains("4800") && e.contains("512"),
        "{e}"
    );
    assert!(e.contains("short by 4288"), "{e}");

    // Fan-in beyond the largest logical neuron: 70 000 signed inputs need 140 000 rows, the
    // whole chip has 512 × 256 = 131 072.
    let net = NetworkBuilder::new("f", 10, 0)
        .input("in", 70_000)
        .dense("wide", 1, NeuronParams::default(), WeightInit::default())
        .build(&sub)
        .unwrap();
    let e = Plan::new(&net, &sub, &PartitionOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("wide")
            && e.contains("140000")
            && e.contains("131072")
            && e.contains("short by 8928"),
        "{e}"
    );

    // Malformed TOML: the parser's location is passed on.
    let e = err_of("name = \"x\"\n[[populations]\nname = 1\n");
    assert!(
        e.contains("bad.toml") && e.contains("cannot parse") && e.contains("line 2"),
        "{e}"
    );

    // NaN parameter.
    let base = "[[populations]]\nname = \"in\"\nsize = 2\nkind = \"input\"\n\
                [[populations]]\nname = \"h\"\nsize = 2\n";
    let e = err_of(&format!("{base}params = {{ tau_mem = nan }}\n"));
    assert!(
        e.contains("tau_mem") && (e.contains("'h'") || e.contains("of h")),
        "{e}"
    );
    assert!(e.contains("finite") && e.contains("bad.toml"), "{e}");

    // Negative time constant.
    let e = err_of(&format!("{base}params = {{ tau_syn = -3.0 }}\n"));
    assert!(e.contains("tau_syn") && e.contains("-3"), "{e}");

    // Unknown population.
    let e = err_of(&format!(
        "{base}[[projections]]\nsource = \"in\"\ntarget = \"nope\"\n"
    ));
    assert!(e.contains("unknown population 'nope'"), "{e}");

    // Weight count mismatch.
    let e = err_of(&format!(
        "{base}[[projections]]\nsource = \"in\"\ntarget = \"h\"\nweights = [1.0, 2.0, 3.0]\n"
    ));
    assert!(e.contains("3 weights") && e.contains("needs 4"), "{e}");

    // NaN weight.
    let e = err_of(&format!(
        "{base}[[projections]]\nsource = \"in\"\ntarget = \"h\"\nweights = [1.0, nan, 3.0, 1.0]\n"
    ));
    assert!(e.contains("weights[1]") && e.contains("NaN"), "{e}");

    // Convolution shape mismatch.
    let e = err_of(
        "[[populations]]\nname = \"img\"\nsize = 16\nkind = \"input\"\nshape = [1, 4, 4]\n\
         [[populations]]\nname = \"c\"\nsize = 9\nshape = [1, 3, 3]\n\
         [[projections]]\nsource = \"img\"\ntarget = \"c\"\nconnectivity = { type = \"conv2d\", kernel = 3 }\n",
    );
    assert!(
        e.contains("gives 2x2 outputs") && !e.contains("Some("),
        "{e}"
    );
    assert!(e.contains("[1, 3, 3]"), "{e}");

    // Excitatory projection with a negative weight.
    let e = err_of(&format!("{base}[[projections]]\nsource = \"in\"\ntarget = \"h\"\nsign = \"excitatory\"\nweights = [1.0, -2.0, 3.0, 1.0]\n"));
    assert!(
        e.contains("weights[1]") && e.contains("sign (excitatory)"),
        "{e}"
    );

    // Missing file.
    let e = Network::load(Path::new("no/such/net.toml"), &sub)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no/such/net.toml"), "{e}");
}

#[test]
fn network_files_round_trip() {
    let sub = Substrate::bss2();
    let dir = std::env::temp_dir().join(format!("neuropart-rt-{}", std::process::id()));
    for seed in 0..4 {
        let net = random_network(seed, &sub);
        for ext in ["toml", "json"] {
            let path = dir.join(format!("n{seed}.{ext}"));
            net.save(&path).unwrap();
            let back = Network::load(&path, &sub).unwrap();
            assert_eq!(back, net, "seed {seed} via {ext}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn fused_waves_give_what_partition_by_partition_runs_give() {
    // The partitions of a wave as one program (each source spike taken once for all of them)
    // against one partition at a time: bit for bit, ideal and emulated (noise included),
    // spikes, membranes and scores.
    let tiny = small_substrate();
    let mut fused_somewhere = false;
    for seed in 0..8u64 {
        let net = random_network(seed, &tiny);
        let mut rng = Rng::new(seed ^ 0x5EED);
        let inputs = first_input(&net, &mut rng, 5, 0.25);
        for emulated in [false, true] {
            let mut exec = ideal_or_emulated(&net, &tiny, emulated);
            let fused = exec
                .run_with_noise(&CpuBackend, &inputs, Observe::AllTraces, 7)
                .unwrap();
            exec.set_fuse_waves(false);
            let apart = exec
                .run_with_noise(&CpuBackend, &inputs, Observe::AllTraces, 7)
                .unwrap();
            fused_somewhere |= fused.stats.rounds < apart.stats.rounds;
            for (p, pop) in net.populations.iter().enumerate() {
                assert_eq!(
                    fused.spikes.get(p),
                    apart.spikes.get(p),
                    "seed {seed}, emulated {emulated}: spikes of '{}'",
                    pop.name
                );
                let bits = |v: &Option<Vec<f32>>| {
                    v.as_ref()
                        .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
                };
                assert_eq!(
                    bits(&fused.membrane[p]),
                    bits(&apart.membrane[p]),
                    "seed {seed}, emulated {emulated}: membranes of '{}'",
                    pop.name
                );
                assert_eq!(bits(&fused.peak[p]), bits(&apart.peak[p]), "scores");
            }
            // Only the readouts' traces when only they are asked for.
            exec.set_fuse_waves(true);
            let readouts = exec
                .run_with_noise(&CpuBackend, &inputs, Observe::ReadoutTraces, 7)
                .unwrap();
            for (p, pop) in net.populations.iter().enumerate() {
                assert_eq!(
                    readouts.membrane[p].is_some(),
                    pop.kind == PopulationKind::Readout,
                    "'{}'",
                    pop.name
                );
            }
        }
    }
    assert!(
        fused_somewhere,
        "some wave of two or more partitions ran fused"
    );
}

/// Require that `a` and `b`, two runs of `net`, recorded the same: every population's spikes,
/// and its traces, scores and codes bit for bit; `at` says which runs.
fn assert_same_results(
    net: &Network,
    a: &neuropart::Execution,
    b: &neuropart::Execution,
    at: &str,
) {
    let bits = |v: &Option<Vec<f32>>| {
        v.as_ref()
            .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
    };
    for (k, pop) in net.populations.iter().enumerate() {
        let name = &pop.name;
        assert!(a.spikes.get(k) == b.spikes.get(k), "spikes: {at}, '{name}'");
        assert_eq!(
            bits(&a.membrane[k]),
            bits(&b.membrane[k]),
            "traces: {at}, '{name}'"
        );
        assert_eq!(bits(&a.peak[k]), bits(&b.peak[k]), "scores: {at}, '{name}'");
        assert_eq!(
            a.codes[k].as_ref().map(|c| &c.codes),
            b.codes[k].as_ref().map(|c| &c.codes),
            "codes: {at}, '{name}'"
        );
    }
}

#[test]
fn feed_forward_programs_run_by_columns_give_what_sample_by_sample_runs_give() {
    // The CPU runs a program whose synapses all come from input channels by columns (a chunk
    // of samples, a block of neurons at a time, the synaptic sums formed before the neurons
    // step); against every sample stepped through the whole program: bit for bit, ideal and
    // emulated (noise included), fused waves and not, spikes, traces and scores. Random
    // networks (columns asked for), and wide layers that run by columns unasked (weights of
    // 1 MiB or more) and whose blocks split: a dense layer of 300 neurons from 1 000 inputs
    // (its weights laid out in blocks of 128: 32-bit ideal, 8-bit emulated), one of 40 from
    // 8 000 (a block of 64; 16-bit ideal) and a sparse one of 2 600 over six chips (one
    // fused program; at 2 threads, 64 samples x 50 steps, two blocks whose spikes are merged by
    // step).
    let check = |net: &Network, sub: &Substrate, samples: usize, p: f64, what: &str| {
        let mut rng = Rng::new(11);
        let inputs = first_input(net, &mut rng, samples, p);
        for emulated in [false, true] {
            let mut exec = ideal_or_emulated(net, sub, emulated);
            for fuse in [true, false] {
                exec.set_fuse_waves(fuse);
                for observe in [Observe::AllTraces, Observe::Scores] {
                    exec.set_stepping(neuropart::Stepping::Columns);
                    let cols = exec
                        .run_with_noise(&CpuBackend, &inputs, observe, 7)
                        .unwrap();
                    exec.set_stepping(neuropart::Stepping::Samples);
                    let each = exec
                        .run_with_noise(&CpuBackend, &inputs, observe, 7)
                        .unwrap();
                    let at = format!("{what}, emulated {emulated}, fused {fuse}, {observe:?}");
                    assert_same_results(net, &cols, &each, &at);
                    let mut hidden = 0;
                    for (k, pop) in net.populations.iter().enumerate() {
                        if pop.kind != PopulationKind::Input {
                            hidden += cols.spikes.get(k).map_or(0, |t| t.len());
                        }
                    }
                    assert!(hidden > 0, "{what}: nothing spiked");
                }
            }
        }
    };
    let tiny = small_substrate();
    for seed in 0..8u64 {
        check(
            &random_network(seed, &tiny),
            &tiny,
            5,
            0.25,
            &format!("seed {seed}"),
        );
    }
    let sub = Substrate::bss2();
    let init = WeightInit {
        mean: 0.0,
        std: 0.3,
    };
    let lif = NeuronParams::default();
    let dense = NetworkBuilder::new("dense", 40, 3)
        .input("in", 1000)
        .dense("h", 300, lif.clone(), init)
        .readout("out", 10, lif.clone(), init)
        .build(&sub)
        .unwrap();
    // 40 neurons from 8 000 inputs: one block of 64, 16-bit weights (ideal).
    let narrow = NetworkBuilder::new("narrow", 40, 5)
        .input("in", 8000)
        .dense("h", 40, lif.clone(), init)
        .readout("out", 10, lif.clone(), init)
        .build(&sub)
        .unwrap();
    let sparse = sparse_layer(&sub, 50);
    let two = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    two.install(|| {
        check(&dense, &sub, 64, 0.05, "dense 300");
        check(&narrow, &sub, 64, 0.01, "dense 40 from 8 000");
        check(&sparse, &sub, 64, 0.05, "sparse 2 600");
    });
}

#[test]
fn small_programs_stepped_by_lanes_give_what_sample_by_sample_runs_give() {
    // Programs of up to 16 neurons without refractory periods (a readout, a small layer) step
    // 16 samples at a time, one vector lane a sample; against every sample stepped alone: bit
    // for bit, spikes, traces, codes and scores. Ideal (coefficients equal: both update
    // orders, leaky or not, a bias and a start off rest) and emulated (coefficients per neuron,
    // noise per sample, the CADC's codes); 3 samples (one group, mostly empty lanes) and 37
    // (two full groups and five), on two threads.
    use neuropart::{Observe, Stepping, Update};
    let sub = Substrate::bss2();
    let init = WeightInit {
        mean: 0.1,
        std: 0.5,
    };
    let base = NeuronParams::default();
    let variants = [
        ("input first", base.clone()),
        (
            "membrane first",
            NeuronParams {
                update: Update::Hxtorch,
                ..base.clone()
            },
        ),
        (
            "no leak",
            NeuronParams {
                leak: false,
                v_th: 1.5,
                ..base.clone()
            },
        ),
        (
            "bias, start off rest",
            NeuronParams {
                bias: 0.02,
                v_init: Some(0.4),
                ..base.clone()
            },
        ),
    ];
    let two = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    two.install(|| {
        for (what, lif) in variants {
            let net = NetworkBuilder::new("small", 40, 2)
                .input("in", 200)
                .dense("h", 12, lif.clone(), init)
                .readout("out", 10, lif, init)
                .build(&sub)
                .unwrap();
            for samples in [3, 37] {
                let mut rng = Rng::new(samples as u64);
                let inputs = first_input(&net, &mut rng, samples, 0.05);
                for emulated in [false, true] {
                    let mut exec = ideal_or_emulated(&net, &sub, emulated);
                    let mut spiked = 0;
                    for observe in [Observe::AllTraces, Observe::CompactTraces, Observe::Scores] {
                        exec.set_stepping(Stepping::Samples);
                        let each = exec
                            .run_with_noise(&CpuBackend, &inputs, observe, 5)
                            .unwrap();
                        exec.set_stepping(Stepping::Auto);
                        let lanes = exec
                            .run_with_noise(&CpuBackend, &inputs, observe, 5)
                            .unwrap();
                        let at =
                            format!("{what}, {samples} samples, emulated {emulated}, {observe:?}");
                        assert_same_results(&net, &lanes, &each, &at);
                        spiked += lanes.spikes.get(1).map_or(0, |t| t.len());
                        if emulated && observe == Observe::CompactTraces {
                            assert!(lanes.codes[1].is_some(), "{what}: the layer as codes");
                        }
                    }
                    assert!(spiked > 0, "{what}, {samples} samples: the layer spiked");
                }
            }
        }
        // Two layers of 8 with their own parameters, one reaching the readout 2 steps later:
        // a fused program of 16 neurons (the most that step by lanes) in two segments. Asked
        // by columns too, and as a part of a batch (its noise from the samples' indices in the
        // whole batch); one sample, and 40.
        let two_layers = r#"
            name = "two"
            seed = 3
            steps = 40
            [[populations]]
            name = "in"
            size = 200
            kind = "input"
            [[populations]]
            name = "a"
            size = 8
            kind = "lif"
            params = { tau_mem = 6.0, tau_syn = 5.7, v_th = 0.8 }
            [[populations]]
            name = "b"
            size = 8
            kind = "lif"
            params = { tau_mem = 9.0, tau_syn = 3.0, v_th = 0.6, v_reset = -0.2 }
            [[populations]]
            name = "out"
            size = 10
            kind = "readout"
            [[projections]]
            source = "in"
            target = "a"
            init = { mean = 0.1, std = 0.5 }
            [[projections]]
            source = "in"
            target = "b"
            init = { mean = 0.1, std = 0.5 }
            [[projections]]
            source = "a"
            target = "out"
            init = { mean = 0.1, std = 0.5 }
            [[projections]]
            source = "b"
            target = "out"
            delay = 2
            init = { mean = 0.1, std = 0.5 }
        "#;
        let net = Network::from_str(
            two_layers,
            neuropart::Format::Toml,
            Path::new("two.toml"),
            &sub,
        )
        .unwrap();
        for samples in [1, 40] {
            let mut rng = Rng::new(7);
            let inputs = first_input(&net, &mut rng, samples, 0.05);
            for emulated in [false, true] {
                let mut exec = ideal_or_emulated(&net, &sub, emulated);
                assert_eq!(
                    exec.wave_program(0).map(|p| p.neuron_count()),
                    Some(16),
                    "the two layers' partitions fuse into one program"
                );
                for (stepping, base) in [(Stepping::Auto, 0), (Stepping::Columns, 1000)] {
                    let observe = Observe::AllTraces;
                    exec.set_stepping(Stepping::Samples);
                    let each = exec
                        .run_samples(&CpuBackend, &inputs, observe, 9, base)
                        .unwrap();
                    exec.set_stepping(stepping);
                    let lanes = exec
                        .run_samples(&CpuBackend, &inputs, observe, 9, base)
                        .unwrap();
                    let at =
                        format!("two layers, {samples} samples, emulated {emulated}, {stepping:?}");
                    assert_same_results(&net, &lanes, &each, &at);
                }
            }
        }
    });
}

#[test]
fn a_network_plans_from_its_structure_alone_and_a_refusal_comes_before_the_weights() {
    // Planning needs no weights: the plan of the structure is the plan of the full network.
    let sub = Substrate::bss2();
    let path = Path::new("examples/networks/mnist.toml");
    let bare = Network::load_structure(path, &sub).unwrap();
    assert!(bare.projections.iter().all(|p| p.weights.is_empty()));
    let full = Network::load(path, &sub).unwrap();
    let report = |net: &Network| {
        let plan = Plan::new(net, &sub, &PartitionOptions::default()).unwrap();
        let schedule = Schedule::new(&plan, 1);
        serde_json::to_string(&neuropart::PlanReport::new(net, &plan, &schedule)).unwrap()
    };
    assert_eq!(report(&bare), report(&full));
    // A neuron reading more channels than a run addresses (40 000 > 16 384) is refused by the
    // plan of the structure: 40 000 x 20 weights are never drawn.
    let dir = std::env::temp_dir().join(format!("neuropart-wide-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wide = dir.join("wide.toml");
    std::fs::write(
        &wide,
        "name = \"wide\"\nsteps = 10\n\
         [[populations]]\nname = \"in\"\nsize = 40000\nkind = \"input\"\n\
         [[populations]]\nname = \"h\"\nsize = 20\n\
         [[projections]]\nsource = \"in\"\ntarget = \"h\"\n",
    )
    .unwrap();
    let bare = Network::load_structure(&wide, &sub).unwrap();
    let e = Plan::new(&bare, &sub, &PartitionOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("40000") && e.contains("16384"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn activity_counts_every_spike_times_the_synapses_it_reaches() {
    // A dense projection 6 -> 5 and a sparse one 5 -> 3 with a hand-written synapse list: the
    // synaptic events per sample are each input spike times 5 plus, per listed synapse, the
    // spikes of its source; and the fractions of neuron-steps are the hidden spikes over
    // samples x steps x 5.
    let sub = Substrate::bss2();
    let connections = vec![[0u32, 0], [0, 2], [3, 1], [4, 1], [4, 2]];
    let net = NetworkBuilder::new("act", 20, 2)
        .input("in", 6)
        .dense(
            "h",
            5,
            NeuronParams::default(),
            WeightInit {
                mean: 0.8,
                std: 0.3,
            },
        )
        .population("out", 3, PopulationKind::Readout, NeuronParams::default())
        .project(
            "h",
            "out",
            neuropart::Connectivity::Sparse {
                connections: connections.clone(),
            },
            WeightInit {
                mean: 0.5,
                std: 0.1,
            },
        )
        .build(&sub)
        .unwrap();
    let exec = Executor::new(net.clone(), &sub, 1, &PartitionOptions::default()).unwrap();
    let mut rng = Rng::new(3);
    let samples = 4;
    let inputs = [(0, random_spikes(&mut rng, samples, 6, net.steps, 0.3))];
    let out = exec.run(&CpuBackend, &inputs, Observe::Scores).unwrap();
    let hidden = out.spikes.get(1).unwrap();
    let mut per_neuron = [0u64; 5];
    for e in &hidden.events {
        per_neuron[e.neuron as usize] += 1;
    }
    assert!(!hidden.is_empty(), "the hidden layer spikes");
    let expected = inputs[0].1.len() as u64 * 5
        + connections
            .iter()
            .map(|c| per_neuron[c[0] as usize])
            .sum::<u64>();
    let act = neuropart::bench::activity(&exec, &CpuBackend, &inputs).unwrap();
    assert_eq!(
        act.synaptic_events_per_sample,
        expected as f64 / samples as f64
    );
    assert_eq!(act.populations.len(), 1);
    assert_eq!(act.populations[0].0, "h");
    let cells = (samples * net.steps as usize * 5) as f64;
    assert_eq!(act.populations[0].1, hidden.len() as f64 / cells);
}

/// A batch of no samples gives arrays of no samples with every population's neurons (the
/// neuron count is the population's, not inferred from values there are none of).
#[test]
fn an_empty_batch_gives_empty_arrays_of_the_right_shape() {
    let sub = Substrate::bss2();
    let net = Network::load(
        std::path::Path::new("examples/networks/recurrent.toml"),
        &sub,
    )
    .unwrap();
    let steps = net.steps as usize;
    let exec = Executor::new(net, &sub, 1, &PartitionOptions::default()).unwrap();
    let none = SpikeTrains::from_samples(200, steps as u32, Vec::new());
    let mut out = exec
        .run(&CpuBackend, &[(0, none)], Observe::ReadoutTraces)
        .unwrap();
    // Populations: input 200, exc 160, inh 40, readout 10.
    assert_eq!(out.spikes_dense(1).unwrap().shape(), &[0, steps, 160]);
    assert_eq!(out.membranes(3).unwrap().shape(), &[0, steps, 10]);
    assert_eq!(out.scores(3).unwrap().shape(), &[0, 10]);
    assert_eq!(out.take_membranes(3).unwrap().shape(), &[0, steps, 10]);
}

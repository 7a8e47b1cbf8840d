//! Multi-chip systems: placement of recurrent subnetworks across chips and of feed-forward
//! partitions on concurrent chips, and lock-step execution with live exchange, checked
//! against a naive step-by-step simulation written independently (tests/common) in which every
//! synapse between chips carries the delivery delay, and whose receive buffers drop by the
//! same published rule.

mod common;

use common::{
    assert_same_weights, fast, looped, random_spikes, raster_to_trains, reference_on_system,
    system, tiny_chip, ChipsOf,
};
use neuropart::prelude::*;
use neuropart::{Origin, Placement, Rng, WeightInit};

/// Each neuron's chip, from the plan.
fn chips_of(net: &Network, plan: &Plan) -> Vec<Vec<usize>> {
    let mut chip: Vec<Vec<usize>> = net
        .populations
        .iter()
        .map(|p| vec![usize::MAX; p.size])
        .collect();
    for p in &plan.partitions {
        for r in &p.parts {
            chip[r.neurons.population][r.neurons.range()].fill(p.chip.unwrap());
        }
    }
    chip
}

/// Run `net` on `sub` (ideal) on `backend` and compare every population's spikes and
/// membranes with the naive reference; returns (spikes, drops per chip).
fn check_against_reference(
    net: &Network,
    sub: &Substrate,
    backend: &dyn Backend,
    seed: u64,
) -> (usize, Vec<u64>) {
    let opts = PartitionOptions {
        placement: Placement::Concurrent,
        ..Default::default()
    };
    let exec = Executor::new(net.clone(), sub, 1, &opts).unwrap();
    let sys = sub.system.as_ref().unwrap();
    let plan = &exec.plan;
    assert_eq!(
        plan.system.as_ref().unwrap().runs.len(),
        1,
        "one system run"
    );
    let mut rng = Rng::new(seed);
    let samples = 5;
    let input = random_spikes(&mut rng, samples, 20, net.steps, 0.2);
    let placed = ChipsOf {
        chip: chips_of(net, plan),
        window: sys.delay_steps(sub.dt_us) as usize,
        buffer: sys.receive_buffer,
    };
    let (reference, dropped) =
        reference_on_system(net, sub.dt_us, &[(0, input.clone())], Some(&placed));
    let out = exec
        .run(backend, &[(0, input)], Observe::AllTraces)
        .unwrap();
    let mut total = 0;
    for (p, pop) in net.populations.iter().enumerate().skip(1) {
        let expect = raster_to_trains(&reference.spikes[p], samples, net.steps, pop.size);
        let got = out.spikes.get(p).unwrap();
        assert_eq!(
            got, &expect,
            "spikes of '{}' differ from the reference",
            pop.name
        );
        assert_eq!(
            out.membrane[p].as_ref().unwrap(),
            &reference.membrane[p],
            "membranes of '{}'",
            pop.name
        );
        total += got.len();
    }
    let links = out
        .stats
        .links
        .as_ref()
        .expect("the chips exchanged spikes");
    assert_eq!(links.dropped_buffer, dropped, "drops per chip");
    (total, dropped)
}

#[test]
fn a_loop_spanning_three_chips_equals_the_naive_reference_with_link_delays() {
    for delay in [1.0, 2.0, 3.0] {
        let sub = tiny_chip(system(4, delay, 0));
        let net = looped(&sub);
        let plan = Plan::new(&net, &sub, &PartitionOptions::default()).unwrap();
        // The loop (70 circuits) on three chips, the readout on the fourth, one run.
        assert_eq!(plan.partitions.len(), 4);
        let chips: Vec<usize> = plan.partitions.iter().map(|p| p.chip.unwrap()).collect();
        assert_eq!(chips, [0, 1, 2, 3]);
        assert!(plan.partitions.iter().all(|p| p.circuits_used <= 32));
        assert!(plan.partitions[0]
            .sources
            .iter()
            .any(|s| matches!(s.origin, Origin::Link(1 | 2))));
        let (spikes, dropped) = check_against_reference(&net, &sub, &CpuBackend, 3);
        assert!(spikes > 300, "the network must be active ({spikes} spikes)");
        assert!(dropped.iter().all(|&d| d == 0));
    }
}

#[test]
fn a_full_receive_buffer_drops_as_the_reference_does() {
    let sub = tiny_chip(system(4, 2.0, 6));
    let net = looped(&sub);
    let (_, dropped) = check_against_reference(&net, &sub, &CpuBackend, 4);
    assert!(
        dropped.iter().sum::<u64>() > 50,
        "the buffer must be the limit: {dropped:?}"
    );
}

#[test]
fn link_delays_change_the_dynamics_and_an_unused_link_does_not() {
    // The same loop on one large chip (no links) differs from the system run; a system whose
    // network fits one chip behaves as that chip.
    let sub = tiny_chip(system(4, 2.0, 0));
    let net = looped(&sub);
    let big = Substrate::bss2();
    let mut rng = Rng::new(9);
    let input = random_spikes(&mut rng, 3, 20, net.steps, 0.2);
    let one = Executor::new(net.clone(), &big, 1, &PartitionOptions::default())
        .unwrap()
        .run(&CpuBackend, &[(0, input.clone())], Observe::Scores)
        .unwrap();
    let sys = Executor::new(net.clone(), &sub, 1, &PartitionOptions::default())
        .unwrap()
        .run(&CpuBackend, &[(0, input.clone())], Observe::Scores)
        .unwrap();
    assert_ne!(one.spikes.get(1), sys.spikes.get(1));
    let big_sys = Substrate {
        system: Some(system(4, 2.0, 0)),
        ..Substrate::bss2()
    };
    let whole = Executor::new(
        net.clone(),
        &big_sys,
        1,
        &PartitionOptions {
            merge_layers: true,
            ..Default::default()
        },
    )
    .unwrap();
    let same = whole
        .run(&CpuBackend, &[(0, input)], Observe::Scores)
        .unwrap();
    assert!(same.stats.links.is_none(), "nothing crosses a chip");
}

#[test]
fn a_system_one_chip_too_small_names_the_loop_and_the_numbers() {
    let text = std::fs::read_to_string("examples/networks/recurrent-600.toml").unwrap();
    let path = std::path::Path::new("recurrent-600.toml");
    let fits = Substrate {
        system: Some(system(10, 2.0, 0)),
        ..Substrate::bss2()
    };
    let net = Network::from_str(&text, neuropart::Format::Toml, path, &fits).unwrap();
    // 600 neurons x 8 circuits = 4800: ten chips of 512, one partition each, one run; the
    // readout follows in a second run (auto placement: 11 partitions on 10 chips).
    let plan = Plan::new(&net, &fits, &PartitionOptions::default()).unwrap();
    let sp = plan.system.as_ref().unwrap();
    assert_eq!(sp.runs.len(), 2);
    assert_eq!(sp.runs[0].len(), 10);
    assert_eq!(sp.runs[1].len(), 1);
    assert!(plan.partitions.iter().all(|p| p.circuits_used <= 512));
    assert_eq!(
        plan.partitions
            .iter()
            .map(|p| p.neuron_count())
            .sum::<usize>(),
        610
    );
    // Every rec neuron reads the 540 on the other nine chips: 60 x 540 per chip.
    assert_eq!(sp.cross_chip_synapses, 10 * 60 * 540);
    let small = Substrate {
        system: Some(system(9, 2.0, 0)),
        ..Substrate::bss2()
    };
    let e = Plan::new(&net, &small, &PartitionOptions::default())
        .unwrap_err()
        .to_string();
    for needle in ["[rec]", "4800", "9 chips", "4608", "short by 192"] {
        assert!(e.contains(needle), "'{needle}' missing from: {e}");
    }
}

#[test]
fn the_mnist_network_runs_as_one_system_run_on_five_chips() {
    let sub = Substrate {
        system: Some(system(5, 2.0, 0)),
        ..Substrate::bss2()
    };
    let net = neuropart::mnist_network(1).build(&sub).unwrap();
    for (placement, runs) in [
        (Placement::Auto, 1),
        (Placement::Concurrent, 1),
        (Placement::Sequential, 2),
    ] {
        let opts = PartitionOptions {
            placement,
            ..Default::default()
        };
        let plan = Plan::new(&net, &sub, &opts).unwrap();
        let sp = plan.system.as_ref().unwrap();
        assert_eq!(sp.runs.len(), runs, "{placement:?}");
        let readout = plan.partitions.last().unwrap();
        let linked = readout
            .sources
            .iter()
            .filter(|s| matches!(s.origin, Origin::Link(_)))
            .count();
        assert_eq!(linked, if runs == 1 { 4 } else { 0 }, "{placement:?}");
        let schedule = Schedule::new(&plan, 1);
        assert_eq!(schedule.cost.host_round_trips, runs);
        // The readout's 256 x 10 synapses cross chips when it runs with the hidden layer.
        assert_eq!(sp.cross_chip_synapses, if runs == 1 { 2560 } else { 0 });
    }
    // Four chips: the hidden layer fills them, the readout follows through the host.
    let four = Substrate {
        system: Some(system(4, 2.0, 0)),
        ..Substrate::bss2()
    };
    let plan = Plan::new(
        &net,
        &four,
        &PartitionOptions {
            placement: Placement::Concurrent,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        plan.system.as_ref().unwrap().runs,
        vec![vec![0, 1, 2, 3], vec![4]]
    );
}

#[test]
fn emulated_system_runs_are_deterministic_and_each_chip_has_its_own_variation() {
    let sub = tiny_chip(system(4, 2.0, 5));
    let net = looped(&sub);
    let mk = || {
        Executor::emulated(
            net.clone(),
            &sub,
            1,
            &PartitionOptions::default(),
            AnalogConfig::default(),
            Mode::Emulated,
        )
        .unwrap()
    };
    let (a, b) = (mk(), mk());
    let em = a.emulation.as_ref().unwrap();
    assert_eq!(em.chips.len(), 4);
    let p = NeuronParams::default();
    assert_ne!(em.chips[0].realise(&p, &[0]), em.chips[1].realise(&p, &[0]));
    assert_eq!(em.chips[0].realise(&p, &[0]), em.chip.realise(&p, &[0]));
    let mut rng = Rng::new(2);
    let input = random_spikes(&mut rng, 6, 20, net.steps, 0.2);
    let x = a
        .run_with_noise(&CpuBackend, &[(0, input.clone())], Observe::Scores, 3)
        .unwrap();
    let y = b
        .run_with_noise(&CpuBackend, &[(0, input)], Observe::Scores, 3)
        .unwrap();
    for p in 1..net.populations.len() {
        assert_eq!(x.spikes.get(p), y.spikes.get(p));
    }
    assert_eq!(x.peak, y.peak);
    assert_eq!(x.stats.links, y.stats.links);
}

#[test]
fn substrate_files_with_a_system_parse_and_refuse_bad_fields() {
    for f in [
        "examples/systems/bss2-4chip.toml",
        "examples/systems/bss2-2x12-backplanes.toml",
    ] {
        let s = Substrate::load(std::path::Path::new(f)).unwrap();
        assert!(s.system.is_some(), "{f}");
    }
    let p = std::path::Path::new("s.toml");
    let e = Substrate::from_str("[system]\nchips = 0\n", neuropart::Format::Toml, p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("system.chips") && e.contains("s.toml"), "{e}");
    let e = Substrate::from_str(
        "[system]\ntopology = \"ring\"\n",
        neuropart::Format::Toml,
        p,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("ring"), "{e}");
    let e = Substrate::from_str("[system]\nbogus = 1\n", neuropart::Format::Toml, p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bogus"), "{e}");
}

/// A feed-forward network on tiny chips: 30 inputs, `hidden` LIF neurons (20 or 30 per chip),
/// 4 readouts; the hidden-to-readout projection with `delay`.
fn feed_forward(sub: &Substrate, hidden: usize, delay: u32) -> Network {
    let p = fast(0.5);
    let w = |mean: f32, std: f32| WeightInit { mean, std };
    let mut net = NetworkBuilder::new("ff", 30, 5)
        .input("in", 30)
        .dense("h", hidden, p.clone(), w(0.2, 0.4))
        .readout("out", 4, p, w(0.0, 0.3))
        .build(sub)
        .unwrap();
    net.projections[1].delay = delay;
    net
}

#[test]
fn training_across_chips_equals_training_with_the_link_delay_on_one_chip() {
    // Hidden on chips 0 and 1, readout on chip 2, one system run: every hidden spike reaches
    // the readout 2 steps later. The same network on one chip with a delay of 2 on that
    // projection must train to the same weights, bit for bit (forward and backward).
    let sys = tiny_chip(system(3, 2.0, 0));
    let plain = tiny_chip(system(1, 2.0, 0));
    let plain = Substrate {
        system: None,
        ..plain
    };
    let cfg = neuropart::TrainConfig {
        batch: 8,
        lr: 0.01,
        ..Default::default()
    };
    let mut a = neuropart::Trainer::new(
        Executor::new(
            feed_forward(&sys, 40, 0),
            &sys,
            1,
            &PartitionOptions::default(),
        )
        .unwrap(),
        cfg.clone(),
    )
    .unwrap();
    assert_eq!(
        a.exec.plan.system.as_ref().unwrap().runs,
        vec![vec![0, 1, 2]]
    );
    let mut b = neuropart::Trainer::new(
        Executor::new(
            feed_forward(&plain, 40, 2),
            &plain,
            1,
            &PartitionOptions::default(),
        )
        .unwrap(),
        cfg,
    )
    .unwrap();
    let mut rng = Rng::new(8);
    for k in 0..3 {
        let spikes = random_spikes(&mut rng, 8, 30, 30, 0.15);
        let labels: Vec<u8> = (0..8).map(|i| ((i + k) % 4) as u8).collect();
        let (sa, _) = a
            .train_batch(&CpuBackend, spikes.clone(), &labels, k, Default::default())
            .unwrap();
        let (sb, _) = b
            .train_batch(&CpuBackend, spikes, &labels, k, Default::default())
            .unwrap();
        assert_eq!(sa.loss, sb.loss, "batch {k}");
        assert!(sa.hidden_spikes > 0.0, "the hidden layer must spike");
    }
    assert_same_weights(&a.exec.network, &b.exec.network, "system");
    // Training does not count the links' traffic (nothing reads it), a run after it does:
    // every hidden spike crosses to the readout's chip, once per spike.
    let spikes = random_spikes(&mut rng, 8, 30, 30, 0.15);
    let out = a
        .exec
        .run(&CpuBackend, &[(0, spikes)], Observe::Scores)
        .unwrap();
    let links = out
        .stats
        .links
        .clone()
        .expect("the links' traffic counted after training");
    let hidden = out.spikes.get(1).expect("the hidden layer's spikes");
    assert!(!hidden.is_empty());
    assert_eq!(links.sent, hidden.len() as u64, "one send per hidden spike");
    // Hidden split over three chips, two chips per run: the projection to the readout is
    // partly replayed through the host (no link), partly over a link (2 steps later): its
    // synapses have two delays, each known (the gradients that follow from them are checked
    // in tests/recurrent.rs), and it trains.
    let two = tiny_chip(system(2, 2.0, 0));
    let net = feed_forward(&two, 90, 0);
    let exec = Executor::new(
        net,
        &two,
        1,
        &PartitionOptions {
            placement: Placement::Concurrent,
            ..Default::default()
        },
    )
    .unwrap();
    let (net, plan) = (&exec.network, &exec.plan);
    let runs = &plan.system.as_ref().unwrap().runs;
    let run_of = |part: usize| runs.iter().position(|r| r.contains(&part)).unwrap();
    // (run, chip) of every hidden neuron and of the readout.
    let mut place: Vec<Vec<(usize, usize)>> = net
        .populations
        .iter()
        .map(|p| vec![(usize::MAX, usize::MAX); p.size])
        .collect();
    for (k, part) in plan.partitions.iter().enumerate() {
        for r in &part.parts {
            let n = &r.neurons;
            place[n.population][n.range()].fill((run_of(k), part.chip.unwrap()));
        }
    }
    let (h, out) = (1, 2);
    let crossing: usize = (0..net.populations[h].size)
        .filter(|&i| place[h][i].0 == place[out][0].0 && place[h][i].1 != place[out][0].1)
        .count()
        * net.populations[out].size;
    assert!(crossing > 0 && crossing < 90 * 4, "{crossing} of 360 cross");
    let said = plan.link_delays(net).unwrap();
    let neuropart::LinkSteps::Each(steps) = &said[1] else {
        panic!("h->out: {:?}", said[1]);
    };
    assert_eq!(steps.iter().filter(|&&d| d == 2).count(), crossing);
    assert_eq!(steps.iter().filter(|&&d| d == 0).count(), 360 - crossing);
    let mut t = neuropart::Trainer::new(exec, Default::default()).unwrap();
    let spikes = random_spikes(&mut rng, 8, 30, 30, 0.15);
    let labels: Vec<u8> = (0..8).map(|i| (i % 4) as u8).collect();
    let (st, _) = t
        .train_batch(&CpuBackend, spikes, &labels, 0, Default::default())
        .unwrap();
    assert!(st.loss.is_finite() && st.hidden_spikes > 0.0);
}

#[test]
fn a_fused_system_run_equals_the_lock_step_windows() {
    // Unlimited links run the chips as one program; a receive buffer too large to fill
    // forces the lock-step windows. Same spikes, membranes and link counts.
    let fused_sub = tiny_chip(system(4, 2.0, 0));
    let lock_sub = tiny_chip(system(4, 2.0, 1_000_000));
    let net = looped(&fused_sub);
    let mut rng = Rng::new(12);
    let input = random_spikes(&mut rng, 7, 20, net.steps, 0.2);
    let run = |sub: &Substrate, observe| {
        Executor::new(net.clone(), sub, 1, &PartitionOptions::default())
            .unwrap()
            .run(&CpuBackend, &[(0, input.clone())], observe)
            .unwrap()
    };
    for observe in [Observe::Scores, Observe::ReadoutTraces, Observe::AllTraces] {
        let (a, b) = (run(&fused_sub, observe), run(&lock_sub, observe));
        for p in 1..net.populations.len() {
            assert_eq!(a.spikes.get(p), b.spikes.get(p), "{observe:?}");
        }
        assert_eq!(a.membrane, b.membrane, "{observe:?}");
        assert_eq!(a.peak, b.peak, "{observe:?}");
        let (la, lb) = (
            a.stats.links.clone().unwrap(),
            b.stats.links.clone().unwrap(),
        );
        assert_eq!(la, lb, "{observe:?}");
        assert!(la.sent > 100 && la.peak.iter().any(|&p| p > 1));
    }
}

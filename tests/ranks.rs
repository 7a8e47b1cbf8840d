//! Model parallelism: the chips of a system run (and the partitions of every round) spread over
//! processes, here played by threads ([`neuropart::comm::ThreadGroup`], the same exchanges as
//! MPI's), must give exactly what one process gives — every population's spikes and membranes,
//! the scores, the links' traffic and drops, and the weights after a training step — for 1, 2
//! and 4 processes, while each process holds only its own partitions' synapses.

mod common;

use common::{fast, in_processes, looped, random_spikes, system, tiny_chip};
use neuropart::comm::{Communicator, Grid};
use neuropart::prelude::*;
use neuropart::{Execution, Rng, Substrate, TrainConfig, Trainer, WeightInit};

/// What one process of `ranks` got running `exec` (spread over them) on `input`.
struct Got {
    out: Execution,
    synapses: usize,
    traffic: Option<neuropart::RankTraffic>,
}

/// `make()` spread over `ranks` threads, each running `input`; per process what it got.
fn spread(
    make: &(dyn Fn() -> Executor + Sync),
    ranks: usize,
    input: &SpikeTrains,
    seed: u32,
) -> Vec<Got> {
    in_processes(ranks, |comm| {
        let mut exec = make();
        exec.distribute(comm.size(), comm.rank()).unwrap();
        let out = exec
            .run_samples_in(
                &CpuBackend,
                &[(0, input.clone())],
                Observe::AllTraces,
                seed,
                0,
                comm,
            )
            .unwrap();
        let synapses = exec.programs.iter().map(|p| p.synapses.len()).sum();
        let traffic = out.stats.ranks.clone();
        Got {
            out,
            synapses,
            traffic,
        }
    })
}

/// Every projection's weights.
fn weights(t: &Trainer) -> Vec<Vec<f32>> {
    t.exec
        .network
        .projections
        .iter()
        .map(|p| p.weights.clone())
        .collect()
}

/// Every process's result equals `one`'s: spikes, membranes, scores and link traffic.
fn assert_same(net: &Network, one: &Execution, got: &[Got], what: &str) {
    for (r, g) in got.iter().enumerate() {
        for (p, pop) in net.populations.iter().enumerate() {
            assert_eq!(
                g.out.spikes.get(p),
                one.spikes.get(p),
                "{what}: spikes of '{}' on process {r} of {}",
                pop.name,
                got.len()
            );
            assert_eq!(
                g.out.membrane[p],
                one.membrane[p],
                "{what}: membranes of '{}' on process {r} of {}",
                pop.name,
                got.len()
            );
            assert_eq!(
                g.out.peak[p], one.peak[p],
                "{what}: scores of '{}'",
                pop.name
            );
        }
        assert_eq!(
            g.out.stats.links,
            one.stats.links,
            "{what}: link traffic on process {r} of {}",
            got.len()
        );
    }
}

#[test]
fn a_system_run_spread_over_1_2_and_4_processes_equals_one_process() {
    // The loop spans three chips of four; unlimited links, then a receive buffer that drops.
    for buffer in [0, 6] {
        let sub = tiny_chip(system(4, 2.0, buffer));
        let net = looped(&sub);
        let make = || Executor::new(net.clone(), &sub, 1, &PartitionOptions::default()).unwrap();
        let mut rng = Rng::new(21);
        let input = random_spikes(&mut rng, 5, 20, net.steps, 0.2);
        let single = make();
        let all_synapses: usize = single.programs.iter().map(|p| p.synapses.len()).sum();
        let one = single
            .run_with_noise(&CpuBackend, &[(0, input.clone())], Observe::AllTraces, 3)
            .unwrap();
        let links = one.stats.links.as_ref().expect("a system run");
        let dropped = links.attempted() - links.delivered.iter().sum::<u64>();
        assert_eq!(dropped > 0, buffer > 0, "drops: {dropped}");
        for ranks in [1, 2, 4] {
            let got = spread(&make, ranks, &input, 3);
            assert_same(&net, &one, &got, &format!("buffer {buffer}"));
            let held: usize = got.iter().map(|g| g.synapses).sum();
            assert_eq!(held, all_synapses, "each synapse held by one process");
            if ranks > 1 {
                assert!(got.iter().all(|g| g.synapses < all_synapses));
                // What one process sent, the others received.
                let t: Vec<_> = got.iter().map(|g| g.traffic.clone().unwrap()).collect();
                let sent: u64 = t.iter().map(|t| t.events_sent).sum();
                let received: u64 = t.iter().map(|t| t.events_received).sum();
                assert!(sent > 0, "spikes cross between processes");
                assert_eq!(received, sent * (ranks as u64 - 1));
                let windows = (net.steps as u64).div_ceil(2);
                assert!(
                    t.iter().all(|t| t.windows == windows),
                    "one exchange a window"
                );
            } else {
                assert!(got[0].traffic.is_none());
            }
        }
    }
}

#[test]
fn an_emulated_system_spread_over_processes_keeps_every_chips_variation_and_noise() {
    let sub = tiny_chip(system(4, 2.0, 0));
    let net = looped(&sub);
    let make = || {
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
    let mut rng = Rng::new(5);
    let input = random_spikes(&mut rng, 4, 20, net.steps, 0.2);
    let one = make()
        .run_with_noise(&CpuBackend, &[(0, input.clone())], Observe::AllTraces, 9)
        .unwrap();
    let got = spread(&make, 2, &input, 9);
    assert_same(&net, &one, &got, "emulated");
}

#[test]
fn rounds_without_links_are_dealt_out_and_gathered() {
    // No system: four partitions side by side per round on four chips, no spikes between
    // them while they run; each process runs its own and the outputs are gathered.
    let mut sub = tiny_chip(system(1, 2.0, 0));
    sub.system = None;
    let p = fast(0.6);
    let w = |mean: f32, std: f32| WeightInit { mean, std };
    let net = NetworkBuilder::new("wide", 30, 4)
        .input("in", 20)
        .dense("h", 100, p.clone(), w(0.3, 0.5))
        .readout("out", 10, p, w(0.0, 0.4))
        .build(&sub)
        .unwrap();
    let make = || Executor::new(net.clone(), &sub, 4, &PartitionOptions::default()).unwrap();
    let single = make();
    assert!(
        single.schedule.rounds.iter().any(|r| r.len() > 1),
        "partitions run side by side"
    );
    let mut rng = Rng::new(8);
    let input = random_spikes(&mut rng, 3, 20, net.steps, 0.2);
    let one = single
        .run_with_noise(&CpuBackend, &[(0, input.clone())], Observe::AllTraces, 0)
        .unwrap();
    assert!(
        one.spikes.get(1).unwrap().len() > 20,
        "the hidden layer is active"
    );
    for ranks in [2, 3] {
        let got = spread(&make, ranks, &input, 0);
        assert_same(&net, &one, &got, "no links");
    }
    // One chip: every round a single partition. The deal still shares them out (by what each
    // process holds), so both processes hold synapses and the results are one process's.
    let make1 = || Executor::new(net.clone(), &sub, 1, &PartitionOptions::default()).unwrap();
    assert!(make1().schedule.rounds.iter().all(|r| r.len() == 1));
    let got = spread(&make1, 2, &input, 0);
    assert_same(&net, &one, &got, "one partition a round");
    assert!(
        got.iter().all(|g| g.synapses > 0),
        "both processes hold synapses"
    );
}

#[test]
fn more_processes_than_chips_leave_some_idle_and_change_nothing() {
    // Four partitions, six processes: two own nothing and still take part in every exchange.
    let sub = tiny_chip(system(4, 2.0, 6));
    let net = looped(&sub);
    let make = || Executor::new(net.clone(), &sub, 1, &PartitionOptions::default()).unwrap();
    let mut rng = Rng::new(33);
    let input = random_spikes(&mut rng, 3, 20, net.steps, 0.2);
    let one = make()
        .run_with_noise(&CpuBackend, &[(0, input.clone())], Observe::AllTraces, 1)
        .unwrap();
    let got = spread(&make, 6, &input, 1);
    assert_same(&net, &one, &got, "6 processes, 4 chips");
    assert_eq!(got.iter().filter(|g| g.synapses == 0).count(), 2);
}

#[test]
fn partitions_are_dealt_out_by_work_the_same_way_on_every_process() {
    let sub = tiny_chip(system(4, 2.0, 0));
    let net = looped(&sub);
    let exec = Executor::new(net, &sub, 1, &PartitionOptions::default()).unwrap();
    let a = neuropart::RankShare::new(&exec.plan, &exec.schedule, 2, 0);
    let b = neuropart::RankShare::new(&exec.plan, &exec.schedule, 2, 1);
    assert_eq!(a.owner, b.owner, "the same deal on every process");
    // Largest first to the least loaded: the work of the two processes differs by at most
    // the largest partition's.
    let work = |p: usize| {
        let q = &exec.plan.partitions[p];
        q.synapse_count as u64 + q.neuron_count() as u64
    };
    let mut load = [0u64; 2];
    for (p, &r) in a.owner.iter().enumerate() {
        load[r] += work(p);
    }
    let largest = (0..exec.plan.partitions.len()).map(work).max().unwrap();
    assert!(load[0].abs_diff(load[1]) <= largest, "{load:?}");
    assert!(load.iter().all(|&l| l > 0), "both processes work: {load:?}");
    let mem = exec.memory_per_rank(2);
    let total: u64 = exec.memory_per_rank(1).iter().sum();
    assert_eq!(mem.iter().sum::<u64>(), total);
    assert!(mem.iter().all(|&m| m < total));
}

/// 30 inputs -> `hidden` LIF (recurrent where `recurrent`) -> 4 readouts, on `sub`.
fn trainable(sub: &Substrate, hidden: usize, recurrent: bool) -> Network {
    let p = fast(0.5);
    let w = |mean: f32, std: f32| WeightInit { mean, std };
    let mut b = NetworkBuilder::new("trainable", 30, 5)
        .input("in", 30)
        .dense("h", hidden, p.clone(), w(0.2, 0.4));
    if recurrent {
        b = b.recurrent(w(0.0, 0.2));
    }
    b.readout("out", 4, p, w(0.0, 0.3)).build(sub).unwrap()
}

#[test]
fn a_training_step_spread_over_processes_gives_the_weights_of_one_process() {
    // Hidden over two chips and the readout on a third (every hidden spike crosses a link),
    // then a recurrent hidden layer on one chip read out on another, then one split over two
    // chips (its recurrent projection has two delays); receive buffers drop.
    for (hidden, recurrent) in [(40, false), (12, true), (40, true)] {
        let sub = tiny_chip(system(3, 2.0, 8));
        let net = trainable(&sub, hidden, recurrent);
        let cfg = TrainConfig {
            batch: 6,
            seed: 4,
            ..Default::default()
        };
        let mut rng = Rng::new(12);
        let input = random_spikes(&mut rng, 6, 30, net.steps, 0.15);
        let labels: Vec<u8> = (0..6).map(|k| (k % 4) as u8).collect();
        let make = || Executor::new(net.clone(), &sub, 1, &PartitionOptions::default()).unwrap();
        assert!(
            make().exchanges().iter().any(Option::is_some),
            "chips exchange spikes"
        );
        let split = make()
            .plan
            .link_delays(&net)
            .unwrap()
            .iter()
            .any(|l| l.uniform().is_none());
        assert_eq!(
            split,
            recurrent && hidden == 40,
            "hidden {hidden}: two delays"
        );
        let mut one = Trainer::new(make(), cfg.clone()).unwrap();
        let (st, _) = one
            .train_batch(&CpuBackend, input.clone(), &labels, 0, Default::default())
            .unwrap();
        let (loss1, dropped1) = (st.loss, st.link_dropped);
        let expect = weights(&one);
        let before = weights(&Trainer::new(make(), cfg.clone()).unwrap());
        assert_ne!(expect, before, "the step changed the weights");
        for ranks in [2, 3] {
            let got = in_processes(ranks, |comm| {
                let mut exec = make();
                exec.distribute(comm.size(), comm.rank()).unwrap();
                let mut t = Trainer::new(exec, cfg.clone()).unwrap();
                let (input, labels) = (input.clone(), &labels);
                let (st, _) = t
                    .train_batch_in(&CpuBackend, comm, input, labels, 0, Default::default())
                    .unwrap();
                (st.loss, st.link_dropped, weights(&t))
            });
            for (r, (loss, dropped, w)) in got.iter().enumerate() {
                assert_eq!(
                    w, &expect,
                    "hidden {hidden}: weights of process {r} of {ranks}"
                );
                assert_eq!(
                    (*loss, *dropped),
                    (loss1, dropped1),
                    "the batch's loss and drops"
                );
            }
        }
    }
}

#[test]
fn groups_sharing_the_chips_and_groups_sharing_the_samples_give_one_process_results() {
    // Four processes: two groups of two share the chips, the groups share the samples
    // (--distribute chips,samples --chip-ranks 2): a run's result and a training step's
    // weights are one process's.
    let sub = tiny_chip(system(3, 2.0, 8));
    let net = trainable(&sub, 40, false);
    let make = || Executor::new(net.clone(), &sub, 1, &PartitionOptions::default()).unwrap();
    let cfg = TrainConfig {
        batch: 8,
        seed: 2,
        ..Default::default()
    };
    let mut rng = Rng::new(30);
    let input = random_spikes(&mut rng, 8, 30, net.steps, 0.15);
    let labels: Vec<u8> = (0..8).map(|k| (k % 4) as u8).collect();
    let mut one = Trainer::new(make(), cfg.clone()).unwrap();
    let expect_file = neuropart::experiment::run_in(
        &one.exec,
        &CpuBackend,
        &neuropart::comm::Single,
        &[(0, input.clone())],
        Observe::Scores,
        3,
        false,
    )
    .unwrap()
    .unwrap()
    .0;
    one.train_batch(&CpuBackend, input.clone(), &labels, 0, Default::default())
        .unwrap();
    let expect = weights(&one);
    let got = in_processes(4, |world| {
        let grid = Grid::new(world, 2).unwrap();
        let chips = grid.chips().unwrap();
        assert_eq!((chips.size(), grid.size()), (2, 2));
        let mut exec = make();
        exec.distribute(chips.size(), chips.rank()).unwrap();
        let file = neuropart::experiment::run_in(
            &exec,
            &CpuBackend,
            &grid,
            &[(0, input.clone())],
            Observe::Scores,
            3,
            false,
        )
        .unwrap();
        assert_eq!(
            file.is_some(),
            world.rank() == 0,
            "the first process writes"
        );
        let mut t = Trainer::new(exec, cfg.clone()).unwrap();
        t.train_batch_in(
            &CpuBackend,
            &grid,
            input.clone(),
            &labels,
            0,
            Default::default(),
        )
        .unwrap();
        (file.map(|f| f.0), weights(&t))
    });
    let bytes = got[0].0.as_ref().map(|f| f.to_bytes());
    assert_eq!(bytes, Some(expect_file.to_bytes()), "the run's output");
    for (r, (_, w)) in got.iter().enumerate() {
        assert_eq!(w, &expect, "weights of process {r} of 4 (2 groups of 2)");
    }
}

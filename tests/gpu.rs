//! GPU backend against the CPU reference: the same test bodies on both backends, on the
//! software adapter in CI (lavapipe via WGPU_BACKEND=vulkan). Outside CI a missing adapter
//! prints why and the GPU tests return early; with `CI` set they fail.

mod common;

use common::*;
use neuropart::gpu::{GpuBackend, GpuContext};
use neuropart::prelude::*;
use neuropart::Rng;
use neuropart::{Execution, PartitionOptions};
use std::sync::{Arc, OnceLock};

/// One device per test binary.
fn context() -> Option<Arc<GpuContext>> {
    static CTX: OnceLock<Option<Arc<GpuContext>>> = OnceLock::new();
    CTX.get_or_init(|| match GpuContext::new() {
        Ok(c) => {
            eprintln!("GPU tests on {}", c.describe());
            Some(Arc::new(c))
        }
        Err(e) => {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set but no GPU adapter is usable: {e}");
            }
            eprintln!("skipping GPU tests: {e}");
            None
        }
    })
    .clone()
}

fn gpu() -> Option<GpuBackend> {
    context().map(GpuBackend::with_context)
}

#[test]
fn every_shader_parses_and_validates() {
    // Each compiled program parses and validates, and is exactly its files concatenated.
    for (files, src) in neuropart::gpu::SHADERS {
        let module = naga::front::wgsl::parse_str(src)
            .unwrap_or_else(|e| panic!("{files:?}: {}", e.emit_to_string(src)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{files:?}: {e:?}"));
        let joined: String = files
            .iter()
            .map(|f| std::fs::read_to_string(format!("shaders/{f}")).unwrap())
            .collect();
        assert_eq!(&joined, src, "{files:?} not embedded as they are");
    }
    // Every file under shaders/ is used by some program.
    for entry in std::fs::read_dir("shaders").unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            neuropart::gpu::SHADERS
                .iter()
                .any(|(f, _)| f.contains(&name.as_str())),
            "shaders/{name} is not compiled by any kernel"
        );
    }
}

/// Run `exec` on both backends and require identical spikes and membranes within 1e-5.
fn assert_backends_agree(exec: &Executor, backend: &dyn Backend, samples: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let inputs: Vec<(usize, SpikeTrains)> = exec
        .network
        .inputs()
        .into_iter()
        .map(|p| {
            let n = exec.network.populations[p].size;
            (
                p,
                random_spikes(&mut rng, samples, n, exec.network.steps, 0.2),
            )
        })
        .collect();
    let cpu = exec.run(&CpuBackend, &inputs, Observe::AllTraces).unwrap();
    let other = exec.run(backend, &inputs, Observe::AllTraces).unwrap();
    assert_agree(&exec.network, &other, &cpu, &format!("seed {seed}"));
}

/// Identical spikes and membranes within 1e-5 in two runs of `net`.
fn assert_agree(net: &Network, other: &Execution, cpu: &Execution, what: &str) {
    for (p, pop) in net.populations.iter().enumerate() {
        assert_eq!(
            other.spikes.get(p),
            cpu.spikes.get(p),
            "{what}: spikes of '{}'",
            pop.name
        );
        if let (Some(a), Some(b)) = (&other.membrane[p], &cpu.membrane[p]) {
            let worst = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(
                worst <= 1e-5,
                "{what}: membrane of '{}' differs by {worst}",
                pop.name
            );
        }
    }
}

#[test]
fn gpu_equals_cpu_on_random_partitioned_networks() {
    let Some(g) = gpu() else { return };
    let tiny = small_substrate();
    let mut spikes = 0;
    for seed in 0..10 {
        let net = random_network(seed, &tiny);
        let exec = Executor::new(
            net,
            &tiny,
            1,
            &PartitionOptions {
                merge_layers: seed % 2 == 0,
                ..Default::default()
            },
        )
        .unwrap();
        assert_backends_agree(&exec, &g, 5, seed);
        let out = exec
            .run(
                &g,
                &neuropart::bench::random_inputs(&exec, 4, 0.5, seed).unwrap(),
                Observe::Scores,
            )
            .unwrap();
        spikes += (0..out.spikes.populations())
            .filter_map(|p| out.spikes.get(p))
            .map(|t| t.len())
            .sum::<usize>();
    }
    assert!(spikes > 100, "the networks spike ({spikes})");
}

#[test]
fn gpu_equals_cpu_on_the_mnist_network() {
    let Some(g) = gpu() else { return };
    let sub = Substrate::bss2();
    let net = neuropart::mnist_network(5).build(&sub).unwrap();
    let exec = Executor::new(net, &sub, 1, &PartitionOptions::default()).unwrap();
    assert_backends_agree(&exec, &g, 16, 1);
}

#[test]
fn chunked_batches_and_output_overflow_give_the_same_spikes() {
    let Some(mut g) = gpu() else { return };
    // A strongly driven recurrent network: many spikes per neuron, so the first output buffer
    // (4 spikes per neuron) overflows and the chunk is rerun with room for all.
    let sub = Substrate::bss2();
    let mut net = Network::load(
        std::path::Path::new("examples/networks/recurrent.toml"),
        &sub,
    )
    .unwrap();
    net.steps = 60;
    for p in &mut net.projections {
        if p.source == "input" {
            for w in &mut p.weights {
                *w = w.abs() * 4.0 + 0.2;
            }
        }
    }
    let exec = Executor::new(net, &sub, 1, &PartitionOptions::default()).unwrap();
    g.max_chunk = 3;
    assert_backends_agree(&exec, &g, 10, 3);
    let t = g.take_timings().unwrap();
    assert!(
        t.chunks >= 2 * 4,
        "10 samples in chunks of 3: {} chunks",
        t.chunks
    );
    assert!(
        t.rereads > 0,
        "more spikes than expected were read back again"
    );
}

#[test]
fn auto_device_falls_back_or_uses_the_adapter() {
    // With an adapter, `auto` picks it; the name says which.
    let b = neuropart::open_backend(neuropart::DeviceChoice::Auto).unwrap();
    if context().is_some() {
        assert!(b.name().starts_with("gpu"), "{}", b.name());
    } else {
        assert!(b.name().starts_with("cpu"), "{}", b.name());
    }
}

#[test]
fn feedforward_kernel_chunks_and_regrows_its_output() {
    let Some(mut g) = gpu() else { return };
    // Strong positive weights: hidden neurons fire nearly every step, far more than the first
    // output buffer (4 spikes per neuron) holds.
    let sub = Substrate::bss2();
    let mut net = neuropart::mnist_network(2).build(&sub).unwrap();
    for w in &mut net.projections[0].weights {
        *w = w.abs() + 0.3;
    }
    let exec = Executor::new(net, &sub, 1, &PartitionOptions::default()).unwrap();
    g.max_chunk = 4;
    assert_backends_agree(&exec, &g, 9, 11);
    let t = g.take_timings().unwrap();
    // 9 samples in chunks of 4: three chunks per run (the hidden wave fused: 2 runs).
    assert_eq!(units(&exec, &g), 2);
    assert!(t.rereads > 0 && t.chunks >= 2 * 3, "{t:?}");
}

#[test]
fn sixty_thousand_mnist_samples_run_in_one_call() {
    let Some(g) = gpu() else { return };
    let sub = Substrate::bss2();
    let net = neuropart::mnist_network(3).build(&sub).unwrap();
    let exec = Executor::new(net, &sub, 1, &PartitionOptions::default()).unwrap();
    let batch = 60_000;
    let inputs = neuropart::bench::random_inputs(&exec, batch, 0.19, 5).unwrap();
    let out = exec.run(&g, &inputs, Observe::ReadoutTraces).unwrap();
    let readout = out.membrane[2].as_ref().unwrap();
    assert_eq!(readout.len(), batch * 30 * 10);
    let t = g.take_timings().unwrap();
    eprintln!("60000 samples: {t:?}");
    // Spot-check the first and last samples against the CPU.
    for range in [0..40, batch - 40..batch] {
        let part: Vec<(usize, SpikeTrains)> = inputs
            .iter()
            .map(|(p, s)| (*p, s.slice(range.clone())))
            .collect();
        let cpu = exec
            .run(&CpuBackend, &part, Observe::ReadoutTraces)
            .unwrap();
        assert_eq!(
            cpu.spikes.get(1).unwrap(),
            &out.spikes.get(1).unwrap().slice(range.clone()),
            "hidden spikes of samples {range:?}"
        );
        let m = cpu.membrane[2].as_ref().unwrap();
        let worst = m
            .iter()
            .zip(&readout[range.start * 300..range.end * 300])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst <= 1e-5, "readout membranes differ by {worst}");
    }
}

#[test]
fn gpu_equals_cpu_in_emulated_mode_with_noise() {
    let Some(g) = gpu() else { return };
    let sub = Substrate::bss2();
    let net = neuropart::mnist_network(6).build(&sub).unwrap();
    let cfg = neuropart::AnalogConfig {
        membrane_noise: 0.05,
        ..Default::default()
    };
    let exec = Executor::emulated(
        net,
        &sub,
        1,
        &PartitionOptions::default(),
        cfg.clone(),
        neuropart::Mode::Emulated,
    )
    .unwrap();
    assert_backends_agree(&exec, &g, 12, 4);
    // The general kernel too (recurrent network, emulated; 30 steps stay within the software
    // adapter's loop limit).
    let mut net = Network::load(
        std::path::Path::new("examples/networks/recurrent.toml"),
        &sub,
    )
    .unwrap();
    net.steps = 30;
    let exec = Executor::emulated(
        net,
        &sub,
        1,
        &PartitionOptions::default(),
        cfg,
        neuropart::Mode::Emulated,
    )
    .unwrap();
    assert_backends_agree(&exec, &g, 6, 5);
}

#[test]
fn software_adapter_loop_limit_is_an_error_not_wrong_spikes() {
    let Some(g) = gpu() else { return };
    // 100 steps of a strongly active recurrent network: each invocation of the general kernel
    // loops more often than llvmpipe allows (65 535 iterations in total).
    let sub = Substrate::bss2();
    let net = Network::load(
        std::path::Path::new("examples/networks/recurrent.toml"),
        &sub,
    )
    .unwrap();
    let exec = Executor::new(net, &sub, 1, &PartitionOptions::default()).unwrap();
    let mut rng = Rng::new(5);
    let inputs = vec![(0usize, random_spikes(&mut rng, 2, 200, 100, 0.2))];
    let cpu = exec
        .run(&CpuBackend, &inputs, Observe::ReadoutTraces)
        .unwrap();
    match exec.run(&g, &inputs, Observe::ReadoutTraces) {
        // A real GPU has no such limit: the spikes must be right.
        Ok(out) => assert_eq!(out.spikes.get(1), cpu.spikes.get(1)),
        Err(e) => {
            assert_eq!(g.context().info.device_type, wgpu::DeviceType::Cpu, "{e}");
            assert!(e.to_string().contains("loop iterations"), "{e}");
        }
    }
}

/// The runs of one batch of `e` on `backend`: one per wave it fuses, one per round of the
/// other waves.
fn units(e: &Executor, backend: &dyn Backend) -> usize {
    let waves = e.schedule.waves.iter().enumerate();
    waves
        .map(|(w, wave)| match e.wave_program(w) {
            Some(p) if backend.fuses(p) => 1,
            _ => e
                .schedule
                .rounds
                .iter()
                .filter(|r| wave.contains(&r[0]))
                .count(),
        })
        .sum()
}

/// Same spikes and membranes for `exec` run with one chip and with `chips`, on `backend`.
fn assert_concurrent_equals_sequential(exec: &Executor, backend: &dyn Backend, chips: usize) {
    let inputs = neuropart::bench::random_inputs(exec, 7, 0.4, 3).unwrap();
    let seq = exec.run(backend, &inputs, Observe::AllTraces).unwrap();
    let mut conc = exec.clone();
    conc.set_chips(chips).unwrap();
    assert!(
        conc.schedule.rounds.iter().any(|r| r.len() > 1),
        "some round runs several partitions at once"
    );
    let par = conc.run(backend, &inputs, Observe::AllTraces).unwrap();
    // A wave the backend fuses runs as one program whatever the chip count; the others by
    // their rounds.
    assert_eq!(par.stats.rounds, units(&conc, backend));
    assert_eq!(seq.stats.rounds, units(exec, backend));
    if par.stats.rounds == seq.stats.rounds {
        assert!((0..exec.schedule.waves.len()).any(|w| exec.wave_program(w).is_some()));
    } else {
        assert!(par.stats.rounds < seq.stats.rounds);
    }
    for (p, pop) in exec.network.populations.iter().enumerate() {
        assert_eq!(
            par.spikes.get(p),
            seq.spikes.get(p),
            "spikes of '{}'",
            pop.name
        );
        assert_eq!(
            par.membrane[p], seq.membrane[p],
            "membranes of '{}'",
            pop.name
        );
    }
}

#[test]
fn concurrent_rounds_equal_sequential_ones_on_both_backends() {
    let tiny = small_substrate();
    let g = gpu();
    for seed in 0..6 {
        let net = random_network(seed, &tiny);
        let exec = Executor::new(net, &tiny, 1, &PartitionOptions::default()).unwrap();
        if exec.schedule.waves.iter().all(|w| w.len() < 2) {
            continue;
        }
        assert_concurrent_equals_sequential(&exec, &CpuBackend, 3);
        if let Some(g) = &g {
            assert_concurrent_equals_sequential(&exec, g, 3);
        }
    }
    // Emulated MNIST: the four hidden partitions in one round of four chips.
    let sub = Substrate::bss2();
    let net = neuropart::mnist_network(8).build(&sub).unwrap();
    let exec = Executor::emulated(
        net,
        &sub,
        1,
        &PartitionOptions::default(),
        neuropart::AnalogConfig::default(),
        neuropart::Mode::Emulated,
    )
    .unwrap();
    assert_concurrent_equals_sequential(&exec, &CpuBackend, 4);
    if let Some(g) = &g {
        assert_concurrent_equals_sequential(&exec, g, 4);
        // ...and the GPU's concurrent run equals the CPU's sequential one.
        let inputs = neuropart::bench::random_inputs(&exec, 5, 0.3, 9).unwrap();
        let cpu = exec.run(&CpuBackend, &inputs, Observe::Scores).unwrap();
        let mut four = exec.clone();
        four.set_chips(4).unwrap();
        let gpu = four.run(g, &inputs, Observe::Scores).unwrap();
        assert_eq!(gpu.spikes.get(1), cpu.spikes.get(1));
        assert_eq!(gpu.peak[2], cpu.peak[2]);
    }
}

#[test]
fn a_second_identical_batch_creates_no_buffers_and_uploads_the_input_once() {
    let Some(g) = gpu() else { return };
    let sub = Substrate::bss2();
    let mut net = neuropart::mnist_network(2).build(&sub).unwrap();
    for w in &mut net.projections[0].weights {
        *w = w.abs() * 0.3;
    }
    let exec = Executor::new(net, &sub, 1, &PartitionOptions::default()).unwrap();
    let inputs = neuropart::bench::random_inputs(&exec, 64, 0.19, 4).unwrap();
    exec.run(&g, &inputs, Observe::Scores).unwrap();
    g.take_timings();
    let out = exec.run(&g, &inputs, Observe::Scores).unwrap();
    let t = g.take_timings().unwrap();
    assert_eq!(
        t.buffers_created, 0,
        "steady state creates no buffer: {t:?}"
    );
    // The 784-channel input is read by four partitions but written to the device once: bytes
    // up are the input (a word per event, offsets, header), the hidden spikes replayed into the
    // readout, and a few hundred bytes of parameters per partition.
    let words = |p: usize| {
        let tr = out.spikes.get(p).unwrap();
        (2 + tr.samples() + tr.len()) as u64 * 4
    };
    let hidden = out.spikes.get(1).unwrap().len();
    assert!(hidden > 64, "the hidden layer spikes ({hidden})");
    let expected = words(0) + words(1) + 2 * 4;
    assert!(
        t.bytes_up >= expected && t.bytes_up < expected + 5 * 512,
        "{} bytes up, inputs and replayed spikes {expected}",
        t.bytes_up
    );
    // Bytes down: offsets and the spikes that happened (a little more as slack), and only the
    // readout's maxima, not every membrane at every step.
    let down_min = (hidden * 4 + 10 * 4 * 64) as u64;
    assert!(
        t.bytes_down >= down_min && t.bytes_down < 3 * down_min + 5 * 65 * 4 + 4096,
        "{} bytes down for {hidden} spikes",
        t.bytes_down
    );
}

#[test]
fn weights_updated_in_place_equal_a_fresh_preparation() {
    let Some(g) = gpu() else { return };
    let sub = Substrate::bss2();
    let net = neuropart::mnist_network(3).build(&sub).unwrap();
    let mut exec = Executor::emulated(
        net,
        &sub,
        1,
        &PartitionOptions::default(),
        neuropart::AnalogConfig::default(),
        neuropart::Mode::Mixed,
    )
    .unwrap();
    let inputs = neuropart::bench::random_inputs(&exec, 6, 0.3, 2).unwrap();
    exec.run(&g, &inputs, Observe::Scores).unwrap();
    for p in &mut exec.network.projections {
        for (k, w) in p.weights.iter_mut().enumerate() {
            *w = *w * 1.7 + if k % 3 == 0 { 0.05 } else { -0.02 };
        }
    }
    exec.update_weights().unwrap();
    // More activity may grow the batch buffers once; the programs are not prepared again.
    exec.run(&g, &inputs, Observe::ReadoutTraces).unwrap();
    for p in &mut exec.network.projections {
        for w in &mut p.weights {
            *w *= 1.01;
        }
    }
    exec.update_weights().unwrap();
    g.take_timings();
    let updated = exec.run(&g, &inputs, Observe::ReadoutTraces).unwrap();
    assert_eq!(g.take_timings().unwrap().buffers_created, 0);
    let fresh = exec.clone();
    let again = fresh.run(&g, &inputs, Observe::ReadoutTraces).unwrap();
    let cpu = exec
        .run(&CpuBackend, &inputs, Observe::ReadoutTraces)
        .unwrap();
    assert_eq!(updated.spikes.get(1), again.spikes.get(1));
    assert_eq!(updated.spikes.get(1), cpu.spikes.get(1));
    assert_eq!(updated.membrane[2], again.membrane[2]);
}

#[test]
fn host_structs_match_the_wgsl_layouts_naga_reports() {
    for (name, source, size, offsets) in neuropart::gpu::mirrored_layouts() {
        let module = naga::front::wgsl::parse_str(source).unwrap();
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).unwrap();
        let (handle, ty) = module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("struct {name} not found"));
        let naga::TypeInner::Struct { members, span } = &ty.inner else {
            panic!("{name} is not a struct")
        };
        assert_eq!(*span as usize, size, "size of {name}");
        assert_eq!(
            layouter[handle].size as usize, size,
            "layout size of {name}"
        );
        let wgsl: Vec<usize> = members.iter().map(|m| m.offset as usize).collect();
        assert_eq!(wgsl, offsets, "member offsets of {name}");
    }
}

/// One input spike at step 0 through weight 1 into a leaky integrator with dt/τ_mem = 1/2 and
/// dt/τ_syn = 1/4, computed by hand (every value exact in binary): in neuropart's order the
/// current takes the input first and the membrane integrates it in the same step; in
/// hxtorch's order the membrane integrates the previous step's current, so the trace is the
/// same one step later. Both backends.
#[test]
fn update_orders_match_hand_computed_traces() {
    // i: 1, 0.75, 0.5625, 0.421875; v ← v + (0 − v + i)/2.
    let input_first = [0.5f32, 0.625, 0.59375, 0.5078125];
    let hxtorch = [0.0f32, 0.5, 0.625, 0.59375];
    let sub = Substrate::bss2();
    for (update, want) in [
        (neuropart::Update::InputFirst, input_first),
        (neuropart::Update::Hxtorch, hxtorch),
    ] {
        let params = neuropart::NeuronParams {
            tau_mem: 2.0,
            tau_syn: 4.0,
            update,
            ..Default::default()
        };
        let mut net = NetworkBuilder::new("order", 4, 1)
            .input("input", 1)
            .readout("out", 1, params, neuropart::WeightInit::default())
            .build(&sub)
            .unwrap();
        net.projections[0].weights = vec![1.0];
        let exec = Executor::new(net, &sub, 1, &PartitionOptions::default()).unwrap();
        let spikes = SpikeTrains::from_samples(1, 4, vec![vec![SpikeEvent { step: 0, neuron: 0 }]]);
        let mut backends: Vec<Box<dyn Backend>> = vec![Box::new(CpuBackend)];
        if let Some(g) = gpu() {
            backends.push(Box::new(g));
        }
        for b in &backends {
            let out = exec
                .run(b.as_ref(), &[(0, spikes.clone())], Observe::ReadoutTraces)
                .unwrap();
            let got = out.membrane[1].as_ref().unwrap();
            assert_eq!(&got[..], &want[..], "{update:?} on {}", b.name());
        }
    }
}

#[test]
fn system_runs_on_the_gpu_equal_the_cpu() {
    // A loop over three chips: with unlimited links the system run is one program on the
    // device; with a receive buffer the chips step in lock-step windows. Both equal the CPU
    // (spikes, membranes, link counts and drops).
    let Some(g) = gpu() else { return };
    for buffer in [0, 6] {
        let sub = common::tiny_chip(common::system(4, 2.0, buffer));
        let net = common::looped(&sub);
        let exec = Executor::new(net.clone(), &sub, 1, &PartitionOptions::default()).unwrap();
        let mut rng = Rng::new(21);
        let input = random_spikes(&mut rng, 6, 20, net.steps, 0.2);
        let c = exec
            .run(&CpuBackend, &[(0, input.clone())], Observe::AllTraces)
            .unwrap();
        let d = exec.run(&g, &[(0, input)], Observe::AllTraces).unwrap();
        for p in 1..net.populations.len() {
            assert_eq!(c.spikes.get(p), d.spikes.get(p), "buffer {buffer}");
            assert_eq!(c.membrane[p], d.membrane[p], "buffer {buffer}");
        }
        assert_eq!(c.stats.links, d.stats.links, "buffer {buffer}");
        let dropped: u64 = c.stats.links.as_ref().unwrap().dropped_buffer.iter().sum();
        assert_eq!(dropped > 0, buffer > 0);
        // Trained with the GPU, its backward pass runs on the host, and the trainer says why.
        let t = neuropart::Trainer::new(exec, neuropart::TrainConfig::default()).unwrap();
        let dev = g.device_training().expect("the GPU trains on its device");
        let why = t.host_backward_reason(dev).expect("on the host");
        // `a` spans two chips, so a->a has synapses within a chip and across.
        let want = if buffer > 0 {
            "links are limited"
        } else {
            "synapses that cross chips and synapses that do not"
        };
        assert!(why.contains(want), "{why}");
        assert!(t.device_training(&g).is_none());
    }
}

#[test]
fn fused_waves_on_the_gpu_give_what_partitions_give_with_weights_packed_or_not() {
    // A wave as one program (one dispatch) against one partition at a time, and the GPU
    // against the CPU: the dense weights as 32-bit words, and packed in 8 bits (emulated: the
    // chip's 6-bit weights) or 16 bits in a texture, as programs too large for one buffer
    // hold them (forced here by lowering the limit to just what packing needs).
    let Some(base) = gpu() else { return };
    let tiny = small_substrate();
    let bits_of = |v: &Option<Vec<f32>>| {
        v.as_ref()
            .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
    };
    let mut seen = std::collections::BTreeSet::new();
    // Random networks on small chips, and MNIST (784 inputs) on BrainScaleS-2, whose ideal
    // fixed-point weights take 16 bits.
    let bss2 = Substrate::bss2();
    let mut cases: Vec<(Network, &Substrate, f64)> = (0..8)
        .map(|seed| (random_network(seed, &tiny), &tiny, 0.25))
        .collect();
    cases.push((
        neuropart::mnist_network(8).build(&bss2).unwrap(),
        &bss2,
        0.25,
    ));
    // 100 hidden neurons: at 16 bits (8 a thread) the last thread of each block holds 4.
    let narrow = neuropart::NetworkBuilder::new("narrow", 30, 3)
        .input("input", 784)
        .dense(
            "hidden",
            100,
            neuropart::NeuronParams::default(),
            neuropart::WeightInit {
                mean: -0.05,
                std: 0.2,
            },
        )
        .readout(
            "readout",
            10,
            neuropart::NeuronParams::default(),
            neuropart::WeightInit::default(),
        );
    cases.push((narrow.build(&bss2).unwrap(), &bss2, 0.25));
    // A wave of 2 600 neurons over 50 steps: more than one thread may loop through on the
    // software adapter, so its spikes are compacted a run of steps at a time.
    cases.push((sparse_layer(&bss2, 50), &bss2, 0.02));
    let mut wide_spikes = 0;
    for (seed, (net, sub, density)) in (0u64..).zip(cases) {
        let mut rng = Rng::new(seed ^ 0xFA57);
        let inputs = first_input(&net, &mut rng, 5, density);
        for emulated in [false, true] {
            let mut exec = ideal_or_emulated(&net, sub, emulated);
            let run = |exec: &Executor, b: &dyn Backend| {
                exec.run_with_noise(b, &inputs, Observe::AllTraces, 7)
                    .unwrap()
            };
            let cpu = run(&exec, &CpuBackend);
            exec.set_fuse_waves(false);
            let apart = run(&exec, &base);
            exec.set_fuse_waves(true);
            // The words of the largest wave's weights at 16 and 8 bits, padded to whole
            // blocks as the kernel holds them.
            let words = |bits| {
                (0..exec.schedule.waves.len())
                    .filter_map(|w| exec.wave_program(w))
                    .map(|p| {
                        let (nch, n) = (p.channels.len() as u64, p.neuron_count() as u64);
                        neuropart::gpu::blocked_words(nch, n, bits)
                    })
                    .max()
            };
            let (Some(w16), Some(w8)) = (words(16), words(8)) else {
                continue;
            };
            // Unlimited (32-bit words), and packed weights of at most what 16 bits and what 8
            // bits per weight take (ideal weights need 16: the general kernel runs them).
            for max_dense in [u64::MAX, w16 * 4, w8 * 4] {
                let mut g = gpu().unwrap();
                g.max_dense = max_dense;
                let waves = exec.schedule.waves.len();
                // Bits per weight of each fused wave.
                let fused: Vec<u32> = (0..waves)
                    .filter_map(|w| exec.wave_program(w))
                    .filter_map(|p| g.weight_bits(p))
                    .collect();
                seen.extend(fused.iter().map(|&b| (b, emulated)));
                // A fresh copy: residents are kept per device, and `g` shares `base`'s.
                let out = run(&exec.clone(), &g);
                let units = (0..waves)
                    .filter(|&w| exec.wave_program(w).is_some_and(|p| g.fuses(p)))
                    .count();
                assert_eq!(units, fused.len());
                assert!(out.stats.rounds < apart.stats.rounds || units == 0);
                for (p, pop) in net.populations.iter().enumerate() {
                    let what = format!(
                        "seed {seed}, emulated {emulated}, max_dense {max_dense}, bits \
                         {fused:?}: '{}'",
                        pop.name
                    );
                    assert_eq!(out.spikes.get(p), apart.spikes.get(p), "spikes of {what}");
                    assert_eq!(out.spikes.get(p), cpu.spikes.get(p), "CPU spikes of {what}");
                    let (a, b) = (bits_of(&out.membrane[p]), bits_of(&apart.membrane[p]));
                    assert_eq!(a, b, "membranes of {what}");
                    assert_eq!(bits_of(&out.peak[p]), bits_of(&apart.peak[p]), "{what}");
                    if pop.size * net.steps as usize > 60_000 && units > 0 {
                        wide_spikes += out.spikes.get(p).map_or(0, |t| t.len());
                    }
                }
            }
        }
    }
    // Every way of holding the weights ran: 32 bits (ideal and emulated), 16 bits (ideal
    // fixed point) and 8 bits (emulated).
    assert!(wide_spikes > 0, "the wide wave spiked");
    for want in [(32, false), (32, true), (16, false), (8, true)] {
        assert!(seen.contains(&want), "{want:?} never ran; seen {seen:?}");
    }
}

#[test]
fn packed_weights_on_the_gpu_follow_weight_updates() {
    // A fused wave whose weights are packed, run, then its network's weights changed in place
    // (as an optimiser step does): the device copy is rewritten (shifts and packed words; the
    // ideal weights grown past 16 bits: prepared anew on the general kernel) and the next run
    // gives what the CPU gives with the new weights.
    let Some(_) = gpu() else { return };
    let sub = Substrate::bss2();
    let net = neuropart::mnist_network(8).build(&sub).unwrap();
    let mut rng = Rng::new(21);
    let inputs = [(
        net.inputs()[0],
        random_spikes(&mut rng, 4, 784, net.steps, 0.25),
    )];
    for emulated in [false, true] {
        let mut exec = ideal_or_emulated(&net, &sub, emulated);
        let w = (0..exec.schedule.waves.len())
            .find(|&w| exec.wave_program(w).is_some())
            .unwrap();
        let p = exec.wave_program(w).unwrap();
        let (nch, n) = (p.channels.len() as u64, p.neuron_count() as u64);
        let mut g = gpu().unwrap();
        // Room for the weights packed in 16 bits, not for them in 32.
        g.max_dense = 4 * neuropart::gpu::blocked_words(nch, n, 16);
        let bits = g.weight_bits(exec.wave_program(w).unwrap());
        assert_eq!(bits, Some(if emulated { 8 } else { 16 }));
        let run = |exec: &Executor, b: &dyn Backend| {
            exec.run_with_noise(b, &inputs, Observe::AllTraces, 3)
                .unwrap()
        };
        run(&exec, &g);
        // Strengthen some weights, weaken and flip others.
        for proj in &mut exec.network.projections {
            for (k, x) in proj.weights.iter_mut().enumerate() {
                *x *= [1.5, -0.5, 0.25][k % 3];
            }
        }
        exec.update_weights().unwrap();
        let now = g.weight_bits(exec.wave_program(w).unwrap());
        assert_eq!(now, if emulated { Some(8) } else { None });
        let after = run(&exec, &g);
        let cpu = run(&exec.clone(), &CpuBackend);
        assert_agree(&exec.network, &after, &cpu, &format!("emulated {emulated}"));
        let hidden: usize = (1..exec.network.populations.len())
            .map(|k| after.spikes.get(k).map_or(0, |t| t.len()))
            .sum();
        assert!(
            hidden > 0,
            "emulated {emulated}: nothing spiked after the update"
        );
    }
}

//! Analog emulation: reproducible chips, placement-dependent variation, quantisation, modes.

mod common;

#[allow(unused_imports)]
use common::*;
use neuropart::prelude::*;
use neuropart::{AnalogConfig, Mode};

fn mnist(mode: Mode, config: AnalogConfig) -> Executor {
    common::active_mnist(mode, config)
}

#[test]
fn modes_select_partitions_and_placement_decides_variation() {
    let em = mnist(Mode::Emulated, AnalogConfig::default());
    assert_eq!(em.emulation.as_ref().unwrap().emulated, vec![true; 5]);
    let mixed = mnist(Mode::Mixed, AnalogConfig::default());
    assert_eq!(
        mixed.emulation.as_ref().unwrap().emulated,
        vec![true, true, true, true, false]
    );
    // The four hidden partitions run one after another on the same chip: neuron k of each
    // sits on the same circuits, so it has the same time constants, threshold and gain.
    let p = &em.programs;
    for k in 0..64 {
        let (a, b) = (p[0].coeffs[k], p[3].coeffs[k]);
        assert_eq!(
            (a.a_syn, a.k_mem, a.v_th, a.v_leak, a.weight_gain),
            (b.a_syn, b.k_mem, b.v_th, b.v_leak, b.weight_gain)
        );
        assert_ne!(
            a.noise_key, b.noise_key,
            "distinct neurons get distinct noise"
        );
    }
    // ...and different neurons of a partition differ.
    assert_ne!(p[0].coeffs[0].v_th, p[0].coeffs[1].v_th);
    // Ideal partitions keep the ideal coefficients.
    let ideal = mnist(Mode::Ideal, AnalogConfig::default());
    assert_eq!(mixed.programs[4].coeffs, ideal.programs[4].coeffs);
    assert_ne!(mixed.programs[0].coeffs, ideal.programs[0].coeffs);
}

#[test]
fn emulation_is_reproducible_and_changes_the_result() {
    let inputs = |e: &Executor| neuropart::bench::random_inputs(e, 20, 0.19, 3).unwrap();
    let a = mnist(Mode::Emulated, AnalogConfig::default());
    let b = mnist(Mode::Emulated, AnalogConfig::default());
    let ra = a
        .run_with_noise(&CpuBackend, &inputs(&a), Observe::ReadoutTraces, 7)
        .unwrap();
    let rb = b
        .run_with_noise(&CpuBackend, &inputs(&b), Observe::ReadoutTraces, 7)
        .unwrap();
    assert_eq!(
        ra.membrane[2], rb.membrane[2],
        "same chip, same noise seed: same result"
    );
    let rc = a
        .run_with_noise(&CpuBackend, &inputs(&a), Observe::ReadoutTraces, 8)
        .unwrap();
    assert_ne!(
        ra.membrane[2], rc.membrane[2],
        "another noise seed: other trial noise"
    );
    let other = mnist(
        Mode::Emulated,
        AnalogConfig {
            chip_seed: 99,
            membrane_noise: 0.0,
            ..Default::default()
        },
    );
    let ro = other
        .run_with_noise(&CpuBackend, &inputs(&other), Observe::ReadoutTraces, 7)
        .unwrap();
    assert_ne!(ra.membrane[2], ro.membrane[2], "another chip");
    let ideal = mnist(Mode::Ideal, AnalogConfig::default());
    let ri = ideal
        .run(&CpuBackend, &inputs(&ideal), Observe::ReadoutTraces)
        .unwrap();
    // The CADC reports multiples of 1/40 model units in emulated partitions only.
    let on_grid = |m: &[f32]| {
        m.iter()
            .all(|v| ((v * 40.0).round() - v * 40.0).abs() < 1e-4)
    };
    assert!(on_grid(ra.membrane[2].as_ref().unwrap()));
    assert!(!on_grid(ri.membrane[2].as_ref().unwrap()));
    // Close to ideal, but not equal: a few percent of variation change some spikes, not most.
    let count = |r: &neuropart::Execution| r.spikes.get(1).unwrap().len() as f64;
    let (ce, ci) = (count(&ra), count(&ri));
    assert!(ci > 20.0 * 10.0, "hidden layer active: {ci} spikes");
    assert!(
        (ce - ci).abs() < 0.3 * ci,
        "emulated {ce} vs ideal {ci} hidden spikes"
    );
    assert_ne!(ra.spikes.get(1), ri.spikes.get(1));
}

#[test]
fn bad_analog_parameters_are_rejected() {
    let sub = Substrate::bss2();
    let net = neuropart::mnist_network(4).build(&sub).unwrap();
    let cfg = AnalogConfig {
        membrane_noise: f32::NAN,
        ..Default::default()
    };
    let e = Executor::emulated(
        net,
        &sub,
        1,
        &PartitionOptions::default(),
        cfg,
        Mode::Emulated,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("membrane_noise") && e.contains("finite"), "{e}");
}

#[test]
fn updating_weights_equals_compiling_afresh() {
    let sub = Substrate::bss2();
    let mut nets = vec![neuropart::mnist_network(8).build(&sub).unwrap()];
    for seed in 0..6 {
        nets.push(common::random_network(seed, &common::small_substrate()));
    }
    for (k, net) in nets.into_iter().enumerate() {
        let sub = if k == 0 {
            Substrate::bss2()
        } else {
            common::small_substrate()
        };
        for mode in [Mode::Ideal, Mode::Emulated, Mode::Mixed] {
            let mut e = Executor::emulated(
                net.clone(),
                &sub,
                1,
                &PartitionOptions::default(),
                AnalogConfig::default(),
                mode,
            )
            .unwrap();
            let mut rng = neuropart::Rng::new(k as u64);
            for p in &mut e.network.projections {
                for w in &mut p.weights {
                    *w += 0.3 * rng.normal() as f32;
                }
            }
            let mut fresh = e.clone();
            fresh.recompile().unwrap();
            e.update_weights().unwrap();
            for (a, b) in e.programs.iter().zip(&fresh.programs) {
                assert_eq!(
                    (&a.synapses, &a.weights),
                    (&b.synapses, &b.weights),
                    "network {k} {mode:?} partition {}",
                    a.partition
                );
                assert_eq!(
                    a.coeffs, b.coeffs,
                    "network {k} {mode:?} partition {}",
                    a.partition
                );
            }
            // The fused waves' copies too (refreshed, not fused again).
            for w in 0..e.schedule.waves.len() {
                match (e.wave_program(w), fresh.wave_program(w)) {
                    (Some(a), Some(b)) => assert_eq!(
                        (&a.synapses, &a.weights, &a.coeffs),
                        (&b.synapses, &b.weights, &b.coeffs),
                        "network {k} {mode:?} wave {w}"
                    ),
                    (None, None) => {}
                    _ => panic!("network {k} {mode:?} wave {w}: fused in one only"),
                }
            }
        }
    }
}

/// After new weights, runs take them whichever residents they use (the shared body).
#[test]
fn runs_take_the_new_weights_whichever_residents_they_use() {
    common::runs_take_new_weights(&CpuBackend, mnist(Mode::Emulated, AnalogConfig::default()));
}

#[test]
fn compact_traces_are_the_cadc_codes_of_the_same_membranes_on_every_cpu_path() {
    use neuropart::Stepping;
    // The fused wave writing into the population's codes, or its partitions one by one (each
    // the only writer of its columns), by columns and by samples; emulated, mixed (the hidden
    // layer emulated) and ideal; each configuration with its own noise.
    let mut seed = 0;
    for mode in [Mode::Emulated, Mode::Mixed, Mode::Ideal] {
        for (fuse, stepping) in [
            (true, Stepping::Auto),
            (true, Stepping::Columns),
            (false, Stepping::Samples),
            (false, Stepping::Columns),
        ] {
            let mut exec = mnist(mode, AnalogConfig::default());
            exec.set_fuse_waves(fuse);
            exec.set_stepping(stepping);
            let what = format!("{mode:?}, fused waves {fuse}, {stepping:?}");
            seed += 1;
            let coded = common::compact_equals_values(&exec, 12, seed, &what);
            // The readout keeps values (its score is computed from them); ideal partitions
            // have no CADC.
            let expect = if mode == Mode::Ideal { vec![] } else { vec![1] };
            assert_eq!(coded, expect, "{what}");
        }
    }
    // A readout whose model 0 is code 0 has no codes (the readout keeps the sign of −0).
    let zero = AnalogConfig {
        readout_offset: 0.0,
        ..Default::default()
    };
    let coded = common::compact_equals_values(&mnist(Mode::Emulated, zero), 12, 99, "offset 0");
    assert!(coded.is_empty());
}

/// The CPU backend, saying it records no codes (as a GPU's rounds).
struct ValuesOnly;

impl Backend for ValuesOnly {
    fn name(&self) -> String {
        "values only".into()
    }
    fn key(&self) -> u64 {
        CpuBackend.key()
    }
    fn prepare(&self, p: &neuropart::PartitionProgram) -> neuropart::Result<neuropart::Resident> {
        CpuBackend.prepare(p)
    }
    fn update(
        &self,
        r: &mut neuropart::Resident,
        p: &neuropart::PartitionProgram,
    ) -> neuropart::Result<()> {
        CpuBackend.update(r, p)
    }
    fn run_round(
        &self,
        store: &neuropart::SpikeStore,
        jobs: &mut [neuropart::Job<'_>],
        opts: &neuropart::RunOptions,
    ) -> neuropart::Result<Vec<neuropart::PartitionOutput>> {
        assert!(jobs
            .iter()
            .all(|j| j.membranes != neuropart::Membranes::Codes));
        CpuBackend.run_round(store, jobs, opts)
    }
    fn fuses(&self, _whole: &neuropart::PartitionProgram) -> bool {
        true
    }
}

#[test]
fn compact_traces_are_values_on_a_backend_without_codes() {
    let exec = mnist(Mode::Emulated, AnalogConfig::default());
    let mut rng = neuropart::Rng::new(3);
    let input = common::first_input(&exec.network, &mut rng, 6, 0.19);
    let all = exec
        .run_with_noise(&CpuBackend, &input, Observe::AllTraces, 4)
        .unwrap();
    let compact = exec
        .run_with_noise(&ValuesOnly, &input, Observe::CompactTraces, 4)
        .unwrap();
    let coded = common::assert_codes_stand_for_values(&all, &compact, "values only");
    assert!(coded.is_empty() && compact.membrane[1].is_some());
}

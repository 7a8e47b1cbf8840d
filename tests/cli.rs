//! The `neuropart` binary end to end: `plan` (text, JSON, PNG) and `run` with a spike file.

use std::process::Command;

fn neuropart(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_neuropart"))
        .args(args)
        .output()
        .expect("binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plan_prints_five_partitions_as_json_and_draws_png() {
    let dir = std::env::temp_dir().join(format!("neuropart-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("placement.png");
    let (ok, out, err) = neuropart(&[
        "plan",
        "examples/networks/mnist.toml",
        "--json",
        "--chips",
        "4",
        "--png",
        png.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["partitions"].as_array().unwrap().len(), 5);
    assert_eq!(
        v["schedule"]["rounds"],
        serde_json::json!([[0, 1, 2, 3], [4]])
    );
    assert_eq!(v["schedule"]["cost"]["host_round_trips"], 2);
    // 784 x 256 + 256 x 10 synapses, 4 bytes each as f32, 28 compiled.
    let synapses = 784 * 256 + 256 * 10;
    assert_eq!(
        v["memory"],
        serde_json::json!({"synapses": synapses, "weight_bytes": 4 * synapses,
            "compiled_bytes": 28 * synapses})
    );
    let img = image::open(&png).unwrap();
    assert!(img.width() > 500 && img.height() > 5 * 100);

    let (ok, out, _) = neuropart(&["plan", "examples/networks/mnist.toml"]);
    assert!(ok);
    assert!(
        out.contains("memory: 203264 synapses: 794.0 KiB of weights (f32) and up to 5.4 MiB"),
        "{out}"
    );
    let (ok, out, _) = neuropart(&["plan", "examples/networks/recurrent.toml"]);
    assert!(ok);
    assert!(
        out.contains("exc[0..160]") && out.contains("inh[0..40]"),
        "{out}"
    );

    let (ok, _, err) = neuropart(&["plan", "examples/networks/missing.toml"]);
    assert!(!ok && err.contains("missing.toml"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn run_reads_a_spike_file_and_writes_all_spikes() {
    let dir = std::env::temp_dir().join(format!("neuropart-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Two samples: the first with strong input on 100 channels, the second silent.
    let events: Vec<[u32; 2]> = (0..200).map(|n| [(n % 5) as u32, n as u32]).collect();
    let input = serde_json::json!({"steps": 100, "populations": {"input": [events, []]}});
    let inp = dir.join("in.json");
    std::fs::write(&inp, input.to_string()).unwrap();
    let outp = dir.join("out.json");
    let (ok, _, err) = neuropart(&[
        "run",
        "examples/networks/recurrent.toml",
        "--input",
        inp.to_str().unwrap(),
        "--output",
        outp.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&outp).unwrap()).unwrap();
    let exc = v["populations"]["exc"].as_array().unwrap();
    assert_eq!(exc.len(), 2);
    assert!(
        !exc[0].as_array().unwrap().is_empty(),
        "driven sample spikes"
    );
    assert!(
        exc[1].as_array().unwrap().is_empty(),
        "silent sample stays silent"
    );

    // Wrong number of steps: a clear error.
    std::fs::write(&inp, r#"{"steps": 7, "populations": {"input": [[]]}}"#).unwrap();
    let (ok, _, err) = neuropart(&[
        "run",
        "examples/networks/recurrent.toml",
        "--input",
        inp.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("in.json") && err.contains("7 steps") && err.contains("runs 100"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn figures_only_by_their_extension_and_sweeps_of_a_sane_size() {
    let dir = std::env::temp_dir().join(format!("neuropart-cli-ext-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pdf = dir.join("placement.pdf");
    let (ok, _, err) = neuropart(&[
        "plan",
        "examples/networks/mnist.toml",
        "--png",
        pdf.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains(".png or .svg") && err.contains("placement.pdf"),
        "{err}"
    );
    assert!(!pdf.exists(), "nothing written under the wrong name");
    let (ok, _, err) = neuropart(&[
        "eval",
        "examples/networks/mnist.toml",
        "--checkpoint",
        "none.json",
        "--chip-instances",
        "18446744073709551615",
    ]);
    assert!(!ok && err.contains("draw 1 to 65536"), "{err}");
    // A system's plan: every partition gains its chip and system run; the drawing shows the
    // system and, beside it, the chips' circuits.
    let sys = dir.join("sys.png");
    let (ok, out, err) = neuropart(&[
        "plan",
        "examples/networks/recurrent-600.toml",
        "--substrate",
        "examples/systems/bss2-2x12-backplanes.toml",
        "--json",
        "--png",
        sys.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let parts = v["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 11);
    assert!(parts
        .iter()
        .all(|p| p["system_run"] == 0 && p["chip"].is_u64()));
    assert_eq!(v["system"]["cross_chip_synapses"], 330000);
    assert!(sys.exists() && dir.join("sys-chips.png").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A short CPU benchmark: 8 samples of 20 steps.
const SHORT_BENCH: [&str; 9] = [
    "bench",
    "--batch",
    "8",
    "--steps",
    "20",
    "--seconds",
    "0.01",
    "--device",
    "cpu",
];

/// The spikes population 1 of `net` emits over [`SHORT_BENCH`]'s samples and steps on the
/// random input `bench --density density` draws, counted through the library.
fn short_bench_spikes(net: neuropart::prelude::Network, density: f64) -> f64 {
    short_bench_spikes_in(net, density, neuropart::Mode::Ideal)
}

/// [`short_bench_spikes`] with the chip's analog effects of `mode` (`bench --mode`).
fn short_bench_spikes_in(
    mut net: neuropart::prelude::Network,
    density: f64,
    mode: neuropart::Mode,
) -> f64 {
    use neuropart::prelude::*;
    let sub = Substrate::bss2();
    net.steps = 20;
    let opts = PartitionOptions::default();
    let analog = neuropart::AnalogConfig::default();
    let exec = Executor::emulated(net, &sub, 1, &opts, analog, mode).unwrap();
    let inputs = neuropart::bench::random_inputs(&exec, 8, density, 7).unwrap();
    let run = exec.run(&CpuBackend, &inputs, Observe::Scores).unwrap();
    run.spikes.get(1).unwrap().len() as f64
}

#[test]
fn bench_says_how_active_each_layer_was_and_warns_of_silent_ones() {
    use neuropart::prelude::*;
    let common = SHORT_BENCH;
    // No input at all: the hidden layer never spikes, and the figures would be meaningless.
    let (ok, out, err) = neuropart(&[&common[..], &["--density", "0"]].concat());
    assert!(ok, "{err}");
    assert!(
        out.contains("activity (spikes per neuron and step, initial weights): hidden 0.00%"),
        "{out}"
    );
    assert!(
        err.contains("hidden did not spike") && err.contains("--checkpoint"),
        "{err}"
    );
    // The set-up and the process's peak memory, per synapse of the MNIST network.
    let set_up = out
        .lines()
        .find(|l| l.starts_with("set-up: planned and compiled in "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(set_up.contains("(203264 synapses)"), "{set_up}");
    if cfg!(target_os = "linux") {
        assert!(set_up.contains("peak memory of the process"), "{set_up}");
        assert!(set_up.contains(" bytes a synapse)"), "{set_up}");
    }
    // An excitatory network: the printed activity is the hidden layer's spikes per
    // neuron-step on the same random input, counted here through the library.
    let dir = std::env::temp_dir().join(format!("neuropart-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("excitatory.toml");
    let text = "name = \"exc\"\nsteps = 20\nseed = 3\n\
        [[populations]]\nname = \"in\"\nsize = 64\nkind = \"input\"\n\
        [[populations]]\nname = \"hidden\"\nsize = 32\nkind = \"lif\"\n\
        [[populations]]\nname = \"out\"\nsize = 4\nkind = \"readout\"\n\
        [[projections]]\nsource = \"in\"\ntarget = \"hidden\"\ninit = { mean = 0.3, std = 0.1 }\n\
        [[projections]]\nsource = \"hidden\"\ntarget = \"out\"\n";
    std::fs::write(&file, text).unwrap();
    let path = file.to_str().unwrap();
    let (ok, out, err) =
        neuropart(&[&common[..], &["--density", "0.5", "--network", path]].concat());
    assert!(ok, "{err}");
    let spikes = short_bench_spikes(Network::load(&file, &Substrate::bss2()).unwrap(), 0.5);
    let expect = format!("hidden {:.2}%", 100.0 * spikes / (8.0 * 20.0 * 32.0));
    assert!(spikes > 0.0 && out.contains(&expect), "{expect} in {out}");
    assert!(!err.contains("did not spike"), "{err}");
    assert!(out.contains("Ideal mode"), "{out}");
    // With the chip's analog effects (`--mode emulated`): the emulated network's spikes.
    let args = ["--density", "0.5", "--network", path, "--mode", "emulated"];
    let (ok, out, err) = neuropart(&[&common[..], &args].concat());
    assert!(ok, "{err}");
    let net = Network::load(&file, &Substrate::bss2()).unwrap();
    let emulated = short_bench_spikes_in(net, 0.5, neuropart::Mode::Emulated);
    let expect = format!("hidden {:.2}%", 100.0 * emulated / (8.0 * 20.0 * 32.0));
    assert!(
        out.contains("Emulated mode") && out.contains(&expect),
        "{expect} in {out}"
    );
    assert_ne!(emulated, spikes, "the analog effects change the spikes");
    // Real images instead of random pixels: for the MNIST network only.
    let (ok, _, err) = neuropart(&[&common[..], &["--mnist", "--network", path]].concat());
    assert!(
        !ok && err.contains("images of 784 pixels") && err.contains("'in' has 64"),
        "{err}"
    );
    let (ok, out, err) = neuropart(&[&common[..], &["--mnist"]].concat());
    assert!(ok, "{err}");
    assert!(out.contains("the MNIST test images"), "{out}");
}

/// `bench --checkpoint` without `--network` benchmarks the MNIST network with the checkpoint's
/// weights (what the MNIST example writes): the activity it prints is that of those weights,
/// counted here through the library.
#[test]
fn bench_takes_a_checkpoint_of_the_mnist_network_without_a_network_file() {
    use neuropart::prelude::*;
    let dir = std::env::temp_dir().join(format!("neuropart-bench-ck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sub = Substrate::bss2();
    // Strong input weights: the hidden layer fires often (with the initial weights it stays
    // silent on random pixels).
    let mut net = neuropart::mnist_network(1).build(&sub).unwrap();
    net.projections[0].weights.fill(0.4);
    let ck = dir.join("strong.json");
    let exec = Executor::new(net.clone(), &sub, 1, &PartitionOptions::default()).unwrap();
    neuropart::Trainer::new(exec, neuropart::TrainConfig::default())
        .unwrap()
        .save(&ck)
        .unwrap();
    let args = ["--density", "0.5", "--checkpoint", ck.to_str().unwrap()];
    let (ok, out, err) = neuropart(&[&SHORT_BENCH[..], &args].concat());
    assert!(ok, "{err}");
    let spikes = short_bench_spikes(net, 0.5);
    let expect = format!(
        "activity (spikes per neuron and step, trained weights): hidden {:.2}%",
        100.0 * spikes / (8.0 * 20.0 * 256.0)
    );
    assert!(
        spikes > 1000.0 && out.contains(&expect),
        "{expect} in {out}"
    );
    // The network file of the same network gives its input an image shape, which changes no
    // weight's meaning: the checkpoint fits it (export writes its weights into the file).
    let out = dir.join("mnist-trained.toml");
    let (ok, _, err) = neuropart(&[
        "export",
        "examples/networks/mnist.toml",
        "--checkpoint",
        ck.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let exported = Network::load(&out, &sub).unwrap();
    assert_eq!(exported.populations[0].shape, Some([1, 28, 28]));
    assert!(exported.projections[0].weights.iter().all(|&w| w == 0.4));
    // A checkpoint that is not there: named.
    let gone = dir.join("gone.json");
    let (ok, _, err) = neuropart(&["bench", "--checkpoint", gone.to_str().unwrap()]);
    assert!(!ok && err.contains("gone.json"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the command line is given and cannot use is refused before the work (or, where a
/// run's own output is fed back, said out loud), and output it cannot write ends it cleanly.
#[test]
fn surfaces_refuse_or_say_what_they_leave_out() {
    let dir = std::env::temp_dir().join(format!("neuropart-cli-surface-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    // A figure under a name it cannot have: refused before the plan is printed.
    let (ok, out, err) = neuropart(&[
        "plan",
        "examples/networks/mnist.toml",
        "--png",
        &path("p.jpg"),
    ]);
    assert!(
        !ok && out.is_empty() && err.contains(".png or .svg"),
        "{out}{err}"
    );
    // A spike file with a non-input population (a run's output holds every population's):
    // run, and say which spikes were left out; one without the input population: an error
    // naming the file.
    let given = r#"{"steps": 100, "populations": {"input": [[[1, 1]]], "exc": [[[1, 1]]]}}"#;
    std::fs::write(path("in.json"), given).unwrap();
    let run = |file: &str| neuropart(&["run", "examples/networks/recurrent.toml", "--input", file]);
    let (ok, _, err) = run(&path("in.json"));
    assert!(
        ok && err.contains("in.json") && err.contains("'exc' are left out"),
        "{err}"
    );
    std::fs::write(path("none.json"), r#"{"steps": 100, "populations": {}}"#).unwrap();
    let (ok, _, err) = run(&path("none.json"));
    assert!(
        !ok && err.contains("none.json") && err.contains("no spikes given"),
        "{err}"
    );
    // A network file under a NIR name is not written as TOML; NIR is not read as text.
    let (ok, _, err) = neuropart(&[
        "export",
        "examples/networks/mnist.toml",
        "--checkpoint",
        &path("none.json"),
        "-o",
        &path("net.nir"),
    ]);
    assert!(
        !ok && err.contains("--output") && err.contains(".toml or .json"),
        "{err}"
    );
    assert!(!dir.join("net.nir").exists());
    std::fs::write(path("graph.nir"), [0x89u8, b'H', b'D', b'F', 0xff, 0xfe]).unwrap();
    let (ok, _, err) = neuropart(&["plan", &path("graph.nir")]);
    assert!(
        !ok && err.contains("NIR graph") && err.contains("from_nir"),
        "{err}"
    );
    // Options that do not apply, or out of range: errors naming them, no panic.
    for (args, option) in [
        (&["bench", "--batches", "3"][..], "--batches"),
        (&["bench", "--seconds", "1e20"][..], "--seconds"),
        (
            &[
                "eval",
                "examples/networks/mnist.toml",
                "--checkpoint",
                "x.json",
                "--train-samples",
                "5",
            ][..],
            "--train-samples",
        ),
    ] {
        let (ok, _, err) = neuropart(args);
        assert!(
            !ok && err.contains(option) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    // Standard output closed by its reader before the plan prints: it ends quietly (status
    // 141, as by SIGPIPE; a panic is 101).
    let mut child = Command::new(env!("CARGO_BIN_EXE_neuropart"))
        .args(["plan", "examples/networks/mnist.toml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("binary runs");
    drop(child.stdout.take());
    assert_eq!(child.wait().unwrap().code(), Some(141));
    let _ = std::fs::remove_dir_all(&dir);
}

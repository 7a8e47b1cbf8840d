//! The user's surface under bad or edge input: one test per class of bad outcome found by an
//! adversarial tester (sizes that overflowed or aborted, weights that silently lost all
//! precision, training that diverged over the checkpoint, options that panicked, datasets that
//! were refused or silently shrunk, resume that did nothing), each asserting that the error
//! names the item and the numbers and that nothing on disk was lost; then the weak outcomes.

use neuropart::prelude::*;
use neuropart::{Dataset, Error, Format, Rng, Setup, TrainConfig, Trainer, WeightInit};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

fn neuropart(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_neuropart"))
        .args(args)
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .expect("binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("np-surface-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn net_err(text: &str) -> String {
    match Network::from_str(
        text,
        Format::Toml,
        Path::new("bad.toml"),
        &Substrate::bss2(),
    ) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const TWO_POPS: &str = "[[populations]]\nname = \"in\"\nsize = 4\nkind = \"input\"\n\
                        [[populations]]\nname = \"h\"\nsize = 2\n";

#[test]
fn absurd_sizes_are_errors_naming_the_quantity_never_wrapped_numbers_or_aborts() {
    // A convolution whose padding overflows the size arithmetic.
    let e = net_err(
        "[[populations]]\nname = \"img\"\nsize = 16\nkind = \"input\"\nshape = [1, 4, 4]\n\
         [[populations]]\nname = \"c\"\nsize = 4\nshape = [1, 2, 2]\n\
         [[projections]]\nsource = \"img\"\ntarget = \"c\"\n\
         connectivity = { type = \"conv2d\", kernel = 3, padding = 9223372036854775807 }\n",
    );
    assert!(
        e.contains("bad.toml")
            && e.contains("projection 'img->c'")
            && e.contains("padding 9223372036854775807")
            && e.contains("no valid output size"),
        "{e}"
    );
    // Substrates with counts that overflow or exceed any chip.
    let sub_err = |t: &str| {
        Substrate::from_str(t, Format::Toml, Path::new("sub.toml"))
            .unwrap_err()
            .to_string()
    };
    let e = sub_err("circuits_per_hemisphere = 1000000000000\n");
    assert!(
        e.contains("sub.toml")
            && e.contains("circuits_per_hemisphere")
            && e.contains("1000000000000"),
        "{e}"
    );
    let e = sub_err("hemispheres = 16777216\ncirculits = 1\n");
    assert!(e.contains("circulits"), "unknown fields are named: {e}");
    let e = sub_err("hemispheres = 16777216\ncircuits_per_hemisphere = 16777216\n");
    assert!(
        e.contains("hemispheres x circuits_per_hemisphere") && e.contains("16777216 x 16777216"),
        "{e}"
    );
    // A population of 4e9 neurons; one within the index range whose weights would not fit.
    let e = net_err("[[populations]]\nname = \"big\"\nsize = 4000000000\nkind = \"input\"\n");
    assert!(
        e.contains("population 'big'") && e.contains("size 4000000000"),
        "{e}"
    );
    neuropart::set_memory_limit(1 << 30);
    let e = net_err(
        "[[populations]]\nname = \"in\"\nsize = 784\nkind = \"input\"\n\
         [[populations]]\nname = \"wide\"\nsize = 2000000000\n\
         [[projections]]\nsource = \"in\"\ntarget = \"wide\"\n",
    );
    assert!(
        e.contains("the network's weights") && e.contains("memory limit is 1.0 GiB"),
        "{e}"
    );
    neuropart::set_memory_limit(0);
    // A delay of 2^32 − 1 steps.
    let e = net_err(&format!(
        "{TWO_POPS}[[projections]]\nsource = \"in\"\ntarget = \"h\"\ndelay = 4294967295\n"
    ));
    assert!(
        e.contains("projection 'in->h'")
            && e.contains("delay 4294967295")
            && e.contains("16777216"),
        "{e}"
    );
}

#[test]
fn runs_and_benchmarks_check_memory_before_allocating() {
    let dir = temp("memory");
    // A run of 10^9 steps: the membranes asked for would need terabytes; refused at once.
    let net = dir.join("long.toml");
    std::fs::write(
        &net,
        format!("steps = 1000000000\n{TWO_POPS}[[projections]]\nsource = \"in\"\ntarget = \"h\"\n"),
    )
    .unwrap();
    let input = dir.join("in.json");
    std::fs::write(
        &input,
        r#"{"steps": 1000000000, "populations": {"in": [[[0, 1]]]}}"#,
    )
    .unwrap();
    let (ok, _, err) = neuropart(&[
        "run",
        net.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--membranes",
        "--max-memory",
        "64M",
    ]);
    assert!(
        !ok && err.contains("membrane traces of 1 samples x 1000000000 steps x 2 neurons")
            && err.contains("64.0 MiB"),
        "{err}"
    );
    // A benchmark batch of 10^8 MNIST samples: refused before any image is drawn.
    let (ok, _, err) = neuropart(&[
        "bench",
        "--device",
        "cpu",
        "--batch",
        "100000000",
        "--max-memory",
        "4G",
    ]);
    assert!(
        !ok && err.contains("input spikes (100000000 samples)") && err.contains("4.0 GiB"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_weight_that_swamps_the_others_is_reported_with_the_count_it_erased() {
    let mut net = NetworkBuilder::new("w", 10, 0)
        .input("in", 4)
        .dense("h", 2, NeuronParams::default(), WeightInit::default())
        .build(&Substrate::bss2())
        .unwrap();
    net.projections[0].weights = vec![1e30, 0.5, -0.25, 0.0, 0.5, 0.5, 0.5, 0.5];
    let exec = Executor::new(net, &Substrate::bss2(), 1, &PartitionOptions::default()).unwrap();
    let w = exec.warnings.join("\n");
    assert!(
        w.contains("projection 'in->h'") && w.contains("6 of 7 non-zero weights round to 0"),
        "{w}"
    );
    let ok = Executor::new(
        neuropart::mnist_network(1)
            .build(&Substrate::bss2())
            .unwrap(),
        &Substrate::bss2(),
        1,
        &PartitionOptions::default(),
    )
    .unwrap();
    assert!(ok.warnings.is_empty(), "{:?}", ok.warnings);
}

/// A small IDX set in `dir` (4x4 images, `classes` classes, plain or gzipped files).
fn write_idx(dir: &Path, n: u32, classes: u8, gz: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut labels = Vec::new();
    let mut pixels = Vec::new();
    for k in 0..n {
        let c = (k % classes as u32) as u8;
        labels.push(c);
        for p in 0..16u32 {
            let on = p % classes as u32 == c as u32 || rng.uniform() < 0.1;
            pixels.push(if on { 200 + (rng.below(55) as u8) } else { 0 });
        }
    }
    for split in ["train", "t10k"] {
        let mut img = vec![0, 0, 8, 3];
        img.extend(n.to_be_bytes());
        img.extend(4u32.to_be_bytes());
        img.extend(4u32.to_be_bytes());
        img.extend(&pixels);
        let mut lab = vec![0, 0, 8, 1];
        lab.extend(n.to_be_bytes());
        lab.extend(&labels);
        for (name, bytes) in [
            (format!("{split}-images-idx3-ubyte"), img),
            (format!("{split}-labels-idx1-ubyte"), lab),
        ] {
            if gz {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&bytes).unwrap();
                std::fs::write(dir.join(format!("{name}.gz")), e.finish().unwrap()).unwrap();
            } else {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
    }
}

/// A network for the 4x4 sets: 16 inputs, 12 hidden, `readout` outputs.
fn write_net(path: &Path, readout: usize) {
    std::fs::write(
        path,
        format!(
            "name = \"tiny\"\nsteps = 12\n\
             [[populations]]\nname = \"input\"\nsize = 16\nkind = \"input\"\n\
             [[populations]]\nname = \"hidden\"\nsize = 12\n\
             [[populations]]\nname = \"out\"\nsize = {readout}\nkind = \"readout\"\n\
             [[projections]]\nsource = \"input\"\ntarget = \"hidden\"\ninit = {{ mean = 0.3, std = 0.3 }}\n\
             [[projections]]\nsource = \"hidden\"\ntarget = \"out\"\n"
        ),
    )
    .unwrap();
}

#[test]
fn divergence_and_bad_numbers_never_overwrite_the_last_good_checkpoint() {
    let dir = temp("diverge");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_idx(&data, 60, 3, false, 1);
    let net = dir.join("net.toml");
    write_net(&net, 3);
    let out = dir.join("out");
    let common = |extra: &[&str]| {
        let mut a = vec![
            "train",
            net.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--device",
            "cpu",
            "--batch",
            "20",
            "--mode",
            "ideal",
            "--out",
            out.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        neuropart(&a)
    };
    let (ok, _, err) = common(&["--epochs", "1"]);
    assert!(ok, "{err}");
    let ck = out.join("checkpoint.json");
    let good = std::fs::read_to_string(&ck).unwrap();
    // Learning rates that are not numbers above 0 are refused before anything runs.
    for lr in ["nan", "inf", "-5", "0"] {
        let (ok, _, err) = common(&["--epochs", "2", "--resume", "--lr", lr]);
        assert!(
            !ok && err.contains("--lr") && err.contains(lr),
            "{lr}: {err}"
        );
    }
    // Training whose loss overflows (here a readout scale of 1e38: the score's fourth power
    // is infinite): stopped at the first non-finite loss, naming epoch and batch; the
    // checkpoint of epoch 1 is still there, unchanged and loadable.
    let sub = Substrate::bss2();
    let train = neuropart::data::load_idx_dir(&data).unwrap().0;
    let e = neuropart::experiment::train_and_report(
        Network::load(&net, &sub).unwrap(),
        &Setup::new(12, Mode::Ideal),
        &CpuBackend,
        TrainConfig {
            epochs: 2,
            batch: 20,
            readout_scale: 1e38,
            ..Default::default()
        },
        &train,
        &train,
        &out,
        true,
        &neuropart::comm::Single,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Diverged {
                epoch: 2,
                batch: 1,
                ..
            }
        ) && e
            .to_string()
            .contains("training diverged in epoch 2, batch 1: the loss is inf"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&ck).unwrap(), good);
    assert_eq!(neuropart::Checkpoint::load(&ck).unwrap().epoch, 1);
    // A checkpoint whose optimiser state does not fit is an error on resume, not a panic.
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["adam"]["m"][0].as_array_mut().unwrap().pop();
    std::fs::write(&ck, v.to_string()).unwrap();
    let (ok, _, err) = common(&["--epochs", "2", "--resume"]);
    assert!(
        !ok && err.contains("checkpoint.json")
            && err.contains("first moments of projection 'input->hidden'")
            && err.contains("191 values for 192 weights"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn zero_steps_and_out_of_range_options_are_errors_not_panics() {
    let net = "examples/networks/mnist.toml";
    let cases: [(&[&str], &str); 11] = [
        (&["train", net, "--steps", "0"], "--steps"),
        (
            &["eval", net, "--steps", "0", "--checkpoint", "x.json"],
            "--steps",
        ),
        (&["bench", "--device", "cpu", "--steps", "0"], "--steps"),
        (
            &["bench", "--device", "cpu", "--seconds", "nan"],
            "--seconds",
        ),
        (
            &["bench", "--device", "cpu", "--seconds", "inf"],
            "--seconds",
        ),
        (
            &["bench", "--device", "cpu", "--seconds", "-1"],
            "--seconds",
        ),
        (&["bench", "--device", "cpu", "--batch", "0"], "--batch"),
        (&["bench", "--device", "cpu", "--density", "2"], "--density"),
        (&["plan", net, "--chips", "0"], "--chips"),
        (&["train", net, "--epochs", "0"], "--epochs"),
        (&["train", net, "--batch", "0"], "--batch"),
    ];
    for (args, option) in cases {
        let (ok, out, err) = neuropart(args);
        assert!(!ok, "{args:?} succeeded: {out}");
        assert!(
            err.contains(option) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    // The library refuses zero steps as well (the examples build networks this way).
    let e = neuropart::mnist_network(1)
        .with_steps(0)
        .build(&Substrate::bss2())
        .unwrap_err()
        .to_string();
    assert!(e.contains("steps") && e.contains("0 steps"), "{e}");
}

#[test]
fn any_idx_set_trains_and_its_classes_are_checked_against_the_readout() {
    let dir = temp("idx");
    // Gzipped, as Fashion-MNIST is distributed; no MD5 check applies to the user's files.
    write_idx(&dir, 40, 3, true, 2);
    let (train, test) = neuropart::data::load_idx_dir(&dir).unwrap();
    assert_eq!((train.classes, test.len(), train.shape), (3, 40, [1, 4, 4]));
    let net_file = dir.join("net.toml");
    write_net(&net_file, 2);
    let (ok, _, err) = neuropart(&[
        "train",
        net_file.to_str().unwrap(),
        "--data",
        dir.to_str().unwrap(),
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        dir.join("out").to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("population 'out'")
            && err.contains("2 neurons")
            && err.contains("3 classes"),
        "{err}"
    );
    // A truncated file in a user's folder: the sizes, and no advice to fetch anything.
    let f = dir.join("t10k-images-idx3-ubyte.gz");
    std::fs::remove_file(&f).unwrap();
    let mut img = vec![0u8, 0, 8, 3];
    img.extend(40u32.to_be_bytes());
    img.extend(4u32.to_be_bytes());
    img.extend(4u32.to_be_bytes());
    img.extend(vec![0u8; 100]);
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), img).unwrap();
    let e = neuropart::data::load_idx_dir(&dir).unwrap_err().to_string();
    assert!(
        e.contains("t10k-images-idx3-ubyte")
            && e.contains("need 656 bytes")
            && !e.contains("fetch"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn tiny_data(n: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for k in 0..n {
        let c = k % 3;
        for p in 0..16 {
            pixels.push(if p % 3 == c || rng.uniform() < 0.1 {
                0.9
            } else {
                0.0
            });
        }
        labels.push(c as u8);
    }
    Dataset {
        shape: [1, 4, 4],
        pixels,
        labels,
        classes: 3,
    }
}

#[test]
fn resume_continues_to_the_requested_epochs_and_refuses_what_cannot_change() {
    let dir = temp("resume");
    let data = tiny_data(40, 1);
    let net_file = dir.join("net.toml");
    write_net(&net_file, 3);
    let sub = Substrate::bss2();
    let net = Network::load(&net_file, &sub).unwrap();
    let setup = Setup::new(12, Mode::Ideal);
    let cfg = |epochs, seed, batch| TrainConfig {
        epochs,
        seed,
        batch,
        ..Default::default()
    };
    let out = dir.join("out");
    let train = |c: TrainConfig, resume| {
        neuropart::experiment::train_and_report(
            net.clone(),
            &setup,
            &CpuBackend,
            c,
            &data,
            &data,
            &out,
            resume,
            &neuropart::comm::Single,
        )
    };
    assert_eq!(train(cfg(2, 1, 20), false).unwrap().history.len(), 2);
    // Asking for 4 epochs continues with epochs 3 and 4.
    let t = train(cfg(4, 1, 20), true).unwrap();
    assert_eq!(
        t.history.iter().map(|r| r.epoch).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let e = train(cfg(4, 1, 20), true).unwrap_err().to_string();
    assert!(e.contains("4 epochs done") && e.contains("--epochs"), "{e}");
    let e = train(cfg(6, 2, 20), true).unwrap_err().to_string();
    assert!(e.contains("--seed 1") && e.contains("says 2"), "{e}");
    let e = train(cfg(6, 1, 10), true).unwrap_err().to_string();
    assert!(e.contains("--batch 20") && e.contains("says 10"), "{e}");
    // What may change is said: here the readout's score scale.
    let exec = setup.executor(net.clone()).unwrap();
    let scaled = TrainConfig {
        readout_scale: 6.0,
        ..cfg(6, 1, 20)
    };
    let mut t = Trainer::new(exec, scaled).unwrap();
    let said = t.resume(&out.join("checkpoint.json")).unwrap().join("\n");
    assert!(
        said.contains("readout score scale: 6 from now on") && said.contains("trained with 3)"),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_silent_hidden_layer_is_reported_with_what_usually_helps() {
    let sub = Substrate::bss2();
    let net = NetworkBuilder::new("quiet", 12, 3)
        .input("input", 16)
        .dense(
            "hidden",
            8,
            NeuronParams::default(),
            WeightInit {
                mean: 0.0,
                std: 0.001,
            },
        )
        .readout("out", 3, NeuronParams::default(), WeightInit::default())
        .build(&sub)
        .unwrap();
    let exec = Executor::new(net, &sub, 1, &PartitionOptions::default()).unwrap();
    let mut t = Trainer::new(
        exec,
        TrainConfig {
            batch: 10,
            ..Default::default()
        },
    )
    .unwrap();
    let st = t
        .train_epoch(&CpuBackend, &tiny_data(20, 2), |_, _, _| {})
        .unwrap();
    let w = neuropart::silence_warnings(&t.exec.network, &st, "in epoch 1").join("\n");
    assert!(
        w.contains("population 'hidden' emitted no spikes in 20 of 20 samples in epoch 1")
            && w.contains("larger initial weight")
            && w.contains("lower threshold"),
        "{w}"
    );
}

#[test]
fn weak_outcomes_are_clear() {
    let dir = temp("weak");
    let sub = Substrate::bss2();
    // JSON recognised by an upper-case extension and by its content in a .txt file.
    let json = r#"{"populations": [{"name": "in", "size": 2, "kind": "input"},
                   {"name": "h", "size": 2}], "projections": [{"source": "in", "target": "h"}]}"#;
    for name in ["net.JSON", "net.txt"] {
        std::fs::write(dir.join(name), json).unwrap();
        Network::load(&dir.join(name), &sub).unwrap();
    }
    // A key given twice in JSON.
    let dup = r#"{"populations": [{"name": "in", "size": 2, "kind": "input", "size": 3}]}"#;
    std::fs::write(dir.join("dup.json"), dup).unwrap();
    let e = Network::load(&dir.join("dup.json"), &sub)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("dup.json") && e.contains("\"size\" is given twice"),
        "{e}"
    );
    // A run limited by input_channels_per_run says so.
    let mut narrow = Substrate::bss2();
    narrow.input_channels_per_run = 1;
    let net = NetworkBuilder::new("n", 10, 0)
        .input("in", 4)
        .dense("h", 2, NeuronParams::default(), WeightInit::default())
        .build(&narrow)
        .unwrap();
    let e = Plan::new(&net, &narrow, &PartitionOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("input_channels_per_run = 1") && e.contains("4 distinct"),
        "{e}"
    );
    // An unknown WGPU_BACKEND is named (and the loader's XDG_RUNTIME_DIR noise is gone).
    let out = Command::new(env!("CARGO_BIN_EXE_neuropart"))
        .args(["bench", "--device", "gpu", "--batch", "4", "--steps", "5"])
        .env("WGPU_BACKEND", "bogus")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("WGPU_BACKEND=bogus")
            && !err.contains("XDG_RUNTIME_DIR"),
        "{err}"
    );
    // An output folder that cannot be created fails before training starts.
    std::fs::write(dir.join("file"), "").unwrap();
    let (ok, _, err) = neuropart(&[
        "train",
        "examples/networks/mnist.toml",
        "--out",
        dir.join("file/out").to_str().unwrap(),
        "--data",
        dir.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("file/out") && !err.contains("epoch"),
        "{err}"
    );
    // EuroSAT: a class with no usable image, and --per-class 0.
    let es = dir.join("eurosat");
    neuropart::data::write_synthetic_eurosat(&es, 2, 1).unwrap();
    for f in std::fs::read_dir(es.join("River")).unwrap() {
        std::fs::write(f.unwrap().path(), b"not a jpeg").unwrap();
    }
    let e = neuropart::data::eurosat(&es, None, neuropart::data::OnBadImage::Skip)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("River") && e.contains("none of the images"),
        "{e}"
    );
    let e = neuropart::data::eurosat(&es, Some(0), neuropart::data::OnBadImage::Skip)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--per-class") && e.contains("at least 1"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
    // The error type says which errors are about what the user gave.
    assert!(Error::option("--lr", -1, "above 0").is_user_error());
}

/// A network `in[a] -> hidden[b] -> out[c]` as TOML (dense, drawn weights, 12 steps).
fn layers(a: usize, b: usize, c: usize) -> String {
    format!(
        "name = \"layers\"\nsteps = 12\n\
         [[populations]]\nname = \"in\"\nsize = {a}\nkind = \"input\"\n\
         [[populations]]\nname = \"hidden\"\nsize = {b}\n\
         [[populations]]\nname = \"out\"\nsize = {c}\nkind = \"readout\"\n\
         [[projections]]\nsource = \"in\"\ntarget = \"hidden\"\n\
         [[projections]]\nsource = \"hidden\"\ntarget = \"out\"\n"
    )
}

/// A checkpoint (untrained) of `net_file`'s network, written to `ck`.
fn save_checkpoint(net_file: &Path, ck: &Path) {
    let net = Network::load(net_file, &Substrate::bss2()).unwrap();
    let exec = Setup::new(12, Mode::Ideal).executor(net).unwrap();
    Trainer::new(exec, TrainConfig::default())
        .unwrap()
        .save(ck)
        .unwrap();
}

#[test]
fn checkpoints_are_always_readable_and_refuse_another_network() {
    let dir = temp("fingerprint");
    let sub = Substrate::bss2();
    let (a, b) = (dir.join("a.toml"), dir.join("b.toml"));
    // 16 -> 8 -> 4 and 8 -> 16 -> 2: the same weight counts (128 and 32), names and kinds.
    std::fs::write(&a, layers(16, 8, 4)).unwrap();
    std::fs::write(&b, layers(8, 16, 2)).unwrap();
    let ck = dir.join("ck.json");
    save_checkpoint(&a, &ck);
    let text = std::fs::read_to_string(&ck).unwrap();
    assert!(!text.contains("null") && !text.contains("NaN"), "{text}");
    let loaded = neuropart::Checkpoint::load(&ck).unwrap();
    let mut other = Network::load(&b, &sub).unwrap();
    let e = loaded
        .apply_weights(&mut other, &ck)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ck.json")
            && e.contains("another network")
            && e.contains("population #0")
            && e.contains("'in' (16 neurons, input)")
            && e.contains("'in' (8 neurons, input)"),
        "{e}"
    );
    // The same through the command line: eval, export and run refuse it, naming the difference.
    let (ok, _, err) = neuropart(&[
        "export",
        b.to_str().unwrap(),
        "--checkpoint",
        ck.to_str().unwrap(),
        "-o",
        dir.join("b-trained.toml").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("'in' (16 neurons, input)"), "{err}");
    assert!(!dir.join("b-trained.toml").exists());
    // An older checkpoint has no fingerprint and still loads; one written by the Python
    // package before absent values were left out had `null` test results: read as absent.
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_object_mut().unwrap().remove("structure");
    v["history"] = serde_json::json!([{"epoch": 1, "train_loss": 1.2, "train_accuracy": 0.5,
        "test_loss": null, "test_accuracy": null, "hidden_spikes": 3.0, "seconds": 1.0,
        "samples_per_s": 10.0}]);
    v["epoch"] = 1.into();
    std::fs::write(&ck, v.to_string()).unwrap();
    let old = neuropart::Checkpoint::load(&ck).unwrap();
    assert_eq!(old.history[0].test_loss, None);
    old.apply_weights(&mut Network::load(&a, &sub).unwrap(), &ck)
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn export_and_train_never_overwrite_a_checkpoint_they_did_not_write() {
    let dir = temp("overwrite");
    let net = dir.join("net.toml");
    write_net(&net, 3);
    let ck = dir.join("ck.json");
    save_checkpoint(&net, &ck);
    let good = std::fs::read(&ck).unwrap();
    // -o naming the checkpoint (also through another spelling of the path) or the network.
    let other_spelling = dir.join(".").join("ck.json");
    for out in [&ck, &other_spelling, &net] {
        let (ok, _, err) = neuropart(&[
            "export",
            net.to_str().unwrap(),
            "--checkpoint",
            ck.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(
            !ok && err.contains("--output") && err.contains("it reads"),
            "{err}"
        );
    }
    assert_eq!(std::fs::read(&ck).unwrap(), good);
    // train --out over a folder holding a checkpoint: refused without --resume or --force.
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_idx(&data, 40, 3, false, 1);
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("checkpoint.json"), &good).unwrap();
    let train = |extra: &[&str]| {
        let mut a = vec![
            "train",
            net.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--device",
            "cpu",
            "--mode",
            "ideal",
            "--batch",
            "20",
            "--epochs",
            "1",
            "--out",
            out.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        neuropart(&a)
    };
    let (ok, _, err) = train(&[]);
    assert!(
        !ok && err.contains("checkpoint.json")
            && err.contains("--resume")
            && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(out.join("checkpoint.json")).unwrap(), good);
    let (ok, _, err) = train(&["--force"]);
    assert!(ok, "{err}");
    let ck = neuropart::Checkpoint::load(&out.join("checkpoint.json")).unwrap();
    assert_eq!(ck.epoch, 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn flat_images_are_not_rotated() {
    let net = Network::from_str(
        &layers(16, 8, 3),
        Format::Toml,
        Path::new("flat.toml"),
        &Substrate::bss2(),
    )
    .unwrap();
    let exec = Setup::new(12, Mode::Ideal).executor(net).unwrap();
    let mut data = tiny_data(20, 1);
    data.shape = [1, 1, 16];
    let mut t = Trainer::new(exec, TrainConfig::default()).unwrap();
    let e = t
        .train_epoch(&CpuBackend, &data, |_, _, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[1, 1, 16]") && e.contains("augmentation"),
        "{e}"
    );
    t.cfg.augment = false;
    t.train_epoch(&CpuBackend, &data, |_, _, _| {}).unwrap();
}

#[test]
fn projection_names_are_unique() {
    let e = net_err(&format!(
        "{TWO_POPS}[[projections]]\nsource = \"in\"\ntarget = \"h\"\n\
         [[projections]]\nsource = \"in\"\ntarget = \"h\"\nsign = \"inhibitory\"\n"
    ));
    assert!(
        e.contains("projection 'in->h'") && e.contains("#0 and #1"),
        "{e}"
    );
    // Named apart, the same pair of populations is fine.
    Network::from_str(
        &format!(
            "{TWO_POPS}[[projections]]\nsource = \"in\"\ntarget = \"h\"\n\
             [[projections]]\nname = \"inh\"\nsource = \"in\"\ntarget = \"h\"\n\
             sign = \"inhibitory\"\n"
        ),
        Format::Toml,
        Path::new("ok.toml"),
        &Substrate::bss2(),
    )
    .unwrap();
}

#[test]
fn several_seeds_train_apart_and_their_spread_is_reported() {
    let dir = temp("seeds");
    write_idx(&dir, 60, 3, false, 4);
    let net_file = dir.join("net.toml");
    write_net(&net_file, 3);
    let out = dir.join("out");
    let run = |extra: &[&str], out: &Path| {
        let mut args = vec![
            "train",
            net_file.to_str().unwrap(),
            "--data",
            dir.to_str().unwrap(),
            "--epochs",
            "2",
            "--batch",
            "20",
            "--device",
            "cpu",
            "--mode",
            "ideal",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        neuropart(&args)
    };
    let (ok, stdout, err) = run(&["--seeds", "3", "--seed", "5"], &out);
    assert!(ok, "{err}");
    // One folder per seed, and one CSV row per seed and epoch.
    for s in 5..8 {
        assert!(
            out.join(format!("seed-{s}/checkpoint.json")).exists(),
            "seed {s}"
        );
    }
    let csv = std::fs::read_to_string(out.join("seeds.csv")).unwrap();
    let rows: Vec<Vec<String>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    assert_eq!(rows.len(), 6, "{csv}");
    // The summary, recomputed here from the CSV's final epochs.
    let finals: Vec<f64> = rows
        .iter()
        .filter(|r| r[1] == "2")
        .map(|r| 100.0 * r[5].parse::<f64>().unwrap())
        .collect();
    let mean = finals.iter().sum::<f64>() / 3.0;
    let sd = (finals.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
    let min = finals.iter().copied().fold(f64::INFINITY, f64::min);
    let expect =
        format!("over 3 seeds: test accuracy mean {mean:.2}%, sd {sd:.2} points, min {min:.2}%");
    assert!(stdout.contains(&expect), "{expect} in {stdout}");
    // A seed trained alone gives what it gave among the others (deterministic per seed).
    let alone = dir.join("alone");
    let (ok, stdout, err) = run(&["--seed", "6"], &alone);
    assert!(ok, "{err}");
    let six = rows.iter().find(|r| r[0] == "6" && r[1] == "2").unwrap();
    let expect = format!(
        "test accuracy {:.2}%",
        100.0 * six[5].parse::<f64>().unwrap()
    );
    assert!(stdout.contains(&expect), "{expect} in {stdout}");
    // Early stopping on held-out training images: the best-validation epoch is kept (its
    // checkpoint in best.json), its test accuracy reported, and curves.csv marks it.
    let held = dir.join("held-out");
    let (ok, stdout, err) = run(&["--seed", "6", "--val-samples", "20"], &held);
    assert!(ok, "{err}");
    let best = neuropart::Checkpoint::load(&held.join("best.json")).unwrap();
    assert!(
        stdout.contains(&format!("weights of epoch {} of 2", best.epoch)),
        "{stdout}"
    );
    let curves = std::fs::read_to_string(held.join("curves.csv")).unwrap();
    let selected: Vec<&str> = curves
        .lines()
        .skip(1)
        .filter(|l| l.ends_with(",1"))
        .collect();
    assert_eq!(selected.len(), 1, "{curves}");
    assert!(selected[0].starts_with(&format!("{},", best.epoch)));
    // An earlier seed's checkpoint is not overwritten without --force.
    let (ok, _, err) = run(&["--seeds", "2", "--seed", "6"], &out);
    assert!(
        !ok && err.contains("seed-6") && err.contains("--force"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn train_rows_feeds_images_row_by_row_and_its_checkpoint_evaluates_so() {
    // 4x4 images, a row every 2 steps: 4 inputs (the width) and at least 8 steps.
    let dir = temp("rows");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_idx(&data, 60, 3, false, 2);
    let net = dir.join("net.toml");
    write_net(&net, 3);
    let rows_net = dir.join("rows.toml");
    let text = std::fs::read_to_string(&net)
        .unwrap()
        .replacen("size = 16", "size = 4", 1);
    std::fs::write(&rows_net, text).unwrap();
    let out = dir.join("out");
    let train = |network: &Path, extra: &[&str]| {
        let mut a = vec![
            "train",
            network.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--device",
            "cpu",
            "--batch",
            "20",
            "--mode",
            "ideal",
            "--epochs",
            "1",
            "--force",
            "--out",
            out.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        neuropart(&a)
    };
    let (ok, _, err) = train(&rows_net, &["--rows", "2"]);
    assert!(ok, "{err}");
    let ck: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("checkpoint.json")).unwrap())
            .unwrap();
    let enc = &ck["config"]["encoding"];
    assert_eq!(
        (enc["type"].as_str(), enc["steps_per_row"].as_u64()),
        (Some("rows"), Some(2)),
        "{enc}"
    );
    // The checkpoint evaluates with the encoding it was trained with.
    let ck_path = out.join("checkpoint.json");
    let (ok, text, err) = neuropart(&[
        "eval",
        rows_net.to_str().unwrap(),
        "--checkpoint",
        ck_path.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--device",
        "cpu",
        "--mode",
        "ideal",
    ]);
    assert!(ok && text.contains("accuracy"), "{text} {err}");
    // Pixels per input: the 16-input network does not fit rows of 4, and 12 steps do not
    // hold 4 rows of 4 steps; both refused naming the numbers.
    let (ok, _, err) = train(&net, &["--rows", "2"]);
    assert!(
        !ok && err.contains("16 neurons") && err.contains("4 inputs"),
        "{err}"
    );
    let (ok, _, err) = train(&rows_net, &["--rows", "4"]);
    assert!(
        !ok && err.contains("12 steps") && err.contains("16"),
        "{err}"
    );
    let (ok, _, err) = train(&rows_net, &["--rows", "0"]);
    assert!(!ok && err.contains("--rows"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

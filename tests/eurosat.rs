//! EuroSAT: the loader on generated folders (good and bad), the partitioning of the
//! convolutional network, and a short training in all three modes on the software GPU adapter.

use neuropart::data::{
    eurosat, stratified_split, write_synthetic_eurosat, OnBadImage, EUROSAT_CLASSES,
};
use neuropart::gpu::GpuBackend;
use neuropart::prelude::*;
use neuropart::Mode;
use neuropart::TrainConfig;
use std::path::{Path, PathBuf};

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("np-eurosat-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn loader_reads_the_layout_and_reports_bad_folders_and_images() {
    let dir = temp("loader");
    write_synthetic_eurosat(&dir, 6, 3).unwrap();
    let d = eurosat(&dir, None, OnBadImage::Fail).unwrap();
    assert_eq!((d.len(), d.shape, d.classes), (60, [3, 64, 64], 10));
    assert_eq!(d.labels.iter().filter(|&&l| l == 9).count(), 6);
    assert!(d.pixels.iter().all(|v| (0.0..=1.0).contains(v)));
    let (tr, va, te) = stratified_split(&d, 0.2, 0.2, 1);
    assert_eq!((tr.len(), va.len(), te.len()), (40, 10, 10));
    for c in 0..10u8 {
        assert_eq!(
            te.labels.iter().filter(|&&l| l == c).count(),
            1,
            "stratified"
        );
    }
    let (tr2, _, _) = stratified_split(&d, 0.2, 0.2, 1);
    assert_eq!(tr.labels, tr2.labels, "reproducible");

    // A corrupt and a wrongly sized image: skipped with a warning, or an error naming them.
    std::fs::write(dir.join("Forest/broken.jpg"), b"not a jpeg").unwrap();
    image::RgbImage::new(32, 32)
        .save(dir.join("River/small.jpg"))
        .unwrap();
    assert_eq!(eurosat(&dir, None, OnBadImage::Skip).unwrap().len(), 60);
    let e = eurosat(&dir, None, OnBadImage::Fail)
        .unwrap_err()
        .to_string();
    assert!(e.contains("broken.jpg") && e.contains("decode"), "{e}");
    std::fs::remove_file(dir.join("Forest/broken.jpg")).unwrap();
    let e = eurosat(&dir, None, OnBadImage::Fail)
        .unwrap_err()
        .to_string();
    assert!(e.contains("small.jpg") && e.contains("32x32"), "{e}");

    // An unknown class folder, a missing one, no folder at all.
    std::fs::create_dir_all(dir.join("Glacier")).unwrap();
    let e = eurosat(&dir, None, OnBadImage::Skip)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown class folder 'Glacier'"), "{e}");
    std::fs::remove_dir_all(dir.join("Glacier")).unwrap();
    std::fs::remove_dir_all(dir.join(EUROSAT_CLASSES[3])).unwrap();
    let e = eurosat(&dir, None, OnBadImage::Skip)
        .unwrap_err()
        .to_string();
    assert!(e.contains("'Highway' is missing"), "{e}");
    let e = eurosat(&dir.join("nope"), None, OnBadImage::Skip)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not found"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

fn eurosat_net() -> (Network, Substrate) {
    let sub = Substrate::load(Path::new("examples/networks/eurosat-substrate.toml")).unwrap();
    let net = Network::load(Path::new("examples/networks/eurosat.toml"), &sub).unwrap();
    (net, sub)
}

#[test]
fn the_convolutional_network_is_partitioned_like_fig_3b() {
    let (net, sub) = eurosat_net();
    let plan = Plan::new(&net, &sub, &PartitionOptions::default()).unwrap();
    let conv: Vec<_> = plan
        .partitions
        .iter()
        .filter(|p| p.parts[0].neurons.population == 1)
        .collect();
    // The first layer runs in several parts, each reading at most 2048 input channels; its
    // neurons (27 signed inputs) take one circuit each.
    assert!(conv.len() >= 4, "{} conv runs", conv.len());
    for p in &conv {
        assert!(p.channel_count() <= 2048);
        assert_eq!(p.parts[0].circuits_per_neuron, 1);
        assert_eq!(p.parts[0].rows_per_neuron, 54);
    }
    // The dense layer joins four circuits per neuron and takes one run; then the readout.
    let hidden = &plan.partitions[conv.len()];
    assert_eq!(
        (hidden.parts[0].circuits_per_neuron, hidden.neuron_count()),
        (4, 128)
    );
    assert_eq!(plan.partitions.len(), conv.len() + 2);
    // Every conv neuron's synapses come from its 3x3x3 receptive field.
    let mut fan_in = vec![0; 512];
    net.for_each_synapse(0, 0..512, |_, post, _| fan_in[post] += 1)
        .unwrap();
    assert!(fan_in.iter().all(|&f| f <= 27) && fan_in.iter().filter(|&&f| f == 27).count() > 400);
    // Without the traffic limit the whole layer fits one run.
    let free = Plan::new(&net, &Substrate::bss2(), &PartitionOptions::default()).unwrap();
    assert_eq!(free.partitions.len(), 3);
}

#[test]
fn short_training_beats_chance_in_all_three_modes_on_the_gpu_adapter() {
    let backend: Box<dyn Backend> = match GpuBackend::new() {
        Ok(g) => Box::new(g),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("no GPU adapter ({e}); running on the CPU");
            Box::new(CpuBackend)
        }
        Err(e) => panic!("CI is set but no GPU adapter is usable: {e}"),
    };
    let dir = temp("train");
    write_synthetic_eurosat(&dir, 24, 5).unwrap();
    let data = eurosat(&dir, None, OnBadImage::Fail).unwrap();
    let (train, val, test) = stratified_split(&data, 0.15, 0.25, 2);
    let (net, sub) = eurosat_net();
    // The spike-count regulariser of the MNIST set-up (count⁴) is far too strong for a
    // convolutional layer that spikes many times per sample: switched off here.
    let cfg = TrainConfig {
        epochs: 6,
        batch: 20,
        lr: 0.004,
        augment: false,
        reg_spikes: 0.0,
        ..Default::default()
    };
    let out = dir.join("out");
    let setup = neuropart::experiment::Setup {
        substrate: sub,
        ..neuropart::experiment::Setup::new(30, Mode::Ideal)
    };
    let summary = neuropart::experiment::compare_modes(
        &net,
        &setup,
        &[Mode::Ideal, Mode::Emulated, Mode::Mixed],
        &*backend,
        cfg,
        &train,
        &val,
        &test,
        &out,
        &neuropart::comm::Single,
    )
    .unwrap();
    eprintln!("{summary}");
    let csv = std::fs::read_to_string(out.join("fig4.csv")).unwrap();
    for mode in ["ideal", "emulated", "mixed"] {
        let last = csv.lines().rfind(|l| l.starts_with(mode)).unwrap();
        let cols: Vec<f64> = last
            .split(',')
            .skip(1)
            .map(|c| c.parse().unwrap())
            .collect();
        let (first_loss, val_acc) = (
            csv.lines()
                .find(|l| l.starts_with(mode))
                .unwrap()
                .split(',')
                .nth(2)
                .unwrap()
                .parse::<f64>()
                .unwrap(),
            cols[4],
        );
        assert!(
            val_acc >= 0.25,
            "{mode}: validation accuracy {val_acc} (chance 0.1)"
        );
        assert!(cols[1] < first_loss, "{mode}: training loss must fall");
    }
    assert!(image::open(out.join("fig4.png")).is_ok());
    let _ = std::fs::remove_dir_all(dir);
}

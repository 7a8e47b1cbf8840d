//! One training experiment end to end, shared by the examples and `neuropart train`: partition
//! and emulate the network, train with progress bars, evaluate after every epoch, and write
//! the CSV of the curves, their PNG, a checkpoint (atomically) and a PNG of one test sample
//! like the paper's Fig. 2C. Presentation and orchestration only; the maths lives in `train`.

use crate::backend::Backend;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::io::plot::{PanelContent, SamplePanels};
use crate::model::analog::{AnalogConfig, Mode};
use crate::model::network::PopulationKind;
use crate::model::substrate::Substrate;
use crate::model::system::LinkStats;
use crate::plan::partition::PartitionOptions;
use crate::run::executor::Executor;
use crate::train::{silence_warnings, EpochRecord, TrainConfig, Trainer};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

/// How an experiment partitions and emulates a network.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The chip.
    pub substrate: Substrate,
    /// Time steps per sample.
    pub steps: u32,
    /// Which partitions run emulated.
    pub mode: Mode,
    /// The analog effects of emulated partitions.
    pub analog: AnalogConfig,
    /// Chips: partitions of a wave that run at the same time.
    pub chips: usize,
    /// How the network is cut.
    pub partition: PartitionOptions,
    /// Processes the runs are spread over by chips, and this one's index ([`Executor::distribute`]);
    /// `(1, 0)`: not spread.
    pub ranks: (usize, usize),
}

impl Setup {
    /// BrainScaleS-2, `steps` steps, `mode`, the default analog effects, one chip.
    pub fn new(steps: u32, mode: Mode) -> Self {
        Setup {
            substrate: Substrate::bss2(),
            steps,
            mode,
            analog: AnalogConfig::default(),
            chips: 1,
            partition: PartitionOptions::default(),
            ranks: (1, 0),
        }
    }

    /// Partition, schedule, compile and emulate `net` as this set-up says.
    pub fn executor(&self, mut net: crate::model::network::Network) -> Result<Executor> {
        net.steps = self.steps;
        Executor::emulated_on_ranks(
            net,
            &self.substrate,
            self.chips,
            &self.partition,
            self.analog.clone(),
            self.mode,
            self.ranks,
        )
    }
}

/// Partition and emulate `net` as `setup` says, train it on `train` for `cfg.epochs` epochs
/// on `backend`, evaluate on `test` after every epoch, and write everything under `out`
/// (checked to be writable first): the checkpoint after every epoch (atomically; a diverged
/// run stops before overwriting the last good one), the CSV and PNG of the curves, and a PNG of
/// one test sample. Warnings (silent populations) go to stderr. With `resume`, continues from
/// `out/checkpoint.json` up to `cfg.epochs`. With `cfg.keep_best` (`test` is then a
/// validation set), `out/best.json` is the checkpoint of the best epoch so far and the
/// trainer returned holds its weights ([`Trainer::restore_best`]); else the last epoch's.
/// `curves.csv` marks the epoch whose weights it ends with. Returns the trainer (history
/// included).
#[allow(clippy::too_many_arguments)]
pub fn train_and_report(
    net: crate::model::network::Network,
    setup: &Setup,
    backend: &dyn Backend,
    cfg: TrainConfig,
    train: &Dataset,
    test: &Dataset,
    out: &Path,
    resume: bool,
    comm: &dyn crate::dist::comm::Communicator,
) -> Result<Trainer> {
    cfg.validate()?;
    // Several processes train together: the first alone reports and writes.
    let lead = comm.leads();
    if lead {
        crate::files::check_writable(out)?;
    }
    let steps = setup.steps;
    let exec = setup.executor(net)?;
    let mut trainer = Trainer::new(exec, cfg)?;
    trainer.check_data(train)?;
    trainer.check_data(test)?;
    if train.is_empty() {
        return Err(Error::Dataset {
            path: out.to_path_buf(),
            problem: "no training samples".into(),
        });
    }
    let exec = &trainer.exec;
    for w in exec.warnings.iter().filter(|_| lead) {
        eprintln!("warning: {w}");
    }
    if lead {
        eprintln!(
            "{}: {} partitions in {} rounds ({} emulated, {}), {} training and {} test \
         samples, T = {steps}, on {}",
            exec.network.name,
            exec.plan.partitions.len(),
            exec.schedule.rounds.len(),
            exec.emulation
                .as_ref()
                .map_or(0, |e| e.emulated.iter().filter(|&&x| x).count()),
            match &exec.plan.substrate.system {
                Some(s) => format!("a system of {} chips", s.chips),
                None if setup.chips == 1 => "1 chip".into(),
                None => format!("{} chips", setup.chips),
            },
            train.len(),
            test.len(),
            backend.name()
        );
        let mem = crate::train::TrainMemory::of(exec, backend.records_codes());
        let batch = trainer.cfg.batch;
        // This process's share of a batch, in pieces where the backward pass runs on the host.
        let shard = Trainer::batch_shard(batch, comm).len();
        let pieces = match trainer.device_training(backend) {
            Some(_) => 1,
            None => trainer.pieces(shard.div_ceil(crate::train::backward::GRAD_CHUNK), backend),
        };
        eprintln!(
            "training memory: {} per sample ({} neurons x {} steps of membranes and gradients{}), \
             {} per batch of {batch}{}",
            crate::error::human_bytes(mem.per_sample()),
            mem.neurons,
            mem.steps,
            match mem.coded {
                0 => String::new(),
                n => format!("; the membranes of {n} as the CADC's 8-bit codes"),
            },
            crate::error::human_bytes(mem.per_sample() * batch as u64),
            if pieces > 1 {
                format!(
                    ", run in {pieces} pieces one after another to stay within the memory \
                     limit of {}",
                    crate::error::human_bytes(trainer.memory_budget())
                )
            } else {
                String::new()
            }
        );
        if let Some(s) = trainer.exec.share() {
            let mine = s.owner.iter().filter(|&&o| o == s.rank).count();
            if comm.chips().is_some() {
                eprintln!(
                    "training in {} groups of {} processes: the groups share out every batch of \
                     {}, the processes of a group the chips (each holds and runs {mine} of the {} \
                     partitions)",
                    comm.size(),
                    s.ranks,
                    trainer.cfg.batch,
                    s.owner.len()
                );
            } else {
                eprintln!(
                    "training in {} processes sharing the chips (each holds and runs {mine} of \
                     the {} partitions, every sample; the backward pass on each)",
                    s.ranks,
                    s.owner.len()
                );
            }
        } else if comm.size() > 1 {
            eprintln!(
                "training in {} processes (each a shard of every batch of {})",
                comm.size(),
                trainer.cfg.batch
            );
            if trainer.device_training(backend).is_some() {
                eprintln!(
                    "across processes the forward pass runs on each process's GPU, the backward \
                     pass and the step on the host (the weights are those of one process on the \
                     CPU; training entirely on the GPU is for one process)"
                );
            }
        }
    }
    let ck = out.join("checkpoint.json");
    let best_ck = out.join("best.json");
    if resume {
        for line in trainer.resume(&ck)? {
            if lead {
                eprintln!("{line}");
            }
        }
        if trainer.cfg.keep_best {
            trainer.best = resumed_best(&trainer, &best_ck)?;
        }
    }
    let style =
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}")
            .expect("valid template")
            .progress_chars("=> ");
    while trainer.epoch < trainer.cfg.epochs {
        let e = trainer.epoch + 1;
        let bar = if lead {
            ProgressBar::new(train.len() as u64)
        } else {
            ProgressBar::hidden()
        }
        .with_style(style.clone())
        .with_prefix(format!("epoch {e}/{}", trainer.cfg.epochs));
        let t0 = Instant::now();
        let first = trainer.epoch == 0;
        let net = trainer.exec.network.clone();
        let mut warned = false;
        let st = trainer.train_epoch_in(backend, comm, train, |done, _, s| {
            bar.set_position(done as u64);
            bar.set_message(format!(
                "loss {:.3} acc {:.1}%",
                s.mean_loss(),
                100.0 * s.accuracy()
            ));
            if first && !warned {
                warned = true;
                for w in silence_warnings(&net, s, "in the first batch") {
                    bar.println(format!("warning: {w}"));
                }
            }
        })?;
        bar.finish_and_clear();
        let seconds = t0.elapsed().as_secs_f64();
        if lead {
            for w in silence_warnings(&trainer.exec.network, &st, &format!("in epoch {e}")) {
                eprintln!("warning: {w}");
            }
        }
        let ev = trainer.evaluate_in(backend, comm, test, 500)?;
        let rec = EpochRecord {
            epoch: e,
            train_loss: st.mean_loss(),
            train_accuracy: st.accuracy(),
            test_loss: Some(ev.mean_loss()),
            test_accuracy: Some(ev.accuracy()),
            hidden_spikes: st.hidden_spikes / st.samples.max(1) as f64,
            seconds,
            samples_per_s: st.samples as f64 / seconds,
        };
        trainer.record(rec.clone());
        if !lead {
            continue;
        }
        eprintln!(
            "epoch {e}: train loss {:.4} acc {:.2}% | test loss {:.4} acc {:.2}% | {:.1} hidden spikes/sample | {:.0} samples/s",
            rec.train_loss,
            100.0 * rec.train_accuracy,
            ev.mean_loss(),
            100.0 * ev.accuracy(),
            rec.hidden_spikes,
            rec.samples_per_s
        );
        trainer.save(&ck)?;
        if let Some(b) = trainer.best.as_ref().filter(|b| b.epoch == e) {
            let text = serde_json::to_string(b).expect("checkpoint serialises");
            crate::files::write_atomic(&best_ck, text.as_bytes())?;
        }
        write_csv(
            &trainer.history,
            trainer.selected_epoch(),
            &out.join("curves.csv"),
        )?;
        crate::io::plot::curves(&[("", &trainer.history)], "test", &out.join("curves.png"))?;
    }
    let last = trainer.history.last().and_then(|r| r.test_accuracy);
    if let Some(e) = trainer.restore_best(backend)? {
        if lead && e != trainer.epoch {
            eprintln!(
                "keeping the weights of epoch {e} (best validation accuracy {:.2}%; the last \
                 epoch's was {:.2}%), saved in {}",
                100.0 * trainer.history[e - 1].test_accuracy.unwrap_or(f64::NAN),
                100.0 * last.unwrap_or(f64::NAN),
                best_ck.display()
            );
        }
    }
    // Spread by chips, every process takes part in the sample's run.
    if (lead || trainer.exec.share().is_some()) && !test.is_empty() {
        plot_sample_in(&trainer, backend, test, 0, &out.join("sample.png"), comm)?;
    }
    Ok(trainer)
}

/// The best epoch's checkpoint a resumed training with `keep_best` compares its next epochs
/// with: `path` (which [`train_and_report`] rewrites whenever the best epoch changes), if it
/// is one of this training's epochs; else none (its weights are gone).
fn resumed_best(trainer: &Trainer, path: &Path) -> Result<Option<crate::train::Checkpoint>> {
    if !path.exists() {
        return Ok(None);
    }
    let b = crate::train::Checkpoint::load(path)?;
    b.check_weights(&trainer.exec.network)
        .map_err(|problem| Error::Checkpoint {
            path: path.to_path_buf(),
            problem,
        })?;
    let same = b.config.seed == trainer.cfg.seed
        && b.epoch >= 1
        && b.epoch <= trainer.history.len()
        && b.history.last() == trainer.history.get(b.epoch - 1);
    Ok(same.then_some(b))
}

/// Write the history as CSV, atomically; the column `selected` is 1 on epoch `selected`, the
/// one whose weights the training ended with ([`Trainer::selected_epoch`]), 0 on the others.
pub fn write_csv(history: &[EpochRecord], selected: usize, path: &Path) -> Result<()> {
    let mut s = String::from(
        "epoch,train_loss,train_accuracy,test_loss,test_accuracy,hidden_spikes_per_sample,seconds,samples_per_s,selected\n",
    );
    for r in history {
        let _ = writeln!(
            s,
            "{},{:.3},{:.2},{:.1},{}",
            epoch_fields(r),
            r.hidden_spikes,
            r.seconds,
            r.samples_per_s,
            u8::from(r.epoch == selected)
        );
    }
    crate::files::write_atomic(path, s.as_bytes())
}

/// Trainings of several seeds (seed, history, the epoch whose weights it ended with): one row
/// per seed and epoch, the column `selected` 1 on that epoch, atomically.
pub fn write_seeds_csv(runs: &[(u64, Vec<EpochRecord>, usize)], path: &Path) -> Result<()> {
    let mut s =
        String::from("seed,epoch,train_loss,train_accuracy,test_loss,test_accuracy,selected\n");
    for (seed, history, selected) in runs {
        for r in history {
            let _ = writeln!(
                s,
                "{seed},{},{}",
                epoch_fields(r),
                u8::from(r.epoch == *selected)
            );
        }
    }
    crate::files::write_atomic(path, s.as_bytes())
}

/// Mean, sample standard deviation (0 for one value), minimum and maximum of `values`.
pub fn spread(values: &[f64]) -> (f64, f64, f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let sd = if values.len() > 1 {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean, sd, min, max)
}

/// The test accuracy of every seed's training (seed, accuracy as a fraction), and over seeds
/// its mean, standard deviation, minimum and maximum, as lines for people.
pub fn seeds_summary(finals: &[(u64, f64)]) -> String {
    let mut out = String::new();
    for (s, a) in finals {
        let _ = writeln!(out, "seed {s}: test accuracy {:.2}%", 100.0 * a);
    }
    if finals.is_empty() {
        return out;
    }
    let acc: Vec<f64> = finals.iter().map(|&(_, a)| 100.0 * a).collect();
    let (mean, sd, min, max) = spread(&acc);
    let _ = writeln!(
        out,
        "over {} seeds: test accuracy mean {mean:.2}%, sd {sd:.2} points, min {min:.2}%, max \
         {max:.2}%",
        acc.len()
    );
    out
}

/// The epoch, losses and accuracies of `r` as CSV fields (the columns every curves file has).
fn epoch_fields(r: &EpochRecord) -> String {
    format!(
        "{},{:.6},{:.6},{},{}",
        r.epoch,
        r.train_loss,
        r.train_accuracy,
        csv_value(r.test_loss),
        csv_value(r.test_accuracy)
    )
}

/// A value that may be absent, as a CSV field (empty when absent).
fn csv_value(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v:.6}"))
}

/// One test sample through the partitioned network, one panel per partition run: the input
/// raster, each hidden partition's spikes, and the readout membranes (like Fig. 2C).
pub fn plot_sample(
    trainer: &Trainer,
    backend: &dyn Backend,
    data: &Dataset,
    index: usize,
    path: &Path,
) -> Result<()> {
    plot_sample_in(
        trainer,
        backend,
        data,
        index,
        path,
        &crate::dist::comm::Single,
    )
}

/// [`plot_sample`] by the processes of `comm` together, where the executor is spread over
/// them ([`Executor::run_samples_in`]); the first draws.
pub fn plot_sample_in(
    trainer: &Trainer,
    backend: &dyn Backend,
    data: &Dataset,
    index: usize,
    path: &Path,
    comm: &dyn crate::dist::comm::Communicator,
) -> Result<()> {
    let exec = &trainer.exec;
    let net = &exec.network;
    let steps = net.steps as usize;
    let spikes = crate::spikes::encode::encode_part(
        data,
        &[index],
        net.steps,
        trainer.cfg.encoding,
        None,
        0..1,
    );
    let input = trainer.topo.input();
    let out = exec.run_samples_in(
        backend,
        &[(input, spikes.clone())],
        crate::run::executor::Observe::ReadoutTraces,
        0,
        0,
        comm,
    )?;
    if !comm.leads() {
        return Ok(());
    }
    let mut panels = vec![(
        format!("input ({} channels)", spikes.neurons),
        spikes.neurons,
        PanelContent::Spikes(
            spikes
                .sample(0)
                .iter()
                .map(|e| (e.step as usize, e.neuron as usize))
                .collect(),
        ),
        7,
    )];
    for part in &exec.plan.partitions {
        for r in &part.parts {
            let pop = &net.populations[r.neurons.population];
            let title = format!(
                "run {}: {}[{}..{}]",
                part.id,
                pop.name,
                r.neurons.offset,
                r.neurons.offset + r.neurons.size
            );
            let content = if pop.kind == PopulationKind::Readout {
                let m = out.membrane[r.neurons.population]
                    .as_ref()
                    .expect("readout traces recorded");
                PanelContent::Membranes(
                    r.neurons
                        .range()
                        .map(|c| (0..steps).map(|t| m[t * pop.size + c]).collect())
                        .collect(),
                )
            } else {
                PanelContent::Spikes(
                    out.spikes
                        .get(r.neurons.population)
                        .map(|tr| {
                            tr.sample(0)
                                .iter()
                                .filter(|e| r.neurons.range().contains(&(e.neuron as usize)))
                                .map(|e| (e.step as usize, e.neuron as usize - r.neurons.offset))
                                .collect()
                        })
                        .unwrap_or_default(),
                )
            };
            panels.push((title, r.neurons.size, content, r.neurons.population));
        }
    }
    let shown = panels.len().min(16);
    panels.truncate(shown);
    crate::io::plot::sample(
        &SamplePanels {
            title: format!(
                "test sample {index} (label {}) through {} partition runs",
                data.labels[index],
                exec.plan.partitions.len()
            ),
            steps,
            panels,
        },
        path,
    )
}

/// Train `net` once per mode (each from the same initial weights), validating every epoch, and
/// write one subfolder per mode plus `fig4.png` (accuracy and loss of all modes, train solid,
/// validation dotted, like the paper's Fig. 4) and `fig4.csv`. Returns a text summary with the
/// final test accuracy per mode. The processes of `comm` train together; the first writes.
#[allow(clippy::too_many_arguments)]
pub fn compare_modes(
    net: &crate::model::network::Network,
    setup: &Setup,
    modes: &[Mode],
    backend: &dyn Backend,
    cfg: TrainConfig,
    train: &Dataset,
    val: &Dataset,
    test: &Dataset,
    out: &Path,
    comm: &dyn crate::dist::comm::Communicator,
) -> Result<String> {
    let mut runs = Vec::new();
    for &mode in modes {
        let name = format!("{mode:?}").to_lowercase();
        let t = train_and_report(
            net.clone(),
            &Setup {
                mode,
                ..setup.clone()
            },
            backend,
            cfg.clone(),
            train,
            val,
            &out.join(&name),
            false,
            comm,
        )?;
        let st = t.evaluate_in(backend, comm, test, 200)?;
        runs.push((
            name,
            t.history.clone(),
            st.correct as f64 / st.samples.max(1) as f64,
            t.selected_epoch(),
        ));
    }
    let series: Vec<(&str, &[EpochRecord])> =
        runs.iter().map(|(n, h, ..)| (n.as_str(), &h[..])).collect();
    if comm.leads() {
        crate::io::plot::curves(&series, "validation", &out.join("fig4.png"))?;
    }
    let mut csv =
        String::from("mode,epoch,train_loss,train_accuracy,val_loss,val_accuracy,selected\n");
    let mut summary = String::new();
    for (name, h, acc, selected) in &runs {
        for r in h {
            let _ = writeln!(
                csv,
                "{name},{},{}",
                epoch_fields(r),
                u8::from(r.epoch == *selected)
            );
        }
        let sel = h
            .iter()
            .find(|r| r.epoch == *selected)
            .cloned()
            .unwrap_or_default();
        let _ = writeln!(
            summary,
            "{name:>9}: test accuracy {:.2}% with the weights of epoch {} of {} (validation \
             {:.2}%, train {:.2}%), {:.0} training samples/s",
            100.0 * acc,
            sel.epoch,
            h.len(),
            100.0 * sel.test_accuracy.unwrap_or(f64::NAN),
            100.0 * sel.train_accuracy,
            h.last().map_or(0.0, |r| r.samples_per_s)
        );
    }
    if comm.leads() {
        crate::files::write_atomic(&out.join("fig4.csv"), csv.as_bytes())?;
    }
    Ok(summary)
}

/// [`compare_modes`] over several training seeds: every mode trained once per seed (into
/// `out/seed-S/MODE`), all modes of a seed from the network `net(seed)` (whose initial
/// weights the seed may draw), then per mode the test accuracy's mean, standard deviation, minimum and
/// maximum over the seeds, whether each difference between modes exceeds its spread (twice
/// the standard error of the difference of the means), `out/fig4-seeds.csv` (one row per
/// seed, mode and epoch) and `out/fig4-seeds.png` (mean validation accuracy per mode with its
/// min–max band). Returns the table as text.
#[allow(clippy::too_many_arguments)]
pub fn compare_modes_over_seeds(
    net: &dyn Fn(u64) -> Result<crate::model::network::Network>,
    setup: &Setup,
    modes: &[Mode],
    backend: &dyn Backend,
    cfg: TrainConfig,
    seeds: &[u64],
    train: &Dataset,
    val: &Dataset,
    test: &Dataset,
    out: &Path,
    comm: &dyn crate::dist::comm::Communicator,
) -> Result<String> {
    // Per mode: per seed (seed, history, test accuracy, selected epoch).
    type PerSeed = Vec<(u64, Vec<EpochRecord>, f64, usize)>;
    let mut runs: Vec<(String, PerSeed)> = modes
        .iter()
        .map(|m| (format!("{m:?}").to_lowercase(), Vec::new()))
        .collect();
    for &seed in seeds {
        let net = net(seed)?;
        for (k, &mode) in modes.iter().enumerate() {
            let dir = out.join(format!("seed-{seed}")).join(&runs[k].0);
            let t = train_and_report(
                net.clone(),
                &Setup {
                    mode,
                    ..setup.clone()
                },
                backend,
                TrainConfig {
                    seed,
                    ..cfg.clone()
                },
                train,
                val,
                &dir,
                false,
                comm,
            )?;
            let st = t.evaluate_in(backend, comm, test, 200)?;
            let acc = st.correct as f64 / st.samples.max(1) as f64;
            runs[k]
                .1
                .push((seed, t.history.clone(), acc, t.selected_epoch()));
        }
    }
    let mut csv =
        String::from("seed,mode,epoch,train_loss,train_accuracy,val_loss,val_accuracy,selected\n");
    for (name, per_seed) in &runs {
        for (seed, h, _, selected) in per_seed {
            for r in h {
                let _ = writeln!(
                    csv,
                    "{seed},{name},{},{}",
                    epoch_fields(r),
                    u8::from(r.epoch == *selected)
                );
            }
        }
    }
    let mut table = modes_table(
        &runs
            .iter()
            .map(|(n, s)| (n.clone(), s.iter().map(|r| 100.0 * r.2).collect()))
            .collect::<Vec<_>>(),
    );
    for (name, per_seed) in &runs {
        let each: Vec<String> = per_seed
            .iter()
            .map(|(seed, _, acc, epoch)| {
                format!("seed {seed} {:.2} % (epoch {epoch})", 100.0 * acc)
            })
            .collect();
        let _ = writeln!(
            table,
            "{name}: test accuracy per seed, with the weights of the epoch (of {}) kept: {}",
            cfg.epochs,
            each.join(", ")
        );
    }
    if comm.leads() {
        crate::files::write_atomic(&out.join("fig4-seeds.csv"), csv.as_bytes())?;
        let bands: Vec<crate::io::plot::Band> = runs
            .iter()
            .map(|(name, per_seed)| {
                let epochs = per_seed.iter().map(|r| r.1.len()).min().unwrap_or(0);
                let band = (0..epochs)
                    .map(|e| {
                        let v: Vec<f64> = per_seed
                            .iter()
                            .filter_map(|r| r.1[e].test_accuracy)
                            .map(|a| 100.0 * a)
                            .collect();
                        let (mean, _, min, max) = spread(&v);
                        ((e + 1) as f64, mean, min, max)
                    })
                    .collect();
                (name.clone(), band)
            })
            .collect();
        crate::io::plot::bands(
            &bands,
            &format!(
                "validation accuracy (%), mean and min-max over {} seeds",
                seeds.len()
            ),
            &out.join("fig4-seeds.png"),
        )?;
    }
    Ok(table)
}

/// Per mode (name, test accuracies in % over seeds): mean, sd, min, max, then for every pair
/// whether the difference of the means exceeds twice its standard error.
pub fn modes_table(modes: &[(String, Vec<f64>)]) -> String {
    let mut s =
        String::from("| mode | seeds | mean | sd | min | max |\n|---|---:|---:|---:|---:|---:|\n");
    let stats: Vec<(f64, f64, usize)> = modes
        .iter()
        .map(|(name, v)| {
            let (mean, sd, min, max) = spread(v);
            let _ = writeln!(
                s,
                "| {name} | {} | {mean:.2} % | {sd:.2} | {min:.2} % | {max:.2} % |",
                v.len()
            );
            (mean, sd, v.len())
        })
        .collect();
    for i in 0..modes.len() {
        for j in i + 1..modes.len() {
            let ((m1, s1, n1), (m2, s2, n2)) = (stats[i], stats[j]);
            let se = (s1 * s1 / n1 as f64 + s2 * s2 / n2 as f64).sqrt();
            let d = m1 - m2;
            let verdict = if n1 < 2 || n2 < 2 {
                "one seed: no spread to compare with"
            } else if d.abs() > 2.0 * se {
                "exceeds the spread (> 2 standard errors)"
            } else {
                "within the spread (≤ 2 standard errors)"
            };
            let _ = writeln!(
                s,
                "{} − {}: {d:+.2} points, standard error {se:.2}: {verdict}",
                modes[i].0, modes[j].0
            );
        }
    }
    s
}

/// One emulated chip of a [`chip_sweep`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChipResult {
    /// Index in the sweep.
    pub chip: usize,
    /// The seed its fixed-pattern variation was drawn from.
    pub seed: u64,
    /// Test accuracy on it.
    pub accuracy: f64,
    /// Mean test cross-entropy on it.
    pub loss: f64,
}

/// Run `inputs` (every sample of the batch) by the processes of `comm` together, the
/// temporal noise seeded by `seed`: each runs a contiguous shard of the samples
/// ([`crate::dist::comm::shard`]) with the noise those samples get in one run, and the first process
/// gets the file form of the whole batch in sample order ([`crate::run::executor::Execution::to_file`];
/// the others get `None`).
pub fn run_in(
    exec: &Executor,
    backend: &dyn Backend,
    comm: &dyn crate::dist::comm::Communicator,
    inputs: &[(
        crate::model::network::PopulationId,
        crate::spikes::store::SpikeTrains,
    )],
    observe: crate::run::executor::Observe,
    seed: u32,
    membranes: bool,
) -> Result<Option<(crate::spikes::store::SpikeFile, Option<LinkStats>)>> {
    let samples = inputs.first().map_or(0, |(_, t)| t.samples());
    if exec.share().is_some() && comm.chips().is_none() || comm.size() == 1 || samples == 0 {
        // One process, or spread by chips only: every process runs every sample (its chips of
        // them, if spread) and has the whole result.
        let out = exec.run_samples_in(backend, inputs, observe, seed, 0, comm)?;
        let links = out.stats.links.clone();
        return Ok(comm
            .leads()
            .then(|| (out.to_file(&exec.network, membranes), links)));
    }
    let mine = crate::dist::comm::shard(samples, comm.size(), comm.rank());
    let (part, links) = if mine.is_empty() {
        let empty = crate::spikes::store::SpikeFile {
            steps: exec.network.steps,
            ..Default::default()
        };
        (empty, None)
    } else {
        let shard: Vec<_> = inputs
            .iter()
            .map(|(p, t)| (*p, t.slice(mine.clone())))
            .collect();
        let out = exec.run_samples_in(backend, &shard, observe, seed, mine.start as u32, comm)?;
        (
            out.to_file(&exec.network, membranes),
            out.stats.links.clone(),
        )
    };
    let bytes = part.to_bytes();
    drop(part);
    let all = comm.all_gather_bytes(&bytes);
    // The links' traffic, summed over the processes (each counted its own samples).
    let wire = links.map(|l| l.to_wire()).unwrap_or_default();
    let mut total: Option<LinkStats> = None;
    for w in comm.all_gather_f64(&wire) {
        if let Some(l) = LinkStats::from_wire(&w) {
            total.get_or_insert_with(LinkStats::default).add(&l);
        }
    }
    if !comm.leads() {
        return Ok(None);
    }
    let mut whole = crate::spikes::store::SpikeFile {
        steps: exec.network.steps,
        ..Default::default()
    };
    for (rank, b) in all.iter().enumerate() {
        let part = crate::spikes::store::SpikeFile::from_bytes(b).ok_or_else(|| {
            Error::input(
                format!("results of process {rank}"),
                format!("{} bytes that are not a spike file's binary form", b.len()),
            )
        })?;
        whole.append(part);
    }
    Ok(Some((whole, total)))
}

/// The seed of chip `k` of a sweep with seed `seed` (every chip's variation drawn
/// independently, the same for the same seed).
pub fn chip_seed(seed: u64, k: usize) -> u64 {
    crate::rng::Rng::derive(seed, k as u64).next_u64()
}

/// Evaluate `net` (trained weights) on `test` on `chips` independently drawn emulated chips
/// (each its own fixed-pattern variation, seeded by [`chip_seed`]), every partition emulated
/// as `setup.mode` says; `progress(done)` after each chip.
#[allow(clippy::too_many_arguments)]
pub fn chip_sweep(
    net: &crate::model::network::Network,
    setup: &Setup,
    backend: &dyn Backend,
    cfg: &TrainConfig,
    test: &Dataset,
    chips: usize,
    seed: u64,
    progress: impl FnMut(usize),
) -> Result<Vec<ChipResult>> {
    chip_sweep_in(
        net,
        setup,
        backend,
        &crate::dist::comm::Single,
        cfg,
        test,
        chips,
        seed,
        progress,
    )
}

/// [`chip_sweep`] by the processes of `comm` together: each evaluates a contiguous share of
/// the chips ([`crate::dist::comm::shard`]) and every process gets every chip's result, in chip
/// order; `progress(done)` counts this process's chips.
#[allow(clippy::too_many_arguments)]
pub fn chip_sweep_in(
    net: &crate::model::network::Network,
    setup: &Setup,
    backend: &dyn Backend,
    comm: &dyn crate::dist::comm::Communicator,
    cfg: &TrainConfig,
    test: &Dataset,
    chips: usize,
    seed: u64,
    mut progress: impl FnMut(usize),
) -> Result<Vec<ChipResult>> {
    if chips == 0 {
        return Err(Error::option(
            "--chip-instances",
            0,
            "at least 1 chip to evaluate on",
        ));
    }
    // Every process checks (also one without a chip), so that bad data stops all alike.
    Trainer::new(setup.executor(net.clone())?, cfg.clone())?.check_data(test)?;
    let mut mine = Vec::new();
    for (done, k) in crate::dist::comm::shard(chips, comm.size(), comm.rank()).enumerate() {
        let mut one = setup.clone();
        one.analog.chip_seed = chip_seed(seed, k);
        let trainer = Trainer::new(one.executor(net.clone())?, cfg.clone())?;
        let st = trainer.evaluate(backend, test, 500)?;
        mine.extend([st.accuracy(), st.mean_loss()]);
        progress(done + 1);
    }
    Ok(comm
        .all_gather_f64(&mine)
        .concat()
        .chunks_exact(2)
        .enumerate()
        .map(|(k, r)| ChipResult {
            chip: k,
            seed: chip_seed(seed, k),
            accuracy: r[0],
            loss: r[1],
        })
        .collect())
}

/// Mean, standard deviation (of the population), minimum and maximum of `v`.
pub fn summary(v: &[f64]) -> (f64, f64, f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    (mean, var.sqrt(), min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_modes_table_states_spread_and_significance() {
        // ideal 90, 92, 94: mean 92, sd 2; emulated 80, 81, 82: mean 81, sd 1; mixed 91, 93,
        // 92: mean 92, sd 1. Standard errors of the differences: sqrt(4/3 + 1/3) = 1.29.
        let t = modes_table(&[
            ("ideal".into(), vec![90.0, 92.0, 94.0]),
            ("emulated".into(), vec![80.0, 81.0, 82.0]),
            ("mixed".into(), vec![91.0, 93.0, 92.0]),
        ]);
        assert!(
            t.contains("| ideal | 3 | 92.00 % | 2.00 | 90.00 % | 94.00 % |"),
            "{t}"
        );
        assert!(
            t.contains("| emulated | 3 | 81.00 % | 1.00 | 80.00 % | 82.00 % |"),
            "{t}"
        );
        assert!(
            t.contains("ideal − emulated: +11.00 points, standard error 1.29: exceeds"),
            "{t}"
        );
        assert!(
            t.contains("ideal − mixed: +0.00 points, standard error 1.29: within"),
            "{t}"
        );
        let one = modes_table(&[("a".into(), vec![50.0]), ("b".into(), vec![60.0])]);
        assert!(one.contains("one seed"), "{one}");
    }
}

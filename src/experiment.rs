//! One training experiment end to end, shared by the examples and `neuropart train`: partition
//! and emulate the network, train with progress bars, evaluate after every epoch, and write
//! the CSV of the curves, their PNG, a checkpoint (atomically) and a PNG of one test sample
//! like the paper's Fig. 2C. Presentation and orchestration only; the maths lives in `train`.

use crate::analog::{AnalogConfig, Mode};
use crate::backend::Backend;
use crate::data::Dataset;
use crate::draw::{Canvas, Color, PALETTE};
use crate::error::{Error, Result};
use crate::executor::Executor;
use crate::network::PopulationKind;
use crate::partition::PartitionOptions;
use crate::substrate::Substrate;
use crate::train::{EpochRecord, TrainConfig, Trainer};
use indicatif::{ProgressBar, ProgressStyle};
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
        }
    }

    /// Partition, schedule, compile and emulate `net` as this set-up says.
    pub fn executor(&self, mut net: crate::network::Network) -> Result<Executor> {
        net.steps = self.steps;
        Executor::emulated(
            net,
            &self.substrate,
            self.chips,
            &self.partition,
            self.analog.clone(),
            self.mode,
        )
    }
}

/// Partition and emulate `net` as `setup` says, train it on `train` for `cfg.epochs` epochs
/// on `backend`, evaluate on `test` after every epoch, and write everything under `out`.
/// Returns the trainer (final weights and history).
#[allow(clippy::too_many_arguments)]
pub fn train_and_report(
    net: crate::network::Network,
    setup: &Setup,
    backend: &dyn Backend,
    cfg: TrainConfig,
    train: &Dataset,
    test: &Dataset,
    out: &Path,
    resume: bool,
) -> Result<Trainer> {
    let steps = setup.steps;
    let exec = setup.executor(net)?;
    eprintln!(
        "{}: {} partitions ({} emulated), {} training and {} test samples, T = {steps}, on {}",
        exec.network.name,
        exec.plan.partitions.len(),
        exec.emulation
            .as_ref()
            .map_or(0, |e| e.emulated.iter().filter(|&&x| x).count()),
        train.len(),
        test.len(),
        backend.name()
    );
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let ck = out.join("checkpoint.json");
    let mut trainer = Trainer::new(exec, cfg)?;
    if resume {
        trainer.resume(&ck)?;
        eprintln!(
            "resumed from {} after epoch {}",
            ck.display(),
            trainer.epoch
        );
    }
    let style =
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}")
            .expect("valid template")
            .progress_chars("=> ");
    while trainer.epoch < trainer.cfg.epochs {
        let e = trainer.epoch + 1;
        let bar = ProgressBar::new(train.len() as u64)
            .with_style(style.clone())
            .with_prefix(format!("epoch {e}/{}", trainer.cfg.epochs));
        let t0 = Instant::now();
        let st = trainer.train_epoch(backend, train, |done, _, s| {
            bar.set_position(done as u64);
            bar.set_message(format!(
                "loss {:.3} acc {:.1}%",
                s.loss / s.samples.max(1) as f64,
                100.0 * s.correct as f64 / s.samples.max(1) as f64
            ));
        })?;
        bar.finish_and_clear();
        let seconds = t0.elapsed().as_secs_f64();
        let ev = trainer.evaluate(backend, test, 500)?;
        let rec = EpochRecord {
            epoch: e,
            train_loss: st.loss / st.samples.max(1) as f64,
            train_accuracy: st.correct as f64 / st.samples.max(1) as f64,
            test_loss: ev.loss / ev.samples.max(1) as f64,
            test_accuracy: ev.correct as f64 / ev.samples.max(1) as f64,
            hidden_spikes: st.hidden_spikes / st.samples.max(1) as f64,
            seconds,
            samples_per_s: st.samples as f64 / seconds,
        };
        eprintln!(
            "epoch {e}: train loss {:.4} acc {:.2}% | test loss {:.4} acc {:.2}% | {:.1} hidden spikes/sample | {:.0} samples/s",
            rec.train_loss,
            100.0 * rec.train_accuracy,
            rec.test_loss,
            100.0 * rec.test_accuracy,
            rec.hidden_spikes,
            rec.samples_per_s
        );
        trainer.history.push(rec);
        trainer.save(&ck)?;
        write_csv(&trainer.history, &out.join("curves.csv"))?;
        plot_curves(&[("", &trainer.history)], &out.join("curves.png"))?;
    }
    if !test.is_empty() {
        plot_sample(&trainer, backend, test, 0, &out.join("sample.png"))?;
    }
    Ok(trainer)
}

/// Write the history as CSV, atomically.
pub fn write_csv(history: &[EpochRecord], path: &Path) -> Result<()> {
    let mut s = String::from(
        "epoch,train_loss,train_accuracy,test_loss,test_accuracy,hidden_spikes_per_sample,seconds,samples_per_s\n",
    );
    for r in history {
        let _ = writeln!(
            s,
            "{},{:.6},{:.6},{:.6},{:.6},{:.3},{:.2},{:.1}",
            r.epoch,
            r.train_loss,
            r.train_accuracy,
            r.test_loss,
            r.test_accuracy,
            r.hidden_spikes,
            r.seconds,
            r.samples_per_s
        );
    }
    crate::io::write_atomic(path, s.as_bytes())
}

/// Accuracy (left) and loss (right) over epochs; training solid, test dotted; one colour per
/// named series (e.g. per emulation mode, like the paper's Fig. 4).
pub fn plot_curves(series: &[(&str, &[EpochRecord])], path: &Path) -> Result<()> {
    let (w, h) = (1000i64, 420i64);
    let mut cv = Canvas::new(w as u32, h as u32);
    let panel =
        |cv: &mut Canvas, x0: i64, title: &str, get: &dyn Fn(&EpochRecord) -> (f64, f64)| {
            let (pw, ph, top) = (w / 2 - 90, h - 110, 40i64);
            let left = x0 + 60;
            cv.text(left, 12, title, 2, [0, 0, 0]);
            let pts: Vec<f64> = series
                .iter()
                .flat_map(|(_, hs)| {
                    hs.iter().flat_map(|r| {
                        let (a, b) = get(r);
                        [a, b]
                    })
                })
                .filter(|v| v.is_finite())
                .collect();
            let (mut lo, mut hi) = pts
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            if !lo.is_finite() {
                (lo, hi) = (0.0, 1.0);
            }
            if hi - lo < 1e-9 {
                hi = lo + 1.0;
            }
            let epochs = series
                .iter()
                .map(|(_, hs)| hs.len())
                .max()
                .unwrap_or(1)
                .max(2);
            let px = |e: usize| left + (e as i64 - 1) * pw / (epochs as i64 - 1);
            let py = |v: f64| top + ph - ((v - lo) / (hi - lo) * ph as f64) as i64;
            cv.frame(left, top, pw + 1, ph + 1, [0, 0, 0]);
            for k in 0..=4 {
                let v = lo + (hi - lo) * k as f64 / 4.0;
                cv.text(x0 + 2, py(v) - 4, &format!("{v:.3}"), 1, [60, 60, 60]);
            }
            cv.text(left + pw / 2 - 20, top + ph + 10, "epoch", 1, [0, 0, 0]);
            cv.text(left, top + ph + 10, "1", 1, [0, 0, 0]);
            cv.text(
                left + pw - 16,
                top + ph + 10,
                &epochs.to_string(),
                1,
                [0, 0, 0],
            );
            for (si, (name, hs)) in series.iter().enumerate() {
                let col: Color = PALETTE[si % PALETTE.len()];
                for (k, win) in hs.windows(2).enumerate() {
                    let (a, b) = (get(&win[0]), get(&win[1]));
                    cv.line(px(k + 1), py(a.0), px(k + 2), py(b.0), col, false);
                    cv.line(px(k + 1), py(a.1), px(k + 2), py(b.1), col, true);
                }
                for (k, r) in hs.iter().enumerate() {
                    let (a, b) = get(r);
                    cv.rect(px(k + 1) - 2, py(a) - 2, 5, 5, col);
                    cv.frame(px(k + 1) - 2, py(b) - 2, 5, 5, col);
                }
                if !name.is_empty() {
                    cv.rect(left + 10, top + 10 + 14 * si as i64, 20, 3, col);
                    cv.text(left + 36, top + 6 + 14 * si as i64, name, 1, [0, 0, 0]);
                }
            }
        };
    panel(&mut cv, 0, "accuracy (train -, held-out ..)", &|r| {
        (r.train_accuracy, r.test_accuracy)
    });
    panel(&mut cv, w / 2, "loss (train -, held-out ..)", &|r| {
        (r.train_loss, r.test_loss)
    });
    cv.save(path)
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
    let exec = &trainer.exec;
    let net = &exec.network;
    let steps = net.steps as usize;
    let spikes = crate::data::encode_batch(data, &[index], net.steps, None);
    let input = net.inputs()[0];
    let out = exec.run(
        backend,
        &[(input, spikes.clone())],
        crate::executor::Observe::ReadoutTraces,
    )?;
    let nparts = exec.plan.partitions.len() as i64;
    let (cw, ch) = (4i64, 260i64);
    let width = 80 + (nparts + 1) * (steps as i64 * cw + 30);
    let mut cv = Canvas::new(width as u32, (ch + 70) as u32);
    cv.text(
        10,
        8,
        &format!("test sample {index}, label {}", data.labels[index]),
        2,
        [0, 0, 0],
    );
    let raster =
        |cv: &mut Canvas, x0: i64, title: &str, n: usize, ev: &[(usize, usize)], col: Color| {
            for (k, line) in title.split('\n').enumerate() {
                cv.text(x0, 26 + 10 * k as i64, line, 1, [0, 0, 0]);
            }
            cv.frame(x0 - 1, 49, steps as i64 * cw + 2, ch + 2, [0, 0, 0]);
            let rh = (ch as f64 / n.max(1) as f64).max(1.0);
            for &(t, j) in ev {
                cv.rect(
                    x0 + t as i64 * cw,
                    50 + (j as f64 * ch as f64 / n as f64) as i64,
                    cw,
                    rh.ceil() as i64,
                    col,
                );
            }
        };
    let mut x = 20i64;
    let ev: Vec<(usize, usize)> = spikes
        .sample(0)
        .iter()
        .map(|e| (e.step as usize, e.neuron as usize))
        .collect();
    raster(&mut cv, x, "input", spikes.neurons, &ev, [0, 0, 0]);
    x += steps as i64 * cw + 30;
    for part in &exec.plan.partitions {
        for r in &part.parts {
            let pop = &net.populations[r.neurons.population];
            let title = format!(
                "run {}\n{}[{}..{}]",
                part.id,
                pop.name,
                r.neurons.offset,
                r.neurons.offset + r.neurons.size
            );
            let col = PALETTE[r.neurons.population % PALETTE.len()];
            if pop.kind == PopulationKind::Readout {
                let m = out.membrane[r.neurons.population]
                    .as_ref()
                    .expect("readout recorded");
                let (lo, hi) = m
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                        (a.min(v), b.max(v))
                    });
                let span = (hi - lo).max(1e-6);
                for (k, line) in title.split('\n').enumerate() {
                    cv.text(x, 26 + 10 * k as i64, line, 1, [0, 0, 0]);
                }
                cv.frame(x - 1, 49, steps as i64 * cw + 2, ch + 2, [0, 0, 0]);
                for c in r.neurons.range() {
                    let colr = PALETTE[c % PALETTE.len()];
                    for t in 1..steps {
                        let y = |t: usize| {
                            50 + ch - ((m[t * pop.size + c] - lo) / span * ch as f32) as i64
                        };
                        cv.line(
                            x + (t as i64 - 1) * cw,
                            y(t - 1),
                            x + t as i64 * cw,
                            y(t),
                            colr,
                            false,
                        );
                    }
                }
            } else if let Some(tr) = out.spikes.get(r.neurons.population) {
                let ev: Vec<(usize, usize)> = tr
                    .sample(0)
                    .iter()
                    .filter(|e| r.neurons.range().contains(&(e.neuron as usize)))
                    .map(|e| (e.step as usize, e.neuron as usize - r.neurons.offset))
                    .collect();
                raster(&mut cv, x, &title, r.neurons.size, &ev, col);
            }
            x += steps as i64 * cw + 30;
        }
    }
    cv.save(path)
}

/// Train `net` once per mode (each from the same initial weights), validating every epoch, and
/// write one subfolder per mode plus `fig4.png` (accuracy and loss of all modes, train solid,
/// validation dotted, like the paper's Fig. 4) and `fig4.csv`. Returns a text summary with the
/// final test accuracy per mode.
#[allow(clippy::too_many_arguments)]
pub fn compare_modes(
    net: &crate::network::Network,
    setup: &Setup,
    modes: &[Mode],
    backend: &dyn Backend,
    cfg: TrainConfig,
    train: &Dataset,
    val: &Dataset,
    test: &Dataset,
    out: &Path,
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
        )?;
        let st = t.evaluate(backend, test, 200)?;
        runs.push((
            name,
            t.history.clone(),
            st.correct as f64 / st.samples.max(1) as f64,
        ));
    }
    let series: Vec<(&str, &[EpochRecord])> =
        runs.iter().map(|(n, h, _)| (n.as_str(), &h[..])).collect();
    plot_curves(&series, &out.join("fig4.png"))?;
    let mut csv = String::from("mode,epoch,train_loss,train_accuracy,val_loss,val_accuracy\n");
    let mut summary = String::new();
    for (name, h, acc) in &runs {
        for r in h {
            let _ = writeln!(
                csv,
                "{name},{},{:.6},{:.6},{:.6},{:.6}",
                r.epoch, r.train_loss, r.train_accuracy, r.test_loss, r.test_accuracy
            );
        }
        let last = h.last().cloned().unwrap_or_default();
        let _ = writeln!(
            summary,
            "{name:>9}: test accuracy {:.2}% (validation {:.2}%, train {:.2}%) after {} epochs, {:.0} training samples/s",
            100.0 * acc,
            100.0 * last.test_accuracy,
            100.0 * last.train_accuracy,
            last.epoch,
            last.samples_per_s
        );
    }
    crate::io::write_atomic(&out.join("fig4.csv"), csv.as_bytes())?;
    Ok(summary)
}

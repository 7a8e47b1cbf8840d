//! neuropart train: surrogate-gradient training on an image-classification set.

use super::common::*;
use neuropart::TrainConfig;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) target: Target,
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// Epochs (with --resume: train until this many are done).
    #[arg(long, default_value = "15", value_parser = at_least_one)]
    pub(crate) epochs: usize,
    /// Samples per optimiser step.
    #[arg(long, default_value = "100", value_parser = at_least_one)]
    pub(crate) batch: usize,
    /// Adam learning rate (decayed ×0.97 per epoch).
    #[arg(long, default_value = "0.002", value_parser = positive, allow_hyphen_values = true)]
    pub(crate) lr: f32,
    /// Seed of shuffling, augmentation and noise.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Output folder (CSV, PNGs, checkpoint.json); checked to be writable first.
    #[arg(long, default_value = "train-out")]
    pub(crate) out: PathBuf,
    /// Continue from OUT/checkpoint.json up to --epochs.
    #[arg(long)]
    pub(crate) resume: bool,
    /// Start afresh over a checkpoint already in OUT (without it, that is refused).
    #[arg(long, conflicts_with = "resume")]
    pub(crate) force: bool,
    /// Train this many independent seeds (--seed, --seed + 1, ...), each into OUT/seed-S, and
    /// report the test accuracy over them (mean, standard deviation, minimum, maximum) with
    /// OUT/seeds.csv (one row per seed and epoch).
    #[arg(long, default_value = "1", value_parser = at_least_one)]
    pub(crate) seeds: usize,
    /// Hold out the last N training images to validate every epoch (early stopping): each
    /// training ends with the weights of its best-validation epoch (OUT/best.json), whose test
    /// accuracy is reported. 0: the test set is evaluated every epoch and the last epoch's
    /// weights are kept.
    #[arg(long, default_value_t = 0)]
    pub(crate) val_samples: usize,
    /// Feed every image row by row (sequential MNIST), a row every K steps: one input per
    /// column (the network's input population has the images' width), a pixel x of row r
    /// spiking once at step r·K + ⌊K·(1 − x)⌋; the run needs rows × K steps or more. Default:
    /// one input per pixel, time-to-first-spike over the whole run. Checkpoints keep it.
    #[arg(long, value_name = "K", value_parser = at_least_one)]
    pub(crate) rows: Option<usize>,
    /// With a readout scored by its maximum over time: give a class whose trace never rose
    /// above its start (its maximum before any input, so without gradient) the gradient of
    /// its mean over the steps with input, where the loss asks its score to rise, so that a
    /// class silenced early in training can recover.
    #[arg(long)]
    pub(crate) revive_silent_classes: bool,
}

pub(crate) fn run(args: Args, ctx: &Ctx) -> neuropart::Result<()> {
    let Args {
        target,
        data,
        epochs,
        batch,
        lr,
        seed,
        out,
        resume,
        force,
        seeds,
        val_samples,
        rows,
        revive_silent_classes,
    } = args;
    let lead = ctx.lead;
    let open_backend = |d| ctx.open_backend(d);
    let comm = ctx.comm;
    let cfg = TrainConfig {
        epochs,
        batch,
        lr,
        seed,
        keep_best: val_samples > 0,
        revive_silent_classes,
        encoding: match rows {
            Some(k) => neuropart::encode::Encoding::Rows {
                steps_per_row: u32::try_from(k).unwrap_or(u32::MAX),
            },
            None => neuropart::encode::Encoding::Latency,
        },
        ..Default::default()
    };
    cfg.validate()?;
    let runs: Vec<(u64, PathBuf)> = if seeds == 1 {
        vec![(seed, out.clone())]
    } else {
        (0..seeds as u64)
            .map(|k| (seed + k, out.join(format!("seed-{}", seed + k))))
            .collect()
    };
    for (_, dir) in &runs {
        let existing = dir.join("checkpoint.json");
        if !resume && !force && existing.exists() {
            return Err(neuropart::Error::option(
                "--out",
                out.display(),
                format!(
                    "{} is a checkpoint of an earlier training; continue it with --resume, \
                     or start afresh over it with --force",
                    existing.display()
                ),
            ));
        }
    }
    neuropart::io::check_writable(&out)?;
    let sub = target.substrate()?;
    let (mut net, _) = load_network(&target.network, &sub, data.steps, None)?;
    // Resumed without --steps: the steps the (first seed's) checkpoint was trained with, as
    // `eval`, `run` and `export` take them (a broken checkpoint is reported by the resume).
    if resume && data.steps.is_none() {
        let first = runs[0].1.join("checkpoint.json");
        if let Ok(ck) = neuropart::Checkpoint::load(&first) {
            take_checkpoint_steps(&mut net, ck.steps, &first, lead);
        }
    }
    let (mut train, test) = neuropart::comm::first_then_rest(comm, || data.load())?;
    agree_on_data(comm, &[("training set", &train), ("test set", &test)])?;
    let val = if val_samples > 0 {
        if val_samples >= train.len() {
            return Err(neuropart::Error::option(
                "--val-samples",
                val_samples,
                format!(
                    "fewer than the {} training images (some must remain to train on)",
                    train.len()
                ),
            ));
        }
        let cut = train.len() - val_samples;
        let val = train.select(&(cut..train.len()).collect::<Vec<_>>());
        train = train.take(cut);
        Some(val)
    } else {
        None
    };
    let backend = open_backend(data.device)?;
    let grid = target.grid(comm)?;
    let comm: &dyn neuropart::comm::Communicator = match &grid {
        Some(g) => g,
        None => comm,
    };
    let setup = target.setup(sub, net.steps, data.mode, comm);
    let mut histories = Vec::new();
    let mut finals = Vec::new();
    for (s, dir) in &runs {
        let cfg = TrainConfig {
            seed: *s,
            ..cfg.clone()
        };
        let t = neuropart::experiment::train_and_report(
            net.clone(),
            &setup,
            &*backend,
            cfg,
            &train,
            val.as_ref().unwrap_or(&test),
            dir,
            resume,
            comm,
        )?;
        // With a validation set, the test set is evaluated once, with the kept weights.
        let result = match &val {
            Some(_) => {
                let st = t.evaluate_in(&*backend, comm, &test, 500)?;
                Some((st.accuracy(), st.mean_loss()))
            }
            None => t
                .history
                .last()
                .and_then(|r| Some((r.test_accuracy?, r.test_loss.unwrap_or(f64::NAN)))),
        };
        if let (true, Some((acc, loss))) = (lead, result) {
            let epochs = t.history.len();
            let selected = t.selected_epoch();
            println!(
                "final{}: test accuracy {:.2}%, test loss {loss:.4} ({:?} mode, {}); outputs in {}",
                if seeds > 1 {
                    format!(" (seed {s})")
                } else {
                    String::new()
                },
                100.0 * acc,
                data.mode,
                if val.is_some() {
                    format!("weights of epoch {selected} of {epochs}, best on validation")
                } else {
                    format!("{epochs} epochs")
                },
                dir.display()
            );
        }
        if let Some((acc, _)) = result {
            finals.push((*s, acc));
        }
        histories.push((*s, t.history.clone(), t.selected_epoch()));
    }
    if lead && seeds > 1 {
        neuropart::experiment::write_seeds_csv(&histories, &out.join("seeds.csv"))?;
        print!("{}", neuropart::experiment::seeds_summary(&finals));
    }
    Ok(())
}

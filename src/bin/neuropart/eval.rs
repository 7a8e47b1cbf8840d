//! neuropart eval: a checkpoint on the test split, or on many drawn chips.

use super::common::*;
use neuropart::prelude::*;
use neuropart::Trainer;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) target: Target,
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// Checkpoint written by `train`.
    #[arg(long)]
    pub(crate) checkpoint: PathBuf,
    /// Evaluate on this many independently drawn emulated chips (each its own fixed-pattern
    /// variation) and report per chip, mean, standard deviation, minimum and maximum as a
    /// table, `OUT/chips.csv` and the histogram `OUT/chips.png`.
    #[arg(long, value_parser = chip_count)]
    pub(crate) chip_instances: Option<usize>,
    /// With --chip-instances: the seed the chips are drawn from.
    #[arg(long, default_value = "1", requires = "chip_instances")]
    pub(crate) chip_seed: u64,
    /// With --chip-instances: output folder.
    #[arg(long, default_value = "sweep-out", requires = "chip_instances")]
    pub(crate) out: PathBuf,
}

pub(crate) fn run(args: Args, ctx: &Ctx) -> neuropart::Result<()> {
    let Args {
        target,
        data,
        checkpoint,
        chip_instances,
        chip_seed,
        out,
    } = args;
    let lead = ctx.lead;
    let warn = |lines: &[String]| ctx.warn(lines);
    let open_backend = |d| ctx.open_backend(d);
    let comm = ctx.comm;
    if data.train_samples > 0 {
        return Err(neuropart::Error::option(
            "--train-samples",
            data.train_samples,
            "eval reads only the test images (--test-samples N takes the first N)",
        ));
    }
    let sub = target.substrate()?;
    let (net, ck) = load_network(&target.network, &sub, data.steps, Some(&checkpoint))?;
    let ck = ck.expect("loaded");
    if chip_instances.is_some() && data.mode == Mode::Ideal {
        return Err(neuropart::Error::option(
            "--chip-instances",
            chip_instances.unwrap_or(0),
            "needs --mode emulated or mixed (an ideal run has no chip)",
        ));
    }
    if chip_instances.is_some() && target.distribute != Distribute::Samples {
        return Err(neuropart::Error::option(
            "--chip-instances",
            chip_instances.unwrap_or(0),
            "shares the chips out over the processes itself: leave out --distribute chips",
        ));
    }
    if chip_instances.is_some() && lead {
        neuropart::io::check_writable(&out)?;
    }
    let (_, test) = neuropart::comm::first_then_rest(comm, || data.load())?;
    agree_on_data(comm, &[("test set", &test)])?;
    let backend = open_backend(data.device)?;
    let grid = target.grid(comm)?;
    let comm: &dyn neuropart::comm::Communicator = match &grid {
        Some(g) => g,
        None => comm,
    };
    let setup = target.setup(sub, net.steps, data.mode, comm);
    if let Some(k) = chip_instances {
        let mine = neuropart::comm::shard(k, comm.size(), comm.rank()).len();
        let bar = if lead {
            indicatif::ProgressBar::new(mine as u64)
        } else {
            indicatif::ProgressBar::hidden()
        }
        .with_prefix("chips");
        let results = neuropart::experiment::chip_sweep_in(
            &net,
            &setup,
            &*backend,
            comm,
            &ck.config,
            &test,
            k,
            chip_seed,
            |done| bar.set_position(done as u64),
        )?;
        bar.finish_and_clear();
        if !lead {
            return Ok(());
        }
        let mut csv = String::from("chip,seed,accuracy,loss\n");
        println!("| chip | seed | test accuracy | test loss |\n|---:|---:|---:|---:|");
        for r in &results {
            println!(
                "| {} | {} | {:.2} % | {:.4} |",
                r.chip,
                r.seed,
                100.0 * r.accuracy,
                r.loss
            );
            csv += &format!("{},{},{},{}\n", r.chip, r.seed, r.accuracy, r.loss);
        }
        let acc: Vec<f64> = results.iter().map(|r| 100.0 * r.accuracy).collect();
        let (mean, sd, min, max) = neuropart::experiment::summary(&acc);
        println!(
            "{k} chips ({:?} mode, seed {chip_seed}): test accuracy mean {mean:.2} %, \
                 sd {sd:.2}, min {min:.2} %, max {max:.2} %",
            data.mode
        );
        neuropart::io::write_atomic(&out.join("chips.csv"), csv.as_bytes())?;
        neuropart::plot::histogram(
            &acc,
            (k / 2).clamp(4, 20),
            &format!("Test accuracy on {k} emulated chips"),
            "test accuracy (%)",
            &out.join("chips.png"),
        )?;
        eprintln!("per-chip results in {}", out.join("chips.csv").display());
        return Ok(());
    }
    let exec = setup.executor(net)?;
    warn(&exec.warnings);
    let t = Trainer::new(exec, ck.config.clone())?;
    let st = t.evaluate_in(&*backend, comm, &test, 500)?;
    if !lead {
        return Ok(());
    }
    println!(
        "{} test images ({:?} mode): accuracy {:.2}%, loss {:.4}, {:.1} hidden spikes per sample",
        st.samples,
        data.mode,
        100.0 * st.accuracy(),
        st.mean_loss(),
        st.hidden_spikes / st.samples.max(1) as f64
    );
    if let Some(sys) = neuropart::SystemReport::new(&t.exec.plan, t.exec.network.steps) {
        println!(
            "system: {} system run{}, estimated hardware time {:.1} us per sample; links: \
                 {:.1} cross-chip deliveries per sample, {} dropped ({:.2} %)",
            sys.system_runs.len(),
            if sys.system_runs.len() == 1 { "" } else { "s" },
            sys.hardware_us_per_sample,
            st.link_deliveries / st.samples.max(1) as f64,
            st.link_dropped,
            100.0 * st.link_drop_fraction()
        );
    }
    Ok(())
}

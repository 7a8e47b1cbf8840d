//! neuropart plan: how a network is partitioned, placed and scheduled.

use super::common::*;
use neuropart::prelude::*;
use neuropart::PlanReport;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) target: Target,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Draw the placement of the partitions (PNG, or SVG by extension).
    #[arg(long)]
    pub(crate) png: Option<PathBuf>,
    /// Predict the shares of R processes running it spread by chips (--distribute chips):
    /// per process the memory of the synapses it holds and the cross-chip spikes it sends
    /// per window of the system runs at --rate.
    #[arg(long, value_parser = at_least_one)]
    pub(crate) ranks: Option<usize>,
    /// With --ranks: spikes per neuron and step assumed for the prediction.
    #[arg(long, default_value_t = 0.02, requires = "ranks", value_parser = rate)]
    pub(crate) rate: f64,
}

/// A spike rate per neuron and step, in [0, 1].
fn rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        Ok(v) => Err(format!(
            "{v} spikes per neuron and step; a rate is in [0, 1]"
        )),
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) fn run(args: Args, ctx: &Ctx) -> neuropart::Result<()> {
    let Args {
        target,
        json,
        png,
        ranks,
        rate,
    } = args;
    let warn = |lines: &[String]| ctx.warn(lines);
    const NOTHING_RUNS: &str =
        "plan runs nothing: predict a run spread over R processes with --ranks R";
    if let Some(r) = target.chip_ranks {
        return Err(neuropart::Error::option("--chip-ranks", r, NOTHING_RUNS));
    }
    if target.distribute != Distribute::Samples {
        return Err(neuropart::Error::option(
            "--distribute",
            "chips",
            NOTHING_RUNS,
        ));
    }
    if let Some(p) = &png {
        neuropart::plot::check_figure_path(p)?;
    }
    let sub = target.substrate()?;
    // The plan needs no weights: a network that cannot be partitioned is refused before they
    // are drawn (for the precision warnings).
    let mut net = Network::load_structure(&target.network, &sub)?;
    let plan = Plan::new(&net, &sub, &target.options())?;
    net.materialise_weights()
        .map_err(|e| e.in_file(&target.network))?;
    let compiled = neuropart::CompileContext::ideal(&net)?;
    warn(&neuropart::precision_warnings(&net, &compiled));
    let schedule = Schedule::new(&plan, target.chips());
    let report = PlanReport::new(&net, &plan, &schedule);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serialises")
        );
    } else {
        print!("{}", report.text());
    }
    if let Some(r) = ranks {
        // The first process's share compiled (what --distribute chips would hold there).
        let exec =
            Executor::new_on_ranks(net.clone(), &sub, target.chips(), &target.options(), (r, 0))?;
        print!("{}", rank_prediction(&exec, r, rate));
    }
    if let Some(p) = png {
        if plan.system.is_some() {
            // The system (chips, links, traffic) here; every chip's circuits beside it.
            let stem = p.file_stem().unwrap_or_default().to_string_lossy();
            let ext = p.extension().map_or("png".into(), |e| e.to_string_lossy());
            let chips = p.with_file_name(format!("{stem}-chips.{ext}"));
            neuropart::plot::system(&net, &plan, &p)?;
            neuropart::plot::placement(&net, &plan, &chips)?;
            eprintln!(
                "system drawn to {}, the chips' circuits to {}",
                p.display(),
                chips.display()
            );
        } else {
            neuropart::plot::placement(&net, &plan, &p)?;
            eprintln!("placement drawn to {}", p.display());
        }
    }
    Ok(())
}

/// What `ranks` processes sharing `exec` by chips would each hold and send: the compiled
/// synapses of its partitions, and per window of a system run the spikes of its neurons that
/// other chips read (each sent once to every other process) at `rate` spikes per neuron and
/// step, 16 bytes each.
fn rank_prediction(exec: &Executor, ranks: usize, rate: f64) -> String {
    let share = neuropart::RankShare::new(&exec.plan, &exec.schedule, ranks, 0);
    let mem = exec.memory_per_rank(ranks);
    let mut senders = vec![0u64; ranks];
    let mut window = 0u32;
    for (round, ex) in exec.schedule.rounds.iter().zip(exec.exchanges()) {
        let Some(ex) = ex else { continue };
        window = window.max(ex.window);
        for (k, &p) in round.iter().enumerate() {
            // Neurons of this chip that another process's chip reads.
            let f = &ex.fanout[k];
            let remote = (0..f.offsets.len().saturating_sub(1))
                .filter(|&j| {
                    (f.offsets[j]..f.offsets[j + 1])
                        .any(|e| share.owner[round[f.chips[e as usize] as usize]] != share.owner[p])
                })
                .count();
            senders[share.owner[p]] += remote as u64;
        }
    }
    let mut out = format!(
        "\n{ranks} processes sharing the chips (--distribute chips), spikes at {rate} per neuron \
         and step, windows of {window} steps:\n| process | partitions | synapse memory | \
         neurons read by other processes' chips | events sent per window and sample | bytes \
         received per window and sample |\n|---:|---:|---:|---:|---:|---:|\n"
    );
    let per_window = |n: u64| n as f64 * rate * window as f64;
    let total: f64 = senders.iter().map(|&n| per_window(n)).sum();
    for r in 0..ranks {
        let parts = share.owner.iter().filter(|&&o| o == r).count();
        let sent = per_window(senders[r]);
        out += &format!(
            "| {r} | {parts} | {} | {} | {sent:.1} | {:.0} |\n",
            neuropart::human_bytes(mem[r]),
            senders[r],
            16.0 * (total - sent)
        );
    }
    if window == 0 {
        out += "no system run exchanges spikes: the processes only gather each round's outputs\n";
    }
    out
}

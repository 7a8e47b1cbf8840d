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
}

pub(crate) fn run(args: Args, ctx: &Ctx) -> neuropart::Result<()> {
    let Args { target, json, png } = args;
    let warn = |lines: &[String]| ctx.warn(lines);
    let sub = target.substrate()?;
    let net = Network::load(&target.network, &sub)?;
    let plan = Plan::new(&net, &sub, &target.options())?;
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

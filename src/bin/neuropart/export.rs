//! neuropart export: the network file with a checkpoint's trained weights.

use super::common::*;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Network file (.toml or .json).
    pub(crate) network: PathBuf,
    /// Substrate file (TOML); default: BrainScaleS-2.
    #[arg(long)]
    pub(crate) substrate: Option<PathBuf>,
    /// Checkpoint written by `train`.
    #[arg(long)]
    pub(crate) checkpoint: PathBuf,
    /// Output network file (.toml or .json).
    #[arg(short, long)]
    pub(crate) output: PathBuf,
}

pub(crate) fn run(args: Args, _ctx: &Ctx) -> neuropart::Result<()> {
    let Args {
        network,
        substrate: sub_file,
        checkpoint,
        output,
    } = args;
    let ext = output
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    if !matches!(ext.as_deref(), Some("toml" | "json")) {
        return Err(neuropart::Error::option(
            "--output",
            output.display(),
            "a network file ends in .toml or .json (NIR graphs are written from Python: \
             neuropart.to_nir)",
        ));
    }
    for (input, what) in [(&network, "network file"), (&checkpoint, "checkpoint")] {
        if same_file(&output, input) {
            return Err(neuropart::Error::option(
                "--output",
                output.display(),
                format!(
                    "is the {what} it reads ({}); write the network elsewhere",
                    input.display()
                ),
            ));
        }
    }
    let sub = substrate(&sub_file)?;
    let (net, _) = load_network(&network, &sub, None, Some(&checkpoint))?;
    net.save(&output)?;
    eprintln!(
        "{} with the weights of {} written to {}",
        network.display(),
        checkpoint.display(),
        output.display()
    );
    Ok(())
}

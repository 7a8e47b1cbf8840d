//! neuropart run: a network on input spikes, every population's spikes and the scores written.

use super::common::*;
use neuropart::prelude::*;
use neuropart::{DeviceChoice, SpikeFile};
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(crate) target: Target,
    /// Input spike file: {"steps": T, "populations": {"input": [[[step, neuron], ...], ...]}}.
    #[arg(long)]
    pub(crate) input: PathBuf,
    /// Output file (same format plus "scores", "predicted", "membranes"); default: stdout.
    #[arg(long)]
    pub(crate) output: Option<PathBuf>,
    /// Backend.
    #[arg(long, value_enum, default_value = "cpu")]
    pub(crate) device: DeviceChoice,
    /// ideal, emulated, or mixed (first layer emulated).
    #[arg(long, value_enum, default_value = "ideal")]
    pub(crate) mode: Mode,
    /// Trained weights (a checkpoint written by `train`).
    #[arg(long)]
    pub(crate) checkpoint: Option<PathBuf>,
    /// Seed of the temporal noise (emulated partitions).
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u32,
    /// Also write every population's membrane at every step.
    #[arg(long)]
    pub(crate) membranes: bool,
}

pub(crate) fn run(args: Args, ctx: &Ctx) -> neuropart::Result<()> {
    let Args {
        target,
        input,
        output,
        device,
        mode,
        checkpoint,
        seed,
        membranes,
    } = args;
    let warn = |lines: &[String]| ctx.warn(lines);
    let open_backend = |d| ctx.open_backend(d);
    let grid = target.grid(ctx.comm)?;
    let comm: &dyn neuropart::comm::Communicator = match &grid {
        Some(g) => g,
        None => ctx.comm,
    };
    let sub = target.substrate()?;
    let (net, _) = load_network(&target.network, &sub, None, checkpoint.as_deref())?;
    let exec = target.setup(sub, net.steps, mode, comm).executor(net)?;
    warn(&exec.warnings);
    let file = SpikeFile::load(&input)?;
    let inputs = exec.inputs_from_file(&file, &input)?;
    let ignored = exec.ignored_in_file(&file);
    if !ignored.is_empty() {
        warn(&[format!(
            "{}: the spikes of {} are left out (not input populations of network '{}')",
            input.display(),
            ignored
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", "),
            exec.network.name
        )]);
    }
    let backend = open_backend(device)?;
    let observe = if membranes {
        Observe::AllTraces
    } else {
        Observe::Scores
    };
    // With several processes each runs a shard of the samples, the first writes all.
    let Some((file, links)) =
        neuropart::experiment::run_in(&exec, &*backend, comm, &inputs, observe, seed, membranes)?
    else {
        return Ok(());
    };
    let text = serde_json::to_string(&file).expect("serialises");
    match output {
        Some(p) => neuropart::io::write_atomic(&p, text.as_bytes())?,
        None => println!("{text}"),
    }
    eprint!("{}", system_summary(&exec, links.as_ref()));
    Ok(())
}

//! The `neuropart` command line: plan, run, train, evaluate, export and benchmark partitioned
//! networks. Thin over the library; every option it accepts changes what it does.

mod bench;
mod common;
mod eval;
mod export;
mod plan;
mod run;
mod train;

use clap::{Parser, Subcommand};
use common::*;
use neuropart::comm::Communicator;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "neuropart",
    version,
    about = "Partitioned emulation of analog neuromorphic hardware (BrainScaleS-2 class)"
)]
struct Cli {
    /// Memory the process may plan for (e.g. 8G, 512M); default: 80% of the machine's.
    /// Plans and runs that would need more are refused before allocating; a training batch
    /// that would need more runs in pieces one after another (16 samples over it: refused).
    #[arg(long, global = true, value_parser = neuropart::parse_size)]
    max_memory: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show how a network is partitioned and scheduled.
    Plan(plan::Args),
    /// Run a network on input spikes (a JSON spike file) and write every population's spikes,
    /// each readout's scores (its membrane's maximum over time, or the score its network file
    /// gives) and predicted class per sample, and
    /// the membranes with --membranes.
    Run(run::Args),
    /// Train a network with one input and one readout population on an image-classification
    /// set (MNIST by default, any IDX set with --data) with surrogate gradients on the emulated
    /// chip, evaluating on the test split after every epoch.
    Train(train::Args),
    /// Evaluate a trained checkpoint on the test split of the data (MNIST by default).
    Eval(eval::Args),
    /// Write the network file with a checkpoint's trained weights (and steps).
    Export(export::Args),
    /// Throughput of the MNIST network (or --network) on random TTFS input, CPU and GPU.
    Bench(bench::Args),
}

/// The files a command reads, named for a person.
fn input_files(command: &Command) -> Vec<(&'static str, PathBuf)> {
    let mut v = Vec::new();
    let mut target = |t: &Target| {
        v.push(("network file", t.network.clone()));
        if let Some(s) = &t.substrate {
            v.push(("substrate file", s.clone()));
        }
    };
    match command {
        Command::Plan(a) => target(&a.target),
        Command::Train(a) => target(&a.target),
        Command::Run(a) => {
            target(&a.target);
            v.push(("input spike file", a.input.clone()));
            if let Some(c) = &a.checkpoint {
                v.push(("checkpoint", c.clone()));
            }
        }
        Command::Eval(a) => {
            target(&a.target);
            v.push(("checkpoint", a.checkpoint.clone()));
        }
        Command::Export(_) => {}
        Command::Bench(a) => {
            v.extend(a.network.iter().map(|p| ("network file", p.clone())));
            v.extend(a.substrate.iter().map(|p| ("substrate file", p.clone())));
            v.extend(a.checkpoint.iter().map(|p| ("checkpoint", p.clone())));
        }
    }
    v
}

/// Standard output that cannot be written (`print!` panics then) ends the program as other
/// command-line tools end: quietly where the reader went away (`neuropart plan … | head`,
/// status 141 as for SIGPIPE), with one line that says why otherwise (a full disk); every
/// other panic as before.
fn quiet_stdout_failures() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload_as_str().unwrap_or("");
        if let Some(why) = msg.strip_prefix("failed printing to stdout: ") {
            // EPIPE.
            if why.contains("(os error 32)") {
                std::process::exit(141);
            }
            // Standard error may be gone too.
            let _ = writeln!(
                std::io::stderr(),
                "error: cannot write to standard output: {why}"
            );
            std::process::exit(1);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    neuropart::gpu::quiet_vulkan_loader();
    quiet_stdout_failures();
    let cli = Cli::parse();
    if let Err(e) = neuropart::start_worker_threads() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(m) = cli.max_memory {
        neuropart::set_memory_limit(m);
    }
    // Started with mpirun (binary built with `--features mpi`): the processes share the
    // work, the first one reports and writes.
    let world = neuropart::comm::world();
    match run(cli.command, &*world) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if world.size() > 1 {
                eprintln!("error (process {} of {}): {e}", world.rank(), world.size());
                world.abort(1);
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command, comm: &dyn Communicator) -> neuropart::Result<()> {
    let lead = comm.rank() == 0;
    // Nothing to share in a plan or an export: the first process does it alone.
    if !lead && matches!(command, Command::Plan(_) | Command::Export(_)) {
        return Ok(());
    }
    // Processes started together must have been given the same command, files and data.
    if comm.size() > 1 && !matches!(command, Command::Plan(_) | Command::Export(_)) {
        let mut items = vec![neuropart::comm::command_line()];
        for (what, path) in input_files(&command) {
            let d = std::fs::read(&path).map_or(0, |b| neuropart::comm::digest(&b));
            items.push((format!("{what} ({})", path.display()), d));
        }
        neuropart::comm::agree(comm, &items)?;
    }
    let ctx = Ctx { comm, lead };
    match command {
        Command::Plan(a) => plan::run(a, &ctx),
        Command::Run(a) => run::run(a, &ctx),
        Command::Train(a) => train::run(a, &ctx),
        Command::Eval(a) => eval::run(a, &ctx),
        Command::Export(a) => export::run(a, &ctx),
        Command::Bench(a) => bench::run(a, &ctx),
    }
}

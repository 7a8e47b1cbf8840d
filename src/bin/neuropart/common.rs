//! What the subcommands share: option parsers, the network and data arguments, loading a
//! network with a checkpoint, the context of a command (its processes) and summaries.

use neuropart::comm::Communicator;
use neuropart::prelude::*;
use neuropart::{open_backend_in, AnalogConfig, Checkpoint, Dataset, DeviceChoice, Setup};
use std::path::{Path, PathBuf};

/// Where a command runs: its processes, and whether this one reports.
pub(crate) struct Ctx<'a> {
    pub(crate) comm: &'a dyn Communicator,
    pub(crate) lead: bool,
}

impl Ctx<'_> {
    /// Print warnings to stderr (the first process only).
    pub(crate) fn warn(&self, lines: &[String]) {
        if self.lead {
            warn(lines)
        }
    }

    /// The backend `device` names, one per process (by its index on the machine).
    pub(crate) fn open_backend(&self, device: DeviceChoice) -> neuropart::Result<Box<dyn Backend>> {
        open_backend_in(device, self.comm)
    }
}

/// A positive integer option.
pub(crate) fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        Ok(_) => Err("must be at least 1".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A number of chips to draw: 1 to 65 536.
pub(crate) fn chip_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=65_536).contains(&n) => Ok(n),
        Ok(n) => Err(format!("{n} chips; draw 1 to 65536")),
        Err(e) => Err(e.to_string()),
    }
}

/// A finite number above 0.
pub(crate) fn positive(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(v) => Err(format!("{v} is not a finite number above 0")),
        Err(e) => Err(e.to_string()),
    }
}

/// Seconds to measure for: above 0 and at most a day.
pub(crate) fn seconds(s: &str) -> Result<f32, String> {
    let v = positive(s)?;
    if v > 86_400.0 {
        return Err(format!("{v} seconds; measure for at most a day (86400)"));
    }
    Ok(v)
}

/// A number of steps: 1 to 2^30.
pub(crate) fn steps(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=neuropart::MAX_STEPS).contains(&n) => Ok(n),
        Ok(n) => Err(format!(
            "{n} steps; a run has 1 to {}",
            neuropart::MAX_STEPS
        )),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(clap::Args)]
pub(crate) struct Target {
    /// Network file (.toml or .json).
    pub(crate) network: PathBuf,
    /// Substrate file (TOML); default: BrainScaleS-2.
    #[arg(long)]
    pub(crate) substrate: Option<PathBuf>,
    /// Chips: run up to this many partitions of a wave at the same time (default 1); with a
    /// [system] in the substrate file, the system's chip count instead of its `chips`.
    #[arg(long, value_parser = at_least_one)]
    pub(crate) chips: Option<usize>,
    /// Let consecutive layers that each fit one substrate share a run.
    #[arg(long)]
    pub(crate) merge_layers: bool,
    /// How partitions share the system runs of a [system]: concurrent (as many as the system
    /// has chips, spikes between them over the links), sequential (only independent ones;
    /// dependencies through the host) or auto (concurrent when the network fits one system
    /// run). Needs a [system] in the substrate file.
    #[arg(long, value_enum)]
    pub(crate) placement: Option<neuropart::Placement>,
    /// With several processes (mpirun): share out the samples (each process runs every
    /// partition on its share of a batch) or the chips (each process holds and runs its share
    /// of every round's partitions, all the samples, exchanging spikes after every window of
    /// a system run). Results are those of one process either way.
    #[arg(long, value_enum, default_value = "samples")]
    pub(crate) distribute: Distribute,
    /// With --distribute chips,samples: processes per group that share the chips (groups of
    /// consecutive processes; the groups share out the samples). Must divide the process count.
    #[arg(long, value_parser = at_least_one)]
    pub(crate) chip_ranks: Option<usize>,
}

/// What the processes of a command share out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Distribute {
    /// The samples of every batch (data parallelism).
    Samples,
    /// The chips of every round (model parallelism).
    Chips,
    /// Both: groups of --chip-ranks processes share the chips, the groups the samples.
    #[value(name = "chips,samples")]
    ChipsSamples,
}

impl Target {
    /// The substrate file's chip (default BrainScaleS-2), its system's chips set by --chips;
    /// --placement without a system is an error.
    pub(crate) fn substrate(&self) -> neuropart::Result<Substrate> {
        let mut sub = substrate(&self.substrate)?;
        match (&mut sub.system, self.chips) {
            (Some(sys), Some(c)) => {
                sys.chips = c;
                sub.validate()?;
            }
            (None, _) if self.placement.is_some() => {
                return Err(neuropart::Error::option(
                    "--placement",
                    format!("{:?}", self.placement.expect("given")).to_lowercase(),
                    "needs a multi-chip system: a [system] section in the --substrate file",
                ))
            }
            _ => {}
        }
        Ok(sub)
    }

    /// Chips of a wave that run at the same time (without a system).
    pub(crate) fn chips(&self) -> usize {
        self.chips.unwrap_or(1)
    }

    pub(crate) fn options(&self) -> PartitionOptions {
        PartitionOptions {
            merge_layers: self.merge_layers,
            placement: self.placement.unwrap_or_default(),
        }
    }

    /// The processes the runs are spread over by chips and this one's index (`(1, 0)`: not
    /// spread).
    pub(crate) fn ranks(&self, comm: &dyn Communicator) -> (usize, usize) {
        match (self.distribute, comm.chips()) {
            (Distribute::Samples, _) => (1, 0),
            (_, Some(chips)) => (chips.size(), chips.rank()),
            (_, None) => (comm.size(), comm.rank()),
        }
    }

    /// The processes of `world` as --distribute says: `None` for `samples` and `chips` (the
    /// world itself), a [`neuropart::comm::Grid`] for `chips,samples` (every process calls it).
    pub(crate) fn grid(
        &self,
        world: &dyn Communicator,
    ) -> neuropart::Result<Option<neuropart::comm::Grid>> {
        match (self.distribute, self.chip_ranks) {
            (Distribute::ChipsSamples, Some(c)) => Ok(Some(neuropart::comm::Grid::new(world, c)?)),
            (Distribute::ChipsSamples, None) => Err(neuropart::Error::option(
                "--distribute",
                "chips,samples",
                "needs --chip-ranks C, the processes per group that share the chips",
            )),
            (_, Some(c)) => Err(neuropart::Error::option(
                "--chip-ranks",
                c,
                "only with --distribute chips,samples",
            )),
            _ => Ok(None),
        }
    }

    /// How to partition and emulate on `sub` (these chips and options, the default analog
    /// effects): `steps` steps, `mode`, spread over `comm` as --distribute says.
    pub(crate) fn setup(
        &self,
        sub: Substrate,
        steps: u32,
        mode: Mode,
        comm: &dyn Communicator,
    ) -> Setup {
        Setup {
            ranks: self.ranks(comm),
            substrate: sub,
            steps,
            mode,
            analog: AnalogConfig::default(),
            chips: self.chips(),
            partition: self.options(),
        }
    }
}

#[derive(clap::Args)]
pub(crate) struct DataArgs {
    /// Folder of an IDX image-classification set (train-images-idx3-ubyte, ... plain or .gz:
    /// MNIST, Fashion-MNIST, ...); default: MNIST, fetched into data-cache/mnist.
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// ideal, emulated, or mixed (first layer emulated).
    #[arg(long, value_enum, default_value = "emulated")]
    pub(crate) mode: Mode,
    /// Backend.
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) device: DeviceChoice,
    /// Time steps (default: the network's, or the checkpoint's).
    #[arg(long, value_parser = steps)]
    pub(crate) steps: Option<u32>,
    /// Use only the first N training images (0 = all).
    #[arg(long, default_value_t = 0)]
    pub(crate) train_samples: usize,
    /// Use only the first N test images (0 = all).
    #[arg(long, default_value_t = 0)]
    pub(crate) test_samples: usize,
}

impl DataArgs {
    pub(crate) fn load(&self) -> neuropart::Result<(Dataset, Dataset)> {
        let (mut train, mut test) = match &self.data {
            Some(dir) => neuropart::data::load_idx_dir(dir)?,
            None => neuropart::data::mnist(&neuropart::data::cache_dir("mnist"))?,
        };
        if self.train_samples > 0 {
            train = train.take(self.train_samples);
        }
        if self.test_samples > 0 {
            test = test.take(self.test_samples);
        }
        Ok((train, test))
    }
}

/// ", N processes (each a shard of every batch)" when there are several.
pub(crate) fn processes(comm: &dyn Communicator) -> String {
    processes_sharing(comm, Distribute::Samples)
}

/// [`processes`], saying what they share.
pub(crate) fn processes_sharing(comm: &dyn Communicator, what: Distribute) -> String {
    if comm.size() > 1 && what == Distribute::Chips {
        format!(", {} processes (each its share of the chips)", comm.size())
    } else if comm.size() > 1 && what == Distribute::ChipsSamples {
        format!(
            ", {} processes (groups sharing the chips, the groups sharing the samples)",
            comm.size()
        )
    } else if comm.size() > 1 {
        format!(", {} processes (each a shard of every batch)", comm.size())
    } else {
        String::new()
    }
}

pub(crate) fn substrate(path: &Option<PathBuf>) -> neuropart::Result<Substrate> {
    match path {
        Some(p) => Substrate::load(p),
        None => Ok(Substrate::bss2()),
    }
}

/// On a system: the estimated hardware time per sample and the links' measured traffic
/// (empty without a system).
pub(crate) fn system_summary(exec: &Executor, links: Option<&neuropart::LinkStats>) -> String {
    let Some(sys) = neuropart::SystemReport::new(&exec.plan, exec.network.steps) else {
        return String::new();
    };
    let mut s = format!(
        "system: {} system run{} on up to {} of {} chips, delivery delay {} step{}; estimated \
         hardware time {:.1} us per sample\n",
        sys.system_runs.len(),
        if sys.system_runs.len() == 1 { "" } else { "s" },
        sys.chips_used,
        sys.chips,
        sys.delay_steps,
        if sys.delay_steps == 1 { "" } else { "s" },
        sys.hardware_us_per_sample
    );
    match links {
        Some(l) => {
            s += &l.text(
                &exec
                    .plan
                    .substrate
                    .system
                    .as_ref()
                    .expect("a system")
                    .links(),
            )
        }
        None => s += "links: no spikes crossed chips while they ran\n",
    }
    s
}

/// Whether `a` and `b` name the same existing file (through links and relative paths too).
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Check that every process loaded the same data sets.
pub(crate) fn agree_on_data(
    comm: &dyn Communicator,
    sets: &[(&str, &Dataset)],
) -> neuropart::Result<()> {
    let items: Vec<(String, u64)> = sets
        .iter()
        .map(|(what, d)| (what.to_string(), d.digest()))
        .collect();
    neuropart::comm::agree(comm, &items)
}

/// Print warnings to stderr.
pub(crate) fn warn(lines: &[String]) {
    for w in lines {
        eprintln!("warning: {w}");
    }
}

/// The network of `target` with `steps` (if given) and a checkpoint's weights (if given; its
/// steps unless `steps` says otherwise, said out loud).
pub(crate) fn load_network(
    path: &Path,
    sub: &Substrate,
    steps: Option<u32>,
    checkpoint: Option<&Path>,
) -> neuropart::Result<(Network, Option<Checkpoint>)> {
    with_checkpoint(Network::load(path, sub)?, steps, checkpoint)
}

/// The steps checkpoint `path` was trained with (`steps`, where it records them) into `net`,
/// said out loud (where `say`) when they differ from the network file's.
pub(crate) fn take_checkpoint_steps(net: &mut Network, steps: Option<u32>, path: &Path, say: bool) {
    if let Some(s) = steps.filter(|&s| s != net.steps) {
        if say {
            eprintln!(
                "using {s} steps, as {} was trained with (the network file says {})",
                path.display(),
                net.steps
            );
        }
        net.steps = s;
    }
}

/// `net` with `steps` (if given) and a checkpoint's weights (if given; its steps unless
/// `steps` says otherwise, said out loud): [`load_network`] for a network already built.
pub(crate) fn with_checkpoint(
    mut net: Network,
    steps: Option<u32>,
    checkpoint: Option<&Path>,
) -> neuropart::Result<(Network, Option<Checkpoint>)> {
    let ck = match checkpoint {
        Some(c) => {
            let ck = Checkpoint::load(c)?;
            ck.apply_weights(&mut net, c)?;
            if steps.is_none() {
                take_checkpoint_steps(&mut net, ck.steps, c, true);
            }
            Some(ck)
        }
        None => None,
    };
    if let Some(s) = steps {
        net.steps = s;
    }
    Ok((net, ck))
}

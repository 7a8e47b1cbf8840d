//! The crate's one error type. Every variant carries what a user needs to act on it: the file,
//! the item (population, projection, field, option, sample) and the numbers (needed versus
//! available). Nothing here formats for a particular front end.

use std::path::PathBuf;

/// Everything that can go wrong in neuropart.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A file could not be parsed.
    #[error("{path}: cannot parse as {format}: {message}")]
    Parse {
        /// The file involved (or `<string>`).
        path: PathBuf,
        /// The format it was read as (`TOML`, `JSON`, `IDX`).
        format: &'static str,
        /// The parser's message, with line and column where known.
        message: String,
    },
    /// Something read from a file is wrong; `source` says what.
    #[error("{path}: {source}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        source: Box<Error>,
    },
    /// A network description is inconsistent.
    #[error("network: {item}: {problem}")]
    Network {
        /// The population or projection (e.g. `population 'hidden'`).
        item: String,
        /// What is wrong, with the numbers.
        problem: String,
    },
    /// A substrate description is inconsistent.
    #[error("substrate: {field}: {problem}")]
    Substrate {
        /// The field (or fields) involved.
        field: String,
        /// What is wrong, with the numbers.
        problem: String,
    },
    /// A parameter is not finite or out of its range.
    #[error("invalid parameter {name} of {owner}: {value} ({reason})")]
    Parameter {
        /// Population, projection or configuration that owns the parameter.
        owner: String,
        /// Parameter name.
        name: String,
        /// The offending value.
        value: f64,
        /// Which range it violates.
        reason: String,
    },
    /// A neuron needs more synaptic inputs than the largest logical neuron of the substrate offers.
    #[error(
        "population '{population}': fan-in of {fan_in} signed-equivalent inputs needs {needed} \
         synapse rows per neuron, but the largest logical neuron ({max_circuits} circuits) has {available} \
         (short by {})", needed - available
    )]
    FanInExceeded {
        /// The population whose neurons do not fit.
        population: String,
        /// Largest fan-in of one of its neurons.
        fan_in: usize,
        /// Synapse rows one neuron needs.
        needed: usize,
        /// Synapse rows of the largest logical neuron.
        available: usize,
        /// Circuits of the largest logical neuron.
        max_circuits: usize,
    },
    /// A recurrent subnetwork (strongly connected component) does not fit on one substrate.
    #[error(
        "recurrent subnetwork [{populations}] needs {needed} neuron circuits in one partition, \
         but the substrate has {available} (short by {}); every recurrent loop must run on one substrate \
         (a [system] section in the substrate file lets it span the chips of a multi-chip system)",
        needed - available
    )]
    RecurrentTooLarge {
        /// Names of the populations in the component.
        populations: String,
        /// Circuits needed.
        needed: usize,
        /// Circuits available.
        available: usize,
    },
    /// A recurrent subnetwork does not fit the chips of the whole system.
    #[error(
        "recurrent subnetwork [{populations}] needs {needed} neuron circuits, but the system's \
         {chips} chips x {per_chip} circuits hold {} (short by {}); a recurrent loop may span the \
         chips of one system run, never two: give the system more chips",
        chips * per_chip, needed.saturating_sub(chips * per_chip)
    )]
    RecurrentTooLargeForSystem {
        /// Names of the populations in the component.
        populations: String,
        /// Circuits needed.
        needed: usize,
        /// Chips of the system.
        chips: usize,
        /// Circuits per chip.
        per_chip: usize,
    },
    /// A partition needs more distinct input channels than one run may read.
    #[error(
        "population '{population}': {needed} distinct input channels exceed the {available} \
         that {limit} allows in one run (short by {})", needed - available
    )]
    InputSourcesExceeded {
        /// The population (range) that does not fit.
        population: String,
        /// Distinct sources needed.
        needed: usize,
        /// Sources addressable.
        available: usize,
        /// What sets the limit (the substrate field).
        limit: String,
    },
    /// Input spikes or data do not match the network.
    #[error("input {item}: {problem}")]
    Input {
        /// What (e.g. `population 'input', sample 3`).
        item: String,
        /// What is wrong, with the numbers.
        problem: String,
    },
    /// A dataset is missing, truncated or corrupt.
    #[error("dataset {path}: {problem}")]
    Dataset {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A checkpoint does not fit the network or the command line.
    #[error("checkpoint {path}: {problem}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What does not fit.
        problem: String,
    },
    /// A GPU adapter or device problem.
    #[error("GPU: {0}")]
    Gpu(String),
    /// A plan, run or training would need more memory than allowed.
    #[error(
        "{quantity} would need about {} but the memory limit is {} (set with --max-memory or \
         neuropart::set_memory_limit)",
        human_bytes(*needed),
        human_bytes(*limit)
    )]
    Memory {
        /// What needs it (e.g. `weights of projection 'input->hidden'`).
        quantity: String,
        /// Bytes estimated.
        needed: u64,
        /// Bytes allowed.
        limit: u64,
    },
    /// A command-line or configuration option has a value it cannot take.
    #[error("option {name} = {value}: {reason}")]
    Option {
        /// The option (e.g. `--lr`).
        name: String,
        /// Its value as given.
        value: String,
        /// What it must be.
        reason: String,
    },
    /// Training produced a non-finite loss or weight.
    #[error("training diverged in epoch {epoch}, batch {batch}: {what}")]
    Diverged {
        /// Epoch (1-based).
        epoch: usize,
        /// Batch within the epoch (1-based).
        batch: usize,
        /// What became non-finite.
        what: String,
    },
}

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wrap an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A network error about `item`.
    pub fn network(item: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Network {
            item: item.into(),
            problem: problem.into(),
        }
    }

    /// An input error about `item`.
    pub fn input(item: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Input {
            item: item.into(),
            problem: problem.into(),
        }
    }

    /// An option error.
    pub fn option(name: &str, value: impl ToString, reason: impl Into<String>) -> Self {
        Error::Option {
            name: name.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// This error, as found in `path` (unless it already names a file).
    pub fn in_file(self, path: impl Into<PathBuf>) -> Self {
        match self {
            e @ (Error::Io { .. }
            | Error::Parse { .. }
            | Error::InFile { .. }
            | Error::Dataset { .. }
            | Error::Checkpoint { .. }) => e,
            e => Error::InFile {
                path: path.into(),
                source: Box::new(e),
            },
        }
    }

    /// True for errors about what the user gave (files, networks, options, inputs, data)
    /// rather than about the device or the machine: what a caller reports as a bad value.
    pub fn is_user_error(&self) -> bool {
        match self {
            Error::Gpu(_) | Error::Io { .. } | Error::Diverged { .. } | Error::Memory { .. } => {
                false
            }
            Error::InFile { source, .. } => source.is_user_error(),
            _ => true,
        }
    }
}

/// `bytes` for people: `1.5 GiB`, `12 MiB`, `512 B`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Check that `value` is finite and within `[min, max]`; the error names owner and parameter.
pub fn check_range(owner: &str, name: &str, value: f64, min: f64, max: f64) -> Result<()> {
    if !value.is_finite() {
        return Err(Error::Parameter {
            owner: owner.to_string(),
            name: name.to_string(),
            value,
            reason: "must be finite".into(),
        });
    }
    if value < min || value > max {
        return Err(Error::Parameter {
            owner: owner.to_string(),
            name: name.to_string(),
            value,
            reason: format!("must lie in [{min}, {max}]"),
        });
    }
    Ok(())
}

//! The crate's one error type. Every variant carries the numbers a user needs to act on it
//! (which population, which constraint, needed versus available); nothing here formats for a
//! particular front end.

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
    /// A network, substrate or spike file could not be parsed.
    #[error("{path}: cannot parse: {message}")]
    Parse {
        /// The file involved (or `<string>`).
        path: PathBuf,
        /// The parser's message, with line and column where known.
        message: String,
    },
    /// A network description is inconsistent.
    #[error("invalid network: {0}")]
    InvalidNetwork(String),
    /// A substrate description is inconsistent.
    #[error("invalid substrate: {0}")]
    InvalidSubstrate(String),
    /// A parameter is not finite or out of its range.
    #[error("invalid parameter {name} of {owner}: {value} ({reason})")]
    InvalidParameter {
        /// Population, projection or substrate that owns the parameter.
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
         but the substrate has {available} (short by {}); every recurrent loop must run on one substrate",
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
    /// A partition needs more distinct input sources than the synapse drivers can address.
    #[error(
        "population '{population}': {needed} distinct input sources exceed the {available} that \
         the substrate's synapse rows can address (short by {})", needed - available
    )]
    InputSourcesExceeded {
        /// The population (range) that does not fit.
        population: String,
        /// Distinct sources needed.
        needed: usize,
        /// Sources addressable.
        available: usize,
    },
    /// Input spikes do not match the network.
    #[error("invalid input spikes: {0}")]
    InvalidInput(String),
    /// A dataset is missing, truncated or corrupt.
    #[error("dataset {path}: {message}")]
    Dataset {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A GPU adapter or device problem.
    #[error("GPU: {0}")]
    Gpu(String),
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
}

/// Check that `value` is finite and within `[min, max]`; the error names owner and parameter.
pub fn check_range(owner: &str, name: &str, value: f64, min: f64, max: f64) -> Result<()> {
    if !value.is_finite() {
        return Err(Error::InvalidParameter {
            owner: owner.to_string(),
            name: name.to_string(),
            value,
            reason: "must be finite".into(),
        });
    }
    if value < min || value > max {
        return Err(Error::InvalidParameter {
            owner: owner.to_string(),
            name: name.to_string(),
            value,
            reason: format!("must lie in [{min}, {max}]"),
        });
    }
    Ok(())
}

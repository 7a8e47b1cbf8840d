//! # neuropart
//!
//! An emulator of analog, accelerated neuromorphic hardware (a BrainScaleS-2 class chip) that
//! runs spiking neural networks larger than the chip: a network is cut into partitions that
//! each fit the chip, the partitions run one after another (or side by side on a multi-chip
//! system), and the spikes of one partition are recorded on the host and replayed into the next.
//!
//! - [`substrate`]: the chip (`Substrate::bss2()`, every field overridable).
//! - [`network`]: populations and projections (dense, conv2d, sparse, recurrent), TOML/JSON.
//! - [`partition`]: the [`Plan`]: partitions that fit, recurrent loops kept whole.
//! - [`schedule`]: waves, rounds and the cost report for one or several chips.
//! - [`spikes`]: compact host spike buffers, `Pod` for GPU upload.
//! - [`backend`]: the [`Backend`] trait and the [`CpuBackend`] reference.
//! - [`gpu`]: the `GpuBackend` (wgpu, WGSL kernels in `shaders/`), chunked by adapter limits.
//! - [`executor`]: runs a plan on a backend, recording and replaying spikes.
//! - [`analog`]: fixed-pattern variation, temporal noise, weight and readout quantisation.
//! - [`train`]: surrogate-gradient training from the emulator's observables, Adam, checkpoints.
//! - [`data`], [`encode`]: MNIST and EuroSAT loaders, time-to-first-spike encoding.
//! - [`experiment`], [`report`], [`mod@bench`]: runs with CSV/PNG output, plan views, throughput.
//!
//! ```
//! use neuropart::prelude::*;
//!
//! let substrate = Substrate::bss2();
//! let net = neuropart::network::mnist_network(1).build(&substrate).unwrap();
//! let exec = Executor::new(net, &substrate, 1, &PartitionOptions::default()).unwrap();
//! // The paper's Fig. 2A: four hidden partitions of 64 eight-circuit neurons, then the readout.
//! assert_eq!(exec.plan.partitions.len(), 5);
//! assert_eq!(exec.schedule.waves, vec![vec![0, 1, 2, 3], vec![4]]);
//!
//! // One bright pixel per sample, encoded time-to-first-spike.
//! let mut image = vec![0.0f32; 784];
//! image[400] = 1.0;
//! let input = neuropart::encode::ttfs_batch(&image, 784, exec.network.steps);
//! let out = exec.run(&CpuBackend, &[(0, input)], Observe::ReadoutTraces).unwrap();
//! let readout = out.membrane[2].as_ref().unwrap();
//! assert_eq!(readout.len(), 30 * 10);
//! ```
#![warn(missing_docs)]

pub mod analog;
pub mod backend;
pub mod bench;
pub mod compile;
pub mod data;
pub mod draw;
pub mod encode;
pub mod error;
pub mod executor;
pub mod experiment;
pub mod io;
pub mod network;
pub mod neuron;
pub mod partition;
pub mod report;
pub mod rng;
pub mod schedule;
pub mod spikes;
pub mod substrate;
pub mod train;

pub use backend::{gpu, Backend, CpuBackend};
pub use compile::PartitionProgram;
pub use error::{Error, Result};
pub use executor::Executor;
pub use network::{Network, NetworkBuilder};
pub use partition::{PartitionOptions, Plan};
pub use schedule::{Mode, Schedule};
pub use spikes::{SpikeEvent, SpikeTrains};
pub use substrate::Substrate;

/// The names most programs need.
pub mod prelude {
    pub use crate::backend::{Backend, CpuBackend};
    pub use crate::executor::{Executor, Observe};
    pub use crate::network::{Network, NetworkBuilder, PopulationKind};
    pub use crate::neuron::NeuronParams;
    pub use crate::partition::{PartitionOptions, Plan};
    pub use crate::schedule::{Mode, Schedule};
    pub use crate::spikes::{SpikeEvent, SpikeTrains};
    pub use crate::substrate::Substrate;
}

//! # neuropart
//!
//! An emulator of analog, accelerated neuromorphic hardware (a BrainScaleS-2 class chip) that
//! runs spiking neural networks larger than the chip: a network is cut into partitions that
//! each fit the chip, the partitions run one after another (or side by side on a multi-chip
//! system), and the spikes of one partition are recorded on the host and replayed into the next.
//!
//! The pieces, in the order data flows through them:
//!
//! - [`Network`] (populations and projections, TOML/JSON) and [`Substrate`] (the chip,
//!   [`Substrate::bss2`] or any planned variant) go into a [`Plan`]: partitions that fit,
//!   recurrent loops kept whole.
//! - A [`Schedule`] orders the partitions into rounds of at most `chips` partitions.
//! - An [`Executor`] compiles every partition ([`PartitionProgram`]), prepares it once on a
//!   [`Backend`] ([`CpuBackend`] or [`GpuBackend`]) and runs batches: rounds in order,
//!   partitions of a round at the same time, spikes recorded into and replayed from the host
//!   [`SpikeStore`].
//! - [`AnalogConfig`] and [`Mode`] make partitions emulated: fixed-pattern variation, temporal
//!   noise, weight and readout quantisation.
//! - A [`Trainer`] trains with surrogate gradients from the emulator's observables, backward
//!   through time across recurrent loops and the links of a system.
//! - [`data`] loads MNIST-like IDX sets and EuroSAT, [`encode`] turns images into spikes,
//!   [`plot`] draws figures, [`bench`](mod@bench) measures throughput, [`experiment`] runs a whole
//!   training with its outputs.
//!
//! ```
//! use neuropart::prelude::*;
//!
//! let substrate = Substrate::bss2();
//! let net = neuropart::mnist_network(1).build(&substrate).unwrap();
//! let exec = Executor::new(net, &substrate, 1, &PartitionOptions::default()).unwrap();
//! // The paper's Fig. 2A: four hidden partitions of 64 eight-circuit neurons, then the readout.
//! assert_eq!(exec.plan.partitions.len(), 5);
//! assert_eq!(exec.schedule.waves, vec![vec![0, 1, 2, 3], vec![4]]);
//!
//! // One bright pixel, encoded time-to-first-spike like the training data.
//! let mut image = vec![0.0f32; 784];
//! image[400] = 1.0;
//! let input = SpikeTrains::from_samples(784, 30, vec![neuropart::encode::image(&image, 30)]);
//! let out = exec.run(&CpuBackend, &[(0, input)], Observe::ReadoutTraces).unwrap();
//! // Results are arrays indexed [sample, step, neuron] (scores: [sample, neuron]).
//! let readout = out.membranes(2).unwrap();
//! assert_eq!(readout.dim(), (1, 30, 10));
//! assert_eq!(out.scores(2).unwrap().dim(), (1, 10));
//! ```
#![warn(missing_docs)]

// Ground floor: used by every stage.
mod adam;
mod dist;
mod error;
mod files;
mod memory;
mod pool;
mod rng;
mod simd;
mod threads;

// The stages, in the order data flows through them; a folder imports only folders above it
// in this list (checked by `tests/layout.rs`).
mod backend;
pub mod io;
mod model;
mod plan;
mod run;
mod spikes;
mod train;

pub mod bench;
pub mod data;
pub mod experiment;

pub use dist::comm;
pub use io::plot;
/// The array crate of results and inputs ([`Execution::membranes`], [`SpikeTrains::from_dense`]).
pub use ndarray;
pub use spikes::encode;
pub use spikes::encode::Encoding;

/// The GPU backend's pieces: its context, shaders and the layouts they share with the host.
pub mod gpu {
    pub use crate::backend::gpu::feedforward::blocked_words;
    pub use crate::backend::gpu::{
        binding, mirrored_layouts, quiet_vulkan_loader, GpuBackend, GpuContext, GpuState,
        SimParams, MAX_SOURCES, SHADERS, WG,
    };
}

pub use backend::{
    gpu_backend_in, open_backend, open_backend_in, Backend, CpuBackend, DeviceChoice, GpuBackend,
    GpuContext, Job, MembraneDest, Membranes, PartitionOutput, PhaseTimings, RankTraffic, Ranks,
    Resident, RunOptions, Stepping,
};
pub use data::Dataset;
pub use error::{human_bytes, Error, Result};
pub use experiment::Setup;
pub use io::report::{LinkReport, PlanReport, SystemReport};
pub use memory::{
    check as check_memory, machine_memory, memory_limit, parse_size, peak_resident,
    product as memory_product, set_memory_limit, COMPILED_BYTES_PER_SYNAPSE,
};
pub use model::analog::{AnalogConfig, Cadc, Chip, Mode, WeightMap};
pub use model::network::{
    mnist_network, Connectivity, Format, Network, NetworkBuilder, PerNeuron, Population,
    PopulationId, PopulationKind, Projection, Score, Sign, WeightInit, MAX_DELAY, MAX_POPULATION,
    MAX_STEPS,
};
pub use model::neuron::{lif_step, Integration, LifState, NeuronCoeffs, NeuronParams, Update};
pub use model::substrate::Substrate;
pub use model::system::{
    DropReason, LinkStats, LinkTopology, Links, Node, Overflow, Router, System,
};
pub use plan::compile::{
    precision_warnings, ChannelBlock, CompileContext, PartitionProgram, Synapse, WeightRef,
};
pub use plan::partition::{
    split_range, LinkSteps, NeuronRange, Origin, Partition, PartitionOptions, PlacedRange,
    Placement, Plan, Source, SystemPlan,
};
pub use plan::schedule::{CostReport, Schedule};
pub use rng::Rng;
pub use run::executor::{CodeTrace, Emulation, Execution, ExecutionStats, Executor, Observe};
pub use run::ranks::RankShare;
pub use spikes::store::{SpikeEvent, SpikeFile, SpikeStore, SpikeTrains};
pub use threads::{start_worker_threads, worker_threads, MAX_THREADS};
pub use train::{
    gradients, gradients_from, readout_scores, silence_warnings, Adam, BatchStats, Checkpoint,
    EpochRecord, PopulationShape, ProjectionShape, StepTimings, Structure, Topology, TrainConfig,
    TrainMemory, Trainer, Upstream,
};

/// The names most programs need.
pub mod prelude {
    pub use crate::{
        AnalogConfig, Backend, CpuBackend, Executor, Mode, Network, NetworkBuilder, NeuronParams,
        Observe, PartitionOptions, Plan, PopulationKind, Schedule, SpikeEvent, SpikeTrains,
        Substrate,
    };
}

//! What is emulated: the network (populations, projections), the neuron model, the chip
//! (substrate), a system of chips and the analog effects. Imports nothing above it.

pub(crate) mod analog;
pub(crate) mod network;
pub(crate) mod neuron;
pub(crate) mod substrate;
pub(crate) mod system;

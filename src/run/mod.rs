//! Running a plan: the executor that prepares every partition on a backend and runs batches
//! round by round, with the spikes of a system's links exchanged between chips.

pub(crate) mod executor;
pub mod ranks;

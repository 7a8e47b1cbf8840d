//! How a network goes onto the chips: partitions that fit, their placement on a system,
//! the schedule of rounds, the compiled program of each partition and the memory checks.

pub(crate) mod compile;
pub(crate) mod emulated;
pub(crate) mod partition;
pub(crate) mod placement;
pub(crate) mod schedule;

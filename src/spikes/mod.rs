//! Spikes on the host: the store that records and replays them between partitions, spike
//! files, and the encoders that turn images into spikes.

pub mod encode;
pub(crate) mod store;

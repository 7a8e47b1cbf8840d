//! Distribution over processes: the MPI communicator (or a single process without it).

pub mod comm;

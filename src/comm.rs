//! How processes that train one model together talk: a small communicator with two
//! implementations, the single process ([`Single`], the default) and MPI ([`Mpi`], feature
//! `mpi`, over the system's OpenMPI through the `mpi` crate). Only the main thread calls it,
//! between parallel regions. Nothing here decides what is summed in which order: callers
//! gather every process's values and combine them in their own fixed order, so results do not
//! depend on the number of processes.

/// A group of processes.
pub trait Communicator {
    /// This process's index.
    fn rank(&self) -> usize;
    /// Processes in the group.
    fn size(&self) -> usize;
    /// Every process's `local` values (any length each), in rank order, on every process.
    fn all_gather(&self, local: &[f32]) -> Vec<Vec<f32>>;
    /// As [`Communicator::all_gather`], for `f64`.
    fn all_gather_f64(&self, local: &[f64]) -> Vec<Vec<f64>>;
}

/// One process alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct Single;

impl Communicator for Single {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn all_gather(&self, local: &[f32]) -> Vec<Vec<f32>> {
        vec![local.to_vec()]
    }

    fn all_gather_f64(&self, local: &[f64]) -> Vec<Vec<f64>> {
        vec![local.to_vec()]
    }
}

#[cfg(feature = "mpi")]
pub use with_mpi::Mpi;

#[cfg(feature = "mpi")]
mod with_mpi {
    use super::Communicator as Group;
    use mpi::datatype::PartitionMut;
    use mpi::environment::{Threading, Universe};
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::*;
    use mpi::Count;

    /// `MPI_COMM_WORLD`; MPI is finalised when this is dropped (keep it for the whole run).
    pub struct Mpi {
        world: SimpleCommunicator,
        _universe: Universe,
    }

    impl std::fmt::Debug for Mpi {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "Mpi(rank {} of {})",
                Group::rank(self),
                Group::size(self)
            )
        }
    }

    impl Mpi {
        /// Initialise MPI (the main thread calls MPI, rayon's threads compute); `None` if it
        /// was initialised before.
        pub fn init() -> Option<Self> {
            let (universe, _) = mpi::initialize_with_threading(Threading::Funneled)?;
            Some(Mpi {
                world: universe.world(),
                _universe: universe,
            })
        }

        /// This process's index among the processes of its node (to pick a GPU).
        pub fn local_rank(&self) -> usize {
            self.world.split_shared(self.world.rank()).rank() as usize
        }

        fn gather<T: Equivalence + Default + Clone>(&self, local: &[T]) -> Vec<Vec<T>> {
            let n = Group::size(self);
            let mine = local.len() as Count;
            let mut counts = vec![0 as Count; n];
            self.world.all_gather_into(&mine, &mut counts[..]);
            let displs: Vec<Count> = counts
                .iter()
                .scan(0, |acc, &c| {
                    let d = *acc;
                    *acc += c;
                    Some(d)
                })
                .collect();
            let total: usize = counts.iter().map(|&c| c as usize).sum();
            let mut buf = vec![T::default(); total];
            {
                let mut part = PartitionMut::new(&mut buf[..], &counts[..], &displs[..]);
                self.world.all_gather_varcount_into(local, &mut part);
            }
            let mut out = Vec::with_capacity(n);
            for (&c, &d) in counts.iter().zip(&displs) {
                out.push(buf[d as usize..(d + c) as usize].to_vec());
            }
            out
        }
    }

    impl Group for Mpi {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }

        fn size(&self) -> usize {
            self.world.size() as usize
        }

        fn all_gather(&self, local: &[f32]) -> Vec<Vec<f32>> {
            self.gather(local)
        }

        fn all_gather_f64(&self, local: &[f64]) -> Vec<Vec<f64>> {
            self.gather(local)
        }
    }
}

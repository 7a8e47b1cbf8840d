//! How processes that work together talk: a small communicator with two implementations, the
//! single process ([`Single`], the default) and MPI (`Mpi`, feature `mpi`, over the system's
//! OpenMPI through the `mpi` crate). Only the main thread calls it, between parallel regions.
//! Nothing here decides what is summed in which order: callers gather every process's values
//! and combine them in their own fixed order, so results do not depend on the number of
//! processes. [`shard`] says which contiguous part of `n` items a process takes.

use std::ops::Range;

/// A group of processes. Implementations provide the byte all-gather; the typed gathers and
/// the barrier are built on it.
///
/// Every exchange waits for every process: a process that stops early (an error, a panic)
/// leaves the others waiting in their next exchange. Callers stop the whole group then
/// ([`Communicator::abort`]), as the command line and the examples do.
pub trait Communicator {
    /// This process's index.
    fn rank(&self) -> usize;
    /// Processes in the group.
    fn size(&self) -> usize;
    /// Every process's `local` bytes (any length each), in rank order, on every process.
    fn all_gather_bytes(&self, local: &[u8]) -> Vec<Vec<u8>>;
    /// This process's index among the processes on its machine (which GPU it takes).
    fn local_rank(&self) -> usize {
        0
    }
    /// Every process's `local` values (any length each), in rank order, on every process.
    fn all_gather(&self, local: &[f32]) -> Vec<Vec<f32>> {
        self.all_gather_bytes(bytemuck::cast_slice(local))
            .iter()
            .map(|b| bytemuck::pod_collect_to_vec(b))
            .collect()
    }
    /// As [`Communicator::all_gather`], for `f64`.
    fn all_gather_f64(&self, local: &[f64]) -> Vec<Vec<f64>> {
        self.all_gather_bytes(bytemuck::cast_slice(local))
            .iter()
            .map(|b| bytemuck::pod_collect_to_vec(b))
            .collect()
    }
    /// Wait until every process got here.
    fn barrier(&self) {
        self.all_gather_bytes(&[]);
    }
    /// Stop every process of the group (after an error in this one, so that the others do
    /// not wait for it forever). A single process has nothing to stop.
    fn abort(&self, _code: i32) {}
    /// The processes of this group that gave the same `color`, as a group of their own, ranked
    /// as here. Every process of the group must call it (one exchange).
    fn split(&self, color: usize) -> Box<dyn Communicator>;
    /// Where this group is the samples' axis of a [`Grid`]: the processes that share this
    /// one's chips.
    fn chips(&self) -> Option<&dyn Communicator> {
        None
    }
    /// Whether this process reports (prints, writes files) for the whole group: the first.
    fn leads(&self) -> bool {
        self.rank() == 0
    }
}

/// The processes of a run spread both ways (`--distribute chips,samples`): groups of
/// consecutive processes share out the chips of every round, the groups share out the samples.
/// As a [`Communicator`] it is the samples' axis (this process and those at its place in the
/// other groups); [`Communicator::chips`] gives its group. The first process of the first group
/// leads.
pub struct Grid {
    samples: Box<dyn Communicator>,
    chips: Box<dyn Communicator>,
    local_rank: usize,
    lead: bool,
}

impl std::fmt::Debug for Grid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Grid(chips {} of {}, samples {} of {})",
            self.chips.rank(),
            self.chips.size(),
            self.samples.rank(),
            self.samples.size()
        )
    }
}

impl Grid {
    /// The processes of `world` in groups of `per_group` consecutive ones that share the
    /// chips (every process calls it: two exchanges). An error unless `per_group` divides the
    /// process count.
    pub fn new(world: &dyn Communicator, per_group: usize) -> crate::error::Result<Grid> {
        if per_group == 0 || !world.size().is_multiple_of(per_group) {
            return Err(crate::error::Error::input(
                "--chip-ranks",
                format!(
                    "{per_group} processes per group of chips do not divide the {} processes",
                    world.size()
                ),
            ));
        }
        let (group, place) = (world.rank() / per_group, world.rank() % per_group);
        let chips = world.split(group);
        let samples = world.split(place);
        Ok(Grid {
            samples,
            chips,
            local_rank: world.local_rank(),
            lead: world.rank() == 0,
        })
    }
}

impl Communicator for Grid {
    fn rank(&self) -> usize {
        self.samples.rank()
    }

    fn size(&self) -> usize {
        self.samples.size()
    }

    fn all_gather_bytes(&self, local: &[u8]) -> Vec<Vec<u8>> {
        self.samples.all_gather_bytes(local)
    }

    fn all_gather(&self, local: &[f32]) -> Vec<Vec<f32>> {
        self.samples.all_gather(local)
    }

    fn all_gather_f64(&self, local: &[f64]) -> Vec<Vec<f64>> {
        self.samples.all_gather_f64(local)
    }

    fn local_rank(&self) -> usize {
        self.local_rank
    }

    fn abort(&self, code: i32) {
        self.samples.abort(code)
    }

    fn split(&self, color: usize) -> Box<dyn Communicator> {
        self.samples.split(color)
    }

    fn chips(&self) -> Option<&dyn Communicator> {
        Some(&*self.chips)
    }

    fn leads(&self) -> bool {
        self.lead
    }
}

/// A 64-bit FNV-1a digest of `bytes` (the same on every machine and build: what [`agree`]
/// compares).
pub fn digest(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The item [`agree`] compares for the process's command line (its arguments).
pub fn command_line() -> (String, u64) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    (
        "command line".to_string(),
        digest(args.join("\0").as_bytes()),
    )
}

/// Check that every process was given the same things: `items` are (what, its digest) — the
/// command line, each input file, each data set — in the same order on every process. On a
/// difference every process returns the same error, naming the first item that differs and the
/// processes, so that a group started with different files or options stops at once instead
/// of hanging or blending their results. One exchange; nothing with one process.
pub fn agree(comm: &dyn Communicator, items: &[(String, u64)]) -> crate::error::Result<()> {
    if comm.size() < 2 {
        return Ok(());
    }
    let mut mine = Vec::new();
    for (what, d) in items {
        mine.extend_from_slice(&d.to_le_bytes());
        mine.extend_from_slice(&(what.len() as u32).to_le_bytes());
        mine.extend_from_slice(what.as_bytes());
    }
    let all = comm.all_gather_bytes(&mine);
    let parse = |b: &[u8]| -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut k = 0;
        while k + 12 <= b.len() {
            let d = u64::from_le_bytes(b[k..k + 8].try_into().expect("8 bytes"));
            let n = u32::from_le_bytes(b[k + 8..k + 12].try_into().expect("4 bytes")) as usize;
            let what = String::from_utf8_lossy(&b[k + 12..(k + 12 + n).min(b.len())]).into_owned();
            out.push((what, d));
            k += 12 + n;
        }
        out
    };
    let first = parse(&all[0]);
    for (r, b) in all.iter().enumerate().skip(1) {
        let other = parse(b);
        for k in 0..first.len().max(other.len()) {
            let (a, o) = (first.get(k), other.get(k));
            if a != o {
                let what = a.or(o).map_or("?", |x| x.0.as_str());
                return Err(crate::error::Error::input(
                    "the processes",
                    format!(
                        "process {r} of {} was given another {what} than process 0 (digest \
                         {:016x} vs {:016x}); every process must run the same command on the same \
                         files and data",
                        comm.size(),
                        o.map_or(0, |x| x.1),
                        a.map_or(0, |x| x.1)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The contiguous part of `n` items that process `rank` of `size` takes: the first `n % size`
/// processes one more than the rest, in rank order.
pub fn shard(n: usize, size: usize, rank: usize) -> Range<usize> {
    let size = size.max(1);
    let (q, r) = (n / size, n % size);
    let start = rank * q + rank.min(r);
    start..start + q + usize::from(rank < r)
}

/// `f` on the first process, then on the first process of each other machine, then on the
/// rest, each wave after the one before finished: for work that fills a cache, such as fetching
/// a data set, so that one process fills a cache shared by all machines, or one per machine
/// fills that machine's own, and the others only read.
pub fn first_then_rest<T>(comm: &dyn Communicator, f: impl FnOnce() -> T) -> T {
    let wave = if comm.rank() == 0 {
        0
    } else if comm.local_rank() == 0 {
        1
    } else {
        2
    };
    let mut f = Some(f);
    let mut out = None;
    for w in 0..3 {
        if w == wave {
            out = f.take().map(|f| f());
        }
        comm.barrier();
    }
    out.expect("every process is in one wave")
}

/// The processes this program was started as: all of `mpirun`'s (binary built with feature
/// `mpi`), else this one alone. Keep it for the whole run (dropping it finalises MPI). With
/// several processes, a panic in one ends it at once (after the usual message), so that the
/// launcher stops the others instead of leaving them waiting.
pub fn world() -> Box<dyn Communicator> {
    #[cfg(feature = "mpi")]
    if let Some(m) = Mpi::init() {
        if Communicator::size(&m) > 1 {
            let report = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                report(info);
                std::process::abort();
            }));
        }
        return Box::new(m);
    }
    Box::new(Single)
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

    fn all_gather_bytes(&self, local: &[u8]) -> Vec<Vec<u8>> {
        vec![local.to_vec()]
    }

    fn split(&self, _color: usize) -> Box<dyn Communicator> {
        Box::new(Single)
    }
}

/// Processes played by threads of this one: `ThreadGroup::new(n)` gives the `n` members, one
/// for each thread to hold; their exchanges meet in shared memory. What MPI does, without
/// MPI: for tests, and for trying a run spread over processes on one machine. Every member
/// must take part in every exchange, as with MPI.
#[derive(Clone, Debug)]
pub struct ThreadGroup {
    rank: usize,
    shared: std::sync::Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    size: usize,
    /// Members arrived at the barrier, its generation, and whether a member failed.
    gate: std::sync::Mutex<(usize, u64, bool)>,
    opened: std::sync::Condvar,
    slots: std::sync::Mutex<Vec<Vec<u8>>>,
    /// The groups a split made, by color, until every member took its own.
    made: std::sync::Mutex<std::collections::HashMap<usize, std::sync::Arc<Shared>>>,
    /// The group this one was split from (a failure there stops this one too).
    parent: Option<std::sync::Arc<Shared>>,
}

impl Shared {
    fn new(size: usize, parent: Option<std::sync::Arc<Shared>>) -> Self {
        Shared {
            size,
            gate: std::sync::Mutex::new((0, 0, false)),
            opened: std::sync::Condvar::new(),
            slots: std::sync::Mutex::new(vec![Vec::new(); size]),
            made: Default::default(),
            parent,
        }
    }

    /// Whether a member of this group, or of a group it was split from, failed.
    fn failed(&self) -> bool {
        self.gate.lock().map_or(true, |g| g.2) || self.parent.as_ref().is_some_and(|p| p.failed())
    }

    /// Wait until every member got here; a panic if a member failed (instead of waiting for
    /// it forever).
    fn wait(&self) {
        let mut g = self.gate.lock().expect("not poisoned");
        let generation = g.1;
        g.0 += 1;
        if g.0 == self.size {
            g.0 = 0;
            g.1 += 1;
            self.opened.notify_all();
            return;
        }
        while g.1 == generation {
            let (next, _) = self
                .opened
                .wait_timeout(g, std::time::Duration::from_millis(50))
                .expect("not poisoned");
            g = next;
            if g.2 || self.parent.as_ref().is_some_and(|p| p.failed()) {
                panic!("another process of the group failed");
            }
        }
    }

    fn fail(&self) {
        if let Ok(mut g) = self.gate.lock() {
            g.2 = true;
        }
        self.opened.notify_all();
    }
}

impl ThreadGroup {
    /// The `n` members of a new group (at least one).
    pub fn new(n: usize) -> Vec<ThreadGroup> {
        let n = n.max(1);
        let shared = std::sync::Arc::new(Shared::new(n, None));
        (0..n)
            .map(|rank| ThreadGroup {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }
}

impl ThreadGroup {
    /// `f` in `n` processes played by threads, one member each; their results in rank order.
    /// A process that panics stops the others at their next exchange (they panic too, instead
    /// of waiting for it), and the panic reaches the caller.
    pub fn run<T: Send>(n: usize, f: impl Fn(&ThreadGroup) -> T + Sync) -> Vec<T> {
        /// Marks the group failed when its thread unwinds.
        struct Guard<'a>(&'a ThreadGroup);
        impl Drop for Guard<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.shared.fail();
                }
            }
        }
        let group = ThreadGroup::new(n);
        std::thread::scope(|sc| {
            let handles: Vec<_> = group
                .iter()
                .map(|comm| {
                    let f = &f;
                    sc.spawn(move || {
                        let _guard = Guard(comm);
                        f(comm)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    }
}

impl Communicator for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn all_gather_bytes(&self, local: &[u8]) -> Vec<Vec<u8>> {
        let slots = &self.shared.slots;
        slots.lock().expect("not poisoned")[self.rank] = local.to_vec();
        // Everyone wrote before anyone reads, everyone read before anyone writes again.
        self.shared.wait();
        let all = slots.lock().expect("not poisoned").clone();
        self.shared.wait();
        all
    }

    fn abort(&self, _code: i32) {
        self.shared.fail();
    }

    fn split(&self, color: usize) -> Box<dyn Communicator> {
        let colors: Vec<usize> = self
            .all_gather_bytes(&(color as u64).to_le_bytes())
            .iter()
            .map(|b| u64::from_le_bytes(b[..8].try_into().expect("8 bytes")) as usize)
            .collect();
        let members: Vec<usize> = (0..colors.len()).filter(|&r| colors[r] == color).collect();
        let rank = members
            .iter()
            .position(|&r| r == self.rank)
            .expect("a member");
        // The first member makes the group; the others take it after the barrier.
        if rank == 0 {
            let g = std::sync::Arc::new(Shared::new(members.len(), Some(self.shared.clone())));
            self.shared
                .made
                .lock()
                .expect("not poisoned")
                .insert(color, g);
        }
        self.shared.wait();
        let shared = self.shared.made.lock().expect("not poisoned")[&color].clone();
        self.shared.wait();
        if rank == 0 {
            self.shared
                .made
                .lock()
                .expect("not poisoned")
                .remove(&color);
        }
        Box::new(ThreadGroup { rank, shared })
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
        local_rank: usize,
        /// The world's (MPI is finalised when it is dropped); none for a group split from it.
        _universe: Option<Universe>,
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
            let world = universe.world();
            let local_rank = world.split_shared(world.rank()).rank() as usize;
            Some(Mpi {
                world,
                local_rank,
                _universe: Some(universe),
            })
        }
    }

    impl Group for Mpi {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }

        fn size(&self) -> usize {
            self.world.size() as usize
        }

        fn local_rank(&self) -> usize {
            self.local_rank
        }

        fn abort(&self, code: i32) {
            self.world.abort(code)
        }

        fn all_gather_bytes(&self, local: &[u8]) -> Vec<Vec<u8>> {
            self.gather(local)
        }

        fn split(&self, color: usize) -> Box<dyn Group> {
            let Ok(c) = i32::try_from(color) else {
                panic!("color {color} of a split is beyond MPI's colors (up to 2^31 - 1)")
            };
            let world = self
                .world
                .split_by_color(mpi::topology::Color::with_value(c))
                .expect("every process gave a color");
            Box::new(Mpi {
                world,
                local_rank: self.local_rank,
                _universe: None,
            })
        }

        // Typed, so that the values need no conversion from and to bytes.
        fn all_gather(&self, local: &[f32]) -> Vec<Vec<f32>> {
            self.gather(local)
        }

        fn all_gather_f64(&self, local: &[f64]) -> Vec<Vec<f64>> {
            self.gather(local)
        }
    }

    impl Mpi {
        fn gather<T: Equivalence + Copy + Default>(&self, local: &[T]) -> Vec<Vec<T>> {
            // An empty slice's dangling address can be 1, which OpenMPI reads as
            // MPI_IN_PLACE: hand it real (unused) memory instead.
            let dummy = [T::default(); 1];
            let local = if local.is_empty() { &dummy[..0] } else { local };
            let n = Group::size(self);
            let Ok(mine) = Count::try_from(local.len()) else {
                panic!(
                    "one process's share of an exchange is {} values, MPI counts up to 2^31 - 1",
                    local.len()
                )
            };
            let mut counts = vec![0 as Count; n];
            self.world.all_gather_into(&mine, &mut counts[..]);
            let displs: Vec<Count> = counts
                .iter()
                .scan(0 as Count, |acc, &c| {
                    let d = *acc;
                    *acc += c;
                    Some(d)
                })
                .collect();
            let total: usize = counts.iter().map(|&c| c as usize).sum();
            // Positions in the gathered buffer are MPI counts too.
            if total > Count::MAX as usize {
                panic!(
                    "an exchange of {total} values in all (the processes' shares: {counts:?}); \
                     MPI places up to 2^31 - 1: use more, smaller batches"
                )
            }
            let mut buf = vec![T::default(); total + 1];
            {
                let mut part = PartitionMut::new(&mut buf[..total], &counts[..], &displs[..]);
                self.world.all_gather_varcount_into(local, &mut part);
            }
            counts
                .iter()
                .zip(&displs)
                .map(|(&c, &d)| buf[d as usize..(d + c) as usize].to_vec())
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_item_once_in_order() {
        for n in [0usize, 1, 5, 16, 17, 1000] {
            for size in 1..6 {
                let parts: Vec<_> = (0..size).map(|r| shard(n, size, r)).collect();
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts[size - 1].end, n);
                for w in parts.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
                assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1);
            }
        }
        assert_eq!(shard(5, 2, 0), 0..3);
        assert_eq!(shard(5, 2, 1), 3..5);
    }

    #[test]
    fn a_thread_group_gathers_every_members_bytes_in_rank_order() {
        let group = ThreadGroup::new(3);
        let got: Vec<Vec<Vec<u8>>> = std::thread::scope(|s| {
            let handles: Vec<_> = group
                .iter()
                .map(|c| {
                    s.spawn(move || {
                        // Two exchanges in a row: the second must not see the first's bytes.
                        let first = c.all_gather_bytes(&vec![c.rank() as u8; c.rank()]);
                        let second = c.all_gather_bytes(&[10 + c.rank() as u8]);
                        assert_eq!(first, vec![vec![], vec![1], vec![2, 2]]);
                        second
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for g in got {
            assert_eq!(g, vec![vec![10], vec![11], vec![12]]);
        }
    }

    #[test]
    fn a_split_group_gathers_only_its_members_ranked_as_before() {
        let group = ThreadGroup::new(5);
        let got: Vec<(usize, usize, Vec<Vec<u8>>)> = std::thread::scope(|s| {
            let handles: Vec<_> = group
                .iter()
                .map(|c| {
                    s.spawn(move || {
                        // Colors 0, 1, 0, 1, 0: members 0, 2, 4 and 1, 3.
                        let sub = c.split(c.rank() % 2);
                        let all = sub.all_gather_bytes(&[c.rank() as u8]);
                        (sub.rank(), sub.size(), all)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let even = vec![vec![0u8], vec![2], vec![4]];
        let odd = vec![vec![1u8], vec![3]];
        assert_eq!(got[0], (0, 3, even.clone()));
        assert_eq!(got[1], (0, 2, odd.clone()));
        assert_eq!(got[2], (1, 3, even.clone()));
        assert_eq!(got[3], (1, 2, odd));
        assert_eq!(got[4], (2, 3, even));
        assert!(
            Grid::new(&Single, 2).is_err(),
            "2 per group do not divide 1 process"
        );
    }

    #[test]
    fn a_process_that_fails_stops_the_others_instead_of_leaving_them_waiting() {
        let got = std::panic::catch_unwind(|| {
            ThreadGroup::run(3, |c| {
                let sub = c.split(0);
                if c.rank() == 1 {
                    panic!("process 1 fails");
                }
                // The others wait in an exchange process 1 never reaches.
                sub.all_gather_bytes(&[1]);
            })
        });
        assert!(got.is_err(), "the failure reaches the caller");
    }

    #[test]
    fn typed_gathers_round_trip_through_bytes() {
        let v = [1.5f32, -0.0, f32::MIN_POSITIVE, 3.25];
        assert_eq!(Single.all_gather(&v), vec![v.to_vec()]);
        let d = [1e300f64, -2.5];
        assert_eq!(Single.all_gather_f64(&d), vec![d.to_vec()]);
    }
}

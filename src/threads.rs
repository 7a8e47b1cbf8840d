//! The worker threads of the CPU path: how many (`RAYON_NUM_THREADS`, else one per core),
//! checked, so that a bad value is an error that names the variable instead of a panic
//! inside the thread pool.

use crate::error::{Error, Result};

/// Most worker threads a process starts.
pub const MAX_THREADS: usize = 1024;

/// The number of worker threads: `RAYON_NUM_THREADS` when set (1 to [`MAX_THREADS`]), else
/// one per core.
pub fn worker_threads() -> Result<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    threads_from(std::env::var("RAYON_NUM_THREADS").ok().as_deref(), cores)
}

/// [`worker_threads`] for the variable's value `var` on a machine of `cores` cores.
fn threads_from(var: Option<&str>, cores: usize) -> Result<usize> {
    let Some(v) = var.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(cores);
    };
    match v.parse::<usize>() {
        // rayon's own meaning of 0: one per core.
        Ok(0) => Ok(cores),
        Ok(n) if n <= MAX_THREADS => Ok(n),
        Ok(n) => Err(Error::option(
            "RAYON_NUM_THREADS",
            n,
            format!("at most {MAX_THREADS} worker threads ({cores} cores here)"),
        )),
        Err(_) => Err(Error::option(
            "RAYON_NUM_THREADS",
            v,
            "a number of worker threads, e.g. 4",
        )),
    }
}

/// Start the process's global worker threads ([`worker_threads`] of them); an error names
/// the variable or what the system refused. Call it once at the start of a program.
pub fn start_worker_threads() -> Result<()> {
    let n = worker_threads()?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| {
            Error::option(
                "RAYON_NUM_THREADS",
                n,
                format!("cannot start {n} worker threads: {e}"),
            )
        })
}

/// `f()` on the calling thread if it is a worker of a pool (the Python bindings run in one of
/// their own), else on a worker of the global pool while the caller waits. Work that forks
/// and joins many times (a training step: the forward pass, the backward pass and the
/// optimiser each a few parallel loops) then forks among the pool's threads, where from
/// outside a pool every loop handed its work to the pool and put the caller to sleep until it
/// was done: two more thread switches per loop. The MNIST training step at T = 30 on 2 cores
/// ran ~10 % faster so from the command line and Rust (inference, with fewer loops a batch,
/// unchanged: not used there).
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// `data` cut for the worker threads into pieces of about `piece` values (at least), each
/// ending where one of a list of consecutive items ends: `ends[j]` is where item `j`'s values
/// end in `data` (non-decreasing; an item may hold none). Per piece: its items, where it
/// starts in `data`, and its values. The pieces cover `data` up to the last item's end.
pub fn pieces_at<T>(
    data: &mut [T],
    ends: impl IntoIterator<Item = usize>,
    piece: usize,
) -> Vec<(std::ops::Range<usize>, usize, &mut [T])> {
    let mut pieces = Vec::new();
    let mut rest = data;
    let (mut first, mut base) = (0, 0);
    let mut ends = ends.into_iter().enumerate().peekable();
    while let Some((j, end)) = ends.next() {
        if end - base >= piece || ends.peek().is_none() {
            let (values, r) = std::mem::take(&mut rest).split_at_mut(end - base);
            pieces.push((first..j + 1, base, values));
            (rest, first, base) = (r, j + 1, end);
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Called from outside the pool (the test's own thread), `on_pool` runs its work on one of
    /// the pool's workers, where the parallel loops inside fork without waking the caller;
    /// called there again, it runs in place.
    #[test]
    fn on_pool_runs_the_work_on_a_worker_of_the_pool() {
        assert_eq!(
            rayon::current_thread_index(),
            None,
            "the test thread is no worker"
        );
        let (outer, inner) = on_pool(|| {
            let outer = rayon::current_thread_index();
            (outer, on_pool(rayon::current_thread_index))
        });
        assert!(outer.is_some(), "on a worker");
        assert_eq!(inner, outer, "in place on the same worker");
    }

    #[test]
    fn thread_counts_are_checked() {
        assert_eq!(threads_from(None, 2).unwrap(), 2);
        assert_eq!(threads_from(Some(" "), 2).unwrap(), 2);
        assert_eq!(threads_from(Some("3"), 2).unwrap(), 3);
        assert_eq!(threads_from(Some("0"), 2).unwrap(), 2);
        let e = threads_from(Some("5000"), 2).unwrap_err().to_string();
        assert!(
            e.contains("RAYON_NUM_THREADS") && e.contains("5000") && e.contains("1024"),
            "{e}"
        );
        let e = threads_from(Some("many"), 2).unwrap_err().to_string();
        assert!(e.contains("many"), "{e}");
    }

    #[test]
    fn pieces_end_where_items_end_and_cover_the_data() {
        let mut data: Vec<u32> = (0..10).collect();
        // Items of 3, 0, 4, 2 and 1 values; pieces of at least 4.
        let ends = [3usize, 3, 7, 9, 10];
        let pieces = pieces_at(&mut data, ends.iter().copied(), 4);
        let got: Vec<(std::ops::Range<usize>, usize, Vec<u32>)> = pieces
            .into_iter()
            .map(|(items, base, values)| (items, base, values.to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0..3, 0, vec![0, 1, 2, 3, 4, 5, 6]),
                (3..5, 7, vec![7, 8, 9]),
            ]
        );
        assert!(pieces_at(&mut data, std::iter::empty(), 4).is_empty());
    }
}

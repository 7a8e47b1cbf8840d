//! A process-wide pool of `f32` buffers, so that the large arrays a batch needs (membrane
//! traces, the backward's current gradients, partial weight gradients) are reused from batch to
//! batch instead of being returned to the operating system and faulted in again (measured on
//! the 2-core machine: fresh allocations cost the training step several times its arithmetic).
//! Bounded: at most [`MAX_BUFFERS`] buffers and [`MAX_BYTES`] are kept.

use std::sync::Mutex;

/// Most buffers kept.
pub const MAX_BUFFERS: usize = 64;
/// Most bytes kept.
pub const MAX_BYTES: usize = 1 << 30;

static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// A buffer of `len` zeros, reusing a kept one when one is large enough.
pub fn take_zeroed(len: usize) -> Vec<f32> {
    let reused = {
        let mut pool = POOL.lock().expect("not poisoned");
        // The smallest kept buffer that holds `len`.
        let best = pool
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(k, _)| k);
        best.map(|k| pool.swap_remove(k))
    };
    match reused {
        Some(mut v) => {
            v.clear();
            v.resize(len, 0.0);
            v
        }
        None => vec![0.0; len],
    }
}

/// A buffer of `len` values that the caller overwrites entirely: a kept buffer comes back with
/// whatever it held (no zeroing), a new one with zeros.
pub fn take(len: usize) -> Vec<f32> {
    let reused = {
        let mut pool = POOL.lock().expect("not poisoned");
        let best = pool
            .iter()
            .enumerate()
            .filter(|(_, b)| b.len() >= len)
            .min_by_key(|(_, b)| b.len())
            .map(|(k, _)| k);
        best.map(|k| pool.swap_remove(k))
    };
    match reused {
        Some(mut v) => {
            v.truncate(len);
            v
        }
        None => take_zeroed(len),
    }
}

/// Keep `v` for a later [`take_zeroed`] (dropped when the pool is full).
pub fn give(v: Vec<f32>) {
    if v.capacity() < 1024 {
        return;
    }
    let mut pool = POOL.lock().expect("not poisoned");
    let bytes: usize = pool.iter().map(|b| b.capacity() * 4).sum();
    if pool.len() < MAX_BUFFERS && bytes + v.capacity() * 4 <= MAX_BYTES {
        pool.push(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_zeroed_and_the_pool_is_bounded() {
        let mut v = take_zeroed(5000);
        v.iter_mut().for_each(|x| *x = 3.0);
        let cap = v.capacity();
        give(v);
        let w = take_zeroed(4000);
        assert!(w.iter().all(|&x| x == 0.0) && w.len() == 4000);
        assert!(w.capacity() >= 4000 && w.capacity() <= cap.max(4000));
        for _ in 0..MAX_BUFFERS + 10 {
            give(vec![0.0; 2048]);
        }
        assert!(POOL.lock().unwrap().len() <= MAX_BUFFERS);
    }
}

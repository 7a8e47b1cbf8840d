//! Process-wide pools of `f32` and byte buffers, so that the large arrays a batch needs (membrane
//! traces, the backward's current gradients, partial weight gradients) are reused from batch to
//! batch instead of being returned to the operating system and faulted in again (measured on
//! the 2-core machine: fresh allocations cost the training step several times its arithmetic).
//! Bounded: at most [`MAX_BUFFERS`] buffers and [`MAX_BYTES`] are kept per pool (two pools:
//! 2 GiB at the most).

use std::sync::Mutex;

/// Most buffers kept (per kind of element).
pub const MAX_BUFFERS: usize = 64;
/// Most bytes kept (per kind of element).
pub const MAX_BYTES: usize = 1 << 30;

static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// Byte buffers (membranes recorded as the CADC's codes).
static BYTES: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A buffer of `len` zeros, reusing a kept one when one is large enough.
pub fn take_zeroed(len: usize) -> Vec<f32> {
    take_zeroed_from(&POOL, len)
}

/// A buffer of `len` values that the caller overwrites entirely: a kept buffer comes back with
/// whatever it held (no zeroing), a new one with zeros.
pub fn take(len: usize) -> Vec<f32> {
    take_from(&POOL, len)
}

/// Keep `v` for a later [`take_zeroed`] (dropped when the pool is full).
pub fn give(v: Vec<f32>) {
    give_to(&POOL, v)
}

/// [`take`] for bytes.
pub fn take_bytes(len: usize) -> Vec<u8> {
    take_from(&BYTES, len)
}

/// [`take_zeroed`] for bytes.
pub fn take_bytes_zeroed(len: usize) -> Vec<u8> {
    take_zeroed_from(&BYTES, len)
}

/// [`give`] for bytes.
pub fn give_bytes(v: Vec<u8>) {
    give_to(&BYTES, v)
}

/// The kept buffer of `pool` with the smallest `size` of those whose `size` is at least `len`,
/// taken out of the pool.
fn smallest<T>(
    pool: &Mutex<Vec<Vec<T>>>,
    len: usize,
    size: fn(&Vec<T>) -> usize,
) -> Option<Vec<T>> {
    let mut kept = pool.lock().expect("not poisoned");
    let best = kept
        .iter()
        .enumerate()
        .filter(|(_, b)| size(b) >= len)
        .min_by_key(|(_, b)| size(b))
        .map(|(k, _)| k);
    best.map(|k| kept.swap_remove(k))
}

fn take_zeroed_from<T: Copy + Default>(pool: &Mutex<Vec<Vec<T>>>, len: usize) -> Vec<T> {
    // Any buffer with room: it is zeroed anyway.
    match smallest(pool, len, Vec::capacity) {
        Some(mut v) => {
            v.clear();
            v.resize(len, T::default());
            v
        }
        None => vec![T::default(); len],
    }
}

fn take_from<T: Copy + Default>(pool: &Mutex<Vec<Vec<T>>>, len: usize) -> Vec<T> {
    // One already holding `len` values (kept as they are), else a zeroed one.
    match smallest(pool, len, Vec::len) {
        Some(mut v) => {
            v.truncate(len);
            v
        }
        None => take_zeroed_from(pool, len),
    }
}

fn give_to<T>(pool: &Mutex<Vec<Vec<T>>>, v: Vec<T>) {
    let size = std::mem::size_of::<T>();
    if v.capacity() * size < 4096 {
        return;
    }
    let mut pool = pool.lock().expect("not poisoned");
    let bytes: usize = pool.iter().map(|b| b.capacity() * size).sum();
    if pool.len() < MAX_BUFFERS && bytes + v.capacity() * size <= MAX_BYTES {
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
        // Bytes have their own pool.
        let mut b = take_bytes(9000);
        b.fill(7);
        give_bytes(b);
        let c = take_bytes(8000);
        assert_eq!(c.len(), 8000);
        give_bytes(c);
        let z = take_bytes_zeroed(7000);
        assert!(z.len() == 7000 && z.iter().all(|&b| b == 0), "zeroed");
        assert!(BYTES.lock().unwrap().len() <= MAX_BUFFERS);
    }
}

//! Fixed-point weights held at the resolution they have. A program's weights are `i32` fixed
//! point; where they are all multiples of one power of two (`2^shift`, the largest dividing
//! them all), their multiples usually fit narrower integers: an emulated layer's weights are
//! its 6-bit codes times a power of two (bytes), an ideal layer's often need 16 bits. The CPU
//! backend keeps such a copy of a program's weights (or a wide dense layer's blocks,
//! [`super::columns::Dense`]) and sums the multiples, shifting each sum once: integer sums,
//! so the results are the same bit for bit as from the `i32` weights.

/// Integers of the width some weights need.
#[derive(Clone, Debug)]
pub(super) enum Narrow {
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
}

impl Narrow {
    /// Bytes of the narrowest integers that hold every value from `lo` to `hi`.
    fn bytes(lo: i32, hi: i32) -> usize {
        if lo >= i8::MIN as i32 && hi <= i8::MAX as i32 {
            1
        } else if lo >= i16::MIN as i32 && hi <= i16::MAX as i32 {
            2
        } else {
            4
        }
    }

    /// Bytes of each value held, and how many.
    pub(super) fn held(&self) -> (usize, usize) {
        match self {
            Narrow::I8(v) => (1, v.len()),
            Narrow::I16(v) => (2, v.len()),
            Narrow::I32(v) => (4, v.len()),
        }
    }

    /// `len` zeros of `bytes` bytes each.
    pub(super) fn zeros(bytes: usize, len: usize) -> Narrow {
        match bytes {
            1 => Narrow::I8(vec![0; len]),
            2 => Narrow::I16(vec![0; len]),
            _ => Narrow::I32(vec![0; len]),
        }
    }

    /// The value held at `at`.
    #[cfg(test)]
    pub(super) fn get(&self, at: usize) -> i32 {
        match self {
            Narrow::I8(v) => v[at] as i32,
            Narrow::I16(v) => v[at] as i32,
            Narrow::I32(v) => v[at],
        }
    }
}

/// The shift and width that hold weights whose OR, minimum and maximum are given: the largest
/// power of two (at most 2^30) dividing them all, and the bytes of the narrowest integers
/// holding every weight divided by it.
fn shift_and_bytes((or, lo, hi): (i32, i32, i32)) -> (u32, usize) {
    let shift = or.trailing_zeros().min(30);
    (shift, Narrow::bytes(lo >> shift, hi >> shift))
}

/// [`shift_and_bytes`] of `weights`: one pass on the calling thread (a program's weights after
/// an optimiser step take microseconds, less than waking the pool).
pub(super) fn resolution(weights: &[i32]) -> (u32, usize) {
    shift_and_bytes(bounds(weights))
}

/// `weights` as multiples of a power of two dividing them all (the shift, first), in integers
/// that hold them, where those are narrower than `i32` (`None` otherwise: the weights
/// themselves are as narrow). `old` (the last weights' shift and multiples, as an optimiser
/// step leaves them) is rewritten in the same pass that checks its shift and width still hold
/// the new weights, and kept if they do (a smaller shift or a wider width than the narrowest
/// hold the same values); else the narrowest are found from that pass, and the weights cast
/// again.
pub(super) fn narrowed(weights: &[i32], old: Option<(u32, Narrow)>) -> Option<(u32, Narrow)> {
    let found = match old {
        Some((shift, mut out)) if out.held().1 == weights.len() => {
            let (or, lo, hi) = cast_into(&mut out, weights, shift);
            if or.trailing_zeros() >= shift
                && Narrow::bytes(lo >> shift, hi >> shift) <= out.held().0
            {
                return Some((shift, out));
            }
            shift_and_bytes((or, lo, hi))
        }
        _ => resolution(weights),
    };
    let (shift, bytes) = found;
    if bytes == 4 {
        return None;
    }
    let mut out = Narrow::zeros(bytes, weights.len());
    cast_into(&mut out, weights, shift);
    Some((shift, out))
}

/// Sixteen lanes of the OR, minimum and maximum, so that a loop keeping them vectorises.
const LANES: usize = 16;

crate::simd::widest! {
    /// The OR, minimum and maximum of `weights` (0 for none).
    fn bounds(weights: &[i32]) -> (i32, i32, i32) {
        let (mut or, mut lo, mut hi) = ([0i32; LANES], [0i32; LANES], [0i32; LANES]);
        let (ws, rest) = weights.as_chunks::<LANES>();
        for w in ws {
            for l in 0..LANES {
                or[l] |= w[l];
                lo[l] = lo[l].min(w[l]);
                hi[l] = hi[l].max(w[l]);
            }
        }
        for &w in rest {
            or[0] |= w;
            lo[0] = lo[0].min(w);
            hi[0] = hi[0].max(w);
        }
        fold((or, lo, hi))
    }
}

crate::simd::widest! {
    /// `out = weights >> shift` by plain casts (they vectorise; [`narrowed`] keeps the result
    /// only where every value fits), returning [`bounds`] of `weights` from the same pass.
    fn cast_into(out: &mut Narrow, weights: &[i32], shift: u32) -> (i32, i32, i32) {
        match out {
            Narrow::I8(o) => cast_lanes(o, weights, shift),
            Narrow::I16(o) => cast_lanes(o, weights, shift),
            Narrow::I32(o) => cast_lanes(o, weights, shift),
        }
    }
}

/// [`cast_into`] at one width.
#[inline(always)]
fn cast_lanes<W: Copy + TruncateFrom>(
    out: &mut [W],
    weights: &[i32],
    shift: u32,
) -> (i32, i32, i32) {
    let (mut or, mut lo, mut hi) = ([0i32; LANES], [0i32; LANES], [0i32; LANES]);
    let (ws, wrest) = weights.as_chunks::<LANES>();
    let (os, orest) = out.as_chunks_mut::<LANES>();
    for (o, w) in os.iter_mut().zip(ws) {
        for l in 0..LANES {
            o[l] = W::truncate(w[l] >> shift);
            or[l] |= w[l];
            lo[l] = lo[l].min(w[l]);
            hi[l] = hi[l].max(w[l]);
        }
    }
    for (o, &w) in orest.iter_mut().zip(wrest) {
        *o = W::truncate(w >> shift);
        or[0] |= w;
        lo[0] = lo[0].min(w);
        hi[0] = hi[0].max(w);
    }
    fold((or, lo, hi))
}

/// The lanes of [`bounds`] folded into one OR, minimum and maximum.
#[inline(always)]
fn fold((or, lo, hi): ([i32; LANES], [i32; LANES], [i32; LANES])) -> (i32, i32, i32) {
    (
        or.iter().fold(0, |a, &b| a | b),
        lo.iter().fold(0, |a, &b| a.min(b)),
        hi.iter().fold(0, |a, &b| a.max(b)),
    )
}

/// Copy `piece` (fixed point, multiples of `2^shift` that fit `W`, as [`resolution`] chose
/// them) into `out` as multiples.
#[inline(always)]
pub(super) fn put<W: TruncateFrom>(out: &mut [W], piece: &[i32], shift: u32) {
    for (o, &w) in out.iter_mut().zip(piece) {
        *o = W::truncate(w >> shift);
    }
}

/// The low bits of an `i32` (an `as` cast).
pub(super) trait TruncateFrom {
    /// `x as Self`.
    fn truncate(x: i32) -> Self;
}

impl TruncateFrom for i8 {
    fn truncate(x: i32) -> Self {
        x as i8
    }
}

impl TruncateFrom for i16 {
    fn truncate(x: i32) -> Self {
        x as i16
    }
}

impl TruncateFrom for i32 {
    fn truncate(x: i32) -> Self {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The multiples `narrowed` holds.
    fn widened(n: &Narrow) -> Vec<i32> {
        (0..n.held().1).map(|k| n.get(k)).collect()
    }

    #[test]
    fn narrowed_weights_are_exact_multiples_and_kept_only_while_they_hold() {
        // Emulated weights: 6-bit codes times 2^7 (and a zero): bytes, shift 7.
        let w: Vec<i32> = [-63, 0, 5, 63, -1].iter().map(|c| c << 7).collect();
        let (shift, n) = narrowed(&w, None).expect("bytes hold them");
        assert_eq!((shift, n.held()), (7, (1, 5)));
        assert_eq!(widened(&n), vec![-63, 0, 5, 63, -1]);
        // Every weight now a multiple of 2^9: the old shift still holds them, kept.
        let w2: Vec<i32> = [-31, 1, 2, 31, 0].iter().map(|c| c << 9).collect();
        let (shift, n) = narrowed(&w2, Some((7, n))).expect("bytes");
        assert_eq!((shift, n.held()), (7, (1, 5)));
        assert_eq!(widened(&n), vec![-124, 4, 8, 124, 0]);
        // A weight no longer a multiple of 2^7: the largest common power found again (2^6).
        let w3 = vec![64, -128, 640, 0, 192];
        let (shift, n) = narrowed(&w3, Some((7, n))).expect("bytes");
        assert_eq!((shift, n.held()), (6, (1, 5)));
        assert_eq!(widened(&n), vec![1, -2, 10, 0, 3]);
        // One multiple beyond a byte: 16 bits.
        let w4 = vec![200 << 6, 64, 0, -64, 0];
        let (shift, n) = narrowed(&w4, Some((6, n))).expect("16 bits");
        assert_eq!((shift, n.held()), (6, (2, 5)));
        assert_eq!(widened(&n), vec![200, 1, 0, -1, 0]);
        // Odd weights beyond 16 bits: as wide as the program's own, no copy.
        assert!(narrowed(&[70_001, 3], None).is_none());
        assert!(narrowed(&[70_001, 3], Some((6, n))).is_none());
    }
}

//! Functions compiled for the widest vector unit the processor has, chosen at run time.
//!
//! The crate is built for the baseline x86-64 instruction set (SSE2), so that one binary runs
//! everywhere; the hot loops written over lanes vectorise three to four times wider with AVX2
//! or AVX-512. [`widest!`] defines a function whose body is compiled three times (AVX-512F,
//! AVX2, baseline) and picks one per call. The arithmetic is the same in every variant (Rust
//! does not contract `a * b + c` into fused multiply-adds), only the vector width differs, so
//! results do not depend on the machine.

/// `widest! { /// docs \n pub fn name<'a>(x: &'a [f32], ...) -> R { body } }`: `name` runs
/// `body` compiled for AVX-512F if the processor has it, else AVX2, else the baseline.
/// Arguments must be plain identifiers; lifetimes are the only generics.
macro_rules! widest {
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident $(<$($lt:lifetime),+>)? ($($arg:ident : $ty:ty),* $(,)?)
            $(-> $ret:ty)? $body:block
    ) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name $(<$($lt),+>)? ($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body $(<$($lt),+>)? ($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512 $(<$($lt),+>)? ($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2 $(<$($lt),+>)? ($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the processor has AVX-512F, checked just above.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the processor has AVX2, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

pub(crate) use widest;

/// Whether [`widest!`] functions run their AVX-512 variant here: 32 vector registers of 16
/// lanes, where AVX2 has 16 of 8 (a loop keeping more sums in registers pays only with the
/// former).
pub fn wide_registers() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `x.round()` (half away from zero), bit for bit, without a call into libm: the hot loops
/// round every weight and every recorded membrane, and `f32::round` is a function call on
/// x86-64.
#[inline(always)]
pub fn round_f32(x: f32) -> f32 {
    // A select, not a branch; from 2^23 on every f32 is an integer (NaN and infinities are
    // returned as they are too). `round_i32` is exact below 2^23, and the sign comes back for
    // a result of zero (−0.3 rounds to −0.0).
    let n = round_i32(x) as f32;
    if x.abs() < 8_388_608.0 {
        n.copysign(x)
    } else {
        x
    }
}

/// `x.round() as i32` for `|x| ≤ 2^23`, where every caller stays (fixed-point weights are
/// below 2^23 by the choice of exponent, membrane codes below 2^16); beyond that range the
/// result is ±2^23 (and −2^23 for NaN). Branch-free and without Rust's saturating
/// float-to-integer conversion, which the baseline instruction set does not vectorise.
#[inline(always)]
pub fn round_i32(x: f32) -> i32 {
    // `max` and `min` drop NaN, so `y` is finite (`clamp` would keep NaN).
    #[allow(clippy::manual_clamp)]
    let y = x.max(-8_388_608.0).min(8_388_608.0);
    // SAFETY: `y` is finite and within ±2^23, well inside `i32`.
    let t = unsafe { y.to_int_unchecked::<i32>() };
    let r = y - t as f32;
    t + i32::from(r >= 0.5) - i32::from(r <= -0.5)
}

/// `x.round()` for `f64`, like [`round_f32`].
#[inline(always)]
pub fn round_f64(x: f64) -> f64 {
    let t = x as i64 as f64;
    let r = x - t;
    let n = (t + f64::from(u8::from(r.abs() >= 0.5)).copysign(x)).copysign(x);
    if x.abs() < 4_503_599_627_370_496.0 {
        n
    } else {
        x
    }
}

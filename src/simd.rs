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

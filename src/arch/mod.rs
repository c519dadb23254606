//! Instruction sets: one module each, implementing [`Simd`](crate::simd::Simd).

pub(crate) mod portable;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

/// The AVX2 token, if this machine has AVX2 and F16C (cached detection).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2() -> Option<x86_64::Avx2> {
    x86_64::Avx2::detect()
}

/// No AVX2 off x86_64.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn avx2() -> Option<core::convert::Infallible> {
    None
}

//! x86_64 with AVX2 and F16C, chosen at run time: the only `unsafe` code of the crate.
//!
//! A default x86_64 build only has SSE2, so `wide` (and with it the portable path) cannot use
//! AVX2. This module provides 8-lane AVX2 vectors and F16C conversions, used through the same
//! generic Lion body, inside a `#[target_feature(enable = "avx2,f16c")]` entry point that the
//! dispatcher calls only after detection. No FMA is used: results stay bit-identical to the
//! reference.
//!
//! Soundness rests on one invariant: **a value of [`Avx2`] exists only if the CPU and OS support
//! AVX2 and F16C.** Its only constructor is [`Avx2::detect`]. Every intrinsic below runs inside a
//! method that takes an `Avx2` by value, so it can only run where its instructions exist.

use core::arch::x86_64::*;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::element::Element;
use crate::hyper::Consts;
use crate::simd::Simd;
use crate::{StepOptions, kernel};

/// Proof that AVX2 and F16C are available (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2 {
    _proof: (),
}

/// Cached detection result: 0 = not yet probed, 1 = unavailable, 2 = available.
static AVAILABLE: AtomicU8 = AtomicU8::new(0);

impl Avx2 {
    /// Returns the token if this CPU (and OS) can run AVX2 and F16C code; never under Miri.
    ///
    /// Known at compile time when the build enables both features; otherwise probed once per
    /// process and cached (a probe may be slow: CPUID traps to the hypervisor in many VMs).
    #[inline]
    pub(crate) fn detect() -> Option<Self> {
        if cfg!(miri) {
            return None;
        }
        let available = cfg!(all(target_feature = "avx2", target_feature = "f16c"))
            || match AVAILABLE.load(Ordering::Relaxed) {
                0 => {
                    let yes = runtime_detect();
                    AVAILABLE.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
                    yes
                }
                state => state == 2,
            };
        available.then_some(Self { _proof: () })
    }
}

#[cfg(feature = "std")]
fn runtime_detect() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("f16c")
}

/// The no_std probe: CPUID for the instruction sets, XGETBV for the OS saving YMM registers.
#[cfg(not(feature = "std"))]
fn runtime_detect() -> bool {
    cpuid_probe()
}

/// AVX2 + F16C support as CPUID and XCR0 report it (what `is_x86_feature_detected!` checks).
#[cfg_attr(feature = "std", allow(dead_code))]
pub(crate) fn cpuid_probe() -> bool {
    const OSXSAVE: u32 = 1 << 27;
    const AVX: u32 = 1 << 28;
    const F16C: u32 = 1 << 29;
    const AVX2: u32 = 1 << 5;
    // CPUID exists on every x86_64 CPU.
    let max_leaf = __cpuid(0).eax;
    let leaf1 = __cpuid(1);
    if max_leaf < 7 || leaf1.ecx & (OSXSAVE | AVX | F16C) != OSXSAVE | AVX | F16C {
        return false;
    }
    // SAFETY: OSXSAVE is set, so the CPU has XSAVE/XGETBV and the OS has enabled them.
    let xcr0 = unsafe { xgetbv0() };
    // The OS must save and restore both the SSE (bit 1) and the AVX (bit 2) register state.
    xcr0 & 0b110 == 0b110 && __cpuid_count(7, 0).ebx & AVX2 != 0
}

#[target_feature(enable = "xsave")]
#[cfg_attr(feature = "std", allow(dead_code))]
fn xgetbv0() -> u64 {
    // SAFETY: the caller guarantees XSAVE (this function's target feature) is enabled.
    unsafe { _xgetbv(0) }
}

/// One Lion step on AVX2 (see `kernel::lion`; the caller has checked the lengths).
#[inline]
pub(crate) fn lion<P: Element, G: Element, M: Element>(
    token: Avx2,
    params: &mut [P],
    grads: &[G],
    momentum: &mut [M],
    k: &Consts,
    options: &StepOptions,
    key: u32,
) {
    // SAFETY: the token exists, so AVX2 and F16C (the entry's target features) are available.
    unsafe { lion_entry(token, params, grads, momentum, k, options, key) }
}

/// The whole slice loop is compiled with AVX2 and F16C enabled, so every helper inlines into it
/// (a per-chunk call through a function pointer would forfeit that).
#[target_feature(enable = "avx2,f16c")]
fn lion_entry<P: Element, G: Element, M: Element>(
    token: Avx2,
    params: &mut [P],
    grads: &[G],
    momentum: &mut [M],
    k: &Consts,
    options: &StepOptions,
    key: u32,
) {
    kernel::lion(token, params, grads, momentum, k, options, key);
}

/// Whether every gradient (times `inv_scale`) is finite, on AVX2.
#[inline]
pub(crate) fn all_finite<G: Element>(token: Avx2, grads: &[G], inv_scale: Option<f32>) -> bool {
    #[target_feature(enable = "avx2,f16c")]
    fn entry<G: Element>(token: Avx2, grads: &[G], inv_scale: Option<f32>) -> bool {
        kernel::all_finite(token, grads, inv_scale)
    }
    // SAFETY: the token exists, so AVX2 and F16C (the entry's target features) are available.
    unsafe { entry(token, grads, inv_scale) }
}

// Every method below: SAFETY: `self` is an `Avx2` token, which exists only when AVX2 and F16C
// are available (module invariant); loads and stores go through references to arrays of exactly
// the accessed size, so every pointer is valid for the whole access (unaligned forms are used).
impl Simd<8> for Avx2 {
    type F32 = __m256;
    type U32 = __m256i;

    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    fn signed(self, x: __m256, c: __m256) -> __m256 {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe {
            // x with the sign of c, kept where c is ordered and != 0 (false for NaN and ±0).
            // (A sign-bit blend is one instruction fewer but two uops on this generation.)
            let with_sign = _mm256_or_ps(x, _mm256_and_ps(c, _mm256_set1_ps(-0.0)));
            let nonzero = _mm256_cmp_ps::<_CMP_NEQ_OQ>(c, _mm256_setzero_ps());
            _mm256_and_ps(with_sign, nonzero)
        }
    }
    #[inline(always)]
    fn trunc_u32(self, x: __m256) -> __m256i {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe { _mm256_cvttps_epi32(x) }
    }
    #[inline(always)]
    fn is_nan(self, x: __m256) -> __m256i {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe { _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(x, x)) }
    }

    #[inline(always)]
    fn to_bits(self, x: __m256) -> __m256i {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe { _mm256_castps_si256(x) }
    }
    #[inline(always)]
    fn bits_to_f32(self, u: __m256i) -> __m256 {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe { _mm256_castsi256_ps(u) }
    }
    #[inline(always)]
    fn splat_u32(self, x: u32) -> __m256i {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe { _mm256_set1_epi32(x as i32) }
    }
    #[inline(always)]
    fn add_u32(self, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe { _mm256_add_epi32(a, b) }
    }
    #[inline(always)]
    fn sub_u32(self, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe { _mm256_sub_epi32(a, b) }
    }
    #[inline(always)]
    fn mul_u32(self, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe { _mm256_mullo_epi32(a, b) }
    }
    #[inline(always)]
    fn lane_indices(self) -> __m256i {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe { _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7) }
    }
    #[inline(always)]
    fn any(self, mask: __m256i) -> bool {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe { _mm256_movemask_epi8(mask) != 0 }
    }
    #[inline(always)]
    fn and(self, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe { _mm256_and_si256(a, b) }
    }
    #[inline(always)]
    fn andnot(self, mask: __m256i, a: __m256i) -> __m256i {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe { _mm256_andnot_si256(mask, a) }
    }
    #[inline(always)]
    fn or(self, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe { _mm256_or_si256(a, b) }
    }
    #[inline(always)]
    fn xor(self, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe { _mm256_xor_si256(a, b) }
    }
    #[inline(always)]
    fn shl<const S: i32>(self, a: __m256i) -> __m256i {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe { _mm256_slli_epi32::<S>(a) }
    }
    #[inline(always)]
    fn shr<const S: i32>(self, a: __m256i) -> __m256i {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe { _mm256_srli_epi32::<S>(a) }
    }
    #[inline(always)]
    fn gt_i32(self, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe { _mm256_cmpgt_epi32(a, b) }
    }
    #[inline(always)]
    fn eq_u32(self, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe { _mm256_cmpeq_epi32(a, b) }
    }
    #[inline(always)]
    fn select(self, mask: __m256i, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe { _mm256_blendv_epi8(b, a, mask) }
    }

    #[inline(always)]
    fn load_f32(self, src: &[f32; 8]) -> __m256 {
        // SAFETY: see the impl comment (AVX2 available; `src` is 8 readable f32).
        unsafe { _mm256_loadu_ps(src.as_ptr()) }
    }
    #[inline(always)]
    fn store_f32(self, v: __m256, dst: &mut [f32; 8]) {
        // SAFETY: see the impl comment (AVX2 available; `dst` is 8 writable f32).
        unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn load_u16(self, src: &[u16; 8]) -> __m256i {
        // SAFETY: see the impl comment (AVX2 available; `src` is 16 readable bytes).
        unsafe { _mm256_cvtepu16_epi32(_mm_loadu_si128(src.as_ptr().cast())) }
    }
    #[inline(always)]
    fn store_u16(self, v: __m256i, dst: &mut [u16; 8]) {
        // SAFETY: see the impl comment (AVX2 available; `dst` is 16 writable bytes).
        unsafe {
            // Keep the low 16 bits, then pack the two halves without saturating anything.
            let low = _mm256_and_si256(v, _mm256_set1_epi32(0xffff));
            let packed = _mm_packus_epi32(
                _mm256_castsi256_si128(low),
                _mm256_extracti128_si256::<1>(low),
            );
            _mm_storeu_si128(dst.as_mut_ptr().cast(), packed)
        }
    }

    /// One byte shuffle of a 128-bit load broadcast to both lanes puts elements 0-3 (lane 0)
    /// and 4-7 (lane 1) into the upper halves, zeroing the lower ones (bf16 loads use this).
    #[inline(always)]
    fn load_u16_upper(self, src: &[u16; 8]) -> __m256i {
        // SAFETY: see the impl comment (AVX2 available; `src` is 16 readable bytes).
        unsafe {
            let both = _mm256_broadcastsi128_si256(_mm_loadu_si128(src.as_ptr().cast()));
            let z = -1; // a set high bit zeroes the byte
            let spread = _mm256_setr_epi8(
                z, z, 0, 1, z, z, 2, 3, z, z, 4, 5, z, z, 6, 7, //
                z, z, 8, 9, z, z, 10, 11, z, z, 12, 13, z, z, 14, 15,
            );
            _mm256_shuffle_epi8(both, spread)
        }
    }
    /// Gathers the upper halves with one byte shuffle per 128-bit lane and one cross-lane
    /// permute (bf16 stores use this).
    #[inline(always)]
    fn store_u16_upper(self, v: __m256i, dst: &mut [u16; 8]) {
        // SAFETY: see the impl comment (AVX2 available; `dst` is 16 writable bytes).
        unsafe {
            let z = -1;
            let upper = _mm256_setr_epi8(
                2, 3, 6, 7, 10, 11, 14, 15, z, z, z, z, z, z, z, z, //
                2, 3, 6, 7, 10, 11, 14, 15, z, z, z, z, z, z, z, z,
            );
            let gathered = _mm256_shuffle_epi8(v, upper);
            let packed = _mm256_permute4x64_epi64::<0b00_00_10_00>(gathered);
            _mm_storeu_si128(dst.as_mut_ptr().cast(), _mm256_castsi256_si128(packed))
        }
    }

    /// F16C: exact widening (NaNs quieted, as `half`).
    #[inline(always)]
    fn load_f16(self, src: &[u16; 8]) -> __m256 {
        // SAFETY: see the impl comment (F16C available; `src` is 16 readable bytes).
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(src.as_ptr().cast())) }
    }
    /// F16C (for stochastic rounding's normal range): round to nearest even.
    #[inline(always)]
    fn f16_bits(self, v: __m256) -> __m256i {
        // SAFETY: see the impl comment (F16C available).
        unsafe { _mm256_cvtepu16_epi32(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v)) }
    }
    /// F16C: round to nearest even by the instruction's immediate (whatever MXCSR says).
    #[inline(always)]
    fn store_f16(self, v: __m256, dst: &mut [u16; 8]) {
        // SAFETY: see the impl comment (F16C available; `dst` is 16 writable bytes).
        unsafe {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm_storeu_si128(dst.as_mut_ptr().cast(), h)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::tests::{conversions, narrow_exhaustive, narrow_matches_half};

    #[test]
    fn avx2_conversions_match_half() {
        match Avx2::detect() {
            // SAFETY: the token proves AVX2 and F16C are available.
            Some(t) => unsafe { conversions_avx2(t) },
            None => std::eprintln!("skipping: AVX2/F16C not available"),
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    fn conversions_avx2(t: Avx2) {
        conversions(t);
    }

    #[test]
    #[ignore = "2^32 inputs: run in release with --ignored (CI does)"]
    fn avx2_narrowing_exhaustive() {
        #[target_feature(enable = "avx2,f16c")]
        fn check(t: Avx2, block: &[u32]) {
            narrow_matches_half(t, block);
        }
        match Avx2::detect() {
            // SAFETY: the token proves AVX2 and F16C are available.
            Some(t) => narrow_exhaustive(|block| unsafe { check(t, block) }),
            None => std::eprintln!("skipping: AVX2/F16C not available"),
        }
    }

    #[cfg(feature = "std")]
    #[test]
    fn no_std_probe_agrees_with_std_detection() {
        assert_eq!(cpuid_probe(), runtime_detect());
    }
}

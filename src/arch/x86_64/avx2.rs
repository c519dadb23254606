//! AVX2 + F16C: 8 f32 lanes in `__m256`.
//!
//! A default x86_64 build only has SSE2, so `wide` (and with it the portable path) cannot use
//! AVX2. This ISA provides 8-lane AVX2 vectors and F16C conversions to the generic Lion body.
//! No FMA is used: results stay bit-identical to the reference.

use core::arch::x86_64::*;

use crate::arch::Op;
use crate::dtype::q8::Q8_BLOCK;
use crate::kernel::q8::nearest;
use crate::simd::Simd;

/// Proof that AVX2 and F16C are available (see the parent module's invariant).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2 {
    _proof: (),
}

impl Avx2 {
    /// Returns the token if this CPU (and OS) can run AVX2 and F16C code (probed once per process;
    /// never under Miri).
    #[inline]
    pub(crate) fn detect() -> Option<Self> {
        (super::features() & super::HAS_AVX2 != 0).then_some(Self { _proof: () })
    }

    /// Runs `op` on this instruction set: its whole body (the slice loops and every helper,
    /// inlined) is compiled with the instruction set's features. (A per-chunk call through a
    /// function pointer from code without them would forfeit that.)
    #[inline]
    pub(crate) fn run<O: Op>(self, op: O) -> O::Output {
        #[target_feature(enable = "avx2,f16c")]
        fn entry<O: Op>(token: Avx2, op: O) -> O::Output {
            op.simd(token)
        }
        // SAFETY: the token exists, so the entry's target features are available.
        unsafe { entry(self, op) }
    }
}

// Every method below: SAFETY: `self` is an `Avx2` token, which exists only when AVX2 and F16C
// are available (module invariant); loads and stores go through references to arrays of exactly
// the accessed size, so every pointer is valid for the whole access (unaligned forms are used).
impl Simd<8> for Avx2 {
    type F32 = __m256;
    type U32 = __m256i;

    /// Pairs of bf16 chunks are one 256-bit load or store per array, split into even and odd
    /// elements with one shift or mask each (no shuffles).
    const PAIRS: bool = true;
    const BF16_PAIR_EVEN_ODD: bool = true;

    one_line! {
        unsafe;
        fn splat(x: f32) -> __m256 = _mm256_set1_ps(x);
        fn add(a: __m256, b: __m256) -> __m256 = _mm256_add_ps(a, b);
        fn sub(a: __m256, b: __m256) -> __m256 = _mm256_sub_ps(a, b);
        fn mul(a: __m256, b: __m256) -> __m256 = _mm256_mul_ps(a, b);
    }
    #[inline(always)]
    fn signed(self, x: __m256, c: __m256) -> __m256 {
        // SAFETY: see the impl comment (AVX2 available).
        unsafe {
            // x or -x by the sign bit of c, kept where c is ordered and != 0 (false for NaN
            // and ±0). The blend is one uop on AMD Zen (two on Intel before Alder Lake, where
            // it ties with the and/or form it replaces).
            let with_sign = _mm256_blendv_ps(x, _mm256_xor_ps(x, _mm256_set1_ps(-0.0)), c);
            let nonzero = _mm256_cmp_ps::<_CMP_NEQ_OQ>(c, _mm256_setzero_ps());
            _mm256_and_ps(with_sign, nonzero)
        }
    }
    one_line! {
        unsafe;
        fn trunc_u32(x: __m256) -> __m256i = _mm256_cvttps_epi32(x);
        fn to_f32(u: __m256i) -> __m256 = _mm256_cvtepi32_ps(u);
        fn gt(a: __m256, b: __m256) -> __m256i =
            _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(a, b));
        fn is_nan(x: __m256) -> __m256i = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(x, x));
        fn to_bits(x: __m256) -> __m256i = _mm256_castps_si256(x);
        fn bits_to_f32(u: __m256i) -> __m256 = _mm256_castsi256_ps(u);
        fn splat_u32(x: u32) -> __m256i = _mm256_set1_epi32(x as i32);
        fn add_u32(a: __m256i, b: __m256i) -> __m256i = _mm256_add_epi32(a, b);
        fn sub_u32(a: __m256i, b: __m256i) -> __m256i = _mm256_sub_epi32(a, b);
        fn mul_u32(a: __m256i, b: __m256i) -> __m256i = _mm256_mullo_epi32(a, b);
        fn lane_indices() -> __m256i = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        fn any(mask: __m256i) -> bool = _mm256_movemask_epi8(mask) != 0;
        fn and(a: __m256i, b: __m256i) -> __m256i = _mm256_and_si256(a, b);
        fn andnot(mask: __m256i, a: __m256i) -> __m256i = _mm256_andnot_si256(mask, a);
        fn or(a: __m256i, b: __m256i) -> __m256i = _mm256_or_si256(a, b);
        fn xor(a: __m256i, b: __m256i) -> __m256i = _mm256_xor_si256(a, b);
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
    one_line! {
        unsafe;
        fn gt_i32(a: __m256i, b: __m256i) -> __m256i = _mm256_cmpgt_epi32(a, b);
        fn eq_u32(a: __m256i, b: __m256i) -> __m256i = _mm256_cmpeq_epi32(a, b);
        fn select(mask: __m256i, a: __m256i, b: __m256i) -> __m256i =
            _mm256_blendv_epi8(b, a, mask);
        fn max_u32(a: __m256i, b: __m256i) -> __m256i = _mm256_max_epu32(a, b);
        fn min_u32(a: __m256i, b: __m256i) -> __m256i = _mm256_min_epu32(a, b);
    }
    /// One `vpgatherdd` on clamped indices.
    #[inline(always)]
    fn gather<const L: usize>(self, table: &[u32; L], index: __m256i) -> __m256i {
        // SAFETY: see the impl comment (AVX2 available). Every index is clamped to `L - 1`
        // (`L >= 1`: an empty table is a compile-time error below), so each lane reads 4 bytes
        // inside `table`; a `u32` array is 4-aligned.
        const { assert!(L >= 1 && L <= i32::MAX as usize) };
        unsafe {
            let i = _mm256_min_epu32(index, _mm256_set1_epi32((L - 1) as i32));
            _mm256_i32gather_epi32::<4>(table.as_ptr().cast(), i)
        }
    }

    /// The default's bucket quantizer, four vectors at a time, their codes packed into 32 bytes
    /// by two saturating packs and one lane permutation (instead of a narrowing store each).
    #[inline(always)]
    fn q8_nearest(self, x: &[f32; Q8_BLOCK], inv: f32, codes: &mut [u8; Q8_BLOCK]) {
        let inv = self.splat(inv);
        for (v, c) in x
            .as_chunks::<32>()
            .0
            .iter()
            .zip(codes.as_chunks_mut::<32>().0)
        {
            let mut k = [self.splat_u32(0); 4];
            for (k, v) in k.iter_mut().zip(v.as_chunks::<8>().0) {
                *k = nearest(self, self.mul(self.load_f32(v), inv));
            }
            let [k0, k1, k2, k3] = k;
            // SAFETY: see the impl comment (AVX2 available; `c` is 32 writable bytes). Every
            // code is in 0..=255, so the saturating packs keep it.
            unsafe {
                // Per 128-bit half: k0's four codes, k1's, k2's, k3's (a 4-byte group each).
                let bytes =
                    _mm256_packus_epi16(_mm256_packus_epi32(k0, k1), _mm256_packus_epi32(k2, k3));
                let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
                let bytes = _mm256_permutevar8x32_epi32(bytes, order);
                _mm256_storeu_si256(c.as_mut_ptr().cast(), bytes);
            }
        }
    }

    #[inline(always)]
    fn prefetch(self, addr: *const u8) {
        // SAFETY: PREFETCHT0 (SSE, part of every x86_64 CPU) is a hint: it never faults and
        // never dereferences `addr` in the program's semantics, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(addr.cast()) }
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
    fn load_u8(self, src: &[u8; 8]) -> __m256i {
        // SAFETY: see the impl comment (AVX2 available; `src` is 8 readable bytes, read as one
        // unaligned u64).
        unsafe { _mm256_cvtepu8_epi32(_mm_loadl_epi64(src.as_ptr().cast())) }
    }
    #[inline(always)]
    fn store_u8(self, v: __m256i, dst: &mut [u8; 8]) {
        // SAFETY: see the impl comment (AVX2 available; `dst` is 8 writable bytes, written as
        // one unaligned u64).
        unsafe {
            // Byte 0 of each u32 to bytes 0-3 of its 128-bit half, then the halves together.
            let z = -1; // a set high bit zeroes the byte
            let pick = _mm256_setr_epi8(
                0, 4, 8, 12, z, z, z, z, z, z, z, z, z, z, z, z, //
                0, 4, 8, 12, z, z, z, z, z, z, z, z, z, z, z, z,
            );
            let bytes = _mm256_shuffle_epi8(v, pick);
            let both =
                _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1));
            _mm_storel_epi64(dst.as_mut_ptr().cast(), _mm256_castsi256_si128(both))
        }
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
    /// Shifts the upper halves down and packs the two 128-bit halves (no value exceeds
    /// `0xffff`, so nothing saturates). Measured faster here than a byte shuffle + `vpermq`.
    #[inline(always)]
    fn store_u16_upper(self, v: __m256i, dst: &mut [u16; 8]) {
        // SAFETY: see the impl comment (AVX2 available; `dst` is 16 writable bytes).
        unsafe {
            let high = _mm256_srli_epi32::<16>(v);
            let packed = _mm_packus_epi32(
                _mm256_castsi256_si128(high),
                _mm256_extracti128_si256::<1>(high),
            );
            _mm_storeu_si128(dst.as_mut_ptr().cast(), packed)
        }
    }

    /// One 256-bit load: u32 lane `i` holds elements `2i` (low half) and `2i + 1` (high half);
    /// a shift puts the even one in the upper half, a mask keeps the odd one.
    #[inline(always)]
    fn load_bf16_pair(self, src: &[[u16; 8]; 2]) -> [__m256; 2] {
        // SAFETY: see the impl comment (AVX2 available; `src` is 32 readable bytes).
        unsafe {
            let x = _mm256_loadu_si256(src.as_ptr().cast());
            let even = _mm256_slli_epi32::<16>(x);
            let odd = _mm256_and_si256(x, _mm256_set1_epi32(0xffff_0000_u32 as i32));
            [_mm256_castsi256_ps(even), _mm256_castsi256_ps(odd)]
        }
    }
    /// Rounds without the NaN fix-up of `store_bf16`, under the contract of the trait
    /// method: every NaN given here has zero low 16 bits, and x86 arithmetic sets its quiet
    /// bit, so adding the rounding increment cannot carry out of its low half.
    ///
    /// The rounding runs on 16 elements at once, in 16-bit lanes, after putting the elements in
    /// order: with `x = (t << 16) | l`, the upper half of `x + 0x7fff + (t & 1)` (the exact
    /// rounding of `bf16_round_not_nan`, for every `x`) is `t + carry`, where the carry out of
    /// the low half is `l + (t & 1) > 0x8000`, that is `(l | (t & 1)) > 0x8000` (for `t` odd,
    /// `l >= 0x8000` either way). Nine instructions per 16 elements instead of ten, which is
    /// measurable in this compute-bound loop.
    #[inline(always)]
    fn store_bf16_pair(self, v: [__m256; 2], dst: &mut [[u16; 8]; 2]) {
        // SAFETY: see the impl comment (AVX2 available; `dst` is 32 writable bytes).
        unsafe {
            let (even, odd) = (_mm256_castps_si256(v[0]), _mm256_castps_si256(v[1]));
            // Upper halves (the truncated bf16) and lower halves, in element order.
            let t = _mm256_blend_epi16::<0b1010_1010>(_mm256_srli_epi32::<16>(even), odd);
            let l = _mm256_blend_epi16::<0b1010_1010>(even, _mm256_slli_epi32::<16>(odd));
            let lsb = _mm256_and_si256(t, _mm256_set1_epi16(1));
            // `(l | lsb) > 0x8000` unsigned, as a signed comparison with 0 after flipping the
            // top bit: all ones where the rounding carries into `t`.
            let biased = _mm256_xor_si256(_mm256_or_si256(l, lsb), _mm256_set1_epi16(-0x8000));
            let carry = _mm256_cmpgt_epi16(biased, _mm256_setzero_si256());
            _mm256_storeu_si256(dst.as_mut_ptr().cast(), _mm256_sub_epi16(t, carry))
        }
    }
    /// Adds the random bits (at most `0xffff`) without the NaN fix-up of
    /// `store_bf16_stochastic`, under the same contract as `store_bf16_pair` (a NaN's zero low
    /// half cannot carry).
    #[inline(always)]
    fn store_bf16_pair_stochastic(
        self,
        v: [__m256; 2],
        random: [__m256i; 2],
        dst: &mut [[u16; 8]; 2],
    ) {
        let rounded = [
            self.add_u32(self.to_bits(v[0]), random[0]),
            self.add_u32(self.to_bits(v[1]), random[1]),
        ];
        self.store_even_odd(rounded, dst)
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

impl Avx2 {
    /// Stores the upper halves of `v` (even elements, odd elements) as 16 u16 in order: the
    /// even ones shifted down into the low halves, the odd ones blended in above them.
    #[inline(always)]
    fn store_even_odd(self, v: [__m256i; 2], dst: &mut [[u16; 8]; 2]) {
        // SAFETY: the token proves AVX2 (see the impl comment above); `dst` is 32 writable
        // bytes.
        unsafe {
            let even = _mm256_srli_epi32::<16>(v[0]);
            let both = _mm256_blend_epi16::<0b1010_1010>(even, v[1]);
            _mm256_storeu_si256(dst.as_mut_ptr().cast(), both)
        }
    }
}

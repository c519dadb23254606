//! AVX-512 (F + BW): 16 f32 lanes in `__m512`.
//!
//! Twice the lanes of AVX2, plus what makes the 16-bit conversions cheap: opmask registers (a
//! NaN test feeds a masked add directly), `vpternlogd` (any three-input bit function in one
//! instruction) and `vpermw` (bf16 halves moved in and out of f32 lanes in one instruction).
//! No FMA is used: results stay bit-identical to the reference.

use core::arch::x86_64::*;

use crate::arch::Op;
use crate::dtype::q8::{
    MAP_HI, MAP_LO, NEAREST_BASE, NEAREST_COUNT, NEAREST_E0, NEAREST_HI, NEAREST_LO, NEAREST_SHIFT,
    Q8_BLOCK,
};
use crate::simd::{QUIET_BIT, Simd};

/// Proof that AVX-512 F and BW are available (see the parent module's invariant).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512 {
    _proof: (),
}

impl Avx512 {
    /// Returns the token if this CPU (and OS) can run AVX-512 F and BW code (probed once per process;
    /// never under Miri).
    #[inline]
    pub(crate) fn detect() -> Option<Self> {
        (super::features() & super::HAS_AVX512 != 0).then_some(Self { _proof: () })
    }

    /// Runs `op` on this instruction set: its whole body (the slice loops and every helper,
    /// inlined) is compiled with the instruction set's features. (A per-chunk call through a
    /// function pointer from code without them would forfeit that.)
    #[inline]
    pub(crate) fn run<O: Op>(self, op: O) -> O::Output {
        #[target_feature(enable = "avx512f,avx512bw")]
        fn entry<O: Op>(token: Avx512, op: O) -> O::Output {
            op.simd(token)
        }
        // SAFETY: the token exists, so the entry's target features are available.
        unsafe { entry(self, op) }
    }
}

/// Truth table of `vpternlogd` for `a | (b & c)`.
const A_OR_B_AND_C: i32 = 0xf8;
/// `vfixupimmps` table: a lane whose classified input is a NaN (quiet or signalling) or a zero
/// becomes `+0` (response 8), every other class (±1, ±inf, negative, positive) keeps the
/// destination (response 0). Nibble `j` is the response to token `j`: QNaN, SNaN, zero, +1,
/// -inf, +inf, negative, positive.
const ZERO_IF_ZERO_OR_NAN: i32 = 0x0000_0888;
/// Words at odd positions: the upper halves of the 32-bit lanes.
const ODD_WORDS: u32 = 0xaaaa_aaaa;
/// Truth table of `vpternlogd` for `a ? b : c` (bitwise).
const A_SELECTS_B_ELSE_C: i32 = 0xca;

/// Word indices for `vpermw`: word `2i + 1` of the result takes word `i` of the source.
const SPREAD: [i16; 32] = {
    let mut w = [0i16; 32];
    let mut i = 0;
    while i < 16 {
        w[2 * i + 1] = i as i16;
        i += 1;
    }
    w
};
/// Word indices for `vpermw`: word `i` (of the low 16) takes word `2i + 1` of the source.
const GATHER: [i16; 32] = {
    let mut w = [0i16; 32];
    let mut i = 0;
    while i < 16 {
        w[i] = (2 * i + 1) as i16;
        i += 1;
    }
    w
};

/// Word indices for `vpermt2w` over `(a, b)`: word `2i` takes word `first + i` of `a`, word
/// `2i + 1` word `first + i` of `b` (`i < 16`): 16 pairs of words joined into 32-bit lanes.
const fn interleave(first: usize) -> [i16; 32] {
    let mut w = [0i16; 32];
    let mut i = 0;
    while i < 16 {
        w[2 * i] = (first + i) as i16;
        w[2 * i + 1] = (32 + first + i) as i16;
        i += 1;
    }
    w
}
/// Word indices for `vpermt2w` over the 64 words of two vectors of 32-bit lanes: word `i` takes
/// word `2i + odd`, the low (`odd = 0`) or high (`odd = 1`) half of lane `i`.
const fn halves(odd: usize) -> [i16; 32] {
    let mut w = [0i16; 32];
    let mut i = 0;
    while i < 32 {
        w[i] = (2 * i + odd) as i16;
        i += 1;
    }
    w
}
const JOIN_FIRST: [i16; 32] = interleave(0);
const JOIN_SECOND: [i16; 32] = interleave(16);
const LOW_HALVES: [i16; 32] = halves(0);
const HIGH_HALVES: [i16; 32] = halves(1);

/// The 8-bit momentum's table lookups, by permuting 16-bit words held in registers (32 lanes
/// per instruction, a `vpermt2w` reads 64 entries) instead of gathering 32-bit values (16 lanes
/// per instruction, each a memory access).
impl Avx512 {
    /// `table[..len]` as `len / 32` vectors of 32 words.
    #[inline(always)]
    fn words<const V: usize>(self, table: &[u16]) -> [__m512i; V] {
        let rows = table.as_chunks::<32>().0;
        // SAFETY: AVX-512 is available (the token); each load reads one whole `[u16; 32]` (64
        // bytes) of `table`, and `rows[i]` is in bounds (panics otherwise; callers pass tables
        // of exactly `32 * V` words, so it never does).
        core::array::from_fn(|i| unsafe { _mm512_loadu_si512(rows[i].as_ptr().cast()) })
    }
    /// `t[idx]` for 32 word indices below 128 (bit 6 in `k6`): two 64-entry permutations.
    #[inline(always)]
    fn lookup128(self, t: &[__m512i; 4], idx: __m512i, k6: __mmask32) -> __m512i {
        // SAFETY: AVX-512 F and BW are available (the token); register operations only.
        unsafe {
            let low = _mm512_permutex2var_epi16(t[0], idx, t[1]);
            let high = _mm512_permutex2var_epi16(t[2], idx, t[3]);
            _mm512_mask_blend_epi16(k6, low, high)
        }
    }
}

// Every method below: SAFETY: `self` is an `Avx512` token, which exists only when AVX-512 F and
// BW are available (module invariant); loads and stores go through references to arrays of
// exactly the accessed size, so every pointer is valid for the whole access (unaligned forms are
// used).
impl Simd<16> for Avx512 {
    type F32 = __m512;
    type U32 = __m512i;
    const PAIRS: bool = true;
    const BF16_PAIR_EVEN_ODD: bool = true;

    one_line! {
        unsafe;
        fn splat(x: f32) -> __m512 = _mm512_set1_ps(x);
        fn add(a: __m512, b: __m512) -> __m512 = _mm512_add_ps(a, b);
        fn sub(a: __m512, b: __m512) -> __m512 = _mm512_sub_ps(a, b);
        fn mul(a: __m512, b: __m512) -> __m512 = _mm512_mul_ps(a, b);
    }
    /// Two instructions, no compare into a mask register (compares run on one port only): x
    /// with the sign of c (one ternary-logic op), then `vfixupimmps` classifies c and puts `+0`
    /// where it is a zero or a NaN. (With MXCSR.DAZ set it would classify a subnormal c as zero,
    /// as every comparison does then; Rust leaves DAZ clear.)
    #[inline(always)]
    fn signed(self, x: __m512, c: __m512) -> __m512 {
        // SAFETY: see the impl comment (AVX-512 available).
        unsafe {
            let sign = _mm512_set1_epi32(i32::MIN);
            let (xi, ci) = (_mm512_castps_si512(x), _mm512_castps_si512(c));
            let with_sign =
                _mm512_castsi512_ps(_mm512_ternarylogic_epi32::<A_OR_B_AND_C>(xi, ci, sign));
            let table = _mm512_set1_epi32(ZERO_IF_ZERO_OR_NAN);
            _mm512_fixupimm_ps::<0>(with_sign, c, table)
        }
    }
    one_line! {
        unsafe;
        fn gt(a: __m512, b: __m512) -> __m512i =
            _mm512_maskz_set1_epi32(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, b), -1);
        fn is_nan(x: __m512) -> __m512i =
            _mm512_maskz_set1_epi32(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x), -1);
        fn trunc_u32(x: __m512) -> __m512i = _mm512_cvttps_epi32(x);
        fn to_f32(u: __m512i) -> __m512 = _mm512_cvtepi32_ps(u);
        fn to_bits(x: __m512) -> __m512i = _mm512_castps_si512(x);
        fn bits_to_f32(u: __m512i) -> __m512 = _mm512_castsi512_ps(u);
        fn splat_u32(x: u32) -> __m512i = _mm512_set1_epi32(x as i32);
        fn add_u32(a: __m512i, b: __m512i) -> __m512i = _mm512_add_epi32(a, b);
        fn sub_u32(a: __m512i, b: __m512i) -> __m512i = _mm512_sub_epi32(a, b);
        fn mul_u32(a: __m512i, b: __m512i) -> __m512i = _mm512_mullo_epi32(a, b);
        fn lane_indices() -> __m512i =
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        fn any(mask: __m512i) -> bool = _mm512_test_epi32_mask(mask, mask) != 0;
        fn and(a: __m512i, b: __m512i) -> __m512i = _mm512_and_si512(a, b);
        fn andnot(mask: __m512i, a: __m512i) -> __m512i = _mm512_andnot_si512(mask, a);
        fn or(a: __m512i, b: __m512i) -> __m512i = _mm512_or_si512(a, b);
        fn xor(a: __m512i, b: __m512i) -> __m512i = _mm512_xor_si512(a, b);
    }
    #[inline(always)]
    fn shl<const S: i32>(self, a: __m512i) -> __m512i {
        // SAFETY: see the impl comment (AVX-512 available). (A constant count: the compiler
        // emits the immediate form.)
        unsafe { _mm512_sll_epi32(a, _mm_cvtsi32_si128(S)) }
    }
    #[inline(always)]
    fn shr<const S: i32>(self, a: __m512i) -> __m512i {
        // SAFETY: see the impl comment (AVX-512 available).
        unsafe { _mm512_srl_epi32(a, _mm_cvtsi32_si128(S)) }
    }
    one_line! {
        unsafe;
        fn gt_i32(a: __m512i, b: __m512i) -> __m512i =
            _mm512_maskz_set1_epi32(_mm512_cmpgt_epi32_mask(a, b), -1);
        fn eq_u32(a: __m512i, b: __m512i) -> __m512i =
            _mm512_maskz_set1_epi32(_mm512_cmpeq_epi32_mask(a, b), -1);
        fn select(mask: __m512i, a: __m512i, b: __m512i) -> __m512i =
            _mm512_ternarylogic_epi32::<A_SELECTS_B_ELSE_C>(mask, a, b);
        fn max_u32(a: __m512i, b: __m512i) -> __m512i = _mm512_max_epu32(a, b);
        fn min_u32(a: __m512i, b: __m512i) -> __m512i = _mm512_min_epu32(a, b);
    }
    /// One `vpgatherdd` on clamped indices.
    #[inline(always)]
    fn gather<const L: usize>(self, table: &[u32; L], index: __m512i) -> __m512i {
        // SAFETY: see the impl comment (AVX-512 available). Every index is clamped to `L - 1`
        // (`L >= 1`, checked at compile time), so each lane reads 4 bytes inside `table`.
        const { assert!(L >= 1 && L <= i32::MAX as usize) };
        unsafe {
            let i = _mm512_min_epu32(index, _mm512_set1_epi32((L - 1) as i32));
            _mm512_i32gather_epi32::<4>(i, table.as_ptr().cast())
        }
    }
    const Q8_BLOCKWISE: bool = true;
    /// 32 codes at a time: the high and the low halves of their values looked up in two word
    /// tables (four `vpermt2w` each), joined into 32-bit lanes by two more.
    #[inline(always)]
    fn q8_decode(self, codes: &[u8; Q8_BLOCK], out: &mut [f32; Q8_BLOCK]) {
        // The map is odd around code 127 (`MAP[254 - i] == -MAP[i]`; code 255 is 1.0): the
        // values of codes 127..=254 (128 entries: two 64-entry permutations per half) and a sign.
        let hi: [__m512i; 4] = self.words(&MAP_HI[127..255]);
        let lo: [__m512i; 4] = self.words(&MAP_LO[127..255]);
        for (c, o) in codes
            .as_chunks::<32>()
            .0
            .iter()
            .zip(out.as_chunks_mut::<32>().0)
        {
            // SAFETY: see the impl comment (AVX-512 F and BW available; `c` is 32 readable
            // bytes, `o` 128 writable ones, written as its two halves of 64).
            unsafe {
                let code = _mm512_cvtepu8_epi16(_mm256_loadu_si256(c.as_ptr().cast()));
                let mid = _mm512_set1_epi16(127);
                // |code - 127|: 0..=128 (128, code 255, reads entry 0 and is fixed below).
                let idx = _mm512_abs_epi16(_mm512_sub_epi16(code, mid));
                let k6 = _mm512_test_epi16_mask(idx, _mm512_set1_epi16(0x40));
                let high = self.lookup128(&hi, idx, k6);
                let low = self.lookup128(&lo, idx, k6);
                // Codes below 127 are the negated values (the sign bit is clear in `high`).
                let negative = _mm512_cmplt_epu16_mask(code, mid);
                let high = _mm512_mask_add_epi16(high, negative, high, _mm512_set1_epi16(i16::MIN));
                let one = _mm512_cmpeq_epi16_mask(code, _mm512_set1_epi16(255));
                let high = _mm512_mask_mov_epi16(high, one, _mm512_set1_epi16(MAP_HI[255] as i16));
                let first = _mm512_loadu_si512(JOIN_FIRST.as_ptr().cast());
                let second = _mm512_loadu_si512(JOIN_SECOND.as_ptr().cast());
                let (o0, o1) = o.split_at_mut(16);
                _mm512_storeu_si512(
                    o0.as_mut_ptr().cast(),
                    _mm512_permutex2var_epi16(low, first, high),
                );
                _mm512_storeu_si512(
                    o1.as_mut_ptr().cast(),
                    _mm512_permutex2var_epi16(low, second, high),
                );
            }
        }
    }
    /// 32 values at a time, on 16-bit words: the high half `h` of `|x|` (exponent and seven
    /// mantissa bits) picks a bucket in two word lookups (its binade's first bucket and mantissa
    /// shift, `dtype::q8::NEAREST_BASE`/`NEAREST_SHIFT`), and the bucket the count `k` of
    /// thresholds whose high half is below it (`NEAREST_COUNT`, 256 words: four `vpermt2w`); a
    /// bucket holds at most one threshold's high half, so threshold `k` alone is undecided and is
    /// compared whole (its halves looked up, `<` and `<=` on (high, low)); then the count of
    /// thresholds below `x` by the symmetry of the map, as `kernel::q8::nearest` (proved equal to
    /// the reference for every f32 in [-1, 1] by the exhaustive test).
    #[inline(always)]
    fn q8_nearest(self, x: &[f32; Q8_BLOCK], inv: f32, codes: &mut [u8; Q8_BLOCK]) {
        let [base]: [__m512i; 1] = self.words(&NEAREST_BASE);
        let [shift]: [__m512i; 1] = self.words(&NEAREST_SHIFT);
        let count_low: [__m512i; 4] = self.words(&NEAREST_COUNT[..128]);
        let count_high: [__m512i; 4] = self.words(&NEAREST_COUNT[128..]);
        let th: [__m512i; 4] = self.words(&NEAREST_HI);
        let tl: [__m512i; 4] = self.words(&NEAREST_LO);
        let splits = [HIGH_HALVES, LOW_HALVES];
        for (v, c) in x
            .as_chunks::<64>()
            .0
            .iter()
            .zip(codes.as_chunks_mut::<64>().0)
        {
            let halves = v.as_chunks::<16>().0;
            // SAFETY: see the impl comment (AVX-512 F and BW available; every load reads one
            // whole 64-byte array, every store writes one whole 32-byte array of `c`).
            unsafe {
                let [hi_idx, lo_idx] = splits.map(|w| _mm512_loadu_si512(w.as_ptr().cast()));
                let one = _mm512_set1_epi16(1);
                let mid = _mm512_set1_epi16(127);
                let inv = _mm512_set1_ps(inv);
                for (g, c) in c.as_chunks_mut::<32>().0.iter_mut().enumerate() {
                    let a = _mm512_mul_ps(_mm512_loadu_ps(halves[2 * g].as_ptr()), inv);
                    let b = _mm512_mul_ps(_mm512_loadu_ps(halves[2 * g + 1].as_ptr()), inv);
                    let (a, b) = (_mm512_castps_si512(a), _mm512_castps_si512(b));
                    let high = _mm512_permutex2var_epi16(a, hi_idx, b);
                    let low = _mm512_permutex2var_epi16(a, lo_idx, b);
                    let negative = _mm512_movepi16_mask(high);
                    let ah = _mm512_and_si512(high, _mm512_set1_epi16(0x7fff));
                    // The binade (0 below the first; `vpermw` reads the low five bits, and
                    // finite values at most 1 have binades 0..=22).
                    let e = _mm512_subs_epu16(
                        _mm512_srli_epi16::<7>(ah),
                        _mm512_set1_epi16(NEAREST_E0 as i16),
                    );
                    let mantissa = _mm512_srlv_epi16(
                        _mm512_and_si512(ah, _mm512_set1_epi16(0x7f)),
                        _mm512_permutexvar_epi16(e, shift),
                    );
                    let bucket = _mm512_add_epi16(_mm512_permutexvar_epi16(e, base), mantissa);
                    let b6 = _mm512_test_epi16_mask(bucket, _mm512_set1_epi16(0x40));
                    let b7 = _mm512_test_epi16_mask(bucket, _mm512_set1_epi16(0x80));
                    let k = _mm512_mask_blend_epi16(
                        b7,
                        self.lookup128(&count_low, bucket, b6),
                        self.lookup128(&count_high, bucket, b6),
                    );
                    // Thresholds 0..k are below |x|, those after k above: threshold k decides.
                    let k6 = _mm512_test_epi16_mask(k, _mm512_set1_epi16(0x40));
                    let (t_high, t_low) = (self.lookup128(&th, k, k6), self.lookup128(&tl, k, k6));
                    let below = _mm512_cmplt_epu16_mask(t_high, ah);
                    let same = _mm512_cmpeq_epi16_mask(t_high, ah);
                    let lt = below | _mm512_mask_cmplt_epu16_mask(same, t_low, low);
                    let le = below | _mm512_mask_cmple_epu16_mask(same, t_low, low);
                    let under = _mm512_mask_add_epi16(k, lt, k, one); // thresholds < |x|
                    let not_over = _mm512_min_epu16(_mm512_mask_add_epi16(k, le, k, one), mid);
                    let code = _mm512_mask_blend_epi16(
                        negative,
                        _mm512_add_epi16(mid, under),
                        _mm512_sub_epi16(mid, not_over),
                    );
                    _mm256_storeu_si256(c.as_mut_ptr().cast(), _mm512_cvtepi16_epi8(code));
                }
            }
        }
    }
    /// The largest lane, by one reduction.
    #[inline(always)]
    fn reduce_max_u32(self, v: __m512i) -> u32 {
        // SAFETY: see the impl comment (AVX-512 available).
        unsafe { _mm512_reduce_max_epu32(v) }
    }

    #[inline(always)]
    fn prefetch(self, addr: *const u8) {
        // SAFETY: PREFETCHT0 (SSE, part of every x86_64 CPU) is a hint: it never faults and
        // never dereferences `addr` in the program's semantics, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(addr.cast()) }
    }
    #[inline(always)]
    fn load_f32(self, src: &[f32; 16]) -> __m512 {
        // SAFETY: see the impl comment (AVX-512 available; `src` is 16 readable f32).
        unsafe { _mm512_loadu_ps(src.as_ptr()) }
    }
    #[inline(always)]
    fn store_f32(self, v: __m512, dst: &mut [f32; 16]) {
        // SAFETY: see the impl comment (AVX-512 available; `dst` is 16 writable f32).
        unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn load_u8(self, src: &[u8; 16]) -> __m512i {
        // SAFETY: see the impl comment (AVX-512 available; `src` is 16 readable bytes).
        unsafe { _mm512_cvtepu8_epi32(_mm_loadu_si128(src.as_ptr().cast())) }
    }
    #[inline(always)]
    fn store_u8(self, v: __m512i, dst: &mut [u8; 16]) {
        // SAFETY: see the impl comment (AVX-512 available; `dst` is 16 writable bytes).
        unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(v)) }
    }
    #[inline(always)]
    fn load_u16(self, src: &[u16; 16]) -> __m512i {
        // SAFETY: see the impl comment (AVX-512 available; `src` is 32 readable bytes).
        unsafe { _mm512_cvtepu16_epi32(_mm256_loadu_si256(src.as_ptr().cast())) }
    }
    #[inline(always)]
    fn store_u16(self, v: __m512i, dst: &mut [u16; 16]) {
        // SAFETY: see the impl comment (AVX-512 available; `dst` is 32 writable bytes).
        unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), _mm512_cvtepi32_epi16(v)) }
    }
    /// One word permutation with zeroing spreads 16 u16 into the upper halves.
    #[inline(always)]
    fn load_u16_upper(self, src: &[u16; 16]) -> __m512i {
        // SAFETY: see the impl comment (AVX-512 available; `src` is 32 readable bytes). The
        // permutation reads only words 0-15, the loaded ones.
        unsafe {
            let words = _mm512_castsi256_si512(_mm256_loadu_si256(src.as_ptr().cast()));
            let spread = _mm512_loadu_si512(SPREAD.as_ptr().cast());
            _mm512_maskz_permutexvar_epi16(0xaaaa_aaaa, spread, words)
        }
    }
    /// One word permutation gathers the upper halves into the low 256 bits.
    #[inline(always)]
    fn store_u16_upper(self, v: __m512i, dst: &mut [u16; 16]) {
        // SAFETY: see the impl comment (AVX-512 available; `dst` is 32 writable bytes).
        unsafe {
            let gather = _mm512_loadu_si512(GATHER.as_ptr().cast());
            let packed = _mm512_permutexvar_epi16(gather, v);
            _mm256_storeu_si256(dst.as_mut_ptr().cast(), _mm512_castsi512_si256(packed))
        }
    }
    /// `bf16_round` with the NaN test in an opmask that feeds the add directly.
    #[inline(always)]
    fn store_bf16(self, v: __m512, dst: &mut [u16; 16]) {
        // SAFETY: see the impl comment (AVX-512 available).
        let rounded = unsafe {
            let x = _mm512_castps_si512(v);
            let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(x), _mm512_set1_epi32(1));
            let increment = _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff));
            let ordered = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(v, v);
            // NaN lanes get their quiet bit (as `half`), ordered lanes the rounding increment.
            let quiet = _mm512_set1_epi32(QUIET_BIT as i32);
            let x = _mm512_mask_or_epi32(x, !ordered, x, quiet);
            _mm512_mask_add_epi32(x, ordered, x, increment)
        };
        self.store_u16_upper(rounded, dst)
    }
    /// As the shared version, with the NaN test in an opmask.
    #[inline(always)]
    fn store_bf16_stochastic(self, v: __m512, random: __m512i, dst: &mut [u16; 16]) {
        // SAFETY: see the impl comment (AVX-512 available).
        let rounded = unsafe {
            let x = _mm512_castps_si512(v);
            let increment = _mm512_and_si512(random, _mm512_set1_epi32(0xffff));
            let ordered = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(v, v);
            let quiet = _mm512_set1_epi32(QUIET_BIT as i32);
            let x = _mm512_mask_or_epi32(x, !ordered, x, quiet);
            _mm512_mask_add_epi32(x, ordered, x, increment)
        };
        self.store_u16_upper(rounded, dst)
    }

    /// One 512-bit load (a cache line of 32 bf16 when aligned): u32 lane `i` holds elements
    /// `2i` (low half) and `2i + 1` (high half); a shift puts the even one in the upper half, a
    /// word mask keeps the odd one. No shuffles.
    #[inline(always)]
    fn load_bf16_pair(self, src: &[[u16; 16]; 2]) -> [__m512; 2] {
        // SAFETY: see the impl comment (AVX-512 available; `src` is 64 readable bytes).
        unsafe {
            let x = _mm512_loadu_si512(src.as_ptr().cast());
            let even = _mm512_slli_epi32::<16>(x);
            let odd = _mm512_maskz_mov_epi16(ODD_WORDS, x);
            [_mm512_castsi512_ps(even), _mm512_castsi512_ps(odd)]
        }
    }
    /// The 16-bit-lane rounding of the AVX2 pair store (see there), on 32 elements, under the
    /// contract of the trait method (no NaN fix-up): the truncated bf16 `t` and the dropped
    /// halves `l` in element order (two blends), then `t + ((l | (t & 1)) > 0x8000)` — one
    /// ternary-logic op, one unsigned compare into a mask, one masked add. Seven instructions
    /// per 32 elements and one 512-bit store.
    #[inline(always)]
    fn store_bf16_pair(self, v: [__m512; 2], dst: &mut [[u16; 16]; 2]) {
        // SAFETY: see the impl comment (AVX-512 available; `dst` is 64 writable bytes).
        unsafe {
            let (even, odd) = (_mm512_castps_si512(v[0]), _mm512_castps_si512(v[1]));
            let t = _mm512_mask_blend_epi16(ODD_WORDS, _mm512_srli_epi32::<16>(even), odd);
            let l = _mm512_mask_blend_epi16(ODD_WORDS, even, _mm512_slli_epi32::<16>(odd));
            let low_or_lsb = _mm512_ternarylogic_epi32::<A_OR_B_AND_C>(l, t, _mm512_set1_epi16(1));
            let carry = _mm512_cmpgt_epu16_mask(low_or_lsb, _mm512_set1_epi16(-0x8000));
            let rounded = _mm512_mask_add_epi16(t, carry, t, _mm512_set1_epi16(1));
            _mm512_storeu_si512(dst.as_mut_ptr().cast(), rounded)
        }
    }
    /// Adds the random bits (at most `0xffff` per lane), then takes the upper halves in element
    /// order; no NaN fix-up, under the contract of `store_bf16_pair` (a NaN's zero low half
    /// cannot carry).
    #[inline(always)]
    fn store_bf16_pair_stochastic(
        self,
        v: [__m512; 2],
        random: [__m512i; 2],
        dst: &mut [[u16; 16]; 2],
    ) {
        // SAFETY: see the impl comment (AVX-512 available; `dst` is 64 writable bytes).
        unsafe {
            let even = _mm512_add_epi32(_mm512_castps_si512(v[0]), random[0]);
            let odd = _mm512_add_epi32(_mm512_castps_si512(v[1]), random[1]);
            let t = _mm512_mask_blend_epi16(ODD_WORDS, _mm512_srli_epi32::<16>(even), odd);
            _mm512_storeu_si512(dst.as_mut_ptr().cast(), t)
        }
    }

    /// Exact widening (NaNs quieted, as `half`).
    #[inline(always)]
    fn load_f16(self, src: &[u16; 16]) -> __m512 {
        // SAFETY: see the impl comment (AVX-512 available; `src` is 32 readable bytes).
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(src.as_ptr().cast())) }
    }
    /// For stochastic rounding's normal range: round to nearest even.
    #[inline(always)]
    fn f16_bits(self, v: __m512) -> __m512i {
        // SAFETY: see the impl comment (AVX-512 available).
        unsafe { _mm512_cvtepu16_epi32(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v)) }
    }
    /// Round to nearest even by the instruction's immediate (whatever MXCSR says).
    #[inline(always)]
    fn store_f16(self, v: __m512, dst: &mut [u16; 16]) {
        // SAFETY: see the impl comment (AVX-512 available; `dst` is 32 writable bytes).
        unsafe {
            let h = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm256_storeu_si256(dst.as_mut_ptr().cast(), h)
        }
    }
}

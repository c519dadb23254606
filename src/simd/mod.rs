//! The instruction-set abstraction the Lion body is written against.
//!
//! A value of a type implementing [`Simd`] is a **token**: proof that the CPU can execute that
//! instruction set (the portable token always exists; the AVX2 token only after detection).
//! Every vector operation is a method of the token, so a vector operation can only run where its
//! instructions exist, and the generic code above it stays safe.
//!
//! Only what Lion needs is here: f32 add/sub/mul (never fused), `x * sign(c)`, u32 bit
//! operations, and loads/stores of f32 and of 16-bit patterns. The f16 and bf16 conversions are
//! written **once**, below, from those integer operations; an instruction set may override them
//! (F16C, byte shuffles) and the tests prove every override identical.
//!
//! # Signalling NaNs
//!
//! The stores are exact — bit for bit what `half` does — for every f32 input, signalling NaNs
//! included: a NaN is stored quiet. The loads are exact for every input except signalling NaNs,
//! whose payload they keep without setting the quiet bit (`half` sets it). That is invisible in a
//! step's results: every loaded value goes through arithmetic and then a store, and the store
//! quiets whatever NaN reaches it. Rust's float semantics allow an operation on a signalling NaN
//! to return it unquieted (RFC 3514; Miri exercises this even where the hardware always quiets),
//! so the stores must not rely on the arithmetic having quieted it. The loads skip the fix-up:
//! it would cost instructions on every 16-bit load and change no result.

use crate::dtype::q8::{MAP_BITS, Q8_BLOCK};

/// An instruction set with `N` f32 lanes per vector. See the module docs.
pub trait Simd<const N: usize>: Copy {
    /// `N` f32 lanes.
    type F32: Copy;
    /// `N` u32 lanes (the same register viewed as integers).
    type U32: Copy;

    /// Every lane `x`.
    fn splat(self, x: f32) -> Self::F32;
    /// Lane-wise `a + b`, rounded once.
    fn add(self, a: Self::F32, b: Self::F32) -> Self::F32;
    /// Lane-wise `a - b`, rounded once.
    fn sub(self, a: Self::F32, b: Self::F32) -> Self::F32;
    /// Lane-wise `a * b`, rounded once.
    fn mul(self, a: Self::F32, b: Self::F32) -> Self::F32;
    /// Lane-wise mask (all ones / all zeros) of `a > b` (ordered: false if either is NaN).
    fn gt(self, a: Self::F32, b: Self::F32) -> Self::U32;
    /// Lane-wise `x * sign(c)` for `x` that is `+0` or positive (not NaN), with `torch.sign`'s
    /// rule: `x` where `c > 0`, `-x` where `c < 0`, `+0` where `c` is `±0` or NaN. (Exact, so it
    /// can be computed by selecting bits instead of multiplying.)
    fn signed(self, x: Self::F32, c: Self::F32) -> Self::F32;
    /// Whether the kernel steps slices that are **all bf16** two chunks at a time (see
    /// `kernel::passes`): worth it where a pair's conversions cost fewer instructions than two
    /// single ones.
    const PAIRS: bool = false;
    /// Whether [`load_bf16_pair`](Self::load_bf16_pair) returns the **even** elements in its
    /// first vector and the odd ones in its second (instead of the first `N` and the next `N`).
    const BF16_PAIR_EVEN_ODD: bool = false;

    /// Lane-wise mask (all ones / all zeros) of `x` is NaN.
    fn is_nan(self, x: Self::F32) -> Self::U32;
    /// Lane-wise `x` truncated toward zero to an integer, for `0 <= x < 2^31`.
    fn trunc_u32(self, x: Self::F32) -> Self::U32;
    /// Lane-wise `u` as f32, for `u < 2^24` (exact).
    fn to_f32(self, u: Self::U32) -> Self::F32;

    /// The bits of each lane.
    fn to_bits(self, x: Self::F32) -> Self::U32;
    /// Lanes with the given bits.
    fn bits_to_f32(self, u: Self::U32) -> Self::F32;
    /// Every lane `x`.
    fn splat_u32(self, x: u32) -> Self::U32;
    /// Lane-wise wrapping `a + b`.
    fn add_u32(self, a: Self::U32, b: Self::U32) -> Self::U32;
    /// Lane-wise wrapping `a - b`.
    fn sub_u32(self, a: Self::U32, b: Self::U32) -> Self::U32;
    /// Lane-wise wrapping `a * b` (the low 32 bits of the product).
    fn mul_u32(self, a: Self::U32, b: Self::U32) -> Self::U32;
    /// Lane `i` holds `i`.
    fn lane_indices(self) -> Self::U32;
    /// Whether any lane of a mask is set.
    fn any(self, mask: Self::U32) -> bool;
    /// Lane-wise `a & b`.
    fn and(self, a: Self::U32, b: Self::U32) -> Self::U32;
    /// Lane-wise `!mask & a`.
    fn andnot(self, mask: Self::U32, a: Self::U32) -> Self::U32;
    /// Lane-wise `a | b`.
    fn or(self, a: Self::U32, b: Self::U32) -> Self::U32;
    /// Lane-wise `a ^ b`.
    fn xor(self, a: Self::U32, b: Self::U32) -> Self::U32;
    /// Lane-wise logical shift left by `S`.
    fn shl<const S: i32>(self, a: Self::U32) -> Self::U32;
    /// Lane-wise logical shift right by `S`.
    fn shr<const S: i32>(self, a: Self::U32) -> Self::U32;
    /// Lane-wise mask (all ones / all zeros) of `a > b`, both read as **signed** i32.
    fn gt_i32(self, a: Self::U32, b: Self::U32) -> Self::U32;
    /// Lane-wise mask of `a == b`.
    fn eq_u32(self, a: Self::U32, b: Self::U32) -> Self::U32;
    /// Lane-wise `mask ? a : b`; `mask` lanes are all ones or all zeros.
    fn select(self, mask: Self::U32, a: Self::U32, b: Self::U32) -> Self::U32;
    /// Lane-wise unsigned maximum.
    fn max_u32(self, a: Self::U32, b: Self::U32) -> Self::U32;
    /// Lane-wise unsigned minimum.
    fn min_u32(self, a: Self::U32, b: Self::U32) -> Self::U32;
    /// Lane-wise `table[min(index, L - 1)]` (a table lookup; the clamp keeps every lane in
    /// bounds). The default reads the table element by element.
    #[inline(always)]
    fn gather<const L: usize>(self, table: &[u32; L], index: Self::U32) -> Self::U32 {
        let mut lanes = [0.0f32; N];
        self.store_f32(self.bits_to_f32(index), &mut lanes);
        let looked_up = lanes.map(|i| {
            let i = (i.to_bits() as usize).min(L - 1);
            f32::from_bits(table[i])
        });
        self.to_bits(self.load_f32(&looked_up))
    }
    /// The largest lane, unsigned.
    #[inline(always)]
    fn reduce_max_u32(self, v: Self::U32) -> u32 {
        let mut lanes = [0.0f32; N];
        self.store_f32(self.bits_to_f32(v), &mut lanes);
        lanes.iter().map(|x| x.to_bits()).max().unwrap_or(0)
    }

    /// Whether this instruction set decodes the 8-bit momentum a whole block at a time
    /// ([`q8_decode`](Self::q8_decode): table lookups by permuting registers, on AVX-512) rather
    /// than by a gather per vector. (Round-to-nearest encoding is always a block at a time,
    /// [`q8_nearest`](Self::q8_nearest).)
    const Q8_BLOCKWISE: bool = false;
    /// `out[i] = Q8_MAP[codes[i]]` for one block of 8-bit momentum codes. Default: a gather per
    /// vector.
    #[inline(always)]
    fn q8_decode(self, codes: &[u8; Q8_BLOCK], out: &mut [f32; Q8_BLOCK]) {
        for (c, o) in codes
            .as_chunks::<N>()
            .0
            .iter()
            .zip(out.as_chunks_mut::<N>().0)
        {
            self.store_f32(self.bits_to_f32(self.gather(&MAP_BITS, self.load_u8(c))), o);
        }
    }
    /// `codes[i] = reference::q8_quantize(x[i] * inv)` (one f32 product, then the code) for one
    /// block whose products are finite. Default: the bucket quantizer of `kernel::q8`, a vector
    /// at a time.
    #[inline(always)]
    fn q8_nearest(self, x: &[f32; Q8_BLOCK], inv: f32, codes: &mut [u8; Q8_BLOCK]) {
        let inv = self.splat(inv);
        for (v, c) in x
            .as_chunks::<N>()
            .0
            .iter()
            .zip(codes.as_chunks_mut::<N>().0)
        {
            let x = self.mul(self.load_f32(v), inv);
            self.store_u8(crate::kernel::q8::nearest(self, x), c);
        }
    }

    /// A hint that the cache line holding `addr` will be read soon. `addr` may point anywhere
    /// (it is never dereferenced): the instruction does not fault. Default: nothing.
    #[inline(always)]
    fn prefetch(self, addr: *const u8) {
        let _ = addr;
    }

    /// Loads `N` f32.
    fn load_f32(self, src: &[f32; N]) -> Self::F32;
    /// Stores `N` f32.
    fn store_f32(self, v: Self::F32, dst: &mut [f32; N]);
    /// Loads `N` u16, zero-extended.
    fn load_u16(self, src: &[u16; N]) -> Self::U32;
    /// Stores each lane as a u16; every lane holds a value `<= 0xffff`.
    fn store_u16(self, v: Self::U32, dst: &mut [u16; N]);
    /// Loads `N` bytes, zero-extended. The default widens through [`load_u16`](Self::load_u16).
    #[inline(always)]
    fn load_u8(self, src: &[u8; N]) -> Self::U32 {
        self.load_u16(&src.map(u16::from))
    }
    /// Stores each lane as a byte; every lane holds a value `<= 0xff`. The default narrows
    /// through [`store_u16`](Self::store_u16).
    #[inline(always)]
    fn store_u8(self, v: Self::U32, dst: &mut [u8; N]) {
        let mut wide = [0u16; N];
        self.store_u16(v, &mut wide);
        *dst = wide.map(|x| x as u8);
    }

    /// Loads `N` u16 into the **upper** halves of the lanes (the lower halves are zero).
    #[inline(always)]
    fn load_u16_upper(self, src: &[u16; N]) -> Self::U32 {
        self.shl::<16>(self.load_u16(src))
    }
    /// Stores the **upper** halves of the lanes as `N` u16.
    #[inline(always)]
    fn store_u16_upper(self, v: Self::U32, dst: &mut [u16; N]) {
        self.store_u16(self.shr::<16>(v), dst)
    }

    /// Loads `N` bf16 (as bits), widened exactly (see the module docs on signalling NaNs).
    #[inline(always)]
    fn load_bf16(self, src: &[u16; N]) -> Self::F32 {
        self.bits_to_f32(self.load_u16_upper(src))
    }
    /// Rounds to bf16 as `half::bf16::from_f32` does and stores the bits.
    #[inline(always)]
    fn store_bf16(self, v: Self::F32, dst: &mut [u16; N]) {
        self.store_u16_upper(bf16_round(self, v), dst)
    }
    /// Rounds to bf16 as `bf16::from_f32_stochastic` does with the random bits in the low 16
    /// bits of each lane of `random`, and stores the bits.
    #[inline(always)]
    fn store_bf16_stochastic(self, v: Self::F32, random: Self::U32, dst: &mut [u16; N]) {
        // A NaN gets no increment (it could carry into the sign) but its quiet bit; an
        // infinity's dropped bits are zero, so it stays infinite.
        let nan = self.is_nan(v);
        let x = self.or(self.to_bits(v), self.and(nan, self.splat_u32(QUIET_BIT)));
        let increment = self.andnot(nan, self.and(random, self.splat_u32(0xffff)));
        self.store_u16_upper(self.add_u32(x, increment), dst)
    }
    /// Loads `2N` bf16 (as bits), widened exactly, in the order
    /// [`BF16_PAIR_EVEN_ODD`](Self::BF16_PAIR_EVEN_ODD) says.
    #[inline(always)]
    fn load_bf16_pair(self, src: &[[u16; N]; 2]) -> [Self::F32; 2] {
        [self.load_bf16(&src[0]), self.load_bf16(&src[1])]
    }
    /// Rounds `2N` lanes (in the order of [`load_bf16_pair`](Self::load_bf16_pair)) to bf16 as
    /// `half::bf16::from_f32` does and stores the bits, for lanes computed by Lion's arithmetic
    /// from bf16 values: the result is exact for every input except a NaN whose **low 16 bits
    /// are not zero**, which may be stored as any value. No such NaN reaches it: a NaN result
    /// of that arithmetic is an input NaN (low 16 bits zero, as every widened bf16) or the
    /// default NaN (`0x7fc0_0000` with either sign), quieted on hardware. (Where an operation
    /// may return a signalling NaN unquieted, as Rust's semantics allow, the store keeps it a
    /// NaN, without the quiet bit.) The default is the exact single store.
    #[inline(always)]
    fn store_bf16_pair(self, v: [Self::F32; 2], dst: &mut [[u16; N]; 2]) {
        self.store_bf16(v[0], &mut dst[0]);
        self.store_bf16(v[1], &mut dst[1]);
    }
    /// Rounds `2N` lanes (in pair order) to bf16 stochastically, as
    /// [`store_bf16_stochastic`](Self::store_bf16_stochastic) does with the random bits of
    /// `random` (in pair order; **every lane at most `0xffff`**), and stores the bits; under the
    /// contract of [`store_bf16_pair`](Self::store_bf16_pair). The default is the exact single
    /// store.
    #[inline(always)]
    fn store_bf16_pair_stochastic(
        self,
        v: [Self::F32; 2],
        random: [Self::U32; 2],
        dst: &mut [[u16; N]; 2],
    ) {
        self.store_bf16_stochastic(v[0], random[0], &mut dst[0]);
        self.store_bf16_stochastic(v[1], random[1], &mut dst[1]);
    }
    /// Loads `N` f16 (as bits), widened exactly (see the module docs on signalling NaNs).
    #[inline(always)]
    fn load_f16(self, src: &[u16; N]) -> Self::F32 {
        let u = self.load_u16(src);
        f16_to_f32(self, u)
    }
    /// f16 bits (in the low 16 bits of each lane) of `v` rounded as `half::f16::from_f32`.
    #[inline(always)]
    fn f16_bits(self, v: Self::F32) -> Self::U32 {
        f32_to_f16_bits(self, v)
    }
    /// Rounds to f16 as `half::f16::from_f32` does and stores the bits.
    #[inline(always)]
    fn store_f16(self, v: Self::F32, dst: &mut [u16; N]) {
        self.store_u16(self.f16_bits(v), dst)
    }
    /// Rounds to f16 as `f16::from_f32_stochastic` does with the random bits in the low 16 bits
    /// of each lane of `random`, and stores the bits.
    ///
    /// Unless a lane is in f16's subnormal range (`0 < |x| < 2^-14`), every lane takes the
    /// normal-range branch, which works on the signed bits directly (`x + noise` grows the
    /// magnitude for either sign; an infinity's dropped bits are zero, so masking restores it)
    /// and ends in the ordinary conversion, exact there. NaN lanes are converted as they are.
    #[inline(always)]
    fn store_f16_stochastic(self, v: Self::F32, random: Self::U32, dst: &mut [u16; N]) {
        let u = |x| self.splat_u32(x);
        let x = self.to_bits(v);
        let abs = self.and(x, u(0x7fff_ffff));
        let tiny = self.andnot(self.eq_u32(abs, u(0)), self.gt_i32(u(113 << 23), abs));
        if self.any(tiny) {
            return self.store_u16(f16_stochastic(self, v, random), dst);
        }
        let noise = self.shr::<3>(self.and(random, u(0xffff)));
        let truncated = self.andnot(u(0x1fff), self.add_u32(x, noise));
        let kept = self.select(self.is_nan(v), x, truncated);
        self.store_f16(self.bits_to_f32(kept), dst)
    }
}

/// f16 bits of `v` rounded stochastically, exactly as `f16::from_f32_stochastic`.
#[inline(always)]
pub(crate) fn f16_stochastic<S: Simd<N>, const N: usize>(
    s: S,
    v: S::F32,
    random: S::U32,
) -> S::U32 {
    let u = |x| s.splat_u32(x);
    let x = s.to_bits(v);
    let abs = s.and(x, u(0x7fff_ffff));
    let sign = s.and(s.shr::<16>(x), u(0x8000));
    let random = s.and(random, u(0xffff));
    // Normal range: add the top 13 random bits to the 13 dropped ones, drop them, and convert
    // exactly (or overflow to infinity). Infinities and NaNs are converted as they are (dropping
    // a NaN's low payload bits could leave an infinity).
    let inf_nan = s.gt_i32(abs, u(0x7f7f_ffff));
    let truncated = s.andnot(u(0x1fff), s.add_u32(abs, s.shr::<3>(random)));
    let normal = s.f16_bits(s.bits_to_f32(s.select(inf_nan, abs, truncated)));
    // Subnormal range: count steps of 2^-24 with 16 fractional bits.
    let fixed = s.trunc_u32(s.mul(s.bits_to_f32(abs), s.splat((1u64 << 40) as f32)));
    let subnormal = s.shr::<16>(s.add_u32(fixed, random));
    let tiny = s.gt_i32(u(113 << 23), abs);
    s.or(s.select(tiny, subnormal, normal), sign)
}

/// The random bits of stochastic rounding for the lanes with indices `index` (the low 32 bits of
/// the element indices) under `key`: `lowbias32(index ^ key)`, as `reference::random_bits`.
#[inline(always)]
pub(crate) fn random_bits<S: Simd<N>, const N: usize>(s: S, key: S::U32, index: S::U32) -> S::U32 {
    let mut x = s.xor(index, key);
    x = s.xor(x, s.shr::<16>(x));
    x = s.mul_u32(x, s.splat_u32(0x7feb_352d));
    x = s.xor(x, s.shr::<15>(x));
    x = s.mul_u32(x, s.splat_u32(0x846c_a68b));
    s.xor(x, s.shr::<16>(x))
}

/// Rounds f32 lanes to bf16 precision, to nearest with ties to even, as `half`: the bf16 bits
/// are the **upper** 16 bits of each result lane (the lower 16 are garbage).
///
/// Adding `0x7fff` plus the lowest kept bit carries into the kept bits exactly when the dropped
/// half is above one half, or exactly one half with an odd kept part. Finite values near the top
/// carry into the exponent and give infinity, as they must. A NaN lane takes its own bits with
/// the quiet bit set instead (one select), as `half` does: the increment could carry out of a
/// NaN's payload into the sign, and a NaN whose payload lies only in the dropped bits would
/// become an infinity.
#[inline(always)]
pub(crate) fn bf16_round<S: Simd<N>, const N: usize>(s: S, v: S::F32) -> S::U32 {
    let quiet_nan = s.or(s.to_bits(v), s.splat_u32(QUIET_BIT));
    s.select(s.is_nan(v), quiet_nan, bf16_round_not_nan(s, v))
}

/// [`bf16_round`] of lanes that are not NaN. A NaN lane whose low 16 bits are zero keeps its top
/// bits (the increment cannot carry out of the low half); any other NaN lane gives garbage.
#[inline(always)]
pub(crate) fn bf16_round_not_nan<S: Simd<N>, const N: usize>(s: S, v: S::F32) -> S::U32 {
    let x = s.to_bits(v);
    let lsb = s.and(s.shr::<16>(x), s.splat_u32(1));
    s.add_u32(s.add_u32(x, s.splat_u32(0x7fff)), lsb)
}

/// The quiet bit of an f32 NaN (the top mantissa bit).
pub(crate) const QUIET_BIT: u32 = 0x0040_0000;

/// f16 bits (low 16 bits of each lane) to f32, exactly as `half` (see the module docs on
/// signalling NaNs).
///
/// Normal numbers are re-biased by an integer add. Zeros and subnormals are built as
/// `2^-14 * (1 + m/1024)` and then `2^-14` is subtracted: both operands and the result are normal
/// f32 (an f16 subnormal is at least `2^-24`), so the subtraction is exact in every floating-point
/// environment, flush-to-zero included. Infinities and NaNs get the f32 exponent.
#[inline(always)]
pub(crate) fn f16_to_f32<S: Simd<N>, const N: usize>(s: S, h: S::U32) -> S::F32 {
    const EXP: u32 = 0x7c00 << 13;
    let u = |x| s.splat_u32(x);
    let shifted = s.shl::<13>(s.and(h, u(0x7fff)));
    let exp = s.and(shifted, u(EXP));
    let normal = s.add_u32(shifted, u((127 - 15) << 23));
    // Infinity / NaN: the exponent goes all the way to 0xff.
    let inf_nan = s.eq_u32(exp, u(EXP));
    let big = s.add_u32(normal, s.and(inf_nan, u((128 - 16) << 23)));
    // Zero / subnormal.
    let magic = s.bits_to_f32(u(113 << 23));
    let sub = s.to_bits(s.sub(s.bits_to_f32(s.add_u32(normal, u(1 << 23))), magic));
    let tiny = s.eq_u32(exp, u(0));
    let mag = s.select(tiny, sub, big);
    let sign = s.shl::<16>(s.and(h, u(0x8000)));
    s.bits_to_f32(s.or(mag, sign))
}

/// f32 to f16 bits (in the low 16 bits): round to nearest, ties to even, exactly as `half`.
///
/// * `|x| >= 2^16`, infinities and NaNs: infinity, or a quiet NaN keeping the top payload bits.
/// * `|x| < 2^-14` (f16 subnormals): `|x| + 0.5` in f32 rounds at exactly the f16 subnormal
///   spacing `2^-24`, so the low bits of the sum are the rounded subnormal. (An f32 subnormal
///   input rounds to zero whether or not it is flushed: it is far below `2^-25`.)
/// * Otherwise: re-bias the exponent and round the 13 dropped mantissa bits to nearest even with
///   an integer add; a carry correctly overflows into the exponent (up to infinity).
#[inline(always)]
pub(crate) fn f32_to_f16_bits<S: Simd<N>, const N: usize>(s: S, v: S::F32) -> S::U32 {
    let u = |x| s.splat_u32(x);
    let x = s.to_bits(v);
    let abs = s.and(x, u(0x7fff_ffff));
    let sign = s.shr::<16>(s.and(x, u(0x8000_0000)));

    let overflow = s.gt_i32(abs, u(((127 + 16) << 23) - 1));
    let nan = s.gt_i32(abs, u(0x7f80_0000));
    let payload = s.or(u(0x0200), s.and(s.shr::<13>(abs), u(0x03ff)));
    let big = s.or(u(0x7c00), s.and(nan, payload));

    let half = s.splat(0.5);
    let sub = s.sub_u32(s.to_bits(s.add(s.bits_to_f32(abs), half)), s.to_bits(half));
    let tiny = s.gt_i32(u(113 << 23), abs);

    let odd = s.and(s.shr::<13>(abs), u(1));
    let rebias = (15u32.wrapping_sub(127) << 23).wrapping_add(0x0fff);
    let normal = s.shr::<13>(s.add_u32(abs, s.add_u32(odd, u(rebias))));

    let mag = s.select(overflow, big, s.select(tiny, sub, normal));
    s.or(mag, sign)
}

/// Proofs that the conversions above (and any hardware override of them) are exactly `half`'s.
#[cfg(test)]
pub(crate) mod tests;

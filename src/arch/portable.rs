//! The portable instruction set: `wide`'s 8-lane vectors, in safe code.
//!
//! `wide` picks SSE2, AVX, NEON, wasm simd128 or plain arrays from the target features the crate
//! is compiled with; this path is therefore as fast as the build allows and runs everywhere.

use wide::{f32x8, i16x8, i32x8, u16x8, u32x8};

use crate::simd::Simd;

/// The instructions `wide` uses in this build (mirrors `wide`'s own compile-time choice).
pub(crate) const INSTRUCTIONS: &str = if cfg!(all(
    any(target_arch = "x86", target_arch = "x86_64"),
    target_feature = "avx2"
)) {
    "avx2"
} else if cfg!(all(
    any(target_arch = "x86", target_arch = "x86_64"),
    target_feature = "avx"
)) {
    "avx"
} else if cfg!(all(
    any(target_arch = "x86", target_arch = "x86_64"),
    target_feature = "sse2"
)) {
    "sse2"
} else if cfg!(all(target_arch = "aarch64", target_feature = "neon")) {
    "neon"
} else if cfg!(all(target_arch = "wasm32", target_feature = "simd128")) {
    "simd128"
} else {
    "scalar"
};

/// Token of the portable path: always available.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Portable;

impl Simd<8> for Portable {
    type F32 = f32x8;
    type U32 = u32x8;

    one_line! {
        fn splat(x: f32) -> f32x8 = f32x8::splat(x);
        fn add(a: f32x8, b: f32x8) -> f32x8 = a + b;
        fn sub(a: f32x8, b: f32x8) -> f32x8 = a - b;
        fn mul(a: f32x8, b: f32x8) -> f32x8 = a * b;
    }
    #[inline(always)]
    fn signed(self, x: f32x8, c: f32x8) -> f32x8 {
        // x with the sign of c, kept where c is ordered and nonzero: `!=` is false for NaN and
        // for ±0 (wide's simd_ne is the ordered-quiet not-equal: NaN != 0 is false there).
        let with_sign = x | (c & f32x8::splat(-0.0));
        with_sign & nonzero(c)
    }
    one_line! {
        fn gt(a: f32x8, b: f32x8) -> u32x8 = bytemuck::must_cast(a.simd_gt(b));
        fn is_nan(x: f32x8) -> u32x8 = bytemuck::must_cast(x.is_nan());
        fn trunc_u32(x: f32x8) -> u32x8 = bytemuck::must_cast(x.fast_trunc_int());
    }
    #[inline(always)]
    fn to_f32(self, u: u32x8) -> f32x8 {
        let i: i32x8 = bytemuck::must_cast(u);
        i.round_float()
    }

    one_line! {
        fn to_bits(x: f32x8) -> u32x8 = bytemuck::must_cast(x);
        fn bits_to_f32(u: u32x8) -> f32x8 = bytemuck::must_cast(u);
        fn splat_u32(x: u32) -> u32x8 = u32x8::splat(x);
        fn add_u32(a: u32x8, b: u32x8) -> u32x8 = a + b;
        fn sub_u32(a: u32x8, b: u32x8) -> u32x8 = a - b;
        fn mul_u32(a: u32x8, b: u32x8) -> u32x8 = a * b;
        fn lane_indices() -> u32x8 = u32x8::new([0, 1, 2, 3, 4, 5, 6, 7]);
        fn any(mask: u32x8) -> bool = mask.any();
        fn and(a: u32x8, b: u32x8) -> u32x8 = a & b;
        fn andnot(mask: u32x8, a: u32x8) -> u32x8 = a & !mask;
        fn or(a: u32x8, b: u32x8) -> u32x8 = a | b;
        fn xor(a: u32x8, b: u32x8) -> u32x8 = a ^ b;
    }
    #[inline(always)]
    fn shl<const S: i32>(self, a: u32x8) -> u32x8 {
        a << S as u32
    }
    #[inline(always)]
    fn shr<const S: i32>(self, a: u32x8) -> u32x8 {
        a >> S as u32
    }
    #[inline(always)]
    fn gt_i32(self, a: u32x8, b: u32x8) -> u32x8 {
        let (a, b): (i32x8, i32x8) = (bytemuck::must_cast(a), bytemuck::must_cast(b));
        bytemuck::must_cast(a.simd_gt(b))
    }
    one_line! {
        fn eq_u32(a: u32x8, b: u32x8) -> u32x8 = a.simd_eq(b);
        fn select(mask: u32x8, a: u32x8, b: u32x8) -> u32x8 = mask.select(a, b);
        fn max_u32(a: u32x8, b: u32x8) -> u32x8 = a.max(b);
        fn min_u32(a: u32x8, b: u32x8) -> u32x8 = a.min(b);
        fn load_f32(src: &[f32; 8]) -> f32x8 = f32x8::from(*src);
    }
    #[inline(always)]
    fn store_f32(self, v: f32x8, dst: &mut [f32; 8]) {
        *dst = v.to_array();
    }
    #[inline(always)]
    fn load_u16(self, src: &[u16; 8]) -> u32x8 {
        u32x8::from(u16x8::from(*src))
    }
    #[inline(always)]
    fn store_u16(self, v: u32x8, dst: &mut [u16; 8]) {
        let narrow = i16x8::from_i32x8_truncate(bytemuck::must_cast(v));
        *dst = bytemuck::must_cast(narrow);
    }
}

/// Mask of lanes that are neither ±0 nor NaN (`c > 0 || c < 0`).
#[inline(always)]
fn nonzero(c: f32x8) -> f32x8 {
    c.simd_gt(f32x8::ZERO) | c.simd_lt(f32x8::ZERO)
}

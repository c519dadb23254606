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

    #[inline(always)]
    fn splat(self, x: f32) -> f32x8 {
        f32x8::splat(x)
    }
    #[inline(always)]
    fn add(self, a: f32x8, b: f32x8) -> f32x8 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32x8, b: f32x8) -> f32x8 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32x8, b: f32x8) -> f32x8 {
        a * b
    }
    #[inline(always)]
    fn signed(self, x: f32x8, c: f32x8) -> f32x8 {
        // x with the sign of c, kept where c is ordered and nonzero: `!=` is false for NaN and
        // for ±0 (wide's simd_ne is the ordered-quiet not-equal: NaN != 0 is false there).
        let with_sign = x | (c & f32x8::splat(-0.0));
        with_sign & nonzero(c)
    }
    #[inline(always)]
    fn gt(self, a: f32x8, b: f32x8) -> u32x8 {
        bytemuck::must_cast(a.simd_gt(b))
    }
    #[inline(always)]
    fn is_nan(self, x: f32x8) -> u32x8 {
        bytemuck::must_cast(x.is_nan())
    }
    #[inline(always)]
    fn trunc_u32(self, x: f32x8) -> u32x8 {
        bytemuck::must_cast(x.fast_trunc_int())
    }
    #[inline(always)]
    fn to_f32(self, u: u32x8) -> f32x8 {
        let i: i32x8 = bytemuck::must_cast(u);
        i.round_float()
    }

    #[inline(always)]
    fn to_bits(self, x: f32x8) -> u32x8 {
        bytemuck::must_cast(x)
    }
    #[inline(always)]
    fn bits_to_f32(self, u: u32x8) -> f32x8 {
        bytemuck::must_cast(u)
    }
    #[inline(always)]
    fn splat_u32(self, x: u32) -> u32x8 {
        u32x8::splat(x)
    }
    #[inline(always)]
    fn add_u32(self, a: u32x8, b: u32x8) -> u32x8 {
        a + b
    }
    #[inline(always)]
    fn sub_u32(self, a: u32x8, b: u32x8) -> u32x8 {
        a - b
    }
    #[inline(always)]
    fn mul_u32(self, a: u32x8, b: u32x8) -> u32x8 {
        a * b
    }
    #[inline(always)]
    fn lane_indices(self) -> u32x8 {
        u32x8::new([0, 1, 2, 3, 4, 5, 6, 7])
    }
    #[inline(always)]
    fn any(self, mask: u32x8) -> bool {
        mask.any()
    }
    #[inline(always)]
    fn and(self, a: u32x8, b: u32x8) -> u32x8 {
        a & b
    }
    #[inline(always)]
    fn andnot(self, mask: u32x8, a: u32x8) -> u32x8 {
        a & !mask
    }
    #[inline(always)]
    fn or(self, a: u32x8, b: u32x8) -> u32x8 {
        a | b
    }
    #[inline(always)]
    fn xor(self, a: u32x8, b: u32x8) -> u32x8 {
        a ^ b
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
    #[inline(always)]
    fn eq_u32(self, a: u32x8, b: u32x8) -> u32x8 {
        a.simd_eq(b)
    }
    #[inline(always)]
    fn select(self, mask: u32x8, a: u32x8, b: u32x8) -> u32x8 {
        mask.select(a, b)
    }
    #[inline(always)]
    fn max_u32(self, a: u32x8, b: u32x8) -> u32x8 {
        a.max(b)
    }
    #[inline(always)]
    fn min_u32(self, a: u32x8, b: u32x8) -> u32x8 {
        a.min(b)
    }

    #[inline(always)]
    fn load_f32(self, src: &[f32; 8]) -> f32x8 {
        f32x8::from(*src)
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

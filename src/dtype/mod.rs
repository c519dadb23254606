//! The data types: the element types a step reads and writes (`f32`, `half::f16`,
//! `half::bf16`), their run-time tags ([`Dtype`]), slices whose element type is known at run
//! time ([`SliceMut`], [`SliceRef`]), the momentum's storage formats ([`MomentumDtype`]: an
//! element type or 8-bit blocks, `q8`) with their run-time views and owned buffers, and the one
//! place that turns run-time types into a call of generic code ([`slices`]).

use core::fmt;

use half::{bf16, f16};

use crate::simd::Simd;

mod momentum;
pub(crate) mod q8;
pub(crate) mod slices;

#[cfg(feature = "alloc")]
pub use momentum::Buffer;
pub use momentum::{MomentumDtype, MomentumMut, MomentumRef};
pub use q8::{Q8_BLOCK, Q8_MAP, Q8Mut, Q8Ref};
pub use slices::{SliceMut, SliceRef};

/// The element type of a buffer, known at run time (for [`Lion`](crate::Lion)'s per-tensor
/// momentum and for checkpoints).
///
/// ```
/// use lion_optim::{Dtype, Element, bf16};
///
/// assert_eq!(bf16::DTYPE, Dtype::Bf16);
/// assert_eq!(Dtype::Bf16.size(), 2);
/// assert_eq!(Dtype::F32.to_string(), "f32");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary16 ([`half::f16`]).
    F16,
    /// bfloat16 ([`half::bf16`]): the upper half of an f32.
    Bf16,
}

impl Dtype {
    /// Every dtype, in tag order.
    ///
    /// ```
    /// use lion_optim::Dtype;
    ///
    /// assert_eq!(Dtype::ALL.map(Dtype::size), [4, 2, 2]);
    /// ```
    pub const ALL: [Dtype; 3] = [Dtype::F32, Dtype::F16, Dtype::Bf16];

    /// Size of one element in bytes.
    ///
    /// ```
    /// assert_eq!(lion_optim::Dtype::F32.size(), 4);
    /// ```
    pub const fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }

    /// The name used in messages: `"f32"`, `"f16"`, `"bf16"`.
    ///
    /// ```
    /// assert_eq!(lion_optim::Dtype::F16.name(), "f16");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An element type a Lion step can read and write: `f32`, [`f16`](struct@f16) or [`bf16`].
///
/// Arithmetic always happens in f32. Loading widens exactly; storing rounds once to nearest,
/// ties to even, exactly as `half::f16::from_f32` / `half::bf16::from_f32` do (a NaN stays a
/// NaN). The trait is sealed: the kernels are proved bit-exact for these three types only.
///
/// ```
/// use lion_optim::{Element, bf16};
///
/// assert_eq!(bf16::from_f32_rounded(1.0 + 1.0 / 256.0).to_f32_exact(), 1.0); // tie to even
/// assert_eq!(bf16::from_f32_rounded(1.0 + 3.0 / 256.0).to_f32_exact(), 1.015625);
/// ```
pub trait Element:
    private::Sealed + Copy + Default + PartialEq + fmt::Debug + Send + Sync + bytemuck::Pod + 'static
{
    /// The run-time tag of this type.
    const DTYPE: Dtype;

    /// Widens to f32 exactly (as `half`'s `to_f32`).
    fn to_f32_exact(self) -> f32;

    /// Rounds an f32 to this type, to nearest with ties to even (as `half`'s `from_f32`).
    fn from_f32_rounded(x: f32) -> Self;

    /// Rounds an f32 to this type stochastically with 16 random bits: to one of the two
    /// neighbours of `x`, up with probability (distance to the lower one) / (their spacing), so
    /// that the mean over all 65536 values of `random` is `x` (up to 2^-16 of a spacing for f16
    /// subnormals; exactly for bf16 and for normal f16). Values of this type are never changed;
    /// NaN and infinities round as [`from_f32_rounded`](Self::from_f32_rounded); values beyond
    /// the largest finite value may round to infinity. f32 is returned unchanged.
    ///
    /// * bf16: add `random` to the 16 bits that are dropped, then drop them.
    /// * f16, normal range: add the top 13 bits of `random` to the 13 dropped bits, then drop
    ///   them (the result is exact in f16, or overflows to infinity).
    /// * f16, subnormal range (|x| < 2^-14): `(floor(|x| * 2^40) + random) >> 16` subnormal
    ///   steps of 2^-24.
    ///
    /// ```
    /// use lion_optim::{Element, f16};
    ///
    /// let x = 1.0 + 0.75 / 1024.0; // three quarters of the way to the next f16
    /// let ups = (0..=u16::MAX).filter(|&r| f16::from_f32_stochastic(x, r) > f16::ONE).count();
    /// assert_eq!(ups, 3 * 65536 / 4);
    /// assert_eq!(f16::from_f32_stochastic(0.5, 0xffff), f16::from_f32(0.5));
    /// ```
    fn from_f32_stochastic(x: f32, random: u16) -> Self;
}

pub(crate) mod private {
    use super::{SliceMut, SliceRef};
    use crate::simd::Simd;

    /// Seals [`Element`](super::Element) and carries the per-type hooks of the kernels.
    pub trait Sealed: Sized {
        /// Loads `N` elements into f32 lanes.
        fn load<S: Simd<N>, const N: usize>(s: S, src: &[Self; N]) -> S::F32;
        /// Rounds f32 lanes to this type and stores them.
        fn store<S: Simd<N>, const N: usize>(s: S, v: S::F32, dst: &mut [Self; N]);
        /// Rounds f32 lanes to this type stochastically with the random bits in the low 16 bits
        /// of each lane of `random` (as `from_f32_stochastic`) and stores them.
        fn store_stochastic<S: Simd<N>, const N: usize>(
            s: S,
            v: S::F32,
            random: S::U32,
            dst: &mut [Self; N],
        );
        /// Loads `2N` elements into two vectors of f32 lanes (in the instruction set's pair
        /// order: only bf16 has one of its own, and the kernel pairs bf16 with bf16 only).
        #[inline(always)]
        fn load_pair<S: Simd<N>, const N: usize>(s: S, src: &[[Self; N]; 2]) -> [S::F32; 2] {
            [Self::load(s, &src[0]), Self::load(s, &src[1])]
        }
        /// Rounds two vectors (in the order of `load_pair`) to this type and stores them
        /// (bf16: under the contract of `Simd::store_bf16_pair`).
        #[inline(always)]
        fn store_pair<S: Simd<N>, const N: usize>(s: S, v: [S::F32; 2], dst: &mut [[Self; N]; 2]) {
            Self::store(s, v[0], &mut dst[0]);
            Self::store(s, v[1], &mut dst[1]);
        }
        /// Rounds two vectors (in the order of `load_pair`) to this type stochastically with the
        /// random bits in the low 16 bits of each lane of `random` (as `store_stochastic`) and
        /// stores them.
        #[inline(always)]
        fn store_pair_stochastic<S: Simd<N>, const N: usize>(
            s: S,
            v: [S::F32; 2],
            random: [S::U32; 2],
            dst: &mut [[Self; N]; 2],
        ) {
            Self::store_stochastic(s, v[0], random[0], &mut dst[0]);
            Self::store_stochastic(s, v[1], random[1], &mut dst[1]);
        }
        /// Tags a slice with its dtype.
        fn slice_mut(s: &mut [Self]) -> SliceMut<'_>;
        /// Tags a slice with its dtype.
        fn slice_ref(s: &[Self]) -> SliceRef<'_>;
    }
}

impl Element for f32 {
    const DTYPE: Dtype = Dtype::F32;
    #[inline]
    fn to_f32_exact(self) -> f32 {
        self
    }
    #[inline]
    fn from_f32_rounded(x: f32) -> Self {
        x
    }
    #[inline]
    fn from_f32_stochastic(x: f32, _random: u16) -> Self {
        x
    }
}

impl private::Sealed for f32 {
    fn slice_mut(s: &mut [Self]) -> SliceMut<'_> {
        SliceMut::F32(s)
    }
    fn slice_ref(s: &[Self]) -> SliceRef<'_> {
        SliceRef::F32(s)
    }
    #[inline(always)]
    fn load<S: Simd<N>, const N: usize>(s: S, src: &[Self; N]) -> S::F32 {
        s.load_f32(src)
    }
    #[inline(always)]
    fn store<S: Simd<N>, const N: usize>(s: S, v: S::F32, dst: &mut [Self; N]) {
        s.store_f32(v, dst)
    }
    #[inline(always)]
    fn store_stochastic<S: Simd<N>, const N: usize>(
        s: S,
        v: S::F32,
        _random: S::U32,
        dst: &mut [Self; N],
    ) {
        s.store_f32(v, dst)
    }
}

/// [`Element::from_f32_stochastic`] of f16.
fn f16_stochastic(x: f32, random: u16) -> f16 {
    let (bits, random) = (x.to_bits(), u32::from(random));
    let abs = bits & 0x7fff_ffff;
    let sign = (bits >> 16) as u16 & 0x8000;
    if abs >= 0x7f80_0000 {
        return f16::from_f32(x); // infinity, NaN
    }
    let magnitude = if abs >= 113 << 23 {
        // |x| >= 2^-14: the f16 keeps the top 10 of f32's 23 mantissa bits.
        let truncated = (abs + (random >> 3)) & !0x1fff;
        f16::from_f32(f32::from_bits(truncated)).to_bits() // exact, or infinity
    } else {
        // f16 subnormals are multiples of 2^-24: count them with 16 fractional bits.
        let fixed = (f32::from_bits(abs) * TWO_POW_40) as u32;
        ((fixed + random) >> 16) as u16
    };
    f16::from_bits(sign | magnitude)
}

/// 2^40 (exact in f32).
const TWO_POW_40: f32 = (1u64 << 40) as f32;

/// [`Element::from_f32_stochastic`] of bf16.
fn bf16_stochastic(x: f32, random: u16) -> bf16 {
    if x.is_nan() {
        return bf16::from_f32(x);
    }
    // The kept bits are bf16's; the dropped 16 bits plus `random` carry into them (an
    // infinity's dropped bits are zero, so it stays infinite).
    bf16::from_bits(((x.to_bits() + u32::from(random)) >> 16) as u16)
}

/// A 16-bit element type: `half`'s conversions, its stochastic rounding `$stochastic`, and the
/// kernel hooks, whose loads and stores are the instruction set's `$load`, `$store` and
/// `$store_stochastic` over the bit patterns.
macro_rules! half_element {
    ($t:ident, $variant:ident, $stochastic:ident, $load:ident, $store:ident, $store_stochastic:ident) => {
        impl Element for $t {
            const DTYPE: Dtype = Dtype::$variant;
            #[inline]
            fn to_f32_exact(self) -> f32 {
                self.to_f32()
            }
            #[inline]
            fn from_f32_rounded(x: f32) -> Self {
                $t::from_f32(x)
            }
            fn from_f32_stochastic(x: f32, random: u16) -> Self {
                $stochastic(x, random)
            }
        }

        impl private::Sealed for $t {
            fn slice_mut(s: &mut [Self]) -> SliceMut<'_> {
                SliceMut::$variant(s)
            }
            fn slice_ref(s: &[Self]) -> SliceRef<'_> {
                SliceRef::$variant(s)
            }
            #[inline(always)]
            fn load<S: Simd<N>, const N: usize>(s: S, src: &[Self; N]) -> S::F32 {
                s.$load(bytemuck::must_cast_ref(src))
            }
            #[inline(always)]
            fn store<S: Simd<N>, const N: usize>(s: S, v: S::F32, dst: &mut [Self; N]) {
                s.$store(v, bytemuck::must_cast_mut(dst))
            }
            #[inline(always)]
            fn store_stochastic<S: Simd<N>, const N: usize>(
                s: S,
                v: S::F32,
                random: S::U32,
                dst: &mut [Self; N],
            ) {
                s.$store_stochastic(v, random, bytemuck::must_cast_mut(dst))
            }
            half_element!(@pairs $t);
        }
    };
    // bf16 has pair loads and stores of its own (see `Simd::load_bf16_pair`); f16 keeps the
    // defaults.
    (@pairs f16) => {};
    (@pairs bf16) => {
        #[inline(always)]
        fn load_pair<S: Simd<N>, const N: usize>(s: S, src: &[[Self; N]; 2]) -> [S::F32; 2] {
            s.load_bf16_pair(bytemuck::must_cast_ref(src))
        }
        #[inline(always)]
        fn store_pair<S: Simd<N>, const N: usize>(s: S, v: [S::F32; 2], dst: &mut [[Self; N]; 2]) {
            s.store_bf16_pair(v, bytemuck::must_cast_mut(dst))
        }
        #[inline(always)]
        fn store_pair_stochastic<S: Simd<N>, const N: usize>(
            s: S,
            v: [S::F32; 2],
            random: [S::U32; 2],
            dst: &mut [[Self; N]; 2],
        ) {
            s.store_bf16_pair_stochastic(v, random, bytemuck::must_cast_mut(dst))
        }
    };
}
half_element!(
    f16,
    F16,
    f16_stochastic,
    load_f16,
    store_f16,
    store_f16_stochastic
);
half_element!(
    bf16,
    Bf16,
    bf16_stochastic,
    load_bf16,
    store_bf16,
    store_bf16_stochastic
);

//! The element types a step reads and writes: `f32`, `half::f16`, `half::bf16`.

use core::fmt;

use half::{bf16, f16};

use crate::optimizer::{SliceMut, SliceRef};
use crate::simd::Simd;

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

    /// The tag stored in checkpoints (0, 1, 2).
    pub(crate) const fn tag(self) -> u8 {
        self as u8
    }

    /// The dtype of a checkpoint tag.
    pub(crate) fn from_tag(tag: u8) -> Option<Self> {
        Self::ALL.get(usize::from(tag)).copied()
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An element type a Lion step can read and write: `f32`, [`f16`] or [`bf16`].
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
}

pub(crate) mod private {
    use crate::optimizer::{SliceMut, SliceRef};
    use crate::simd::Simd;

    /// Seals [`Element`](super::Element) and carries the per-type hooks of the kernels.
    pub trait Sealed: Sized {
        /// Loads `N` elements into f32 lanes.
        fn load<S: Simd<N>, const N: usize>(s: S, src: &[Self; N]) -> S::F32;
        /// Rounds f32 lanes to this type and stores them.
        fn store<S: Simd<N>, const N: usize>(s: S, v: S::F32, dst: &mut [Self; N]);
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
}

impl Element for f16 {
    const DTYPE: Dtype = Dtype::F16;
    #[inline]
    fn to_f32_exact(self) -> f32 {
        self.to_f32()
    }
    #[inline]
    fn from_f32_rounded(x: f32) -> Self {
        f16::from_f32(x)
    }
}

impl private::Sealed for f16 {
    fn slice_mut(s: &mut [Self]) -> SliceMut<'_> {
        SliceMut::F16(s)
    }
    fn slice_ref(s: &[Self]) -> SliceRef<'_> {
        SliceRef::F16(s)
    }
    #[inline(always)]
    fn load<S: Simd<N>, const N: usize>(s: S, src: &[Self; N]) -> S::F32 {
        s.load_f16(bytemuck::must_cast_ref(src))
    }
    #[inline(always)]
    fn store<S: Simd<N>, const N: usize>(s: S, v: S::F32, dst: &mut [Self; N]) {
        s.store_f16(v, bytemuck::must_cast_mut(dst))
    }
}

impl Element for bf16 {
    const DTYPE: Dtype = Dtype::Bf16;
    #[inline]
    fn to_f32_exact(self) -> f32 {
        self.to_f32()
    }
    #[inline]
    fn from_f32_rounded(x: f32) -> Self {
        bf16::from_f32(x)
    }
}

impl private::Sealed for bf16 {
    fn slice_mut(s: &mut [Self]) -> SliceMut<'_> {
        SliceMut::Bf16(s)
    }
    fn slice_ref(s: &[Self]) -> SliceRef<'_> {
        SliceRef::Bf16(s)
    }
    #[inline(always)]
    fn load<S: Simd<N>, const N: usize>(s: S, src: &[Self; N]) -> S::F32 {
        s.load_bf16(bytemuck::must_cast_ref(src))
    }
    #[inline(always)]
    fn store<S: Simd<N>, const N: usize>(s: S, v: S::F32, dst: &mut [Self; N]) {
        s.store_bf16(v, bytemuck::must_cast_mut(dst))
    }
}

//! Slices whose element type is known at run time, owned buffers, and the one place that turns
//! run-time element types into a call of generic code: [`with_g`], [`with_gm`] and [`with_pgm`]
//! match the slices' types once and call a visitor ([`VisitG`], [`VisitGM`], [`VisitPGM`]) with
//! typed slices. Every run-time-typed operation of the crate (the optimizer, `step_many`, the
//! bindings through them) goes through these three functions.

use half::{bf16, f16};

use super::q8::{Q8Mut, Q8Ref};
use super::{Dtype, Element, MomentumMut, MomentumRef};

/// A mutable slice whose element type is known at run time.
///
/// ```
/// use lion_optim::{Dtype, SliceMut, bf16};
///
/// let mut data = [bf16::ZERO; 8];
/// let s = SliceMut::from(&mut data[..]);
/// assert_eq!((s.dtype(), s.len()), (Dtype::Bf16, 8));
/// ```
#[derive(Debug)]
pub enum SliceMut<'a> {
    /// f32 elements.
    F32(&'a mut [f32]),
    /// f16 elements.
    F16(&'a mut [f16]),
    /// bf16 elements.
    Bf16(&'a mut [bf16]),
}

/// A shared slice whose element type is known at run time.
///
/// ```
/// use lion_optim::{Dtype, SliceRef};
///
/// let s = SliceRef::from(&[1.0f32, 2.0][..]);
/// assert_eq!((s.dtype(), s.len()), (Dtype::F32, 2));
/// ```
#[derive(Clone, Copy, Debug)]
pub enum SliceRef<'a> {
    /// f32 elements.
    F32(&'a [f32]),
    /// f16 elements.
    F16(&'a [f16]),
    /// bf16 elements.
    Bf16(&'a [bf16]),
}

/// What [`SliceMut`] and [`SliceRef`] have alike: the element type, the length, the split.
macro_rules! slice_common {
    ($t:ident, $empty:literal, $split:ident) => {
        impl<'a> $t<'a> {
            /// The elements `..mid` and `mid..`, `mid` clamped to the length.
            pub(crate) fn split_clamped(self, mid: usize) -> ($t<'a>, $t<'a>) {
                match self {
                    Self::F32(s) => {
                        let (a, b) = s.$split(mid.min(s.len()));
                        (a.into(), b.into())
                    }
                    Self::F16(s) => {
                        let (a, b) = s.$split(mid.min(s.len()));
                        (a.into(), b.into())
                    }
                    Self::Bf16(s) => {
                        let (a, b) = s.$split(mid.min(s.len()));
                        (a.into(), b.into())
                    }
                }
            }

            /// The element type (see the type's example).
            pub fn dtype(&self) -> Dtype {
                match self {
                    Self::F32(_) => Dtype::F32,
                    Self::F16(_) => Dtype::F16,
                    Self::Bf16(_) => Dtype::Bf16,
                }
            }
            /// The number of elements (see the type's example).
            pub fn len(&self) -> usize {
                match self {
                    Self::F32(s) => s.len(),
                    Self::F16(s) => s.len(),
                    Self::Bf16(s) => s.len(),
                }
            }
            /// Whether there are no elements.
            ///
            /// ```
            #[doc = concat!("assert!(lion_optim::", stringify!($t), "::from(", $empty, ").is_empty());")]
            /// ```
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }
        }
    };
}
slice_common!(SliceMut, "&mut [0.0f32; 0][..]", split_at_mut);
slice_common!(SliceRef, "&[0.0f32; 0][..]", split_at);

impl<'a, T: Element> From<&'a mut [T]> for SliceMut<'a> {
    fn from(s: &'a mut [T]) -> Self {
        T::slice_mut(s)
    }
}

impl<'a, T: Element> From<&'a [T]> for SliceRef<'a> {
    fn from(s: &'a [T]) -> Self {
        T::slice_ref(s)
    }
}

impl<'a> SliceMut<'a> {
    /// A shorter-lived mutable view of the same slice.
    ///
    /// ```
    /// use lion_optim::SliceMut;
    ///
    /// let mut data = [1.0f32; 3];
    /// let mut s = SliceMut::from(&mut data[..]);
    /// if let SliceMut::F32(x) = s.reborrow() { x[0] = 2.0; }
    /// assert_eq!(s.len(), 3);
    /// assert_eq!(data[0], 2.0);
    /// ```
    pub fn reborrow(&mut self) -> SliceMut<'_> {
        match self {
            Self::F32(s) => SliceMut::F32(s),
            Self::F16(s) => SliceMut::F16(s),
            Self::Bf16(s) => SliceMut::Bf16(s),
        }
    }

    /// A shared view of the same slice.
    ///
    /// ```
    /// use lion_optim::{Dtype, SliceMut};
    ///
    /// let mut data = [lion_optim::f16::ONE; 2];
    /// assert_eq!(SliceMut::from(&mut data[..]).as_ref().dtype(), Dtype::F16);
    /// ```
    pub fn as_ref(&self) -> SliceRef<'_> {
        match self {
            Self::F32(s) => SliceRef::F32(s),
            Self::F16(s) => SliceRef::F16(s),
            Self::Bf16(s) => SliceRef::Bf16(s),
        }
    }

    /// The elements `..mid` and `mid..`, or `None` if `mid > len`.
    ///
    /// ```
    /// use lion_optim::SliceMut;
    ///
    /// let mut data = [1.0f32; 5];
    /// let (a, b) = SliceMut::from(&mut data[..]).split_at(2).unwrap();
    /// assert_eq!((a.len(), b.len()), (2, 3));
    /// ```
    pub fn split_at(self, mid: usize) -> Option<(SliceMut<'a>, SliceMut<'a>)> {
        (mid <= self.len()).then(|| self.split_clamped(mid))
    }
}

impl<'a> SliceRef<'a> {
    /// The elements `..mid` and `mid..`, or `None` if `mid > len`.
    ///
    /// ```
    /// use lion_optim::SliceRef;
    ///
    /// let (a, b) = SliceRef::from(&[1.0f32; 5][..]).split_at(4).unwrap();
    /// assert_eq!((a.len(), b.len()), (4, 1));
    /// ```
    pub fn split_at(self, mid: usize) -> Option<(SliceRef<'a>, SliceRef<'a>)> {
        (mid <= self.len()).then(|| self.split_clamped(mid))
    }
}

/// A computation generic over the element type of one read-only slice.
pub(crate) trait VisitG {
    /// What it returns.
    type Output;
    /// Runs on the typed slice.
    fn visit<G: Element>(self, g: &[G]) -> Self::Output;
}

/// A computation generic over the element types of gradients and momentum, read-only.
pub(crate) trait VisitGM {
    /// What it returns.
    type Output;
    /// Runs on the typed slices.
    fn visit<G: Element, M: Element>(self, g: &[G], m: &[M]) -> Self::Output;
    /// Runs on typed gradients and 8-bit momentum.
    fn visit_q8<G: Element>(self, g: &[G], m: Q8Ref<'_>) -> Self::Output;
}

/// A computation generic over the element types of parameters, gradients and momentum.
pub(crate) trait VisitPGM {
    /// What it returns.
    type Output;
    /// Runs on the typed slices.
    fn visit<P: Element, G: Element, M: Element>(
        self,
        p: &mut [P],
        g: &[G],
        m: &mut [M],
    ) -> Self::Output;
    /// Runs on typed parameters and gradients and 8-bit momentum.
    fn visit_q8<P: Element, G: Element>(self, p: &mut [P], g: &[G], m: Q8Mut<'_>) -> Self::Output;
}

/// Calls `v` with `g` typed.
#[inline]
pub(crate) fn with_g<V: VisitG>(g: SliceRef<'_>, v: V) -> V::Output {
    match g {
        SliceRef::F32(g) => v.visit(g),
        SliceRef::F16(g) => v.visit(g),
        SliceRef::Bf16(g) => v.visit(g),
    }
}

/// Calls `v` with `g` and `m` typed (12 combinations: 3 gradient types times 4 momentum
/// formats).
#[inline]
pub(crate) fn with_gm<V: VisitGM>(g: SliceRef<'_>, m: MomentumRef<'_>, v: V) -> V::Output {
    fn typed_g<G: Element, V: VisitGM>(g: &[G], m: MomentumRef<'_>, v: V) -> V::Output {
        match m {
            MomentumRef::F32(m) => v.visit(g, m),
            MomentumRef::F16(m) => v.visit(g, m),
            MomentumRef::Bf16(m) => v.visit(g, m),
            MomentumRef::Q8(m) => v.visit_q8(g, m),
        }
    }
    match g {
        SliceRef::F32(g) => typed_g(g, m, v),
        SliceRef::F16(g) => typed_g(g, m, v),
        SliceRef::Bf16(g) => typed_g(g, m, v),
    }
}

/// Calls `v` with `p`, `g` and `m` typed (36 combinations: 27 of element types, and 9 with 8-bit
/// momentum).
#[inline]
pub(crate) fn with_pgm<V: VisitPGM>(
    p: SliceMut<'_>,
    g: SliceRef<'_>,
    m: MomentumMut<'_>,
    v: V,
) -> V::Output {
    fn typed_p<P: Element, V: VisitPGM>(
        p: &mut [P],
        g: SliceRef<'_>,
        m: MomentumMut<'_>,
        v: V,
    ) -> V::Output {
        match g {
            SliceRef::F32(g) => typed_pg(p, g, m, v),
            SliceRef::F16(g) => typed_pg(p, g, m, v),
            SliceRef::Bf16(g) => typed_pg(p, g, m, v),
        }
    }
    fn typed_pg<P: Element, G: Element, V: VisitPGM>(
        p: &mut [P],
        g: &[G],
        m: MomentumMut<'_>,
        v: V,
    ) -> V::Output {
        match m {
            MomentumMut::F32(m) => v.visit(p, g, m),
            MomentumMut::F16(m) => v.visit(p, g, m),
            MomentumMut::Bf16(m) => v.visit(p, g, m),
            MomentumMut::Q8(m) => v.visit_q8(p, g, m),
        }
    }
    match p {
        SliceMut::F32(p) => typed_p(p, g, m, v),
        SliceMut::F16(p) => typed_p(p, g, m, v),
        SliceMut::Bf16(p) => typed_p(p, g, m, v),
    }
}

//! Slices whose element type is known at run time, the tensors a step is given, owned momentum
//! buffers, and the one generic call per dtype combination that runs a kernel on them.

#[cfg(feature = "alloc")]
use alloc::{vec, vec::Vec};

use half::{bf16, f16};

use super::TensorId;
use crate::hyper::Consts;
use crate::{Dtype, Element, Path, StepOptions};

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

macro_rules! slice_common {
    ($t:ident, $empty:literal) => {
        impl $t<'_> {
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
slice_common!(SliceMut, "&mut [0.0f32; 0][..]");
slice_common!(SliceRef, "&[0.0f32; 0][..]");

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
        Some(match self {
            Self::F32(s) => s
                .split_at_mut_checked(mid)
                .map(|(a, b)| (a.into(), b.into()))?,
            Self::F16(s) => s
                .split_at_mut_checked(mid)
                .map(|(a, b)| (a.into(), b.into()))?,
            Self::Bf16(s) => s
                .split_at_mut_checked(mid)
                .map(|(a, b)| (a.into(), b.into()))?,
        })
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
        Some(match self {
            Self::F32(s) => s.split_at_checked(mid).map(|(a, b)| (a.into(), b.into()))?,
            Self::F16(s) => s.split_at_checked(mid).map(|(a, b)| (a.into(), b.into()))?,
            Self::Bf16(s) => s.split_at_checked(mid).map(|(a, b)| (a.into(), b.into()))?,
        })
    }
}

/// How a [`Tensor`] passed to [`Lion::step`](crate::Lion::step) names its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Key<'a> {
    /// By its position in the list of tensors.
    Position,
    /// By the handle [`Lion::add`](crate::Lion::add) returned.
    Id(TensorId),
    /// By the name it was added with.
    Name(&'a str),
}

/// One parameter tensor and its gradient, for [`Lion::step`](crate::Lion::step); element types
/// may differ.
///
/// A tensor may say which of the optimizer's tensors it is, by handle ([`of`](Self::of)) or by
/// name ([`named`](Self::named)); then a step may pass any subset of the optimizer's tensors
/// (those without a gradient this step are left alone), in any order. Without a key, the
/// tensors of a step are matched to the optimizer's by position.
///
/// ```
/// use lion_optim::{Tensor, bf16};
///
/// let mut w = vec![bf16::ONE; 16];
/// let g = vec![0.5f32; 16];
/// let t = Tensor::new(&mut w, &g);
/// assert_eq!(t.len(), 16);
/// ```
#[derive(Debug)]
pub struct Tensor<'a> {
    pub(crate) params: SliceMut<'a>,
    pub(crate) grads: SliceRef<'a>,
    pub(crate) key: Key<'a>,
}

impl<'a> Tensor<'a> {
    /// Pairs a parameter slice with its gradient (lengths are checked by
    /// [`Lion::step`](crate::Lion::step)); see the type's example.
    pub fn new<P: Element, G: Element>(params: &'a mut [P], grads: &'a [G]) -> Self {
        Self::from_slices(params.into(), grads.into())
    }

    /// Pairs runtime-typed slices (for frameworks whose tensors carry their dtype at run time).
    ///
    /// ```
    /// use lion_optim::{SliceMut, SliceRef, Tensor};
    ///
    /// let (mut w, g) = ([1.0f32; 4], [0.5f32; 4]);
    /// let t = Tensor::from_slices(SliceMut::F32(&mut w), SliceRef::F32(&g));
    /// assert_eq!(t.len(), 4);
    /// ```
    pub fn from_slices(params: SliceMut<'a>, grads: SliceRef<'a>) -> Self {
        Self {
            params,
            grads,
            key: Key::Position,
        }
    }

    /// This tensor is the optimizer's tensor `id` (the handle [`Lion::add`](crate::Lion::add)
    /// returned).
    ///
    /// ```
    /// use lion_optim::{Dtype, Lion, Tensor};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// let (a, b) = (opt.add_tensor(2, Dtype::F32), opt.add_tensor(3, Dtype::F32));
    /// let (mut wa, mut wb) = ([1.0f32; 2], [1.0f32; 3]);
    /// // Any order; a tensor without a gradient this step is simply not passed.
    /// opt.step(&mut [Tensor::new(&mut wb, &[1.0f32; 3]).of(b)])?;
    /// assert_eq!((wa, wb[0]), ([1.0; 2], 1.0 - 1e-4f64 as f32));
    /// # let _ = (a, &mut wa);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn of(self, id: TensorId) -> Self {
        Self {
            key: Key::Id(id),
            ..self
        }
    }

    /// This tensor is the optimizer's tensor added with this name (see
    /// [`TensorSpec::name`](crate::TensorSpec::name)).
    ///
    /// ```
    /// use lion_optim::{Dtype, Lion, Tensor, TensorSpec};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.add(TensorSpec::new(2).name("bias"))?;
    /// let mut b = [0.0f32; 2];
    /// opt.step(&mut [Tensor::new(&mut b, &[-1.0f32; 2]).named("bias")])?;
    /// assert!(b[0] > 0.0);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn named(self, name: &'a str) -> Self {
        Self {
            key: Key::Name(name),
            ..self
        }
    }

    /// The number of parameters (see the type's example).
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether the tensor has no parameters.
    ///
    /// ```
    /// let mut w: [f32; 0] = [];
    /// assert!(lion_optim::Tensor::new(&mut w, &[0.0f32; 0]).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }
}

/// An owned momentum buffer of a run-time element type.
///
/// ```
/// use lion_optim::{Buffer, Dtype};
///
/// let b = Buffer::zeros(Dtype::Bf16, 10);
/// assert_eq!((b.as_slice().dtype(), b.as_slice().len()), (Dtype::Bf16, 10));
/// ```
#[cfg(feature = "alloc")]
#[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
#[derive(Clone, Debug, PartialEq)]
pub enum Buffer {
    /// f32 momentum.
    F32(Vec<f32>),
    /// f16 momentum.
    F16(Vec<f16>),
    /// bf16 momentum.
    Bf16(Vec<bf16>),
}

#[cfg(feature = "alloc")]
impl Buffer {
    /// `len` zeros of type `dtype` (see the type's example).
    pub fn zeros(dtype: Dtype, len: usize) -> Self {
        match dtype {
            Dtype::F32 => Buffer::F32(vec![0.0; len]),
            Dtype::F16 => Buffer::F16(vec![f16::ZERO; len]),
            Dtype::Bf16 => Buffer::Bf16(vec![bf16::ZERO; len]),
        }
    }

    /// The momentum, for reading (see the type's example).
    pub fn as_slice(&self) -> SliceRef<'_> {
        match self {
            Buffer::F32(v) => SliceRef::F32(v),
            Buffer::F16(v) => SliceRef::F16(v),
            Buffer::Bf16(v) => SliceRef::Bf16(v),
        }
    }

    /// The momentum, for updating.
    ///
    /// ```
    /// use lion_optim::{Buffer, Dtype, SliceMut};
    ///
    /// let mut b = Buffer::zeros(Dtype::F32, 2);
    /// if let SliceMut::F32(m) = b.as_mut_slice() { m[1] = 0.5; }
    /// assert_eq!(b, Buffer::F32(vec![0.0, 0.5]));
    /// ```
    pub fn as_mut_slice(&mut self) -> SliceMut<'_> {
        match self {
            Buffer::F32(v) => SliceMut::F32(v),
            Buffer::F16(v) => SliceMut::F16(v),
            Buffer::Bf16(v) => SliceMut::Bf16(v),
        }
    }
}

/// Whether every gradient is finite (after unscaling), on `path`.
pub(crate) fn finite_dyn(path: Path, grads: SliceRef<'_>, options: &StepOptions) -> bool {
    match grads {
        SliceRef::F32(g) => path.all_finite(g, options),
        SliceRef::F16(g) => path.all_finite(g, options),
        SliceRef::Bf16(g) => path.all_finite(g, options),
    }
}

/// The cautious count on `path` over runtime-typed slices of equal length (validated).
pub(crate) fn count_dyn(
    path: Path,
    grads: SliceRef<'_>,
    momentum: SliceRef<'_>,
    k: &Consts,
    options: &StepOptions,
) -> u64 {
    fn with_momentum<G: Element>(
        path: Path,
        g: &[G],
        m: SliceRef<'_>,
        k: &Consts,
        o: &StepOptions,
    ) -> u64 {
        match m {
            SliceRef::F32(m) => path.count(g, m, k, o),
            SliceRef::F16(m) => path.count(g, m, k, o),
            SliceRef::Bf16(m) => path.count(g, m, k, o),
        }
    }
    match grads {
        SliceRef::F32(g) => with_momentum(path, g, momentum, k, options),
        SliceRef::F16(g) => with_momentum(path, g, momentum, k, options),
        SliceRef::Bf16(g) => with_momentum(path, g, momentum, k, options),
    }
}

/// Runs the (validated) step on `path` over runtime-typed slices of equal length.
pub(crate) fn step_dyn(
    path: Path,
    params: SliceMut<'_>,
    grads: SliceRef<'_>,
    momentum: SliceMut<'_>,
    k: &Consts,
    options: &StepOptions,
) {
    type Args<'a> = (Path, &'a Consts, &'a StepOptions);
    fn with_grads<P: Element>(p: &mut [P], g: SliceRef<'_>, m: SliceMut<'_>, args: Args<'_>) {
        match g {
            SliceRef::F32(g) => with_momentum(p, g, m, args),
            SliceRef::F16(g) => with_momentum(p, g, m, args),
            SliceRef::Bf16(g) => with_momentum(p, g, m, args),
        }
    }
    fn with_momentum<P: Element, G: Element>(
        p: &mut [P],
        g: &[G],
        m: SliceMut<'_>,
        args: Args<'_>,
    ) {
        match m {
            SliceMut::F32(m) => one(p, g, m, args),
            SliceMut::F16(m) => one(p, g, m, args),
            SliceMut::Bf16(m) => one(p, g, m, args),
        }
    }
    fn one<P: Element, G: Element, M: Element>(
        p: &mut [P],
        g: &[G],
        m: &mut [M],
        (path, k, options): Args<'_>,
    ) {
        path.run(p, g, m, k, options);
    }
    let args = (path, k, options);
    match params {
        SliceMut::F32(p) => with_grads(p, grads, momentum, args),
        SliceMut::F16(p) => with_grads(p, grads, momentum, args),
        SliceMut::Bf16(p) => with_grads(p, grads, momentum, args),
    }
}

//! Momentum storage: its format ([`MomentumDtype`]: an element type, or 8-bit blocks), views of
//! it typed at run time ([`MomentumMut`], [`MomentumRef`]) and owned buffers ([`Buffer`]).

#[cfg(feature = "alloc")]
use alloc::{vec, vec::Vec};
use core::fmt;

use half::{bf16, f16};

use super::q8::{Q8_BLOCK, Q8Mut, Q8Ref};
use super::{Dtype, Element, SliceMut, SliceRef};

/// How a momentum buffer is stored: as elements of a [`Dtype`], or as 8-bit codes in blocks of
/// 256 with one f32 scale each ([`MomentumDtype::Q8`]: bitsandbytes' format, see [`Q8Mut`]).
/// A [`Dtype`] converts into it.
///
/// ```
/// use lion_optim::{Dtype, MomentumDtype};
///
/// assert_eq!(MomentumDtype::from(Dtype::Bf16), MomentumDtype::Bf16);
/// assert_eq!(MomentumDtype::Q8.bytes(1000), 1000 + 4 * 4);
/// assert_eq!(MomentumDtype::F32.bytes(1000), 4000);
/// // bitsandbytes' policy: 8-bit state only from 4096 elements on.
/// assert_eq!(MomentumDtype::Q8.at_least(100, 4096), MomentumDtype::F32);
/// assert_eq!(MomentumDtype::Q8.to_string(), "q8");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MomentumDtype {
    /// f32 elements.
    F32,
    /// f16 elements.
    F16,
    /// bf16 elements.
    Bf16,
    /// 8-bit codes into bitsandbytes' signed dynamic map, one f32 `absmax` per block of 256.
    Q8,
}

impl From<Dtype> for MomentumDtype {
    fn from(d: Dtype) -> Self {
        match d {
            Dtype::F32 => MomentumDtype::F32,
            Dtype::F16 => MomentumDtype::F16,
            Dtype::Bf16 => MomentumDtype::Bf16,
        }
    }
}

/// A momentum format equals the element dtype it stores (8-bit momentum equals none).
///
/// ```
/// use lion_optim::{Dtype, MomentumDtype};
///
/// assert!(MomentumDtype::Bf16 == Dtype::Bf16 && Dtype::F32 == MomentumDtype::F32);
/// assert!(MomentumDtype::Q8 != Dtype::F32);
/// ```
impl PartialEq<Dtype> for MomentumDtype {
    fn eq(&self, other: &Dtype) -> bool {
        *self == MomentumDtype::from(*other)
    }
}

/// See [`MomentumDtype`]'s `PartialEq<Dtype>`.
impl PartialEq<MomentumDtype> for Dtype {
    fn eq(&self, other: &MomentumDtype) -> bool {
        MomentumDtype::from(*self) == *other
    }
}

impl MomentumDtype {
    /// Every format, in tag order.
    ///
    /// ```
    /// assert_eq!(lion_optim::MomentumDtype::ALL.len(), 4);
    /// ```
    pub const ALL: [MomentumDtype; 4] = [
        MomentumDtype::F32,
        MomentumDtype::F16,
        MomentumDtype::Bf16,
        MomentumDtype::Q8,
    ];

    /// The element type, for the formats that are one.
    ///
    /// ```
    /// use lion_optim::{Dtype, MomentumDtype};
    ///
    /// assert_eq!(MomentumDtype::F16.element(), Some(Dtype::F16));
    /// assert_eq!(MomentumDtype::Q8.element(), None);
    /// ```
    pub const fn element(self) -> Option<Dtype> {
        match self {
            MomentumDtype::F32 => Some(Dtype::F32),
            MomentumDtype::F16 => Some(Dtype::F16),
            MomentumDtype::Bf16 => Some(Dtype::Bf16),
            MomentumDtype::Q8 => None,
        }
    }

    /// The bytes `len` elements take (8-bit: a byte each and 4 per started block of 256).
    pub const fn bytes(self, len: usize) -> usize {
        match self.element() {
            Some(d) => len * d.size(),
            None => len + 4 * len.div_ceil(Q8_BLOCK),
        }
    }

    /// This format for a tensor of `len` elements, unless it is 8-bit and `len` is below
    /// `min_len`: then f32 (as bitsandbytes' `min_8bit_size`, default 4096: the scales of
    /// small tensors cost more than they save, and small tensors are often biases and norms).
    pub const fn at_least(self, len: usize, min_len: usize) -> Self {
        match self {
            MomentumDtype::Q8 if len < min_len => MomentumDtype::F32,
            other => other,
        }
    }

    /// The name used in messages and state files: `"f32"`, `"f16"`, `"bf16"`, `"q8"`.
    pub const fn name(self) -> &'static str {
        match self {
            MomentumDtype::F32 => "f32",
            MomentumDtype::F16 => "f16",
            MomentumDtype::Bf16 => "bf16",
            MomentumDtype::Q8 => "q8",
        }
    }

    /// The tag stored in checkpoints (for momentum, and of an element type for parameters): the
    /// element type's 0, 1, 2, or 3.
    pub(crate) const fn tag(self) -> u8 {
        self as u8
    }

    /// The format of a checkpoint tag.
    pub(crate) fn from_tag(tag: u8) -> Option<Self> {
        Self::ALL.get(usize::from(tag)).copied()
    }
}

impl fmt::Display for MomentumDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Momentum typed at run time, for updating: a slice of an element type, or 8-bit blocks. A
/// [`SliceMut`], a typed slice or a [`Q8Mut`] converts into it.
///
/// ```
/// use lion_optim::{MomentumDtype, MomentumMut, Q8Mut};
///
/// let mut m = [0.0f32; 4];
/// assert_eq!(MomentumMut::from(&mut m[..]).dtype(), MomentumDtype::F32);
/// let (mut codes, mut absmax) = ([127u8; 300], [0.0f32; 2]);
/// let q = MomentumMut::from(Q8Mut::new(&mut codes, &mut absmax)?);
/// assert_eq!((q.dtype(), q.len()), (MomentumDtype::Q8, 300));
/// # Ok::<(), lion_optim::Error>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum MomentumMut<'a> {
    /// f32 elements.
    F32(&'a mut [f32]),
    /// f16 elements.
    F16(&'a mut [f16]),
    /// bf16 elements.
    Bf16(&'a mut [bf16]),
    /// 8-bit blocks.
    Q8(Q8Mut<'a>),
}

/// Momentum typed at run time, for reading (see [`MomentumMut`]).
///
/// ```
/// use lion_optim::{MomentumDtype, MomentumRef};
///
/// let m = [lion_optim::bf16::ONE; 3];
/// assert_eq!(MomentumRef::from(&m[..]).dtype(), MomentumDtype::Bf16);
/// assert_eq!(MomentumRef::from(&m[..]).to_f32(1), Some(1.0));
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum MomentumRef<'a> {
    /// f32 elements.
    F32(&'a [f32]),
    /// f16 elements.
    F16(&'a [f16]),
    /// bf16 elements.
    Bf16(&'a [bf16]),
    /// 8-bit blocks.
    Q8(Q8Ref<'a>),
}

impl<'a> From<SliceMut<'a>> for MomentumMut<'a> {
    fn from(s: SliceMut<'a>) -> Self {
        match s {
            SliceMut::F32(s) => MomentumMut::F32(s),
            SliceMut::F16(s) => MomentumMut::F16(s),
            SliceMut::Bf16(s) => MomentumMut::Bf16(s),
        }
    }
}

impl<'a, T: Element> From<&'a mut [T]> for MomentumMut<'a> {
    fn from(s: &'a mut [T]) -> Self {
        SliceMut::from(s).into()
    }
}

impl<'a> From<Q8Mut<'a>> for MomentumMut<'a> {
    fn from(q: Q8Mut<'a>) -> Self {
        MomentumMut::Q8(q)
    }
}

impl<'a> From<SliceRef<'a>> for MomentumRef<'a> {
    fn from(s: SliceRef<'a>) -> Self {
        match s {
            SliceRef::F32(s) => MomentumRef::F32(s),
            SliceRef::F16(s) => MomentumRef::F16(s),
            SliceRef::Bf16(s) => MomentumRef::Bf16(s),
        }
    }
}

impl<'a, T: Element> From<&'a [T]> for MomentumRef<'a> {
    fn from(s: &'a [T]) -> Self {
        SliceRef::from(s).into()
    }
}

impl<'a> From<Q8Ref<'a>> for MomentumRef<'a> {
    fn from(q: Q8Ref<'a>) -> Self {
        MomentumRef::Q8(q)
    }
}

impl<'a> MomentumMut<'a> {
    /// The format.
    pub fn dtype(&self) -> MomentumDtype {
        self.as_ref().dtype()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.as_ref().len()
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A shorter-lived view of the same momentum.
    pub fn reborrow(&mut self) -> MomentumMut<'_> {
        match self {
            Self::F32(s) => MomentumMut::F32(s),
            Self::F16(s) => MomentumMut::F16(s),
            Self::Bf16(s) => MomentumMut::Bf16(s),
            Self::Q8(q) => MomentumMut::Q8(q.reborrow()),
        }
    }

    /// A read-only view of the same momentum.
    pub fn as_ref(&self) -> MomentumRef<'_> {
        match self {
            Self::F32(s) => MomentumRef::F32(s),
            Self::F16(s) => MomentumRef::F16(s),
            Self::Bf16(s) => MomentumRef::Bf16(s),
            Self::Q8(q) => MomentumRef::Q8(q.as_ref()),
        }
    }

    /// The elements `..mid` and `mid..`, `mid` clamped to the length (and, for 8-bit
    /// momentum, down to a multiple of 256).
    pub(crate) fn split_clamped(self, mid: usize) -> (MomentumMut<'a>, MomentumMut<'a>) {
        let split = |s: SliceMut<'a>| {
            let (a, b) = s.split_clamped(mid);
            (a.into(), b.into())
        };
        match self {
            Self::F32(s) => split(s.into()),
            Self::F16(s) => split(s.into()),
            Self::Bf16(s) => split(s.into()),
            Self::Q8(q) => {
                let (a, b) = q.split_blocks(mid);
                (a.into(), b.into())
            }
        }
    }
}

impl<'a> MomentumRef<'a> {
    /// The format.
    pub fn dtype(&self) -> MomentumDtype {
        match self {
            Self::F32(_) => MomentumDtype::F32,
            Self::F16(_) => MomentumDtype::F16,
            Self::Bf16(_) => MomentumDtype::Bf16,
            Self::Q8(_) => MomentumDtype::Q8,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Self::F32(s) => s.len(),
            Self::F16(s) => s.len(),
            Self::Bf16(s) => s.len(),
            Self::Q8(q) => q.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as f32 (exactly: widened, or decoded as `Q8_MAP[code] * absmax`).
    pub fn to_f32(&self, i: usize) -> Option<f32> {
        match self {
            Self::F32(s) => s.get(i).copied(),
            Self::F16(s) => s.get(i).map(|x| x.to_f32_exact()),
            Self::Bf16(s) => s.get(i).map(|x| x.to_f32_exact()),
            Self::Q8(q) => q.get(i),
        }
    }

    /// The f32, f16 or bf16 elements as a run-time-typed slice (`None` for 8-bit momentum).
    ///
    /// ```
    /// use lion_optim::{Dtype, MomentumRef};
    ///
    /// let m = [1.0f32, 2.0];
    /// assert_eq!(MomentumRef::from(&m[..]).as_slice_ref().map(|s| s.dtype()), Some(Dtype::F32));
    /// ```
    pub fn as_slice_ref(&self) -> Option<SliceRef<'a>> {
        match *self {
            Self::F32(s) => Some(SliceRef::F32(s)),
            Self::F16(s) => Some(SliceRef::F16(s)),
            Self::Bf16(s) => Some(SliceRef::Bf16(s)),
            Self::Q8(_) => None,
        }
    }

    /// The elements typed, if this is a slice of `T`.
    ///
    /// ```
    /// use lion_optim::MomentumRef;
    ///
    /// let m = [1.0f32, 2.0];
    /// assert_eq!(MomentumRef::from(&m[..]).elements::<f32>(), Some(&m[..]));
    /// assert_eq!(MomentumRef::from(&m[..]).elements::<lion_optim::bf16>(), None);
    /// ```
    pub fn elements<T: Element>(&self) -> Option<&[T]> {
        let bytes: &[u8] = match *self {
            Self::F32(s) => bytemuck::cast_slice(s),
            Self::F16(s) => bytemuck::cast_slice(s),
            Self::Bf16(s) => bytemuck::cast_slice(s),
            Self::Q8(_) => return None,
        };
        (self.dtype() == MomentumDtype::from(T::DTYPE)).then(|| bytemuck::cast_slice(bytes))
    }
}

/// An owned momentum buffer of a run-time format.
///
/// ```
/// use lion_optim::{Buffer, Dtype, MomentumDtype};
///
/// let b = Buffer::zeros(Dtype::Bf16, 10);
/// assert_eq!((b.as_slice().dtype(), b.as_slice().len()), (MomentumDtype::Bf16, 10));
/// let q = Buffer::zeros(MomentumDtype::Q8, 1000);
/// assert_eq!(q.as_slice().to_f32(999), Some(0.0));
/// ```
#[cfg(feature = "alloc")]
#[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Buffer {
    /// f32 momentum.
    F32(Vec<f32>),
    /// f16 momentum.
    F16(Vec<f16>),
    /// bf16 momentum.
    Bf16(Vec<bf16>),
    /// 8-bit momentum: one code per element, one scale per block of 256.
    Q8 {
        /// The codes (127 is zero).
        codes: Vec<u8>,
        /// The blocks' scales.
        absmax: Vec<f32>,
    },
}

#[cfg(feature = "alloc")]
impl Buffer {
    /// `len` zeros of format `dtype` (see the type's example; 8-bit zeros are code 127 with
    /// scale 0).
    pub fn zeros(dtype: impl Into<MomentumDtype>, len: usize) -> Self {
        match dtype.into() {
            MomentumDtype::F32 => Buffer::F32(vec![0.0; len]),
            MomentumDtype::F16 => Buffer::F16(vec![f16::ZERO; len]),
            MomentumDtype::Bf16 => Buffer::Bf16(vec![bf16::ZERO; len]),
            MomentumDtype::Q8 => Buffer::Q8 {
                codes: vec![127; len],
                absmax: vec![0.0; len.div_ceil(Q8_BLOCK)],
            },
        }
    }

    /// The momentum, for reading (see the type's example).
    pub fn as_slice(&self) -> MomentumRef<'_> {
        match self {
            Buffer::F32(v) => MomentumRef::F32(v),
            Buffer::F16(v) => MomentumRef::F16(v),
            Buffer::Bf16(v) => MomentumRef::Bf16(v),
            Buffer::Q8 { codes, absmax } => MomentumRef::Q8(Q8Ref { codes, absmax }),
        }
    }

    /// The momentum, for updating.
    ///
    /// ```
    /// use lion_optim::{Buffer, Dtype, MomentumMut};
    ///
    /// let mut b = Buffer::zeros(Dtype::F32, 2);
    /// if let MomentumMut::F32(m) = b.as_mut_slice() { m[1] = 0.5; }
    /// assert_eq!(b, Buffer::F32(vec![0.0, 0.5]));
    /// ```
    pub fn as_mut_slice(&mut self) -> MomentumMut<'_> {
        match self {
            Buffer::F32(v) => MomentumMut::F32(v),
            Buffer::F16(v) => MomentumMut::F16(v),
            Buffer::Bf16(v) => MomentumMut::Bf16(v),
            Buffer::Q8 { codes, absmax } => MomentumMut::Q8(Q8Mut { codes, absmax }),
        }
    }

    /// The elements of an f32, f16 or bf16 buffer (`None` for 8-bit momentum), e.g. to use the
    /// buffer as parameters or gradients.
    ///
    /// ```
    /// use lion_optim::{Buffer, Dtype, MomentumDtype};
    ///
    /// let b = Buffer::zeros(Dtype::Bf16, 3);
    /// assert_eq!(b.elements().map(|s| (s.dtype(), s.len())), Some((Dtype::Bf16, 3)));
    /// assert!(Buffer::zeros(MomentumDtype::Q8, 3).elements().is_none());
    /// ```
    pub fn elements(&self) -> Option<SliceRef<'_>> {
        match self {
            Buffer::F32(v) => Some(SliceRef::F32(v)),
            Buffer::F16(v) => Some(SliceRef::F16(v)),
            Buffer::Bf16(v) => Some(SliceRef::Bf16(v)),
            Buffer::Q8 { .. } => None,
        }
    }

    /// The elements of an f32, f16 or bf16 buffer, for updating (`None` for 8-bit momentum).
    ///
    /// ```
    /// use lion_optim::{Buffer, SliceMut};
    ///
    /// let mut b = Buffer::F32(vec![0.0; 2]);
    /// if let Some(SliceMut::F32(p)) = b.elements_mut() { p[0] = 1.0; }
    /// assert_eq!(b, Buffer::F32(vec![1.0, 0.0]));
    /// ```
    pub fn elements_mut(&mut self) -> Option<SliceMut<'_>> {
        match self {
            Buffer::F32(v) => Some(SliceMut::F32(v)),
            Buffer::F16(v) => Some(SliceMut::F16(v)),
            Buffer::Bf16(v) => Some(SliceMut::Bf16(v)),
            Buffer::Q8 { .. } => None,
        }
    }
}

/// An owned copy of a momentum view (e.g. of [`Lion::momentum`](crate::Lion::momentum)).
///
/// ```
/// use lion_optim::{Buffer, MomentumRef};
///
/// let m = [0.5f32, -1.0];
/// assert_eq!(Buffer::from(MomentumRef::from(&m[..])), Buffer::F32(m.to_vec()));
/// ```
#[cfg(feature = "alloc")]
impl From<MomentumRef<'_>> for Buffer {
    fn from(m: MomentumRef<'_>) -> Self {
        match m {
            MomentumRef::F32(s) => Buffer::F32(s.to_vec()),
            MomentumRef::F16(s) => Buffer::F16(s.to_vec()),
            MomentumRef::Bf16(s) => Buffer::Bf16(s.to_vec()),
            MomentumRef::Q8(q) => Buffer::Q8 {
                codes: q.codes.to_vec(),
                absmax: q.absmax.to_vec(),
            },
        }
    }
}

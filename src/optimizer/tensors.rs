//! The optimizer's tensors: what a tensor is added with ([`TensorSpec`]), its handle
//! ([`TensorId`]), what the optimizer knows about it ([`TensorInfo`]), and what a step is given
//! ([`Tensor`]).

#[cfg(feature = "alloc")]
use alloc::{string::String, vec::Vec};

#[cfg(feature = "alloc")]
use super::Buffer;
use super::{GroupId, Lion, MomentumStore};
use crate::{Dtype, Element, Error, MomentumDtype, MomentumRef, SliceMut, SliceRef};

/// A handle to a tensor of a [`Lion`] ([`Lion::add`]), for keyed steps ([`Tensor::of`]); an
/// index converts into one.
///
/// ```
/// use lion_optim::{Lion, TensorId, TensorSpec};
///
/// let mut opt = Lion::new(Default::default())?;
/// let id = opt.add(TensorSpec::new(4))?;
/// assert_eq!(id, TensorId::new(0));
/// # Ok::<(), lion_optim::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub(super) usize);

impl From<usize> for TensorId {
    fn from(index: usize) -> Self {
        Self(index)
    }
}

impl TensorId {
    /// The tensor with this index (tensors are numbered in the order they were added, or by
    /// their position in the store of [`Lion::with_buffers`]).
    pub const fn new(index: usize) -> Self {
        Self(index)
    }

    /// The tensor's index (see [`TensorId::new`]).
    ///
    /// ```
    /// assert_eq!(lion_optim::TensorId::new(3).index(), 3);
    /// ```
    pub const fn index(self) -> usize {
        self.0
    }
}

/// What [`Lion::add`] needs to know about a tensor: its length, and optionally its momentum
/// dtype (default f32), parameter dtype (checked at every step), name, group and random stream.
///
/// ```
/// use lion_optim::{Dtype, TensorSpec};
///
/// let spec = TensorSpec::new(50257 * 768).name("wte").params(Dtype::Bf16).momentum(Dtype::Bf16);
/// assert_eq!(spec.len(), 50257 * 768);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorSpec<'a> {
    len: usize,
    momentum: MomentumDtype,
    params: Option<Dtype>,
    name: Option<&'a str>,
    group: GroupId,
    stream: Option<u64>,
}

impl<'a> TensorSpec<'a> {
    /// A tensor of `len` parameters: f32 momentum, any parameter dtype, no name, group 0.
    pub fn new(len: usize) -> Self {
        Self {
            len,
            momentum: MomentumDtype::F32,
            params: None,
            name: None,
            group: GroupId::DEFAULT,
            stream: None,
        }
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tensor has no parameters.
    ///
    /// ```
    /// assert!(lion_optim::TensorSpec::new(0).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The momentum's format (default f32): an element type ([`Dtype`]), or 8-bit blocks
    /// ([`MomentumDtype::Q8`]).
    pub fn momentum(self, dtype: impl Into<MomentumDtype>) -> Self {
        Self {
            momentum: dtype.into(),
            ..self
        }
    }

    /// The parameters' element type: a step that passes another is an error (default: any).
    pub fn params(self, dtype: Dtype) -> Self {
        Self {
            params: Some(dtype),
            ..self
        }
    }

    /// A name (a framework's parameter name): unique within the optimizer, used by keyed steps
    /// ([`Tensor::named`]), in error descriptions ([`Lion::describe`]) and in state files.
    pub fn name(self, name: &'a str) -> Self {
        Self {
            name: Some(name),
            ..self
        }
    }

    /// The tensor's group (default [`GroupId::DEFAULT`]).
    pub fn group(self, group: GroupId) -> Self {
        Self { group, ..self }
    }

    /// The tensor's stochastic-rounding stream (default: its index), mixed into its group's
    /// seed (see [`Lion::step`]). Two optimizers that give a tensor the same stream round it
    /// the same way.
    pub fn stream(self, stream: u64) -> Self {
        Self {
            stream: Some(stream),
            ..self
        }
    }
}

/// What a [`Lion`] knows about one of its tensors ([`Lion::tensor`]).
///
/// ```
/// use lion_optim::{Dtype, Group, Lion, TensorSpec};
///
/// let mut opt = Lion::new(Default::default())?;
/// let g = opt.add_group(Group::default())?;
/// let id = opt.add(TensorSpec::new(3).name("ln.bias").group(g).momentum(Dtype::Bf16))?;
/// let info = opt.tensor(id)?;
/// assert_eq!((info.len, info.name, info.group), (3, Some("ln.bias"), g));
/// assert_eq!(info.momentum, Dtype::Bf16); // a MomentumDtype equals its Dtype
/// assert_eq!((info.params, info.stream), (None, 0));
/// # Ok::<(), lion_optim::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TensorInfo<'a> {
    /// The number of parameters.
    pub len: usize,
    /// The momentum's format.
    pub momentum: MomentumDtype,
    /// The parameters' element type, if it was declared ([`TensorSpec::params`]).
    pub params: Option<Dtype>,
    /// Its name, if it has one.
    pub name: Option<&'a str>,
    /// Its group.
    pub group: GroupId,
    /// Its stochastic-rounding stream.
    pub stream: u64,
}

/// What the optimizer knows about a tensor beyond its momentum (a tensor of a caller's store,
/// [`Lion::with_buffers`], has the defaults: no name, group 0, any parameter dtype, its index
/// as its stream).
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Meta {
    pub(super) name: Option<String>,
    pub(super) group: usize,
    pub(super) params: Option<Dtype>,
    pub(super) stream: u64,
}

/// [`Meta`] by value, without the name.
#[derive(Clone, Copy)]
pub(super) struct MetaRef {
    pub(super) group: usize,
    pub(super) params: Option<Dtype>,
    pub(super) stream: u64,
}

#[cfg(feature = "alloc")]
impl Lion<Vec<Buffer>> {
    /// Adds a tensor with zero momentum as `spec` describes; returns its handle (its index: the
    /// position its [`Tensor`] has in an unkeyed [`step`](Self::step)). An unknown group or a
    /// name already taken is an error, and nothing changes.
    ///
    /// ```
    /// use lion_optim::{Dtype, Error, GroupId, Lion, TensorSpec};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// let wte = opt.add(TensorSpec::new(1024).name("wte").momentum(Dtype::Bf16))?;
    /// assert_eq!(opt.tensor_id("wte"), Some(wte));
    /// assert!(matches!(opt.add(TensorSpec::new(8).name("wte")), Err(Error::DuplicateName { .. })));
    /// assert!(matches!(opt.add(TensorSpec::new(8).group(GroupId::new(4))), Err(Error::NoSuchGroup { .. })));
    /// assert_eq!(opt.tensor_count(), 1);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn add(&mut self, spec: TensorSpec<'_>) -> Result<TensorId, Error> {
        self.group_state(spec.group)?;
        let slot = match spec.name {
            Some(name) => match self.find_name(name) {
                Ok(at) => {
                    return Err(Error::DuplicateName {
                        index: self.by_name[at],
                    });
                }
                Err(slot) => Some(slot),
            },
            None => None,
        };
        let id = TensorId(self.buffers.len());
        self.buffers.push(Buffer::zeros(spec.momentum, spec.len));
        self.meta.push(Meta {
            name: spec.name.map(String::from),
            group: spec.group.0,
            params: spec.params,
            stream: spec.stream.unwrap_or(id.0 as u64),
        });
        if let Some(slot) = slot {
            self.by_name.insert(slot, id.0);
        }
        Ok(id)
    }
}

impl<B: MomentumStore> Lion<B> {
    /// The handle of the tensor added with this name.
    ///
    /// ```
    /// use lion_optim::{Lion, TensorSpec};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// let id = opt.add(TensorSpec::new(3).name("ln.bias"))?;
    /// assert_eq!((opt.tensor_id("ln.bias"), opt.tensor_id("nope")), (Some(id), None));
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn tensor_id(&self, name: &str) -> Option<TensorId> {
        #[cfg(feature = "alloc")]
        return self
            .find_name(name)
            .ok()
            .map(|at| TensorId(self.by_name[at]));
        #[cfg(not(feature = "alloc"))]
        return {
            let _ = name;
            None
        };
    }

    /// Where `name` is (`Ok`) or would be inserted (`Err`) in `by_name`.
    #[cfg(feature = "alloc")]
    fn find_name(&self, name: &str) -> Result<usize, usize> {
        self.by_name
            .binary_search_by(|&i| self.meta[i].name.as_deref().unwrap_or("").cmp(name))
    }

    /// How many tensors the optimizer holds momentum for.
    ///
    /// ```
    /// let mut opt = lion_optim::Lion::new(Default::default())?;
    /// opt.add(lion_optim::TensorSpec::new(8))?;
    /// assert_eq!(opt.tensor_count(), 1);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn tensor_count(&self) -> usize {
        self.buffers.count()
    }

    /// The momentum of tensor `id` (a handle, or an index).
    ///
    /// ```
    /// use lion_optim::{Dtype, Lion, TensorId, TensorSpec};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// let id = opt.add(TensorSpec::new(3).momentum(Dtype::F16))?;
    /// assert_eq!(opt.momentum(id)?.dtype(), Dtype::F16);
    /// assert!(opt.momentum(TensorId::new(1)).is_err());
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn momentum(&self, id: impl Into<TensorId>) -> Result<MomentumRef<'_>, Error> {
        let id = id.into();
        let count = self.tensor_count();
        self.buffers
            .momentum(id.0)
            .ok_or(Error::NoSuchTensor { index: id.0, count })
    }

    /// What the optimizer knows about tensor `id` (see [`TensorInfo`]).
    pub fn tensor(&self, id: impl Into<TensorId>) -> Result<TensorInfo<'_>, Error> {
        let id = id.into();
        let momentum = self.momentum(id)?;
        let meta = self.meta_of(id.0);
        Ok(TensorInfo {
            len: momentum.len(),
            momentum: momentum.dtype(),
            params: meta.params,
            name: self.name_of(id.0),
            group: GroupId(meta.group),
            stream: meta.stream,
        })
    }

    /// The name of tensor `index`, if it has one.
    pub(super) fn name_of(&self, index: usize) -> Option<&str> {
        #[cfg(feature = "alloc")]
        return self.meta.get(index).and_then(|m| m.name.as_deref());
        #[cfg(not(feature = "alloc"))]
        return {
            let _ = index;
            None
        };
    }

    /// What the optimizer knows about tensor `index` (defaults for a caller's store).
    pub(super) fn meta_of(&self, index: usize) -> MetaRef {
        #[cfg(feature = "alloc")]
        if let Some(m) = self.meta.get(index) {
            return MetaRef {
                group: m.group,
                params: m.params,
                stream: m.stream,
            };
        }
        MetaRef {
            group: 0,
            params: None,
            stream: index as u64,
        }
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
    /// use lion_optim::{Lion, Tensor, TensorSpec};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// let (a, b) = (opt.add(TensorSpec::new(2))?, opt.add(TensorSpec::new(3))?);
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
    /// use lion_optim::{Lion, Tensor, TensorSpec};
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

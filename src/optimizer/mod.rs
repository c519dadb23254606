//! The stateful optimizer for whole models: parameter groups, one momentum buffer per tensor, one
//! step count, and one step over all tensors (in parallel with `rayon`).
//!
//! * `mod.rs` — [`Lion`]: groups, tensors, the step.
//! * `slices` — runtime-typed slices, [`Tensor`], owned [`Buffer`]s, the dtype dispatch.
//! * `store` — [`MomentumStore`]: owned or caller-provided momentum.
//! * `many` — [`step_many`] and the work partition over rayon's threads.
//! * `checkpoint` — the compact little-endian checkpoint (no_std).
//! * `safetensors` — the safetensors state file (feature `safetensors`).

#[cfg(feature = "alloc")]
use alloc::{string::String, vec, vec::Vec};
use core::fmt;

mod checkpoint;
mod many;
#[cfg(feature = "safetensors")]
mod safetensors;
mod slices;
mod store;

pub use many::{Update, step_many, step_many_guarded};
#[cfg(feature = "alloc")]
pub use slices::Buffer;
pub use slices::{SliceMut, SliceRef, Tensor};
pub use store::MomentumStore;

use crate::hyper::Consts;
use crate::{Cautious, Dtype, Error, Hyperparams, Outcome, Path, StepOptions};
use many::{Job, tensor_options};
use slices::{Key, finite_dyn};

/// The settings of a parameter group: its hyperparameters and step options.
///
/// In a [`Lion`], every tensor belongs to one group (typically: weight decay 0 for biases and
/// norm weights, another learning rate for embeddings, stochastic rounding for bf16 tensors).
/// [`step`](StepOptions::step) and [`offset`](StepOptions::offset) of the options are set by
/// the optimizer, and stochastic rounding draws every tensor's bits from its own stream.
///
/// ```
/// use lion_optim::{Cautious, Group, Hyperparams, StepOptions};
///
/// let no_decay = Group::new(Hyperparams { lr: 3e-4, ..Hyperparams::default() });
/// let cautious = no_decay.with_options(StepOptions { cautious: Cautious::Whole, ..StepOptions::default() });
/// assert!(cautious.validate().is_ok());
/// assert_eq!(Group::default().hp, Hyperparams::default());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Group {
    /// The group's hyperparameters.
    pub hp: Hyperparams,
    /// The group's options.
    pub options: StepOptions,
}

impl Group {
    /// A group with these hyperparameters and the default options (see the type's example).
    pub fn new(hp: Hyperparams) -> Self {
        Self {
            hp,
            options: StepOptions::default(),
        }
    }

    /// The group with these options (see the type's example).
    pub fn with_options(self, options: StepOptions) -> Self {
        Self { options, ..self }
    }

    /// Checks the hyperparameters and options (see the type's example).
    pub fn validate(&self) -> Result<(), Error> {
        self.hp.constants_with(&self.options, 0).map(|_| ())
    }
}

/// A handle to a parameter group of a [`Lion`] ([`Lion::add_group`]); group 0 is the one
/// [`Lion::new`] creates.
///
/// ```
/// assert_eq!(lion_optim::GroupId::DEFAULT.index(), 0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct GroupId(usize);

impl GroupId {
    /// Group 0, which every optimizer has.
    pub const DEFAULT: GroupId = GroupId(0);

    /// The group with this index (groups are numbered in the order they were added).
    ///
    /// ```
    /// assert_eq!(lion_optim::GroupId::new(2).index(), 2);
    /// ```
    pub const fn new(index: usize) -> Self {
        Self(index)
    }

    /// The group's index (see [`GroupId::new`]).
    pub const fn index(self) -> usize {
        self.0
    }
}

/// A handle to a tensor of a [`Lion`] ([`Lion::add`]), for keyed steps ([`Tensor::of`]); an
/// index converts into one.
///
/// ```
/// use lion_optim::{Dtype, Lion, TensorId};
///
/// let mut opt = Lion::new(Default::default())?;
/// let id = opt.add_tensor(4, Dtype::F32);
/// assert_eq!(id, TensorId::new(0));
/// # Ok::<(), lion_optim::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(usize);

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
    momentum: Dtype,
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
            momentum: Dtype::F32,
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

    /// The momentum's element type (default f32).
    pub fn momentum(self, dtype: Dtype) -> Self {
        Self {
            momentum: dtype,
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
    /// seed. Two optimizers that give a tensor the same stream round it the same way.
    pub fn stream(self, stream: u64) -> Self {
        Self {
            stream: Some(stream),
            ..self
        }
    }
}

/// A group's settings with the constants a step computes from them (with the optimizer's
/// learning-rate scale applied), validated when they were set.
#[derive(Clone, Copy, Debug, PartialEq)]
struct GroupState {
    group: Group,
    k: Consts,
}

impl GroupState {
    fn new(group: Group, lr_scale: f64) -> Result<Self, Error> {
        if let Cautious::Shard { agreeing, .. } = group.options.cautious {
            return Err(Error::InvalidHyperparameter {
                name: "cautious",
                value: agreeing as f64,
                rule: "must be Off or Whole in a Lion group (Shard is for step_with/step_many)",
            });
        }
        let hp = Hyperparams {
            lr: group.hp.lr * lr_scale,
            ..group.hp
        };
        // A group's options are validated as they will be used: step, offset 0.
        let options = StepOptions {
            step: 0,
            offset: 0,
            ..group.options
        };
        let k = hp.constants_with(&options, 0)?;
        Ok(Self { group, k })
    }
}

#[cfg(feature = "alloc")]
type Groups = Vec<GroupState>;
#[cfg(not(feature = "alloc"))]
type Groups = [GroupState; 1];

/// What the optimizer knows about a tensor beyond its momentum.
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, PartialEq)]
struct Meta {
    name: Option<String>,
    group: usize,
    params: Option<Dtype>,
    stream: u64,
}

/// The Lion optimizer across steps, for a whole model: parameter groups, one momentum buffer per
/// parameter tensor (each with its own element type), one step count.
///
/// `B` is the momentum storage: `Vec<Buffer>` when the optimizer owns it (feature `alloc`,
/// [`Lion::new`]), or any other [`MomentumStore`] — such as an array of [`SliceMut`] over
/// `static` buffers on a microcontroller ([`Lion::with_buffers`]).
///
/// A step is all or nothing: [`Lion::step`] checks every tensor against its state and every
/// setting first; on any error it returns it and changes nothing. With the `rayon` feature, it
/// spreads the whole model over the thread pool (see [`step_many`]), bit-identically.
///
/// ```
/// use lion_optim::{Dtype, Group, Hyperparams, Lion, Tensor, TensorSpec, bf16};
///
/// let mut w = vec![0.5f32; 300];           // f32 weights, f32 momentum
/// let mut b = vec![bf16::ONE; 20];         // a bf16 bias, bf16 momentum, no weight decay
/// let mut opt = Lion::new(Hyperparams { lr: 1e-2, weight_decay: 0.1, ..Hyperparams::default() })?;
/// let no_decay = opt.add_group(Group::new(Hyperparams { lr: 1e-2, ..Hyperparams::default() }))?;
/// let w_id = opt.add(TensorSpec::new(w.len()).name("fc.weight"))?;
/// let b_id = opt.add(TensorSpec::new(b.len()).name("fc.bias").group(no_decay).momentum(Dtype::Bf16))?;
///
/// for epoch in 0..3 {
///     let (gw, gb) = (vec![0.1f32; 300], vec![bf16::from_f32(-0.2); 20]);
///     opt.set_lr_scale(1.0 / (1 + epoch) as f64)?; // a schedule, for every group
///     opt.step(&mut [Tensor::new(&mut w, &gw).of(w_id), Tensor::new(&mut b, &gb).of(b_id)])?;
/// }
/// assert_eq!(opt.steps(), 3);
/// assert!(w[0] < 0.5 && b[0] > bf16::ONE);
/// # Ok::<(), lion_optim::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Lion<B> {
    groups: Groups,
    lr_scale: f64,
    skip_non_finite: bool,
    steps: u64,
    skipped: u64,
    buffers: B,
    /// Per tensor (empty for a store given to `with_buffers`: then defaults).
    #[cfg(feature = "alloc")]
    meta: Vec<Meta>,
    /// Indices of the named tensors, sorted by name.
    #[cfg(feature = "alloc")]
    by_name: Vec<usize>,
    /// A step's working space (not state: never saved, compared or cloned meaningfully).
    #[cfg(feature = "alloc")]
    scratch: Scratch,
}

/// A step's working space: which tensor each passed one is, which were seen (with `alloc`;
/// without, the step looks them up again).
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, Default)]
struct Scratch {
    resolved: Vec<usize>,
    seen: Vec<u64>,
}

#[cfg(not(feature = "alloc"))]
struct Scratch;

#[cfg(feature = "alloc")]
impl Scratch {
    fn start(&mut self, count: usize, passed: usize) {
        self.resolved.clear();
        self.resolved.reserve(passed);
        self.seen.clear();
        self.seen.resize(count.div_ceil(64), 0);
    }
    /// Marks `index` seen; whether it was already.
    fn seen(&mut self, index: usize, _slow: impl FnOnce() -> bool) -> bool {
        let (word, bit) = (index / 64, 1u64 << (index % 64));
        let was = self.seen[word] & bit != 0;
        self.seen[word] |= bit;
        was
    }
    fn resolved(&mut self, index: usize) {
        self.resolved.push(index);
    }
    fn index(&self, position: usize) -> Option<usize> {
        self.resolved.get(position).copied()
    }
}

#[cfg(not(feature = "alloc"))]
impl Scratch {
    fn start(&mut self, _count: usize, _passed: usize) {}
    /// Whether `index` was passed before (`slow` searches the earlier tensors).
    fn seen(&mut self, _index: usize, slow: impl FnOnce() -> bool) -> bool {
        slow()
    }
    fn resolved(&mut self, _index: usize) {}
    fn index(&self, _position: usize) -> Option<usize> {
        None
    }
}

#[cfg(feature = "alloc")]
impl Lion<Vec<Buffer>> {
    /// An optimizer that owns its momentum buffers, with one group (group 0) of these
    /// hyperparameters; add tensors with [`add`](Self::add) or [`add_tensor`](Self::add_tensor).
    ///
    /// ```
    /// let opt = lion_optim::Lion::new(Default::default())?;
    /// assert_eq!((opt.tensor_count(), opt.group_count()), (0, 1));
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn new(hp: Hyperparams) -> Result<Self, Error> {
        Self::with_buffers(hp, Vec::new())
    }

    /// Adds a tensor of `len` parameters (any dtype) with zero momentum of type `momentum`, in
    /// group 0, without a name; returns its handle (its index: the position its [`Tensor`]
    /// has in an unkeyed [`step`](Self::step)).
    ///
    /// ```
    /// use lion_optim::{Dtype, Lion};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// assert_eq!(opt.add_tensor(128, Dtype::Bf16).index(), 0);
    /// assert_eq!(opt.add_tensor(16, Dtype::F32).index(), 1);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn add_tensor(&mut self, len: usize, momentum: Dtype) -> TensorId {
        let id = TensorId(self.buffers.len());
        self.buffers.push(Buffer::zeros(momentum, len));
        self.meta.push(Meta {
            name: None,
            group: 0,
            params: None,
            stream: id.0 as u64,
        });
        id
    }

    /// Adds a tensor with zero momentum as `spec` describes; returns its handle. An unknown
    /// group or a name already taken is an error, and nothing changes.
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

    /// The checkpoint of [`save_state`](Self::save_state) as a new vector.
    ///
    /// ```
    /// use lion_optim::{Dtype, Lion};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.add_tensor(4, Dtype::F32);
    /// let bytes = opt.state_to_vec();
    /// assert_eq!(bytes.len(), opt.state_len());
    /// opt.load_state(&bytes)?;
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn state_to_vec(&self) -> Vec<u8> {
        let mut out = vec![0; self.state_len()];
        let written = self.save_state(&mut out);
        debug_assert_eq!(written, Ok(out.len()));
        out
    }
}

#[cfg(feature = "alloc")]
impl<B: MomentumStore> Lion<B> {
    /// Adds a parameter group; returns its handle. Invalid settings are an error, and nothing
    /// changes.
    ///
    /// ```
    /// use lion_optim::{Group, Hyperparams, Lion};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// let g = opt.add_group(Group::new(Hyperparams { weight_decay: 0.0, ..Hyperparams::default() }))?;
    /// assert_eq!((g.index(), opt.group_count()), (1, 2));
    /// assert!(opt.add_group(Group::new(Hyperparams { lr: -1.0, ..Hyperparams::default() })).is_err());
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
    pub fn add_group(&mut self, group: Group) -> Result<GroupId, Error> {
        let state = GroupState::new(group, self.lr_scale)?;
        self.groups.push(state);
        Ok(GroupId(self.groups.len() - 1))
    }

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
    #[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
    pub fn tensor_id(&self, name: &str) -> Option<TensorId> {
        self.find_name(name)
            .ok()
            .map(|at| TensorId(self.by_name[at]))
    }

    /// Where `name` is (`Ok`) or would be inserted (`Err`) in `by_name`.
    fn find_name(&self, name: &str) -> Result<usize, usize> {
        self.by_name
            .binary_search_by(|&i| self.meta[i].name.as_deref().unwrap_or("").cmp(name))
    }
}

impl<B: MomentumStore> Lion<B> {
    /// An optimizer over momentum storage the caller provides (no allocation), with one group
    /// of these hyperparameters; tensor `i` is the store's buffer `i`, in group 0.
    ///
    /// ```
    /// use lion_optim::{Hyperparams, Lion, SliceMut, Tensor};
    ///
    /// let mut m = [0.0f32; 8];                          // e.g. a `static` buffer on an MCU
    /// let mut opt = Lion::with_buffers(Hyperparams::default(), [SliceMut::from(&mut m[..])])?;
    /// let mut w = [1.0f32; 8];
    /// opt.step(&mut [Tensor::new(&mut w, &[1.0f32; 8])])?;
    /// assert!(w[0] < 1.0);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn with_buffers(hp: Hyperparams, buffers: B) -> Result<Self, Error> {
        let first = GroupState::new(Group::new(hp), 1.0)?;
        Ok(Self {
            #[cfg(feature = "alloc")]
            groups: vec![first],
            #[cfg(not(feature = "alloc"))]
            groups: [first],
            lr_scale: 1.0,
            skip_non_finite: false,
            steps: 0,
            skipped: 0,
            buffers,
            #[cfg(feature = "alloc")]
            meta: Vec::new(),
            #[cfg(feature = "alloc")]
            by_name: Vec::new(),
            #[cfg(feature = "alloc")]
            scratch: Scratch::default(),
        })
    }

    /// The number of parameter groups (at least 1).
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    fn group_state(&self, id: GroupId) -> Result<&GroupState, Error> {
        self.groups.get(id.0).ok_or(Error::NoSuchGroup {
            index: id.0,
            count: self.groups.len(),
        })
    }

    /// The settings of group `id`.
    ///
    /// ```
    /// use lion_optim::{GroupId, Lion};
    ///
    /// let opt = Lion::new(Default::default())?;
    /// assert_eq!(opt.group(GroupId::DEFAULT)?.hp.lr, 1e-4);
    /// assert!(opt.group(GroupId::new(1)).is_err());
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn group(&self, id: GroupId) -> Result<&Group, Error> {
        self.group_state(id).map(|g| &g.group)
    }

    /// Replaces the settings of group `id` if they are valid (otherwise nothing changes).
    ///
    /// ```
    /// use lion_optim::{Group, GroupId, Hyperparams, Lion};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.set_group(GroupId::DEFAULT, Group::new(Hyperparams { beta1: 0.95, ..Hyperparams::default() }))?;
    /// assert!(opt.set_group(GroupId::new(3), Group::default()).is_err());
    /// assert_eq!(opt.group(GroupId::DEFAULT)?.hp.beta1, 0.95);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn set_group(&mut self, id: GroupId, group: Group) -> Result<(), Error> {
        self.group_state(id)?;
        let state = GroupState::new(group, self.lr_scale)?;
        self.groups[id.0] = state;
        Ok(())
    }

    /// Sets the learning rate of group `id` (for per-group schedules).
    ///
    /// ```
    /// use lion_optim::{GroupId, Lion};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.set_group_lr(GroupId::DEFAULT, 3e-4)?;
    /// assert!(opt.set_group_lr(GroupId::DEFAULT, f64::NAN).is_err());
    /// assert_eq!(opt.hyperparams().lr, 3e-4);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn set_group_lr(&mut self, id: GroupId, lr: f64) -> Result<(), Error> {
        let mut group = *self.group(id)?;
        group.hp.lr = lr;
        self.set_group(id, group)
    }

    /// Changes every group's settings with `f`, if all results are valid (otherwise nothing
    /// changes).
    fn update_groups(&mut self, lr_scale: f64, f: impl Fn(&mut Group)) -> Result<(), Error> {
        for g in self.groups.iter() {
            let mut group = g.group;
            f(&mut group);
            GroupState::new(group, lr_scale)?;
        }
        for g in self.groups.iter_mut() {
            let mut group = g.group;
            f(&mut group);
            if let Ok(state) = GroupState::new(group, lr_scale) {
                *g = state;
            }
        }
        self.lr_scale = lr_scale;
        Ok(())
    }

    /// Sets the learning rate of every group.
    ///
    /// ```
    /// let mut opt = lion_optim::Lion::new(Default::default())?;
    /// opt.set_lr(3e-4)?;
    /// assert!(opt.set_lr(f64::NAN).is_err());
    /// assert_eq!(opt.hyperparams().lr, 3e-4);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn set_lr(&mut self, lr: f64) -> Result<(), Error> {
        self.update_groups(self.lr_scale, |g| g.hp.lr = lr)
    }

    /// Scales every group's learning rate by `scale` from the next step on (a schedule's
    /// factor: each step uses `f32(group lr * scale)`, computed in f64). Replaces the previous
    /// scale (it does not compound). Default 1.
    ///
    /// ```
    /// use lion_optim::{Dtype, Lion, Tensor};
    ///
    /// let mut opt = Lion::new(lion_optim::Hyperparams { lr: 0.5, ..Default::default() })?;
    /// opt.add_tensor(1, Dtype::F32);
    /// opt.set_lr_scale(0.5)?;
    /// let mut w = [1.0f32];
    /// opt.step(&mut [Tensor::new(&mut w, &[1.0f32])])?;
    /// assert_eq!((w[0], opt.lr_scale()), (0.75, 0.5));
    /// assert!(opt.set_lr_scale(-1.0).is_err());
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn set_lr_scale(&mut self, scale: f64) -> Result<(), Error> {
        if !(scale.is_finite() && scale >= 0.0) {
            return Err(Error::InvalidHyperparameter {
                name: "lr_scale",
                value: scale,
                rule: "must be finite and >= 0",
            });
        }
        self.update_groups(scale, |_| {})
    }

    /// The learning-rate scale (see [`set_lr_scale`](Self::set_lr_scale)).
    pub fn lr_scale(&self) -> f64 {
        self.lr_scale
    }

    /// The hyperparameters of group 0 (for a one-group optimizer: the hyperparameters).
    ///
    /// ```
    /// let opt = lion_optim::Lion::new(Default::default())?;
    /// assert_eq!(opt.hyperparams().beta2, 0.99);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn hyperparams(&self) -> &Hyperparams {
        &self.groups[0].group.hp
    }

    /// Replaces the hyperparameters of group 0 if they are valid (otherwise nothing changes).
    ///
    /// ```
    /// use lion_optim::{Hyperparams, Lion};
    ///
    /// let mut opt = Lion::new(Hyperparams::default())?;
    /// opt.set_hyperparams(Hyperparams { beta1: 0.95, beta2: 0.98, ..Hyperparams::default() })?;
    /// assert!(opt.set_hyperparams(Hyperparams { weight_decay: -1.0, ..Hyperparams::default() }).is_err());
    /// assert_eq!(opt.hyperparams().beta1, 0.95);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn set_hyperparams(&mut self, hp: Hyperparams) -> Result<(), Error> {
        let group = Group {
            hp,
            ..self.groups[0].group
        };
        self.set_group(GroupId::DEFAULT, group)
    }

    /// The options of group 0 (see [`StepOptions`] and [`set_options`](Self::set_options)).
    pub fn options(&self) -> &StepOptions {
        &self.groups[0].group.options
    }

    /// Sets the options of group 0 if they are valid (otherwise nothing changes).
    ///
    /// [`step`](StepOptions::step) and [`offset`](StepOptions::offset) are managed by the
    /// optimizer: each step uses its step count and offset 0, and stochastic rounding draws every
    /// tensor's bits from its own stream (the seed mixed with the tensor's stream, by default its
    /// index). [`Cautious::Shard`] is refused (a tensor of the optimizer is whole).
    ///
    /// ```
    /// use lion_optim::{Lion, Rounding, StepOptions};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.set_options(StepOptions { rounding: Rounding::Stochastic { seed: 7 }, ..StepOptions::default() })?;
    /// assert!(opt.set_options(StepOptions { grad_unscale: Some(-1.0), ..StepOptions::default() }).is_err());
    /// assert_eq!(opt.options().rounding, Rounding::Stochastic { seed: 7 });
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn set_options(&mut self, options: StepOptions) -> Result<(), Error> {
        let group = Group {
            options,
            ..self.groups[0].group
        };
        self.set_group(GroupId::DEFAULT, group)
    }

    /// Sets the inverse loss scale of every group's gradients from the next step on (`None`: no
    /// unscaling).
    ///
    /// ```
    /// use lion_optim::{Dtype, Lion, Tensor};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// let id = opt.add_tensor(1, Dtype::F32);
    /// opt.set_grad_unscale(Some(1.0 / 65536.0))?;      // the loss was scaled by 2^16
    /// let mut w = [0.0f32];
    /// opt.step(&mut [Tensor::new(&mut w, &[65536.0f32])])?;
    /// assert_eq!(opt.momentum(id)?.len(), 1);
    /// assert_eq!(opt.options().grad_unscale, Some(1.0 / 65536.0));
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn set_grad_unscale(&mut self, inv_scale: Option<f64>) -> Result<(), Error> {
        self.update_groups(self.lr_scale, |g| g.options.grad_unscale = inv_scale)
    }

    /// With `true`, [`step`](Self::step) first checks every gradient (after unscaling) and, if
    /// one is infinite or NaN, skips the whole step without touching any state: it returns
    /// [`Outcome::SkippedNonFinite`] and counts it in [`skipped_steps`](Self::skipped_steps).
    ///
    /// ```
    /// use lion_optim::{Dtype, Lion, Outcome, Tensor};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.add_tensor(2, Dtype::F32);
    /// opt.set_skip_non_finite(true);
    /// let mut w = [1.0f32; 2];
    /// assert_eq!(opt.step(&mut [Tensor::new(&mut w, &[f32::NAN, 1.0])])?, Outcome::SkippedNonFinite);
    /// assert_eq!((w, opt.steps(), opt.skipped_steps()), ([1.0; 2], 0, 1));
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn set_skip_non_finite(&mut self, skip: bool) {
        self.skip_non_finite = skip;
    }

    /// Whether steps with non-finite gradients are skipped (see
    /// [`set_skip_non_finite`](Self::set_skip_non_finite)).
    pub fn skip_non_finite(&self) -> bool {
        self.skip_non_finite
    }

    /// How many steps were skipped for non-finite gradients (see
    /// [`set_skip_non_finite`](Self::set_skip_non_finite)).
    pub fn skipped_steps(&self) -> u64 {
        self.skipped
    }

    /// How many steps have been applied (see the type's example).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// How many tensors the optimizer holds momentum for.
    ///
    /// ```
    /// let mut opt = lion_optim::Lion::new(Default::default())?;
    /// opt.add_tensor(8, lion_optim::Dtype::F32);
    /// assert_eq!(opt.tensor_count(), 1);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn tensor_count(&self) -> usize {
        self.buffers.count()
    }

    /// The momentum of tensor `id` (a handle, or an index).
    ///
    /// ```
    /// use lion_optim::{Dtype, Lion, TensorId};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// let id = opt.add_tensor(3, Dtype::F16);
    /// assert_eq!(opt.momentum(id)?.dtype(), Dtype::F16);
    /// assert!(opt.momentum(TensorId::new(1)).is_err());
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn momentum(&self, id: impl Into<TensorId>) -> Result<SliceRef<'_>, Error> {
        let id = id.into();
        let count = self.tensor_count();
        self.buffers
            .momentum(id.0)
            .ok_or(Error::NoSuchTensor { index: id.0, count })
    }

    /// The name tensor `id` was added with.
    ///
    /// ```
    /// use lion_optim::{Lion, TensorSpec};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// let id = opt.add(TensorSpec::new(3).name("h.0.attn.c_proj.weight"))?;
    /// assert_eq!(opt.tensor_name(id), Some("h.0.attn.c_proj.weight"));
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn tensor_name(&self, id: TensorId) -> Option<&str> {
        #[cfg(feature = "alloc")]
        return self.meta.get(id.0).and_then(|m| m.name.as_deref());
        #[cfg(not(feature = "alloc"))]
        return {
            let _ = id;
            None
        };
    }

    /// The group of tensor `id`.
    ///
    /// ```
    /// use lion_optim::{Group, GroupId, Lion, TensorSpec};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// let g = opt.add_group(Group::default())?;
    /// let id = opt.add(TensorSpec::new(3).group(g))?;
    /// assert_eq!(opt.tensor_group(id)?, g);
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn tensor_group(&self, id: TensorId) -> Result<GroupId, Error> {
        self.momentum(id)?;
        Ok(GroupId(self.meta_of(id.0).group))
    }

    /// What the optimizer knows about tensor `index` (defaults for a caller's store).
    fn meta_of(&self, index: usize) -> MetaRef {
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

    /// An error with the names of the tensors it mentions, for messages.
    ///
    /// ```
    /// use lion_optim::{Lion, Tensor, TensorSpec};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.add(TensorSpec::new(3).name("wte"))?;
    /// let mut w = [0.0f32; 2];
    /// let e = opt.step(&mut [Tensor::new(&mut w, &[0.0f32; 2])]).unwrap_err();
    /// assert_eq!(
    ///     opt.describe(&e).to_string(),
    ///     "tensor 0 (\"wte\"): params has 2 elements, expected 3"
    /// );
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn describe<'a>(&'a self, error: &'a Error) -> impl fmt::Display + 'a {
        Described { opt: self, error }
    }

    /// Which of the optimizer's tensors `tensor` (at `position` in a step's list) is.
    fn resolve(&self, position: usize, key: Key<'_>, keyed: bool) -> Result<usize, Error> {
        let count = self.tensor_count();
        let index = match (key, keyed) {
            (Key::Position, false) => position,
            (Key::Id(id), true) => id.0,
            (Key::Name(name), true) => {
                #[cfg(feature = "alloc")]
                let found = self.tensor_id(name).map(|id| id.0);
                #[cfg(not(feature = "alloc"))]
                let found = {
                    let _ = name;
                    None
                };
                found.ok_or(Error::UnknownName { position })?
            }
            _ => return Err(Error::MixedKeys { position }),
        };
        if index >= count {
            return Err(Error::NoSuchTensor { index, count });
        }
        Ok(index)
    }

    /// Checks `tensor` against the state of tensor `index`.
    fn check(&self, index: usize, tensor: &Tensor<'_>) -> Result<(), Error> {
        let expected = self.momentum(TensorId(index))?.len();
        let mismatch = |what, found| Error::TensorMismatch {
            index,
            what,
            expected,
            found,
        };
        if tensor.params.len() != expected {
            return Err(mismatch("params", tensor.params.len()));
        }
        if tensor.grads.len() != expected {
            return Err(mismatch("grads", tensor.grads.len()));
        }
        match self.meta_of(index).params {
            Some(expected) if expected != tensor.params.dtype() => Err(Error::TensorDtype {
                index,
                expected,
                found: tensor.params.dtype(),
            }),
            _ => Ok(()),
        }
    }

    /// The constants and options of tensor `index`'s step.
    fn settings(&self, index: usize) -> (Consts, StepOptions) {
        let meta = self.meta_of(index);
        // A tensor's group exists: groups are never removed.
        let g = &self.groups[meta.group.min(self.groups.len() - 1)];
        let options = tensor_options(&g.group.options, self.steps, 0, meta.stream);
        (g.k, options)
    }

    /// One Lion step over the tensors of the model.
    ///
    /// Either every tensor is keyed ([`Tensor::of`], [`Tensor::named`]): then they may come in
    /// any order, and the optimizer's tensors that are not passed (no gradient this step) are
    /// left alone (an empty list passes none); or none is: then `tensors[i]` is tensor `i`, and
    /// all must be passed. Either way the step count advances by one.
    ///
    /// Checks first that every tensor's parameters and gradient have its momentum's length and
    /// its declared parameter dtype, that no tensor is passed twice, and that every key names a
    /// tensor; on error nothing is written and the step count does not change. With
    /// [`set_skip_non_finite`](Self::set_skip_non_finite), a step with a non-finite gradient
    /// is skipped the same way. Each tensor is stepped with its group's settings; cautious
    /// groups count each tensor first. With the `rayon` feature the whole model is spread over
    /// rayon's current thread pool (see [`step_many`]); the result is bit-identical to the
    /// sequential step and to [`reference::step_with`](crate::reference::step_with) on every
    /// tensor. See the type's example.
    pub fn step(&mut self, tensors: &mut [Tensor<'_>]) -> Result<Outcome, Error> {
        #[cfg(feature = "alloc")]
        {
            // Reused across steps: no allocation per step.
            let mut scratch = core::mem::take(&mut self.scratch);
            let result = self.step_resolved(tensors, &mut scratch);
            self.scratch = scratch;
            result
        }
        #[cfg(not(feature = "alloc"))]
        self.step_resolved(tensors, &mut Scratch)
    }

    fn step_resolved(
        &mut self,
        tensors: &mut [Tensor<'_>],
        scratch: &mut Scratch,
    ) -> Result<Outcome, Error> {
        let count = self.tensor_count();
        // An empty list is a keyed step that passes no tensor.
        let keyed = tensors.first().is_none_or(|t| t.key != Key::Position);
        if !keyed && tensors.len() != count {
            return Err(Error::TensorCount {
                expected: count,
                found: tensors.len(),
            });
        }
        scratch.start(count, tensors.len());
        let mut total = 0usize;
        for (position, t) in tensors.iter().enumerate() {
            let index = self.resolve(position, t.key, keyed)?;
            let duplicate = keyed
                && scratch.seen(index, || {
                    tensors[..position]
                        .iter()
                        .enumerate()
                        .any(|(p, u)| self.resolve(p, u.key, keyed) == Ok(index))
                });
            if duplicate {
                return Err(Error::DuplicateTensor { index });
            }
            self.check(index, t)?;
            scratch.resolved(index);
            total += t.params.len();
        }
        // Every tensor is valid: from here on nothing fails. (An index is looked up again where
        // there is no scratch space, without `alloc`.)
        let path = Path::detect();
        #[cfg(feature = "rayon")]
        if total >= crate::PAR_THRESHOLD && rayon::current_num_threads() > 1 {
            let indices: Vec<usize> = (0..tensors.len())
                .map(|p| self.index_of(scratch, p, tensors[p].key, keyed))
                .collect();
            return Ok(self.step_parallel(path, tensors, &indices));
        }
        let _ = total;
        if self.skip_non_finite {
            for (position, t) in tensors.iter().enumerate() {
                let index = self.index_of(scratch, position, t.key, keyed);
                if !finite_dyn(path, t.grads, &self.settings(index).1) {
                    self.skipped += 1;
                    return Ok(Outcome::SkippedNonFinite);
                }
            }
        }
        for (position, t) in tensors.iter_mut().enumerate() {
            let index = self.index_of(scratch, position, t.key, keyed);
            let (k, options) = self.settings(index);
            let Some(momentum) = self.buffers.momentum_mut(index) else {
                continue; // unreachable: checked above
            };
            let (p, g) = (t.params.reborrow(), t.grads);
            Job::new(p, g, momentum, k, options, index).run(path);
        }
        self.steps += 1;
        Ok(Outcome::Applied)
    }

    /// The index of the tensor at `position` of a validated step.
    fn index_of(&self, scratch: &Scratch, position: usize, key: Key<'_>, keyed: bool) -> usize {
        scratch
            .index(position)
            .unwrap_or_else(|| self.resolve(position, key, keyed).unwrap_or(position))
    }

    /// The parallel step over validated tensors (see `many::run_parallel`).
    #[cfg(feature = "rayon")]
    fn step_parallel(
        &mut self,
        path: Path,
        tensors: &mut [Tensor<'_>],
        indices: &[usize],
    ) -> Outcome {
        let settings: Vec<_> = indices
            .iter()
            .map(|&i| Ok::<_, ()>((i, self.settings(i))))
            .collect();
        let mut momenta: Vec<Option<SliceMut<'_>>> =
            self.buffers.momentum_all_mut().map(Some).collect();
        let mut jobs = Vec::with_capacity(tensors.len());
        for (t, s) in tensors.iter_mut().zip(settings) {
            let Ok((index, (k, options))) = s else {
                continue; // unreachable: validated
            };
            let Some(momentum) = momenta.get_mut(index).and_then(Option::take) else {
                continue; // unreachable: validated, no duplicates
            };
            jobs.push(Job::new(
                t.params.reborrow(),
                t.grads,
                momentum,
                k,
                options,
                index,
            ));
        }
        let outcome = many::run_parallel(path, jobs, self.skip_non_finite);
        match outcome {
            Outcome::Applied => self.steps += 1,
            Outcome::SkippedNonFinite => self.skipped += 1,
        }
        outcome
    }
}

/// What [`Lion`] knows about a tensor, by value.
#[derive(Clone, Copy)]
struct MetaRef {
    group: usize,
    params: Option<Dtype>,
    stream: u64,
}

/// An error with tensor names (see [`Lion::describe`]).
struct Described<'a, B> {
    opt: &'a Lion<B>,
    error: &'a Error,
}

impl<B: MomentumStore> fmt::Display for Described<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let index = match *self.error {
            Error::TensorMismatch { index, .. }
            | Error::TensorDtype { index, .. }
            | Error::DuplicateTensor { index }
            | Error::DuplicateName { index }
            | Error::NoSuchTensor { index, .. } => Some(index),
            _ => None,
        };
        match index.and_then(|i| self.opt.tensor_name(TensorId(i))) {
            Some(name) => {
                write!(f, "tensor {} ({name:?}): ", index.unwrap_or(0))?;
                self.error.fmt_body(f)
            }
            None => write!(f, "{}", self.error),
        }
    }
}

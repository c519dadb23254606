//! The stateful optimizer for whole models ([`Lion`]) and the stateless many-tensor step
//! ([`step_many`]).
//!
//! * `mod.rs` — [`Lion`]: construction, counters, error descriptions.
//! * `groups` — [`Group`], [`GroupId`] and the group settings of a [`Lion`].
//! * `tensors` — [`TensorSpec`], [`TensorId`], [`TensorInfo`], [`Tensor`]: the registry.
//! * `step` — [`Lion::step`].
//! * `many` — [`Update`] and [`step_many`].
//! * `store` — [`MomentumStore`]: owned or caller-provided momentum.
//! * `state` — the two state formats (a compact checkpoint, safetensors) and their shared
//!   schema.
//! * `deprecated` — the names this version replaced.
//!
//! Both steps run on the crate's one executor (`crate::exec`).

#[cfg(feature = "alloc")]
use alloc::{vec, vec::Vec};
use core::fmt;

mod deprecated;
mod groups;
pub(crate) mod many;
mod state;
mod step;
mod store;
mod tensors;

pub use groups::{Group, GroupId};
#[allow(deprecated)]
pub use many::step_many_guarded;
pub use many::{Update, step_many};
pub use store::MomentumStore;
pub use tensors::{Tensor, TensorId, TensorInfo, TensorSpec};

#[cfg(feature = "alloc")]
use crate::Buffer;
use crate::{Error, Hyperparams};
use groups::GroupState;
#[cfg(feature = "alloc")]
use tensors::Meta;

#[cfg(feature = "alloc")]
type Groups = Vec<GroupState>;
#[cfg(not(feature = "alloc"))]
type Groups = [GroupState; 1];

/// The Lion optimizer across steps, for a whole model: parameter groups, one momentum buffer per
/// parameter tensor (each with its own element type), one step count.
///
/// `B` is the momentum storage: `Vec<Buffer>` when the optimizer owns it (feature `alloc`,
/// [`Lion::new`]), or any other [`MomentumStore`] — such as an array of
/// [`SliceMut`](crate::SliceMut) over
/// `static` buffers on a microcontroller ([`Lion::with_buffers`]).
///
/// A step is all or nothing: [`Lion::step`] checks every tensor against its state and every
/// setting first; on any error it returns it and changes nothing. With the `rayon` feature, it
/// spreads the whole model over the thread pool (see [`step_many`]), bit-identically.
///
/// The methods, by concept: construction ([`new`](Self::new),
/// [`with_buffers`](Self::with_buffers)); tensors ([`add`](Self::add),
/// [`tensor`](Self::tensor), [`tensor_id`](Self::tensor_id),
/// [`tensor_count`](Self::tensor_count), [`momentum`](Self::momentum)); groups
/// ([`add_group`](Self::add_group), [`group`](Self::group), [`set_group`](Self::set_group),
/// [`update_groups`](Self::update_groups), [`group_count`](Self::group_count)); the schedule
/// ([`set_lr_scale`](Self::set_lr_scale), [`lr_scale`](Self::lr_scale)); the step
/// ([`step`](Self::step), [`steps`](Self::steps), [`skipped_steps`](Self::skipped_steps),
/// [`describe`](Self::describe)); state ([`save_state`](Self::save_state),
/// [`state_len`](Self::state_len), [`state_to_vec`](Self::state_to_vec),
/// [`load_state`](Self::load_state), `save_safetensors`, `load_safetensors`).
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
    scratch: step::Scratch,
}

#[cfg(feature = "alloc")]
impl Lion<Vec<Buffer>> {
    /// An optimizer that owns its momentum buffers, with one group (group 0) of these
    /// hyperparameters; add tensors with [`add`](Self::add).
    ///
    /// ```
    /// let opt = lion_optim::Lion::new(Default::default())?;
    /// assert_eq!((opt.tensor_count(), opt.group_count()), (0, 1));
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn new(hp: Hyperparams) -> Result<Self, Error> {
        Self::with_buffers(hp, Vec::new())
    }

    /// The checkpoint of [`save_state`](Self::save_state) as a new vector.
    ///
    /// ```
    /// use lion_optim::{Lion, TensorSpec};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.add(TensorSpec::new(4))?;
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
            steps: 0,
            skipped: 0,
            buffers,
            #[cfg(feature = "alloc")]
            meta: Vec::new(),
            #[cfg(feature = "alloc")]
            by_name: Vec::new(),
            scratch: step::Scratch::default(),
        })
    }

    /// How many steps have been applied (see the type's example).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// How many steps were skipped for non-finite gradients (see
    /// [`StepOptions::skip_non_finite`](crate::StepOptions::skip_non_finite)).
    ///
    /// ```
    /// use lion_optim::{Lion, Outcome, Tensor, TensorSpec};
    ///
    /// let mut opt = Lion::new(Default::default())?;
    /// opt.add(TensorSpec::new(2))?;
    /// opt.update_groups(|_, g| g.options.skip_non_finite = true)?;
    /// let mut w = [1.0f32; 2];
    /// assert_eq!(opt.step(&mut [Tensor::new(&mut w, &[f32::NAN, 1.0])])?, Outcome::SkippedNonFinite);
    /// assert_eq!((w, opt.steps(), opt.skipped_steps()), ([1.0; 2], 0, 1));
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn skipped_steps(&self) -> u64 {
        self.skipped
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
        match index.and_then(|i| Some((i, self.opt.name_of(i)?))) {
            Some((index, name)) => {
                write!(f, "tensor {index} ({name:?}): ")?;
                self.error.fmt_body(f)
            }
            None => write!(f, "{}", self.error),
        }
    }
}

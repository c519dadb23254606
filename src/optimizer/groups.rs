//! Parameter groups: their settings ([`Group`]), handles ([`GroupId`]), and the optimizer's
//! methods that read and change them.

use super::{Lion, MomentumStore};
use crate::hyper::Consts;
use crate::{Cautious, Error, Hyperparams, StepOptions};

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
    #[inline]
    pub fn new(hp: Hyperparams) -> Self {
        Self {
            hp,
            options: StepOptions::default(),
        }
    }

    /// The group with these options (see the type's example).
    #[inline]
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
pub struct GroupId(pub(super) usize);

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

/// A group's settings with the constants a step computes from them (with the optimizer's
/// learning-rate scale applied), validated when they were set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct GroupState {
    pub(super) group: Group,
    pub(super) k: Consts,
}

impl GroupState {
    /// Validates `group` as a group of a [`Lion`] whose learning-rate scale is `lr_scale`.
    pub(super) fn new(group: Group, lr_scale: f64) -> Result<Self, Error> {
        if let Cautious::Shard { agreeing, .. } = group.options.cautious {
            return Err(Error::InvalidHyperparameter {
                name: "cautious",
                value: agreeing as f64,
                rule: "must be Off or Whole in a Lion group (Shard is for step_with/step_many)",
            });
        }
        // The scale applies to the learning rate wherever it is used: the sign step and the
        // decay factor (1 - lr * scale * weight_decay).
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

impl<B: MomentumStore> Lion<B> {
    /// Adds a parameter group; returns its handle. Invalid settings are an error, and nothing
    /// changes. (Without the `alloc` feature an optimizer has one group.)
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
    #[cfg(feature = "alloc")]
    #[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
    pub fn add_group(&mut self, group: Group) -> Result<GroupId, Error> {
        let state = GroupState::new(group, self.lr_scale)?;
        self.groups.push(state);
        Ok(GroupId(self.groups.len() - 1))
    }

    /// The number of parameter groups (at least 1).
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    pub(super) fn group_state(&self, id: GroupId) -> Result<&GroupState, Error> {
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

    /// Changes the settings of every group with `f` (given each group's handle), if every
    /// result is valid; otherwise returns the first error and nothing changes. The one call for
    /// what applies to several groups: a learning rate, a loss scale, skipping non-finite
    /// steps, a seed.
    ///
    /// ```
    /// use lion_optim::{Group, GroupId, Hyperparams, Lion};
    ///
    /// let mut opt = Lion::new(Hyperparams { weight_decay: 0.1, ..Hyperparams::default() })?;
    /// let head = opt.add_group(Group::default())?;
    /// // AMP: unscale every gradient by 1/1024 and skip steps that overflowed.
    /// opt.update_groups(|_, g| {
    ///     g.options.grad_unscale = Some(1.0 / 1024.0);
    ///     g.options.skip_non_finite = true;
    /// })?;
    /// // Another learning rate for one group; a bad value changes nothing.
    /// opt.update_groups(|id, g| if id == head { g.hp.lr = 3e-4 })?;
    /// assert!(opt.update_groups(|_, g| g.hp.lr = f64::NAN).is_err());
    /// assert_eq!(opt.group(head)?.hp.lr, 3e-4);
    /// assert_eq!(opt.group(GroupId::DEFAULT)?.options.grad_unscale, Some(1.0 / 1024.0));
    /// # Ok::<(), lion_optim::Error>(())
    /// ```
    pub fn update_groups(&mut self, mut f: impl FnMut(GroupId, &mut Group)) -> Result<(), Error> {
        self.rebuild_groups(self.lr_scale, &mut f)
    }

    /// Applies `f` to every group with the learning-rate scale `lr_scale`, all or nothing.
    fn rebuild_groups(
        &mut self,
        lr_scale: f64,
        f: &mut dyn FnMut(GroupId, &mut Group),
    ) -> Result<(), Error> {
        // First every new state (validated), then the writes: no allocation, nothing changed on
        // error.
        for (i, g) in self.groups.iter().enumerate() {
            let mut group = g.group;
            f(GroupId(i), &mut group);
            GroupState::new(group, lr_scale)?;
        }
        for (i, g) in self.groups.iter_mut().enumerate() {
            let mut group = g.group;
            f(GroupId(i), &mut group);
            if let Ok(state) = GroupState::new(group, lr_scale) {
                *g = state;
            }
        }
        self.lr_scale = lr_scale;
        Ok(())
    }

    /// Scales every group's learning rate by `scale` from the next step on (a schedule's
    /// factor: each step uses `f32(group lr * scale)`, computed in f64, for the sign step and
    /// the weight decay alike). Replaces the previous scale (it does not compound). Default 1.
    ///
    /// ```
    /// use lion_optim::{Lion, Tensor, TensorSpec};
    ///
    /// let mut opt = Lion::new(lion_optim::Hyperparams { lr: 0.5, ..Default::default() })?;
    /// opt.add(TensorSpec::new(1))?;
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
        self.rebuild_groups(scale, &mut |_, _| {})
    }

    /// The learning-rate scale (see [`set_lr_scale`](Self::set_lr_scale)).
    pub fn lr_scale(&self) -> f64 {
        self.lr_scale
    }
}

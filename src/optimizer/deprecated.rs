//! The methods of [`Lion`] that version 0.2 folded into others, kept for one release so that
//! existing code keeps compiling. Each says what replaced it.

#[cfg(feature = "alloc")]
use alloc::vec::Vec;

#[cfg(feature = "alloc")]
use super::TensorSpec;
use super::{Group, GroupId, Lion, MomentumStore, TensorId};
#[cfg(feature = "alloc")]
use crate::{Buffer, Dtype};
use crate::{Error, Hyperparams, StepOptions};

#[cfg(feature = "alloc")]
impl Lion<Vec<Buffer>> {
    /// Adds an unnamed tensor of `len` parameters with momentum of type `momentum`, in group 0.
    #[deprecated(
        since = "0.2.0",
        note = "use `add(TensorSpec::new(len).momentum(dtype))`"
    )]
    pub fn add_tensor(&mut self, len: usize, momentum: Dtype) -> TensorId {
        // Group 0 exists and an unnamed tensor cannot clash: this cannot fail.
        self.add(TensorSpec::new(len).momentum(momentum))
            .unwrap_or(TensorId(usize::MAX))
    }
}

/// For each field of group 0: the deprecated getter and setter that `group(GroupId::DEFAULT)`
/// and `set_group` replaced.
macro_rules! group0_field {
    ($($what:literal $field:ident: $ty:ty, $get:ident, $set:ident, $note:literal;)*) => {$(
        #[doc = concat!("The ", $what, " of group 0.")]
        #[deprecated(since = "0.2.0", note = $note)]
        pub fn $get(&self) -> &$ty {
            &self.groups[0].group.$field
        }

        #[doc = concat!("Replaces the ", $what, " of group 0.")]
        #[deprecated(
            since = "0.2.0",
            note = "use `set_group(GroupId::DEFAULT, ..)` or `update_groups`"
        )]
        pub fn $set(&mut self, $field: $ty) -> Result<(), Error> {
            let group = Group {
                $field,
                ..self.groups[0].group
            };
            self.set_group(GroupId::DEFAULT, group)
        }
    )*};
}

#[allow(clippy::missing_errors_doc)]
impl<B: MomentumStore> Lion<B> {
    /// Sets the learning rate of group `id`.
    #[deprecated(
        since = "0.2.0",
        note = "use `update_groups(|g, s| if g == id { s.hp.lr = lr })` or `set_group`"
    )]
    pub fn set_group_lr(&mut self, id: GroupId, lr: f64) -> Result<(), Error> {
        let mut group = *self.group(id)?;
        group.hp.lr = lr;
        self.set_group(id, group)
    }

    /// Sets the learning rate of every group.
    #[deprecated(since = "0.2.0", note = "use `update_groups(|_, g| g.hp.lr = lr)`")]
    pub fn set_lr(&mut self, lr: f64) -> Result<(), Error> {
        self.update_groups(|_, g| g.hp.lr = lr)
    }

    group0_field! {
        "hyperparameters" hp: Hyperparams, hyperparams, set_hyperparams,
            "use `group(GroupId::DEFAULT)?.hp`";
        "options" options: StepOptions, options, set_options,
            "use `group(GroupId::DEFAULT)?.options`";
    }

    /// Sets the inverse loss scale of every group's gradients.
    #[deprecated(
        since = "0.2.0",
        note = "use `update_groups(|_, g| g.options.grad_unscale = inv_scale)`"
    )]
    pub fn set_grad_unscale(&mut self, inv_scale: Option<f64>) -> Result<(), Error> {
        self.update_groups(|_, g| g.options.grad_unscale = inv_scale)
    }

    /// Skips steps with non-finite gradients (in every group).
    #[deprecated(
        since = "0.2.0",
        note = "use `update_groups(|_, g| g.options.skip_non_finite = skip)`"
    )]
    pub fn set_skip_non_finite(&mut self, skip: bool) {
        // Changing a flag cannot make valid settings invalid.
        let _ = self.update_groups(|_, g| g.options.skip_non_finite = skip);
    }

    /// Whether every group skips steps with non-finite gradients.
    #[deprecated(since = "0.2.0", note = "use `group(id)?.options.skip_non_finite`")]
    pub fn skip_non_finite(&self) -> bool {
        self.groups.iter().all(|g| g.group.options.skip_non_finite)
    }

    /// The name tensor `id` was added with.
    #[deprecated(since = "0.2.0", note = "use `tensor(id)?.name`")]
    pub fn tensor_name(&self, id: TensorId) -> Option<&str> {
        self.name_of(id.0)
    }

    /// The group of tensor `id`.
    #[deprecated(since = "0.2.0", note = "use `tensor(id)?.group`")]
    pub fn tensor_group(&self, id: TensorId) -> Result<GroupId, Error> {
        self.tensor(id).map(|t| t.group)
    }
}

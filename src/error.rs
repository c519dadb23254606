//! The one error type of the crate.

use core::fmt;

use crate::Dtype;

/// Why a call was refused.
///
/// Every fallible function of this crate checks all of its inputs **before** it writes anything:
/// when it returns an `Error`, every buffer it was given is exactly as it was.
///
/// ```
/// use lion_optim::{Error, Hyperparams};
///
/// let mut params = [1.0f32; 4];
/// let mut momentum = [0.0f32; 4];
/// let err = lion_optim::step(&mut params, &[0.5f32; 3], &mut momentum, &Hyperparams::default())
///     .unwrap_err();
/// assert_eq!(err, Error::LengthMismatch { what: "grads", expected: 4, found: 3 });
/// assert_eq!(err.to_string(), "grads has 3 elements, expected 4 (the length of params)");
/// assert_eq!(params, [1.0; 4]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A slice does not have the length of the parameters it goes with.
    LengthMismatch {
        /// Which input: `"grads"` or `"momentum"`.
        what: &'static str,
        /// The length of the parameters.
        expected: usize,
        /// The length that was passed.
        found: usize,
    },
    /// A hyperparameter is outside its domain.
    InvalidHyperparameter {
        /// The field: `"lr"`, `"beta1"`, `"beta2"`, `"weight_decay"`, ...
        name: &'static str,
        /// The value that was passed.
        value: f64,
        /// The rule it breaks, e.g. `"must be finite and >= 0"`.
        rule: &'static str,
    },
    /// The optimizer was given a different number of tensors than it holds state for (in an
    /// unkeyed step, which must pass all of them).
    TensorCount {
        /// How many tensors the optimizer holds momentum for.
        expected: usize,
        /// How many were passed.
        found: usize,
    },
    /// A tensor passed to a step does not have the length of its state (or, in
    /// [`step_many`](crate::step_many), of its parameters).
    TensorMismatch {
        /// Index of the tensor (of the update, in `step_many`).
        index: usize,
        /// What has the wrong length: `"params"`, `"grads"` or `"momentum"`.
        what: &'static str,
        /// The length it must have: the momentum buffer's (in `step_many`, the parameters').
        expected: usize,
        /// The length that was passed.
        found: usize,
    },
    /// A tensor's parameters do not have the element type it was added with.
    TensorDtype {
        /// Index of the tensor.
        index: usize,
        /// The element type it was added with.
        expected: Dtype,
        /// The element type passed.
        found: Dtype,
    },
    /// An index does not name a tensor of the optimizer.
    NoSuchTensor {
        /// The index that was passed.
        index: usize,
        /// How many tensors the optimizer holds.
        count: usize,
    },
    /// No tensor of the optimizer has the name of the tensor at this position of a step.
    UnknownName {
        /// The position in the step's list of tensors.
        position: usize,
    },
    /// A step passed one tensor twice.
    DuplicateTensor {
        /// Index of the tensor.
        index: usize,
    },
    /// A step mixed keyed tensors ([`Tensor::of`](crate::Tensor::of),
    /// [`Tensor::named`](crate::Tensor::named)) with tensors matched by position.
    MixedKeys {
        /// The position of the first tensor that differs from the first one.
        position: usize,
    },
    /// A tensor was added with a name another tensor has.
    DuplicateName {
        /// Index of the tensor that has the name.
        index: usize,
    },
    /// An index does not name a parameter group.
    NoSuchGroup {
        /// The index that was passed.
        index: usize,
        /// How many groups there are.
        count: usize,
    },
    /// Data does not have the element type it must have. (Never returned: no function of this
    /// version requires a particular element type outside the errors above.)
    #[deprecated(since = "0.2.0", note = "never returned: match `TensorDtype` instead")]
    DtypeMismatch {
        /// The element type required.
        expected: Dtype,
        /// The element type given.
        found: Dtype,
    },
    /// A checkpoint could not be read; nothing was changed.
    Checkpoint(CheckpointError),
    /// An output buffer is too small.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The backend that was asked for is not available on this CPU or build.
    BackendUnavailable(crate::Backend),
    /// The former name of [`BackendUnavailable`](Self::BackendUnavailable) (never returned).
    #[deprecated(
        since = "0.2.0",
        note = "never returned: match `BackendUnavailable` instead"
    )]
    PathUnavailable(crate::Backend),
}

/// What is wrong with a checkpoint passed to [`Lion::load_state`](crate::Lion::load_state).
///
/// ```
/// use lion_optim::{CheckpointError, Error, Lion};
///
/// let mut opt = Lion::new(Default::default())?;
/// let e = opt.load_state(b"not a checkpoint at all, but long enough to have a header......");
/// assert_eq!(e, Err(Error::Checkpoint(CheckpointError::BadMagic)));
/// # Ok::<(), lion_optim::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointError {
    /// It does not start with the magic bytes of a lion-optim checkpoint (`LIONOPT2`).
    BadMagic,
    /// It ends before the data its header announces.
    Truncated {
        /// Bytes the checkpoint has.
        len: usize,
        /// Bytes it needs, at least: up to the end of the first field (header or data) that
        /// the bytes do not hold.
        needed: usize,
    },
    /// It has bytes after the data its header announces.
    TrailingBytes,
    /// It stores a different number of tensors than the optimizer holds.
    TensorCount {
        /// Tensors in the optimizer.
        expected: usize,
        /// Tensors in the checkpoint.
        found: usize,
    },
    /// A tensor in it has another length or element type than the optimizer's.
    TensorShape {
        /// Index of the tensor.
        index: usize,
    },
    /// A dtype tag is not one this version knows.
    UnknownDtype(u8),
    /// Its hyperparameters or options are invalid.
    Hyperparams,
    /// It was written by a version of the format this one does not read.
    UnknownVersion,
    /// It holds a different number of parameter groups than the optimizer.
    GroupCount {
        /// Groups in the optimizer.
        expected: usize,
        /// Groups in the checkpoint.
        found: usize,
    },
    /// A tensor in it is in another group, or has another parameter dtype or random stream,
    /// than the optimizer's tensor of that name (or position).
    TensorSettings {
        /// Index of the optimizer's tensor.
        index: usize,
    },
    /// A tensor in it has a name no tensor of the optimizer has (or, unnamed, its position
    /// holds a named tensor).
    UnknownTensor {
        /// Its position in the checkpoint.
        position: usize,
    },
    /// It holds no state for a tensor of the optimizer.
    MissingTensor {
        /// Index of the optimizer's tensor.
        index: usize,
    },
    /// Two of its tensors are the same tensor of the optimizer.
    DuplicateTensor {
        /// Index of the optimizer's tensor.
        index: usize,
    },
    /// A field does not hold a valid value (a flag, a variant tag, a name, metadata, the
    /// file's structure).
    Invalid(&'static str),
    /// Its checksum does not match its contents: it was damaged (a flipped bit, a partial
    /// copy) after it was written.
    Checksum,
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadMagic => f.write_str("not a lion-optim checkpoint (bad magic bytes)"),
            Self::Truncated { len, needed } => write!(
                f,
                "checkpoint is truncated: it has {len} bytes and needs at least {needed}"
            ),
            Self::TrailingBytes => f.write_str("checkpoint has trailing bytes"),
            Self::TensorCount { expected, found } => {
                write!(
                    f,
                    "checkpoint holds {found} tensors, the optimizer {expected}"
                )
            }
            Self::TensorShape { index } => write!(
                f,
                "tensor {index} of the checkpoint differs in length or dtype from the optimizer's"
            ),
            Self::UnknownDtype(tag) => write!(f, "unknown dtype tag {tag} in checkpoint"),
            Self::Hyperparams => f.write_str("checkpoint holds invalid hyperparameters or options"),
            Self::UnknownVersion => f.write_str("checkpoint format version not supported"),
            Self::GroupCount { expected, found } => write!(
                f,
                "checkpoint holds {found} parameter groups, the optimizer {expected}"
            ),
            Self::TensorSettings { index } => write!(
                f,
                "tensor {index} of the checkpoint differs in group, parameter dtype or stream"
            ),
            Self::UnknownTensor { position } => write!(
                f,
                "tensor {position} of the checkpoint matches no tensor of the optimizer"
            ),
            Self::DuplicateTensor { index } => {
                write!(f, "checkpoint holds tensor {index} twice")
            }
            Self::MissingTensor { index } => {
                write!(f, "checkpoint holds no state for tensor {index}")
            }
            Self::Invalid(field) => write!(f, "checkpoint holds an invalid {field}"),
            Self::Checksum => {
                f.write_str("checkpoint is damaged: its checksum does not match its contents")
            }
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::LengthMismatch {
                what,
                expected,
                found,
            } => write!(
                f,
                "{what} has {found} elements, expected {expected} (the length of params)"
            ),
            Self::InvalidHyperparameter { name, value, rule } => {
                write!(f, "invalid hyperparameter {name} = {value}: {rule}")
            }
            Self::TensorCount { expected, found } => write!(
                f,
                "{found} tensors were passed, the optimizer holds state for {expected}"
            ),
            Self::TensorMismatch { index, .. }
            | Self::TensorDtype { index, .. }
            | Self::DuplicateTensor { index }
            | Self::DuplicateName { index } => {
                write!(f, "tensor {index}: ")?;
                self.fmt_body(f)
            }
            Self::NoSuchTensor { index, count } => {
                write!(f, "no tensor {index}: the optimizer holds {count}")
            }
            Self::UnknownName { position } => write!(
                f,
                "the tensor at position {position} has a name no tensor of the optimizer has"
            ),
            Self::MixedKeys { position } => write!(
                f,
                "the tensor at position {position} is keyed differently from the first one \
                 (all tensors of a step must be keyed by id or name, or none)"
            ),
            Self::NoSuchGroup { index, count } => {
                write!(f, "no parameter group {index}: there are {count}")
            }
            #[allow(deprecated)]
            Self::DtypeMismatch { expected, found } => {
                write!(f, "element type {found} where {expected} is required")
            }
            Self::Checkpoint(e) => write!(f, "{e}"),
            Self::BufferTooSmall { needed, available } => {
                write!(
                    f,
                    "buffer of {available} bytes is too small, {needed} are needed"
                )
            }
            #[allow(deprecated)]
            Self::BackendUnavailable(b) | Self::PathUnavailable(b) => {
                write!(
                    f,
                    "the {} backend is not available on this CPU or build",
                    b.name()
                )
            }
        }
    }
}

impl Error {
    /// The message of a tensor error without its `tensor N: ` prefix (see `Lion::describe`).
    pub(crate) fn fmt_body(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TensorMismatch {
                what,
                expected,
                found,
                ..
            } => write!(f, "{what} has {found} elements, expected {expected}"),
            Self::TensorDtype {
                expected, found, ..
            } => write!(
                f,
                "parameters are {found}, the tensor was added as {expected}"
            ),
            Self::DuplicateTensor { .. } => f.write_str("passed twice in one step"),
            Self::DuplicateName { .. } => f.write_str("already has this name"),
            _ => write!(f, "{self}"),
        }
    }
}

impl core::error::Error for Error {}
impl core::error::Error for CheckpointError {}

impl From<CheckpointError> for Error {
    fn from(e: CheckpointError) -> Self {
        Self::Checkpoint(e)
    }
}

/// Checks that `grads` and `momentum` have the length of `params`.
#[inline(always)]
pub(crate) fn check_lengths(params: usize, grads: usize, momentum: usize) -> Result<(), Error> {
    if grads != params {
        return Err(Error::LengthMismatch {
            what: "grads",
            expected: params,
            found: grads,
        });
    }
    if momentum != params {
        return Err(Error::LengthMismatch {
            what: "momentum",
            expected: params,
            found: momentum,
        });
    }
    Ok(())
}

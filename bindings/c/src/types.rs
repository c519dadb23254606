//! The types of the header: enums (as C sees them: named integer constants), the structs callers
//! fill (`lion_hyperparams`, `lion_step_options`, `lion_tensor_spec`, `lion_tensor_update`),
//! and their conversion into the core's types — every field checked, nothing trusted.
//!
//! Enum values arrive as plain integers ([`DtypeArg`], [`RoundingArg`], [`CautiousArg`]: `i32`
//! underneath, shown as `lion_dtype`, `lion_rounding`, `lion_cautious` in the header), never as
//! Rust enums: a C caller can pass any integer, and a Rust enum holding an unknown value would be
//! undefined behaviour. The Rust enums below exist for the header only (cbindgen writes their
//! constants); the library never reads one from C.

use core::ffi::c_char;

use lion::{Cautious, Dtype, Hyperparams, Rounding, StepOptions, WeightDecay};

use crate::status::{Failure, LionStatus};

/// The element types of parameters, gradients and momentum.
///
/// Parameters and gradients are F32, F16 or BF16; momentum is any of the four (Q8: 8-bit codes
/// into bitsandbytes' signed dynamic map, one f32 absmax per block of 256 elements; passed to
/// `lion_step_q8`, or a tensor's momentum in an optimizer handle). ANY is only for
/// `lion_tensor_spec.params_dtype`: the tensor's parameters may be of any type.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LionDtype {
    /// IEEE 754 binary32 (`float`).
    F32 = 0,
    /// IEEE 754 binary16 (`_Float16`; stored as `uint16_t` bits).
    F16 = 1,
    /// bfloat16: the upper half of a float (stored as `uint16_t` bits).
    Bf16 = 2,
    /// 8-bit momentum: `uint8_t` codes and a `float` absmax per block of 256 (momentum only).
    Q8 = 3,
    /// Any parameter type (`lion_tensor_spec.params_dtype` only).
    Any = -1,
}

/// How results are rounded to f16/bf16 storage (`lion_step_options.rounding`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LionRounding {
    /// To nearest, ties to even (the default).
    Nearest = 0,
    /// Stochastic rounding with `lion_step_options.seed`: unbiased, deterministic, the same on
    /// every CPU and thread count, split-invariant (see `offset`, `stream`).
    Stochastic = 1,
}

/// The cautious variant (`lion_step_options.cautious`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LionCautious {
    /// The plain Lion step (the default).
    Off = 0,
    /// Only elements whose update agrees in sign with the gradient move, by
    /// `lr * numel / (agreeing + 1)`; the call counts the agreeing elements first.
    Whole = 1,
    /// A shard of a larger tensor, stepped with the whole tensor's count
    /// (`cautious_agreeing` of `cautious_numel`; add the shards' `lion_cautious_count`s).
    Shard = 2,
}

/// A `lion_dtype` value as the library receives it: any integer.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DtypeArg(pub i32);

/// A `lion_rounding` value as the library receives it: any integer.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundingArg(pub i32);

/// A `lion_cautious` value as the library receives it: any integer.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CautiousArg(pub i32);

/// Hyperparameters of a step. Initialize with `lion_hyperparams_default()` (lr 1e-4, betas
/// 0.9 and 0.99, weight decay 0: the paper's reference code), then set fields.
///
/// Domains: `lr` finite and at least 0 (a finite float); `beta1`, `beta2` in [0, 1);
/// `weight_decay` finite and at least 0, with `lr * weight_decay <= 1`. Each step turns them into
/// float constants, each computed in double and rounded once (as the Python reference does).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LionHyperparams {
    /// `sizeof(lion_hyperparams)`, set by `lion_hyperparams_default()`: how the library knows
    /// which fields the caller's header has (a struct that was not initialized is refused).
    pub struct_size: u32,
    /// Learning rate: every step moves a parameter by exactly +-lr (after decay).
    pub lr: f64,
    /// Interpolation between momentum and gradient that decides the update's sign.
    pub beta1: f64,
    /// Decay rate of the momentum.
    pub beta2: f64,
    /// Decoupled weight decay: parameters are multiplied by `1 - lr * weight_decay` first.
    pub weight_decay: f64,
}

/// Per-call options of a step (and a parameter group's options). Initialize with
/// `lion_step_options_default()` (the plain step), then set fields. The zero value of every
/// field other than `struct_size` means "off".
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LionStepOptions {
    /// `sizeof(lion_step_options)`, set by `lion_step_options_default()`.
    pub struct_size: u32,
    /// 1: step along +sign(c), to maximize the objective (0 or 1).
    pub maximize: i32,
    /// 1: if a gradient (after unscaling) is inf or NaN, write nothing and return
    /// LION_STATUS_SKIPPED_NON_FINITE (0 or 1). The gradients are read twice.
    pub skip_non_finite: i32,
    /// Rounding of f16/bf16 stores: LION_ROUNDING_NEAREST or LION_ROUNDING_STOCHASTIC.
    pub rounding: RoundingArg,
    /// LION_CAUTIOUS_OFF, _WHOLE or _SHARD (with `cautious_agreeing`, `cautious_numel`).
    pub cautious: CautiousArg,
    /// Multiply every gradient by this (the inverse loss scale of mixed precision) before using
    /// it; > 0 and finite as a float. 0: gradients are used as they are.
    pub grad_unscale: f64,
    /// Positive: fully decoupled weight decay, `p *= 1 - weight_decay * lr / max_lr`. 0: the
    /// paper's `p *= 1 - lr * weight_decay`.
    pub max_lr: f64,
    /// The seed of stochastic rounding.
    pub seed: u64,
    /// The step number: keys the random bits of stochastic rounding (advance it every step).
    /// Stateless calls only (an optimizer handle counts its own steps: 0 there).
    pub step: u64,
    /// The index of the first element of these buffers in the whole tensor (a shard's place):
    /// a tensor stepped in shards, each with its offset, gets the bytes of the whole. Stateless
    /// calls only (0 in a group's options). With 8-bit momentum, a multiple of 256.
    pub offset: u64,
    /// The tensor's random stream, mixed into the seed (`seed ^ stream * 0x9e3779b97f4a7c15`):
    /// tensors of one step draw different bits; the shards of a tensor share its stream.
    /// 0: the seed as it is. Stateless calls only (0 in a group's options).
    pub stream: u64,
    /// LION_CAUTIOUS_SHARD: the agreeing elements of the whole tensor.
    pub cautious_agreeing: u64,
    /// LION_CAUTIOUS_SHARD: the elements of the whole tensor (>= offset + len).
    pub cautious_numel: u64,
}

/// A tensor added to an optimizer handle (`lion_optimizer_add_tensor`). Initialize with
/// `lion_tensor_spec_default()` (f32 momentum, parameters of any type, no name, group 0, its
/// index as its stream), then set fields.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LionTensorSpec {
    /// `sizeof(lion_tensor_spec)`, set by `lion_tensor_spec_default()`.
    pub struct_size: u32,
    /// The momentum's type: F32, F16, BF16 or Q8.
    pub momentum_dtype: DtypeArg,
    /// The parameters' type, checked at every step; LION_DTYPE_ANY: any.
    pub params_dtype: DtypeArg,
    /// 1: `stream` is the tensor's random stream; 0: its index.
    pub has_stream: i32,
    /// The number of parameters.
    pub len: usize,
    /// The tensor's group (0, or an id from `lion_optimizer_add_group`).
    pub group: usize,
    /// A NUL-terminated UTF-8 name, unique in the optimizer (copied), or NULL: used by
    /// `lion_optimizer_tensor_id`, in error messages and in state files.
    pub name: *const c_char,
    /// The tensor's random stream (with `has_stream = 1`).
    pub stream: u64,
}

/// One tensor of an optimizer step (`lion_optimizer_step`): which tensor of the handle, and
/// its parameters and gradients, each `len` elements of its type.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LionTensorUpdate {
    /// The tensor's id (from `lion_optimizer_add_tensor` or `lion_optimizer_tensor_id`).
    pub tensor: usize,
    /// The number of elements of `params` and `grads` (the tensor's length).
    pub len: usize,
    /// The parameters, updated in place.
    pub params: *mut core::ffi::c_void,
    /// The gradients.
    pub grads: *const core::ffi::c_void,
    /// The parameters' type (F32, F16, BF16).
    pub params_dtype: DtypeArg,
    /// The gradients' type (F32, F16, BF16).
    pub grads_dtype: DtypeArg,
}

/// `struct_size` of each struct in this version (the values `_default()` sets).
pub(crate) const HYPERPARAMS_SIZE: u32 = core::mem::size_of::<LionHyperparams>() as u32;
pub(crate) const OPTIONS_SIZE: u32 = core::mem::size_of::<LionStepOptions>() as u32;
#[cfg(feature = "alloc")]
pub(crate) const SPEC_SIZE: u32 = core::mem::size_of::<LionTensorSpec>() as u32;

impl LionHyperparams {
    /// The defaults (those of the core).
    pub(crate) fn default_c() -> Self {
        Self::from_core(&Hyperparams::default())
    }

    pub(crate) fn from_core(hp: &Hyperparams) -> Self {
        Self {
            struct_size: HYPERPARAMS_SIZE,
            lr: hp.lr,
            beta1: hp.beta1,
            beta2: hp.beta2,
            weight_decay: hp.weight_decay,
        }
    }

    /// The core's hyperparameters (validated by the core when used).
    pub(crate) fn to_core(self) -> Hyperparams {
        Hyperparams {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            weight_decay: self.weight_decay,
        }
    }
}

/// What a `lion_step_options` says, in the core's terms: the options, and the per-tensor
/// fields a many-tensor step takes per update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Options {
    pub(crate) options: StepOptions,
    pub(crate) step: u64,
    pub(crate) offset: u64,
    pub(crate) stream: u64,
}

impl LionStepOptions {
    /// The defaults: the plain step.
    pub(crate) fn default_c() -> Self {
        Self {
            struct_size: OPTIONS_SIZE,
            maximize: 0,
            skip_non_finite: 0,
            rounding: RoundingArg(LionRounding::Nearest as i32),
            cautious: CautiousArg(LionCautious::Off as i32),
            grad_unscale: 0.0,
            max_lr: 0.0,
            seed: 0,
            step: 0,
            offset: 0,
            stream: 0,
            cautious_agreeing: 0,
            cautious_numel: 0,
        }
    }

    /// The options of a group of a handle, as C sees them.
    #[cfg(any(feature = "alloc", test))]
    pub(crate) fn from_core(o: &StepOptions) -> Self {
        let (rounding, seed) = match o.rounding {
            Rounding::Stochastic { seed } => (LionRounding::Stochastic, seed),
            _ => (LionRounding::Nearest, 0),
        };
        let (cautious, cautious_agreeing, cautious_numel) = match o.cautious {
            Cautious::Off => (LionCautious::Off, 0, 0),
            Cautious::Shard { agreeing, numel } => (LionCautious::Shard, agreeing, numel),
            _ => (LionCautious::Whole, 0, 0),
        };
        Self {
            maximize: o.maximize.into(),
            skip_non_finite: o.skip_non_finite.into(),
            rounding: RoundingArg(rounding as i32),
            cautious: CautiousArg(cautious as i32),
            grad_unscale: o.grad_unscale.unwrap_or(0.0),
            max_lr: match o.weight_decay {
                WeightDecay::FullyDecoupled { max_lr } => max_lr,
                _ => 0.0,
            },
            seed,
            cautious_agreeing,
            cautious_numel,
            ..Self::default_c()
        }
    }

    /// The core's options; every enum and flag checked (the values are validated by the core
    /// with the hyperparameters). Inlined, as the readers in `stateless.rs`.
    #[inline(always)]
    pub(crate) fn to_core(self) -> Result<Options, Failure> {
        let flag = |name: &'static str, v: i32| match v {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Failure::new(
                LionStatus::InvalidArgument,
                format_args!("lion_step_options.{name} is {v}: it must be 0 or 1"),
            )),
        };
        let rounding = match self.rounding.0 {
            0 => Rounding::Nearest,
            1 => Rounding::Stochastic { seed: self.seed },
            v => {
                return Err(Failure::new(
                    LionStatus::InvalidEnum,
                    format_args!(
                        "lion_step_options.rounding is {v}: not a lion_rounding \
                         (LION_ROUNDING_NEAREST = 0, LION_ROUNDING_STOCHASTIC = 1)"
                    ),
                ));
            }
        };
        let cautious = match self.cautious.0 {
            0 => Cautious::Off,
            1 => Cautious::Whole,
            2 => Cautious::Shard {
                agreeing: self.cautious_agreeing,
                numel: self.cautious_numel,
            },
            v => {
                return Err(Failure::new(
                    LionStatus::InvalidEnum,
                    format_args!(
                        "lion_step_options.cautious is {v}: not a lion_cautious \
                         (OFF = 0, WHOLE = 1, SHARD = 2)"
                    ),
                ));
            }
        };
        let options = StepOptions {
            maximize: flag("maximize", self.maximize)?,
            skip_non_finite: flag("skip_non_finite", self.skip_non_finite)?,
            // 0 (either sign) is "off"; anything else, NaN included, goes to the core's check.
            grad_unscale: (self.grad_unscale != 0.0).then_some(self.grad_unscale),
            weight_decay: if self.max_lr == 0.0 {
                WeightDecay::Paper
            } else {
                WeightDecay::FullyDecoupled {
                    max_lr: self.max_lr,
                }
            },
            rounding,
            cautious,
            step: self.step,
            offset: self.offset,
        };
        Ok(Options {
            options,
            step: self.step,
            offset: self.offset,
            stream: self.stream,
        })
    }
}

#[cfg(feature = "alloc")]
impl LionTensorSpec {
    pub(crate) fn default_c() -> Self {
        Self {
            struct_size: SPEC_SIZE,
            momentum_dtype: DtypeArg(LionDtype::F32 as i32),
            params_dtype: DtypeArg(LionDtype::Any as i32),
            has_stream: 0,
            len: 0,
            group: 0,
            name: core::ptr::null(),
            stream: 0,
        }
    }
}

/// Which buffer a pointer is, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Params,
    Grads,
    Momentum,
    Absmax,
}

impl Role {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Params => "params",
            Role::Grads => "grads",
            Role::Momentum => "momentum",
            Role::Absmax => "absmax",
        }
    }

    /// Whether a call writes this buffer.
    pub(crate) fn written(self) -> bool {
        self != Role::Grads
    }
}

/// A `lion_dtype` of parameters or gradients (F32, F16, BF16).
pub(crate) fn element_dtype(
    arg: DtypeArg,
    what: &dyn core::fmt::Display,
) -> Result<Dtype, Failure> {
    match arg.0 {
        0 => Ok(Dtype::F32),
        1 => Ok(Dtype::F16),
        2 => Ok(Dtype::Bf16),
        3 => Err(Failure::new(
            LionStatus::InvalidEnum,
            format_args!("{what} is LION_DTYPE_Q8: 8-bit is a momentum format only"),
        )),
        -1 => Err(Failure::new(
            LionStatus::InvalidEnum,
            format_args!("{what} is LION_DTYPE_ANY: a buffer must have a type"),
        )),
        v => Err(Failure::new(
            LionStatus::InvalidEnum,
            format_args!("{what} is {v}: not a lion_dtype (F32 = 0, F16 = 1, BF16 = 2)"),
        )),
    }
}

/// A momentum `lion_dtype`: an element type, or `None` for Q8.
pub(crate) fn momentum_dtype(
    arg: DtypeArg,
    what: &dyn core::fmt::Display,
) -> Result<Option<Dtype>, Failure> {
    match arg.0 {
        3 => Ok(None),
        v => element_dtype(DtypeArg(v), what).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_through_c() {
        for o in support::option_sets() {
            let c = LionStepOptions::from_core(&o);
            let back = LionStepOptions {
                step: o.step,
                offset: o.offset,
                ..c
            }
            .to_core()
            .unwrap();
            assert_eq!(back.options, o);
        }
        assert_eq!(
            LionStepOptions::default_c().to_core().unwrap().options,
            StepOptions::default()
        );
    }

    #[test]
    fn bad_enums_and_flags_are_refused() {
        let d = LionStepOptions::default_c();
        for bad in [
            LionStepOptions {
                rounding: RoundingArg(2),
                ..d
            },
            LionStepOptions {
                cautious: CautiousArg(-1),
                ..d
            },
        ] {
            assert_eq!(bad.to_core().unwrap_err().status, LionStatus::InvalidEnum);
        }
        let bad = LionStepOptions { maximize: 2, ..d };
        assert_eq!(
            bad.to_core().unwrap_err().status,
            LionStatus::InvalidArgument
        );
        for v in [3, -1, 4, i32::MIN, i32::MAX] {
            assert!(element_dtype(DtypeArg(v), &"x").is_err());
        }
        assert_eq!(momentum_dtype(DtypeArg(3), &"m").unwrap(), None);
    }
}

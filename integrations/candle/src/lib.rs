//! The [Lion optimizer](https://arxiv.org/abs/2302.06675) for [candle](https://github.com/huggingface/candle):
//! a [`candle_nn::Optimizer`] that updates every [`Var`](candle_core::Var) **in place** with
//! [`lion_optim`]'s fused, bit-exact step.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{Module, Optimizer, VarBuilder, VarMap};
//! use lion_optim_candle::{Lion, ParamsLion};
//!
//! let (dev, varmap) = (Device::Cpu, VarMap::new());
//! let model = candle_nn::linear(4, 1, VarBuilder::from_varmap(&varmap, DType::F32, &dev).pp("fc"))?;
//! let params = ParamsLion { lr: 1e-3, weight_decay: 0.1, ..Default::default() }.no_decay_for_biases_and_norms();
//! let mut opt = Lion::from_varmap(&varmap, params)?;
//!
//! let x = Tensor::ones((8, 4), DType::F32, &dev)?;
//! let loss = model.forward(&x)?.sqr()?.mean_all()?;
//! opt.backward_step(&loss)?;
//! # Ok::<(), candle_core::Error>(())
//! ```
//!
//! # What it does, and does not
//!
//! * **Lion math**: none here. A step checks every var and gradient, views the buffers as
//!   slices and makes **one** [`lion_optim::Lion::step`] call over all of them, so the core's
//!   parallel many-tensor step (rayon) applies to the whole model. The result is bit-identical
//!   to [`lion_optim::reference::step_with`] on every var (with 8-bit momentum, to
//!   [`lion_optim::reference::step_q8_with`]).
//! * **In place, zero-copy**: each var's storage is borrowed through candle's
//!   [`InplaceOp2`](candle_core::InplaceOp2) (`cpu_fwd` gives `&mut CpuStorage`); no tensor is
//!   allocated and [`Var::set`](candle_core::Var::set) is never called. candle gives one var's storage per in-place op,
//!   so the ops are nested: the op of var 0 runs the op of var 1 inside its `cpu_fwd`, and so on;
//!   the innermost one holds every var's slice and calls the core (see `Optimizer::step` in
//!   [`Lion`]'s trait implementations).
//! * **Momentum** is owned by the optimizer (by the core `Lion`), f32 by default, bf16 or f16
//!   on request ([`ParamsLion::momentum`], [`GroupRule::momentum`]), or 8-bit
//!   ([`ParamsLion::momentum_q8`], [`GroupRule::momentum_q8`]; see below).
//! * **dtypes**: f32, bf16 and f16 vars (non-float vars are skipped, as candle's AdamW does; f64
//!   vars are refused); gradients of any of the three.
//! * **Groups** by var name ([`GroupRule`]; [`ParamsLion::no_decay_for_biases_and_norms`]).
//! * **State**: [`Lion::save`] / [`Lion::load`] write and read the core's safetensors file,
//!   the momentum of var `name` as `"{name}.exp_avg"` (8-bit: `"{name}.exp_avg.codes"` and
//!   `"{name}.exp_avg.absmax"`), readable by `candle_core::safetensors::load` and Python's
//!   `safetensors`. A file is loaded only into an optimizer with the same vars, groups and
//!   momentum formats (a var whose momentum format differs is named in the error).
//! * **Refused, with an error naming the var, before anything is written**: a var or gradient
//!   on another device than the CPU, a non-contiguous var, an f64 var, a gradient whose shape
//!   or dtype does not fit. A non-contiguous gradient (or one that shares storage with a var) is
//!   read-only, so it is copied into a contiguous tensor first: that is the only copy a step
//!   can make.
//!
//! `set_learning_rate` cannot return an error (the trait's signature): an invalid rate is kept,
//! and the next step returns the error without writing anything.
//!
//! # 8-bit momentum
//!
//! [`ParamsLion::momentum_q8`] keeps the momentum in bitsandbytes' blockwise 8-bit format (as
//! its `Lion8bit`): one `u8` code per element into bitsandbytes' signed dynamic map
//! ([`lion_optim::Q8_MAP`]) and one f32 scale (`absmax`) per block of 256 elements, about 1.016
//! bytes per parameter instead of 4 (f32) or 2 (bf16). The core decodes, steps and re-encodes
//! each block in the same single pass; this crate only chooses the format
//! ([`lion_optim::MomentumDtype::Q8`]) when it registers a var. It applies to vars of any size
//! (bitsandbytes' `min_8bit_size` is not applied): keep small vars such as biases and norms in
//! float momentum with a group, or choose 8 bits for some groups only
//! ([`GroupRule::momentum_q8`]).
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{Module, Optimizer, VarBuilder, VarMap};
//! use lion_optim_candle::{GroupRule, Lion, ParamsLion};
//!
//! let (dev, varmap) = (Device::Cpu, VarMap::new());
//! let model = candle_nn::linear(512, 16, VarBuilder::from_varmap(&varmap, DType::F32, &dev).pp("fc"))?;
//! let params = ParamsLion { lr: 1e-3, weight_decay: 0.1, momentum_q8: true, ..Default::default() }
//!     .with_group(GroupRule::biases_and_norms().momentum(DType::F32)); // no decay, f32 momentum
//! let mut opt = Lion::from_varmap(&varmap, params)?;
//!
//! let x = Tensor::ones((8, 512), DType::F32, &dev)?;
//! opt.backward_step(&model.forward(&x)?.sqr()?.mean_all()?)?;
//! let core = opt.core();
//! let momentum = |name| core.momentum(core.tensor_id(name).unwrap()).unwrap();
//! assert_eq!(momentum("fc.weight").dtype(), lion_optim::MomentumDtype::Q8); // 8192 + 32 * 4 bytes
//! assert_eq!(momentum("fc.bias").dtype(), lion_optim::MomentumDtype::F32);
//! # Ok::<(), candle_core::Error>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

// params: the settings and the group rules; optimizer: `Lion` (its vars and groups, state files,
// the `candle_nn::Optimizer` implementation); step: one step (the gradients checked, the vars'
// in-place ops nested around one core step).
mod optimizer;
mod params;
mod step;

use candle_core::DType;
use lion_optim::{Buffer, Dtype};

pub use optimizer::Lion;
pub use params::{GroupRule, ParamsLion, is_bias_or_norm};

/// The optimizer state type of the core, as this crate uses it.
pub type Core = lion_optim::Lion<Vec<Buffer>>;

/// A `lion_optim::Error` as a candle error (with the tensor names the core knows).
fn core_error(core: &Core, what: &str, e: &lion_optim::Error) -> candle_core::Error {
    candle_core::Error::msg(format!("lion-optim: {what}: {}", core.describe(e)))
}

fn core_dtype(dtype: DType) -> Option<Dtype> {
    match dtype {
        DType::F32 => Some(Dtype::F32),
        DType::BF16 => Some(Dtype::Bf16),
        DType::F16 => Some(Dtype::F16),
        _ => None,
    }
}

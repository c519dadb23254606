//! One step of [`Lion`]: every gradient checked, then the vars' in-place ops nested so that
//! the innermost one holds every var's storage and makes one core step over all of them.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::ops::Range;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp2, Layout, Result, Tensor, bail};
use lion_optim::{SliceMut, SliceRef};

use crate::optimizer::{Entry, storage_key};
use crate::{Core, Lion, core_dtype, core_error};

impl Lion {
    /// The step of `candle_nn::Optimizer::step` (see its docs in `optimizer.rs`).
    pub(crate) fn step_impl(&mut self, grads: &GradStore) -> Result<()> {
        if let Some(e) = &self.bad_lr {
            bail!("{e}")
        }
        let mut items = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let Some(grad) = grads.get(e.var.as_tensor()) else {
                continue; // no gradient this step: the var is left alone
            };
            // The var itself was checked by `new`: a Var's device, dtype and layout never
            // change (the in-place op checks its layout again).
            let label = e.label();
            if !grad.device().is_cpu() {
                bail!(
                    "lion-optim-candle: the gradient of {label} is on {:?}: only the CPU is supported",
                    grad.device().location()
                )
            }
            if grad.dims() != e.var.dims() {
                bail!(
                    "lion-optim-candle: the gradient of {label} has shape {:?}, the var {:?}",
                    grad.dims(),
                    e.var.dims()
                )
            }
            if core_dtype(grad.dtype()).is_none() {
                bail!(
                    "lion-optim-candle: the gradient of {label} has dtype {:?}: it must be f32, \
                     bf16 or f16",
                    grad.dtype()
                )
            }
            // Gradients are read-only: a strided one, or one that shares storage with a var
            // (whose write lock the nested ops hold), is read from a contiguous copy.
            let grad = if !grad.is_contiguous() {
                grad.contiguous()?
            } else if self.var_keys.binary_search(&storage_key(grad)).is_ok() {
                grad.copy()?
            } else {
                grad.clone()
            };
            items.push(Item { entry: e, grad });
        }
        let core = &mut self.core;
        if items.len() <= NEST_ON_CALLER {
            return nest(&items, core);
        }
        // Each nested op takes about 1.5 KiB of stack: a model with many vars nests on a
        // thread of its own with a stack to fit (the caller's may be a 2 MiB thread's).
        let stack = (1 << 20) + items.len() * NEST_STACK_PER_VAR;
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("lion-optim-candle step".into())
                .stack_size(stack)
                .spawn_scoped(scope, || nest(&items, core))
                .map_err(|e| {
                    candle_core::Error::msg(format!(
                        "lion-optim-candle: cannot start the step's thread: {e}"
                    ))
                })?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

/// Up to this many vars, the ops nest on the caller's stack (at most about 400 KiB).
const NEST_ON_CALLER: usize = 256;
/// Stack reserved per var when the ops nest on a thread of their own (measured: 1.0-1.5 KiB).
const NEST_STACK_PER_VAR: usize = 4 << 10;

/// The step over checked items: the nested in-place ops, then one core step.
fn nest(items: &[Item<'_>], core: &mut Core) -> Result<()> {
    let core = RefCell::new(core);
    descend(items, 0, Vec::with_capacity(items.len()), &core)
}

/// One var of a step and its (contiguous, distinct) gradient.
struct Item<'v> {
    entry: &'v Entry,
    grad: Tensor,
}

/// The in-place op of var `at`: adds its slices to those of the vars before it and runs the op
/// of the next var inside its own `cpu_fwd` (so that every var's storage stays borrowed), the
/// last one calling the core.
struct Link<'s, 'a, 'c> {
    items: &'s [Item<'s>],
    at: usize,
    views: Cell<Option<Vec<lion_optim::Tensor<'a>>>>,
    core: &'s RefCell<&'c mut Core>,
}

fn descend<'a>(
    items: &[Item<'_>],
    at: usize,
    mut views: Vec<lion_optim::Tensor<'a>>,
    core: &RefCell<&mut Core>,
) -> Result<()> {
    let Some(item) = items.get(at) else {
        let mut core = core.borrow_mut();
        return match core.step(&mut views) {
            Ok(_) => Ok(()),
            Err(e) => Err(core_error(&core, "step", &e)),
        };
    };
    let link = Link {
        items,
        at,
        views: Cell::new(Some(views)),
        core,
    };
    item.entry.var.inplace_op2(&item.grad, &link)
}

/// The slice of a var's storage that its layout covers.
fn view_mut<'s>(
    s: &'s mut CpuStorage,
    l: &Layout,
    what: &dyn fmt::Display,
) -> Result<SliceMut<'s>> {
    let range = offsets(l, what)?;
    let slice = match s {
        CpuStorage::F32(v) => v.get_mut(range).map(SliceMut::F32),
        CpuStorage::BF16(v) => v.get_mut(range).map(SliceMut::Bf16),
        CpuStorage::F16(v) => v.get_mut(range).map(SliceMut::F16),
        _ => bail!("lion-optim-candle: {what}: unsupported storage dtype"),
    };
    slice.ok_or_else(|| outside(what))
}

/// The slice of a gradient's storage that its layout covers.
fn view<'s>(s: &'s CpuStorage, l: &Layout, what: &dyn fmt::Display) -> Result<SliceRef<'s>> {
    let range = offsets(l, what)?;
    let slice = match s {
        CpuStorage::F32(v) => v.get(range).map(SliceRef::F32),
        CpuStorage::BF16(v) => v.get(range).map(SliceRef::Bf16),
        CpuStorage::F16(v) => v.get(range).map(SliceRef::F16),
        _ => bail!("lion-optim-candle: {what}: unsupported storage dtype"),
    };
    slice.ok_or_else(|| outside(what))
}

/// The storage range of a contiguous layout (`what` names the tensor in the error).
fn offsets(l: &Layout, what: &dyn fmt::Display) -> Result<Range<usize>> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(start..end),
        None => bail!("lion-optim-candle: {what} is not contiguous"),
    }
}

fn outside(what: &dyn fmt::Display) -> candle_core::Error {
    candle_core::Error::msg(format!(
        "lion-optim-candle: {what}: layout outside its storage"
    ))
}

impl InplaceOp2 for Link<'_, '_, '_> {
    fn name(&self) -> &'static str {
        "lion-optim"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let item = &self.items[self.at];
        let Some(views) = self.views.take() else {
            bail!(
                "lion-optim-candle: the in-place op of {} ran twice",
                item.entry.label()
            )
        };
        let label = item.entry.label();
        let params = view_mut(s1, l1, &label)?;
        let grads = view(s2, l2, &format_args!("the gradient of {label}"))?;
        // The views so far live longer than this var's borrow: shorten them (covariance).
        let mut views: Vec<lion_optim::Tensor<'_>> = views;
        views.push(lion_optim::Tensor::from_slices(params, grads).of(item.entry.id));
        descend(self.items, self.at + 1, views, self.core)
    }
}

//! The optimizer handle (`lion_optimizer`, feature `alloc`): a `lion::Lion` that owns its
//! momentum, behind an opaque pointer. Parameter groups, named tensors, one step over many
//! tensors (spread over rayon's thread pool with the `rayon` feature), a learning-rate scale,
//! and the state in both formats.
//!
//! A handle is used by one thread at a time; a second thread that calls in while a call is
//! running gets LION_STATUS_BUSY (a reader/writer try-lock in the handle), never a data race.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::ffi::{CStr, c_char};
use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};

use lion::{
    Buffer, Dtype, Error, Group, GroupId, Lion, MomentumDtype, SliceMut, SliceRef, Tensor,
    TensorId, TensorSpec,
};

use crate::stateless::{check_ptr, read_hp, read_options};
use crate::status::{Failure, LionStatus, Outcome, guard};
use crate::types::{
    LionHyperparams, LionStepOptions, LionTensorSpec, LionTensorUpdate, Options, Role, SPEC_SIZE,
    element_dtype, momentum_dtype,
};
use crate::view::{Span, check, check_dtype, overlap, raw_mut, raw_ref, slice_mut, slice_ref};

/// An optimizer for a whole model (opaque): parameter groups, one momentum buffer per tensor,
/// one step count. Create with `lion_optimizer_create`, free with `lion_optimizer_destroy`.
pub struct LionOptimizer {
    /// 0: free; `WRITER`: a call that changes the optimizer; n > 0: n calls that read it.
    lock: AtomicUsize,
    opt: UnsafeCell<Lion<Vec<Buffer>>>,
}

const WRITER: usize = 1 << (usize::BITS - 1);

/// A call's access to the optimizer (shared, or exclusive if `WRITE`), released when dropped.
struct Access<'a, const WRITE: bool> {
    handle: &'a LionOptimizer,
}

impl<const WRITE: bool> Drop for Access<'_, WRITE> {
    fn drop(&mut self) {
        let release = if WRITE { WRITER } else { 1 };
        self.handle.lock.fetch_sub(release, Ordering::Release);
    }
}

impl<const WRITE: bool> core::ops::Deref for Access<'_, WRITE> {
    type Target = Lion<Vec<Buffer>>;
    fn deref(&self) -> &Self::Target {
        // SAFETY: this access holds the lock (shared or exclusive): no `&mut` to the optimizer
        // exists while it lives, except through `deref_mut` of the one exclusive access.
        unsafe { &*self.handle.opt.get() }
    }
}

impl core::ops::DerefMut for Access<'_, true> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        // SAFETY: the lock is held exclusively (0 -> WRITER) while this access lives, and the
        // reference borrows the access mutably: it is the only reference to the optimizer.
        unsafe { &mut *self.handle.opt.get() }
    }
}

fn busy() -> Failure {
    Failure::new(
        LionStatus::Busy,
        format_args!(
            "the optimizer is in use by another thread (a handle is used by one thread at a time)"
        ),
    )
}

impl LionOptimizer {
    /// Exclusive access for a call that changes the optimizer.
    fn write(&self) -> Result<Access<'_, true>, Failure> {
        self.lock
            .compare_exchange(0, WRITER, Ordering::Acquire, Ordering::Relaxed)
            .map_err(|_| busy())?;
        Ok(Access { handle: self })
    }

    /// Shared access for a call that reads the optimizer.
    fn read(&self) -> Result<Access<'_, false>, Failure> {
        let before = self.lock.fetch_add(1, Ordering::Acquire);
        // (Dropped on failure: undoes the increment.) While the count is above 0 no writer can
        // take the lock: its compare-exchange from 0 fails.
        let access = Access { handle: self };
        if before & WRITER != 0 {
            return Err(busy());
        }
        Ok(access)
    }
}

/// The handle behind `ptr`.
///
/// # Safety
/// `ptr` is NULL or a handle from `lion_optimizer_create` not yet destroyed.
unsafe fn handle<'a>(ptr: *const LionOptimizer) -> Result<&'a LionOptimizer, Failure> {
    if ptr.is_null() {
        return Err(Failure::new(
            LionStatus::NullPointer,
            format_args!("the optimizer is NULL"),
        ));
    }
    if !ptr.is_aligned() {
        return Err(Failure::new(
            LionStatus::Misaligned,
            format_args!("the optimizer pointer {ptr:p} is not a handle (misaligned)"),
        ));
    }
    // SAFETY: a live handle (the function's contract); shared: every change goes through the
    // handle's lock and UnsafeCell.
    Ok(unsafe { &*ptr })
}

/// An output pointer the caller may leave NULL (no output): `None`, or the pointer checked.
fn optional_out<T>(p: *mut T, name: &str) -> Result<Option<*mut T>, Failure> {
    if p.is_null() {
        return Ok(None);
    }
    check_ptr(p, name).map(|()| Some(p))
}

/// A core error of `opt`, with the names of the tensors it mentions (`Lion::describe`).
fn described(opt: &Lion<Vec<Buffer>>, e: &Error) -> Failure {
    Failure::core(e, &opt.describe(e))
}

/// A group as the core takes it: hyperparameters and options (a group's options have no
/// step, offset or stream: the optimizer sets them).
fn group_of(hp: lion::Hyperparams, o: Options) -> Result<Group, Failure> {
    for (name, v) in [("step", o.step), ("offset", o.offset), ("stream", o.stream)] {
        if v != 0 {
            return Err(Failure::new(
                LionStatus::InvalidArgument,
                format_args!(
                    "lion_step_options.{name} is {v}: a group's options leave it 0 (the \
                     optimizer counts steps; each tensor has its stream, see lion_tensor_spec)"
                ),
            ));
        }
    }
    Ok(Group::new(hp).with_options(o.options))
}

/// Reads the group settings of a call (NULL: the defaults).
///
/// # Safety
/// As `read_hp` and `read_options`.
unsafe fn read_group(
    hp: *const LionHyperparams,
    options: *const LionStepOptions,
) -> Result<Group, Failure> {
    // SAFETY: the function's contract.
    let (hp, o) = unsafe { (read_hp(hp)?, read_options(options)?) };
    group_of(hp, o)
}

/// Creates an optimizer with one parameter group (group 0) of these settings (NULL: the
/// defaults); writes the handle to `*out`. Free it with `lion_optimizer_destroy`.
///
/// A group's options must leave `step`, `offset` and `stream` at 0, and cannot be a cautious
/// shard.
///
/// # Safety
/// `hp` and `options` as in `lion_step`; `out` points to a writable `lion_optimizer *`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lion_optimizer_create(
    hp: *const LionHyperparams,
    options: *const LionStepOptions,
    out: *mut *mut LionOptimizer,
) -> LionStatus {
    guard("lion_optimizer_create", || {
        check_ptr(out, "out")?;
        // SAFETY: the function's contract.
        let group = unsafe { read_group(hp, options) }?;
        let mut opt = Lion::new(group.hp).map_err(|e| Failure::plain(&e))?;
        opt.set_group(GroupId::DEFAULT, group)
            .map_err(|e| Failure::plain(&e))?;
        let handle = Box::new(LionOptimizer {
            lock: AtomicUsize::new(0),
            opt: UnsafeCell::new(opt),
        });
        // SAFETY: checked non-null and aligned; writable by the function's contract.
        unsafe { out.write(Box::into_raw(handle)) };
        Ok(LionStatus::Ok)
    })
}

/// Frees an optimizer and its state (NULL: nothing). The handle must not be used afterwards,
/// nor by another thread during the call.
///
/// # Safety
/// `opt` is NULL or a handle from `lion_optimizer_create` not yet destroyed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lion_optimizer_destroy(opt: *mut LionOptimizer) {
    if opt.is_null() || !opt.is_aligned() {
        return;
    }
    // SAFETY: a handle from `lion_optimizer_create` (Box::into_raw), destroyed once (the
    // function's contract).
    let handle = unsafe { Box::from_raw(opt) };
    #[cfg(feature = "std")]
    let _ = std::panic::catch_unwind(core::panic::AssertUnwindSafe(move || drop(handle)));
    #[cfg(not(feature = "std"))]
    drop(handle);
}

/// Adds a parameter group with these settings (NULL: the defaults); writes its id to `*group`.
///
/// # Safety
/// `opt` is a live handle; `hp`, `options` as in `lion_step`; `group` points to a `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lion_optimizer_add_group(
    opt: *mut LionOptimizer,
    hp: *const LionHyperparams,
    options: *const LionStepOptions,
    group: *mut usize,
) -> LionStatus {
    guard("lion_optimizer_add_group", || {
        // SAFETY: the function's contract.
        let h = unsafe { handle(opt) }?;
        check_ptr(group, "group")?;
        // SAFETY: the function's contract.
        let settings = unsafe { read_group(hp, options) }?;
        let mut opt = h.write()?;
        let id = opt.add_group(settings).map_err(|e| Failure::plain(&e))?;
        // SAFETY: checked non-null and aligned; writable by the function's contract.
        unsafe { group.write(id.index()) };
        Ok(LionStatus::Ok)
    })
}

/// Replaces the settings of group `group` (NULL: the defaults), from the next step on: e.g.
/// another learning rate for one group. Invalid settings change nothing.
///
/// # Safety
/// `opt` is a live handle; `hp`, `options` as in `lion_step`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lion_optimizer_set_group(
    opt: *mut LionOptimizer,
    group: usize,
    hp: *const LionHyperparams,
    options: *const LionStepOptions,
) -> LionStatus {
    guard("lion_optimizer_set_group", || {
        // SAFETY: the function's contract.
        let h = unsafe { handle(opt) }?;
        // SAFETY: the function's contract.
        let settings = unsafe { read_group(hp, options) }?;
        let mut opt = h.write()?;
        opt.set_group(GroupId::new(group), settings)
            .map_err(|e| Failure::plain(&e))?;
        Ok(LionStatus::Ok)
    })
}

/// The settings of group `group`: writes them to `*hp` and `*options` (either may be NULL).
///
/// # Safety
/// `opt` is a live handle; `hp` and `options` are NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lion_optimizer_get_group(
    opt: *const LionOptimizer,
    group: usize,
    hp: *mut LionHyperparams,
    options: *mut LionStepOptions,
) -> LionStatus {
    guard("lion_optimizer_get_group", || {
        // SAFETY: the function's contract.
        let h = unsafe { handle(opt) }?;
        let (hp, options) = (optional_out(hp, "hp")?, optional_out(options, "options")?);
        let opt = h.read()?;
        let g = opt
            .group(GroupId::new(group))
            .map_err(|e| Failure::plain(&e))?;
        // SAFETY (both writes): checked non-null and aligned; writable by the function's contract.
        if let Some(p) = hp {
            unsafe { p.write(LionHyperparams::from_core(&g.hp)) };
        }
        if let Some(p) = options {
            unsafe { p.write(LionStepOptions::from_core(&g.options)) };
        }
        Ok(LionStatus::Ok)
    })
}

/// The default tensor spec (f32 momentum, parameters of any type, no name, group 0, its index
/// as its stream), with `struct_size` set. Start every `lion_tensor_spec` from this.
#[unsafe(no_mangle)]
pub extern "C" fn lion_tensor_spec_default() -> LionTensorSpec {
    LionTensorSpec::default_c()
}

/// Adds a tensor as `spec` describes, with zero momentum; writes its id to `*tensor` (ids are
/// 0, 1, 2, ... in the order tensors are added). The momentum is F32, F16, BF16 or Q8 (8-bit
/// blocks of 256 with a float scale each, as `lion_step_q8`; both checkpoint formats store it).
/// An unknown group, a name another tensor has or a name that is not UTF-8 is an error, and
/// nothing changes.
///
/// # Safety
/// `opt` is a live handle; `spec` points to a `lion_tensor_spec` initialized with
/// `lion_tensor_spec_default()`, whose `name` is NULL or a NUL-terminated string; `tensor`
/// points to a `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lion_optimizer_add_tensor(
    opt: *mut LionOptimizer,
    spec: *const LionTensorSpec,
    tensor: *mut usize,
) -> LionStatus {
    guard("lion_optimizer_add_tensor", || {
        // SAFETY: the function's contract.
        let h = unsafe { handle(opt) }?;
        check_ptr(tensor, "tensor")?;
        check_ptr(spec.cast_mut(), "spec")?;
        // SAFETY: non-null, aligned; its first field is readable (the function's contract).
        let size = unsafe { spec.cast::<u32>().read() };
        if size != SPEC_SIZE {
            return Err(Failure::new(
                LionStatus::InvalidArgument,
                format_args!(
                    "lion_tensor_spec.struct_size is {size}, this library's has {SPEC_SIZE} \
                     bytes: initialize it with lion_tensor_spec_default()"
                ),
            ));
        }
        // SAFETY: a whole lion_tensor_spec (its size says so); every field is an integer or a
        // pointer, valid with any bits.
        let spec = unsafe { spec.read() };
        let momentum = match momentum_dtype(spec.momentum_dtype, &"spec.momentum_dtype")? {
            Some(d) => MomentumDtype::from(d),
            None => MomentumDtype::Q8,
        };
        let params = match spec.params_dtype.0 {
            -1 => None,
            _ => Some(element_dtype(spec.params_dtype, &"spec.params_dtype")?),
        };
        let stream = match spec.has_stream {
            0 => None,
            1 => Some(spec.stream),
            v => {
                return Err(Failure::new(
                    LionStatus::InvalidArgument,
                    format_args!("spec.has_stream is {v}: it must be 0 or 1"),
                ));
            }
        };
        let name = if spec.name.is_null() {
            None
        } else {
            // SAFETY: a NUL-terminated string (the function's contract); only read here.
            let name = unsafe { CStr::from_ptr(spec.name) };
            Some(name.to_str().map_err(|_| {
                Failure::new(
                    LionStatus::InvalidArgument,
                    format_args!("spec.name is not UTF-8: {name:?}"),
                )
            })?)
        };
        let mut t = TensorSpec::new(spec.len)
            .momentum(momentum)
            .group(GroupId::new(spec.group));
        if let Some(d) = params {
            t = t.params(d);
        }
        if let Some(n) = name {
            t = t.name(n);
        }
        if let Some(s) = stream {
            t = t.stream(s);
        }
        let mut opt = h.write()?;
        let id = opt.add(t).map_err(|e| described(&opt, &e))?;
        // SAFETY: checked non-null and aligned; writable by the function's contract.
        unsafe { tensor.write(id.index()) };
        Ok(LionStatus::Ok)
    })
}

/// The id of the tensor added with this name (NUL-terminated) in `*tensor`, or
/// LION_STATUS_NO_SUCH_TENSOR.
///
/// # Safety
/// `opt` is a live handle; `name` is a NUL-terminated string; `tensor` points to a `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lion_optimizer_tensor_id(
    opt: *const LionOptimizer,
    name: *const c_char,
    tensor: *mut usize,
) -> LionStatus {
    guard("lion_optimizer_tensor_id", || {
        // SAFETY: the function's contract.
        let h = unsafe { handle(opt) }?;
        check_ptr(tensor, "tensor")?;
        check_ptr(name.cast_mut(), "name")?; // (a char: never misaligned)
        // SAFETY: a NUL-terminated string (the function's contract).
        let name = unsafe { CStr::from_ptr(name) };
        let opt = h.read()?;
        let id = name.to_str().ok().and_then(|n| opt.tensor_id(n));
        let Some(id) = id else {
            return Err(Failure::new(
                LionStatus::NoSuchTensor,
                format_args!("no tensor is named {name:?}"),
            ));
        };
        // SAFETY: checked non-null and aligned; writable by the function's contract.
        unsafe { tensor.write(id.index()) };
        Ok(LionStatus::Ok)
    })
}

/// Counts of the optimizer, each written where the pointer is not NULL: `tensors`, `groups`,
/// `steps` (applied steps), `skipped` (steps skipped for non-finite gradients).
///
/// # Safety
/// `opt` is a live handle; each pointer is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lion_optimizer_counts(
    opt: *const LionOptimizer,
    tensors: *mut usize,
    groups: *mut usize,
    steps: *mut u64,
    skipped: *mut u64,
) -> LionStatus {
    guard("lion_optimizer_counts", || {
        // SAFETY: the function's contract.
        let h = unsafe { handle(opt) }?;
        let outs = (
            optional_out(tensors, "tensors")?,
            optional_out(groups, "groups")?,
            optional_out(steps, "steps")?,
            optional_out(skipped, "skipped")?,
        );
        let opt = h.read()?;
        // SAFETY (each write): checked non-null and aligned; writable by the contract.
        if let Some(p) = outs.0 {
            unsafe { p.write(opt.tensor_count()) };
        }
        if let Some(p) = outs.1 {
            unsafe { p.write(opt.group_count()) };
        }
        if let Some(p) = outs.2 {
            unsafe { p.write(opt.steps()) };
        }
        if let Some(p) = outs.3 {
            unsafe { p.write(opt.skipped_steps()) };
        }
        Ok(LionStatus::Ok)
    })
}

/// Scales every group's learning rate by `scale` (finite, >= 0) from the next step on: a
/// schedule's factor (warm-up, cosine). Replaces the previous scale. Default 1.
///
/// # Safety
/// `opt` is a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lion_optimizer_set_lr_scale(
    opt: *mut LionOptimizer,
    scale: f64,
) -> LionStatus {
    guard("lion_optimizer_set_lr_scale", || {
        // SAFETY: the function's contract.
        let h = unsafe { handle(opt) }?;
        let mut opt = h.write()?;
        opt.set_lr_scale(scale).map_err(|e| Failure::plain(&e))?;
        Ok(LionStatus::Ok)
    })
}

/// A tensor of a step and its message label.
struct Label<'a> {
    opt: &'a Lion<Vec<Buffer>>,
    tensor: usize,
    role: Role,
}

impl fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.opt.tensor(self.tensor).ok().and_then(|t| t.name);
        match name {
            Some(n) => write!(f, "tensor {} ({n:?}): {}", self.tensor, self.role.name()),
            None => write!(f, "tensor {}: {}", self.tensor, self.role.name()),
        }
    }
}

/// One step over the tensors in `tensors[0..count]`, in one call: each is one of the
/// optimizer's tensors (by id; any subset, in any order: tensors without a gradient this step
/// are not passed), with its parameters (updated in place) and gradients. With threads (the
/// `rayon` feature) the whole model is spread over the thread pool (large tensors cut into
/// blocks, small ones batched), bit-identically. All or nothing: every tensor is checked first
/// (pointers, types, lengths against the tensor's, no tensor twice, no buffer overlapping a
/// written one); on error nothing is written and the step count does not change.
///
/// Returns LION_STATUS_SKIPPED_NON_FINITE (nothing written, counted as skipped) if a tensor
/// whose group sets `skip_non_finite` has a non-finite gradient.
///
/// # Safety
/// `opt` is a live handle; `tensors` is NULL (with `count == 0`) or points to `count`
/// `lion_tensor_update`s whose buffers are as in `lion_step`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lion_optimizer_step(
    opt: *mut LionOptimizer,
    tensors: *const LionTensorUpdate,
    count: usize,
) -> LionStatus {
    guard("lion_optimizer_step", || {
        // SAFETY: the function's contract.
        let h = unsafe { handle(opt) }?;
        let size = size_of::<LionTensorUpdate>();
        let align = align_of::<LionTensorUpdate>();
        check(tensors.cast(), count, size, align, &"tensors")?;
        // SAFETY: checked for `count` updates; readable for the call (the contract).
        let updates = unsafe { raw_ref::<LionTensorUpdate>(tensors.cast(), count) };
        let mut opt = h.write()?;
        step(&mut opt, updates)
    })
}

/// The body of `lion_optimizer_step`.
fn step(opt: &mut Lion<Vec<Buffer>>, updates: &[LionTensorUpdate]) -> Outcome {
    let tensor_count = opt.tensor_count();
    let mut spans = Vec::with_capacity(2 * updates.len());
    let mut dtypes: Vec<(Dtype, Dtype)> = Vec::with_capacity(updates.len());
    for (position, u) in updates.iter().enumerate() {
        if u.tensor >= tensor_count {
            let e = Error::NoSuchTensor {
                index: u.tensor,
                count: tensor_count,
            };
            return Err(Failure::new(
                LionStatus::NoSuchTensor,
                format_args!("tensors[{position}]: {e}"),
            ));
        }
        let label = |role| Label {
            opt,
            tensor: u.tensor,
            role,
        };
        let pd = element_dtype(u.params_dtype, &WithLabel(label(Role::Params), "dtype"))?;
        let gd = element_dtype(u.grads_dtype, &WithLabel(label(Role::Grads), "dtype"))?;
        let p = check_dtype(u.params, u.len, pd, &label(Role::Params))?;
        let g = check_dtype(u.grads, u.len, gd, &label(Role::Grads))?;
        for (range, role) in [(p, Role::Params), (g, Role::Grads)] {
            spans.push(Span {
                start: range.0,
                end: range.1,
                written: role.written(),
                who: 2 * position + usize::from(role == Role::Grads),
            });
        }
        dtypes.push((pd, gd));
    }
    overlap(&mut spans).map_err(|(a, b)| {
        let role = |who: usize| {
            if who.is_multiple_of(2) {
                Role::Params
            } else {
                Role::Grads
            }
        };
        let at = |who: usize| Label {
            opt,
            tensor: updates[who / 2].tensor,
            role: role(who),
        };
        Failure::new(
            LionStatus::Overlap,
            format_args!(
                "{} overlaps {} in memory (a buffer a step writes must not share memory \
                 with another buffer of the step)",
                at(a),
                at(b)
            ),
        )
    })?;
    let mut tensors: Vec<Tensor<'_>> = updates
        .iter()
        .zip(&dtypes)
        .map(|(u, &(pd, gd))| {
            // SAFETY: `params` and `grads` were checked for `len` elements of their dtypes,
            // and no written buffer overlaps another buffer of the step; valid and unshared
            // for the call by the contract of `lion_optimizer_step`.
            let (p, g): (SliceMut<'_>, SliceRef<'_>) = unsafe {
                (
                    slice_mut(u.params, u.len, pd),
                    slice_ref(u.grads, u.len, gd),
                )
            };
            Tensor::from_slices(p, g).of(TensorId::new(u.tensor))
        })
        .collect();
    match opt.step(&mut tensors) {
        Ok(lion::Outcome::Applied) => Ok(LionStatus::Ok),
        Ok(_) => Ok(LionStatus::SkippedNonFinite),
        Err(e) => {
            drop(tensors);
            Err(described(opt, &e))
        }
    }
}

/// A label with a suffix ("tensor 3 (\"wte\"): params dtype").
struct WithLabel<'a>(Label<'a>, &'static str);

impl fmt::Display for WithLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

/// The size of the compact checkpoint (`lion_optimizer_save_state`), in `*size`.
///
/// # Safety
/// `opt` is a live handle; `size` points to a `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lion_optimizer_state_size(
    opt: *const LionOptimizer,
    size: *mut usize,
) -> LionStatus {
    guard("lion_optimizer_state_size", || {
        // SAFETY: the function's contract.
        let h = unsafe { handle(opt) }?;
        check_ptr(size, "size")?;
        let opt = h.read()?;
        // SAFETY: checked non-null and aligned; writable by the function's contract.
        unsafe { size.write(opt.state_len()) };
        Ok(LionStatus::Ok)
    })
}

/// Saves the compact checkpoint (the step and skipped counts, the lr scale, every group's
/// settings, every tensor's name, types, group, stream and momentum, a CRC-32C) into
/// `buf[0..cap]`; `*size` gets its size (`lion_optimizer_state_size`) — also when `cap` is too
/// small (LION_STATUS_BUFFER_TOO_SMALL, nothing written to `buf`). `buf = NULL, cap = 0`: only
/// the size (LION_STATUS_OK). No allocation.
///
/// # Safety
/// `opt` is a live handle; `buf` is NULL (with `cap == 0`) or points to `cap` writable bytes
/// that are not the handle's; `size` points to a `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lion_optimizer_save_state(
    opt: *const LionOptimizer,
    buf: *mut u8,
    cap: usize,
    size: *mut usize,
) -> LionStatus {
    guard("lion_optimizer_save_state", || {
        // SAFETY: the function's contract.
        let opt = unsafe { saving(opt, buf, cap, size) }?.read()?;
        // SAFETY: `size` and `buf` checked; writable and unshared by the function's contract.
        unsafe {
            write_sized(buf, cap, size, opt.state_len(), |out| {
                opt.save_state(out).map_err(|e| Failure::plain(&e))?;
                Ok(())
            })
        }
    })
}

/// The handle of a call that saves a file into `buf[0..cap]` and its size into `*size`, with
/// `size` and `buf` checked.
///
/// # Safety
/// `opt` is NULL or a live handle.
unsafe fn saving<'a>(
    opt: *const LionOptimizer,
    buf: *mut u8,
    cap: usize,
    size: *mut usize,
) -> Result<&'a LionOptimizer, Failure> {
    // SAFETY: the function's contract.
    let h = unsafe { handle(opt) }?;
    check_ptr(size, "size")?;
    check(buf.cast_const().cast(), cap, 1, 1, &"buf")?;
    Ok(h)
}

/// The end of a call that saves a file of `len` bytes into `buf[0..cap]`: `*size` gets `len`;
/// then a size query (`buf` NULL) is done, a `cap` under `len` is LION_STATUS_BUFFER_TOO_SMALL
/// (nothing written to `buf`), and otherwise `write` writes the file into `buf[0..cap]`.
///
/// # Safety
/// `size` passed [`check_ptr`] and `buf` [`check`] for `cap` bytes; both are writable and
/// unshared for the call.
unsafe fn write_sized(
    buf: *mut u8,
    cap: usize,
    size: *mut usize,
    len: usize,
    write: impl FnOnce(&mut [u8]) -> Result<(), Failure>,
) -> Outcome {
    // SAFETY: checked non-null and aligned; writable by the function's contract.
    unsafe { size.write(len) };
    if buf.is_null() {
        return Ok(LionStatus::Ok); // a size query
    }
    if cap < len {
        return Err(Failure::plain(&Error::BufferTooSmall {
            needed: len,
            available: cap,
        }));
    }
    // SAFETY: checked for `cap` bytes; writable and unshared for the call (the contract).
    write(unsafe { raw_mut::<u8>(buf.cast(), cap) })?;
    Ok(LionStatus::Ok)
}

/// The handle and the file of a call that loads a state file from `buf[0..len]`.
///
/// # Safety
/// `opt` is NULL or a live handle; `buf` is NULL (with `len == 0`) or points to `len` bytes
/// readable for the call.
unsafe fn loading<'a>(
    opt: *const LionOptimizer,
    buf: *const u8,
    len: usize,
) -> Result<(&'a LionOptimizer, &'a [u8]), Failure> {
    // SAFETY: the function's contract.
    let h = unsafe { handle(opt) }?;
    check(buf.cast(), len, 1, 1, &"buf")?;
    // SAFETY: checked for `len` bytes; readable for the call (the function's contract).
    Ok((h, unsafe { raw_ref::<u8>(buf.cast(), len) }))
}

/// Loads a compact checkpoint (`lion_optimizer_save_state`, also the previous format version)
/// into an optimizer with the same groups and tensors (matched by name; unnamed ones by
/// position). A truncated, damaged or foreign checkpoint is LION_STATUS_BAD_CHECKPOINT and the
/// optimizer is unchanged. A run resumed from it gives the bytes of an uninterrupted one.
///
/// # Safety
/// `opt` is a live handle; `buf` is NULL (with `len == 0`) or points to `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lion_optimizer_load_state(
    opt: *mut LionOptimizer,
    buf: *const u8,
    len: usize,
) -> LionStatus {
    guard("lion_optimizer_load_state", || {
        // SAFETY: the function's contract.
        let (h, bytes) = unsafe { loading(opt, buf, len) }?;
        let mut opt = h.write()?;
        opt.load_state(bytes).map_err(|e| described(&opt, &e))?;
        Ok(LionStatus::Ok)
    })
}

/// Saves the state as a safetensors file (readable by Python's `safetensors`: each momentum is
/// the tensor "{name}.exp_avg"; 8-bit momentum is the two tensors "{name}.exp_avg.codes" (u8)
/// and "{name}.exp_avg.absmax" (f32)) into `buf[0..cap]`; `*size` gets the file's size — also when
/// `cap` is too small (LION_STATUS_BUFFER_TOO_SMALL, nothing written to `buf`). `buf = NULL,
/// cap = 0`: only the size (LION_STATUS_OK). LION_STATUS_UNSUPPORTED without the `safetensors`
/// feature.
///
/// # Safety
/// As `lion_optimizer_save_state`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lion_optimizer_save_safetensors(
    opt: *const LionOptimizer,
    buf: *mut u8,
    cap: usize,
    size: *mut usize,
) -> LionStatus {
    guard("lion_optimizer_save_safetensors", || {
        // SAFETY: the function's contract.
        let opt = unsafe { saving(opt, buf, cap, size) }?.read()?;
        let file = safetensors_bytes(&opt)?;
        // SAFETY: `size` and `buf` checked; writable and unshared by the function's contract.
        unsafe {
            write_sized(buf, cap, size, file.len(), |out| {
                out[..file.len()].copy_from_slice(&file);
                Ok(())
            })
        }
    })
}

#[cfg(feature = "safetensors")]
fn safetensors_bytes(opt: &Lion<Vec<Buffer>>) -> Result<Vec<u8>, Failure> {
    opt.save_safetensors().map_err(|e| Failure::plain(&e))
}

#[cfg(not(feature = "safetensors"))]
fn safetensors_bytes(_: &Lion<Vec<Buffer>>) -> Result<Vec<u8>, Failure> {
    Err(no_safetensors())
}

#[cfg(not(feature = "safetensors"))]
fn no_safetensors() -> Failure {
    Failure::new(
        LionStatus::Unsupported,
        format_args!("this build has no safetensors support (cargo feature `safetensors`)"),
    )
}

/// Loads a safetensors state file (`lion_optimizer_save_safetensors`; tensors matched by
/// name). A bad file is LION_STATUS_BAD_CHECKPOINT and the optimizer is unchanged.
/// LION_STATUS_UNSUPPORTED without the `safetensors` feature.
///
/// # Safety
/// As `lion_optimizer_load_state`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lion_optimizer_load_safetensors(
    opt: *mut LionOptimizer,
    buf: *const u8,
    len: usize,
) -> LionStatus {
    guard("lion_optimizer_load_safetensors", || {
        // SAFETY: the function's contract.
        let (h, bytes) = unsafe { loading(opt, buf, len) }?;
        #[cfg(feature = "safetensors")]
        {
            let mut opt = h.write()?;
            opt.load_safetensors(bytes)
                .map_err(|e| described(&opt, &e))?;
            Ok(LionStatus::Ok)
        }
        #[cfg(not(feature = "safetensors"))]
        {
            let _ = (bytes, h.write()?);
            Err(no_safetensors())
        }
    })
}

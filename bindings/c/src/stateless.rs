//! The stateless entry points: one step over caller buffers (`lion_step`, `lion_step_q8`), the
//! cautious count, the finiteness check, and the small functions around them (defaults,
//! versions, the last error). None allocates: they serve bare-metal firmware too.
//!
//! Each one checks its arguments (pointers, enums, struct sizes, overlaps), views the caller's
//! memory as run-time-typed slices, and makes one call into the core, which checks the
//! hyperparameters and options before it writes anything and dispatches on the element types.

use core::ffi::{CStr, c_char, c_void};

use lion::{Backend, Group, Hyperparams, Q8_BLOCK, Q8Mut, Q8Ref, SliceRef, Update};

use crate::status::{self, Failure, LionStatus, Outcome, guard};
use crate::types::{
    DtypeArg, HYPERPARAMS_SIZE, LionHyperparams, LionStepOptions, OPTIONS_SIZE, Options, Role,
    element_dtype, momentum_dtype,
};
use crate::view::{
    Span, check, check_dtype, overlap, raw_mut, raw_ref, slice_mut, slice_ref, span,
};

/// A `lion_status` value as a function receives it (`lion_status_name`): any integer.
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct StatusArg(pub i32);

/// Reads a caller's struct that starts with its `struct_size`: NULL gives `None`; a pointer
/// that is misaligned, or a struct of another size (not initialized with its `_default()`, or
/// from another version's header), is refused. Reads `struct_size` first, so never more than
/// the caller says it has.
///
/// It and the readers below are inlined into the entry points: returned through memory, their
/// structs were copied in pieces the next loads could not be forwarded from (~40 ns a call,
/// measured by `examples/bench.rs`).
///
/// # Safety
/// `ptr` is NULL or points to a readable `u32` followed, if that `u32` is `size_of::<T>()`, by
/// the rest of a `T` (the header's contract: a struct initialized with its `_default()`).
#[inline(always)]
unsafe fn read_struct<T: Copy>(ptr: *const T, size: u32, name: &str) -> Result<Option<T>, Failure> {
    if ptr.is_null() {
        return Ok(None);
    }
    if !ptr.is_aligned() {
        return Err(Failure::new(
            LionStatus::Misaligned,
            format_args!("the {name} at {ptr:p} is not aligned for its type"),
        ));
    }
    // SAFETY: non-null and aligned (for T, so for its first field, a u32); readable (contract).
    let found = unsafe { ptr.cast::<u32>().read() };
    if found != size {
        return Err(Failure::new(
            LionStatus::InvalidArgument,
            format_args!(
                "{name}.struct_size is {found}, this library's {name} has {size} bytes: \
                 initialize it with {name}_default() (and compile against this library's header)"
            ),
        ));
    }
    // SAFETY: as above; the caller's struct is a whole T (its struct_size says so). Every field
    // of the structs read here is an integer, a float or a pointer: any bits are a valid value.
    Ok(Some(unsafe { ptr.read() }))
}

/// The hyperparameters at `hp` (NULL: the defaults).
///
/// # Safety
/// As [`read_struct`].
#[inline(always)]
pub(crate) unsafe fn read_hp(hp: *const LionHyperparams) -> Result<Hyperparams, Failure> {
    // SAFETY: the function's contract.
    let hp = unsafe { read_struct(hp, HYPERPARAMS_SIZE, "lion_hyperparams") }?;
    Ok(hp.map_or_else(Hyperparams::default, LionHyperparams::to_core))
}

/// The options at `options` (NULL: the defaults).
///
/// # Safety
/// As [`read_struct`].
#[inline(always)]
pub(crate) unsafe fn read_options(options: *const LionStepOptions) -> Result<Options, Failure> {
    // SAFETY: the function's contract.
    let o = unsafe { read_struct(options, OPTIONS_SIZE, "lion_step_options") }?;
    o.unwrap_or_else(LionStepOptions::default_c).to_core()
}

/// Checks an output pointer (not NULL, aligned).
pub(crate) fn check_out<T>(ptr: *mut T, name: &str) -> Result<(), Failure> {
    if ptr.is_null() {
        return Err(Failure::new(
            LionStatus::NullPointer,
            format_args!("{name} is NULL"),
        ));
    }
    if !ptr.is_aligned() {
        return Err(Failure::new(
            LionStatus::Misaligned,
            format_args!("{name} ({ptr:p}) is not aligned for its type"),
        ));
    }
    Ok(())
}

/// Refuses overlapping buffers of a stateless call (`who` is a [`Role`]); `momentum` names the
/// momentum buffer ("momentum", or "codes" for 8-bit momentum).
fn no_overlap(spans: &mut [Span], momentum: &str) -> Result<(), Failure> {
    overlap(spans).map_err(|(a, b)| {
        let name = |who: usize| match who {
            w if w == Role::Params as usize => Role::Params.name(),
            w if w == Role::Grads as usize => Role::Grads.name(),
            w if w == Role::Momentum as usize => momentum,
            w if w == Role::Absmax as usize => Role::Absmax.name(),
            _ => "?",
        };
        Failure::new(
            LionStatus::Overlap,
            format_args!(
                "{} and {} overlap in memory (a written buffer must not share memory with \
                 another buffer of the call)",
                name(a),
                name(b)
            ),
        )
    })
}

/// One update through the core's run-time-typed step (`Update::apply`: it checks the
/// hyperparameters and options, then dispatches on the element types), with the shard fields.
#[inline(always)]
fn run(update: Update<'_>, hp: Hyperparams, o: Options) -> Outcome {
    let group = Group::new(hp).with_options(o.options);
    match (update.step(o.step).offset(o.offset).stream(o.stream)).apply(&group) {
        Ok(lion::Outcome::Applied) => Ok(LionStatus::Ok),
        Ok(_) => Ok(LionStatus::SkippedNonFinite),
        Err(e) => Err(Failure::plain(&e)),
    }
}

/// One Lion step over `len` elements, in place: `params` (F32, F16 or BF16) and `momentum`
/// (F32, F16 or BF16; 8-bit momentum: `lion_step_q8`) are updated with `grads` (F32, F16 or
/// BF16), any combination of types. Bit-identical to the crate's reference
/// (`reference::step_with` of the Rust crate lion-optim) on every CPU.
///
/// `hp` and `options` may be NULL (the defaults). The options' `step`, `offset` and `stream`
/// place this call in a longer run and a larger tensor (stochastic rounding, shards).
///
/// Returns LION_STATUS_OK, LION_STATUS_SKIPPED_NON_FINITE (`options->skip_non_finite`), or an
/// error having written nothing: a NULL or misaligned buffer (a buffer may be NULL only when
/// `len` is 0), an unknown dtype, buffers that overlap, invalid hyperparameters or options.
///
/// # Safety
/// Each buffer is NULL (with `len == 0`) or points to `len` elements of its type, valid for
/// the call and not used by another thread during it; `hp` and `options` are NULL or point to
/// structs initialized with their `_default()`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lion_step(
    params: *mut c_void,
    p_dtype: DtypeArg,
    grads: *const c_void,
    g_dtype: DtypeArg,
    momentum: *mut c_void,
    m_dtype: DtypeArg,
    len: usize,
    hp: *const LionHyperparams,
    options: *const LionStepOptions,
) -> LionStatus {
    guard("lion_step", || {
        // SAFETY: the function's contract for `hp` and `options`.
        let (hp, o) = unsafe { (read_hp(hp)?, read_options(options)?) };
        let pd = element_dtype(p_dtype, &"p_dtype")?;
        let gd = element_dtype(g_dtype, &"g_dtype")?;
        let Some(md) = momentum_dtype(m_dtype, &"m_dtype")? else {
            return Err(Failure::new(
                LionStatus::InvalidEnum,
                format_args!(
                    "m_dtype is LION_DTYPE_Q8: 8-bit momentum has two buffers (codes and \
                     absmax): use lion_step_q8"
                ),
            ));
        };
        let mut spans = [
            span(check_dtype(params, len, pd, &"params")?, Role::Params),
            span(check_dtype(grads, len, gd, &"grads")?, Role::Grads),
            span(check_dtype(momentum, len, md, &"momentum")?, Role::Momentum),
        ];
        no_overlap(&mut spans, "momentum")?;
        // SAFETY: each pointer was checked for `len` elements of its dtype, the written ones
        // overlap nothing; valid and unshared for the call by the function's contract.
        let (p, g, m) = unsafe {
            (
                slice_mut(params, len, pd),
                slice_ref(grads, len, gd),
                slice_mut(momentum, len, md),
            )
        };
        run(Update::from_slices(p, g, m), hp, o)
    })
}

/// `lion_step` with 8-bit momentum: `codes` (`len` bytes, one per element, into bitsandbytes'
/// signed dynamic map) and `absmax` (one float per started block of 256 elements:
/// `(len + 255) / 256`), bitsandbytes' blockwise format. Bit-identical to the crate's reference
/// (`reference::step_q8_with` of the Rust crate lion-optim) on every CPU. Zero momentum is
/// code 127 with absmax 0.
///
/// The options' `offset` must be a multiple of 256 (blocks are aligned to the whole tensor: a
/// tensor stepped in shards is split at block boundaries); another offset is
/// LION_STATUS_INVALID_HYPERPARAMETER.
///
/// Returns as `lion_step`; `codes` and `absmax` are checked like the other buffers (NULL,
/// alignment, overlap with each other and with `params` and `grads`).
///
/// # Safety
/// As `lion_step`; `codes` holds `len` bytes and `absmax` `(len + 255) / 256` floats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lion_step_q8(
    params: *mut c_void,
    p_dtype: DtypeArg,
    grads: *const c_void,
    g_dtype: DtypeArg,
    codes: *mut u8,
    absmax: *mut f32,
    len: usize,
    hp: *const LionHyperparams,
    options: *const LionStepOptions,
) -> LionStatus {
    guard("lion_step_q8", || {
        // SAFETY: the function's contract for `hp` and `options`.
        let (hp, o) = unsafe { (read_hp(hp)?, read_options(options)?) };
        let pd = element_dtype(p_dtype, &"p_dtype")?;
        let gd = element_dtype(g_dtype, &"g_dtype")?;
        let blocks = len.div_ceil(Q8_BLOCK);
        let mut spans = [
            span(check_dtype(params, len, pd, &"params")?, Role::Params),
            span(check_dtype(grads, len, gd, &"grads")?, Role::Grads),
            span(check_codes(codes.cast_const(), len)?, Role::Momentum),
            span(check_absmax(absmax.cast_const(), blocks)?, Role::Absmax),
        ];
        no_overlap(&mut spans, "codes")?;
        // SAFETY: each pointer was checked for its length and type (`len` elements, `len`
        // codes, `blocks` floats), the written ones overlap nothing; valid and unshared for the
        // call by the function's contract.
        let (p, g, c, a) = unsafe {
            (
                slice_mut(params, len, pd),
                slice_ref(grads, len, gd),
                raw_mut::<u8>(codes.cast(), len),
                raw_mut::<f32>(absmax.cast(), blocks),
            )
        };
        let m = Q8Mut::new(c, a).map_err(|e| Failure::plain(&e))?;
        run(Update::from_slices(p, g, m), hp, o)
    })
}

/// Checks 8-bit codes: `len` bytes (named "codes").
fn check_codes(codes: *const u8, len: usize) -> Result<(usize, usize), Failure> {
    check(codes.cast(), len, 1, 1, &"codes")
}

/// Checks the blocks' scales: `blocks` floats (named "absmax").
fn check_absmax(absmax: *const f32, blocks: usize) -> Result<(usize, usize), Failure> {
    let size = core::mem::size_of::<f32>();
    check(
        absmax.cast(),
        blocks,
        size,
        core::mem::align_of::<f32>(),
        &"absmax",
    )
}

/// The number of elements where the cautious variant would move the parameters: where
/// `sign(c) * g > 0` with `c = m*beta1 + g*(1-beta1)` (gradients unscaled as the options say),
/// written to `*count`. For a tensor stepped in shards, add the shards' counts and step each
/// shard with LION_CAUTIOUS_SHARD. Read-only.
///
/// # Safety
/// As `lion_step` for `grads` and `momentum` (read only); `count` points to a `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lion_cautious_count(
    grads: *const c_void,
    g_dtype: DtypeArg,
    momentum: *const c_void,
    m_dtype: DtypeArg,
    len: usize,
    hp: *const LionHyperparams,
    options: *const LionStepOptions,
    count: *mut u64,
) -> LionStatus {
    guard("lion_cautious_count", || {
        // SAFETY: the function's contract for `hp` and `options`.
        let (hp, o) = unsafe { (read_hp(hp)?, read_options(options)?) };
        let gd = element_dtype(g_dtype, &"g_dtype")?;
        let Some(md) = momentum_dtype(m_dtype, &"m_dtype")? else {
            return Err(Failure::new(
                LionStatus::InvalidEnum,
                format_args!("m_dtype is LION_DTYPE_Q8: use lion_cautious_count_q8"),
            ));
        };
        check_dtype(grads, len, gd, &"grads")?;
        check_dtype(momentum.cast_mut(), len, md, &"momentum")?;
        check_out(count, "count")?;
        // SAFETY: checked for `len` elements of their dtypes; only read (shared reads of the
        // same memory are fine); valid for the call by the function's contract.
        let (g, m) = unsafe { (slice_ref(grads, len, gd), slice_ref(momentum, len, md)) };
        let n = g
            .cautious_count(m, &hp, &o.options)
            .map_err(|e| Failure::plain(&e))?;
        // SAFETY: checked non-null and aligned; writable by the function's contract.
        unsafe { count.write(n) };
        Ok(LionStatus::Ok)
    })
}

/// `lion_cautious_count` with 8-bit momentum (`codes`, `absmax` as in `lion_step_q8`; the
/// options' `offset` a multiple of 256). Read-only.
///
/// # Safety
/// As `lion_cautious_count`; `codes` holds `len` bytes and `absmax` `(len + 255) / 256` floats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lion_cautious_count_q8(
    grads: *const c_void,
    g_dtype: DtypeArg,
    codes: *const u8,
    absmax: *const f32,
    len: usize,
    hp: *const LionHyperparams,
    options: *const LionStepOptions,
    count: *mut u64,
) -> LionStatus {
    guard("lion_cautious_count_q8", || {
        // SAFETY: the function's contract for `hp` and `options`.
        let (hp, o) = unsafe { (read_hp(hp)?, read_options(options)?) };
        let gd = element_dtype(g_dtype, &"g_dtype")?;
        let blocks = len.div_ceil(Q8_BLOCK);
        check_dtype(grads, len, gd, &"grads")?;
        check_codes(codes, len)?;
        check_absmax(absmax, blocks)?;
        check_out(count, "count")?;
        // SAFETY: checked for their lengths and types; only read (shared reads of the same
        // memory are fine); valid for the call by the function's contract.
        let (g, c, a) = unsafe {
            (
                slice_ref(grads, len, gd),
                raw_ref::<u8>(codes.cast(), len),
                raw_ref::<f32>(absmax.cast(), blocks),
            )
        };
        let m = Q8Ref::new(c, a).map_err(|e| Failure::plain(&e))?;
        let n = g
            .cautious_count(m, &hp, &o.options)
            .map_err(|e| Failure::plain(&e))?;
        // SAFETY: checked non-null and aligned; writable by the function's contract.
        unsafe { count.write(n) };
        Ok(LionStatus::Ok)
    })
}

/// Whether every gradient, as a step with `options` would use it (after `grad_unscale`), is
/// finite: writes 1 or 0 to `*finite`. A mixed-precision loop checks every gradient before
/// stepping any (or sets `skip_non_finite`). Read-only.
///
/// # Safety
/// As `lion_step` for `grads` (read only); `finite` points to an `int32_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lion_all_finite(
    grads: *const c_void,
    g_dtype: DtypeArg,
    len: usize,
    options: *const LionStepOptions,
    finite: *mut i32,
) -> LionStatus {
    guard("lion_all_finite", || {
        // SAFETY: the function's contract for `options`.
        let o = unsafe { read_options(options) }?;
        let gd = element_dtype(g_dtype, &"g_dtype")?;
        check_dtype(grads, len, gd, &"grads")?;
        check_out(finite, "finite")?;
        // The options' values (all_finite alone would say "not finite" for invalid ones).
        Group::new(Hyperparams::default())
            .with_options(o.options)
            .validate()
            .map_err(|e| Failure::plain(&e))?;
        // SAFETY: checked for `len` elements of `gd`; only read; valid for the call.
        let g: SliceRef<'_> = unsafe { slice_ref(grads, len, gd) };
        let all = g.all_finite(&o.options);
        // SAFETY: checked non-null and aligned; writable by the function's contract.
        unsafe { finite.write(i32::from(all)) };
        Ok(LionStatus::Ok)
    })
}

/// The default hyperparameters (lr 1e-4, betas 0.9 and 0.99, weight decay 0), with
/// `struct_size` set. Start every `lion_hyperparams` from this.
#[unsafe(no_mangle)]
pub extern "C" fn lion_hyperparams_default() -> LionHyperparams {
    LionHyperparams::default_c()
}

/// The default options (the plain step), with `struct_size` set. Start every
/// `lion_step_options` from this.
#[unsafe(no_mangle)]
pub extern "C" fn lion_step_options_default() -> LionStepOptions {
    LionStepOptions::default_c()
}

/// Copies the message of this thread's last error (the last call that returned an error
/// status; without `std`, the program's) into `buf` as a NUL-terminated string, cut to
/// `cap - 1` bytes; returns the message's full length (without the NUL), like `snprintf`:
/// call with `buf = NULL, cap = 0` to size a buffer. Calls that succeed leave it unchanged.
///
/// # Safety
/// `buf` is NULL or points to `cap` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lion_last_error(buf: *mut c_char, cap: usize) -> usize {
    let cap = if buf.is_null() { 0 } else { cap };
    // SAFETY: `cap` writable bytes at `buf` (the function's contract), or none.
    let out = unsafe { crate::view::raw_mut::<u8>(buf.cast(), cap) };
    status::last_error(out)
}

/// The name of a status constant ("LION_STATUS_OK", ...), a static string.
#[unsafe(no_mangle)]
pub extern "C" fn lion_status_name(status: StatusArg) -> *const c_char {
    LionStatus::name(status.0).as_ptr()
}

/// The implementation this CPU runs ("avx512", "avx2", "portable" or "scalar"), a static
/// string.
#[unsafe(no_mangle)]
pub extern "C" fn lion_backend_name() -> *const c_char {
    let name: &CStr = match Backend::detect() {
        Backend::Avx512 => c"avx512",
        Backend::Avx2 => c"avx2",
        Backend::Portable => c"portable",
        Backend::Scalar => c"scalar",
        _ => c"other",
    };
    name.as_ptr()
}

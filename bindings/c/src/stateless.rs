//! The stateless entry points: one step over caller buffers (`lion_step`, `lion_step_q8`), the
//! cautious count, the finiteness check, and the small functions around them (defaults,
//! versions, the last error). None allocates: they serve bare-metal firmware too.
//!
//! Each one checks its arguments (pointers, enums, struct sizes, overlaps), views the caller's
//! memory as run-time-typed slices, and makes one call into the core, which checks the
//! hyperparameters and options before it writes anything and dispatches on the element types.

use core::ffi::{CStr, c_char, c_void};

use lion::{
    Backend, Dtype, Group, Hyperparams, MomentumMut, MomentumRef, Q8_BLOCK, Q8Mut, Q8Ref, SliceRef,
    Update,
};

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

/// Checks a pointer the call dereferences, an output or a struct or string it reads (not NULL,
/// aligned).
pub(crate) fn check_ptr<T>(ptr: *mut T, name: &str) -> Result<(), Failure> {
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

/// The momentum argument(s) of a stateless call, as the caller passed them.
#[derive(Clone, Copy)]
enum MomentumArg {
    /// `len` elements of `m_dtype`; LION_DTYPE_Q8 there is refused with the message
    /// "m_dtype is LION_DTYPE_Q8: {the third field}" (8-bit momentum has its own calls).
    Typed(*mut c_void, DtypeArg, &'static str),
    /// 8-bit momentum: `len` codes and one absmax per started block of 256 elements.
    Q8(*mut u8, *mut f32),
}

/// The momentum of a stateless call with its type known.
#[derive(Clone, Copy)]
enum Momentum {
    Typed(*mut c_void, Dtype),
    Q8(*mut u8, *mut f32),
}

impl MomentumArg {
    /// The momentum's type (`m_dtype` checked).
    #[inline(always)]
    fn typed(self) -> Result<Momentum, Failure> {
        match self {
            MomentumArg::Typed(m, m_dtype, q8_refusal) => {
                match momentum_dtype(m_dtype, &"m_dtype")? {
                    Some(md) => Ok(Momentum::Typed(m, md)),
                    None => Err(Failure::new(
                        LionStatus::InvalidEnum,
                        format_args!("m_dtype is LION_DTYPE_Q8: {q8_refusal}"),
                    )),
                }
            }
            MomentumArg::Q8(codes, absmax) => Ok(Momentum::Q8(codes, absmax)),
        }
    }
}

impl Momentum {
    /// The momentum buffer's name in messages ("momentum", or "codes" for 8-bit momentum).
    fn name(self) -> &'static str {
        match self {
            Momentum::Typed(..) => "momentum",
            Momentum::Q8(..) => "codes",
        }
    }

    /// Checks the buffer(s) for `len` elements: the byte ranges of the momentum and of the
    /// absmax (empty for typed momentum).
    #[inline(always)]
    fn check(self, len: usize) -> Result<[(usize, usize); 2], Failure> {
        match self {
            Momentum::Typed(m, md) => Ok([check_dtype(m, len, md, &"momentum")?, (0, 0)]),
            Momentum::Q8(codes, absmax) => Ok([
                check(codes.cast_const().cast(), len, 1, 1, &"codes")?,
                check(
                    absmax.cast_const().cast(),
                    len.div_ceil(Q8_BLOCK),
                    core::mem::size_of::<f32>(),
                    core::mem::align_of::<f32>(),
                    &"absmax",
                )?,
            ]),
        }
    }

    /// Views the momentum of `len` elements, to be updated.
    ///
    /// # Safety
    /// [`Momentum::check`] passed for `len`; the buffers are valid and unshared for the call,
    /// and overlap no other buffer of it.
    #[inline(always)]
    unsafe fn view_mut<'a>(self, len: usize) -> Result<MomentumMut<'a>, Failure> {
        // SAFETY (each view): checked for its length and type; valid and unshared for the call
        // (the function's contract).
        match self {
            Momentum::Typed(m, md) => Ok(unsafe { slice_mut(m, len, md) }.into()),
            Momentum::Q8(codes, absmax) => {
                let (c, a) = unsafe {
                    (
                        raw_mut::<u8>(codes.cast(), len),
                        raw_mut::<f32>(absmax.cast(), len.div_ceil(Q8_BLOCK)),
                    )
                };
                Ok(Q8Mut::new(c, a).map_err(|e| Failure::plain(&e))?.into())
            }
        }
    }

    /// Views the momentum of `len` elements, read-only.
    ///
    /// # Safety
    /// [`Momentum::check`] passed for `len`; the buffers are valid for the call and nothing
    /// writes them during it.
    #[inline(always)]
    unsafe fn view_ref<'a>(self, len: usize) -> Result<MomentumRef<'a>, Failure> {
        // SAFETY (each view): checked for its length and type; only read; valid for the call
        // (the function's contract).
        match self {
            Momentum::Typed(m, md) => Ok(unsafe { slice_ref(m, len, md) }.into()),
            Momentum::Q8(codes, absmax) => {
                let (c, a) = unsafe {
                    (
                        raw_ref::<u8>(codes.cast_const().cast(), len),
                        raw_ref::<f32>(absmax.cast_const().cast(), len.div_ceil(Q8_BLOCK)),
                    )
                };
                Ok(Q8Ref::new(c, a).map_err(|e| Failure::plain(&e))?.into())
            }
        }
    }
}

/// The body of `lion_step` and `lion_step_q8`: every argument checked in the order of the
/// signature (settings, dtypes, buffers, overlaps), then one update.
///
/// # Safety
/// The contract of `lion_step` (`lion_step_q8` for 8-bit momentum).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn step(
    params: *mut c_void,
    p_dtype: DtypeArg,
    grads: *const c_void,
    g_dtype: DtypeArg,
    momentum: MomentumArg,
    len: usize,
    hp: *const LionHyperparams,
    options: *const LionStepOptions,
) -> Outcome {
    // SAFETY: the function's contract for `hp` and `options`.
    let (hp, o) = unsafe { (read_hp(hp)?, read_options(options)?) };
    let pd = element_dtype(p_dtype, &"p_dtype")?;
    let gd = element_dtype(g_dtype, &"g_dtype")?;
    let m = momentum.typed()?;
    let p_range = check_dtype(params, len, pd, &"params")?;
    let g_range = check_dtype(grads, len, gd, &"grads")?;
    let [m_range, a_range] = m.check(len)?;
    let mut spans = [
        span(p_range, Role::Params),
        span(g_range, Role::Grads),
        span(m_range, Role::Momentum),
        span(a_range, Role::Absmax),
    ];
    no_overlap(&mut spans, m.name())?;
    // SAFETY: each pointer was checked for `len` elements of its type (the absmax for its
    // blocks), the written ones overlap nothing; valid and unshared for the call by the
    // function's contract.
    let (p, g, m) = unsafe {
        (
            slice_mut(params, len, pd),
            slice_ref(grads, len, gd),
            m.view_mut(len)?,
        )
    };
    run(Update::from_slices(p, g, m), hp, o)
}

/// The body of `lion_cautious_count` and `lion_cautious_count_q8`.
///
/// # Safety
/// The contract of `lion_cautious_count` (`lion_cautious_count_q8` for 8-bit momentum); the
/// momentum is only read.
#[inline(always)]
unsafe fn cautious_count(
    grads: *const c_void,
    g_dtype: DtypeArg,
    momentum: MomentumArg,
    len: usize,
    hp: *const LionHyperparams,
    options: *const LionStepOptions,
    count: *mut u64,
) -> Outcome {
    // SAFETY: the function's contract for `hp` and `options`.
    let (hp, o) = unsafe { (read_hp(hp)?, read_options(options)?) };
    let gd = element_dtype(g_dtype, &"g_dtype")?;
    let m = momentum.typed()?;
    check_dtype(grads, len, gd, &"grads")?;
    m.check(len)?;
    check_ptr(count, "count")?;
    // SAFETY: checked for their lengths and types; only read (shared reads of the same memory
    // are fine); valid for the call by the function's contract.
    let (g, m) = unsafe { (slice_ref(grads, len, gd), m.view_ref(len)?) };
    let n = g
        .cautious_count(m, &hp, &o.options)
        .map_err(|e| Failure::plain(&e))?;
    // SAFETY: checked non-null and aligned; writable by the function's contract.
    unsafe { count.write(n) };
    Ok(LionStatus::Ok)
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
    let q8_refusal = "8-bit momentum has two buffers (codes and absmax): use lion_step_q8";
    let m = MomentumArg::Typed(momentum, m_dtype, q8_refusal);
    guard("lion_step", || {
        // SAFETY: the function's contract.
        unsafe { step(params, p_dtype, grads, g_dtype, m, len, hp, options) }
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
    let m = MomentumArg::Q8(codes, absmax);
    guard("lion_step_q8", || {
        // SAFETY: the function's contract.
        unsafe { step(params, p_dtype, grads, g_dtype, m, len, hp, options) }
    })
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
    let m = MomentumArg::Typed(momentum.cast_mut(), m_dtype, "use lion_cautious_count_q8");
    guard("lion_cautious_count", || {
        // SAFETY: the function's contract.
        unsafe { cautious_count(grads, g_dtype, m, len, hp, options, count) }
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
    let m = MomentumArg::Q8(codes.cast_mut(), absmax.cast_mut());
    guard("lion_cautious_count_q8", || {
        // SAFETY: the function's contract.
        unsafe { cautious_count(grads, g_dtype, m, len, hp, options, count) }
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
        check_ptr(finite, "finite")?;
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

//! Status codes, the last error of this thread, and the guard around every entry point.
//!
//! A failing call records its message (which function, what was wrong, the tensor's name) in a
//! fixed buffer — thread-local with `std`, one buffer for the program without it (taken with a
//! try-lock: a message that finds the buffer busy, e.g. an interrupt's, is dropped, never
//! waited for) — and returns its status. No allocation, so the error path works without an
//! allocator too. `lion_last_error` copies the message out.

use core::fmt::{self, Write};

use lion::{CheckpointError, Error};

/// What a call did. Success is >= 0 (LION_STATUS_OK, or LION_STATUS_SKIPPED_NON_FINITE when
/// the options ask to skip steps with non-finite gradients); every error is < 0, and then the
/// call wrote nothing (no buffer, no output argument, no state) and `lion_last_error` says why.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LionStatus {
    /// Done.
    Ok = 0,
    /// A gradient was inf or NaN (after unscaling) and the options set `skip_non_finite`:
    /// nothing was written (a handle counts the step as skipped).
    SkippedNonFinite = 1,
    /// A pointer argument is NULL (a buffer may be NULL only when its length is 0).
    NullPointer = -1,
    /// A pointer is not aligned for its type (f32: 4 bytes, f16/bf16: 2, absmax: 4).
    Misaligned = -2,
    /// An enum argument or field holds a value that is not one of its constants (or not one
    /// allowed there, e.g. LION_DTYPE_Q8 for parameters).
    InvalidEnum = -3,
    /// Lengths do not agree (a tensor's buffers and its state), or a length is too large for
    /// the address space.
    LengthMismatch = -4,
    /// Buffers overlap in memory where one of them is written (parameters passed twice, a
    /// gradient aliasing its parameters or momentum).
    Overlap = -5,
    /// A hyperparameter or option value is outside its domain (lr < 0, beta1 >= 1,
    /// lr * weight_decay > 1, grad_unscale <= 0, an offset past the shard's tensor, ...).
    InvalidHyperparameter = -6,
    /// Another argument is invalid: a struct that was not initialized with its `_default()`
    /// (`struct_size`), a flag other than 0 or 1, a name that is not UTF-8, a field that must
    /// be 0 here.
    InvalidArgument = -7,
    /// A state file (either format) is truncated, damaged, of another optimizer or version:
    /// nothing was loaded, the optimizer is unchanged.
    BadCheckpoint = -8,
    /// The output buffer is too small; the size it needs was written to the size argument.
    BufferTooSmall = -9,
    /// No tensor of the optimizer has this id or name.
    NoSuchTensor = -10,
    /// No parameter group has this id.
    NoSuchGroup = -11,
    /// A step passed one tensor twice.
    DuplicateTensor = -12,
    /// A tensor was added with a name another tensor has.
    DuplicateName = -13,
    /// A tensor's parameters are not of the type it was added with (`params_dtype`).
    DtypeMismatch = -14,
    /// The handle is in use by another thread (a handle is used by one thread at a time).
    Busy = -15,
    /// This build of the library does not have the feature (safetensors).
    Unsupported = -16,
    /// A bug in the library (a panic, caught at the boundary); please report it.
    Internal = -100,
}

impl LionStatus {
    /// The constant's name, as a C string.
    pub(crate) fn name(raw: i32) -> &'static core::ffi::CStr {
        match raw {
            0 => c"LION_STATUS_OK",
            1 => c"LION_STATUS_SKIPPED_NON_FINITE",
            -1 => c"LION_STATUS_NULL_POINTER",
            -2 => c"LION_STATUS_MISALIGNED",
            -3 => c"LION_STATUS_INVALID_ENUM",
            -4 => c"LION_STATUS_LENGTH_MISMATCH",
            -5 => c"LION_STATUS_OVERLAP",
            -6 => c"LION_STATUS_INVALID_HYPERPARAMETER",
            -7 => c"LION_STATUS_INVALID_ARGUMENT",
            -8 => c"LION_STATUS_BAD_CHECKPOINT",
            -9 => c"LION_STATUS_BUFFER_TOO_SMALL",
            -10 => c"LION_STATUS_NO_SUCH_TENSOR",
            -11 => c"LION_STATUS_NO_SUCH_GROUP",
            -12 => c"LION_STATUS_DUPLICATE_TENSOR",
            -13 => c"LION_STATUS_DUPLICATE_NAME",
            -14 => c"LION_STATUS_DTYPE_MISMATCH",
            -15 => c"LION_STATUS_BUSY",
            -16 => c"LION_STATUS_UNSUPPORTED",
            -100 => c"LION_STATUS_INTERNAL",
            _ => c"(not a lion_status)",
        }
    }

    /// The status of a core error.
    pub fn of(e: &Error) -> Self {
        match e {
            Error::LengthMismatch { .. } | Error::TensorMismatch { .. } => Self::LengthMismatch,
            Error::InvalidHyperparameter { .. } => Self::InvalidHyperparameter,
            Error::TensorDtype { .. } => Self::DtypeMismatch,
            Error::NoSuchTensor { .. } | Error::UnknownName { .. } => Self::NoSuchTensor,
            Error::DuplicateTensor { .. } => Self::DuplicateTensor,
            Error::DuplicateName { .. } => Self::DuplicateName,
            Error::NoSuchGroup { .. } => Self::NoSuchGroup,
            Error::Checkpoint(_) => Self::BadCheckpoint,
            Error::BufferTooSmall { .. } => Self::BufferTooSmall,
            Error::BackendUnavailable(_) => Self::Unsupported,
            _ => Self::InvalidArgument,
        }
    }
}

/// A failed call: its status, its message already recorded as this thread's last error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) status: LionStatus,
}

impl Failure {
    /// Records `message` as the last error and returns the failure.
    #[cold]
    pub(crate) fn new(status: LionStatus, message: fmt::Arguments<'_>) -> Self {
        with_last(|m| {
            m.clear();
            let _ = m.write_fmt(message);
        });
        Self { status }
    }

    /// A core error, described by `describe` (e.g. `Lion::describe`, which names tensors).
    #[cold]
    #[cfg(feature = "alloc")]
    pub(crate) fn core(e: &Error, describe: &dyn fmt::Display) -> Self {
        Self::new(LionStatus::of(e), format_args!("{describe}"))
    }

    /// A core error, described by its own message.
    #[cold]
    #[cfg(feature = "alloc")]
    pub(crate) fn plain(e: &Error) -> Self {
        Self::core(e, e)
    }

    /// A core error, described without the core's `Display` (whose float formatting brings
    /// panicking code into a bare-metal library): the errors a stateless call can meet.
    #[cold]
    #[cfg(not(feature = "alloc"))]
    pub(crate) fn plain(e: &Error) -> Self {
        let status = LionStatus::of(e);
        match *e {
            Error::InvalidHyperparameter { name, value, rule } => Self::new(
                status,
                format_args!("invalid hyperparameter {name} = {}: {rule}", Approx(value)),
            ),
            Error::LengthMismatch {
                what,
                expected,
                found,
            }
            | Error::TensorMismatch {
                what,
                expected,
                found,
                ..
            } => Self::new(
                status,
                format_args!("{what} has {found} elements, expected {expected}"),
            ),
            _ => Self::new(
                status,
                format_args!("{}", LionStatus::name(status as i32).to_str().unwrap_or("")),
            ),
        }
    }
}

impl From<CheckpointError> for Failure {
    fn from(e: CheckpointError) -> Self {
        Self::plain(&Error::Checkpoint(e))
    }
}

/// A double in a message, without core's float formatting: 9 significant digits in scientific
/// notation (close, not exact: the exact value is in the `std` build's messages).
#[cfg(any(not(feature = "alloc"), test))]
struct Approx(f64);

#[cfg(any(not(feature = "alloc"), test))]
impl fmt::Display for Approx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let x = self.0;
        if x.is_nan() {
            return f.write_str("NaN");
        }
        let sign = if x.is_sign_negative() { "-" } else { "" };
        if x.is_infinite() {
            return write!(f, "{sign}inf");
        }
        if x == 0.0 {
            return write!(f, "{sign}0");
        }
        let (mut a, mut e) = (x.abs(), 0i32);
        while a >= 10.0 {
            a /= 10.0;
            e += 1;
        }
        while a < 1.0 {
            a *= 10.0;
            e -= 1;
        }
        let mut m = (a * 1e8 + 0.5) as u64; // 9 digits
        if m >= 1_000_000_000 {
            m /= 10;
            e += 1;
        }
        let mut digits = 9usize;
        while digits > 1 && m.is_multiple_of(10) {
            m /= 10;
            digits -= 1;
        }
        let mut scale = core::num::NonZeroU64::MIN;
        for _ in 1..digits {
            scale = scale.saturating_mul(core::num::NonZeroU64::new(10).unwrap_or(scale));
        }
        let (int, frac) = (m / scale, m % scale);
        write!(f, "{sign}{int}")?;
        if digits > 1 {
            // The fraction's leading zeros by hand (a run-time width can panic in core::fmt).
            f.write_str(".")?;
            let mut lead = scale;
            while u64::from(lead) / 10 > frac.max(1) && u64::from(lead) > 10 {
                f.write_str("0")?;
                lead = core::num::NonZeroU64::new(u64::from(lead) / 10).unwrap_or(lead);
            }
            write!(f, "{frac}")?;
        }
        write!(f, "e{e}")
    }
}

/// The size of the last-error buffer: longer messages are cut (at a character boundary).
pub(crate) const MESSAGE_CAPACITY: usize = 1024;

/// A message in a fixed buffer.
pub(crate) struct Message {
    buf: [u8; MESSAGE_CAPACITY],
    len: usize,
}

impl Message {
    pub(crate) const fn new() -> Self {
        Self {
            buf: [0; MESSAGE_CAPACITY],
            len: 0,
        }
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    // The methods below index nothing unchecked (`get`, iterators): no panic is reachable from
    // them, which keeps the bare-metal library's stateless entry points panic-free.

    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// Appends `s` whole, or cut at a character boundary where the buffer ends.
    fn push(&mut self, s: &str) {
        let room = MESSAGE_CAPACITY.saturating_sub(self.len);
        let n = floor_char(s.as_bytes(), room);
        let start = self.len;
        for (d, b) in self
            .buf
            .iter_mut()
            .skip(start)
            .zip(s.as_bytes().iter().take(n))
        {
            *d = *b;
            self.len += 1;
        }
    }

    /// Puts `a` then `b` (ASCII) in front of the message, cutting the message's end if needed.
    fn prepend(&mut self, a: &str, b: &str) {
        let p = (a.len() + b.len()).min(MESSAGE_CAPACITY);
        let kept = floor_char(self.bytes(), MESSAGE_CAPACITY - p);
        for i in (0..kept).rev() {
            if let Some(byte) = self.buf.get(i).copied()
                && let Some(d) = self.buf.get_mut(i + p)
            {
                *d = byte;
            }
        }
        for (d, byte) in self.buf.iter_mut().zip(a.bytes().chain(b.bytes())) {
            *d = byte;
        }
        self.len = p + kept;
    }

    /// Copies the message into `out` as a NUL-terminated string (cut to fit, at a character
    /// boundary); returns the message's length.
    fn copy_to(&self, out: &mut [u8]) -> usize {
        if let Some(room) = out.len().checked_sub(1) {
            let n = floor_char(self.bytes(), room);
            let mut end = 0;
            for (d, b) in out.iter_mut().zip(self.bytes().iter().take(n)) {
                *d = *b;
                end += 1;
            }
            if let Some(z) = out.get_mut(end) {
                *z = 0;
            }
        }
        self.len
    }
}

/// The largest `n <= limit` (and <= the length) that cuts `s` at a character boundary.
fn floor_char(s: &[u8], limit: usize) -> usize {
    let mut n = limit.min(s.len());
    // A UTF-8 continuation byte is 0b10xx_xxxx.
    while n > 0 && s.get(n).is_some_and(|b| b & 0xc0 == 0x80) {
        n -= 1;
    }
    n
}

impl Write for Message {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s);
        // Cut messages do not stop the formatting with an error.
        Ok(())
    }
}

#[cfg(feature = "std")]
std::thread_local! {
    static LAST: core::cell::RefCell<Message> = const { core::cell::RefCell::new(Message::new()) };
}

/// Runs `f` on this thread's last error (if it is not in use: never while formatting a message
/// into it, which does not call back here).
#[cfg(feature = "std")]
fn with_last<R>(f: impl FnOnce(&mut Message) -> R) -> Option<R> {
    LAST.try_with(|m| m.try_borrow_mut().ok().map(|mut m| f(&mut m)))
        .ok()
        .flatten()
}

#[cfg(not(feature = "std"))]
mod global {
    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicBool, Ordering};

    use super::Message;

    /// The program's last error without `std` (no threads to tell apart: bare metal).
    pub(super) struct Last {
        busy: AtomicBool,
        message: UnsafeCell<Message>,
    }

    // SAFETY: `message` is only reached through `with`, which holds `busy` (acquired with a
    // compare-exchange, released after the closure): one context at a time.
    unsafe impl Sync for Last {}

    pub(super) static LAST: Last = Last {
        busy: AtomicBool::new(false),
        message: UnsafeCell::new(Message::new()),
    };

    impl Last {
        pub(super) fn with<R>(&self, f: impl FnOnce(&mut Message) -> R) -> Option<R> {
            if self
                .busy
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                return None;
            }
            // SAFETY: `busy` was false and is now ours: no other reference to the message
            // exists until it is released below.
            let r = f(unsafe { &mut *self.message.get() });
            self.busy.store(false, Ordering::Release);
            Some(r)
        }
    }
}

#[cfg(not(feature = "std"))]
fn with_last<R>(f: impl FnOnce(&mut Message) -> R) -> Option<R> {
    global::LAST.with(f)
}

/// Copies the last error into `out` (see `lion_last_error`); returns its length.
pub(crate) fn last_error(out: &mut [u8]) -> usize {
    with_last(|m| m.copy_to(out)).unwrap_or_else(|| Message::new().copy_to(out))
}

/// The status of an entry point's work: `Ok` with the success status, or a failure whose
/// message is then prefixed with the entry point's name.
pub(crate) type Outcome = Result<LionStatus, Failure>;

/// Runs the body of the entry point `name`: a panic becomes LION_STATUS_INTERNAL (with `std`;
/// without it no panic is reachable from the stateless entry points with any input, see the
/// crate documentation), a failure gets the entry point's name in its message.
#[inline(always)]
pub(crate) fn guard(name: &str, body: impl FnOnce() -> Outcome) -> LionStatus {
    #[cfg(feature = "std")]
    let result = match std::panic::catch_unwind(core::panic::AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(payload) => Err(panicked(payload.as_ref())),
    };
    #[cfg(not(feature = "std"))]
    let result = body();
    match result {
        Ok(status) => status,
        Err(failure) => failed(name, failure),
    }
}

#[cold]
#[inline(never)]
fn failed(name: &str, failure: Failure) -> LionStatus {
    with_last(|m| m.prepend(name, ": "));
    failure.status
}

#[cfg(feature = "std")]
#[cold]
fn panicked(payload: &(dyn core::any::Any + Send)) -> Failure {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| {
            payload
                .downcast_ref::<std::string::String>()
                .map(|s| s.as_str())
        })
        .unwrap_or("(no message)");
    Failure::new(
        LionStatus::Internal,
        format_args!("internal error (a panic, please report it): {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_cut_at_characters_and_prefixed() {
        let mut m = Message::new();
        let long = "é".repeat(MESSAGE_CAPACITY); // 2 bytes each
        let _ = m.write_str(&long);
        assert_eq!(m.len, MESSAGE_CAPACITY);
        m.prepend("f", ": ");
        assert!(core::str::from_utf8(m.bytes()).is_ok());
        assert!(m.bytes().starts_with(b"f: \xc3\xa9"));
        let mut out = [0xffu8; 6];
        assert_eq!(m.copy_to(&mut out), m.len);
        assert_eq!(&out, b"f: \xc3\xa9\0");
        let mut small = [0xffu8; 5]; // room for 4: "f: " and not half an "é"
        m.copy_to(&mut small);
        assert_eq!(&small, b"f: \0\xff");
        assert_eq!(m.copy_to(&mut []), m.len);
    }

    #[test]
    fn doubles_without_float_formatting() {
        use std::string::ToString;
        let cases: [(f64, &str); 12] = [
            (1.05, "1.05e0"),
            (-1.000001, "-1.000001e0"),
            (-1e-3, "-1e-3"),
            (0.0, "0"),
            (-0.0, "-0"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-inf"),
            (1.5, "1.5e0"),
            (3e39, "3e39"),
            (0.1, "1e-1"),
            (123456789012.0, "1.23456789e11"),
            (f64::MIN_POSITIVE, "2.22507386e-308"),
        ];
        for (x, want) in cases {
            assert_eq!(Approx(x).to_string(), want, "{x}");
        }
    }

    #[test]
    fn guard_turns_panics_into_internal() {
        let s = guard("lion_test", || panic!("boom"));
        assert_eq!(s, LionStatus::Internal);
        let mut out = [0u8; 128];
        let n = last_error(&mut out);
        let text = core::str::from_utf8(&out[..n]).unwrap();
        assert!(text.starts_with("lion_test: internal error"), "{text}");
        assert!(text.contains("boom"), "{text}");
    }

    #[test]
    fn every_status_has_a_name() {
        for s in -100..=1 {
            let name = LionStatus::name(s).to_str().unwrap();
            assert!(name.starts_with("LION_STATUS_") || name.starts_with('('));
        }
        assert_eq!(LionStatus::name(-16), c"LION_STATUS_UNSUPPORTED");
    }
}

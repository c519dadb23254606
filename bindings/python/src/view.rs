//! Views of Python arrays: where a torch tensor's or a numpy array's buffer becomes a description
//! (address, length, dtype, shape) that is checked, and — in [`View::slice_mut`] and
//! [`View::slice_ref`], the only place — a Rust slice. Also the optimizer's own buffers
//! ([`Pinned`] bytearrays, and the [`StepCounts`] in one of them): the only raw pointer reads
//! and writes of the crate are in this file.
//!
//! Three sources, tried in this order:
//!
//! 1. The DLPack C exchange API (`type(obj).__dlpack_c_exchange_api__`, DLPack 1.2+; torch has it
//!    since 2.10): a C function fills a `DLTensor` on our stack, without allocating and without
//!    running Python code. About 40 ns per tensor: this is what keeps a 148-tensor
//!    `optimizer.step()` cheap.
//! 2. numpy's `__array_interface__` (numpy arrays, and ml_dtypes' bfloat16 arrays).
//! 3. For torch tensors of versions without the exchange API: `torch._C._to_dlpack` (an owning
//!    `DLManagedTensor` capsule, kept alive until the step is over).

use std::ffi::{CStr, c_int, c_void};

use lion_optim::{Dtype, MomentumMut, MomentumRef, Q8_BLOCK, Q8Mut, Q8Ref, SliceMut, SliceRef};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyDict, PyMemoryView, PyTuple};
use pyo3::{ffi, intern};

// ------------------------------------------------------------------------------------------------
// DLPack 1.x structures (dlpack.h), laid out exactly as in C.

#[repr(C)]
#[derive(Clone, Copy)]
struct DlDevice {
    device_type: i32,
    device_id: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct DlDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct DlTensor {
    data: *mut c_void,
    device: DlDevice,
    ndim: i32,
    dtype: DlDataType,
    shape: *const i64,
    strides: *const i64,
    byte_offset: u64,
}

#[repr(C)]
struct DlManagedTensor {
    dl_tensor: DlTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DlManagedTensor)>,
}

#[repr(C)]
struct DlPackVersion {
    major: u32,
    minor: u32,
}

#[repr(C)]
struct ExchangeApiHeader {
    version: DlPackVersion,
    prev_api: *const ExchangeApiHeader,
}

type DlTensorFromPyObject = unsafe extern "C" fn(*mut c_void, *mut DlTensor) -> c_int;

/// `DLPackExchangeAPI` of DLPack 1.x: the header, then five function pointers (we call one).
#[repr(C)]
struct ExchangeApi {
    header: ExchangeApiHeader,
    managed_tensor_allocator: *const c_void,
    managed_tensor_from_py_object_no_sync: *const c_void,
    managed_tensor_to_py_object_no_sync: *const c_void,
    dltensor_from_py_object_no_sync: Option<DlTensorFromPyObject>,
    current_work_stream: *const c_void,
}

const KDL_CPU: i32 = 1;
const KDL_FLOAT: u8 = 2;
const KDL_BFLOAT: u8 = 4;
const KDL_UINT: u8 = 1;

static USE_EXCHANGE_API: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Test hook: turn the DLPack exchange API off (to test the `_to_dlpack` fallback).
#[cfg(feature = "test-hooks")]
pub(crate) fn set_exchange_api_enabled(on: bool) {
    USE_EXCHANGE_API.store(on, std::sync::atomic::Ordering::Relaxed);
}

// ------------------------------------------------------------------------------------------------

/// What a step does with a buffer: reads it (gradients) or writes it (parameters, momentum).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Access {
    Read,
    Write,
}

/// What a buffer must hold: float elements (a parameter, gradient or momentum), or the `u8`
/// codes of 8-bit momentum ([`Exporter::q8`], the only place that asks for them).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Want {
    Floats,
    Codes,
}

/// Where a view's dimensions are in its [`Exporter`]'s arena (`n == u32::MAX`: not known).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    at: u32,
    n: u32,
}

impl Dims {
    const UNKNOWN: Dims = Dims { at: 0, n: u32::MAX };

    /// These dimensions in `arena` (None if not known).
    fn of(self, arena: &[i64]) -> Option<&[i64]> {
        if self.n == u32::MAX {
            return None;
        }
        let at = self.at as usize;
        arena.get(at..at + self.n as usize)
    }
}

/// A shape for messages: `(2, 3)`, `(3,)`, `()`.
pub(crate) struct ShapeStr<'a>(pub(crate) &'a [i64]);

impl std::fmt::Display for ShapeStr<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        if self.0.len() == 1 {
            f.write_str(",")?;
        }
        f.write_str(")")
    }
}

/// A checked description of a buffer: `len` elements of `dtype` from byte address `addr`,
/// dense (C-contiguous, or dense in another order: `channels_last`...), on the CPU, aligned for
/// `dtype`, `len * size <= isize::MAX`; `addr != 0` unless `len == 0`. The step pairs the
/// elements of a parameter, its gradient and its momentum in memory order, which is why their
/// layouts must agree (see [`Exporter::same_layout`]). (Small on purpose: a step makes three per
/// tensor.)
#[derive(Clone, Copy, Debug)]
pub(crate) struct View {
    pub(crate) addr: usize,
    pub(crate) len: usize,
    pub(crate) dtype: Dtype,
    dims: Dims,
    /// The element strides of a tensor dense in another order than C's, those of dimensions of
    /// size 1 set to 0 (two such tensors of one shape lay out their elements alike iff these
    /// agree); `UNKNOWN`: C-contiguous (or a flat buffer).
    strides: Dims,
}

impl View {
    /// An empty view (of no memory).
    pub(crate) fn empty() -> View {
        View {
            addr: 0,
            len: 0,
            dtype: Dtype::F32,
            dims: Dims::UNKNOWN,
            strides: Dims::UNKNOWN,
        }
    }

    /// Whether the elements are in C order (a flat buffer is).
    pub(crate) fn is_contiguous(&self) -> bool {
        self.strides.n == u32::MAX
    }

    /// Elements `[start, start + len)` of the buffer in memory order, as a flat view (None if
    /// out of range).
    pub(crate) fn part(&self, start: usize, len: usize) -> Option<View> {
        let end = start.checked_add(len)?;
        if end > self.len {
            return None;
        }
        Some(View {
            addr: if len == 0 {
                0
            } else {
                self.addr + start * self.dtype.size()
            },
            len,
            dtype: self.dtype,
            dims: Dims::UNKNOWN,
            strides: Dims::UNKNOWN,
        })
    }

    /// The byte range `[start, end)` of the buffer.
    pub(crate) fn range(&self) -> (usize, usize) {
        (self.addr, self.addr + self.len * self.dtype.size())
    }

    /// The buffer as a mutable slice.
    ///
    /// # Safety
    ///
    /// For the lifetime `'a`: the memory `[addr, addr + len * size)` must stay allocated (the
    /// array or tensor it came from stays alive and keeps its storage) and must not be read or
    /// written through any other reference (no other view of the same call overlaps it, and no
    /// other thread touches it).
    pub(crate) unsafe fn slice_mut<'a>(&self) -> SliceMut<'a> {
        // SAFETY: unless `len == 0`, `addr` is non-null and aligned for the element type, and
        // the byte length fits in isize (both checked when the view was made, see `finish`);
        // every bit pattern is a valid f32/f16/bf16, and the memory is initialized (it is the
        // contents of a tensor or array). Liveness and exclusivity for 'a are the caller's
        // contract.
        unsafe {
            match self.dtype {
                Dtype::F32 => SliceMut::F32(raw_mut(self.addr, self.len)),
                Dtype::F16 => SliceMut::F16(raw_mut(self.addr, self.len)),
                Dtype::Bf16 => SliceMut::Bf16(raw_mut(self.addr, self.len)),
            }
        }
    }

    /// The buffer as a shared slice.
    ///
    /// # Safety
    ///
    /// For the lifetime `'a`: the memory must stay allocated and must not be written through
    /// any other reference (no written view of the same call overlaps it, no other thread
    /// writes it).
    pub(crate) unsafe fn slice_ref<'a>(&self) -> SliceRef<'a> {
        // SAFETY: as in `slice_mut` (non-null unless empty, aligned, initialized, size
        // checked); liveness and the absence of writers for 'a are the caller's contract.
        unsafe {
            match self.dtype {
                Dtype::F32 => SliceRef::F32(raw_ref(self.addr, self.len)),
                Dtype::F16 => SliceRef::F16(raw_ref(self.addr, self.len)),
                Dtype::Bf16 => SliceRef::Bf16(raw_ref(self.addr, self.len)),
            }
        }
    }
}

/// The `len` elements of `T` at `addr` as a mutable slice; an empty slice (of no memory) when
/// `len == 0`, whatever `addr` is.
///
/// # Safety
///
/// Unless `len == 0`: `addr` is non-null and aligned for `T`, `len * size_of::<T>()` fits in
/// isize, the memory holds `len` initialized values of `T`, and for the lifetime `'a` it stays
/// allocated and is not read or written through any other reference.
unsafe fn raw_mut<'a, T>(addr: usize, len: usize) -> &'a mut [T] {
    if len == 0 {
        return &mut [];
    }
    // SAFETY: len > 0, so the caller's contract covers every requirement of
    // `from_raw_parts_mut`.
    unsafe { std::slice::from_raw_parts_mut(addr as *mut T, len) }
}

/// The `len` elements of `T` at `addr` as a shared slice; an empty slice (of no memory) when
/// `len == 0`, whatever `addr` is.
///
/// # Safety
///
/// As [`raw_mut`], except that for `'a` the memory must only not be written through any other
/// reference.
unsafe fn raw_ref<'a, T>(addr: usize, len: usize) -> &'a [T] {
    if len == 0 {
        return &[];
    }
    // SAFETY: len > 0, so the caller's contract covers every requirement of `from_raw_parts`.
    unsafe { std::slice::from_raw_parts(addr as *const T, len) }
}

// ------------------------------------------------------------------------------------------------
// Momentum: elements, or 8-bit blocks

/// The 8-bit momentum of a tensor (the optimizer's own: two pinned bytearrays): `len` u8 codes
/// from byte address `codes`, and `len.div_ceil(256)` f32 block scales from `absmax` (4-aligned),
/// the codes in the memory order of the parameter. Checked when made ([`Pinned::q8_view`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Q8View {
    codes: usize,
    absmax: usize,
    len: usize,
}

impl Q8View {
    /// The byte ranges of the codes and of the scales.
    fn ranges(&self) -> [(usize, usize); 2] {
        let blocks = self.len.div_ceil(Q8_BLOCK);
        [
            (self.codes, self.codes + self.len),
            (self.absmax, self.absmax + 4 * blocks),
        ]
    }
}

/// The momentum of one tensor in a step: a [`View`] of elements, or 8-bit blocks.
#[derive(Clone, Copy, Debug)]
pub(crate) enum MomView {
    Elems(View),
    Q8(Q8View),
}

impl MomView {
    /// The number of elements.
    pub(crate) fn len(&self) -> usize {
        match self {
            MomView::Elems(v) => v.len,
            MomView::Q8(q) => q.len,
        }
    }

    /// The byte ranges of its memory (one for elements, the codes and the scales for 8-bit).
    pub(crate) fn ranges(&self) -> Vec<(usize, usize)> {
        match self {
            MomView::Elems(v) => vec![v.range()],
            MomView::Q8(q) => q.ranges().to_vec(),
        }
    }

    /// Elements `[start, start + len)` (see [`View::part`]); 8-bit momentum only in whole
    /// blocks: `start` a multiple of 256, and `len` too unless the part ends at the end.
    pub(crate) fn part(&self, start: usize, len: usize) -> Option<MomView> {
        match self {
            MomView::Elems(v) => v.part(start, len).map(MomView::Elems),
            MomView::Q8(q) => {
                let end = start.checked_add(len)?;
                if end > q.len
                    || !start.is_multiple_of(Q8_BLOCK)
                    || !(len.is_multiple_of(Q8_BLOCK) || end == q.len)
                {
                    return None;
                }
                Some(MomView::Q8(if len == 0 {
                    Q8View {
                        codes: 0,
                        absmax: 0,
                        len: 0,
                    }
                } else {
                    Q8View {
                        codes: q.codes + start,
                        absmax: q.absmax + 4 * (start / Q8_BLOCK),
                        len,
                    }
                }))
            }
        }
    }

    /// The momentum for updating.
    ///
    /// # Safety
    ///
    /// As [`View::slice_mut`], for every byte range of [`MomView::ranges`].
    pub(crate) unsafe fn momentum_mut<'a>(&self) -> Result<MomentumMut<'a>, lion_optim::Error> {
        match self {
            // SAFETY: the caller's contract, as `slice_mut`'s.
            MomView::Elems(v) => Ok(unsafe { v.slice_mut() }.into()),
            MomView::Q8(q) => {
                let blocks = q.len.div_ceil(Q8_BLOCK);
                // SAFETY: unless `len == 0` (then both are empty: no blocks), `codes` and
                // `absmax` are non-null, `absmax` 4-aligned, both in range of their pinned
                // buffers (checked by `Pinned::q8_view` and kept by `part`, which cuts whole
                // blocks); every byte is a valid u8 and every bit pattern a valid f32, the
                // memory initialized (bytearrays). Liveness and exclusivity for 'a are the
                // caller's contract; the two ranges are disjoint (two bytearrays, or refused by
                // `check_overlap`).
                let (codes, absmax) =
                    unsafe { (raw_mut(q.codes, q.len), raw_mut(q.absmax, blocks)) };
                Ok(Q8Mut::new(codes, absmax)?.into())
            }
        }
    }

    /// The momentum for reading.
    ///
    /// # Safety
    ///
    /// As [`View::slice_ref`], for every byte range of [`MomView::ranges`].
    pub(crate) unsafe fn momentum_ref<'a>(&self) -> Result<MomentumRef<'a>, lion_optim::Error> {
        match self {
            // SAFETY: the caller's contract, as `slice_ref`'s.
            MomView::Elems(v) => Ok(unsafe { v.slice_ref() }.into()),
            MomView::Q8(q) => {
                let blocks = q.len.div_ceil(Q8_BLOCK);
                // SAFETY: as in `momentum_mut` (non-null unless empty, aligned, in range,
                // initialized); liveness and the absence of writers for 'a are the caller's
                // contract.
                let (codes, absmax) =
                    unsafe { (raw_ref(q.codes, q.len), raw_ref(q.absmax, blocks)) };
                Ok(Q8Ref::new(codes, absmax)?.into())
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The optimizer's own buffers

/// A `bytearray` the optimizer owns (a momentum buffer, the step counts), pinned: it holds a
/// `memoryview` of the bytearray, and a bytearray with an export refuses to be resized
/// (`BufferError`), so its data stays where it is, and alive, as long as this value exists.
/// Nothing else holds that memoryview, so nothing can release it early.
pub(crate) struct Pinned {
    _export: Py<PyMemoryView>,
    addr: usize,
    bytes: usize,
}

impl Pinned {
    pub(crate) fn new(buf: &Bound<'_, PyByteArray>) -> PyResult<Pinned> {
        let export = PyMemoryView::from(buf.as_any())?;
        // Read after the export exists: from now on the buffer cannot move.
        let (addr, bytes) = (buf.data() as usize, buf.len());
        Ok(Pinned {
            _export: export.unbind(),
            addr,
            bytes,
        })
    }

    /// A view of its first `len` elements of `dtype` (checked: they fit, and see [`finish`]).
    pub(crate) fn view(&self, len: usize, dtype: Dtype) -> Result<View, ViewError> {
        if len.checked_mul(dtype.size()).is_none_or(|b| b > self.bytes) {
            return Err(ViewError::Value(format!(
                "is a buffer of {} bytes, too small for {len} {dtype} elements",
                self.bytes
            )));
        }
        finish(
            self.addr,
            len,
            dtype,
            dtype.size(),
            Dims::UNKNOWN,
            Dims::UNKNOWN,
        )
    }

    /// A view of 8-bit momentum of `len` elements: the first `len` bytes of `codes`, and the
    /// first `len.div_ceil(256)` f32 of `absmax` (checked: they fit, non-null, aligned).
    pub(crate) fn q8_view(
        codes: &Pinned,
        absmax: &Pinned,
        len: usize,
    ) -> Result<Q8View, ViewError> {
        let blocks = len.div_ceil(Q8_BLOCK);
        if len > codes.bytes || len > isize::MAX as usize {
            return Err(ViewError::Value(format!(
                "is a buffer of {} bytes, too small for {len} codes",
                codes.bytes
            )));
        }
        if blocks * 4 > absmax.bytes {
            return Err(ViewError::Value(format!(
                "has scales of {} bytes, too few for {blocks} blocks",
                absmax.bytes
            )));
        }
        if len == 0 {
            return Ok(Q8View {
                codes: 0,
                absmax: 0,
                len: 0,
            });
        }
        if codes.addr == 0 || absmax.addr == 0 || !absmax.addr.is_multiple_of(4) {
            return Err(ViewError::Runtime(format!(
                "has a null or misaligned buffer (codes at {:#x}, scales at {:#x})",
                codes.addr, absmax.addr
            )));
        }
        if codes.addr.checked_add(len).is_none() || absmax.addr.checked_add(blocks * 4).is_none() {
            return Err(ViewError::Value(format!("is too large ({len} elements)")));
        }
        Ok(Q8View {
            codes: codes.addr,
            absmax: absmax.addr,
            len,
        })
    }
}

/// The step counts of an optimizer's parameters: one native-endian i64 per parameter at the
/// start of a pinned bytearray, which Python views as the 0-dim int64 tensors `state["step"]`.
pub(crate) struct StepCounts {
    buf: Pinned,
    len: usize,
}

impl StepCounts {
    /// The counts of `len` parameters in `buf` (at least 8 bytes each, 8-aligned).
    pub(crate) fn new(buf: &Bound<'_, PyByteArray>, len: usize) -> PyResult<StepCounts> {
        let buf = Pinned::new(buf)?;
        let fits = len.checked_mul(8).is_some_and(|b| b <= buf.bytes);
        if !fits || (len > 0 && (buf.addr == 0 || !buf.addr.is_multiple_of(8))) {
            return Err(PyValueError::new_err(format!(
                "step counts: a buffer of {} bytes at {:#x} cannot hold {len} aligned i64",
                buf.bytes, buf.addr
            )));
        }
        Ok(StepCounts { buf, len })
    }

    /// Count `k` (None if `k` is out of range). The `Python` token: read with the GIL held.
    pub(crate) fn get(&self, _py: Python<'_>, k: usize) -> Option<i64> {
        if k >= self.len {
            return None;
        }
        // SAFETY: `k < len`, and `new` checked that `len` i64 fit in the buffer from `addr`,
        // which is non-null and 8-aligned; the buffer is pinned (alive, never moved) while
        // `self` is. Every bit pattern is an i64. Python code writes these bytes only through
        // tensors with the GIL held, which we hold too (writing `state["step"]` from a thread
        // that released the GIL inside a torch op during a step is unsupported, as for the
        // parameters).
        Some(unsafe { std::ptr::read((self.buf.addr as *const i64).add(k)) })
    }

    /// Sets count `k`; false (nothing written) if `k` is out of range.
    pub(crate) fn set(&self, _py: Python<'_>, k: usize, value: i64) -> bool {
        if k >= self.len {
            return false;
        }
        // SAFETY: as in `get`; no Rust reference to these bytes exists (they are only ever
        // accessed through this type, by value).
        unsafe { std::ptr::write((self.buf.addr as *mut i64).add(k), value) };
        true
    }
}

// ------------------------------------------------------------------------------------------------

/// Why an object could not be viewed, and which Python exception says so.
#[derive(Debug)]
pub(crate) enum ViewError {
    /// A wrong type or dtype: `TypeError`.
    Type(String),
    /// A bad value (read-only array): `ValueError`.
    Value(String),
    /// Device, layout, contiguity, alignment: `RuntimeError`.
    Runtime(String),
    /// Another Python error, raised as it is.
    Py(PyErr),
}

impl ViewError {
    /// The Python exception, with `context` (which tensor, which role: the subject of the
    /// message) in front.
    pub(crate) fn into_pyerr(self, context: &str) -> PyErr {
        match self {
            Self::Type(m) => PyTypeError::new_err(format!("{context} {m}")),
            Self::Value(m) => PyValueError::new_err(format!("{context} {m}")),
            Self::Runtime(m) => PyRuntimeError::new_err(format!("{context} {m}")),
            Self::Py(e) => e,
        }
    }
}

/// Makes views, remembering per call which Python types have the DLPack exchange API.
pub(crate) struct Exporter<'py> {
    py: Python<'py>,
    /// (type object address, its exchange function or None), for the few types seen in a call.
    types: Vec<(usize, Option<DlTensorFromPyObject>)>,
    /// Owning capsules of the `_to_dlpack` fallback: kept alive until the exporter is dropped.
    keep: Vec<Bound<'py, PyAny>>,
    to_dlpack: Option<Bound<'py, PyAny>>,
    /// The dimensions of every view made, one after another.
    dims: Vec<i64>,
}

impl<'py> Exporter<'py> {
    pub(crate) fn new(py: Python<'py>) -> Self {
        Self {
            py,
            types: Vec::with_capacity(4),
            keep: Vec::new(),
            to_dlpack: None,
            dims: Vec::with_capacity(256),
        }
    }

    /// A view's dimensions (None if not known).
    pub(crate) fn dims(&self, v: &View) -> Option<&[i64]> {
        v.dims.of(&self.dims)
    }

    /// Whether two views have the same shape (unknown shapes never match).
    pub(crate) fn same_shape(&self, a: &View, b: &View) -> bool {
        matches!((self.dims(a), self.dims(b)), (Some(x), Some(y)) if x == y)
    }

    /// A view's normalized element strides (see [`View::strides`]); None: C-contiguous.
    pub(crate) fn layout(&self, v: &View) -> Option<&[i64]> {
        v.strides.of(&self.dims)
    }

    /// Whether two views of the same shape lay out their elements alike in memory (both
    /// C-contiguous, or the same strides): element `i` in memory of one is then the same
    /// element (index) as element `i` of the other.
    pub(crate) fn same_layout(&self, a: &View, b: &View) -> bool {
        self.layout(a) == self.layout(b)
    }

    /// A view's shape for messages.
    pub(crate) fn shape_str(&self, v: &View) -> String {
        match self.dims(v) {
            Some(d) => ShapeStr(d).to_string(),
            None => format!("({},)", v.len),
        }
    }

    /// A view's element strides for messages (C-contiguous ones computed from the shape; those
    /// of dimensions of size 1 are shown as 0 for a tensor dense in another order).
    pub(crate) fn strides_str(&self, v: &View) -> String {
        if let Some(s) = self.layout(v) {
            return ShapeStr(s).to_string();
        }
        let dims = self.dims(v).unwrap_or(&[]);
        let mut strides = vec![0i64; dims.len()];
        let mut acc = 1i64;
        for (s, &d) in strides.iter_mut().zip(dims).rev() {
            *s = acc;
            acc = acc.saturating_mul(d.max(1));
        }
        ShapeStr(&strides).to_string()
    }

    fn push_layout(&mut self, layout: &Layout) -> Dims {
        match layout {
            Layout::Dense(strides) => self.push_dims(strides),
            _ => Dims::UNKNOWN,
        }
    }

    fn push_dims(&mut self, dims: &[i64]) -> Dims {
        let at = self.dims.len();
        match (u32::try_from(at), u32::try_from(dims.len())) {
            (Ok(at), Ok(n)) if n != u32::MAX => {
                self.dims.extend_from_slice(dims);
                Dims { at, n }
            }
            _ => Dims::UNKNOWN,
        }
    }

    /// The exchange function of `obj`'s type, if it has the DLPack C exchange API (major version
    /// 1, with `dltensor_from_py_object_no_sync`).
    fn exchange_fn(&mut self, obj: &Bound<'py, PyAny>) -> Option<DlTensorFromPyObject> {
        let ty = obj.get_type();
        let key = ty.as_ptr() as usize;
        if let Some(&(_, f)) = self.types.iter().find(|(t, _)| *t == key) {
            return f;
        }
        let f = if USE_EXCHANGE_API.load(std::sync::atomic::Ordering::Relaxed) {
            lookup_exchange_fn(&ty)
        } else {
            None
        };
        // The type stays alive while `obj` (held by the caller for the whole call) does, so its
        // address cannot be reused by another type during this call.
        self.types.push((key, f));
        f
    }

    /// A checked view of `obj` for `access`.
    pub(crate) fn view(
        &mut self,
        obj: &Bound<'py, PyAny>,
        access: Access,
    ) -> Result<View, ViewError> {
        let view = self.view_any(obj, access, Want::Floats);
        if let Err(ViewError::Runtime(_)) = &view
            && is_dtensor(obj)
        {
            // A tensor subclass that wraps others has no data of its own.
            return Err(ViewError::Type(
                "is a DTensor: step its local shard (.to_local()) with its global element \
                 offset (`offsets`), or use lion_optim.torch.Lion, which does"
                    .into(),
            ));
        }
        view
    }

    /// A checked view of 8-bit momentum given as two arrays for the parameter `p`: `codes`, one
    /// `u8` per element, with the parameter's number of elements (and its shape and layout if
    /// the parameter is not C-contiguous or `codes` has its shape); `absmax`, the f32 block
    /// scales, C-contiguous, one per 256 elements (`len.div_ceil(256)`); both for `access`. The
    /// error names which of the two is wrong (`"codes"` or `"absmax"`).
    pub(crate) fn q8(
        &mut self,
        codes: &Bound<'py, PyAny>,
        absmax: &Bound<'py, PyAny>,
        p: &View,
        access: Access,
    ) -> Result<Q8View, (&'static str, ViewError)> {
        // A view of bytes: its `dtype` means nothing and it never leaves this function.
        let c = self
            .view_any(codes, access, Want::Codes)
            .map_err(|e| ("codes", e))?;
        let a = self
            .view_any(absmax, access, Want::Floats)
            .map_err(|e| ("absmax", e))?;
        if c.len != p.len {
            return Err((
                "codes",
                ViewError::Value(format!(
                    "has {} elements, the parameter {} (shape {})",
                    c.len,
                    p.len,
                    self.shape_str(p)
                )),
            ));
        }
        let laid_alike = if self.same_shape(p, &c) {
            self.same_layout(p, &c)
        } else {
            p.is_contiguous() && c.is_contiguous()
        };
        if !laid_alike {
            return Err((
                "codes",
                ViewError::Value(format!(
                    "has shape {} and strides {}, the parameter shape {} and strides {}: the \
                     codes must have the parameter's shape and memory layout, or both be \
                     C-contiguous",
                    self.shape_str(&c),
                    self.strides_str(&c),
                    self.shape_str(p),
                    self.strides_str(p)
                )),
            ));
        }
        let blocks = p.len.div_ceil(Q8_BLOCK);
        if a.dtype != Dtype::F32 || !a.is_contiguous() || a.len != blocks {
            return Err((
                "absmax",
                ViewError::Value(format!(
                    "must be a C-contiguous float32 array of {blocks} block scales (one per \
                     {Q8_BLOCK} elements of the parameter's {}), got {} {} elements",
                    p.len, a.len, a.dtype
                )),
            ));
        }
        Ok(Q8View {
            codes: c.addr,
            absmax: a.addr,
            len: c.len,
        })
    }

    fn view_any(
        &mut self,
        obj: &Bound<'py, PyAny>,
        access: Access,
        want: Want,
    ) -> Result<View, ViewError> {
        if let Some(f) = self.exchange_fn(obj) {
            let mut t = DlTensor {
                data: std::ptr::null_mut(),
                device: DlDevice {
                    device_type: 0,
                    device_id: 0,
                },
                ndim: 0,
                dtype: DlDataType {
                    code: 0,
                    bits: 0,
                    lanes: 0,
                },
                shape: std::ptr::null(),
                strides: std::ptr::null(),
                byte_offset: 0,
            };
            // SAFETY: `f` is the producer's `dltensor_from_py_object_no_sync`, found on `obj`'s
            // own type as the DLPack spec prescribes; it is called with the GIL held (we are
            // attached: `self.py`), a live object, and a pointer to a DLTensor on our stack
            // that it fills in. It returns 0, or -1 with a Python exception set.
            let rc = unsafe { f(obj.as_ptr().cast(), &mut t) };
            if rc != 0 {
                let err = PyErr::take(self.py);
                return Err(diagnose(obj, err));
            }
            // SAFETY: on success the producer filled `t`; its shape and strides arrays are
            // valid until control returns to Python, and we read them right away.
            return unsafe { self.view_dltensor(&t, access, want) };
        }
        if let Some(ai) = obj
            .getattr_opt(intern!(self.py, "__array_interface__"))
            .map_err(ViewError::Py)?
        {
            return self.array_interface(obj, &ai, access, want);
        }
        if is_torch_tensor(obj) {
            return self.view_to_dlpack(obj, access, want);
        }
        Err(ViewError::Type(format!(
            "expected a torch.Tensor or a numpy.ndarray, got {}",
            type_name(obj)
        )))
    }

    /// The fallback for torch tensors without the exchange API: an owning DLPack capsule.
    fn view_to_dlpack(
        &mut self,
        obj: &Bound<'py, PyAny>,
        access: Access,
        want: Want,
    ) -> Result<View, ViewError> {
        let py = self.py;
        let to_dlpack = match &self.to_dlpack {
            Some(f) => f.clone(),
            None => {
                let f = py
                    .import(intern!(py, "torch"))
                    .and_then(|t| t.getattr(intern!(py, "_C")))
                    .and_then(|c| c.getattr(intern!(py, "_to_dlpack")))
                    .map_err(ViewError::Py)?;
                self.to_dlpack = Some(f.clone());
                f
            }
        };
        let capsule = match to_dlpack.call1((obj,)) {
            Ok(c) => c,
            Err(e) => return Err(diagnose(obj, Some(e))),
        };
        // SAFETY: `PyCapsule_GetPointer` checks that `capsule` is a capsule named "dltensor"
        // (a `DLManagedTensor*` by the DLPack protocol) and sets an exception otherwise.
        let ptr = unsafe { ffi::PyCapsule_GetPointer(capsule.as_ptr(), c"dltensor".as_ptr()) };
        if ptr.is_null() {
            return Err(ViewError::Py(PyErr::fetch(py)));
        }
        // SAFETY: `ptr` is the live `DLManagedTensor` of the capsule, which we keep (and so the
        // tensor's storage, which it owns) until the exporter is dropped after the step.
        let view = unsafe {
            self.view_dltensor(&(*(ptr as *const DlManagedTensor)).dl_tensor, access, want)
        };
        self.keep.push(capsule);
        view
    }
}

impl Exporter<'_> {
    /// Checks a filled DLTensor and makes the view.
    ///
    /// # Safety
    ///
    /// `t.shape` and `t.strides` must point to `t.ndim` valid elements (strides may be NULL,
    /// meaning contiguous, in DLPack < 1.2).
    unsafe fn view_dltensor(
        &mut self,
        t: &DlTensor,
        access: Access,
        want: Want,
    ) -> Result<View, ViewError> {
        let _ = access; // torch tensors carry no read-only flag here
        if t.device.device_type != KDL_CPU {
            let dev = match t.device.device_type {
                2 => "a CUDA",
                3 => "a CUDA host",
                4 => "an OpenCL",
                7 => "a Vulkan",
                8 => "a Metal",
                10 => "a ROCm",
                13 => "a oneAPI",
                _ => "a non-CPU",
            };
            return Err(ViewError::Runtime(format!(
                "is {dev} tensor (DLPack device type {}); lion_optim steps CPU tensors only",
                t.device.device_type
            )));
        }
        let (dtype, unit) = match want {
            Want::Floats => match dl_dtype(t.dtype) {
                Some(d) => (d, d.size()),
                None => {
                    return Err(ViewError::Type(format!(
                        "has dtype {}; supported: float32, bfloat16, float16",
                        dl_dtype_name(t.dtype)
                    )));
                }
            },
            Want::Codes if (t.dtype.code, t.dtype.bits, t.dtype.lanes) == (KDL_UINT, 8, 1) => {
                (Dtype::F32, 1)
            }
            Want::Codes => {
                return Err(ViewError::Type(format!(
                    "has dtype {}; 8-bit momentum codes are uint8",
                    dl_dtype_name(t.dtype)
                )));
            }
        };
        let ndim = usize::try_from(t.ndim).unwrap_or(0);
        let dims: &[i64] = if ndim == 0 || t.shape.is_null() {
            &[]
        } else {
            // SAFETY: the caller's contract: `shape` points to `ndim` elements.
            unsafe { std::slice::from_raw_parts(t.shape, ndim) }
        };
        let strides: Option<&[i64]> = if ndim == 0 || t.strides.is_null() {
            None
        } else {
            // SAFETY: the caller's contract: `strides` points to `ndim` elements.
            Some(unsafe { std::slice::from_raw_parts(t.strides, ndim) })
        };
        let len = numel(dims)
            .ok_or_else(|| ViewError::Value(format!("has an invalid shape {}", ShapeStr(dims))))?;
        let layout = match strides {
            None => Layout::Contiguous,
            Some(s) => layout(dims, s, 1),
        };
        if let Layout::NotDense = layout {
            return Err(ViewError::Runtime(format!(
                "is not dense (shape {}, strides {}): its elements do not fill one block of \
                 memory (an expanded, strided or overlapping view); pass a .contiguous() copy",
                ShapeStr(dims),
                ShapeStr(strides.unwrap_or(&[]))
            )));
        }
        let addr = (t.data as usize).wrapping_add(t.byte_offset as usize);
        let d = self.push_dims(dims);
        let s = self.push_layout(&layout);
        finish(addr, len, dtype, unit, d, s)
    }

    /// A view through numpy's `__array_interface__` (version 3).
    fn array_interface<'py>(
        &mut self,
        obj: &Bound<'py, PyAny>,
        ai: &Bound<'py, PyAny>,
        access: Access,
        want: Want,
    ) -> Result<View, ViewError> {
        let py = obj.py();
        let ai = ai
            .cast::<PyDict>()
            .map_err(|_| ViewError::Type("has an __array_interface__ that is not a dict".into()))?;
        let get = |k: &Bound<'py, pyo3::types::PyString>| ai.get_item(k).map_err(ViewError::Py);
        let bad =
            |what: &str| ViewError::Type(format!("has an invalid __array_interface__ ({what})"));
        if let Some(mask) = get(intern!(py, "mask"))?
            && !mask.is_none()
        {
            return Err(ViewError::Type("is a masked array".into()));
        }
        let typestr: String = get(intern!(py, "typestr"))?
            .ok_or_else(|| bad("no typestr"))?
            .extract()
            .map_err(|_| bad("typestr"))?;
        let little = cfg!(target_endian = "little");
        if want == Want::Codes && typestr != "|u1" {
            return Err(ViewError::Type(format!(
                "has typestr {typestr}; 8-bit momentum codes are uint8 (|u1)"
            )));
        }
        let dtype = match typestr.as_str() {
            // Codes: bytes (the dtype means nothing for them, see `Exporter::q8`).
            "|u1" if want == Want::Codes => Dtype::F32,
            "<f4" | "=f4" if little => Dtype::F32,
            "<f2" | "=f2" if little => Dtype::F16,
            _ => {
                // ml_dtypes' bfloat16 has typestr '<V2': ask the dtype its name.
                let name: Option<String> = obj
                    .getattr(intern!(py, "dtype"))
                    .and_then(|d| d.getattr(intern!(py, "name")))
                    .and_then(|n| n.extract())
                    .ok();
                match name.as_deref() {
                    Some("bfloat16") if typestr.ends_with("V2") => Dtype::Bf16,
                    Some(n) => {
                        return Err(ViewError::Type(format!(
                            "has dtype {n} ({typestr}); supported: float32, bfloat16 \
                             (ml_dtypes), float16, in native byte order"
                        )));
                    }
                    None => {
                        return Err(ViewError::Type(format!(
                            "has typestr {typestr}; supported: float32, bfloat16, float16"
                        )));
                    }
                }
            }
        };
        let unit = match want {
            Want::Codes => 1,
            Want::Floats => dtype.size(),
        };
        let data = get(intern!(py, "data"))?.ok_or_else(|| bad("no data"))?;
        let data = data.cast::<PyTuple>().map_err(|_| {
            ViewError::Type("exposes its data as a buffer object, not (address, read-only)".into())
        })?;
        let (addr, readonly): (usize, bool) = data.extract().map_err(|_| bad("data"))?;
        if readonly && access == Access::Write {
            return Err(ViewError::Value(
                "is read-only (it is written in place)".into(),
            ));
        }
        let dims: Vec<i64> = get(intern!(py, "shape"))?
            .ok_or_else(|| bad("no shape"))?
            .extract()
            .map_err(|_| bad("shape"))?;
        let len = numel(&dims)
            .ok_or_else(|| ViewError::Value(format!("has an invalid shape {}", ShapeStr(&dims))))?;
        let mut layout_ = Layout::Contiguous;
        if let Some(strides) = get(intern!(py, "strides"))?
            && !strides.is_none()
        {
            let strides: Vec<i64> = strides.extract().map_err(|_| bad("strides"))?;
            if strides.len() != dims.len() {
                return Err(bad("strides"));
            }
            layout_ = layout(&dims, &strides, unit as i64);
            if let Layout::NotDense = layout_ {
                return Err(ViewError::Runtime(format!(
                    "is not dense (shape {}, byte strides {}): its elements do not fill one \
                     block of memory; pass np.ascontiguousarray(...)",
                    ShapeStr(&dims),
                    ShapeStr(&strides)
                )));
            }
        }
        let d = self.push_dims(&dims);
        let s = self.push_layout(&layout_);
        finish(addr, len, dtype, unit, d, s)
    }
}

/// `type.__dlpack_c_exchange_api__`'s `dltensor_from_py_object_no_sync`, if usable.
fn lookup_exchange_fn(ty: &Bound<'_, pyo3::types::PyType>) -> Option<DlTensorFromPyObject> {
    let py = ty.py();
    let capsule = ty
        .getattr_opt(intern!(py, "__dlpack_c_exchange_api__"))
        .ok()
        .flatten()?;
    const NAME: &CStr = c"dlpack_exchange_api";
    // SAFETY: `PyCapsule_GetPointer` checks the object is a capsule with this name (setting an
    // exception, which we clear, if not).
    let ptr = unsafe { ffi::PyCapsule_GetPointer(capsule.as_ptr(), NAME.as_ptr()) };
    if ptr.is_null() {
        let _ = PyErr::take(py);
        return None;
    }
    // Walk the chain of API versions for the one of major version 1 (our layout).
    let mut header = ptr as *const ExchangeApiHeader;
    while !header.is_null() {
        // SAFETY: by the DLPack spec the capsule holds a `DLPackExchangeAPI*` that lives for
        // the whole process, starting with the stable header; `prev_api` is NULL or another.
        let h = unsafe { &*header };
        if h.version.major == 1 && h.version.minor >= 1 {
            // SAFETY: major version 1 has the `DLPackExchangeAPI` layout declared above.
            let api = unsafe { &*(header as *const ExchangeApi) };
            return api.dltensor_from_py_object_no_sync;
        }
        header = h.prev_api;
    }
    None
}

/// Whether `obj` is a `torch.distributed.tensor.DTensor` (it has a `_local_tensor`).
pub(crate) fn is_dtensor(obj: &Bound<'_, PyAny>) -> bool {
    obj.hasattr(intern!(obj.py(), "_local_tensor"))
        .unwrap_or(false)
}

fn is_torch_tensor(obj: &Bound<'_, PyAny>) -> bool {
    let py = obj.py();
    let Ok(modules) = py
        .import(intern!(py, "sys"))
        .and_then(|s| s.getattr(intern!(py, "modules")))
    else {
        return false;
    };
    let Ok(Some(torch)) = modules
        .cast_into::<PyDict>()
        .map_err(PyErr::from)
        .and_then(|m| m.get_item(intern!(py, "torch")))
    else {
        return false;
    };
    torch
        .getattr(intern!(py, "Tensor"))
        .and_then(|t| obj.is_instance(&t))
        .unwrap_or(false)
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .fully_qualified_name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "an unknown type".into())
}

/// The element type of a DLPack dtype, if supported.
fn dl_dtype(d: DlDataType) -> Option<Dtype> {
    match (d.code, d.bits, d.lanes) {
        (KDL_FLOAT, 32, 1) => Some(Dtype::F32),
        (KDL_FLOAT, 16, 1) => Some(Dtype::F16),
        (KDL_BFLOAT, 16, 1) => Some(Dtype::Bf16),
        _ => None,
    }
}

fn dl_dtype_name(d: DlDataType) -> String {
    let kind = match d.code {
        0 => "int",
        1 => "uint",
        2 => "float",
        4 => "bfloat",
        5 => "complex",
        6 => "bool",
        7..=14 => "float8",
        _ => "dtype code ",
    };
    if d.code > 14 {
        format!("dtype code {} ({} bits)", d.code, d.bits)
    } else if d.lanes == 1 {
        format!("{kind}{}", d.bits)
    } else {
        format!("{kind}{}x{}", d.bits, d.lanes)
    }
}

/// The common checks: null, alignment, size (`unit`: the bytes of an element, `dtype.size()`
/// except for the codes of [`Exporter::q8`]).
fn finish(
    addr: usize,
    len: usize,
    dtype: Dtype,
    unit: usize,
    dims: Dims,
    strides: Dims,
) -> Result<View, ViewError> {
    if len == 0 {
        return Ok(View {
            addr: 0,
            len: 0,
            dtype,
            dims,
            strides: Dims::UNKNOWN,
        });
    }
    if addr == 0 {
        return Err(ViewError::Runtime("has no data (null data pointer)".into()));
    }
    if !addr.is_multiple_of(unit) {
        return Err(ViewError::Runtime(format!(
            "is misaligned: its data at {addr:#x} is not a multiple of {unit} bytes"
        )));
    }
    match len.checked_mul(unit) {
        Some(bytes) if bytes <= isize::MAX as usize && addr.checked_add(bytes).is_some() => {}
        _ => return Err(ViewError::Value(format!("is too large ({len} elements)"))),
    }
    Ok(View {
        addr,
        len,
        dtype,
        dims,
        strides,
    })
}

fn numel(dims: &[i64]) -> Option<usize> {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
}

/// How an array's elements lie in memory.
#[derive(Debug, PartialEq, Eq)]
enum Layout {
    /// In C order (an empty array is).
    Contiguous,
    /// Filling one block of memory in another order (a permutation of the dimensions, as
    /// `channels_last`): the element strides, those of dimensions of size 1 set to 0.
    Dense(Vec<i64>),
    /// Anything else: gaps (a strided slice), overlaps (an expanded view: stride 0), negative
    /// strides.
    NotDense,
}

/// The layout of an array of `dims` with `strides` (in units of `unit`: 1 for element strides,
/// the element size for byte strides).
fn layout(dims: &[i64], strides: &[i64], unit: i64) -> Layout {
    if dims.contains(&0) || c_contiguous(dims, strides, unit) {
        return Layout::Contiguous;
    }
    if strides.len() != dims.len() || unit <= 0 {
        return Layout::NotDense;
    }
    let mut elem = Vec::with_capacity(dims.len());
    let mut sized: Vec<(i64, i64)> = Vec::with_capacity(dims.len()); // (stride, size)
    for (&d, &s) in dims.iter().zip(strides) {
        if d == 1 {
            elem.push(0);
            continue;
        }
        if s <= 0 || s % unit != 0 {
            return Layout::NotDense;
        }
        elem.push(s / unit);
        sized.push((s / unit, d));
    }
    // Dense iff, from the smallest stride up, each stride is the product of the sizes of the
    // dimensions with smaller strides (1 for the first).
    sized.sort_unstable();
    let mut expected = 1i64;
    for (s, d) in sized {
        if s != expected {
            return Layout::NotDense;
        }
        expected = expected.saturating_mul(d);
    }
    Layout::Dense(elem)
}

/// Whether `strides` (in units of `unit`) are those of a C-contiguous array of `dims`; the
/// strides of dimensions of size 1 do not matter, and an empty array is contiguous.
fn c_contiguous(dims: &[i64], strides: &[i64], unit: i64) -> bool {
    if dims.contains(&0) {
        return true;
    }
    let mut expected = unit;
    for (&d, &s) in dims.iter().zip(strides).rev() {
        if d != 1 {
            if s != expected {
                return false;
            }
            expected = expected.saturating_mul(d);
        }
    }
    true
}

/// Why torch refused to export `obj`: a clear message for sparse, meta, quantized or other
/// tensors without plain strided storage (only on the error path, so it may be slow).
fn diagnose(obj: &Bound<'_, PyAny>, err: Option<PyErr>) -> ViewError {
    let py = obj.py();
    let attr = |name: &Bound<'_, pyo3::types::PyString>| -> Option<String> {
        obj.getattr(name)
            .ok()
            .and_then(|v| v.str().ok())
            .map(|s| s.to_string())
    };
    if let Some(layout) = attr(intern!(py, "layout"))
        && layout != "torch.strided"
    {
        return ViewError::Runtime(format!(
            "has layout {layout}: sparse and other non-strided tensors are not supported"
        ));
    }
    if let Some(device) = attr(intern!(py, "device")) {
        if device == "meta" {
            return ViewError::Runtime("is a meta tensor (it has no data)".into());
        }
        if !device.starts_with("cpu") {
            return ViewError::Runtime(format!(
                "is on device {device}; lion_optim steps CPU tensors only"
            ));
        }
    }
    if let Some(dtype) = attr(intern!(py, "dtype"))
        && !matches!(
            dtype.as_str(),
            "torch.float32" | "torch.bfloat16" | "torch.float16"
        )
    {
        return ViewError::Type(format!(
            "has dtype {dtype}; supported: float32, bfloat16, float16"
        ));
    }
    let detail = err
        .map(|e| {
            let s = e.value(py).to_string();
            s.lines().next().unwrap_or("").to_string()
        })
        .unwrap_or_default();
    ViewError::Runtime(format!("cannot be viewed as a CPU buffer: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguity() {
        assert!(c_contiguous(&[3, 4], &[4, 1], 1));
        assert!(!c_contiguous(&[3, 4], &[1, 3], 1));
        assert!(c_contiguous(&[1, 4], &[99, 1], 1));
        assert!(c_contiguous(&[0, 4], &[7, 9], 1));
        assert!(!c_contiguous(&[4], &[0], 1));
        assert!(c_contiguous(&[2, 3], &[12, 4], 4));
    }

    #[test]
    fn layouts() {
        assert_eq!(layout(&[3, 4], &[4, 1], 1), Layout::Contiguous);
        assert_eq!(layout(&[3, 4], &[1, 3], 1), Layout::Dense(vec![1, 3]));
        // channels_last (N, C, H, W) = (2, 3, 4, 5): strides (60, 1, 15, 3)
        assert_eq!(
            layout(&[2, 3, 4, 5], &[60, 1, 15, 3], 1),
            Layout::Dense(vec![60, 1, 15, 3])
        );
        // size-1 dimensions: any stride, normalized to 0
        assert_eq!(
            layout(&[1, 3, 4, 5], &[7, 1, 15, 3], 1),
            Layout::Dense(vec![0, 1, 15, 3])
        );
        // byte strides: a transposed f32 matrix; every other f32 of one (gaps)
        assert_eq!(layout(&[2, 3], &[4, 8], 4), Layout::Dense(vec![1, 2]));
        assert_eq!(layout(&[2, 3], &[8, 24], 4), Layout::NotDense);
        assert_eq!(layout(&[4], &[0], 1), Layout::NotDense); // expanded
        assert_eq!(layout(&[4, 3], &[6, 1], 1), Layout::NotDense); // gaps
        assert_eq!(layout(&[4, 3], &[1, 2], 1), Layout::NotDense); // overlap
        assert_eq!(layout(&[4], &[-1], 1), Layout::NotDense);
        assert_eq!(layout(&[2, 3], &[6, 2], 4), Layout::NotDense); // misaligned byte strides
        assert_eq!(layout(&[0, 3], &[5, 7], 1), Layout::Contiguous);
    }

    #[test]
    fn shapes() {
        assert_eq!(ShapeStr(&[3]).to_string(), "(3,)");
        assert_eq!(ShapeStr(&[2, 3]).to_string(), "(2, 3)");
        assert_eq!(ShapeStr(&[]).to_string(), "()");
        assert_eq!(numel(&[2, -1]), None);
        assert_eq!(numel(&[]), Some(1));
    }
}

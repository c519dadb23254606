//! Caller memory: every pointer checked (NULL, alignment, a length the address space can hold)
//! before it becomes a slice, and buffers that a call writes checked not to overlap any other
//! buffer of the call — all before anything is written.

use core::ffi::c_void;
use core::ptr::NonNull;

use lion::{Dtype, SliceMut, SliceRef, bf16, f16};

use crate::status::{Failure, LionStatus};
use crate::types::Role;

/// A buffer of a call, checked: its byte range (empty for a length of 0: it is never
/// dereferenced then) and whether the call writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) written: bool,
    /// The caller's label of the buffer (e.g. `tensor * 2 + role`), reported on overlap.
    pub(crate) who: usize,
}

/// Checks that `ptr` can hold `len` elements of `size` bytes aligned to `align`: not NULL
/// (unless `len == 0`), aligned (unless `len == 0`), and `len * size` bytes neither larger
/// than `isize::MAX` nor past the end of the address space. `what` names the buffer in the
/// message.
#[inline]
pub(crate) fn check(
    ptr: *const c_void,
    len: usize,
    size: usize,
    align: usize,
    what: &dyn core::fmt::Display,
) -> Result<(usize, usize), Failure> {
    if len == 0 {
        return Ok((0, 0));
    }
    let addr = ptr as usize;
    if ptr.is_null() {
        return Err(Failure::new(
            LionStatus::NullPointer,
            format_args!("{what} is NULL but its length is {len}"),
        ));
    }
    if !addr.is_multiple_of(align) {
        return Err(Failure::new(
            LionStatus::Misaligned,
            format_args!("{what} ({ptr:p}) is not aligned to {align} bytes, as its type needs"),
        ));
    }
    let end = len
        .checked_mul(size)
        .filter(|&bytes| bytes <= isize::MAX as usize)
        .and_then(|bytes| addr.checked_add(bytes));
    match end {
        Some(end) => Ok((addr, end)),
        None => Err(Failure::new(
            LionStatus::LengthMismatch,
            format_args!(
                "{what} ({ptr:p}) cannot hold {len} elements of {size} bytes: \
                 the range exceeds the address space"
            ),
        )),
    }
}

/// [`check`] for a buffer of `dtype`.
#[inline]
pub(crate) fn check_dtype(
    ptr: *const c_void,
    len: usize,
    dtype: Dtype,
    what: &dyn core::fmt::Display,
) -> Result<(usize, usize), Failure> {
    check(ptr, len, dtype.size(), dtype.size(), what)
}

/// Views `len` elements at `ptr` (a dangling, aligned pointer for `len == 0`).
///
/// # Safety
/// `ptr` passed [`check`] for `len` elements of `T`, and (the caller's contract in the header)
/// points to `len` initialized elements that nothing else reads or writes during the call.
#[inline]
pub(crate) unsafe fn raw_mut<'a, T>(ptr: *mut c_void, len: usize) -> &'a mut [T] {
    let ptr = if len == 0 {
        NonNull::<T>::dangling().as_ptr()
    } else {
        ptr.cast::<T>()
    };
    // SAFETY: non-null and aligned (checked, or dangling for an empty slice); `len * size_of T`
    // <= isize::MAX (checked); valid and unaliased for the call (the function's contract).
    unsafe { core::slice::from_raw_parts_mut(ptr, len) }
}

/// Views `len` elements at `ptr`, read-only (see [`raw_mut`]).
///
/// # Safety
/// As [`raw_mut`], except that other shared readers are allowed.
#[inline]
pub(crate) unsafe fn raw_ref<'a, T>(ptr: *const c_void, len: usize) -> &'a [T] {
    let ptr = if len == 0 {
        NonNull::<T>::dangling().as_ptr().cast_const()
    } else {
        ptr.cast::<T>()
    };
    // SAFETY: as in `raw_mut`; only read.
    unsafe { core::slice::from_raw_parts(ptr, len) }
}

/// A mutable run-time-typed view of `len` elements of `dtype` at `ptr`.
///
/// # Safety
/// As [`raw_mut`] for the element type of `dtype`.
#[inline]
pub(crate) unsafe fn slice_mut<'a>(ptr: *mut c_void, len: usize, dtype: Dtype) -> SliceMut<'a> {
    // SAFETY (all three): the function's contract, for the type `dtype` names.
    match dtype {
        Dtype::F32 => SliceMut::F32(unsafe { raw_mut::<f32>(ptr, len) }),
        Dtype::F16 => SliceMut::F16(unsafe { raw_mut::<f16>(ptr, len) }),
        Dtype::Bf16 => SliceMut::Bf16(unsafe { raw_mut::<bf16>(ptr, len) }),
    }
}

/// A read-only run-time-typed view of `len` elements of `dtype` at `ptr`.
///
/// # Safety
/// As [`raw_ref`] for the element type of `dtype`.
#[inline]
pub(crate) unsafe fn slice_ref<'a>(ptr: *const c_void, len: usize, dtype: Dtype) -> SliceRef<'a> {
    // SAFETY (all three): the function's contract, for the type `dtype` names.
    match dtype {
        Dtype::F32 => SliceRef::F32(unsafe { raw_ref::<f32>(ptr, len) }),
        Dtype::F16 => SliceRef::F16(unsafe { raw_ref::<f16>(ptr, len) }),
        Dtype::Bf16 => SliceRef::Bf16(unsafe { raw_ref::<bf16>(ptr, len) }),
    }
}

/// Finds two buffers that overlap where one of them is written (read-only buffers may share
/// memory): `Err((a, b))` with their labels (`a` the one that starts first, or the lower
/// label). Up to four buffers (a stateless call's), pair by pair; more are sorted (no
/// allocation) and swept.
#[inline]
pub(crate) fn overlap(spans: &mut [Span]) -> Result<(), (usize, usize)> {
    if spans.len() <= 4 {
        return overlap_few(spans);
    }
    spans.sort_unstable_by_key(|s| (s.start, s.who));
    // Sweep by start: a buffer overlaps an earlier one iff it starts before the largest end
    // seen so far — among all buffers if it is written, among the written ones if it is read.
    // (The buffer with that end started earlier and ends later, so it is a witness.)
    let mut any: Option<(usize, usize)> = None; // (end, who)
    let mut written: Option<(usize, usize)> = None;
    for s in spans.iter().filter(|s| s.end > s.start) {
        let seen = if s.written { any } else { written };
        if let Some((end, who)) = seen
            && s.start < end
        {
            return Err((who, s.who));
        }
        if any.is_none_or(|(end, _)| s.end > end) {
            any = Some((s.end, s.who));
        }
        if s.written && written.is_none_or(|(end, _)| s.end > end) {
            written = Some((s.end, s.who));
        }
    }
    Ok(())
}

/// [`overlap`] pair by pair (at most six pairs: cheaper than a sort for a stateless call).
#[inline]
fn overlap_few(spans: &[Span]) -> Result<(), (usize, usize)> {
    for (i, a) in spans.iter().enumerate() {
        for b in spans.iter().skip(i + 1) {
            if (a.written || b.written)
                && a.end > a.start
                && b.end > b.start
                && a.start < b.end
                && b.start < a.end
            {
                let first = (a.start, a.who) <= (b.start, b.who);
                return Err(if first {
                    (a.who, b.who)
                } else {
                    (b.who, a.who)
                });
            }
        }
    }
    Ok(())
}

/// A span of buffer `role` (stateless calls: `who` is the role).
#[inline]
pub(crate) fn span(range: (usize, usize), role: Role) -> Span {
    Span {
        start: range.0,
        end: range.1,
        written: role.written(),
        who: role as usize,
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use super::*;

    fn s(start: usize, end: usize, written: bool, who: usize) -> Span {
        Span {
            start,
            end,
            written,
            who,
        }
    }

    #[test]
    fn overlaps_are_found_where_one_side_is_written() {
        // Reads may share memory.
        assert_eq!(
            overlap(&mut [s(0, 10, false, 0), s(5, 15, false, 1)]),
            Ok(())
        );
        // Adjacent buffers do not overlap.
        assert_eq!(
            overlap(&mut [s(0, 10, true, 0), s(10, 20, true, 1)]),
            Ok(())
        );
        // Empty buffers never overlap.
        assert_eq!(overlap(&mut [s(0, 10, true, 0), s(5, 5, true, 1)]), Ok(()));
        assert!(overlap(&mut [s(0, 10, true, 0), s(9, 20, false, 1)]).is_err());
        assert!(overlap(&mut [s(0, 10, false, 0), s(9, 20, true, 1)]).is_err());
        // A written buffer inside a long read one, after another read one.
        let mut v = [s(0, 100, false, 0), s(10, 20, false, 1), s(50, 60, true, 2)];
        assert_eq!(overlap(&mut v), Err((0, 2)));
        // The same memory passed twice as parameters.
        assert!(overlap(&mut [s(8, 16, true, 0), s(8, 16, true, 1)]).is_err());
        // Brute force over small random layouts.
        let mut rng = support::Rng::new(7);
        for _ in 0..20_000 {
            let n = 1 + rng.below(7);
            let mut v: Vec<Span> = (0..n)
                .map(|i| {
                    let a = rng.below(20);
                    s(a, a + rng.below(6), rng.below(2) == 0, i)
                })
                .collect();
            let brute = (0..n).any(|i| {
                (0..i).any(|j| {
                    let (x, y) = (v[i], v[j]);
                    (x.written || y.written)
                        && x.end > x.start
                        && y.end > y.start
                        && x.start < y.end
                        && y.start < x.end
                })
            });
            assert_eq!(overlap(&mut v).is_err(), brute, "{v:?}");
        }
    }

    #[test]
    fn pointers_are_checked() {
        let x = [0u32; 4];
        let p = x.as_ptr().cast::<c_void>();
        assert!(check(p, 4, 4, 4, &"p").is_ok());
        assert_eq!(check(core::ptr::null(), 0, 4, 4, &"p"), Ok((0, 0)));
        assert_eq!(
            check(core::ptr::null(), 1, 4, 4, &"p").unwrap_err().status,
            LionStatus::NullPointer
        );
        let odd = p.cast::<u8>().wrapping_add(1).cast::<c_void>();
        assert_eq!(
            check(odd, 1, 4, 4, &"p").unwrap_err().status,
            LionStatus::Misaligned
        );
        assert_eq!(
            check(p, usize::MAX / 2, 4, 4, &"p").unwrap_err().status,
            LionStatus::LengthMismatch
        );
        let high = usize::MAX - 3;
        assert_eq!(
            check(high as *const c_void, 2, 2, 2, &"p")
                .unwrap_err()
                .status,
            LionStatus::LengthMismatch
        );
    }
}

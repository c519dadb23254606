//! The C ABI of lion-optim: `liblion_optim.a` / `liblion_optim.so` and the header
//! `include/lion_optim.h` (generated from this crate by cbindgen, committed; see README.md).
//!
//! The binding only adapts: it checks every argument (pointers, enum values read as integers,
//! struct sizes, lengths, overlapping buffers), views the caller's memory as the core's
//! run-time-typed slices, and makes one call into the core (`step_many`, `Lion`,
//! `SliceRef::cautious_count` / `all_finite`), which validates hyperparameters and options and
//! dispatches on the element types. No Lion arithmetic here.
//!
//! * [`stateless`]: `lion_step`, `lion_step_q8`, `lion_cautious_count`, `lion_all_finite` and
//!   the small functions; no allocation, so they serve bare-metal firmware too.
//! * [`handle`] (feature `alloc`): the optimizer handle for whole models.
//! * [`status`]: status codes, the last error, the guard around every entry point.
//!
//! # Panics and undefined behaviour
//!
//! No panic crosses the boundary: with `std` every entry point runs under `catch_unwind` and a
//! panic becomes LION_STATUS_INTERNAL (and even without it, a panic in an `extern "C"` function
//! aborts: it cannot unwind into C). Without `std` (bare metal) the stateless entry points
//! reach no panic with any input: the binding indexes nothing unchecked and the core returns
//! errors for bad data before it computes (its documented contract, fuzzed); `ci/c.sh` links a
//! thumbv7em program that calls every stateless entry point with `--gc-sections` and checks
//! that the panic handler is not in it. Should one still be reached, the handler below stops
//! the CPU (a `udf` trap on ARM: a HardFault).
//!
//! Undefined behaviour: enum values and flags are read as integers and checked; structs are
//! read only after their `struct_size` says they are whole; pointers are checked for NULL,
//! alignment and address-space overflow before they become slices; buffers a call writes are
//! checked not to overlap its other buffers. What the header cannot let the library check —
//! that a pointer points to as many elements as it says, that a handle is live — is the
//! caller's contract, as in any C API.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

#[cfg(feature = "alloc")]
pub mod handle;
pub mod stateless;
pub mod status;
pub mod types;
pub(crate) mod view;

/// The library's major version.
pub const LION_OPTIM_VERSION_MAJOR: u32 = 0;
/// The library's minor version.
pub const LION_OPTIM_VERSION_MINOR: u32 = 1;
/// The library's patch version.
pub const LION_OPTIM_VERSION_PATCH: u32 = 0;
/// The version as one number, `MAJOR << 16 | MINOR << 8 | PATCH` (what `lion_optim_version()`
/// returns): compare the header's with the library's.
pub const LION_OPTIM_VERSION: u32 =
    (LION_OPTIM_VERSION_MAJOR << 16) | (LION_OPTIM_VERSION_MINOR << 8) | LION_OPTIM_VERSION_PATCH;

/// Elements per block of 8-bit momentum (`LION_DTYPE_Q8`): a buffer of `len` elements has `len`
/// codes and `(len + LION_Q8_BLOCK - 1) / LION_Q8_BLOCK` absmax floats, and a shard's offset is
/// a multiple of it.
pub const LION_Q8_BLOCK: usize = 256;
const _: () = assert!(LION_Q8_BLOCK == lion::Q8_BLOCK);

/// The library's version, `MAJOR << 16 | MINOR << 8 | PATCH` (LION_OPTIM_VERSION of the
/// header it was built with).
#[unsafe(no_mangle)]
pub extern "C" fn lion_optim_version() -> u32 {
    LION_OPTIM_VERSION
}

/// The library's version as a static string, "MAJOR.MINOR.PATCH".
#[unsafe(no_mangle)]
pub extern "C" fn lion_optim_version_string() -> *const core::ffi::c_char {
    const VERSION: &core::ffi::CStr = match core::ffi::CStr::from_bytes_with_nul(
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes(),
    ) {
        Ok(v) => v,
        Err(_) => c"?",
    };
    VERSION.as_ptr()
}

/// Without `std` (bare metal): a panic stops the CPU. None is reachable from the stateless entry
/// points (see the crate documentation); the handle's allocations abort this way when memory
/// runs out.
#[cfg(all(not(feature = "std"), not(test)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        #[cfg(target_arch = "arm")]
        // SAFETY: `udf` raises an undefined-instruction exception (a HardFault on Cortex-M): the
        // firmware's fault handler runs; no memory is touched.
        unsafe {
            core::arch::asm!("udf #0", options(nomem, nostack))
        };
        core::hint::spin_loop();
    }
}

/// Without `std`, the handle's allocator is the C library's `malloc` / `free` (newlib on a
/// microcontroller).
#[cfg(all(feature = "alloc", not(feature = "std"), not(test)))]
mod c_allocator {
    use core::alloc::{GlobalAlloc, Layout};
    use core::ffi::c_void;

    unsafe extern "C" {
        fn malloc(size: usize) -> *mut c_void;
        fn free(ptr: *mut c_void);
    }

    /// What `malloc` aligns every block to on the targets this serves (8 on 32-bit ARM).
    const MALLOC_ALIGN: usize = 8;

    struct CAllocator;

    // SAFETY: blocks come from `malloc`, aligned to `layout.align()` (over-allocated and offset
    // for larger alignments, the original pointer stored just below the block), and are
    // returned to `free` exactly once by `dealloc` with the same layout.
    unsafe impl GlobalAlloc for CAllocator {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if layout.align() <= MALLOC_ALIGN {
                // SAFETY: any size is valid for malloc (NULL on failure: reported as such).
                return unsafe { malloc(layout.size().max(1)) }.cast();
            }
            let extra = layout.align() + size_of::<*mut c_void>();
            let Some(size) = layout.size().checked_add(extra) else {
                return core::ptr::null_mut();
            };
            // SAFETY: as above.
            let raw = unsafe { malloc(size) }.cast::<u8>();
            if raw.is_null() {
                return raw;
            }
            let base = raw as usize + size_of::<*mut c_void>();
            let aligned = (base + layout.align() - 1) & !(layout.align() - 1);
            let block = raw.wrapping_add(aligned - raw as usize);
            // SAFETY: `block - size_of::<ptr>()` is inside the allocation (base <= aligned) and
            // aligned for a pointer (aligned to `layout.align()` > 8 >= its alignment).
            unsafe { block.cast::<*mut u8>().sub(1).write(raw) };
            block
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            if layout.align() <= MALLOC_ALIGN {
                // SAFETY: a block of `alloc` with this layout: from malloc.
                return unsafe { free(ptr.cast()) };
            }
            // SAFETY: `alloc` stored malloc's pointer just below the block.
            unsafe { free(ptr.cast::<*mut u8>().sub(1).read().cast()) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: CAllocator = CAllocator;
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_macros_match_the_package() {
        let v = env!("CARGO_PKG_VERSION");
        let parts: std::vec::Vec<u32> = v.split('.').map(|p| p.parse().unwrap()).collect();
        assert_eq!(
            parts,
            [
                super::LION_OPTIM_VERSION_MAJOR,
                super::LION_OPTIM_VERSION_MINOR,
                super::LION_OPTIM_VERSION_PATCH
            ]
        );
        let s = unsafe { core::ffi::CStr::from_ptr(super::lion_optim_version_string()) };
        assert_eq!(s.to_str().unwrap(), v);
    }
}

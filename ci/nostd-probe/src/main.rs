//! The no_std probe: see Cargo.toml. Runs the checks of this crate's library (src/lib.rs); exits
//! 0 when they ran to completion, 101 (after printing the panic message on stderr) when a check
//! failed.
#![no_std]
#![no_main]

use core::fmt::{self, Write};

/// write(2, ...) and exit_group(2): no libc, no std.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod sys {
    pub fn write(fd: usize, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let n: isize;
            // SAFETY: write(2) reads `rest.len()` bytes from a valid slice.
            unsafe {
                core::arch::asm!("syscall", inlateout("rax") 1isize => n, in("rdi") fd,
                    in("rsi") rest.as_ptr(), in("rdx") rest.len(),
                    lateout("rcx") _, lateout("r11") _, options(nostack));
            }
            if n <= 0 {
                return;
            }
            rest = &rest[n as usize..];
        }
    }
    pub fn exit(code: i32) -> ! {
        // SAFETY: exit_group(2) does not return.
        unsafe { core::arch::asm!("syscall", in("rax") 231, in("rdi") code, options(noreturn)) }
    }
}

struct Stderr;

impl Write for Stderr {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        sys::write(2, s.as_bytes());
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let _ = writeln!(Stderr, "no_std probe: check failed: {info}");
    sys::exit(101)
}

// The memory functions the compiler calls (a freestanding binary has no libc to provide them,
// and the host's compiler_builtins leaves them to libc). `rep movsb` / `rep stosb` cannot be
// turned back into calls of themselves by the optimizer.
/// `memcpy`.
///
/// # Safety
/// `src` and `dst` are valid for `n` bytes of reading and of writing, and do not overlap.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller passes valid, non-overlapping ranges of n bytes.
    unsafe {
        core::arch::asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _,
            inout("rsi") src => _, options(nostack, preserves_flags));
    }
    dst
}

/// `memmove`.
///
/// # Safety
/// `src` and `dst` are valid for `n` bytes of reading and of writing (they may overlap).
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize).wrapping_sub(src as usize) >= n {
        // SAFETY: dst is below src or the ranges do not overlap: a forward copy is correct.
        return unsafe { memcpy(dst, src, n) };
    }
    // SAFETY: overlapping with dst above src: copy backwards (direction flag set, then cleared).
    unsafe {
        core::arch::asm!("std", "rep movsb", "cld", inout("rcx") n => _,
            inout("rdi") dst.add(n - 1) => _, inout("rsi") src.add(n - 1) => _, options(nostack));
    }
    dst
}

/// `memset`.
///
/// # Safety
/// `dst` is valid for `n` bytes of writing.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller passes a valid range of n bytes.
    unsafe {
        core::arch::asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _,
            in("al") c as u8, options(nostack, preserves_flags));
    }
    dst
}

/// `memcmp`.
///
/// # Safety
/// `a` and `b` are valid for `n` bytes of reading.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: the caller passes valid ranges of n bytes; volatile keeps this a plain loop.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// `bcmp`.
///
/// # Safety
/// As [`memcmp`].
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: as memcmp.
    unsafe { memcmp(a, b, n) }
}

// The host's precompiled libcore is built with panic=unwind and may reference this symbol; a
// real no_std target (panic=abort) never needs it.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}

extern "C" fn probe_main() -> ! {
    lion_optim_nostd_probe::run();
    let backend = lion_optim::Backend::detect();
    let _ = writeln!(
        Stderr,
        "no_std probe: the checks passed without std, alloc or libc (detected backend: {backend})"
    );
    sys::exit(0)
}

// Process entry (no C runtime): align the stack and call probe_main.
core::arch::global_asm!(
    ".globl _start", "_start:", "xor ebp, ebp", "and rsp, -16", "call {main}", "ud2",
    main = sym probe_main,
);

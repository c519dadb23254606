//! The runtime glue of the firmware (src/main.rs) and of its examples (examples/footprint.rs),
//! which include this file with `#[macro_use] #[path = "../src/rt.rs"] mod rt;`: the entry point
//! (it calls the including crate's `run()`, then exits qemu with status 0 through semihosting), a
//! `println!` over semihosting, and handlers that turn a panic or a fault into a message and
//! exit status 1 (a fault would otherwise hang until the script's timeout). The target picks it:
//!  - Arm Cortex-M (thumbv7em-none-eabihf, thumbv6m-none-eabi): cortex-m-rt, cortex-m-semihosting,
//!    panic-semihosting, a HardFault handler.
//!  - RISC-V (riscv32imac-unknown-none-elf): riscv-rt (machine mode, one hart),
//!    riscv-semihosting, the panic and exception handlers below.

/// `println!` for the firmware and the runtimes below: a line on the host's stdout, through the
/// target's semihosting. (Always through `format_args!`: the semihosting crates' `hprintln!`
/// prints a lone literal as it is, so `"{x}"` would not be formatted.)
macro_rules! println {
    ($($arg:tt)+) => { $crate::rt::hprintln!("{}", format_args!($($arg)+)) };
}

pub use imp::*;

use core::fmt::Write;
#[cfg(target_arch = "arm")]
use cortex_m_semihosting::{debug, hio};
#[cfg(target_arch = "riscv32")]
use riscv_semihosting::{debug, hio};

/// The entry point: the including crate's `run()`, then exit 0.
#[cfg_attr(target_arch = "arm", cortex_m_rt::entry)]
#[cfg_attr(target_arch = "riscv32", riscv_rt::entry)]
fn main() -> ! {
    crate::run();
    exit(debug::EXIT_SUCCESS)
}

/// Exits qemu with `status` (semihosting).
fn exit(status: debug::ExitStatus) -> ! {
    debug::exit(status);
    #[allow(clippy::empty_loop)]
    loop {}
}

/// As panic-semihosting does (the panic handler on Arm): the message on a fresh stdout handle,
/// then exit 1.
fn fail(args: core::fmt::Arguments) -> ! {
    #[cfg(target_arch = "riscv32")]
    riscv::interrupt::disable();
    if let Ok(mut stdout) = hio::hstdout() {
        stdout.write_fmt(args).ok();
    }
    exit(debug::EXIT_FAILURE)
}

/// The stack pointer (on Arm the main stack: the firmware runs in thread mode on MSP).
#[allow(dead_code)]
#[inline(always)]
pub fn stack_pointer() -> usize {
    let sp: usize;
    // SAFETY: reads a register, touches no memory.
    unsafe {
        #[cfg(target_arch = "arm")]
        core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags));
        #[cfg(target_arch = "riscv32")]
        core::arch::asm!("mv {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags));
    }
    sp
}

#[cfg(target_arch = "arm")]
mod imp {
    use cortex_m_rt::{exception, ExceptionFrame};
    pub use cortex_m_semihosting::hprintln;
    use panic_semihosting as _;

    /// The core's CPUID register (part number 0xc20: Cortex-M0, 0xc24: Cortex-M4).
    pub fn print_core() {
        // SAFETY: a read of a read-only register (CPUID.BASE, 0xE000ED00).
        let cpuid = unsafe { (*cortex_m::peripheral::CPUID::PTR).base.read() };
        let part = (cpuid >> 4) & 0xfff;
        println!("mcu: core: Arm CPUID {cpuid:#010x}, part number {part:#05x}");
    }

    /// The frame, then exit 1.
    #[exception]
    unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
        super::fail(format_args!("mcu: HardFault: {frame:?}\n"))
    }
}

#[cfg(target_arch = "riscv32")]
mod imp {
    use riscv::register::{mcause, mepc, misa, mtval};
    pub use riscv_semihosting::hprintln;

    /// The core's misa register: its base ISA and extensions (one letter each).
    pub fn print_core() {
        let misa = misa::try_read().map_or(0, |m| m.bits());
        let mut letters = [0u8; 26];
        let mut n = 0;
        for (i, letter) in (b'a'..=b'z').enumerate() {
            if misa >> i & 1 == 1 {
                letters[n] = letter;
                n += 1;
            }
        }
        let letters = core::str::from_utf8(&letters[..n]).unwrap_or("?");
        println!("mcu: core: RISC-V misa {misa:#010x}, extensions {letters}");
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo) -> ! {
        super::fail(format_args!("{info}\n"))
    }

    /// Every exception (riscv-rt's default would park the hart in `abort`).
    #[export_name = "ExceptionHandler"]
    fn exception(_frame: &riscv_rt::TrapFrame) -> ! {
        super::fail(format_args!(
            "mcu: exception: mcause {:#x}, mepc {:#x}, mtval {:#x}\n",
            mcause::read().bits(),
            mepc::read(),
            mtval::read()
        ))
    }
}

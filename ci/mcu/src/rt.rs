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

#[cfg(target_arch = "arm")]
mod imp {
    use core::fmt::Write;
    use cortex_m_rt::{entry, exception, ExceptionFrame};
    pub use cortex_m_semihosting::hprintln;
    use cortex_m_semihosting::{debug, hio};
    use panic_semihosting as _;

    #[entry]
    fn main() -> ! {
        crate::run();
        debug::exit(debug::EXIT_SUCCESS);
        #[allow(clippy::empty_loop)]
        loop {}
    }

    /// The core's CPUID register (part number 0xc20: Cortex-M0, 0xc24: Cortex-M4).
    pub fn print_core() {
        // SAFETY: a read of a read-only register (CPUID.BASE, 0xE000ED00).
        let cpuid = unsafe { (*cortex_m::peripheral::CPUID::PTR).base.read() };
        let part = (cpuid >> 4) & 0xfff;
        println!("mcu: core: Arm CPUID {cpuid:#010x}, part number {part:#05x}");
    }

    /// The stack pointer (the main stack: the firmware runs in thread mode on MSP).
    #[allow(dead_code)]
    #[inline(always)]
    pub fn stack_pointer() -> usize {
        let sp: usize;
        // SAFETY: reads a register, touches no memory.
        unsafe {
            core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
        };
        sp
    }

    /// As panic-semihosting does: the frame on a fresh stdout handle, then exit 1.
    #[exception]
    unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
        if let Ok(mut stdout) = hio::hstdout() {
            writeln!(stdout, "mcu: HardFault: {frame:?}").ok();
        }
        debug::exit(debug::EXIT_FAILURE);
        #[allow(clippy::empty_loop)]
        loop {}
    }
}

#[cfg(target_arch = "riscv32")]
mod imp {
    use core::fmt::Write;
    use riscv::register::{mcause, mepc, misa, mtval};
    pub use riscv_semihosting::hprintln;
    use riscv_semihosting::{debug, hio};

    #[riscv_rt::entry]
    fn main() -> ! {
        crate::run();
        debug::exit(debug::EXIT_SUCCESS);
        #[allow(clippy::empty_loop)]
        loop {}
    }

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

    /// The stack pointer.
    #[allow(dead_code)]
    #[inline(always)]
    pub fn stack_pointer() -> usize {
        let sp: usize;
        // SAFETY: reads a register, touches no memory.
        unsafe {
            core::arch::asm!("mv {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
        };
        sp
    }

    /// As panic-semihosting does on Arm: the message on a fresh stdout handle, then exit 1.
    fn fail(args: core::fmt::Arguments) -> ! {
        riscv::interrupt::disable();
        if let Ok(mut stdout) = hio::hstdout() {
            stdout.write_fmt(args).ok();
        }
        debug::exit(debug::EXIT_FAILURE);
        #[allow(clippy::empty_loop)]
        loop {}
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo) -> ! {
        fail(format_args!("{info}\n"))
    }

    /// Every exception (riscv-rt's default would park the hart in `abort`).
    #[export_name = "ExceptionHandler"]
    fn exception(_frame: &riscv_rt::TrapFrame) -> ! {
        fail(format_args!(
            "mcu: exception: mcause {:#x}, mepc {:#x}, mtval {:#x}\n",
            mcause::read().bits(),
            mepc::read(),
            mtval::read()
        ))
    }
}

//! Firmware for emulated microcontrollers: runs the checks of checks.rs, prints PASS and exits
//! qemu with status 0 (semihosting). A failed check panics: the panic handler prints the message
//! and exits qemu with status 1; so does a fault (an instruction the core does not have, a bad
//! access), which would otherwise hang until the CI script's timeout. The runtime of each target
//! (entry, `println!`, handlers) is rt.rs, shared with examples/footprint.rs.
#![no_std]
#![no_main]

#[macro_use]
mod rt; // the entry point, `println!` (semihosting), the panic and fault handlers

mod checks;

fn run() {
    println!("mcu: start");
    rt::print_core();
    checks::run();
    println!("mcu: PASS");
}

//! Cortex-M4F firmware: runs the checks of checks.rs, prints PASS and exits qemu with status 0;
//! a failed check panics (panic-semihosting prints it and exits with status 1).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use panic_semihosting as _;

mod checks;

#[entry]
fn main() -> ! {
    hprintln!("mcu: start");
    checks::run();
    hprintln!("mcu: PASS");
    debug::exit(debug::EXIT_SUCCESS);
    #[allow(clippy::empty_loop)]
    loop {}
}

//! Picks the memory map of the target's QEMU machine (copied to OUT_DIR as memory.x) and the link
//! scripts of its runtime: cortex-m-rt's link.x includes memory.x itself; riscv-rt's link.x needs
//! memory.x (with its REGION_ALIAS lines) before it; for the firmware and for its examples
//! (examples/footprint.rs).
use std::{env, fs, path::PathBuf};

fn main() {
    let target = env::var("TARGET").unwrap();
    let (memory, scripts): (&str, &[&str]) = match target.as_str() {
        // Cortex-M4F: qemu-system-arm -M mps2-an386 (ci/thumbv7em.sh).
        "thumbv7em-none-eabihf" => ("memory-mps2-an386.x", &["-Tlink.x"]),
        // Cortex-M0 (ARMv6-M): qemu-system-arm -M microbit, memories enlarged (ci/mcu-cores.sh).
        "thumbv6m-none-eabi" => ("memory-microbit.x", &["-Tlink.x"]),
        // RV32IMAC: qemu-system-riscv32 -M virt -bios none (ci/mcu-cores.sh).
        "riscv32imac-unknown-none-elf" => ("memory-riscv-virt.x", &["-Tmemory.x", "-Tlink.x"]),
        t => panic!(
            "lion-optim-mcu: no QEMU memory map for target {t} (thumbv7em-none-eabihf, \
             thumbv6m-none-eabi, riscv32imac-unknown-none-elf)"
        ),
    };
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    fs::copy(memory, out.join("memory.x")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    for script in scripts {
        println!("cargo:rustc-link-arg-bins={script}");
        println!("cargo:rustc-link-arg-examples={script}");
    }
    // The target's name, for the examples' reports (examples/footprint.rs).
    println!("cargo:rustc-env=MCU_TARGET={target}");
    println!("cargo:rerun-if-changed={memory}");
}

#!/usr/bin/env bash
# More cores: the firmware of ci/mcu (the checks of ci/mcu/src/checks.rs: the kernels against the
# reference for all 27 dtype combinations, with the fixtures of ci/test-support and the no_std
# checks of ci/nostd-probe) built for two more targets and run under QEMU with semihosting, as
# ci/thumbv7em.sh does for the Cortex-M4F. Neither core has an FPU: all float arithmetic is
# software. Each run must exit 0 and print "mcu: PASS"; a failed check panics and exits 1.
#
#  1. thumbv6m-none-eabi (Cortex-M0/M0+ class: ARMv6-M, no FPU, no atomic compare-and-swap) on
#     qemu-system-arm -M microbit, whose nRF51 SoC model hardwires QEMU's Cortex-M0 CPU (an
#     ARMv6-M core: an ARMv7-M-only instruction raises a fault). The mps2 machines refuse
#     `-cpu cortex-m0` (each accepts only its own core: an385/an511 cortex-m3, an386 cortex-m4,
#     an500 cortex-m7, an505 cortex-m33), and `microbit` is QEMU's only Cortex-M0 machine. Its
#     256 KiB flash and 16 KiB SRAM cannot hold the ~1.8 MB of check code, so the run enlarges
#     both through the SoC's own properties (nrf51-soc.flash-size, nrf51-soc.sram-size; QEMU loads
#     the ELF into the flash region of that size). `microbit` ignores -cpu (it accepts any name),
#     so the firmware prints the core's CPUID and the run must show part number 0xc20 (Cortex-M0;
#     QEMU has no M0+ model, whose instruction set, ARMv6-M, is the same).
#  2. riscv32imac-unknown-none-elf (RV32IMAC: ESP32-C3 class) on qemu-system-riscv32 -M virt
#     -bios none (machine mode, DRAM at 0x80000000) with -cpu sifive-e31, QEMU's model of the
#     SiFive E31 microcontroller core: exactly RV32IMAC (+ machine and user modes), so an F/D or
#     other instruction outside the target would trap. riscv-rt, riscv-semihosting. The run must
#     show misa extensions "acimu".
#
# Both runs work with bookworm's QEMU 7.2 and with 10.0 from bookworm-backports.
#
# Usage: ci/mcu-cores.sh [--setup | --build]      Env: MCU_TIMEOUT (seconds per run, default 600)
. "$(dirname "$0")/lib.sh"
V6M=thumbv6m-none-eabi
RV32=riscv32imac-unknown-none-elf
ci_qemu_setup "$V6M" "$RV32"
ci_end_of_setup

TD="$(ci_target_dir)"
# The firmware's own target dir is shared with ci/thumbv7em.sh.
ci_firmware_env "$ROOT/ci/mcu" "$TD/ci/mcu" "${MCU_TIMEOUT:-600}" "$V6M" "$RV32"

# elf_size ELF TOOL... : text/data/bss of ELF with the first size tool found (the target's GNU
# binutils, llvm-size on PATH, or rustup's llvm-tools). The RV32 bss includes riscv-rt's .stack
# (NOLOAD: the rest of memory-riscv-virt.x's 4 MiB RAM region, reserved for the stack).
elf_size() {
  local elf="$1" tool; shift
  local host; host="$(rustc -vV | sed -n 's/^host: //p')"
  for tool in "$@" llvm-size "$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-size"; do
    command -v "$tool" >/dev/null 2>&1 || continue
    "$tool" "$elf" | sed 's/^/    /' >&2
    return 0
  done
  ci_log "no size tool found (install binutils-arm-none-eabi or llvm, or rustup component add llvm-tools)"
}

for t in "$V6M" "$RV32"; do
  ci_time "build the $t firmware" cargo build --release --target "$t"
done
ci_log "firmware sizes:"
elf_size "$CARGO_TARGET_DIR/$V6M/release/lion-optim-mcu" arm-none-eabi-size
elf_size "$CARGO_TARGET_DIR/$RV32/release/lion-optim-mcu" riscv64-unknown-elf-size riscv32-unknown-elf-size
ci_end_of_build

# run_core TARGET LABEL CORE_PATTERN : runs the target's firmware under its runner (above), tees the
# output to a log; fails unless qemu exits 0, the log shows the expected core and ends with PASS.
failed=()
run_core() {
  local t="$1" label="$2" core="$3" rc=0
  local log="$TD/ci/mcu-run-$t.log"; mkdir -p "$(dirname "$log")"
  ci_time "run the $t firmware on $label" cargo run --release --target "$t" 2>&1 | tee "$log" || rc=$?
  if [ "$rc" != 0 ]; then
    [ "$rc" = 124 ] && ci_log "$t: timed out after ${MCU_TIMEOUT:-600} s"
    ci_log "$t: the firmware failed (exit $rc)"; failed+=("$t (exit $rc)")
  elif ! grep -q "$core" "$log"; then
    ci_log "$t: the run was not on the expected core ($core)"; failed+=("$t (core)")
  elif ! grep -q '^mcu: PASS' "$log"; then
    ci_log "$t: the firmware did not report PASS"; failed+=("$t (no PASS)")
  else
    ci_log "$t: all checks passed"
  fi
}
run_core "$V6M" "qemu-system-arm -M microbit (Cortex-M0)" '^mcu: core: Arm CPUID .*part number 0xc20$'
run_core "$RV32" "qemu-system-riscv32 -M virt -cpu sifive-e31 (RV32IMAC)" '^mcu: core: RISC-V misa .*extensions acimu$'
[ ${#failed[@]} = 0 ] || ci_die "mcu-cores: failed: ${failed[*]}"
ci_log "mcu-cores: thumbv6m (Cortex-M0) and riscv32imac (RV32IMAC): all checks passed"

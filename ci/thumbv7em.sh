#!/usr/bin/env bash
# Cortex-M4F: builds the firmware of ci/mcu (cortex-m-rt, lion-optim with --no-default-features,
# the checks of ci/mcu/src/checks.rs with the fixtures of ci/test-support and the no_std checks
# of ci/nostd-probe) for thumbv7em-none-eabihf and runs it on an emulated Cortex-M4F
# (qemu-system-arm -M mps2-an386, semihosting). The checks compare the kernels with the
# reference for all 27 dtype combinations on special values; a mismatch panics, and the run
# fails. The run's output must end with "mcu: PASS".
# Usage: ci/thumbv7em.sh [--setup | --build]      Env: MCU_TIMEOUT (seconds, default 600)
. "$(dirname "$0")/lib.sh"
T=thumbv7em-none-eabihf
ci_qemu_setup "$T"
ci_end_of_setup

TD="$(ci_target_dir)"
ci_firmware_env "$ROOT/ci/mcu" "$TD/ci/mcu" "${MCU_TIMEOUT:-600}" "$T"
ci_time "build the Cortex-M4F firmware" cargo build --release --target "$T"
size="$(du -k "$CARGO_TARGET_DIR/$T/release/lion-optim-mcu" | cut -f1)"
ci_log "firmware ELF: ${size} KiB with debug info"
ci_end_of_build

ci_firmware_run "the Cortex-M4F firmware" '^mcu: PASS' "$TD/ci/mcu-run.log" \
  "run the Cortex-M4F firmware on qemu-system-arm mps2-an386" --release --target "$T"
ci_log "thumbv7em: all checks passed"

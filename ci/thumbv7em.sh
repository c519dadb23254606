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
ci_target "$T"
ci_apt_qemu qemu-system-arm
ci_end_of_setup

TD="$(ci_target_dir)"
export CARGO_TARGET_THUMBV7EM_NONE_EABIHF_RUNNER="timeout ${MCU_TIMEOUT:-600} qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic -monitor none -serial none -semihosting-config enable=on,target=native -kernel"
# The firmware gets its own target dir (host RUSTFLAGS must not reach it).
export CARGO_TARGET_DIR="$TD/ci/mcu"
unset RUSTFLAGS
cd "$ROOT/ci/mcu"
ci_time "build the Cortex-M4F firmware" cargo build --release --target "$T"
size="$(du -k "$CARGO_TARGET_DIR/$T/release/lion-optim-mcu" | cut -f1)"
ci_log "firmware ELF: ${size} KiB with debug info"
ci_end_of_build

log="$TD/ci/mcu-run.log"; mkdir -p "$(dirname "$log")"
rc=0
ci_time "run the Cortex-M4F firmware on qemu-system-arm mps2-an386" \
  cargo run --release --target "$T" 2>&1 | tee "$log" || rc=$?
[ "$rc" = 0 ] || ci_die "the Cortex-M4F firmware failed (exit $rc)"
grep -q '^mcu: PASS' "$log" || ci_die "the firmware did not report PASS"
ci_log "thumbv7em: all checks passed"

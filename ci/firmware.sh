#!/usr/bin/env bash
# Cortex-M4F on-device training: builds the example firmware of examples/firmware (a 2-32-32-3
# MLP trained on three spirals with lion-optim, no std, no allocator, static buffers; one run
# with bf16 momentum, one with 8-bit momentum) for thumbv7em-none-eabihf in release and runs it
# on an emulated Cortex-M4F (qemu-system-arm -M mps2-an386, semihosting). The firmware prints
# the loss and test accuracy per epoch and exits with status 1 if a run's test accuracy is
# below its threshold; the run's output must end with "fw: PASS". Prints the firmware's flash
# and RAM use when arm-none-eabi-size (Debian's binutils-arm-none-eabi) is installed.
# Usage: ci/firmware.sh [--setup | --build]      Env: FW_TIMEOUT (seconds, default 300)
. "$(dirname "$0")/lib.sh"
T=thumbv7em-none-eabihf
ci_target "$T"
ci_apt_qemu qemu-system-arm
ci_end_of_setup

TD="$(ci_target_dir)"
export CARGO_TARGET_THUMBV7EM_NONE_EABIHF_RUNNER="timeout ${FW_TIMEOUT:-300} qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic -monitor none -serial none -semihosting-config enable=on,target=native -kernel"
# The firmware gets its own target dir (host RUSTFLAGS must not reach it).
export CARGO_TARGET_DIR="${FW_TARGET_DIR:-$TD/examples/firmware}"
unset RUSTFLAGS
cd "$ROOT/examples/firmware"
ci_time "build the training firmware (Cortex-M4F)" cargo build --release --locked --target "$T"
ci_time "clippy (the training firmware)" cargo clippy --release --locked --target "$T" -- -D warnings
elf="$CARGO_TARGET_DIR/$T/release/lion-optim-firmware"
if command -v arm-none-eabi-size >/dev/null; then
  # Berkeley format: flash = text + data, static RAM = data + bss.
  arm-none-eabi-size "$elf" >&2
  read -r text data bss _ < <(arm-none-eabi-size "$elf" | tail -1)
  ci_log "firmware: flash $((text + data)) B (text $text, data $data), static RAM $((data + bss)) B (data $data, bss $bss)"
else
  ci_log "arm-none-eabi-size not installed (apt: binutils-arm-none-eabi): sizes skipped"
fi
ci_end_of_build

log="$CARGO_TARGET_DIR/firmware-run.log"; mkdir -p "$CARGO_TARGET_DIR"
rc=0
ci_time "train on the Cortex-M4F (qemu-system-arm mps2-an386)" \
  cargo run --release --locked --target "$T" 2>&1 | tee "$log" || rc=$?
[ "$rc" = 0 ] || ci_die "the training firmware failed (exit $rc)"
grep -q '^fw: PASS' "$log" || ci_die "the firmware did not report PASS"
ci_log "firmware: on-device training passed"

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
ci_qemu_setup "$T"
ci_end_of_setup

TD="$(ci_target_dir)"
ci_firmware_env "$ROOT/examples/firmware" "${FW_TARGET_DIR:-$TD/examples/firmware}" "${FW_TIMEOUT:-300}" "$T"
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

ci_firmware_run "the training firmware" '^fw: PASS' "$CARGO_TARGET_DIR/firmware-run.log" \
  "train on the Cortex-M4F (qemu-system-arm mps2-an386)" --release --locked --target "$T"
ci_log "firmware: on-device training passed"

#!/usr/bin/env bash
# Every test of the repository (the README's test command), on a fresh Debian machine that
# reaches crates.io, PyPI, npm and Debian's archive (installs what it needs: a Python venv with
# torch, maturin and pytest; Rust toolchains and targets; with apt-get: gcc, valgrind, qemu, the
# Arm toolchain, chromium; the npm packages of bindings/wasm):
#
#   bash ci/test-all.sh               every part, in this order:
#     core          the core crate with every feature (rayon, safetensors), optimized, and the
#                   training example's tests (the models must learn);
#     nostd         the core without std (the library's own tests);
#     python        the Python package: ci/python.sh (venv, torch from PyPI, release build, pytest);
#     integrations  the candle and burn integrations: ci/integrations.sh;
#     c             the C ABI (bindings/c): header, C11/C++17 tests, sanitizers, valgrind, the
#                   bare-metal link and the C training firmware on a Cortex-M4F under qemu, the
#                   installed library and its training example: ci/c.sh;
#     js            the npm package (bindings/wasm): Node tests of both wasm builds, the
#                   TensorFlow.js optimizer, the demo page in headless Chromium: ci/wasm-npm.sh;
#     firmware      on a Cortex-M4F under qemu: the kernels' checks (ci/thumbv7em.sh) and the
#                   on-device training example, examples/firmware (ci/firmware.sh); the kernels'
#                   checks on a Cortex-M0 and an RV32IMAC core (ci/mcu-cores.sh).
#   bash ci/test-all.sh PART...       only those parts;  bash ci/test-all.sh --list: the parts
#
# CI (ci/run) runs each part as a stage of its own, and around them the checks of other targets
# and toolchains (wasm, Cortex-M, aarch64, Miri, the MSRV on the packaged crate, fuzzing) and the
# benchmarks' builds (not part of this command).
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS=(core nostd python integrations c js firmware)

core() {
  cargo test --release --all-features -p lion-optim -p train
}
nostd() {
  # The library's own tests without std (and without alloc), unoptimized (opt-level 0, with
  # debug assertions): this build proves that they pass there; the optimized kernels are tested
  # by the core part, and the library with alloc only is linted and built by CI (clippy-no-std,
  # the C ABI's firmware builds).
  step "core without std" env CARGO_PROFILE_TEST_OPT_LEVEL=0 cargo test --no-default-features --lib
}
python() { bash ci/python.sh; }
integrations() { bash ci/integrations.sh; }
c() { bash ci/c.sh; }
js() { bash ci/wasm-npm.sh; }
firmware() { bash ci/thumbv7em.sh && bash ci/firmware.sh && bash ci/mcu-cores.sh; }

step() { local name="$1"; shift; local t=$SECONDS; echo "=== [test-all] $name"; "$@"; echo "=== [test-all] $name: ok ($((SECONDS - t)) s)"; }

if [ "${1:-}" = --list ]; then printf '%s\n' "${PARTS[@]}"; exit 0; fi
[ $# -gt 0 ] || set -- "${PARTS[@]}"
for part in "$@"; do
  [[ " ${PARTS[*]} " == *" $part "* ]] || { echo "test-all: no part '$part' (parts: ${PARTS[*]})" >&2; exit 2; }
done
t0=$SECONDS
for part in "$@"; do step "$part" "$part"; done
echo "=== [test-all] passed ($*) in $((SECONDS - t0)) s"

#!/usr/bin/env bash
# Every test of the repository, on a fresh machine that reaches crates.io and PyPI (installs what
# it needs: a Python venv with torch, maturin and pytest; nothing system-wide):
#
#   bash scripts/test-all.sh
#
#  1. the core crate with every feature (rayon, safetensors), optimized, and the training
#     example's tests (the models must learn);
#  2. the core without std, and with alloc only (the library's own tests);
#  3. the Python package: bindings/python/test.sh (venv, torch from PyPI, release build, pytest);
#  4. the candle and burn integrations: integrations/test.sh.
#
# CI (.ci/run) runs this, and around it the checks of other targets and toolchains (wasm, Cortex-M,
# aarch64, Miri, the MSRV on the packaged crate, fuzzing).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
step() { local name="$1"; shift; local t=$SECONDS; echo "=== [test-all] $name"; "$@"; echo "=== [test-all] $name: ok ($((SECONDS - t)) s)"; }
step "core, all features, and the example (release)" \
  cargo test --release --all-features -p lion-optim -p train
step "core without std" cargo test --no-default-features --lib
step "core with alloc only" cargo test --no-default-features --features alloc --lib
step "Python package" bash bindings/python/test.sh
step "candle and burn integrations" bash integrations/test.sh
echo "=== [test-all] everything passed in $((SECONDS - t0)) s"

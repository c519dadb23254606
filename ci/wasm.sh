#!/usr/bin/env bash
# WASM: the whole test suite (unit, integration and example tests) on wasm32-wasip1 under Node's
# WASI, with `-C target-feature=+simd128` (wide's v128 path: the test binaries must contain v128
# instructions, and tests/suite/platform.rs checks the portable path reports "simd128") and, with
# WASM_MODES="simd128 scalar", also without it (wide's scalar fallback, reported as "scalar").
# CI builds the suite once (each build of it takes ~6 CPU minutes): the scalar wasm build is
# tested by the npm package's tests (ci/wasm-npm.sh: every dtype combination through the JS API
# against lion_optim::reference, both builds), and wide's scalar fallback by Miri on s390x.
# The tests run single-threaded (no threads on wasm32-wasip1): ci/run builds them (--build) and
# runs them beside the next stage's compilation.
# At opt-level 1 (CARGO_PROFILE_TEST_OPT_LEVEL, unless set): what this proves is wide's v128
# path and the wasm32 target, not the optimizer's work on them (the core part tests that); it
# builds in two thirds of the CPU time of opt-level 3.
# Usage: ci/wasm.sh [--setup | --build] [extra `cargo test` args]
# Env:   WASM_RUNNER=node|wasmtime (default: node if it is >= 20, else wasmtime from PyPI),
#        WASM_MODES (default "simd128"; "simd128 scalar" for both)
. "$(dirname "$0")/lib.sh"
TD="$(ci_target_dir)"
MODES="${WASM_MODES:-simd128}"
ci_target wasm32-wasip1
ci_apt wabt   # wasm-objdump, to count v128 instructions

runner="${WASM_RUNNER:-}"
if [ -z "$runner" ]; then
  if command -v node >/dev/null && [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ]; then
    runner=node
  else
    runner=wasmtime
  fi
fi
case "$runner" in
  node) export CARGO_TARGET_WASM32_WASIP1_RUNNER="node --no-warnings $CI_DIR/wasi-run.mjs" ;;
  wasmtime)
    venv="$TD/ci/venv"
    [ -x "$venv/bin/python" ] || ci_time "python venv" python3 -m venv "$venv"
    "$venv/bin/python" -c 'import wasmtime' 2>/dev/null || ci_time "pip install wasmtime" "$venv/bin/pip" install -q wasmtime
    export CARGO_TARGET_WASM32_WASIP1_RUNNER="$venv/bin/python $CI_DIR/wasmtime-run.py" ;;
  *) ci_die "WASM_RUNNER must be node or wasmtime" ;;
esac
ci_end_of_setup
base_rf="${RUSTFLAGS:-}"
export CARGO_PROFILE_TEST_OPT_LEVEL="${CARGO_PROFILE_TEST_OPT_LEVEL:-1}"

mode_env() { # simd128 | scalar: RUSTFLAGS and the target dir of the mode
  export RUSTFLAGS="$base_rf"
  [ "$1" = simd128 ] && export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+simd128"
  export CARGO_TARGET_DIR="$TD/ci/wasm-$1"
}
if [ "$CI_PHASE" = build ]; then
  for mode in $MODES; do
    mode_env "$mode"
    ci_time "cargo test --no-run --target wasm32-wasip1 [$mode] $*" \
      cargo test --no-run --target wasm32-wasip1 "$@"
  done
fi
ci_end_of_build

run_mode() { # simd128 | scalar
  local mode="$1"; shift
  mode_env "$mode"
  LION_EXPECT_INSTRUCTIONS="$mode" ci_time "cargo test --target wasm32-wasip1 [$mode] ($runner)" \
    cargo test --target wasm32-wasip1 "$@"
  local n=0 f
  for f in $(ci_test_executables --target wasm32-wasip1 "$@"); do
    n=$(( n + $(wasm-objdump -d "$f" | grep -cE '\b(v128|[fi](8x16|16x8|32x4|64x2))\.' || true) ))
  done
  echo "== wasm [$mode]: v128 instructions in the test binaries: $n" >&2
  if [ "$mode" = simd128 ] && [ "$n" = 0 ]; then ci_die "the simd128 build contains no v128 instructions"; fi
}

for mode in $MODES; do run_mode "$mode" "$@"; done
ci_log "wasm: all tests passed ($MODES)"

#!/usr/bin/env bash
# The Python package's tests (bindings/python), from a fresh clone on a fresh machine (only PyPI
# and crates.io needed): makes a venv (reused when present), installs maturin, pytest, numpy,
# safetensors, ml_dtypes, torch and bitsandbytes (the 8-bit momentum's interchange tests) from
# PyPI, builds and installs the package once in release
# (`pip install ./bindings/python`), lints the extension, runs its Rust unit tests, and runs
# pytest. Fails on any failure.
#
#   bash ci/python.sh [--setup] [pytest arguments]      (--setup: the venv and the PyPI tools only)
#
# Environment: PYTHON (default python3, >= 3.9), LION_PY_VENV (default
# <cargo's target dir>/python-venv). torch from PyPI is the CUDA build (~3 GB: the first run
# spends a minute or two downloading it); everything runs on the CPU.
. "$(dirname "$0")/lib.sh"
PY_DIR="$ROOT/bindings/python"
target="$(ci_target_dir)"
venv="${LION_PY_VENV:-$target/python-venv}"
python="${PYTHON:-python3}"

[ -x "$venv/bin/python" ] || ci_time "venv ($venv)" "$python" -m venv "$venv"
ci_time "pip install maturin pytest numpy safetensors ml_dtypes torch bitsandbytes" \
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "maturin>=1.9.4,<2" pytest numpy safetensors ml_dtypes torch bitsandbytes
ci_end_of_setup

t0=$SECONDS
# pip builds the wheel with maturin (in release) in a target directory of its own (see
# bindings/python/.cargo/config.toml), with the test hooks the suite needs (cargo feature
# `test-hooks`; the wheel a user builds has none).
ci_time "pip install ./bindings/python (release build, test hooks)" \
  env CARGO_TARGET_DIR="$target/python-wheel" "$venv/bin/python" -m pip install --quiet \
    --disable-pip-version-check --force-reinstall --no-deps "$PY_DIR" \
    --config-settings=build-args="--features test-hooks"
for features in "" "--features test-hooks"; do
  ci_time "clippy (the extension${features:+, $features})" \
    env PYO3_PYTHON="$venv/bin/python" CARGO_TARGET_DIR="$target/python-wheel" \
      cargo clippy --quiet -p lion-optim-python --all-targets $features -- -D warnings
done
# The extension's own Rust unit tests (its layouts and shapes, without Python).
ci_time "cargo test (the extension's unit tests)" \
  env PYO3_PYTHON="$venv/bin/python" CARGO_TARGET_DIR="$target/python-wheel" \
    cargo test --quiet -p lion-optim-python --lib
# (The sources are in python/lion_optim: what `import lion_optim` finds is the installed package.)
cd "$PY_DIR"
# LION_OPTIM_TEST_HOOKS=1: a build without the hooks stops pytest instead of skipping their tests.
# LION_OPTIM_TEST_BNB=1: without bitsandbytes, its tests fail instead of skipping.
ci_time "pytest" env GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-lo}" LION_OPTIM_TEST_HOOKS=1 LION_OPTIM_TEST_BNB=1 \
  "$venv/bin/python" -m pytest "$@"
ci_log "python: all passed in $((SECONDS - t0)) s (after the installs)"

#!/usr/bin/env bash
# The Python package's tests, from a fresh clone on a fresh machine (only PyPI and crates.io
# needed): makes a venv (reused when present), installs maturin, pytest, numpy, safetensors,
# ml_dtypes and torch from PyPI, builds and installs the package once in release
# (`pip install ./bindings/python`), lints the extension, and runs pytest. Fails on any failure.
#
#   bash bindings/python/test.sh [pytest arguments]
#
# Environment: PYTHON (default python3, >= 3.9), LION_PY_VENV (default
# ${CARGO_TARGET_DIR:-<repository>/target}/python-venv). torch from PyPI is the CUDA build
# (~3 GB: the first run spends a minute or two downloading it); everything runs on the CPU.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
venv="${LION_PY_VENV:-$target/python-venv}"
python="${PYTHON:-python3}"
stage() { local name="$1"; shift; local t0=$SECONDS; echo "=== [python] $name"; "$@"; echo "=== [python] $name: ok ($((SECONDS - t0)) s)"; }

make_venv() {
  if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
  fi
}
install_tools() {
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "maturin>=1.9.4,<2" pytest numpy safetensors ml_dtypes torch
}
install_package() {
  # pip builds the wheel with maturin (in release) into the shared cargo target directory.
  CARGO_TARGET_DIR="$target" "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --force-reinstall --no-deps "$here"
}
lint() {
  (cd "$root" && PYO3_PYTHON="$venv/bin/python" CARGO_TARGET_DIR="$target" \
    cargo clippy --quiet -p lion-optim-python --all-targets -- -D warnings)
}
run_tests() {
  # (The sources are in python/lion_optim: what `import lion_optim` finds is the installed package.)
  (cd "$here" && GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-lo}" "$venv/bin/python" -m pytest "$@")
}

t0=$SECONDS
stage "venv ($venv)" make_venv
stage "pip install maturin pytest numpy safetensors ml_dtypes torch" install_tools
stage "pip install ./bindings/python (release build)" install_package
stage "clippy (the extension)" lint
stage "pytest" run_tests "$@"
echo "=== [python] all passed in $((SECONDS - t0)) s"

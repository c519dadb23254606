#!/usr/bin/env bash
# Builds the two wasm modules of the npm package into wasm/:
#   wasm/lion_optim_simd128.wasm   -C target-feature=+simd128 (wide's v128 vectors)
#   wasm/lion_optim_scalar.wasm    no simd128 (for engines without it; js/index.js picks by
#                                  WebAssembly.validate)
# Plain cargo for wasm32-unknown-unknown (no wasm-bindgen, no wasm-opt); each build in its own
# target directory, so switching RUSTFLAGS never rebuilds the other. The profile (LTO, one codegen
# unit, abort on panic, stripped) is given here because a workspace member's [profile] is ignored.
# Usage: bindings/wasm/build.sh [simd128|scalar ...]   (default: both)
# Env: CARGO_TARGET_DIR (default: the workspace's target/), passed through.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
td="${CARGO_TARGET_DIR:-$(cd ../.. && pwd)/target}"
modes=("$@"); [ ${#modes[@]} -gt 0 ] || modes=(simd128 scalar)
mkdir -p wasm
profile=(
  --config 'profile.wasm.inherits="release"'
  --config 'profile.wasm.opt-level=3'
  --config 'profile.wasm.lto=true'
  --config 'profile.wasm.codegen-units=1'
  --config 'profile.wasm.panic="abort"'
  --config 'profile.wasm.strip=true'
  --config 'profile.wasm.debug=false'
  --config 'profile.wasm.incremental=false'
)
for mode in "${modes[@]}"; do
  case "$mode" in
    simd128) flags="-C target-feature=+simd128" ;;
    scalar) flags="" ;;
    *) echo "build.sh: unknown mode $mode (simd128 | scalar)" >&2; exit 2 ;;
  esac
  t0=$SECONDS
  RUSTFLAGS="$flags" CARGO_TARGET_DIR="$td/wasm-$mode" \
    cargo build -q --locked -p lion-optim-wasm --lib --target wasm32-unknown-unknown --profile wasm "${profile[@]}"
  cp "$td/wasm-$mode/wasm32-unknown-unknown/wasm/lion_optim_wasm.wasm" "wasm/lion_optim_$mode.wasm"
  f="wasm/lion_optim_$mode.wasm"
  printf 'build.sh: %-28s %9d bytes, %8d gzipped (%d s)\n' "$f" "$(stat -c%s "$f")" "$(gzip -9c "$f" | wc -c)" $((SECONDS - t0)) >&2
done

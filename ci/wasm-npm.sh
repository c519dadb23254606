#!/usr/bin/env bash
# The npm package over wasm (bindings/wasm), from a fresh clone on a fresh machine: installs the
# rustup target wasm32-unknown-unknown, Debian's chromium (for the browser test) and the npm
# packages of the committed package-lock.json (`npm ci`: TensorFlow.js, playwright-core without a
# browser download, typescript); builds the two wasm modules (simd128, scalar: bindings/wasm/
# build.sh), writes the bit-identity fixtures from lion_optim::reference (a small native Rust
# generator); lints the crate; then runs the Node tests: bit-identity for every dtype
# combination in both builds, the API (errors, memory growth, use after free, the optimizer and
# its state), the TensorFlow.js optimizer on the cpu and wasm backends (fit()), `npm pack` +
# `npm install ./lion-optim-x.y.z.tgz` in an empty project, and the demo page in headless
# Chromium (> 90% accuracy, no console error, a screenshot in bindings/wasm/test/out/). Fails on
# any failure.
#
#   bash ci/wasm-npm.sh [--setup | --build]
#
# The benchmark is a script, not a test: `node bindings/wasm/bench/run.mjs` (after this).
. "$(dirname "$0")/lib.sh"
W="$ROOT/bindings/wasm"
TD="$(ci_target_dir)/ci/wasm-npm" # its own: cargo's lock never makes it wait for another build
command -v node >/dev/null || ci_die "node (>= 20) is needed"
[ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ] || ci_die "node >= 20 is needed, found $(node --version)"
ci_target wasm32-unknown-unknown
ci_apt chromium
(cd "$W" && ci_time "npm ci (bindings/wasm)" npm ci --no-audit --no-fund --loglevel=error)
ci_end_of_setup

# The native builds (the fixture generator, the crate's native tests) unoptimized: they run the
# reference on small vectors, and opt-level 3 would cost minutes of CPU for nothing.
export CARGO_PROFILE_TEST_OPT_LEVEL=0
ci_time "wasm builds (simd128, scalar)" env CARGO_TARGET_DIR="$TD" "$W/build.sh"
ci_time "fixtures (lion_optim::reference, every dtype combination)" \
  env CARGO_TARGET_DIR="$TD" cargo run -q --locked --profile test -p lion-optim-wasm --bin fixtures -- "$W/test/fixtures.bin"
ci_time "clippy (lion-optim-wasm)" \
  env CARGO_TARGET_DIR="$TD" cargo clippy -q --locked -p lion-optim-wasm --all-targets -- -D warnings
ci_time "clippy (lion-optim-wasm, wasm32)" \
  env CARGO_TARGET_DIR="$TD" cargo clippy -q --locked -p lion-optim-wasm --lib --target wasm32-unknown-unknown -- -D warnings
ci_end_of_build

ci_time "cargo test (lion-optim-wasm, native)" \
  env CARGO_TARGET_DIR="$TD" cargo test -q --locked -p lion-optim-wasm --lib
cd "$W"
ci_time "node --test (bindings/wasm)" node --test test/*.test.mjs

#!/usr/bin/env bash
# MSRV: the test suite with the toolchain of Cargo.toml's rust-version (installed if missing).
# Usage: ci/msrv.sh [--setup] [cargo test args]
. "$(dirname "$0")/lib.sh"
[ -n "$MSRV" ] || ci_die "no rust-version in Cargo.toml"
ci_toolchain "$MSRV"
ci_end_of_setup
# Its own target dir: artifacts of another rustc would be rebuilt anyway.
CARGO_TARGET_DIR="$(ci_target_dir)/ci/msrv"
export CARGO_TARGET_DIR
ci_time "cargo +$MSRV test $*" cargo "+$MSRV" test "$@"
ci_log "msrv: cargo +$MSRV test passed"

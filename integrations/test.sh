#!/usr/bin/env bash
# The framework integrations (integrations/candle, integrations/burn): format, lints, the tests
# of both crates (bit-identical to lion_optim::reference, groups, state, bad input, the
# examples' short runs), the examples and the benchmarks built. Run it from anywhere:
#
#   bash integrations/test.sh
#
# candle and burn are large builds, so everything is built once, in one profile and one target
# directory (cargo's, or CARGO_TARGET_DIR): `cargo test --release` builds the libraries, tests
# and examples, and `cargo bench --no-run` reuses those artifacts (the bench profile is the
# release profile). A debug `cargo test` would be a second full build of candle and burn (the
# workspace's test profile is optimized anyway), so there is none. Clippy needs its own check
# build of the dependencies.
#
# Needs Rust 1.95 (what burn 0.22 needs; candle 0.11 needs 1.94): the `stable` toolchain, installed
# with rustup if it is missing (override with TOOLCHAIN=...). Installs nothing else.
. "$(dirname "$0")/../ci/lib.sh"

TOOLCHAIN="${TOOLCHAIN:-stable}"
ci_toolchain "$TOOLCHAIN" rustfmt clippy
cargo() { command cargo "+$TOOLCHAIN" "$@"; }
have="$(rustup run "$TOOLCHAIN" rustc --version)"
ci_log "toolchain: $have"
case "$have" in
  rustc\ 1.[0-9].* | rustc\ 1.[0-8][0-9].* | rustc\ 1.9[0-4].*) ci_die "burn 0.22 needs Rust >= 1.95 (have: $have)" ;;
esac

CRATES=(-p lion-optim-candle -p lion-optim-burn)
t0=$SECONDS
ci_time "fmt" cargo fmt "${CRATES[@]}" --check
ci_time "clippy" cargo clippy "${CRATES[@]}" --all-targets -- -D warnings
ci_time "test (release: libraries, tests, examples)" cargo test --release "${CRATES[@]}"
ci_time "benches build" cargo bench --no-run "${CRATES[@]}"
ci_time "docs" env RUSTDOCFLAGS="-D warnings" cargo doc --no-deps "${CRATES[@]}"
ci_log "integrations: all passed in $((SECONDS - t0)) s"

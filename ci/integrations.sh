#!/usr/bin/env bash
# The framework integrations (integrations/candle, integrations/burn): format, lints, the tests
# of both crates (bit-identical to lion_optim::reference, groups, state, bad input, the
# examples' short runs) and the docs. Run it from anywhere:
#
#   bash ci/integrations.sh [--setup]     (--setup: the toolchain and the crates' downloads only)
#   bash ci/integrations.sh --benches     the benchmarks built (CI runs this as a stage of its own)
#
# candle and burn are large builds, so everything is built once, in one profile and one target
# directory (cargo's, or CARGO_TARGET_DIR): `cargo test --release` builds the libraries, tests
# and examples, and `cargo bench --no-run` (--benches) reuses those artifacts (the bench profile
# is the release profile). A debug `cargo test` would be a second full build of candle and burn
# (the workspace's test profile is optimized anyway), so there is none. The lints ride on that
# build too: clippy-driver compiles the workspace's crates (RUSTC_WORKSPACE_WRAPPER, what `cargo
# clippy` sets, here with code generation) with warnings denied, every target the tests and
# benchmarks build (`--all-targets`); the dependencies are compiled by rustc, their lints capped
# as always. (`cargo clippy` would need a check build of candle and burn of its own.)
# candle, burn and every other dependency are built unoptimized (opt-level 0 for the packages
# outside the workspace; the adapters and lion-optim stay at the release profile's 3): the
# tests run a few small steps and two short trainings, and optimizing some 270 crates was two
# thirds of this script's CPU time (about 1,000 of 1,400 CPU seconds; deps at opt-level 0: 390).
#
# Needs Rust 1.95 (what burn 0.22 needs; candle 0.11 needs 1.94): the `stable` toolchain, installed
# with rustup if it is missing (override with TOOLCHAIN=...). Installs nothing else.
. "$(dirname "$0")/lib.sh"
benches=false
if [ "${1:-}" = --benches ]; then benches=true; shift; fi

TOOLCHAIN="${TOOLCHAIN:-stable}"
ci_toolchain "$TOOLCHAIN" rustfmt clippy
cargo() { command cargo "+$TOOLCHAIN" "$@"; }
have="$(rustup run "$TOOLCHAIN" rustc --version)"
ci_log "toolchain: $have"
case "$have" in
  rustc\ 1.[0-9].* | rustc\ 1.[0-8][0-9].* | rustc\ 1.9[0-4].*) ci_die "burn 0.22 needs Rust >= 1.95 (have: $have)" ;;
esac
ci_time "cargo fetch (the crates of candle and burn)" cargo fetch --quiet
ci_end_of_setup
# A target directory of its own unless CARGO_TARGET_DIR says otherwise: nothing here is shared
# with the core's builds, and cargo's lock then never makes it wait for another build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(ci_target_dir)/ci/integrations}"

CRATES=(-p lion-optim-candle -p lion-optim-burn)
DEPS_O0=(--config 'profile.release.package."*".opt-level=0')
RUSTC_WORKSPACE_WRAPPER="$(rustup which --toolchain "$TOOLCHAIN" clippy-driver)"
export RUSTC_WORKSPACE_WRAPPER RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-D warnings"
t0=$SECONDS
if $benches; then
  ci_time "benches build (dependencies unoptimized: built to compile, not to measure)" \
    cargo "${DEPS_O0[@]}" bench --no-run "${CRATES[@]}"
  ci_log "integrations: benchmarks built in $((SECONDS - t0)) s"
  exit 0
fi
ci_time "fmt" cargo fmt "${CRATES[@]}" --check
ci_time "test (release: libraries, tests, examples; linted by clippy-driver)" \
  cargo "${DEPS_O0[@]}" test --release "${CRATES[@]}"
ci_time "docs" env RUSTDOCFLAGS="-D warnings" cargo doc --no-deps "${CRATES[@]}"
# Publishable: `cargo package` of both (with the unpublished core of this workspace, as cargo
# packages a workspace), and every source file of each library in its .crate. (Not verified by a
# rebuild from the .crate: that would be a third build of candle and burn; the sources are
# the ones tested above.)
dirty=()
[ "${CI:-}" = true ] || [ -z "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ] || dirty=(--allow-dirty)
ci_time "cargo package (lion-optim, lion-optim-candle, lion-optim-burn)" \
  cargo package --quiet --no-verify "${dirty[@]}" -p lion-optim "${CRATES[@]}"
pkgdir="$CARGO_TARGET_DIR/package"
for c in candle burn; do
  crate="$pkgdir/lion-optim-$c-$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/integrations/$c/Cargo.toml" | head -1).crate"
  [ -f "$crate" ] || ci_die "no $crate"
  listed="$(tar -tzf "$crate" | sed 's|^[^/]*/||')"
  for f in $(cd "$ROOT/integrations/$c" && git ls-files src Cargo.toml README.md LICENSE-MIT LICENSE-APACHE); do
    grep -qx "$f" <<<"$listed" || ci_die "$(basename "$crate") lacks $f"
  done
  ci_log "$(basename "$crate"): $(grep -c . <<<"$listed") files, every source file of the library"
done
ci_log "integrations: all passed in $((SECONDS - t0)) s"

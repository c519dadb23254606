#!/usr/bin/env bash
# The crate as published: `cargo package`, its file list, then the README's test command
# (`cargo test`) in the unpacked .crate, with the package's own Cargo.lock (--locked) and its own
# target dir. Fails on any failure. The package leaves test data out (tests/data, fuzz/: see
# `include` in Cargo.toml); the tests that need it say "SKIPPED <test>" there
# (tests/suite/common/mod.rs, `fixture`), and this script checks that exactly the expected ones
# did: a test that starts to need a file the package lacks, or a skip that stops, fails here.
# (In the repository a missing fixture fails the test itself.)
# Usage: ci/package.sh [extra `cargo test` args; then the skip list is not checked]
# Env:   CI=true: a dirty work tree is an error (cargo's); otherwise it is packaged as it is
#        (--allow-dirty, said in the log).
#        PACKAGE_TOOLCHAIN=1.89 (e.g. the MSRV, installed if missing): the unpacked package is
#        tested with that toolchain, so one build proves both the package and the MSRV (.ci/run
#        does that with Cargo.toml's rust-version).
. "$(dirname "$0")/lib.sh"
# The tests that skip in the package, one per line, sorted.
EXPECTED_SKIPS="fuzz_regressions::seed_corpus_and_regressions
pytorch::one_step_matches_the_reference_pytorch_code"

TD="$(ci_target_dir)"
export CARGO_TARGET_DIR="$TD/ci/package"
read -r NAME VERSION < <(cargo metadata --no-deps --format-version 1 --manifest-path "$ROOT/Cargo.toml" \
  | python3 -c 'import json,sys; p=json.load(sys.stdin)["packages"][0]; print(p["name"], p["version"])')
flags=()
if [ "${CI:-}" != true ] && [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]; then
  ci_log "the work tree has uncommitted changes: packaging it as it is (--allow-dirty)"
  flags+=(--allow-dirty)
fi

ci_log "package contents (cargo package --list):"
cargo package --list "${flags[@]}" 2>/dev/null | sed 's/^/    /' >&2
# --no-verify: cargo's verification is a `cargo build` of the unpacked package; the tests below
# build the same sources (and everything else `cargo test` builds) from the .crate itself.
ci_time "cargo package" cargo package --no-verify "${flags[@]}"
crate="$CARGO_TARGET_DIR/package/$NAME-$VERSION.crate"
[ -f "$crate" ] || ci_die "cargo package made no $crate"
ci_log "$(basename "$crate"): $(du -k "$crate" | cut -f1) KiB, $(tar -tzf "$crate" | grep -cv '/$') files"

# Unpacked outside the repository, so that no Cargo.toml above it (a workspace) applies.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tar -xzf "$crate" -C "$work"
cd "$work/$NAME-$VERSION"
log="$work/test.log"
tc=()
if [ -n "${PACKAGE_TOOLCHAIN:-}" ]; then
  ci_toolchain "$PACKAGE_TOOLCHAIN"
  tc=("+$PACKAGE_TOOLCHAIN")
  export CARGO_TARGET_DIR="$TD/ci/package-$PACKAGE_TOOLCHAIN"
fi
ci_time "cargo ${tc[*]} test --locked $* (the unpacked package)" \
  cargo "${tc[@]}" test --locked "$@" 2>&1 | tee "$log"

if [ $# -eq 0 ]; then
  # Not anchored: the line may start after libtest's "test <name> ... " (another stream).
  skips="$(sed -n 's/.*SKIPPED \([^: ]*::[^: ]*\): .*/\1/p' "$log" | sort -u)"
  ci_log "skipped in the package (test data left out): ${skips//$'\n'/, }"
  [ "$skips" = "$EXPECTED_SKIPS" ] || ci_die "the tests skipped in the package are not the expected ones:
expected:
$EXPECTED_SKIPS
skipped:
$skips"
fi
ci_log "package: $NAME $VERSION builds and passes its tests from the .crate"

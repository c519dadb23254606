#!/usr/bin/env bash
# The crate as published: `cargo package`, its file list, then `cargo test` in the unpacked
# .crate (the library's unit tests and doc tests: the test suite and benchmarks are not in the
# package, see `include` in Cargo.toml), with the package's own Cargo.lock (--locked) and its
# own target dir. Fails on any failure.
# In debug: opt-level 0 (the crate's test profile is opt-level 3, for the suite that tests what
# ships; here the point is the package, the MSRV and debug assertions, and an unoptimized build
# takes a third of the CPU time).
# Usage: ci/package.sh [--setup] [extra `cargo test` args]
# Env:   CI=true: a dirty work tree is an error (cargo's); otherwise it is packaged as it is
#        (--allow-dirty, said in the log).
#        PACKAGE_TOOLCHAIN=1.89 (e.g. the MSRV, installed if missing): the unpacked package is
#        tested with that toolchain, so one build proves both the package and the MSRV (ci/run
#        does that with Cargo.toml's rust-version).
. "$(dirname "$0")/lib.sh"
[ -z "${PACKAGE_TOOLCHAIN:-}" ] || ci_toolchain "$PACKAGE_TOOLCHAIN"
ci_end_of_setup
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
tc=()
if [ -n "${PACKAGE_TOOLCHAIN:-}" ]; then
  tc=("+$PACKAGE_TOOLCHAIN")
  export CARGO_TARGET_DIR="$TD/ci/package-$PACKAGE_TOOLCHAIN"
fi
ci_time "cargo ${tc[*]} test --locked --all-features $* (the unpacked package, opt-level 0)" \
  env CARGO_PROFILE_TEST_OPT_LEVEL=0 cargo "${tc[@]}" test --locked --all-features "$@"
ci_log "package: $NAME $VERSION builds and passes its tests from the .crate"

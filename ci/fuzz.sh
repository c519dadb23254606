#!/usr/bin/env bash
# Fuzzing smoke run: builds every cargo-fuzz target of fuzz/ (libFuzzer, the dev profile: debug
# assertions and overflow checks on, no sanitizer: the crate's unsafe code is the SIMD paths and
# Miri checks those; FUZZ_FLAGS="-a" for the optimized ASan build) and runs each for SECONDS
# from the committed seed corpus
# (fuzz/seeds/<target>/). A failing input fails CI; it is printed in base64 so it can be
# kept as a regression test (fuzz/regressions/<target>/, replayed by tests/suite/fuzz_regressions.rs).
# The runs are single-threaded: ci/run builds (--build) and runs them beside the next stage.
# Usage: ci/fuzz.sh [--setup | --build] [SECONDS per target, default 30]
# Env:   NIGHTLY; installs cargo-fuzz from crates.io if it is missing.
. "$(dirname "$0")/lib.sh"
secs="${1:-30}"
FLAGS="${FUZZ_FLAGS:---dev -s none}"
ci_toolchain "$NIGHTLY" rust-src
command -v cargo-fuzz >/dev/null || ci_time "cargo install cargo-fuzz" cargo install --locked cargo-fuzz
ci_end_of_setup
TD="$(ci_target_dir)"
export CARGO_TARGET_DIR="$TD/ci/fuzz"
cd "$ROOT/fuzz"
targets="$(cargo "+$NIGHTLY" fuzz list)"
[ -n "$targets" ] || ci_die "cargo fuzz list found no targets"
# shellcheck disable=SC2086 # the flags are words
ci_time "cargo fuzz build $FLAGS (all targets)" cargo "+$NIGHTLY" fuzz build $FLAGS
ci_end_of_build
for t in $targets; do
  corpus="$TD/ci/fuzz-corpus/$t"; artifacts="$TD/ci/fuzz-artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  rc=0
  # shellcheck disable=SC2086 # the flags are words
  ci_time "cargo fuzz run $t (${secs} s)" cargo "+$NIGHTLY" fuzz run $FLAGS "$t" "$corpus" "$ROOT/fuzz/seeds/$t" -- \
    -max_total_time="$secs" -timeout=20 -print_final_stats=1 -artifact_prefix="$artifacts/" \
    2> >(grep -vE '^#[0-9]+\s+(NEW|REDUCE|pulse)' >&2) || rc=$?
  if [ "$rc" != 0 ]; then
    for f in "$artifacts"/*; do
      [ -f "$f" ] && printf '== failing input %s (base64): %s\n' "$(basename "$f")" "$(base64 -w0 "$f")" >&2
    done
    ci_die "fuzz target $t failed (exit $rc)"
  fi
done
ci_log "fuzz: every target ran ${secs} s without a failure"

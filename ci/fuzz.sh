#!/usr/bin/env bash
# Fuzzing smoke run: builds every cargo-fuzz target of fuzz/ (libFuzzer + AddressSanitizer,
# debug assertions on) and runs each for SECONDS from the committed seed corpus
# (fuzz/seeds/<target>/). A failing input fails CI; it is printed in base64 so it can be
# kept as a regression test (fuzz/regressions/<target>/, replayed by tests/suite/fuzz_regressions.rs).
# The runs are single-threaded: ci/run builds (--build) and runs them beside the next stage.
# Usage: ci/fuzz.sh [--setup | --build] [SECONDS per target, default 30]
# Env:   NIGHTLY; installs cargo-fuzz from crates.io if it is missing.
. "$(dirname "$0")/lib.sh"
secs="${1:-30}"
ci_toolchain "$NIGHTLY" rust-src
command -v cargo-fuzz >/dev/null || ci_time "cargo install cargo-fuzz" cargo install --locked cargo-fuzz
ci_end_of_setup
TD="$(ci_target_dir)"
export CARGO_TARGET_DIR="$TD/ci/fuzz"
cd "$ROOT/fuzz"
targets="$(cargo "+$NIGHTLY" fuzz list)"
[ -n "$targets" ] || ci_die "cargo fuzz list found no targets"
ci_time "cargo fuzz build -a (all targets)" cargo "+$NIGHTLY" fuzz build -a
ci_end_of_build
for t in $targets; do
  corpus="$TD/ci/fuzz-corpus/$t"; artifacts="$TD/ci/fuzz-artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  rc=0
  ci_time "cargo fuzz run $t (${secs} s)" cargo "+$NIGHTLY" fuzz run -a "$t" "$corpus" "$ROOT/fuzz/seeds/$t" -- \
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

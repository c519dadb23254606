#!/usr/bin/env bash
# The test suite built with RUSTFLAGS="-C target-cpu=x86-64-v3": wide itself compiles to AVX2
# (and may fuse its mul_add); tests/suite/platform.rs checks the portable path reports "avx2", and
# every path must still equal the reference bit for bit. Skipped (with a message) on a CPU
# without AVX2, FMA and F16C. By default the library's tests and the suite (the doc tests and
# examples check no path the suite does not), at opt-level 1: what this build tests is which
# instructions the target features select (wide's, half's), not the optimizer's work on them
# (the core part of ci/test-all.sh tests the optimized build); it takes two thirds of the CPU
# time of opt-level 3.
# Usage: ci/x86-64-v3.sh [--setup] [cargo test args; default: --release --lib --test suite]
#        (installs nothing)
. "$(dirname "$0")/lib.sh"
ci_end_of_setup
[ "$(uname -m)" = x86_64 ] || { ci_log "not x86_64: skipped"; exit 0; }
for f in avx2 fma f16c bmi2 movbe; do
  grep -qw "$f" /proc/cpuinfo || { ci_log "this CPU lacks $f (x86-64-v3): skipped"; exit 0; }
done
export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-cpu=x86-64-v3"
export RUSTDOCFLAGS="${RUSTDOCFLAGS:+$RUSTDOCFLAGS }-C target-cpu=x86-64-v3"  # doctests, if asked for
CARGO_TARGET_DIR="$(ci_target_dir)/ci/x86-64-v3"
export CARGO_TARGET_DIR
export CARGO_PROFILE_RELEASE_OPT_LEVEL="${CARGO_PROFILE_RELEASE_OPT_LEVEL:-1}"
[ $# -gt 0 ] || set -- --release --lib --test suite
LION_EXPECT_INSTRUCTIONS=avx2 ci_time "RUSTFLAGS='$RUSTFLAGS' cargo test $*" cargo test "$@"
ci_log "x86-64-v3: all tests passed"

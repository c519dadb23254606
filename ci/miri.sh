#!/usr/bin/env bash
# Miri (nightly): the library's unit tests and the integration tests that reach every byte-level
# operation, interpreted with Miri's UB checks, on x86_64 and on s390x, a big-endian target (Miri
# needs no cross toolchain): every bytemuck cast, bit manipulation and checkpoint (de)serialization
# must give the same results on both byte orders. The harness shrinks its case counts under
# cfg(miri) (tests/suite/common/mod.rs, src/simd.rs). The suites left out (errors, options, stochastic,
# reference) are loops of the same safe code over more values: under Miri they would take about
# ten minutes per target for no new coverage of byte order or unsafe code.
# Usage: ci/miri.sh [cargo miri test args, run on every target; default: the sets below]
#        ci/miri.sh --setup   only installs (toolchain, components, packages, Miri's sysroots):
#                             .ci/run does that first, then runs the tests in the background
# Env:   MIRI_TARGETS (default "x86_64-unknown-linux-gnu s390x-unknown-linux-gnu"), NIGHTLY,
#        MIRIFLAGS (default: -Zmiri-disable-isolation, for proptest's regression files)
. "$(dirname "$0")/lib.sh"
ci_toolchain "$NIGHTLY" miri rust-src
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation}"
# A dev-dependency's build script (criterion's `alloca`) compiles C for the target: Miri never
# runs that code, but the build needs a C compiler for s390x.
case "${MIRI_TARGETS:-s390x}" in *s390x*) ci_apt gcc-s390x-linux-gnu libc6-dev-s390x-cross ;; esac
if [ "${1:-}" = --setup ]; then
  for t in ${MIRI_TARGETS:-x86_64-unknown-linux-gnu s390x-unknown-linux-gnu}; do
    ci_time "cargo miri setup --target $t" cargo "+$NIGHTLY" miri setup --target "$t"
  done
  exit 0
fi
run() { # TARGET ARGS...
  local t="$1"; shift
  ci_time "cargo +$NIGHTLY miri test --target $t $*" cargo "+$NIGHTLY" miri test --target "$t" "$@"
}
# The integration tests are one binary (tests/suite); its modules are selected by name filters.
# With the `safetensors` feature the state file's round trip (little-endian bytes written and
# read on a big-endian machine) and the fuzz oracles' safetensors checks run too.
BYTE_LEVEL="equivalence:: optimizer:: fuzz_regressions:: pytorch:: platform:: model::safetensors::round_trip"
suites() { # TARGET FILTERS...
  local t="$1"; shift
  run "$t" --lib --features safetensors
  run "$t" --test suite --features safetensors -- "$@"
}
if [ $# -gt 0 ]; then
  for t in ${MIRI_TARGETS:-x86_64-unknown-linux-gnu s390x-unknown-linux-gnu}; do run "$t" "$@"; done
elif [ -n "${MIRI_TARGETS:-}" ]; then
  for t in $MIRI_TARGETS; do suites "$t" $BYTE_LEVEL; done
else
  # x86_64: Miri's UB checks over wide's SSE2 code and the casts (little-endian results are
  # what the native tests already check). s390x: every byte-level test, big-endian.
  suites x86_64-unknown-linux-gnu equivalence::
  suites s390x-unknown-linux-gnu $BYTE_LEVEL
fi
ci_log "miri: all tests passed"

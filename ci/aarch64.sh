#!/usr/bin/env bash
# aarch64: the test suite cross-compiled for aarch64-unknown-linux-gnu and run under qemu-aarch64
# (user mode), so wide's NEON path is what gets tested. tests/suite/platform.rs checks that the portable
# path reports "neon" (LION_EXPECT_INSTRUCTIONS), and the NEON vector instructions in the
# crate's and wide's functions of the test binaries are counted (there must be some).
# Usage: ci/aarch64.sh [--setup | --build] [cargo test args; default: the library and the
#        integration tests]
# Env:   AARCH64_CPU (qemu -cpu, default max)
. "$(dirname "$0")/lib.sh"
T=aarch64-unknown-linux-gnu
ci_target "$T"
ci_apt gcc-aarch64-linux-gnu libc6-dev-arm64-cross
ci_apt_qemu qemu-user
ci_end_of_setup
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -cpu ${AARCH64_CPU:-max}"
# Debian's arm64 cross glibc, for the dynamically linked test binaries.
QEMU_LD_PREFIX="${QEMU_LD_PREFIX:-$(dirname "$(dirname "$(dpkg -L libc6-arm64-cross | grep -m1 '/lib/ld-linux-aarch64.so.1$')")")}"
export QEMU_LD_PREFIX
[ $# -gt 0 ] || set -- --lib --tests
# Its own target dir: no lock shared with the host builds of a stage running beside it.
CARGO_TARGET_DIR="$(ci_target_dir)/ci/aarch64"
export CARGO_TARGET_DIR
if [ "$CI_PHASE" = build ]; then
  ci_time "cargo test --no-run --target $T $*" cargo test --no-run --target "$T" "$@"
fi
ci_end_of_build
export LION_EXPECT_INSTRUCTIONS=neon
ci_time "cargo test --target $T $* (qemu-aarch64)" cargo test --target "$T" "$@"

n=0
for f in $(ci_test_executables --target "$T" "$@"); do
  n=$(( n + $(aarch64-linux-gnu-objdump -d -C "$f" | awk '
      /^[0-9a-f]+ <.*>:$/ { inf = index($0, "lion_optim::") || index($0, "wide::") || index($0, "core_arch::") }
      inf && /[ \t,]v[0-9]+\.(16b|8b|8h|4h|4s|2s|2d)/ { n++ } END { print n + 0 }') ))
done
echo "== aarch64: NEON vector instructions in lion_optim / wide functions of the test binaries: $n" >&2
[ "$n" -gt 0 ] || ci_die "no NEON instructions in the crate's code"
ci_log "aarch64: all tests passed under qemu-aarch64 on the NEON path"

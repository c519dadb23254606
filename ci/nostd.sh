#!/usr/bin/env bash
# no_std: proves lion-optim with --no-default-features needs nothing but `core`.
#  1. ci/nostd-probe: a `#![no_std] #![no_main]` x86_64 Linux binary with its own panic handler
#     and entry point (no libc) links the crate and RUNS the checks of its library
#     (ci/nostd-probe/src/lib.rs): Lion steps in f32 and bf16 checked against hand-computed bit
#     patterns, bad input, skipped non-finite steps, on every available backend (the no_std
#     CPUID probe picks AVX2 / AVX-512 here). If the crate's graph pulled in std, linking fails
#     with E0152; the binary is also scanned for std symbols.
#  2. The library compiles for wasm32v1-none, a target with no std at all, without and with the
#     `alloc` feature (`cargo check`: the crate's dependency on std would show there). The
#     bare-metal Arm and RISC-V targets need no check here: the firmware of ci/thumbv7em.sh,
#     ci/mcu-cores.sh and ci/firmware.sh builds the crate without std for thumbv7em, thumbv6m and
#     riscv32imac, and ci/c.sh builds it for thumbv7em with `alloc` only.
# Usage: ci/nostd.sh [--setup]
. "$(dirname "$0")/lib.sh"
TARGETS="wasm32v1-none"
ci_apt binutils
# shellcheck disable=SC2086 # the targets are words
ci_target $TARGETS
ci_end_of_setup
TD="$(ci_target_dir)"

P="$ROOT/ci/nostd-probe"
export CARGO_TARGET_DIR="$TD/ci/nostd-probe"
log="$CARGO_TARGET_DIR.log"; mkdir -p "$(dirname "$log")"
if ! ( cd "$P" && ci_time "no_std probe: build (release)" cargo build --release ) >"$log" 2>&1; then
  cat "$log" >&2
  grep -q 'E0152\|duplicate lang item' "$log" && ci_die "lion-optim --no-default-features pulls in std (E0152 above)"
  ci_die "the no_std probe did not build"
fi
grep '== TIME' "$log" >&2 || true
bin="$CARGO_TARGET_DIR/release/lion-optim-nostd-probe"
nstd=$(nm -C "$bin" | grep -cE ' std::|_ZN3std|3std[0-9]' || true)
[ "$nstd" = 0 ] || ci_die "the no_std probe links $nstd std symbols"
nlion=$(nm -C "$bin" | grep -c 'lion_optim::' || true)
[ "$nlion" -gt 0 ] || ci_die "the no_std probe contains no lion_optim code"
echo "== no_std probe: links with 0 std symbols, $nlion lion_optim symbols" >&2
rc=0; timeout 120 "$bin" || rc=$?
[ "$rc" = 0 ] || ci_die "the no_std probe failed (exit $rc; 101 = a check failed)"
export CARGO_TARGET_DIR="$TD"

for t in $TARGETS; do
  ci_time "cargo check --lib --target $t --no-default-features" \
    cargo check -q --lib --target "$t" --no-default-features
  ci_time "cargo check --lib --target $t --no-default-features --features alloc" \
    cargo check -q --lib --target "$t" --no-default-features --features alloc
done
ci_log "no_std: all checks passed"

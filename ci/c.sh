#!/usr/bin/env bash
# The C ABI (bindings/c), from a fresh clone on a fresh machine: installs gcc/g++, valgrind,
# pkg-config, the Arm toolchain with newlib, make, qemu-system-arm and the thumbv7em target, then
#   1. checks that the committed header is what cbindgen generates from the sources;
#   2. builds liblion_optim.a / .so (release), lints the crate (clippy -D warnings, with and
#      without std), runs its Rust unit tests;
#   3. compiles the header and the C tests with gcc -std=c11 -Wall -Wextra -Werror (and the
#      header with g++ -std=c++17 -Wall -Wextra -Werror), runs them: bit-identity with the
#      crate's specification for every dtype combination (vectors from
#      examples/gen_vectors.rs), the optimizer handle, every bad input;
#   4. runs them again under -fsanitize=address,undefined, and the handle's lifecycle under
#      valgrind (no leak);
#   5. builds the static library for thumbv7em-none-eabihf without std (and with alloc only),
#      links a program that calls every stateless entry point and checks that no panic is
#      reachable (the panic handler is not linked in); builds the C training firmware
#      (bindings/c/examples/firmware: arm-none-eabi-gcc, newlib-nano, the library without std)
#      and runs it on an emulated Cortex-M4F (qemu-system-arm -M mps2-an386, semihosting): it
#      must exit 0 and print "fw-c: PASS" (both of its runs, bf16 and 8-bit momentum, learn);
#   6. installs the library with bindings/c/install.sh and builds and runs the training
#      example with `cc $(pkg-config --cflags --libs lion_optim)`: it must learn.
#
#   bash ci/c.sh [--setup | --build]        (ci/lib.sh: install only / install and build)
#
# Env: C_SKIP_VALGRIND=1, C_SKIP_THUMB=1 (skip those parts, for quick local runs),
#      FW_TIMEOUT (seconds for the firmware under QEMU, default 300).
. "$(dirname "$0")/lib.sh"
C_DIR="$ROOT/bindings/c"
THUMB=thumbv7em-none-eabihf

ci_apt gcc g++ libc6-dev pkg-config valgrind python3
[ -n "${C_SKIP_THUMB:-}" ] || {
  ci_target "$THUMB"
  ci_apt gcc-arm-none-eabi libnewlib-arm-none-eabi make
  ci_apt_qemu qemu-system-arm
}
ci_end_of_setup

# A target directory of its own (cargo's lock never makes it wait for another build of the clone).
TD="$(ci_target_dir)/ci/c"
export CARGO_TARGET_DIR="$TD"
OUT="$TD/c-abi"
mkdir -p "$OUT"
CFLAGS=(-std=c11 -Wall -Wextra -Werror -Wpedantic -Wshadow -Wstrict-prototypes -O2 -g -I "$C_DIR/include")
CXXFLAGS=(-std=c++17 -Wall -Wextra -Werror -Wpedantic -O2 -g -I "$C_DIR/include")

# 1. The header.
ci_time "header: committed = generated (cbindgen)" \
  cargo run --quiet --manifest-path "$C_DIR/tools/gen-header/Cargo.toml" --target-dir "$TD/c-gen-header" -- --check

# 2. The libraries, lints, Rust tests, the vector generator.
ci_time "build liblion_optim (release) and the examples" \
  cargo build --release -p lion-optim-c --lib --examples
ci_time "clippy lion-optim-c (default features)" \
  cargo clippy --release -p lion-optim-c --all-targets -- -D warnings
if [ -z "${C_SKIP_THUMB:-}" ]; then
  # Without std the library is for bare metal (panic = abort): linted for its target.
  ci_time "clippy lion-optim-c for $THUMB (no std; alloc only)" \
    bash -c 'cargo clippy --release -p lion-optim-c --lib --target "$0" --target-dir "$1" --no-default-features -- -D warnings &&
             cargo clippy --release -p lion-optim-c --lib --target "$0" --target-dir "$1" --no-default-features --features alloc -- -D warnings' \
    "$THUMB" "$TD/c-thumb"
fi
ci_time "cargo fmt --check (lion-optim-c)" cargo fmt -p lion-optim-c --check
LIB="$TD/release"
NATIVE="$(rustc --crate-type staticlib --crate-name probe --print native-static-libs -o "$OUT/libprobe.a" - </dev/null 2>&1 \
  | sed -n 's/.*native-static-libs: //p' | tail -1)"
[ -n "$NATIVE" ] || NATIVE="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"
ci_end_of_build

ci_time "Rust unit tests (lion-optim-c)" cargo test --release -p lion-optim-c --lib
ci_time "test vectors (the crate's reference)" \
  cargo run --release --quiet -p lion-optim-c --example gen_vectors -- "$OUT/vectors"

# 3. Header and tests, C11 and C++17, against the static library.
ci_time "the header alone: gcc -std=c11 and g++ -std=c++17, -Wall -Wextra -Werror" bash -c '
  set -e
  printf "#include \"lion_optim.h\"\n" > "$0/header_only.c"
  gcc "${@:2}" -fsyntax-only "$0/header_only.c"
  cp "$0/header_only.c" "$0/header_only.cpp"
  g++ -std=c++17 -Wall -Wextra -Werror -Wpedantic -I "$1/include" -fsyntax-only "$0/header_only.cpp"
  gcc -std=c2x -Wall -Wextra -Werror -I "$1/include" -fsyntax-only "$0/header_only.c"
' "$OUT" "$C_DIR" "${CFLAGS[@]}"
build_tests() { # SUFFIX EXTRA-FLAGS...
  local sfx="$1"; shift
  for t in test_stateless test_handle test_errors; do
    # shellcheck disable=SC2086
    gcc "${CFLAGS[@]}" "$@" "$C_DIR/tests/$t.c" "$LIB/liblion_optim.a" $NATIVE -lpthread -lm -o "$OUT/$t$sfx" || return
  done
  # shellcheck disable=SC2086
  g++ "${CXXFLAGS[@]}" "$@" "$C_DIR/tests/test_header.cpp" "$LIB/liblion_optim.a" $NATIVE -o "$OUT/test_header$sfx"
}
run_tests() { # SUFFIX
  # (&&: ci_time runs this where `set -e` does not stop a function)
  "$OUT/test_stateless$1" "$OUT/vectors" && "$OUT/test_handle$1" "$OUT/vectors" &&
    "$OUT/test_errors$1" && "$OUT/test_header$1"
}
ci_time "compile the C tests (gcc -std=c11 -Wall -Wextra -Werror, g++ -std=c++17)" build_tests ""
ci_time "run the C tests" run_tests ""

# 4. Sanitizers, valgrind.
ci_time "compile the C tests with -fsanitize=address,undefined" \
  build_tests "-asan" -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
ci_time "run the C tests under ASan + UBSan" \
  env ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  bash -c "$(declare -f run_tests); OUT='$OUT'; run_tests -asan"
# 5. Bare metal: the static library without std (stateless entry points), with alloc only (the
#    handle over malloc), and no panic reachable from the stateless entry points.
if [ -z "${C_SKIP_THUMB:-}" ]; then
  TTD="$TD/c-thumb"
  ci_time "liblion_optim.a for $THUMB, no std" \
    cargo rustc --release -p lion-optim-c --lib --target "$THUMB" --target-dir "$TTD" \
      --no-default-features --crate-type staticlib
  cp "$TTD/$THUMB/release/liblion_optim.a" "$OUT/liblion_optim-thumb.a"
  ARMCC=(arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -mfpu=fpv4-sp-d16 -mfloat-abi=hard -std=c11 -Wall -Wextra
         -Werror -O2 -ffunction-sections -fdata-sections -I "$C_DIR/include" "$C_DIR/tests/firmware_link.c"
         --specs=nano.specs --specs=nosys.specs -Wl,--gc-sections -Wl,--no-warn-rwx-segments
         -Wl,--no-warn-execstack)
  ci_time "link a Cortex-M4F program over every stateless entry point" \
    "${ARMCC[@]}" "$OUT/liblion_optim-thumb.a" -o "$OUT/firmware_link.elf"
  # Self-contained: the same program links without any C library or libgcc (the library brings
  # its own memcpy/memset and soft-float helpers), as the README says.
  ci_time "link it with -nostdlib (no libc, no libgcc)" \
    arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -mfpu=fpv4-sp-d16 -mfloat-abi=hard -std=c11 -Wall -Wextra \
      -Werror -O2 -ffunction-sections -fdata-sections -I "$C_DIR/include" "$C_DIR/tests/firmware_link.c" \
      "$OUT/liblion_optim-thumb.a" -nostdlib -Wl,-e,main -Wl,--gc-sections -Wl,--no-warn-rwx-segments -Wl,--no-warn-execstack \
      -o "$OUT/firmware_nolibc.elf"
  ci_time "liblion_optim.a for $THUMB, alloc only (the handle over malloc)" \
    cargo rustc --release -p lion-optim-c --lib --target "$THUMB" --target-dir "$TTD" \
      --no-default-features --features alloc --crate-type staticlib
  cp "$TTD/$THUMB/release/liblion_optim.a" "$OUT/liblion_optim-thumb-alloc.a"
  ci_time "link a Cortex-M4F program with an optimizer handle (malloc/free of newlib)" \
    "${ARMCC[@]}" -DLION_FIRMWARE_HANDLE "$OUT/liblion_optim-thumb-alloc.a" -o "$OUT/firmware_link_handle.elf"
  # Every function that can reach the panic handler (direct calls, backwards from it) must be
  # panic machinery or the core's executor, whose remaining checks (range indexes of gradients
  # and momentum at the parameters' length) are unreachable: every entry point validates the
  # three lengths first. Anything else — the binding's code, float formatting — fails.
  arm-none-eabi-objdump -d -C "$OUT/firmware_link.elf" > "$OUT/firmware_link.dis"
  ci_time "no panic reachable from the binding's stateless entry points" python3 - "$OUT/firmware_link.dis" <<'PY'
import re, sys
calls, cur = {}, None
for line in open(sys.argv[1]):
    m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
    if m:
        cur = m.group(1)
        continue
    m = re.search(r"\sb\w*(?:\.\w+)?\s+[0-9a-f]+ <([^>+]*)", line)
    if m and cur:
        calls.setdefault(m.group(1), set()).add(cur)
machinery = ("core::panicking::", "core::slice::index::", "core::option::", "core::result::",
             "core::cell::panic", "rust_begin_unwind")
seen, todo = set(), ["rust_begin_unwind"]
while todo:
    f = todo.pop()
    for c in calls.get(f, ()):
        if c not in seen:
            seen.add(c)
            todo.append(c)
reach = sorted(c for c in seen if not c.startswith(machinery))
core_exec = [c for c in reach if "lion_optim::exec::" in c]
other = [c for c in reach if c not in core_exec]
print("functions that reach the panic handler: %d in the core's executor, %d elsewhere"
      % (len(core_exec), len(other)))
for c in core_exec:
    print("  core (unreachable: lengths validated first):", c[:160])
for c in other:
    print("  NOT ALLOWED:", c[:160])
sys.exit(1 if other else 0)
PY
  ci_log "thumbv7em: the stateless entry points link without std or an allocator ($(arm-none-eabi-size "$OUT/firmware_link.elf" | tail -1 | awk '{print $1}') bytes of code with all 27 combinations)"

  # The C training firmware with the library without std: its own start-up code and linker
  # script, newlib-nano with rdimon semihosting (QEMU exits with the firmware's exit status).
  FW="$OUT/firmware-c"
  FW_MAKE=(make -C "$C_DIR/examples/firmware" --no-print-directory LIB="$OUT/liblion_optim-thumb.a" BUILD="$FW")
  ci_time "build the C training firmware (arm-none-eabi-gcc, newlib-nano)" "${FW_MAKE[@]}"
  arm-none-eabi-size "$FW/firmware.elf" >&2
  read -r text data bss _ < <(arm-none-eabi-size "$FW/firmware.elf" | tail -1)
  ci_log "C firmware: flash $((text + data)) B (text $text, data $data), static RAM $((data + bss)) B (data $data, bss $bss)"
  rc=0
  ci_time "train in C on the Cortex-M4F (qemu-system-arm mps2-an386)" \
    "${FW_MAKE[@]}" --silent run TIMEOUT="${FW_TIMEOUT:-300}" 2>&1 | tee "$FW/run.log" || rc=$?
  [ "$rc" = 0 ] || ci_die "the C training firmware failed (make run: exit $rc; QEMU's status is make's \"Error N\" above)"
  grep -q '^fw-c: PASS$' "$FW/run.log" || ci_die "the C training firmware did not print fw-c: PASS"
fi

# 6. Install, pkg-config, the training example.
PREFIX="$OUT/prefix"
rm -rf "$PREFIX"
ci_time "install.sh $PREFIX" env LION_OPTIM_NO_BUILD=1 CARGO_TARGET_DIR="$TD" bash "$C_DIR/install.sh" "$PREFIX"
export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig"
ci_time "build examples/train.c with cc \$(pkg-config --cflags --libs lion_optim)" \
  bash -c 'cc -std=c11 -Wall -Wextra -Werror -O2 "$0" $(pkg-config --cflags --libs lion_optim) -lm -o "$1"' \
  "$C_DIR/examples/train.c" "$OUT/train"
ci_time "run the training example (it must learn)" "$OUT/train"

if [ -z "${C_SKIP_VALGRIND:-}" ]; then
  # The handle's whole lifecycle (create, groups, tensors, steps, save/load, destroy) and every
  # error path: no leak (definite or indirect), no invalid access. The installed shared library this time.
  gcc "${CFLAGS[@]}" "$C_DIR/tests/test_handle.c" -L "$PREFIX/lib" -Wl,-rpath,"$PREFIX/lib" -llion_optim -lpthread -o "$OUT/test_handle-so"
  gcc "${CFLAGS[@]}" "$C_DIR/tests/test_errors.c" -L "$PREFIX/lib" -Wl,-rpath,"$PREFIX/lib" -llion_optim -lpthread -lm -o "$OUT/test_errors-so"
  VG=(valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect
      --show-leak-kinds=definite,indirect)
  ci_time "valgrind: the handle's lifecycle" "${VG[@]}" "$OUT/test_handle-so" "$OUT/vectors"
  ci_time "valgrind: every error path" "${VG[@]}" "$OUT/test_errors-so"
fi

ci_log "c: all passed"

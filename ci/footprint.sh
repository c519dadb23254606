#!/usr/bin/env bash
# The optimizer's footprint on microcontrollers: flash, instructions per element, stack and RAM,
# measured on the three bare-metal targets of ci/mcu (the Cortex-M4F, the Cortex-M0 and the
# RV32IMAC, under the QEMU machines of ci/thumbv7em.sh and ci/mcu-cores.sh), printed at the end
# as a markdown table with the command behind each figure. A measurement, like a benchmark: not
# part of CI (ci/run does not call it).
#
# The program is ci/mcu/examples/footprint.rs (the firmware crate's runtime: entry, println! over
# semihosting, exit), built at the crate's firmware profile (opt-level "s") in variants that
# differ only in what updates the parameters (cargo features of ci/mcu):
#   fp-none  the same loop over the same buffers with a plain `p -= lr * g` (the baseline),
#   fp-step  `lion_optim::step_with` over &mut [f32], &[f32], &mut [M]: one dtype combination,
#            statically typed,
#   fp-lion  `Lion::with_buffers` over one `MomentumMut`, `Lion::step` with a `Tensor`: the
#            kernels are picked at run time, so every dtype combination is linked,
# each with momentum M = fp-m-f32, fp-m-bf16 or fp-m-q8 (8-bit blockwise; there is no
# statically typed 8-bit step, so q8 goes through `Lion`). Parameters and gradients are f32.
#
# 1. Flash: `size` text + data of a variant minus that of fp-none with the same momentum (same
#    buffers, same fill, same printing: the difference is the optimizer, with what it pulls in:
#    f64 hyperparameter arithmetic, soft-float helpers on the cores without an FPU, ...).
# 2. Instructions per element, counted exactly: a QEMU TCG plugin (ci/mcu/insn-count.c, compiled
#    here with the host's cc; Debian's QEMU supports plugins but ships none) counts every guest
#    instruction that executes and prints the count whenever the first instruction of
#    `footprint_mark` runs. The program marks its regions (see the example): region 4 = K steps
#    over N elements, region 5 = K steps over 2N elements whose second half repeats the first's
#    values, so I5 - I4 is exactly the cost of N elements (on the cores without an FPU the cost
#    of an element depends on its values; the figure is the mean over N = 4096 random elements:
#    parameters in [-1, 1), gradients and momentum in [-0.01, 0.01)) and
#        instructions per element = (I5 - I4) / (K*N),   per call = (2*I4 - I5) / K
#    (the constant: validation, hyperparameter constants in f64, dispatch, vector tails, plus the
#    ~10 instructions of the marker calls and the closure around the step). Startup, filling and
#    printing are outside the regions. Checks of the counter, on every run: regions 2 and 3 are
#    the same code around a hand-written loop of 2*10 and 2*250 instructions, so I3 - I2 must be
#    480 exactly. And on one variant (FOOTPRINT_TRACE, default the Cortex-M4F's fp-step/bf16),
#    the plugin's counts are compared with an independent count: QEMU's own execution log with
#    one instruction per translation block and no block chaining
#    (-accel tcg,one-insn-per-tb=on -d exec,nochain: one "Trace" line per executed instruction),
#    whose line numbers at the marker must equal the plugin's counts + 1, and its line count the
#    plugin's total. (That log costs a write(2) per instruction, ~5 minutes for the Cortex-M0's
#    80 million instructions: hence the plugin for the measurements.)
# 3. Stack: the program paints 32 KiB below the stack pointer, runs one step over N elements and
#    finds the deepest word no longer painted: the bytes one step needs below the caller's stack
#    pointer (the calling closure included; a closure that does nothing takes 0-8 bytes).
# 4. RAM: the momentum buffers' sizes as the program reports them, per parameter (the
#    parameters and gradients are the application's).
# The checksums of the parameters and momentum after one step must be the same on the three
# targets (the crate's results are bit-identical across instruction sets) and for fp-step and
# fp-lion.
#
# C: the C firmware of bindings/c/examples/firmware (Cortex-M4F) linked with the C ABI's static
# library for thumbv7em-none-eabihf without std (ci/c.sh builds it; FOOTPRINT_C_LIB, else it is
# built here as ci/c.sh does, at the root's release profile: opt-level 3): the flash that comes
# from liblion_optim.a is the sum of the archive's input sections the link kept in flash
# (firmware.map). Its run (`make ... run`) measures the stack of its steps itself: in the table too.
#
# Usage: ci/footprint.sh [--setup | --build]
# Env: FOOTPRINT_TRACE   "target/api-momentum ..." variants to cross-check with QEMU's exec log
#                        (default thumbv7em-none-eabihf/step-bf16; "none" skips it)
#      FOOTPRINT_C=0     skip the C firmware;  FOOTPRINT_C_LIB  liblion_optim.a to link it with
#      FOOTPRINT_TIMEOUT seconds per QEMU run (default 300)
. "$(dirname "$0")/lib.sh"
TARGETS=(thumbv7em-none-eabihf thumbv6m-none-eabi riscv32imac-unknown-none-elf)
# api-momentum: the baseline of each momentum dtype first.
VARIANTS=(none-f32 step-f32 lion-f32 none-bf16 step-bf16 lion-bf16 none-q8 lion-q8)
ci_qemu_setup "${TARGETS[@]}"
command -v cc >/dev/null || ci_apt gcc libc6-dev
[ "${FOOTPRINT_C:-1}" = 0 ] || ci_apt make gcc-arm-none-eabi libnewlib-arm-none-eabi
HOST="$(rustc -vV | sed -n 's/^host: //p')"
LLVM_BIN="$(rustc --print sysroot)/lib/rustlib/$HOST/bin"
# llvm_tool NAME: an LLVM tool (llvm-size, llvm-nm, llvm-strip) on PATH or from rustup's llvm-tools.
llvm_tool() {
  if command -v "$1" >/dev/null; then echo "$1"; elif [ -x "$LLVM_BIN/$1" ]; then echo "$LLVM_BIN/$1"; else return 1; fi
}
if ! llvm_tool llvm-size >/dev/null || ! llvm_tool llvm-nm >/dev/null; then
  ci_time "rustup component add llvm-tools" ci_locked rustup component add llvm-tools
fi
ci_end_of_setup

SIZE="$(llvm_tool llvm-size)" || ci_die "no llvm-size (rustup component add llvm-tools)"
NM="$(llvm_tool llvm-nm)" || ci_die "no llvm-nm (rustup component add llvm-tools)"
STRIP="$(llvm_tool llvm-strip || true)"
TD="$(ci_target_dir)"
# The example's own target dir (host RUSTFLAGS must not reach it).
export CARGO_TARGET_DIR="$TD/ci/footprint"
unset RUSTFLAGS
OUT="$CARGO_TARGET_DIR/footprint"
rm -rf "$OUT"; mkdir -p "$OUT"
TO="timeout ${FOOTPRINT_TIMEOUT:-300}"
# The core of each target's QEMU machine (CI_QEMU, ci/lib.sh), for the messages.
declare -A CORE=([thumbv7em-none-eabihf]=Cortex-M4F [thumbv6m-none-eabi]=Cortex-M0 [riscv32imac-unknown-none-elf]=RV32IMAC)
features_of() { echo "fp-${1%-*},fp-m-${1#*-}"; }   # step-bf16 -> fp-step,fp-m-bf16

# The instruction-count plugin. Its API version: QEMU 9.0 and later accept 2 to their own,
# older ones only 1 (the calls used are the same in both).
qemu_major="$(qemu-system-arm --version | sed -n 's/^QEMU emulator version \([0-9]*\)\..*/\1/p')"
PLUGIN_VERSION=2; [ "${qemu_major:-0}" -ge 9 ] || PLUGIN_VERSION=1
PLUGIN="$OUT/insn-count.so"
PLUGIN_CC=(cc -shared -fPIC -O2 -Wall -Wextra -DPLUGIN_VERSION="$PLUGIN_VERSION" -o "$PLUGIN" "$CI_DIR/mcu/insn-count.c")
ci_time "compile the QEMU plugin insn-count" "${PLUGIN_CC[@]}"

# 1. Build every variant for every target (the dependencies once per target, then only the
#    example); keep each ELF.
cd "$ROOT/ci/mcu"
build_target() {
  local t="$1" v
  mkdir -p "$OUT/$t"
  for v in "${VARIANTS[@]}"; do
    cargo build --release --locked --quiet --target "$t" --example footprint --features "$(features_of "$v")" \
      || ci_die "$t $v: the build failed"
    cp "$CARGO_TARGET_DIR/$t/release/examples/footprint" "$OUT/$t/$v.elf" || ci_die "$t $v: no ELF"
  done
}
for t in "${TARGETS[@]}"; do
  ci_time "build the footprint variants for $t (${#VARIANTS[*]})" build_target "$t"
done

# The C firmware.
C_FLASH="" C_STACK=""
if [ "${FOOTPRINT_C:-1}" != 0 ]; then
  C_LIB="${FOOTPRINT_C_LIB:-$TD/ci/c/c-abi/liblion_optim-thumb.a}"
  if [ ! -f "$C_LIB" ]; then
    ci_time "liblion_optim.a for thumbv7em-none-eabihf, no std (as ci/c.sh)" \
      cargo rustc --release --manifest-path "$ROOT/Cargo.toml" -p lion-optim-c --lib \
        --target thumbv7em-none-eabihf --target-dir "$TD/ci/footprint-c" --no-default-features --crate-type staticlib
    C_LIB="$TD/ci/footprint-c/thumbv7em-none-eabihf/release/liblion_optim.a"
  fi
  C_BUILD="$OUT/c-firmware"
  C_MAKE=(make -C "$ROOT/bindings/c/examples/firmware" --no-print-directory BUILD="$C_BUILD" LIB="$C_LIB")
  ci_time "build the C firmware (bindings/c/examples/firmware)" "${C_MAKE[@]}" >/dev/null
fi
ci_end_of_build

# 2. Run every variant under QEMU with the plugin; collect the results as "target variant key
#    value" lines.
RES="$OUT/results.txt"; : > "$RES"
mark_of() { printf '0x%x' $(( 0x$("$NM" "$1" | awk '$3 == "footprint_mark" {print $1}') & ~1 )); }  # Thumb: bit 0 off
run_variant() {
  local t="$1" v="$2" elf="$OUT/$1/$2.elf" log="$OUT/$1/$2.log" mark rc=0
  mark="$(mark_of "$elf")"
  # shellcheck disable=SC2086 # the QEMU command is words
  $TO ${CI_QEMU[$t]} -plugin "$PLUGIN,mark=$mark" -kernel "$elf" >"$log" 2>&1 || rc=$?
  [ "$rc" = 0 ] || { cat "$log" >&2; ci_die "$t $v: qemu exited with $rc"; }
  grep -q '^fp: done' "$log" || ci_die "$t $v: the program did not finish ($log)"
  local text data; read -r text data _ < <("$SIZE" "$elf" | tail -1)
  # (ci_time runs this function where `set -e` does not apply: every failure is a ci_die.)
  python3 - "$t" "$v" "$log" "$((text + data))" >>"$RES" <<'EOF' || ci_die "$t $v: see above ($log)"
import re, sys
t, v, log, flash = sys.argv[1], sys.argv[2], open(sys.argv[3]).read(), int(sys.argv[4])
marks = [int(m) for m in re.findall(r'^insn-count: mark (\d+)$', log, re.M)]
kv = dict(re.findall(r'(\w+)=(\S+)', ' '.join(re.findall(r'^fp: (.*)$', log, re.M))))
def fail(msg):
    sys.exit(f'footprint: {t} {v}: {msg}')
if len(marks) != 7:
    fail(f'{len(marks)} markers, not 7 (1 2 3 104 4 105 5)')
i2, i3, i4, i5 = (marks[1] - marks[0], marks[2] - marks[1], marks[4] - marks[3], marks[6] - marks[5])
if i3 - i2 != 480:
    fail(f'the counter is off: the calibration regions differ by {i3 - i2} instructions, not 480')
n, k = int(kv['n']), int(kv['k'])
out = {'flash': flash, 'elem': (i5 - i4) / (k * n), 'call': (2 * i4 - i5) / k, 'i4': i4, 'i5': i5,
       'stack': int(kv['step_bytes']), 'noop': int(kv['noop_bytes']),
       'momentum_bytes': int(kv['momentum_bytes']), 'elements': int(kv['elements']), 'n': n, 'k': k}
if out['stack'] >= int(kv['painted_bytes']):
    fail('the step used all the painted stack')
for key, val in out.items():
    print(t, v, key, val)
EOF
}
run_target() { local v; for v in "${VARIANTS[@]}"; do run_variant "$1" "$v"; done; }
for t in "${TARGETS[@]}"; do
  ci_time "run the footprint variants on ${CORE[$t]} with the instruction counter" run_target "$t"
done

# The counter against QEMU's execution log (one "Trace" line per executed instruction).
for tv in ${FOOTPRINT_TRACE:-thumbv7em-none-eabihf/step-bf16}; do
  [ "$tv" = none ] && break
  t="${tv%%/*}" v="${tv#*/}" elf="$OUT/${tv%%/*}/${tv#*/}.elf"
  [ -f "$elf" ] || ci_die "FOOTPRINT_TRACE: no variant $tv"
  trace_check() {
    local mark pc kernel="$elf" got want
    mark="$(mark_of "$elf")"; pc="$(printf '/%016x/' "$mark")"
    # Without the symbol table QEMU's log lines are shorter (no function names).
    if [ -n "$STRIP" ]; then kernel="$OUT/trace.elf"; "$STRIP" -o "$kernel" "$elf"; fi
    # shellcheck disable=SC2086 # the QEMU command is words
    got="$($TO ${CI_QEMU[$t]} -accel tcg,one-insn-per-tb=on -d exec,nochain -D /dev/fd/3 -kernel "$kernel" \
             3>&1 >/dev/null 2>/dev/null \
           | awk -v pc="$pc" '/^Trace /{n++; if (index($0, pc)) printf "%d ", n - 1} END{print "total", n}')"
    want="$(sed -n 's/^insn-count: mark \(.*\)/\1 /p; s/^insn-count: total \(.*\)/total \1/p' "$OUT/$t/$v.log" | tr -d '\n')"
    ci_log "exec log: $got"
    ci_log "plugin:   $want"
    [ "$got" = "$want" ] || ci_die "$tv: the plugin's counts differ from QEMU's execution log"
    echo "$tv ${got##* }" >>"$OUT/trace-checked.txt"
  }
  ci_time "cross-check the counter on $tv with QEMU's execution log" trace_check
done

# Bit-identical results: one checksum per momentum dtype for fp-step and fp-lion on every target,
# one for fp-none.
for m in f32 bf16 q8; do
  sums="$(for t in "${TARGETS[@]}"; do for api in step lion; do
            [ -f "$OUT/$t/$api-$m.log" ] && grep '^fp: checksum' "$OUT/$t/$api-$m.log"; done; done | sort -u)"
  [ "$(wc -l <<<"$sums")" = 1 ] || ci_die "momentum $m: the results differ across targets or APIs: $sums"
done
sums="$(for t in "${TARGETS[@]}"; do grep '^fp: checksum' "$OUT/$t/none-f32.log"; done | sort -u)"
[ "$(wc -l <<<"$sums")" = 1 ] || ci_die "the baseline's results differ across targets: $sums"
ci_log "results: the same bits on the three targets, from step_with and from Lion"

# The C firmware's flash from liblion_optim.a: the archive's input sections that the link kept in
# an output section stored in flash (.text with its constants, .ARM.exidx, the initial values of
# .data), from the link map.
if [ "${FOOTPRINT_C:-1}" != 0 ]; then
  C_FLASH="$(python3 - "$C_BUILD/firmware.map" <<'EOF'
import re, sys
lines = open(sys.argv[1]).read().split('\n')
total, out, pending = 0, None, False
for line in lines[lines.index('Linker script and memory map') + 1:]:
    m = re.match(r'^(\.\S+)', line)                    # an output section
    if m:
        out, pending = m.group(1), False
        continue
    if re.match(r'^ (\.\S+|COMMON)\s*$', line):        # an input section, its numbers on the next line
        pending = True
        continue
    m = re.match(r'^ (?:(\.\S+|COMMON)\s+|\s+)(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(\S.*)$', line)
    if m and (m.group(1) or pending) and 'liblion_optim' in m.group(4).rsplit('/', 1)[-1] \
            and not re.match(r'\.(bss|noinit|heap|stack|debug|comment|ARM\.attributes|note|stab)', out or '.debug'):
        total += int(m.group(3), 16)
    pending = False
print(total)
EOF
)"
  read -r c_text c_data _ < <("$SIZE" "$C_BUILD/firmware.elf" | tail -1)
  ci_log "C firmware: $((c_text + c_data)) B of flash, $C_FLASH B of it from $(basename "$C_LIB")"
  # Its run measures the stack of its steps itself (painted, as here): the table shows them.
  ci_time "run the C firmware (qemu-system-arm mps2-an386)" "${C_MAKE[@]}" run >"$C_BUILD/run.log" 2>&1 \
    || { cat "$C_BUILD/run.log" >&2; ci_die "the C firmware failed"; }
  C_STACK="$(sed -n 's/^fw-c: stack of one step (\([0-9]*\) elements): lion_step (f32, f32, bf16) \([0-9]*\) bytes, lion_step_q8 \([0-9]*\) bytes.*/\1 \2 \3/p' "$C_BUILD/run.log")"
fi

# 3. The table.
export TARGETS_LIST="${TARGETS[*]}" RES OUT C_FLASH C_LIB C_BUILD CARGO_TARGET_DIR SIZE NM PLUGIN
C_TOTAL="$(( ${c_text:-0} + ${c_data:-0} ))" PLUGIN_CMD="${PLUGIN_CC[*]}"
QEMU_M4="${CI_QEMU[thumbv7em-none-eabihf]}" QEMU_M0="${CI_QEMU[thumbv6m-none-eabi]}"
QEMU_RV="${CI_QEMU[riscv32imac-unknown-none-elf]}"
CPU="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
QEMU_VERSION="$(qemu-system-arm --version | head -1)" RUSTC_VERSION="$(rustc --version)"
export C_TOTAL C_STACK PLUGIN_CMD QEMU_M4 QEMU_M0 QEMU_RV CPU QEMU_VERSION RUSTC_VERSION
table="$(python3 - <<'EOF'
import os
res = {}
for line in open(os.environ['RES']):
    t, v, k, val = line.split()
    res[t, v, k] = val
targets = os.environ['TARGETS_LIST'].split()
core = {'thumbv7em-none-eabihf': 'Cortex-M4F', 'thumbv6m-none-eabi': 'Cortex-M0',
        'riscv32imac-unknown-none-elf': 'RV32IMAC'}
qemu = {'thumbv7em-none-eabihf': os.environ['QEMU_M4'], 'thumbv6m-none-eabi': os.environ['QEMU_M0'],
        'riscv32imac-unknown-none-elf': os.environ['QEMU_RV']}
moms = ['f32', 'bf16', 'q8']
def g(t, v, k): return res.get((t, v, k))
def num(x): return f'{x:,}'
def flash(t, api, m):
    a, b = g(t, f'{api}-{m}', 'flash'), g(t, f'none-{m}', 'flash')
    return '—' if a is None or b is None else num(int(a) - int(b)) + ' B'
def per(t, api, m, k):
    x = g(t, f'{api}-{m}', k)
    if x is None: return '—'
    x = float(x)
    return num(int(x)) if x == int(x) else f'{x:,.2f}'
def stack(t, api, m):
    x = g(t, f'{api}-{m}', 'stack')
    return '—' if x is None else num(int(x)) + ' B'
def ram(t, m):
    b, e = g(t, f'none-{m}', 'momentum_bytes'), g(t, f'none-{m}', 'elements')
    return f'{int(b) / int(e):.4g} B ({num(int(b))} B / {num(int(e))})'
F = lambda api, m: f'fp-{api},fp-m-{m}'
rows = []
for t in targets:
    c = f'{t} ({core[t]})'
    rows.append((c, 'flash: `step_with`, one dtype combination (f32 params and grads)',
                 [flash(t, 'step', m) if m != 'q8' else '—' for m in moms],
                 'size(fp-step,fp-m-M) − size(fp-none,fp-m-M)'))
    rows.append((c, 'flash: `Lion` (every dtype combination)', [flash(t, 'lion', m) for m in moms],
                 'size(fp-lion,fp-m-M) − size(fp-none,fp-m-M)'))
    rows.append((c, 'flash: the program without the optimizer (baseline)',
                 [num(int(g(t, f'none-{m}', 'flash'))) + ' B' for m in moms], 'size(fp-none,fp-m-M)'))
    rows.append((c, 'instructions per element: `step_with`',
                 [per(t, 'step', m, 'elem') if m != 'q8' else '—' for m in moms],
                 'run(fp-step,fp-m-M): (I5 − I4) / (K·N)'))
    rows.append((c, 'instructions per call: `step_with`',
                 [per(t, 'step', m, 'call') if m != 'q8' else '—' for m in moms],
                 'run(fp-step,fp-m-M): (2·I4 − I5) / K'))
    rows.append((c, 'instructions per element: `Lion::step`', [per(t, 'lion', m, 'elem') for m in moms],
                 'run(fp-lion,fp-m-M): (I5 − I4) / (K·N)'))
    rows.append((c, 'instructions per call: `Lion::step`', [per(t, 'lion', m, 'call') for m in moms],
                 'run(fp-lion,fp-m-M): (2·I4 − I5) / K'))
    rows.append((c, 'instructions per element: baseline `p -= lr * g`',
                 [per(t, 'none', 'f32', 'elem'), '', ''], 'run(fp-none,fp-m-f32): (I5 − I4) / (K·N)'))
    rows.append((c, 'stack of one step: `step_with`',
                 [stack(t, 'step', m) if m != 'q8' else '—' for m in moms], 'run(fp-step,fp-m-M): `fp: stack step_bytes`'))
    rows.append((c, 'stack of one step: `Lion::step`', [stack(t, 'lion', m) for m in moms],
                 'run(fp-lion,fp-m-M): `fp: stack step_bytes`'))
    rows.append((c, 'RAM: momentum per parameter (buffers of the run)', [ram(t, m) for m in moms],
                 'run(fp-none,fp-m-M): `fp: buffers momentum_bytes elements`'))
if os.environ.get('C_FLASH'):
    rows.append(('thumbv7em-none-eabihf (Cortex-M4F), C', 'flash: C: `lion_step` + `lion_step_q8` (every dtype combination; the C ABI library as ci/c.sh builds it: opt-level 3)',
                 [f"{num(int(os.environ['C_FLASH']))} B (of {num(int(os.environ['C_TOTAL']))} B)", '', ''],
                 'sum of liblion_optim.a\'s kept flash input sections in firmware.map (see C below)'))
if os.environ.get('C_STACK'):
    elems, bf16, q8 = os.environ['C_STACK'].split()
    rows.append(('thumbv7em-none-eabihf (Cortex-M4F), C', f'stack of one step: C `lion_step` (f32, f32, bf16), `lion_step_q8` (f32, f32); {elems} elements',
                 ['', num(int(bf16)) + ' B', num(int(q8)) + ' B'], 'make ... run: `fw-c: stack of one step` (the firmware paints its own stack)'))
n, k = g(targets[0], 'step-f32', 'n'), g(targets[0], 'step-f32', 'k')
print('| target | measurement | f32 momentum | bf16 momentum | 8-bit momentum | command |')
print('|---|---|--:|--:|--:|---|')
for c, what, vals, cmd in rows:
    print(f'| {c} | {what} | ' + ' | '.join(vals) + f' | {cmd} |')
td = os.environ['CARGO_TARGET_DIR']
print()
print(f"Measured on: {os.environ['CPU']}; {os.environ['QEMU_VERSION']}; {os.environ['RUSTC_VERSION']}; "
      f'opt-level "s"; N = {n} elements, K = {k} step(s); parameters and gradients f32.')
print()
print('Commands (T: the target, M: f32, bf16 or q8; from ci/mcu):')
print()
print(f'- build: `CARGO_TARGET_DIR={td} cargo build --release --locked --target T --example footprint --features fp-API,fp-m-M` '
      f'(API: none, step, lion) → `{td}/T/release/examples/footprint` (ci/footprint.sh keeps a copy of each as '
      f"`{os.environ['OUT']}/T/API-M.elf`)")
print(f"- size(F): text + data of `{os.environ['SIZE']} ELF` (the Berkeley format) of the build with features F")
print(f"- the counter: `{os.environ['PLUGIN_CMD']}`")
print('- run(F): the build with features F under QEMU with the counter, the marker\'s address from `llvm-nm ELF` '
      '(`footprint_mark`, bit 0 cleared on Thumb); I2…I5 are the differences of consecutive `insn-count: mark` '
      'counts (markers 1 2 3 104 4 105 5: regions 2, 3, 4 = 104→4, 5 = 105→5):')
for t in targets:
    print(f'  - {t}: `{qemu[t]} -plugin {os.environ["PLUGIN"]},mark=0x$(llvm-nm ELF | awk \'$3=="footprint_mark"{{print $1}}\') -kernel ELF`')
if os.environ.get('C_FLASH'):
    print(f"- C: `make -C bindings/c/examples/firmware BUILD={os.environ['C_BUILD']} LIB={os.environ['C_LIB']}`, "
          f"then the sizes of the input sections from liblion_optim*.a in `{os.environ['C_BUILD']}/firmware.map` "
          '(Linker script and memory map; not .bss, not debug sections); `make ... run` runs it')
EOF
)"
[ -n "$table" ] || ci_die "no table"
printf '%s\n' "$table" >"$OUT/table.md"
ci_log "the table (also in $OUT/table.md):"
printf '\n%s\n' "$table"

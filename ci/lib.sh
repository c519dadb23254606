# shellcheck shell=bash
# Shared helpers of the CI scripts. Source it: . "$(dirname "$0")/lib.sh"
# Everything is found relative to this file (the crate root is its parent) or through PATH,
# rustup and cargo metadata: the scripts work from any clone, on a fresh machine that has only
# the stable Rust toolchain (they install the rest: rustup targets, components and toolchains,
# Debian packages, PyPI packages in a venv, cargo-fuzz).
#
# Phases. Every script takes an optional first argument, read (and removed from "$@") here:
#   --setup   only install what the script needs (downloads: apt, rustup, pip, cargo install),
#   --build   install and build, run nothing slow (scripts without a separate run: everything),
#   (none)    everything.
# A script calls ci_end_of_setup after its installs and ci_end_of_build after its builds. ci/run
# uses the phases to download while another stage compiles, and to run an emulator or
# interpreter while the next stage compiles.
set -euo pipefail

CI_PHASE=all
case "${1:-}" in
  --setup) CI_PHASE=setup; shift ;;
  --build) CI_PHASE=build; shift ;;
esac
export CI_PHASE

CI_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$CI_DIR/.." && pwd)"
export CI_DIR ROOT
cd "$ROOT"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}" CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# The toolchains these scripts install. NIGHTLY may be pinned (e.g. nightly-2026-05-19).
NIGHTLY="${NIGHTLY:-nightly}"
MSRV="${MSRV:-$(sed -n 's/^rust-version *= *"\([^"]*\)".*/\1/p' "$ROOT/Cargo.toml")}"

ci_log() { printf '== [%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
ci_die() { printf 'ci: error: %s\n' "$*" >&2; exit 1; }

# The end of a phase: `--setup` stops after the installs, `--build` after the builds.
ci_end_of_setup() {
  [ "$CI_PHASE" = setup ] || return 0
  ci_log "$(basename "$0") --setup: installed what it needs"
  exit 0
}
ci_end_of_build() {
  [ "$CI_PHASE" = build ] || return 0
  ci_log "$(basename "$0") --build: built (nothing run)"
  exit 0
}

# ci_locked cmd... : runs an install command under a machine-wide lock, so that scripts running
# side by side never run two package managers (apt, rustup) at once.
CI_INSTALL_LOCK="${CI_INSTALL_LOCK:-${TMPDIR:-/tmp}/lion-optim-ci-install.lock}"
ci_locked() {
  local rc=0
  exec {CI_LOCK_FD}>>"$CI_INSTALL_LOCK"
  flock "$CI_LOCK_FD"
  "$@" || rc=$?
  exec {CI_LOCK_FD}>&-
  return "$rc"
}

# ci_time LABEL cmd... : runs a command and prints how long it took.
ci_time() {
  local label="$1"; shift
  local t0=$SECONDS rc=0
  ci_log "$label"
  "$@" || rc=$?
  printf '== TIME %-58s %5d s (rc=%d)\n' "$label" "$((SECONDS - t0))" "$rc" >&2
  return "$rc"
}

# Cargo's target dir for the crate (honours CARGO_TARGET_DIR and cargo config).
ci_target_dir() {
  cargo metadata --no-deps --format-version 1 --manifest-path "$ROOT/Cargo.toml" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])'
}

# ci_apt_missing PKG... : those of the Debian packages PKG... that are not installed (one a line).
ci_apt_missing() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}

# apt-get install the packages that are missing (apt-get update first if the lists are old).
ci_apt() {
  local missing
  mapfile -t missing < <(ci_apt_missing "$@")
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -360 2>/dev/null | head -1)" ]; then
    ci_time "apt-get update" ci_locked $sudo apt-get update -qq
  fi
  ci_time "apt-get install ${missing[*]}" ci_locked \
    env DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ci_apt_qemu PKG... : installs QEMU packages without breaking an installed qemu-* from
# <codename>-backports (bookworm's image ships qemu-utils 10 from backports; bookworm's own
# qemu-system-* 7.2 conflicts with it and apt would silently REMOVE qemu-utils). When a
# backports QEMU is installed, the packages come from backports too, through a temporary apt
# configuration derived from the machine's own Debian source (/etc/apt is not modified).
ci_apt_qemu() {
  local missing
  mapfile -t missing < <(ci_apt_missing "$@")
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! dpkg-query -W -f='${Version}\n' 'qemu-*' 2>/dev/null | grep -q '~bpo'; then
    ci_apt "${missing[@]}"; return
  fi
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  local codename tmp uri keyring
  codename="$(. /etc/os-release && echo "$VERSION_CODENAME")"
  tmp="$(mktemp -d)"
  mkdir -p "$tmp/parts" "$tmp/lists/partial"
  cp /etc/apt/sources.list.d/*.sources "$tmp/parts/" 2>/dev/null || true
  if [ -f /etc/apt/sources.list ]; then cp /etc/apt/sources.list "$tmp/sources.list"; else : > "$tmp/sources.list"; fi
  # The first deb822 stanza whose suites include "$codename" (the main archive).
  read -r uri keyring < <(awk -v c="$codename" '
      /^URIs:/ {u=$2} /^Suites:/ {s=$0} /^Signed-By:/ {k=$2}
      /^$/ { if (s ~ ("[ ]" c "([ ]|$)") && u != "") { print u, k; exit } u=""; s=""; k="" }
      END { if (s ~ ("[ ]" c "([ ]|$)") && u != "") print u, k }' /etc/apt/sources.list.d/*.sources 2>/dev/null) || true
  if [ -z "${uri:-}" ]; then
    ci_log "no deb822 source for $codename found: plain install"; rm -rf "$tmp"; ci_apt "${missing[@]}"; return
  fi
  printf 'Types: deb\nURIs: %s\nSuites: %s-backports\nComponents: main\n%s\n' \
    "$uri" "$codename" "${keyring:+Signed-By: $keyring}" > "$tmp/parts/ci-backports.sources"
  local o=(-o "Dir::Etc::sourcelist=$tmp/sources.list" -o "Dir::Etc::sourceparts=$tmp/parts"
           -o "Dir::State::lists=$tmp/lists" -o APT::Sandbox::User=root)
  ci_time "apt-get update (+$codename-backports)" ci_locked $sudo apt-get "${o[@]}" update -qq
  ci_time "apt-get install -t $codename-backports ${missing[*]}" ci_locked \
    env DEBIAN_FRONTEND=noninteractive $sudo apt-get "${o[@]}" install -y -qq --no-install-recommends \
      -t "$codename-backports" "${missing[@]}" >/dev/null
  rm -rf "$tmp"
}

# ci_toolchain NAME [COMPONENT...] : installs a rustup toolchain (minimal profile) and components.
ci_toolchain() {
  local tc="$1"; shift
  if ! rustup run "$tc" rustc --version >/dev/null 2>&1; then
    ci_time "rustup toolchain install $tc" ci_locked rustup toolchain install "$tc" --profile minimal --no-self-update
  fi
  local c have
  have="$(rustup component list --installed --toolchain "$tc")"
  for c in "$@"; do
    grep -q "^$c" <<<"$have" && continue
    ci_time "rustup component add $c ($tc)" ci_locked rustup component add --toolchain "$tc" "$c"
  done
}

# ci_target [+TOOLCHAIN] TARGET... : rustup target add, for the default toolchain or the given one.
ci_target() {
  local tc=()
  case "${1:-}" in +*) tc=(--toolchain "${1#+}"); shift ;; esac
  local installed t
  installed="$(rustup target list --installed "${tc[@]}")"
  for t in "$@"; do
    grep -qx "$t" <<<"$installed" && continue
    ci_time "rustup target add $t ${tc[*]}" ci_locked rustup target add "${tc[@]}" "$t" \
      || ci_die "rustup could not add $t"
  done
}

# The QEMU command that runs each bare-metal target's firmware (followed by -kernel ELF): the
# firmware talks through semihosting (its output, its exit status), so no display, monitor or
# serial. ci/thumbv7em.sh, ci/firmware.sh, ci/mcu-cores.sh (which says why these machines) and
# ci/footprint.sh run them.
#   thumbv7em-none-eabihf         a Cortex-M4F: the mps2-an386 board,
#   thumbv6m-none-eabi            QEMU's Cortex-M0: the micro:bit, its nRF51 enlarged to 4 MiB of
#                                 flash and 4 MiB of SRAM, as ci/mcu/memory-microbit.x expects,
#   riscv32imac-unknown-none-elf  RV32IMAC: the SiFive E31 on the virt board, machine mode.
CI_SEMIHOSTING="-nographic -monitor none -serial none -semihosting-config enable=on,target=native"
declare -A CI_QEMU=(
  [thumbv7em-none-eabihf]="qemu-system-arm -cpu cortex-m4 -machine mps2-an386 $CI_SEMIHOSTING"
  [thumbv6m-none-eabi]="qemu-system-arm -machine microbit -global nrf51-soc.flash-size=4194304 -global nrf51-soc.sram-size=4194304 $CI_SEMIHOSTING"
  [riscv32imac-unknown-none-elf]="qemu-system-riscv32 -machine virt -cpu sifive-e31 -bios none $CI_SEMIHOSTING"
)

# ci_qemu_setup TARGET... : the rustup targets and the QEMU packages that run their firmware.
ci_qemu_setup() {
  ci_target "$@"
  local pkgs=() t p
  for t in "$@"; do
    case "${CI_QEMU[$t]}" in
      qemu-system-arm*) p=qemu-system-arm ;;
      # qemu-system-misc has qemu-system-riscv32 (bookworm: in the package; backports: a dependency).
      qemu-system-riscv32*) p=qemu-system-misc ;;
    esac
    [[ " ${pkgs[*]} " == *" $p "* ]] || pkgs+=("$p")
  done
  ci_apt_qemu "${pkgs[@]}"
}

# ci_firmware_env CRATE_DIR TARGET_DIR TIMEOUT TARGET... : makes `cargo run --target TARGET` in
# the firmware crate CRATE_DIR (the current directory from here on) run the firmware under its
# QEMU machine (CI_QEMU), killed after TIMEOUT seconds. The firmware gets its own target dir,
# TARGET_DIR (host RUSTFLAGS must not reach it).
ci_firmware_env() {
  local crate="$1" target_dir="$2" timeout="$3" t; shift 3
  for t in "$@"; do
    export "CARGO_TARGET_$(tr 'a-z-' 'A-Z_' <<<"$t")_RUNNER=timeout $timeout ${CI_QEMU[$t]} -kernel"
  done
  export CARGO_TARGET_DIR="$target_dir"
  unset RUSTFLAGS
  cd "$crate"
}

# ci_firmware_run WHAT PASS LOG LABEL ARG... : runs a firmware (`cargo run ARG...` under the
# runner of ci_firmware_env), its output teed to LOG; fails unless it exits 0 and prints a line
# that matches the pattern PASS.
ci_firmware_run() {
  local what="$1" pass="$2" log="$3" label="$4" rc=0; shift 4
  mkdir -p "$(dirname "$log")"
  ci_time "$label" cargo run "$@" 2>&1 | tee "$log" || rc=$?
  [ "$rc" = 0 ] || ci_die "$what failed (exit $rc)"
  grep -q "$pass" "$log" || ci_die "the firmware did not report PASS"
}

# The test executables a `cargo test --no-run ARGS...` build produced (one path a line).
ci_test_executables() {
  cargo test --no-run "$@" --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])'
}

# ci_helper_crate DIR : prepares a generated helper crate's directory; pins its dependencies to
# the versions of the project's Cargo.lock (cargo adds and removes what differs).
ci_helper_crate() {
  mkdir -p "$1/src"
  if [ -f "$ROOT/Cargo.lock" ] && [ ! -f "$1/Cargo.lock" ]; then cp "$ROOT/Cargo.lock" "$1/Cargo.lock"; fi
}

#!/usr/bin/env bash
# Installs the C library of lion-optim under a prefix of your choice:
#
#   bindings/c/install.sh PREFIX
#
#   PREFIX/include/lion_optim.h
#   PREFIX/lib/liblion_optim.a                    (static: link it with $(pkg-config --static --libs-only-l lion_optim))
#   PREFIX/lib/liblion_optim.so.0.1.0             (shared; SONAME liblion_optim.so.0.1, links .so.0.1 and .so)
#   PREFIX/lib/pkgconfig/lion_optim.pc            (cc app.c $(pkg-config --cflags --libs lion_optim))
#
# Builds the library first (cargo build --release -p lion-optim-c: threads, safetensors), in
# CARGO_TARGET_DIR or the workspace's target directory. Env: LION_OPTIM_CARGO_FLAGS (extra
# cargo build flags, e.g. "--no-default-features --features std"), LION_OPTIM_NO_BUILD=1 (install
# what is built).
set -euo pipefail
prefix="${1:?usage: bindings/c/install.sh PREFIX}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
mkdir -p "$prefix"
prefix="$(cd "$prefix" && pwd)"

if [ -z "${LION_OPTIM_NO_BUILD:-}" ]; then
  # shellcheck disable=SC2086
  cargo build --release --manifest-path "$root/Cargo.toml" -p lion-optim-c --lib ${LION_OPTIM_CARGO_FLAGS:-}
fi
target_dir="${CARGO_TARGET_DIR:-$(cargo metadata --no-deps --format-version 1 --manifest-path "$root/Cargo.toml" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}"
lib="$target_dir/release"
version="$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$here/Cargo.toml" | head -1)"
major="${version%%.*}"
minor="$(echo "$version" | cut -d. -f2)"
if [ "$major" = 0 ]; then soname="liblion_optim.so.0.$minor"; else soname="liblion_optim.so.$major"; fi

# The system libraries a Rust static library needs (Rust's std), as rustc reports them.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
: > "$tmp/empty.rs"
native="$(rustc --crate-type staticlib --crate-name probe --print native-static-libs -o "$tmp/libprobe.a" \
  "$tmp/empty.rs" 2>&1 | sed -n 's/.*native-static-libs: //p' | tail -1)"

install -d "$prefix/include" "$prefix/lib/pkgconfig"
install -m 644 "$here/include/lion_optim.h" "$prefix/include/lion_optim.h"
install -m 644 "$lib/liblion_optim.a" "$prefix/lib/liblion_optim.a"
case "$(uname -s)" in
  Darwin)
    install -m 755 "$lib/liblion_optim.dylib" "$prefix/lib/liblion_optim.dylib" ;;
  *)
    install -m 755 "$lib/liblion_optim.so" "$prefix/lib/liblion_optim.so.$version"
    ln -sf "liblion_optim.so.$version" "$prefix/lib/$soname"
    ln -sf "$soname" "$prefix/lib/liblion_optim.so" ;;
esac
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" -e "s|@NATIVE_LIBS@|$native|" \
  "$here/lion_optim.pc.in" > "$prefix/lib/pkgconfig/lion_optim.pc"
echo "installed lion_optim $version into $prefix (PKG_CONFIG_PATH=$prefix/lib/pkgconfig)"

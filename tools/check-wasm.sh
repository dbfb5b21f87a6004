#!/bin/sh
# Builds libosmem for wasm32-wasi and runs its test suite under wasmtime and
# Node.js's WASI, for 1 MiB megablocks (the default), 64 KiB megablocks, and
# without the sbrk replacement, each in its own build directory
# (build-wasm20/, build-wasm16/, build-wasm-nosbrk/). On Debian or Ubuntu it
# installs what it needs first: the wasm toolchain with apt-get (sudo unless
# root), Node.js if missing, and PyPI's wasmtime.
set -eu
cd "$(dirname "$0")/.."
src=$(pwd)

pkgs="clang-19 lld-19 llvm-19 wasi-libc libclang-rt-19-dev-wasm32"
command -v node >/dev/null 2>&1 || pkgs="$pkgs nodejs"
command -v autoreconf >/dev/null 2>&1 || pkgs="$pkgs autoconf automake libtool pkg-config"
python3 -m pip --version >/dev/null 2>&1 || pkgs="$pkgs python3-pip"
# shellcheck disable=SC2086 # a package list
sh tools/apt-install.sh $pkgs
if ! command -v wasmtime >/dev/null 2>&1 && ! python3 -c 'import wasmtime' 2>/dev/null; then
  python3 -m pip install -q wasmtime ||
    python3 -m pip install -q --break-system-packages wasmtime
fi

[ -x configure ] || autoreconf -fi
status=0
for variant in 20 16 nosbrk; do
  case $variant in
    20) dir=build-wasm20 args= ;;
    16) dir=build-wasm16 args=--with-mblock-shift=16 ;;
    nosbrk) dir=build-wasm-nosbrk args=--disable-wasm-sbrk ;;
  esac
  echo "== wasm32-wasi build in $dir ($args)"
  mkdir -p "$dir"
  (cd "$dir" && "$src/configure" --host=wasm32-wasi --enable-werror $args) >"$dir.configure.log" 2>&1 ||
    { cat "$dir.configure.log"; exit 1; }
  make -C "$dir" -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
  if [ "$variant" = 20 ]; then
    runner=$(sed -n 's/^WASMTIME_RUNNER = //p' "$dir/Makefile" | sed "s|\$(abs_top_srcdir)|$src|")
    $runner "$dir/tools/osmem-info" | head -n 5
  fi
  make -C "$dir" -j"$(nproc 2>/dev/null || echo 2)" check >"$dir.check.log" 2>&1 || {
    status=1
    cat "$dir/test-suite.log" 2>/dev/null || tail -n 50 "$dir.check.log"
  }
  grep -h 'Synthesis' "$dir"/tests/*.log || true
done
exit $status

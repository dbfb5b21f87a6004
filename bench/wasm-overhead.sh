#!/bin/sh
# Measures wasm linear memory overhead (bench/wasm-overhead.c) for each way
# of getting megablocks, each in its own wasm build, and prints the table
# that README.md shows.
#   sh bench/wasm-overhead.sh [BUILD_ROOT]      (default /tmp/osmem-wasm-overhead)
# Needs what `./configure --host=wasm32-wasi` needs, and wasmtime or node.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
root=${1:-${TMPDIR:-/tmp}/osmem-wasm-overhead}
[ -x "$src/configure" ] || (cd "$src" && autoreconf -fi)

if command -v wasmtime >/dev/null 2>&1; then run="wasmtime run"
elif python3 -c 'import wasmtime' 2>/dev/null; then run="python3 $src/tests/wasm/run-wasmtime.py"
else run="node --no-warnings $src/tests/wasm/run-node.mjs"; fi

build() { # DIR CONFIGURE-ARGS...
  dir=$root/$1; shift
  mkdir -p "$dir"
  if [ ! -f "$dir/Makefile" ]; then
    (cd "$dir" && "$src/configure" --host=wasm32-wasi -q "$@" >/dev/null)
  fi
  make -s -C "$dir" bench/wasm-overhead bench/wasm-overhead-aligned >/dev/null
}

build sbrk20
build nosbrk20 --disable-wasm-sbrk
build sbrk16 --with-mblock-shift=16
build nosbrk16 --with-mblock-shift=16 --disable-wasm-sbrk

echo "| strategy | memory / payload |"
echo "|---|---|"
row() { # LABEL MODULE
  line=$($run "$2")
  echo "| $1 | $(echo "$line" | sed 's/.*ratio //') |"
  echo "  $line" >&2
}
row "wasi-libc aligned_alloc(1 MiB, 1 MiB)" "$root/sbrk20/bench/wasm-overhead-aligned"
row "libosmem, 1 MiB megablocks, --disable-wasm-sbrk" "$root/nosbrk20/bench/wasm-overhead"
row "libosmem, 1 MiB megablocks, sbrk replacement (default)" "$root/sbrk20/bench/wasm-overhead"
row "libosmem, 64 KiB megablocks (--with-mblock-shift=16), sbrk replacement" "$root/sbrk16/bench/wasm-overhead"
row "libosmem, 64 KiB megablocks, --disable-wasm-sbrk" "$root/nosbrk16/bench/wasm-overhead"

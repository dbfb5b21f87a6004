#!/bin/sh
# Install and consume, as a user of an installed libosmem would:
#   1. configure a fresh build in build-install/ with --prefix at a staging
#      directory (build-install/stage), `make install`;
#   2. outside the source tree, build the README's "Using it" example (taken
#      from README.md as it is shown there) with nothing but pkg-config
#      (PKG_CONFIG_PATH into the staging prefix): linked shared and run with
#      LD_LIBRARY_PATH, then linked static (`pkg-config --static ... -static`);
#      check what it prints;
#   3. check the manual pages: `man -w <function>` finds every public
#      function's page in the staging prefix (MANPATH), `man` renders them,
#      and the EXAMPLES program of osmem(3), taken from the installed page,
#      compiles and prints what the page says;
#   4. `make uninstall` leaves no file behind;
#   5. if a wasm32-wasi toolchain is present (found as configure finds it:
#      $WASI_SDK_PATH, wasm32-wasi-clang, or Debian's clang with wasi-libc),
#      the same in build-install-wasm/: install, build the example against
#      the installed static library with pkg-config, run it under wasmtime
#      (the runner configure chose, as `make check` runs the wasm suite).
# Ends with "N passed, N failed"; exit status 1 if anything failed. On a
# fresh Debian or Ubuntu machine it first installs what it needs with
# tools/apt-install.sh (sudo unless root). About a minute.
set -u
cd "$(dirname "$0")/.." || exit 1
src=$(pwd)
t0=$(date +%s)
jobs=$(nproc 2>/dev/null || echo 2)
passed=0 failed=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
skip() { echo "SKIP: $*"; }
finish() {
  echo "== check-install: $(($(date +%s) - t0)) s"
  echo "$passed passed, $failed failed"
  [ "$failed" = 0 ]
  exit $?
}
# Bounded steps: a hung build or program fails instead of hanging.
# ($limit is left unquoted on purpose: empty, or a command and its argument.)
if command -v timeout >/dev/null 2>&1; then limit="timeout 300"; else limit=; fi

# ------------------------------------------------------------ dependencies
pkgs=
command -v cc >/dev/null 2>&1 && command -v make >/dev/null 2>&1 ||
  pkgs="$pkgs build-essential"
command -v pkg-config >/dev/null 2>&1 || pkgs="$pkgs pkg-config"
command -v man >/dev/null 2>&1 || pkgs="$pkgs man-db"
[ -x configure ] || command -v autoreconf >/dev/null 2>&1 ||
  pkgs="$pkgs autoconf automake libtool pkg-config"
if [ -n "$pkgs" ]; then
  echo "== installing:$pkgs"
  # shellcheck disable=SC2086 # a package list
  sh tools/apt-install.sh $pkgs || echo "apt-install.sh failed; going on with what is there"
fi
for tool in cc make pkg-config; do
  command -v $tool >/dev/null 2>&1 || { fail "$tool not found"; finish; }
done
if [ ! -x configure ]; then
  echo "== autoreconf -fi"
  autoreconf -fi >/dev/null 2>&1 || { fail "autoreconf -fi"; finish; }
fi

# The example, as README.md's "Using it" section shows it: the first ```c
# block after the heading. It prints the string it passes to puts().
work=$(mktemp -d /tmp/osmem-install.XXXXXX) || { fail "mktemp"; finish; }
trap 'rm -rf "$work"' EXIT
awk '/^## Using it/ { on = 1; next }
     on && /^## / { exit }
     on && !code && /^```c$/ { code = 1; next }
     code && /^```$/ { exit }
     code { print }' README.md >"$work/app.c"
expected=$(sed -n 's/.*puts("\([^"]*\)").*/\1/p' "$work/app.c" | head -n 1)
if [ -s "$work/app.c" ] && [ -n "$expected" ]; then
  pass "README's example extracted ($(wc -l <"$work/app.c") lines; it should print '$expected')"
else
  fail "no C example with a puts() in README.md's 'Using it' section"
  finish
fi

# The public functions, for the manual page checks.
functions=$(sed -n 's/^OSMEM_EXTERN[^(]*[^A-Za-z0-9_]\([A-Za-z_][A-Za-z0-9_]*\)[[:space:]]*(.*/\1/p' include/osmem.h)
header_version=$(sed -n 's/^#define OSMEM_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\).*/\2/p' include/osmem.h |
  paste -sd. -)

# check_installed PREFIX LABEL WHAT FILE...: every FILE is under PREFIX.
check_installed() {
  ci_prefix=$1 ci_label=$2 ci_what=$3 absent=
  shift 3
  for f in "$@"; do
    [ -e "$ci_prefix/$f" ] || absent="$absent $f"
  done
  if [ -z "$absent" ]; then
    pass "$ci_label: the prefix holds $ci_what"
  else
    fail "$ci_label: not installed:$absent"
  fi
}

# check_man PREFIX LABEL: every function's page is found, and man renders.
check_man() {
  mp="$1/share/man"
  missing=
  for fn in $functions; do
    # man -w follows a link page (.so) to the page it leads to.
    path=$(MANPATH="$mp" man -w "$fn" 2>/dev/null) || path=
    case $path in
      "$mp"/man3/*.3*) grep -q "$fn" "$path" 2>/dev/null || missing="$missing $fn" ;;
      *) missing="$missing $fn" ;;
    esac
  done
  if [ -z "$missing" ]; then
    pass "$2: man -w finds the page of each of the $(printf '%s\n' "$functions" | grep -c .) functions under $mp"
  else
    fail "$2: man -w does not find, under $mp:$missing"
  fi
  for fn in osmem_get_mblocks osmem_numa_distance; do
    out=$(MANPATH="$mp" MANWIDTH=80 man -P cat "$fn" 2>/dev/null) || out=
    if printf '%s\n' "$out" | grep -q "^NAME" &&
       printf '%s\n' "$out" | grep -q "$fn" &&
       printf '%s\n' "$out" | grep -q "^RETURN VALUE"; then
      pass "$2: man $fn renders its page ($(printf '%s\n' "$out" | head -n 1 | awk '{print $1}'))"
    else
      fail "$2: man $fn does not render a page naming it"
    fi
  done
}

# check_uninstall BUILD PREFIX LABEL
check_uninstall() {
  if $limit make -C "$1" uninstall >"$1/uninstall.log" 2>&1; then
    left=$(find "$2" -type f 2>/dev/null | sed "s|^$2/||")
    if [ -z "$left" ]; then
      pass "$3: make uninstall leaves no file in the prefix"
    else
      fail "$3: make uninstall left: $(echo "$left" | tr '\n' ' ')"
    fi
  else
    fail "$3: make uninstall (see $1/uninstall.log)"
  fi
}

# ---------------------------------------------------------------- native
build="$src/build-install"
prefix="$build/stage"
echo "== native: configure --prefix=$prefix, make install (log in build-install/)"
rm -rf "$build" && mkdir -p "$build"
if (cd "$build" && $limit "$src/configure" --prefix="$prefix") >"$build/configure.log" 2>&1 &&
   $limit make -C "$build" -j"$jobs" >"$build/make.log" 2>&1 &&
   $limit make -C "$build" install >"$build/install.log" 2>&1; then
  pass "native: configure, make, make install into build-install/stage"
else
  fail "native: configure, make or make install (see build-install/*.log)"
  tail -n 20 "$build"/*.log
  finish
fi

# What the README says `make install` installs, and the manual pages.
check_installed "$prefix" native "the headers, both libraries, osmem.pc, osmem-info, the manual pages" \
  include/osmem.h include/osmem-config.h lib/libosmem.so lib/libosmem.a \
  lib/pkgconfig/osmem.pc bin/osmem-info share/man/man3/osmem.3

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
libdir=$(pkg-config --variable=libdir osmem 2>/dev/null)
if [ "$libdir" = "$prefix/lib" ]; then
  pass "native: pkg-config finds osmem.pc of the prefix (libdir $libdir)"
else
  fail "native: pkg-config osmem gives libdir '$libdir', not $prefix/lib"
fi
pc_version=$(pkg-config --modversion osmem 2>/dev/null)
if [ "$pc_version" = "$header_version" ]; then
  pass "native: osmem.pc's Version is the header's, $header_version"
else
  fail "native: osmem.pc says Version $pc_version, include/osmem.h says $header_version (configure.ac's AC_INIT and the header's OSMEM_VERSION_* differ)"
fi

cd "$work" || exit 1
# Shared, as the README builds it; run with LD_LIBRARY_PATH at the prefix.
# shellcheck disable=SC2046 # pkg-config's flags are words
if cc -o app app.c $(pkg-config --cflags --libs osmem) >cc-shared.log 2>&1; then
  out=$(LD_LIBRARY_PATH="$prefix/lib" $limit ./app 2>&1); st=$?
  if [ $st = 0 ] && [ "$out" = "$expected" ]; then
    pass "native, shared: the example prints '$out'"
  else
    fail "native, shared: the example exited $st and printed '$out', not '$expected'"
  fi
  used=$(LD_LIBRARY_PATH="$prefix/lib" ldd ./app 2>/dev/null | awk '/libosmem/ {print $3}')
  case $used in
    "$prefix"/lib/*) pass "native, shared: it runs with the prefix's library ($used)" ;;
    *) fail "native, shared: it loads libosmem from '$used', not the prefix" ;;
  esac
else
  fail "native, shared: cc -o app app.c \$(pkg-config --cflags --libs osmem)"; cat cc-shared.log
fi
# Static, as the README's comment builds it.
# shellcheck disable=SC2046
if cc -o app-static app.c $(pkg-config --static --cflags --libs osmem) -static >cc-static.log 2>&1; then
  # shellcheck disable=SC2086
  out=$(env -u LD_LIBRARY_PATH $limit ./app-static 2>&1); st=$?
  if [ $st = 0 ] && [ "$out" = "$expected" ]; then
    pass "native, static: the example prints '$out'"
  else
    fail "native, static: the example exited $st and printed '$out', not '$expected'"
  fi
  if LC_ALL=C readelf -d app-static 2>/dev/null | grep -q NEEDED; then
    fail "native, static: app-static still needs shared libraries"
  else
    pass "native, static: app-static needs no shared library"
  fi
else
  fail "native, static: cc -o app app.c \$(pkg-config --static --cflags --libs osmem) -static"
  cat cc-static.log
fi

# The manual pages.
check_man "$prefix" native
# osmem(3)'s EXAMPLES program, from the installed page: it compiles, and
# prints the lines the page shows after it.
page="$prefix/share/man/man3/osmem.3"
unroff() { sed 's/\\e/\\/g; s/\\-/-/g; s/\\&//g; s/\\(aq/'"'"'/g'; }
awk '/^\.SH EXAMPLES/ { on = 1 } on && /^\.EX/ { n++; next } on && /^\.EE/ { if (n == 1) exit; next }
     on && n == 1 { print }' "$page" | unroff >man-example.c
awk '/^\.SH EXAMPLES/ { on = 1 } on && /^\.EX/ { n++; next } on && /^\.EE/ { if (n == 2) exit; next }
     on && n == 2 { print }' "$page" | unroff >man-example.expected
# shellcheck disable=SC2046
if [ -s man-example.c ] && [ -s man-example.expected ] &&
   cc -Wall -Werror -o man-example man-example.c $(pkg-config --cflags --libs osmem) >cc-man.log 2>&1; then
  LD_LIBRARY_PATH="$prefix/lib" $limit ./man-example >man-example.out 2>&1; st=$?
  if [ $st = 0 ] && head -n "$(wc -l <man-example.expected)" man-example.out | cmp -s - man-example.expected; then
    pass "native: osmem(3)'s example compiles (-Wall -Werror) and prints what the page shows"
  else
    fail "native: osmem(3)'s example exited $st and printed:"; cat man-example.out
  fi
else
  fail "native: osmem(3)'s example does not compile:"; cat cc-man.log 2>/dev/null
fi
cd "$src" || exit 1
check_uninstall "$build" "$prefix" native
unset PKG_CONFIG_PATH

# ------------------------------------------------------------------ wasm
wbuild="$src/build-install-wasm"
wprefix="$wbuild/stage"
if [ -n "${WASI_SDK_PATH:-}" ] && [ -x "$WASI_SDK_PATH/bin/clang" ]; then
  wasm_cc="wasi-sdk at $WASI_SDK_PATH"
elif command -v wasm32-wasi-clang >/dev/null 2>&1; then
  wasm_cc=wasm32-wasi-clang
elif [ -f /usr/lib/wasm32-wasi/libc.a ] && ls /usr/bin/clang* >/dev/null 2>&1; then
  wasm_cc="clang with Debian's wasi-libc"
else
  wasm_cc=
fi
if [ -z "$wasm_cc" ]; then
  skip "wasm: no wasm32-wasi toolchain (no \$WASI_SDK_PATH, wasm32-wasi-clang or clang with wasi-libc; sh tools/check-wasm.sh installs one)"
  finish
fi
echo "== wasm ($wasm_cc): configure --host=wasm32-wasi --prefix=$wprefix, make install"
rm -rf "$wbuild" && mkdir -p "$wbuild"
if (cd "$wbuild" && $limit "$src/configure" --host=wasm32-wasi --prefix="$wprefix") >"$wbuild/configure.log" 2>&1 &&
   $limit make -C "$wbuild" -j"$jobs" >"$wbuild/make.log" 2>&1 &&
   $limit make -C "$wbuild" install >"$wbuild/install.log" 2>&1; then
  pass "wasm: configure, make, make install into build-install-wasm/stage"
else
  if grep -q 'no wasm32-wasi C toolchain found' "$wbuild/configure.log" 2>/dev/null; then
    skip "wasm: configure finds no wasm32-wasi toolchain that links (see build-install-wasm/configure.log)"
  else
    fail "wasm: configure, make or make install (see build-install-wasm/*.log)"
    tail -n 20 "$wbuild"/*.log
  fi
  finish
fi
check_installed "$wprefix" wasm "the headers, libosmem.a, osmem.pc, the manual pages" \
  include/osmem.h include/osmem-config.h lib/libosmem.a lib/pkgconfig/osmem.pc \
  share/man/man3/osmem.3
check_man "$wprefix" wasm

# The compiler and runner configure chose (as tools/check-wasm.sh reads them).
wcc=$(sed -n 's/^CC = //p' "$wbuild/Makefile")
runner=$(sed -n 's/^WASMTIME_RUNNER = //p' "$wbuild/Makefile" | sed "s|\$(abs_top_srcdir)|$src|g")
cd "$work" || exit 1
wflags=$(PKG_CONFIG_LIBDIR="$wprefix/lib/pkgconfig" PKG_CONFIG_PATH='' pkg-config --static --cflags --libs osmem)
# shellcheck disable=SC2086 # CC and pkg-config's flags are words
if $wcc -o app.wasm app.c $wflags >cc-wasm.log 2>&1; then
  pass "wasm: the example links against the installed libosmem.a ($wcc ... $wflags)"
  if [ -z "$runner" ]; then
    skip "wasm: configure found no wasmtime (no wasmtime command, no Python wasmtime package): the example is not run"
  else
    out=$($limit $runner app.wasm 2>&1); st=$?
    if [ $st = 77 ]; then
      skip "wasm: the wasmtime runner cannot run here: $out"
    elif [ $st = 0 ] && [ "$out" = "$expected" ]; then
      pass "wasm: under wasmtime the example prints '$out'"
    else
      fail "wasm: under wasmtime the example exited $st and printed '$out', not '$expected'"
    fi
  fi
else
  fail "wasm: $wcc -o app.wasm app.c $wflags"; cat cc-wasm.log
fi
cd "$src" || exit 1
check_uninstall "$wbuild" "$wprefix" wasm
finish

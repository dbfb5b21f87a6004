#!/bin/sh
# GHC's runtime on libosmem: builds the Haskell programs of tests/ghc twice,
# with GHC's own OS layer and with this build's libosmem-ghc.a (the user's
# command: ghc Main.hs $(pkg-config --libs --static osmem-ghc)), plain and
# -threaded, and compares what they do. One line per check, PASS or FAIL,
# then a count; exit 1 on any failure, 77 (skip) without ghc. About half a
# minute on two cores.
#
# Environment (set by `make check`): GHC, top_builddir, top_srcdir, NM.
# `ulimit -v` is not in POSIX, but dash, bash, ksh, zsh and busybox sh all
# have it.
# shellcheck disable=SC3045
set -u

GHC=${GHC:-ghc}
NM=${NM:-nm}
PKG_CONFIG=${PKG_CONFIG:-pkg-config}
if ! command -v "$GHC" >/dev/null 2>&1; then
  echo "SKIP: ghc not found (set GHC=/path/to/ghc)"; exit 77
fi
command -v "$PKG_CONFIG" >/dev/null 2>&1 || { echo "SKIP: no pkg-config"; exit 77; }
build=$(cd "${top_builddir:-.}" && pwd)
src=$(cd "${top_srcdir:-.}" && pwd)/tests/ghc
if [ ! -f "$build/.libs/libosmem-ghc.a" ] || [ ! -f "$build/osmem-ghc.pc" ]; then
  echo "FAIL: $build/.libs/libosmem-ghc.a or osmem-ghc.pc missing (configure --enable-ghc, then make)"
  exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/osmem-ghc.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM

pass=0 fail=0
ok() { pass=$((pass + 1)); echo "PASS: $*"; }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
result() { # result STATUS DESCRIPTION: PASS when STATUS (a $?) is 0
  if [ "$1" = 0 ]; then ok "$2"; else bad "$2"; fi
}

# The installed osmem-ghc.pc with libdir pointing into this build tree:
# the same flags a user gets, against the library just built.
mkdir -p "$tmp/pc"
sed "s|^libdir=.*|libdir=$build/.libs|" "$build/osmem-ghc.pc" > "$tmp/pc/osmem-ghc.pc"
PKG_CONFIG_PATH=$tmp/pc
export PKG_CONFIG_PATH
echo "link flags: $("$PKG_CONFIG" --libs --static osmem-ghc)"

ghc_libdir=$("$GHC" --print-libdir)
rts_archive() { # plain|thr: GHC's static runtime
  case $1 in thr) name=libHSrts_thr.a ;; *) name=libHSrts.a ;; esac
  if [ -f "$ghc_libdir/rts/$name" ]; then echo "$ghc_libdir/rts/$name"
  else find "$ghc_libdir" -name "$name" 2>/dev/null | head -n 1; fi
}

# build PROG LAYER THREADING: LAYER ghc (GHC's own OS layer) or osmem.
build() {
  exe=$tmp/$1-$2-$3
  set -- "$1" "$2" "$3" -O -rtsopts -outputdir "$tmp/o-$1-$3" -o "$exe" "$src/$1.hs"
  [ "$3" = thr ] && set -- "$@" -threaded
  # shellcheck disable=SC2046 # the flags are words, as a user's shell splits them
  [ "$2" = osmem ] && set -- "$@" $("$PKG_CONFIG" --libs --static osmem-ghc)
  shift 3
  if "$GHC" "$@" > "$tmp/build.log" 2>&1; then return 0; fi
  sed 's/^/  /' "$tmp/build.log" | tail -n 20
  return 1
}

# NM may carry options (libtool's "nm -B"): a command line, not a path.
# shellcheck disable=SC2086
run_nm() { $NM "$@"; }

# Values printed by the programs and files.
stat_of() { awk -v k="$2" '$1 == k { print $2 }' "$1"; }
major_gcs() { awk '$1 == "Gen" && $2 == "1" { print $3 }' "$1"; }
field() { awk -v l="$2" -v i="$3" '$1 == l { print $i }' "$1"; }

# OSMem.o's symbols in GHC's runtime archive ($1): L (local: its own code
# and data) or T (the 17 functions of the contract).
osmem_syms() {
  run_nm -A "$1" 2>/dev/null | grep ':OSMem\.[a-z_]*o:' |
    awk -v t="$2" '(t == "L" && $(NF-1) ~ /^[tbdr]$/ && $NF !~ /^\.L/) ||
                   (t == "T" && $(NF-1) == "T") { print $NF }'
}
defines() { run_nm "$1" | awk '{ print $NF }' | grep -qxF "$2"; }

check_internals() { # EXE-own EXE-osmem ARCHIVE: OSMem.o's code is gone
  locals=$(osmem_syms "$3" L)
  [ -n "$locals" ] || { echo "  no OSMem member found in '$3'"; return 1; }
  own='' osmem=''
  for s in $locals; do
    defines "$1" "$s" && own="$own $s"
    defines "$2" "$s" && osmem="$osmem $s"
  done
  echo "  OSMem.o's own symbols in GHC's build:${own:- none}; in libosmem's:${osmem:- none}"
  [ -n "$own" ] && [ -z "$osmem" ]
}

for thr in plain thr; do
  if [ "$thr" = thr ]; then echo "--- threaded runtime (-threaded)"
  else echo "--- non-threaded runtime"; fi
  built=yes
  for prog in GcHeavy MemReturn Exhaust; do
    for layer in ghc osmem; do
      build "$prog" "$layer" "$thr" ||
        { bad "$thr: build $prog with $layer's layer"; built=no; }
    done
  done
  build HeapInfo osmem "$thr" || { bad "$thr: build HeapInfo"; built=no; }
  [ "$built" = yes ] || continue
  ok "$thr: built GcHeavy, MemReturn, Exhaust (both layers) and HeapInfo"
  X=$tmp # the executables: $X/PROGRAM-LAYER-THREADING

  # 1. The adapter replaced GHC's layer: none of OSMem.o's code is linked.
  archive=$(rts_archive "$thr")
  for prog in GcHeavy MemReturn Exhaust; do
    check_internals "$X/$prog-ghc-$thr" "$X/$prog-osmem-$thr" "$archive"
    result $? "$thr: $prog: OSMem.o's internals are in GHC's build, none in libosmem's"
  done
  globals=$(osmem_syms "$archive" T) missing=
  for s in $globals; do
    defines "$build/.libs/libosmem-ghc.a" "$s" || missing="$missing $s"
  done
  [ -n "$globals" ] && [ -z "$missing" ]
  result $? "$thr: libosmem-ghc.a defines all $(echo "$globals" | wc -w) global symbols of OSMem.o${missing:+ (missing:$missing)}"

  # 2. The GC-heavy program prints the same with both layers.
  "$X/GcHeavy-ghc-$thr" +RTS -s"$tmp/gc-ghc.stats" -RTS > "$tmp/gc-ghc.out" 2>&1
  rc_ghc=$?
  OSMEM_GHC_STATS=$tmp/gc.osmem "$X/GcHeavy-osmem-$thr" \
    +RTS -s"$tmp/gc-osmem.stats" -RTS > "$tmp/gc-osmem.out" 2>&1
  rc_osmem=$?
  gcs=$(major_gcs "$tmp/gc-osmem.stats")
  echo "  GcHeavy: exit $rc_ghc / $rc_osmem, $(wc -l < "$tmp/gc-osmem.out") lines," \
       "major GCs $(major_gcs "$tmp/gc-ghc.stats") / ${gcs:-?} (GHC's layer / libosmem)"
  [ "$rc_ghc" = 0 ] && [ "$rc_osmem" = 0 ] &&
    cmp -s "$tmp/gc-ghc.out" "$tmp/gc-osmem.out"
  result $? "$thr: GcHeavy exits 0 and prints the same with both layers"
  [ "${gcs:-0}" -ge 20 ]
  result $? "$thr: GcHeavy ran ${gcs:-?} major GCs on libosmem (at least 20)"

  # 3. libosmem did the work: its statistics, written at exit.
  s=$tmp/gc.osmem
  touch "$s"
  echo "  libosmem: user_reservations $(stat_of "$s" user_reservations)," \
       "heap $(stat_of "$s" heap_base) + $(stat_of "$s" heap_size) B," \
       "committed $(stat_of "$s" bytes_committed) B in $(stat_of "$s" os_mprotect) mprotect," \
       "decommitted $(stat_of "$s" bytes_decommitted) B in $(stat_of "$s" os_madvise) madvise"
  [ "$(stat_of "$s" user_reservations)" = 1 ] &&
    [ "$(stat_of "$s" heap_base)" = 0x4200000000 ] &&
    [ "$(stat_of "$s" bytes_committed)" -gt 0 ] &&
    [ "$(stat_of "$s" os_mprotect)" -gt 0 ] &&
    [ "$(stat_of "$s" bytes_decommitted)" -gt 0 ] &&
    [ "$(stat_of "$s" os_madvise)" -gt 0 ] 2>/dev/null
  result $? "$thr: libosmem reserved GHC's heap at 0x4200000000, committed and decommitted in it (OSMEM_GHC_STATS)"

  # 4. Memory returned by a major GC, as much as with GHC's own layer.
  # Both layers decommit with MADV_FREE by default: the pages stay in Rss,
  # as LazyFree, until the kernel needs them, so what the process holds is
  # Rss - LazyFree. Under --disable-delayed-os-memory-return both use
  # MADV_DONTNEED, and Rss itself falls.
  for mode in default dontneed; do
    flags=
    [ "$mode" = dontneed ] && flags=--disable-delayed-os-memory-return
    for layer in ghc osmem; do
      f=$tmp/mr-$layer.out
      # shellcheck disable=SC2086 # no flags or one
      "$X/MemReturn-$layer-$thr" +RTS $flags -RTS > "$f" 2>&1
      b=$(field "$f" built 2) d=$(field "$f" dropped 2) l=$(field "$f" dropped 3)
      eval "drop_$layer=\$(( ${b:-0} - (${d:-0} - ${l:-0}) ))"
      eval "line_$layer=\"Rss \${b:-?} kB built, \${d:-?} kB dropped, LazyFree \${l:-?} kB\""
    done
    # shellcheck disable=SC2154 # drop_* and line_* are set by eval
    echo "  MemReturn, $mode decommit: GHC's layer: $line_ghc; libosmem: $line_osmem"
    # shellcheck disable=SC2154
    [ "$drop_ghc" -ge 102400 ] && [ "$drop_osmem" -ge $((drop_ghc - 4096)) ]
    # shellcheck disable=SC2154
    result $? "$thr: $mode decommit: a major GC returns $((drop_osmem / 1024)) MiB on libosmem, $((drop_ghc / 1024)) MiB on GHC's layer (at least that less 4 MiB)"
  done

  # 5. Under an address-space limit: the program runs, the heap follows
  # GHC's rule (0.666 of the limit), and -xb places it.
  ( ulimit -v 4194304 && exec "$X/GcHeavy-osmem-$thr" ) > "$tmp/gc-limited.out" 2>&1
  rc=$?
  [ "$rc" = 0 ] && cmp -s "$tmp/gc-ghc.out" "$tmp/gc-limited.out"
  result $? "$thr: GcHeavy on libosmem runs under ulimit -v 4194304 (exit $rc, same output)"
  info=$( (ulimit -v 4194304 && exec "$X/HeapInfo-osmem-$thr") 2>&1)
  want=$((4294967296 * 666 / 1000 / 1048576 * 1048576))
  echo "  under ulimit -v 4194304: heap at ${info% *}, ${info#* } bytes (0.666 of the limit in megablocks: $want)"
  [ "${info#* }" = "$want" ] && [ "${info% *}" -ge 8589934592 ] 2>/dev/null
  result $? "$thr: under ulimit -v 4 GiB the heap is 0.666 of the limit, above 8 GiB"
  info=$("$X/HeapInfo-osmem-$thr" +RTS -xb0x5000000000 -RTS 2>&1)
  [ "${info% *}" = $((0x5000000000)) ]
  result $? "$thr: +RTS -xb0x5000000000 puts the heap there ($info)"

  # 6. Heap exhaustion: small address space, no -M: GHC's message, exit 251.
  for layer in ghc osmem; do
    ( ulimit -v 614400 && exec "$X/Exhaust-$layer-$thr" ) > /dev/null 2> "$tmp/ex-$layer.err"
    eval "rc_$layer=\$?"
    sed "s|^Exhaust-$layer-$thr: ||" "$tmp/ex-$layer.err" > "$tmp/ex-$layer.msg"
  done
  # shellcheck disable=SC2154 # set by eval
  echo "  Exhaust under ulimit -v 614400: GHC's layer: exit $rc_ghc," \
       "\"$(head -n 1 "$tmp/ex-ghc.msg")\"; libosmem: exit $rc_osmem, \"$(head -n 1 "$tmp/ex-osmem.msg")\""
  [ "$rc_osmem" = 251 ] && [ "$rc_ghc" = 251 ] &&
    grep -q "out of memory" "$tmp/ex-osmem.msg" &&
    cmp -s "$tmp/ex-ghc.msg" "$tmp/ex-osmem.msg"
  result $? "$thr: heap exhaustion on libosmem exits 251 with GHC's message, as on GHC's layer"

  # 7. NUMA (threaded only): under +RTS --numa GHC binds each megablock to
  # its node. Debian's GHC is built without libnuma and refuses the flag;
  # libosmem answers osBuiltWithNumaSupport when it has libnuma.
  if [ "$thr" = thr ]; then
    if "$X/GcHeavy-osmem-$thr" +RTS --numa -RTS > /dev/null 2> "$tmp/numa.err"; then
      OSMEM_GHC_STATS=$tmp/numa.osmem "$X/GcHeavy-osmem-$thr" \
        +RTS --numa -N2 -RTS > "$tmp/numa.out" 2>&1
      rc=$?
      touch "$tmp/numa.osmem"
      binds=$(stat_of "$tmp/numa.osmem" os_mbind)
      [ "$rc" = 0 ] && cmp -s "$tmp/gc-ghc.out" "$tmp/numa.out" &&
        [ "${binds:-0}" -gt 0 ]
      result $? "$thr: +RTS --numa -N2 runs (exit $rc), prints the same, binds (${binds:-no} mbind calls)"
    else
      echo "SKIP: +RTS --numa refused: $(head -n 1 "$tmp/numa.err")"
    fi
  fi
done

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]

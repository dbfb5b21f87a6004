#!/usr/bin/env bash
# The same Haskell programs on GHC's own OS memory layer (OSMem.o of
# libHSrts.a) and on libosmem (libosmem-ghc.a), non-threaded and -threaded:
# wall time, OS memory calls, peak RSS and RSS after a major GC. Prints the
# Markdown tables of docs/ghc-comparison.md on stdout, progress on stderr.
#
#   bash bench/ghc-compare.sh [BUILD_DIR]     (default $top_builddir, else .)
#
# BUILD_DIR is a build configured with --enable-ghc, after `make` (it holds
# .libs/libosmem-ghc.a and osmem-ghc.pc). Needs ghc, pkg-config, strace and
# GNU time (/usr/bin/time; Debian: apt-get install time strace).
#
# Environment:
#   RUNS=5       timed GcHeavy runs per layer (median; the layers alternate
#                run by run, and which goes first alternates too)
#   STARTUP_RUNS=100  timed runs per layer of an empty program (start-up cost)
#   RSS_RUNS=5   MemReturn runs per row (median of each column)
#   GHC=ghc      the compiler
#   KEEP=dir     build the programs there and keep them (default: a temporary
#                directory, removed at the end)
#
# The programs are tests/ghc/GcHeavy.hs (timed, and the OS calls counted),
# tests/ghc/MemReturn.hs (a 2-million-entry Data.Map, then dropped and
# collected: RSS before and after) and an empty program (main = pure (),
# written here: start-up and exit alone). About 85 s with RUNS=5 on two
# cores; RUNS=151, as in docs/ghc-comparison.md, about 10.5 minutes.
set -u

GHC=${GHC:-ghc}
RUNS=${RUNS:-5}
STARTUP_RUNS=${STARTUP_RUNS:-100}
RSS_RUNS=${RSS_RUNS:-5}
PKG_CONFIG=${PKG_CONFIG:-pkg-config}
TIME=${TIME_PROG:-/usr/bin/time}

die() { echo "ghc-compare: $*" >&2; exit 1; }
say() { echo "$*" >&2; }

build=$(cd "${1:-${top_builddir:-.}}" 2>/dev/null && pwd) ||
  die "no build directory '${1:-${top_builddir:-.}}'"
root=$(cd "$(dirname "$0")/.." && pwd)
src=$root/tests/ghc
if [ ! -f "$build/.libs/libosmem-ghc.a" ] || [ ! -f "$build/osmem-ghc.pc" ]; then
  die "$build has no .libs/libosmem-ghc.a or osmem-ghc.pc (./configure --enable-ghc, then make)"
fi
for prog in GcHeavy MemReturn; do
  [ -f "$src/$prog.hs" ] || die "no $src/$prog.hs"
done
command -v "$GHC" >/dev/null 2>&1 || die "ghc not found (set GHC=)"
command -v "$PKG_CONFIG" >/dev/null 2>&1 || die "pkg-config not found"
command -v strace >/dev/null 2>&1 || die "strace not found (apt-get install strace)"
"$TIME" -f %M true >/dev/null 2>&1 || die "GNU time not found at $TIME (apt-get install time)"
for n in "$RUNS" "$STARTUP_RUNS" "$RSS_RUNS"; do
  case $n in '' | *[!0-9]* | 0) die "RUNS, STARTUP_RUNS and RSS_RUNS must be positive numbers" ;; esac
done

if [ -n "${KEEP:-}" ]; then
  tmp=$(mkdir -p "$KEEP" && cd "$KEEP" && pwd) || die "cannot use KEEP=$KEEP"
else
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/ghc-compare.XXXXXX") || die "mktemp failed"
  trap 'rm -rf "$tmp"' EXIT
fi
trap 'exit 1' INT TERM

# libosmem's own settings come from the environment: measure its defaults.
unset OSMEM_DECOMMIT OSMEM_GHC_STATS

# The user's link line (pkg-config --libs --static osmem-ghc) against this
# build's library: the installed .pc with libdir pointing into the build.
mkdir -p "$tmp/pc"
sed "s|^libdir=.*|libdir=$build/.libs|" "$build/osmem-ghc.pc" > "$tmp/pc/osmem-ghc.pc"
osmem_flags=$(PKG_CONFIG_PATH=$tmp/pc "$PKG_CONFIG" --libs --static osmem-ghc) ||
  die "pkg-config --libs --static osmem-ghc failed"

# ------------------------------------------------------------- building

printf 'main :: IO ()\nmain = pure ()\n' > "$tmp/Empty.hs"

# build PROG LAYER THR: $tmp/PROG-LAYER-THR, LAYER ghc or osmem, THR plain or thr.
build_one() {
  local hs=$src/$1.hs
  [ "$1" = Empty ] && hs=$tmp/Empty.hs
  local args=(-O -rtsopts -outputdir "$tmp/o-$1-$3" -o "$tmp/$1-$2-$3" "$hs")
  [ "$3" = thr ] && args+=(-threaded)
  # shellcheck disable=SC2206 # the flags are words, as a user's shell splits them
  [ "$2" = osmem ] && args+=($osmem_flags)
  "$GHC" "${args[@]}" > "$tmp/build.log" 2>&1 ||
    { tail -n 20 "$tmp/build.log" >&2; die "building $1 ($2, $3) failed"; }
}
say "building GcHeavy, MemReturn and an empty program, GHC's layer and libosmem"
say "  libosmem link flags: $osmem_flags"
for prog in GcHeavy MemReturn; do
  for thr in plain thr; do
    for layer in ghc osmem; do build_one "$prog" "$layer" "$thr"; done
  done
done
for layer in ghc osmem; do build_one Empty "$layer" plain; done

# The libosmem executables must hold none of OSMem.o's own code, or the
# comparison would compare GHC's layer with itself. my_mmap is OSMem.o's
# mmap wrapper (a local symbol: nm shows it).
for thr in plain thr; do
  nm "$tmp/GcHeavy-ghc-$thr" | grep -qw my_mmap ||
    die "GcHeavy-ghc-$thr lacks OSMem.o's my_mmap: is this GHC 9.0?"
  ! nm "$tmp/GcHeavy-osmem-$thr" | grep -qw my_mmap ||
    die "GcHeavy-osmem-$thr still holds GHC's OSMem.o (link order?)"
done

rts_flags() { [ "$1" = thr ] && echo "-N2"; } # threaded runs use two capabilities
thr_label() { if [ "$1" = thr ]; then echo "-threaded"; else echo "non-threaded"; fi; }
layer_label() { if [ "$1" = osmem ]; then echo "libosmem"; else echo "GHC's layer"; fi; }

# ------------------------------------------------------------- helpers

if [ -n "${EPOCHREALTIME:-}" ]; then
  now_us() { local t=${EPOCHREALTIME//[!0-9]/}; echo "$t"; }
else
  now_us() { echo $(($(date +%s%N) / 1000)); }
fi

median() { # numbers on stdin, one a line
  sort -n | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "?"; exit }
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
col() { cut -d' ' -f"$2" "$1"; }

# The median and, from 10 numbers up, its 95% confidence interval from order
# statistics (distribution-free: ranks n/2 -+ 0.98 sqrt(n)).
median_ci() {
  sort -g | awk '{ v[NR] = $1 } END {
    n = NR; m = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    if (n < 10) { printf "%.3f", m; exit }
    lo = int(n / 2 - 0.98 * sqrt(n)); hi = int(n / 2 + 1 + 0.98 * sqrt(n)) + 1
    if (lo < 1) lo = 1; if (hi > n) hi = n
    printf "%.3f (%.3f-%.3f)", m, v[lo], v[hi] }'
}

# timed_run EXE EXPECTED OUT RTSFLAGS...: runs EXE, checks that it printed
# EXPECTED, appends "wall_ms peak_kB minor_faults user_s sys_s" to OUT.
timed_run() {
  local exe=$1 expected=$2 out=$3 t0 t1; shift 3
  t0=$(now_us)
  "$TIME" -f '%M %R %U %S' -o "$tmp/time.out" "$exe" +RTS "$@" -RTS > "$tmp/run.out" 2>&1 ||
    die "$exe failed: $(tail -n 3 "$tmp/run.out")"
  t1=$(now_us)
  cmp -s "$tmp/run.out" "$expected" || die "$exe printed something else"
  echo "$(awk -v d=$((t1 - t0)) 'BEGIN { printf "%.3f", d / 1000 }') $(tail -n 1 "$tmp/time.out")" >> "$out"
}

"$tmp/GcHeavy-ghc-plain" > "$tmp/GcHeavy.expected" 2>&1 || die "GcHeavy-ghc-plain failed"
: > "$tmp/Empty.expected"

# ------------------------------------------------------------- the machine

kv() { awk -F: -v k="$1" '$1 ~ k { sub(/^[ \t]+/, "", $2); print $2; exit }' "$2"; }
rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$root" --no-optional-locks status --porcelain -- ghc osmem include 2>/dev/null | head -n 1)
lib=$build/.libs/libosmem-ghc.a
built=$(date -u -r "$lib" '+%Y-%m-%d %H:%M UTC' 2>/dev/null || echo '?')
# A build older than its sources measures something else than the tree.
stale=$(find "$root/ghc" "$root/osmem" "$root/include" -type f -newer "$lib" 2>/dev/null | head -n 3 | tr '\n' ' ')
[ -z "$stale" ] || say "warning: sources newer than $lib: $stale(rebuild to measure them)"
echo "Machine: $(nproc) CPUs ($(kv 'model name' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)," \
  "Linux $(uname -r), THP $(sed 's/.*\[\(.*\)\].*/\1/' /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo '?')," \
  "load average at start $(cut -d' ' -f1-3 /proc/loadavg)."
echo "GHC $("$GHC" --numeric-version); libosmem $(PKG_CONFIG_PATH=$tmp/pc "$PKG_CONFIG" --modversion osmem-ghc)," \
  "build $build (libosmem-ghc.a of $built${stale:+, older than some sources}); source tree at $rev${dirty:+ with uncommitted changes}."
echo

# ------------------------------------------------------------- 1. wall time

# pair PROG THR N RTSFLAGS...: N interleaved runs of each layer; one table row.
pair() {
  local prog=$1 thr=$2 n=$3 i g o tg to
  shift 3
  g=$tmp/times-$prog-ghc-$thr o=$tmp/times-$prog-osmem-$thr
  : > "$g"; : > "$o"
  # One untimed run of each first: page cache and CPU frequency settle.
  timed_run "$tmp/$prog-ghc-$thr" "$tmp/$prog.expected" /dev/null "$@"
  timed_run "$tmp/$prog-osmem-$thr" "$tmp/$prog.expected" /dev/null "$@"
  for ((i = 1; i <= n; i++)); do
    # Alternate which layer goes first, so neither always follows the other.
    if ((i % 2)); then
      timed_run "$tmp/$prog-ghc-$thr" "$tmp/$prog.expected" "$g" "$@"
      timed_run "$tmp/$prog-osmem-$thr" "$tmp/$prog.expected" "$o" "$@"
    else
      timed_run "$tmp/$prog-osmem-$thr" "$tmp/$prog.expected" "$o" "$@"
      timed_run "$tmp/$prog-ghc-$thr" "$tmp/$prog.expected" "$g" "$@"
    fi
  done
  tg=$(col "$g" 1 | median) to=$(col "$o" 1 | median)
  say "  $prog $thr: GHC's layer (ms): $(col "$g" 1 | tr '\n' ' ')"
  say "  $prog $thr: libosmem (ms):    $(col "$o" 1 | tr '\n' ' ')"
  # Each pair ran back to back: its ratio cancels slow drifts of the machine.
  paste -d' ' "$g" "$o" | awk '{ print $6 / $1 }' > "$tmp/ratios"
  printf '| %s | %s | %s | %d | %.1f | %.1f | **%.3f** | %s | %d of %d | %s / %s | %s / %s | %s / %s |\n' \
    "$prog" "$(thr_label "$thr")" "${*:-none}" "$n" "$tg" "$to" \
    "$(awk -v a="$to" -v b="$tg" 'BEGIN { print a / b }')" "$(median_ci < "$tmp/ratios")" \
    "$(awk '$1 < 1 { k++ } END { print k + 0 }' "$tmp/ratios")" "$n" \
    "$(col "$g" 5 | median)" "$(col "$o" 5 | median)" \
    "$(col "$g" 3 | median)" "$(col "$o" 3 | median)" \
    "$(col "$g" 2 | median)" "$(col "$o" 2 | median)"
}

say "timing: GcHeavy $RUNS runs per layer (three settings), the empty program $STARTUP_RUNS, interleaved"
echo "### Wall time (median; the two layers alternate run by run)"
echo
echo "Wall time in ms, median per layer; the ratio is libosmem's median over GHC's (the target: at most"
echo "1.0). Median pair ratio: the median of libosmem/GHC within each back-to-back pair, with its 95%"
echo "confidence interval from 10 runs up. System time (GNU time's %S, 10 ms steps), minor page faults"
echo "and peak RSS (%M, kB): medians."
echo
echo "| program | runtime | RTS flags | runs per layer | GHC's layer | libosmem | ratio | median pair ratio | pairs libosmem faster | sys s GHC / libosmem | minor faults GHC / libosmem | peak RSS GHC / libosmem |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for thr in plain thr; do
  # shellcheck disable=SC2046 # no flags or one
  pair GcHeavy "$thr" "$RUNS" $(rts_flags "$thr")
done
# Like with like under GHC's flag: both layers then decommit with
# MADV_DONTNEED (non-default for both).
pair GcHeavy plain "$RUNS" --disable-delayed-os-memory-return
pair Empty plain "$STARTUP_RUNS"
echo

# ------------------------------------------------------------- 2. OS calls

say "counting OS calls (strace)"
echo "### OS calls, GcHeavy, one run each"
echo
echo "mmap, munmap, madvise, mprotect: \`strace -c -f -e trace=mmap,munmap,madvise,mprotect\`, the whole"
echo "process (loader, libc, thread stacks included). \"in the heap\": those whose address lies in the"
echo "heap reservation (0x4200000000 + 1 TiB), the OS layer's own. \"other syscalls\": every other system"
echo "call (\`strace -c -f\`), less sched_yield and futex, whose number depends on thread timing."
echo
echo "| runtime | layer | mmap | munmap | madvise | mprotect | total | in the heap | other syscalls |"
echo "|---|---|---|---|---|---|---|---|---|"
count() { awk -v s="$2" '$NF == s { print $4; f = 1 } END { if (!f) print 0 }' "$1"; }
for thr in plain thr; do
  # shellcheck disable=SC2046 # no flags or one
  set -- $(rts_flags "$thr")
  for layer in ghc osmem; do
    exe=$tmp/GcHeavy-$layer-$thr
    c=$tmp/strace-$layer-$thr
    strace -c -f -e trace=mmap,munmap,madvise,mprotect -o "$c" "$exe" +RTS "$@" -RTS > /dev/null 2>&1 ||
      die "strace $exe failed"
    strace -f -e trace=mmap,munmap,madvise,mprotect -o "$c.log" "$exe" +RTS "$@" -RTS > /dev/null 2>&1
    # 0x4200000000 .. 0x51ffffffff: the first argument, or an mmap's result.
    heap=$(grep -v 'resumed>' "$c.log" | grep -cE '(\(|= )(0x4[2-9a-f]|0x5[01])[0-9a-f]{8}([,)]|$)')
    strace -c -f -o "$c.all" "$exe" +RTS "$@" -RTS > /dev/null 2>&1
    mm=$(count "$c" mmap) mu=$(count "$c" munmap) ma=$(count "$c" madvise) mp=$(count "$c" mprotect)
    other=$(awk '$NF == "total" { t = $4 }
                 $NF ~ /^(mmap|munmap|madvise|mprotect|sched_yield|futex)$/ { x += $4 }
                 END { print t - x }' "$c.all")
    label=$(thr_label "$thr")${1:+, +RTS $*}
    echo "| $label | $(layer_label $layer) | $mm | $mu | $ma | $mp | $((mm + mu + ma + mp)) | $heap | $other |"
    say "  $label, $(layer_label $layer): $((mm + mu + ma + mp)) memory calls, $heap in the heap, $other other"
  done
done
echo

# ------------------------------------------------------------- 3. RSS after GC

say "measuring RSS after a major GC (MemReturn, $RSS_RUNS runs per row)"
echo "### Memory returned: MemReturn (2,000,000-entry Data.Map built, dropped, performMajorGC twice)"
echo
echo "kB, from /proc/self/smaps_rollup; median of $RSS_RUNS runs, column by column. MADV_FREE leaves"
echo "freed pages in Rss, counted as LazyFree, until the kernel needs them: \"held\" is Rss - LazyFree."
echo "Peak RSS: GNU time's %M."
echo
echo "| runtime | decommit | layer | Rss built | Rss after GC | LazyFree | held after GC | peak RSS |"
echo "|---|---|---|---|---|---|---|---|"
field() { awk -v l="$2" -v i="$3" '$1 == l { print $i }' "$1"; }
for thr in plain thr; do
  label=$(thr_label "$thr")
  [ "$thr" = thr ] && label="$label, -N2"
  for mode in default flag tuned; do
    for layer in ghc osmem; do
      # shellcheck disable=SC2046 # no flags or one
      set -- $(rts_flags "$thr")
      env=
      case $mode in
        default) what="default (both MADV_FREE)" ;;
        flag) what="+RTS --disable-delayed-os-memory-return (both MADV_DONTNEED)"
              set -- "$@" --disable-delayed-os-memory-return ;;
        tuned) [ "$layer" = ghc ] && continue
               what="tuned: OSMEM_DECOMMIT=eager (libosmem only)"; env=OSMEM_DECOMMIT=eager ;;
      esac
      f=$tmp/mr-$layer-$thr-$mode
      : > "$f.rows"
      for ((i = 1; i <= RSS_RUNS; i++)); do
        # shellcheck disable=SC2086 # no assignment or one
        env $env "$TIME" -f '%M' -o "$f.time" "$tmp/MemReturn-$layer-$thr" +RTS "$@" -RTS > "$f" 2>&1 ||
          die "MemReturn-$layer-$thr ($mode) failed"
        b=$(field "$f" built 2) d=$(field "$f" dropped 2) l=$(field "$f" dropped 3)
        if [ -z "$b" ] || [ -z "$d" ] || [ -z "$l" ]; then
          die "MemReturn printed no 'built'/'dropped' lines"
        fi
        echo "$b $d $l $((d - l)) $(tail -n 1 "$f.time")" >> "$f.rows"
      done
      echo "| $label | $what | $(layer_label $layer) | $(col "$f.rows" 1 | median) |" \
        "$(col "$f.rows" 2 | median) | $(col "$f.rows" 3 | median) | $(col "$f.rows" 4 | median) |" \
        "$(col "$f.rows" 5 | median) |"
      say "  $thr $mode $layer: held after GC $(col "$f.rows" 4 | tr '\n' ' ')"
    done
  done
done
echo
echo "Command: RUNS=$RUNS STARTUP_RUNS=$STARTUP_RUNS RSS_RUNS=$RSS_RUNS bash bench/ghc-compare.sh $build"

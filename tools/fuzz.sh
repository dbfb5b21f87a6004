#!/bin/sh
# Builds tests/fuzz/fuzz_osmem.c with libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer (clang), the library's sources compiled in with
# the same instrumentation, and fuzzes for FUZZ_SECONDS (default 60) from
# the seed corpus (tests/fuzz/corpus, copied, so the checked-in seeds are
# not changed). `make fuzz` runs it from a configured POSIX build directory
# (top_builddir: config.h and osmem-config.h). Prints libFuzzer's final
# stats and "fuzz: N runs in S s, 0 failures", or the crash and exit 1.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
top_srcdir=${top_srcdir:-$here}
top_builddir=${top_builddir:-$(pwd)}
seconds=${FUZZ_SECONDS:-60}
CLANG=${CLANG:-clang}
if ! command -v "$CLANG" >/dev/null 2>&1 ||
   [ ! -f "$("$CLANG" -print-file-name=libclang_rt.fuzzer-x86_64.a 2>/dev/null)" ]; then
  # libFuzzer is in libclang-rt-dev
  sh "$here/tools/apt-install.sh" clang libclang-rt-dev || true
fi
command -v "$CLANG" >/dev/null 2>&1 || { echo "fuzz: SKIP: no clang"; exit 77; }
out=$top_builddir/tests/fuzz
mkdir -p "$out/corpus-run"
cp "$top_srcdir"/tests/fuzz/corpus/* "$out/corpus-run/"
libnuma=
grep -q '^#define HAVE_LIBNUMA 1' "$top_builddir/config.h" && libnuma=-lnuma
# shellcheck disable=SC2086 # word lists
"$CLANG" -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined \
  -fno-sanitize-recover=all -DHAVE_CONFIG_H -DOSMEM_FUZZ_LIBFUZZER \
  -I"$top_builddir" -I"$top_builddir/include" -I"$top_srcdir/include" \
  "$top_srcdir"/osmem/common/*.c "$top_srcdir"/osmem/posix/*.c \
  "$top_srcdir/tests/fuzz/fuzz_osmem.c" -o "$out/fuzz-osmem" -lpthread $libnuma
start=$(date +%s)
ASAN_OPTIONS=detect_leaks=0 "$out/fuzz-osmem" -max_total_time="$seconds" \
  -print_final_stats=1 -max_len=4096 "$out/corpus-run" >"$out/fuzz.log" 2>&1 ||
  { tail -n 60 "$out/fuzz.log"; echo "fuzz: a failure (input saved by libFuzzer as crash-*)"; exit 1; }
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/fuzz.log" | tail -n 1)
grep '^stat::' "$out/fuzz.log" || true
echo "fuzz: ${runs:-?} runs in $(( $(date +%s) - start )) s, 0 failures"

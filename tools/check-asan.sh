#!/bin/sh
# The whole native suite under AddressSanitizer and UndefinedBehaviorSanitizer,
# built with gcc and with clang (build-asan-gcc/, build-asan-clang/). Any
# report fails its test: -fno-sanitize-recover makes UBSan abort, and ASan
# aborts by itself. Tests that lower RLIMIT_AS skip (ASan's shadow memory
# cannot live under such a limit). Prints each build's test counts and
# "asan: N passed, N failed" (Criterion tests, both compilers).
set -eu
cd "$(dirname "$0")/.."
src=$(pwd)
# clang and its sanitizer runtimes (libclang-rt-dev), when missing.
if ! command -v clang >/dev/null 2>&1 ||
   [ ! -f "$(clang -print-file-name=libclang_rt.asan-x86_64.a 2>/dev/null)" ]; then
  sh tools/apt-install.sh clang libclang-rt-dev
fi
[ -x configure ] || autoreconf -fi
flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1"
passed=0 failed=0 status=0
for cc in gcc clang; do
  command -v $cc >/dev/null 2>&1 || { echo "asan: $cc not found"; status=1; continue; }
  dir=build-asan-$cc
  mkdir -p "$dir"
  (cd "$dir" &&
    "$src/configure" CC=$cc CFLAGS="$flags" LDFLAGS="-fsanitize=address,undefined" \
      --disable-shared >configure.log 2>&1 &&
    make -j"$(nproc 2>/dev/null || echo 2)" >make.log 2>&1) ||
    { echo "asan: $cc build failed"; tail -n 20 "$dir/make.log" "$dir/configure.log" 2>/dev/null; status=1; continue; }
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    make -C "$dir" -j2 check >"$dir/check.log" 2>&1 || status=1
  for log in "$dir"/tests/test_*.log; do
    line=$(grep -a 'Synthesis: Tested' "$log" | tail -n 1 || true)
    [ -n "$line" ] || continue
    p=$(echo "$line" | sed -n 's/.*Passing: \([0-9]*\).*/\1/p')
    f=$(echo "$line" | sed -n 's/.*Failing: \([0-9]*\).*/\1/p')
    c=$(echo "$line" | sed -n 's/.*Crashing: \([0-9]*\).*/\1/p')
    passed=$((passed + p)) failed=$((failed + f + c))
    [ $((f + c)) = 0 ] || { echo "== $log"; grep -a -E 'ERROR|runtime error|FAIL|Assert' "$log" | head -n 20; }
  done
  echo "asan ($cc): $(grep -E '^# (PASS|FAIL|SKIP)' "$dir/check.log" | tr '\n' ' ')"
done
echo "asan: $passed passed, $failed failed"
exit "$status"

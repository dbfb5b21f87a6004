#!/bin/sh
# Builds libosmem and its concurrency suites (tests/test_cache.c,
# tests/test_threads.c, tests/test_reservations.c: teardown with a thread
# holding its cache) with ThreadSanitizer in build-tsan/ and runs every
# test in its own process. Criterion cannot start under TSan, so the suites
# are built on tests/minicr.h (-DOSMEM_TESTS_MINICR). A data race, or any
# other TSan report, fails the test (TSan exits 66). Prints one line per test
# and "N passed, N failed".
set -eu
cd "$(dirname "$0")/.."
src=$(pwd)
[ -x configure ] || autoreconf -fi
mkdir -p build-tsan
cd build-tsan
"$src/configure" CC=gcc CFLAGS="-fsanitize=thread -O1 -g -Wno-tsan" \
  LDFLAGS="-fsanitize=thread" >configure.log 2>&1 ||
  { tail -n 30 configure.log; exit 1; }
make -j"$(nproc 2>/dev/null || echo 2)" libosmem-internal.la >/dev/null
make tests/test_cache tests/test_threads tests/test_reservations CPPFLAGS=-DOSMEM_TESTS_MINICR \
  CRITERION_LIBS= CRITERION_CFLAGS= >/dev/null
passed=0 failed=0
for prog in tests/test_cache tests/test_threads tests/test_reservations; do
  for t in $("./$prog" --list); do
    if TSAN_OPTIONS="halt_on_error=1 exitcode=66" timeout 300 \
      "./$prog" --run "$t" >"tsan-$t.log" 2>&1; then
      passed=$((passed + 1)); echo "PASS: $t"
    else
      failed=$((failed + 1)); echo "FAIL: $t"; tail -n 40 "tsan-$t.log"
    fi
  done
done
echo "tsan: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

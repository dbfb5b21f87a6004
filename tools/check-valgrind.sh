#!/bin/sh
# Every native test under Valgrind's memcheck, one test per process: the
# suites are built on tests/minicr.h (-DOSMEM_TESTS_MINICR, in
# build-valgrind/) so that each test runs alone with `--run NAME`, and any
# memcheck error (an uninitialised read, an invalid access) fails it
# (--error-exitcode=66). Leaks are not checked: the library keeps its
# bookkeeping for the life of the process by design. A test that exits 77
# skipped itself. Prints one line per test and "valgrind: N passed, N failed".
set -eu
cd "$(dirname "$0")/.."
src=$(pwd)
command -v valgrind >/dev/null 2>&1 || sh tools/apt-install.sh valgrind
[ -x configure ] || autoreconf -fi
mkdir -p build-valgrind
cd build-valgrind
"$src/configure" CFLAGS="-g -O1" --disable-shared >configure.log 2>&1 ||
  { tail -n 30 configure.log; exit 1; }
make -j"$(nproc 2>/dev/null || echo 2)" libosmem-internal.la >/dev/null
progs="tests/test_api tests/test_pool tests/test_reserve tests/test_numa
  tests/test_nodes tests/test_threads tests/test_cgroup tests/test_cache
  tests/test_reservations tests/test_footprint"
# shellcheck disable=SC2086 # a list of programs
make -j"$(nproc 2>/dev/null || echo 2)" $progs CPPFLAGS=-DOSMEM_TESTS_MINICR \
  CRITERION_LIBS= CRITERION_CFLAGS= >/dev/null
# One test per process, two at a time (CI has two cores).
export OSMEM_TEST_UNDER_VALGRIND=1
for prog in $progs; do
  for t in $("./$prog" --list); do echo "$prog $t"; done
done >tests.list
start=$(date +%s)
# shellcheck disable=SC2016 # expanded by the inner shell
xargs -P 2 -L 1 sh -c 'rc=0; timeout 900 valgrind -q --error-exitcode=66 \
  --leak-check=no --child-silent-after-fork=yes "./$0" --run "$1" \
  >"vg-$1.log" 2>&1 || rc=$?; echo "$rc" >"vg-$1.rc"' <tests.list
passed=0 failed=0 skipped=0
while read -r prog t; do
  rc=$(cat "vg-$t.rc" 2>/dev/null || echo missing)
  case $rc in
    0) passed=$((passed + 1)); echo "PASS: $t" ;;
    77) skipped=$((skipped + 1)); echo "SKIP: $t" ;;
    *) failed=$((failed + 1)); echo "FAIL: $t ($prog, exit $rc)"; tail -n 40 "vg-$t.log" ;;
  esac
done <tests.list
echo "valgrind: $skipped skipped, $(( $(date +%s) - start )) s for $(wc -l <tests.list) tests"
echo "valgrind: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

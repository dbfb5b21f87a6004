#!/bin/sh
# The Windows backend, end to end, on a Debian 12 machine: installs
# mingw-w64 and Wine, configures build-windows/ (--host=x86_64-w64-mingw32
# --enable-werror), builds the library, its DLL and tools/osmem-info.exe,
# runs `make check` under Wine, and prints "N passed, N failed" and the time
# taken. Bounded: the whole check is killed after $CHECK_WINDOWS_TIMEOUT
# seconds (default 600; it takes about a minute once Wine is installed).
#   sh tools/check-windows.sh            from the source tree
# Exit status: make check's (0 when every test passed or skipped).
set -eu
start=$(date +%s)
srcdir=$(cd "$(dirname "$0")/.." && pwd)
build=$srcdir/build-windows
limit=${CHECK_WINDOWS_TIMEOUT:-600}
sh "$srcdir/tools/apt-install.sh" gcc-mingw-w64-x86-64 wine64 wine \
  autoconf automake libtool pkg-config make
[ -x "$srcdir/configure" ] || (cd "$srcdir" && autoreconf -fi)
mkdir -p "$build"
cd "$build"
if [ ! -f Makefile ]; then
  timeout "$limit" "$srcdir/configure" --host=x86_64-w64-mingw32 \
    --enable-werror >configure.log 2>&1 ||
    { tail -n 30 configure.log; echo "configure failed (build-windows/configure.log)"; exit 1; }
fi
timeout "$limit" make -j2 >make.log 2>&1 ||
  { tail -n 30 make.log; echo "build failed (build-windows/make.log)"; exit 1; }
set +e
timeout "$limit" make -j2 check >check.log 2>&1
rc=$?
set -e
grep -E '^(# |PASS|FAIL|SKIP|ERROR|XFAIL|XPASS)' check.log || true
# Per test case, from the suites' Synthesis lines (Wine runs each case in a
# process of its own) and the single programs' results.
passed=0 failed=0 skipped=0
for log in tests/*.log; do
  [ -f "$log" ] || continue
  line=$(grep '^\[====\] Synthesis' "$log" | tail -n 1)
  if [ -n "$line" ]; then
    p=$(echo "$line" | sed 's/.*Passing: \([0-9]*\).*/\1/')
    f=$(echo "$line" | sed 's/.*Failing: \([0-9]*\) | Crashing: \([0-9]*\).*/\1 \2/')
    k=$(echo "$line" | sed 's/.*Skipped: \([0-9]*\).*/\1/')
    passed=$((passed + p)); failed=$((failed + ${f% *} + ${f#* }))
    skipped=$((skipped + k))
  else
    res=$(sed -n 's/^:test-result: //p' "${log%.log}.trs" 2>/dev/null | head -n 1)
    case $res in
      PASS) passed=$((passed + 1)) ;;
      SKIP) skipped=$((skipped + 1)) ;;
      FAIL|ERROR) failed=$((failed + 1)) ;;
    esac
  fi
done
echo "$passed passed, $failed failed, $skipped skipped ($(( $(date +%s) - start )) s; logs in build-windows/tests/)"
exit $rc

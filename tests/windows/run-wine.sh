#!/bin/sh
# Runs a Windows test program under Wine, for `make check` (LOG_COMPILER of
# a --host=*-mingw32 build).
#   run-wine.sh PROGRAM.exe [ARGS...]
# A suite built on tests/minicr.h (tests/test_*.exe) runs one test per Wine
# process, as Criterion isolates each test in a process of its own: --list,
# then --run NAME for each, a [PASS]/[FAIL]/[SKIP] line per test and
# Criterion's Synthesis line. Any other program runs once, with ARGS, and its
# exit status is passed through. Exit 77 (SKIP) when there is no Wine.
#
# Wine runs with WINEDEBUG=-all (no fixme noise in the logs) in a prefix of
# the build's own, tests/windows/wine-prefix, made on first use (about 5 s)
# under a lock, since `make -j` starts several tests at once.
set -u
prog=$1
shift
wine=${WINE:-wine}
if ! command -v "${wine%% *}" >/dev/null 2>&1; then
  echo "SKIP: no Wine ($wine) to run $prog; install wine64 and wine"
  exit 77
fi
dir=$(cd "${top_builddir:-.}" && pwd)/tests/windows
mkdir -p "$dir"
WINEPREFIX=$dir/wine-prefix
WINEDEBUG=${OSMEM_WINEDEBUG:--all} # err+all to see what Wine says
# No Mono or Gecko installer dialogs while the prefix is made.
WINEDLLOVERRIDES=${WINEDLLOVERRIDES:-mscoree,mshtml=}
export WINEPREFIX WINEDEBUG WINEDLLOVERRIDES
if [ ! -f "$WINEPREFIX/system.reg" ]; then
  if command -v flock >/dev/null 2>&1; then
    flock "$dir/wine-prefix.lock" sh -c \
      '[ -f "$WINEPREFIX/system.reg" ] || '"$wine"' wineboot -i >/dev/null 2>&1'
  else
    $wine wineboot -i >/dev/null 2>&1
  fi
fi

case ${prog##*/} in
  test_*) ;;
  *) $wine "$prog" "$@"; exit $? ;;
esac

# Wine writes the program's "\r\n" line ends as they are.
list=$($wine "$prog" --list | tr -d '\r') || {
  echo "FAIL: $prog --list failed under Wine"; exit 1; }
rcfile=$dir/.rc.$$ outfile=$dir/.out.$$
trap 'rm -f "$rcfile" "$outfile"' EXIT
# wine_once NAME: runs one test; its output in $outfile, its status in $rc.
# The status crosses the pipe (which takes Wine's "\r") through a file.
wine_once() {
  { $wine "$prog" --run "$1" 2>&1; echo $? >"$rcfile"; } | tr -d '\r' >"$outfile"
  rc=$(cat "$rcfile" 2>/dev/null || echo 2)
  cat "$outfile"
}
# A test always says how it ended ([PASS], [FAIL] after its message,
# [SKIP]); a crash ends with an exception's status. Wine 8.0 now and then
# (about one suite run in ten here, under make -j2) ends a process with
# status 1 or 127 and not a byte of output: the test never ran. Only that
# is run once more, and said.
run_one() {
  wine_once "$1"
  if [ ! -s "$outfile" ] && { [ "$rc" = 1 ] || [ "$rc" = 127 ]; }; then
    echo "[WINE] $1: Wine ended with status $rc before the test said anything; running it once more"
    wine_once "$1"
  fi
  return "$rc"
}
. "$(dirname "$0")/../run-each.sh"
# shellcheck disable=SC2086 # the list is one name per word
run_each Wine "$prog" $list

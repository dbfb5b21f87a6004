#!/bin/sh
# Checks that an engine's runner reports a module's exit status unchanged:
# runs tests/wasm/exit-status (exit-status.c) so that it ends with chosen
# statuses, through exit() (proc_exit) and through main's return, and with a
# trap, and compares what the runner exits with. Statuses of 126 and more
# matter: a runtime on libosmem may exit 251 (GHC's out-of-memory exit), and
# wasmtime's own proc_exit refuses them (tests/wasm/run-wasmtime.py says why).
#   exit-status.sh TESTFILE
# TESTFILE (tests/exit-status-ENGINE.exits) holds the engine (wasmtime or
# node) and the module's path; the engine's command comes from
# $WASMTIME_RUNNER or $NODE_RUNNER (set by configure). Reports like
# Criterion. Exit: 0 all as expected, 1 any not, 77 engine missing (SKIP).
set -u
read -r engine module <"$1" || { echo "FAIL: cannot read $1"; exit 1; }
. "$(dirname "$0")/engine.sh"
engine_runner "$engine"
# The wasmtime command (not PyPI's engine under tests/wasm/run-wasmtime.py)
# turns proc_exit statuses of 126 and more into 1: nothing a runner script can
# change, so those cases SKIP there, with the reason.
high_ok=yes
case $engine:$runner in
  wasmtime:*run-wasmtime.py*) ;;
  wasmtime:*) high_ok=no ;;
esac

# An engine that cannot run modules at all SKIPs (its runner exits 77).
out=$($runner "$module" exit 0 2>&1)
rc=$?
if [ "$rc" -eq 77 ]; then
  printf '%s\n' "$out"
  echo "SKIP: $engine cannot run wasm modules here"
  exit 77
fi

tested=0 passed=0 failed=0 skipped=0
check() { # expected-status how [N]
  want=$1; shift
  tested=$((tested + 1))
  if [ "$high_ok" = no ] && [ "$want" -ge 126 ] && [ "$1" != trap ]; then
    skipped=$((skipped + 1))
    echo "[SKIP] exit_status::$1_$2: the wasmtime command turns proc_exit($2) into status 1 (use PyPI's wasmtime through tests/wasm/run-wasmtime.py)"
    return
  fi
  $runner "$module" "$@" >/dev/null 2>&1
  got=$?
  if [ "$got" -eq "$want" ]; then
    passed=$((passed + 1))
    echo "[PASS] exit_status::$1${2:+_$2}: $got"
  else
    failed=$((failed + 1))
    echo "[FAIL] exit_status::$1${2:+_$2}: expected $want, $engine's runner exited $got"
  fi
}
for n in 0 1 2 77 125 126 127 134 200 251 255; do
  check "$n" exit "$n"
done
for n in 0 3 251; do
  check "$n" return "$n"
done
check 134 trap
echo "[====] Synthesis: Tested: $tested | Passing: $passed | Failing: $failed | Crashing: 0 | Skipped: $skipped ($engine)"
[ "$failed" -eq 0 ] || exit 1
exit 0

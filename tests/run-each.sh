# Sourced by the runners that run a test program one test per process under
# an engine or an emulator, as Criterion does natively (tests/wasm/suite.sh,
# tests/windows/run-wine.sh). The caller defines run_one NAME, which runs one
# test and returns its status, then calls
#   run_each LABEL PROGRAM NAME...
# which counts the statuses (0 pass, 77 skip, 1 fail, any other a crash),
# prints Criterion's Synthesis line and exits: 0 when all passed or skipped,
# 1 on a failure or crash or no tests, 77 when every test skipped.
run_each() {
  label=$1 program=$2
  shift 2
  tested=0 passed=0 failed=0 crashed=0 skipped=0
  for t in "$@"; do
    tested=$((tested + 1))
    run_one "$t"
    rc=$?
    case $rc in
      0) passed=$((passed + 1)) ;;
      77) skipped=$((skipped + 1)) ;;
      1) failed=$((failed + 1)) ;;
      *) crashed=$((crashed + 1)); echo "[CRASH] $t: exit status $rc under $label" ;;
    esac
  done
  echo "[====] Synthesis: Tested: $tested | Passing: $passed | Failing: $failed | Crashing: $crashed | Skipped: $skipped ($label)"
  [ "$tested" -gt 0 ] || { echo "FAIL: no tests in $program"; exit 1; }
  [ $((failed + crashed)) -eq 0 ] || exit 1
  [ "$passed" -gt 0 ] || exit 77
  exit 0
}

#!/bin/sh
# Runs one wasm test module under one engine, each test in a fresh instance
# (as Criterion runs each test in its own process), and reports like
# Criterion: a [PASS]/[FAIL]/[SKIP] line per test and a Synthesis line.
#   suite.sh ENGINE TESTFILE
# ENGINE is wasmtime or node; its command comes from $WASMTIME_RUNNER or
# $NODE_RUNNER (set by configure). TESTFILE (tests/NAME-ENGINE.ENGINE) holds
# the path of the module. Exit: 0 all passed, 1 any failed or crashed, 77
# engine missing or unable to run modules (the automake harness reports SKIP).
set -u
engine=$1
module=$(cat "$2") || { echo "FAIL: cannot read $2"; exit 1; }
. "$(dirname "$0")/engine.sh"
engine_runner "$engine"
list=$($runner "$module" --list)
case $? in
  0) ;;
  77) # The runner said why (an engine that cannot run modules at all).
    echo "SKIP: $engine cannot run wasm modules here"; exit 77 ;;
  *) echo "FAIL: $module --list failed under $engine"; exit 1 ;;
esac
run_one() { $runner "$module" --run "$1" 2>&1; }
. "$(dirname "$0")/../run-each.sh"
# shellcheck disable=SC2086 # the list is one name per word
run_each "$engine" "$module" $list

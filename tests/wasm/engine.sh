# Sourced by the wasm test drivers (tests/wasm/suite.sh, exit-status.sh).
# engine_runner ENGINE sets $runner to the engine's command, from
# $WASMTIME_RUNNER or $NODE_RUNNER (set by configure); where configure found
# none, it says SKIP and why, and exits 77.
engine_runner() {
  case $1 in
    wasmtime) runner=${WASMTIME_RUNNER:-} ;;
    node) runner=${NODE_RUNNER:-} ;;
    *) echo "${0##*/}: unknown engine $1" >&2; exit 2 ;;
  esac
  if [ -z "$runner" ]; then
    echo "SKIP: no $1 runner was found at configure time; install it as the README's WebAssembly section says and re-run configure"
    exit 77
  fi
}

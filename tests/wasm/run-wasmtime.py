#!/usr/bin/env python3
"""Run a WASI (preview 1) module under wasmtime, the real engine that PyPI's
`wasmtime` package embeds, for machines without a `wasmtime` command.

    python3 run-wasmtime.py MODULE [ARG...]

Stdout and stderr are inherited; the exit status is the module's, unchanged
(proc_exit's status or main's return value, as under Node.js); a trap is
reported on stderr and exits 134, like an abort. Without the wasmtime package
it exits 77 (SKIP) with the reason."""
import sys

try:
    import wasmtime
except ImportError as e:
    print(f"SKIP: {sys.executable} cannot import wasmtime ({e}); install it "
          "in a virtual environment (python3 -m venv .venv-wasm && "
          ".venv-wasm/bin/pip install wasmtime) and configure with "
          "WASMTIME_PYTHON=.../.venv-wasm/bin/python", file=sys.stderr)
    sys.exit(77)


class ProcExit(Exception):
    """Raised by proc_exit; wasmtime hands it back from the call to _start."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def proc_exit(code: int) -> None:
    raise ProcExit(code)


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = sys.argv[1]
    engine = wasmtime.Engine()
    module = wasmtime.Module.from_file(engine, path)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    # wasmtime's own proc_exit turns a status of 126 or more into an error
    # ("exit with invalid exit status outside of [0..126)", following the
    # preview 1 text that reserves those for the host), which would lose the
    # status: a runtime that exits 251 (GHC's out-of-memory exit) would show
    # as a Python traceback and status 1. This one passes every status
    # through, as Node.js does: a Python exception unwinds the module and
    # comes back out of the call to _start.
    linker.allow_shadowing = True
    linker.define_func(
        "wasi_snapshot_preview1", "proc_exit",
        wasmtime.FuncType([wasmtime.ValType.i32()], []),
        lambda code: proc_exit(code & 0xFFFFFFFF))
    store = wasmtime.Store(engine)
    wasi = wasmtime.WasiConfig()
    wasi.argv = [path] + sys.argv[2:]
    wasi.inherit_stdout()
    wasi.inherit_stderr()
    store.set_wasi(wasi)
    instance = linker.instantiate(store, module)
    start = instance.exports(store)["_start"]
    try:
        start(store)
    except ProcExit as e:
        return e.code
    except wasmtime.ExitTrap as e:  # wasmtime's proc_exit, were it used
        return e.code
    except (wasmtime.Trap, wasmtime.WasmtimeError) as e:
        print(f"wasmtime: trap: {e}", file=sys.stderr)
        return 134
    return 0


if __name__ == "__main__":
    sys.exit(main())

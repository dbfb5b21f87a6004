// Run a WASI (preview 1) module under Node.js's WASI:
//   node --no-warnings run-node.mjs MODULE [ARG...]
// Stdout and stderr are inherited; the exit status is the module's.
import { readFile } from 'node:fs/promises';
import { argv, exit, stderr } from 'node:process';
import { setFlagsFromString } from 'node:v8';
import { WASI } from 'node:wasi';

// node:wasi's imports are V8 "fast API calls" when this flag is on (the
// default), and Node.js 20's uvwasi allocates inside them through a memory
// manager that calls AdjustAmountOfExternalAllocatedMemory. Once a module has
// grown memory by some tens of MiB (V8 counts it as external memory and
// starts incremental marking), that call can finish the marking with a full,
// compacting GC inside the fast call (seen in gdb: uvwasi_fd_write ->
// NgLibMemoryManager::MallocImpl -> AdjustAmountOfExternalAllocatedMemory ->
// Heap::FinalizeIncrementalMarkingIfComplete -> Heap::CollectGarbage, under
// WasiFunction<FdWrite>::FastCallback), which V8 does not allow: the process
// later dies with SIGSEGV, typically on its way out after the module's last
// write. A module that grows 64 MiB, touches it and prints one line crashed 15
// runs of 20 (Node.js 20.20, V8 11.3; growths of 32 to 512 MiB crash, touched
// or not, touched more often; 16 MiB and 1 GiB or more did not), none of 40
// with this flag off (nodejs/node#46777, V8 issue 13753).
// Set before the module is compiled, so that the import wrappers take the
// ordinary (slow) API call path. A crash of the module itself still shows.
setFlagsFromString('--no-turbo-fast-api-calls');

const [path, ...args] = argv.slice(2);
if (!path) {
  stderr.write('usage: node --no-warnings run-node.mjs MODULE [ARG...]\n');
  exit(2);
}
const wasi = new WASI({
  version: 'preview1',
  args: [path, ...args],
  env: {},
  returnOnExit: true,
});
const module = await WebAssembly.compile(await readFile(path));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
let code;
try {
  code = wasi.start(instance);
} catch (e) {
  stderr.write(`node: trap: ${e}\n`);
  code = 134;
}
exit(code);

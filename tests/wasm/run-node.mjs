// Run a WASI (preview 1) module under Node.js's WASI:
//   node --no-warnings run-node.mjs MODULE [ARG...]
//   node --no-warnings run-node.mjs --probe
// Stdout and stderr are inherited; the exit status is the module's, unchanged
// (proc_exit's status or main's return value); a trap exits 134, like an
// abort. A Node.js that cannot run WASI modules at all exits 77 (SKIP) with
// the reason on stderr. --probe only checks that (configure runs it): it
// prints the Node.js version and the WASI interface found, and exits 0 or 77.
//
// Works on Node.js 18 and 20+, told apart by what they have, not by their
// version: Node.js 20 gives the imports as wasi.getImportObject(); Node.js 18
// (Debian 12's own nodejs, 18.20.4) has no getImportObject, only
// wasi.wasiImport, which is the same import object without its namespace,
// wasi_snapshot_preview1. Early Node.js 18 releases (18.4.0, checked) have
// node:wasi only with --experimental-wasi-unstable-preview1; 18.20.4 has it
// without. configure adds the flag when node:wasi appears only with it.
import { readFile } from 'node:fs/promises';
import { argv, execArgv, exit, stderr, stdout, version } from 'node:process';
import { setFlagsFromString } from 'node:v8';

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
// (Node.js 18's V8 10.2 knows the flag too.)
setFlagsFromString('--no-turbo-fast-api-calls');

function skip(why) {
  stderr.write(`SKIP: Node.js ${version} cannot run WASI modules: ${why}\n`);
  exit(77);
}

const [path, ...args] = argv.slice(2);
if (!path) {
  stderr.write('usage: node --no-warnings run-node.mjs MODULE [ARG...] | --probe\n');
  exit(2);
}

let WASI;
try {
  ({ WASI } = await import('node:wasi'));
} catch (e) {
  const flag = '--experimental-wasi-unstable-preview1';
  skip(`it has no node:wasi (${e.code ?? e.message})` +
       (execArgv.includes(flag) ? `, not even with ${flag}`
        : ` without ${flag} (configure adds that flag when it helps)`));
}

const wasi = new WASI({
  version: 'preview1',      // required by Node.js 20+, ignored by 18
  args: [path, ...args],
  env: {},
  returnOnExit: true,
});
let imports, api;
if (typeof wasi.getImportObject === 'function') {
  imports = wasi.getImportObject();
  api = 'getImportObject()';
} else if (wasi.wasiImport && typeof wasi.wasiImport === 'object') {
  imports = { wasi_snapshot_preview1: wasi.wasiImport };
  api = 'wasiImport';
} else {
  skip('its WASI object has neither getImportObject() nor wasiImport');
}
if (typeof wasi.start !== 'function')
  skip('its WASI object has no start()');

if (path === '--probe') {
  stdout.write(`${version}, node:wasi through ${api}\n`);
  exit(0);
}

const module = await WebAssembly.compile(await readFile(path));
const instance = await WebAssembly.instantiate(module, imports);
let code;
try {
  // The status given to proc_exit (returnOnExit), or 0 when _start returns.
  code = wasi.start(instance) ?? 0;
} catch (e) {
  stderr.write(`node: trap: ${e}\n`);
  code = 134;
}
exit(code);

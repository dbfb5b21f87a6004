// Run a WASI (preview 1) module under Node.js's WASI:
//   node --no-warnings run-node.mjs MODULE [ARG...]
// Stdout and stderr are inherited; the exit status is the module's.
import { readFile } from 'node:fs/promises';
import { argv, exit, stderr } from 'node:process';
import { WASI } from 'node:wasi';

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

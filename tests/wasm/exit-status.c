/* A module that ends the way it is told, so that tests/wasm/exit-status.sh
 * can check that an engine's runner reports what the module did:
 *   exit-status exit N     exit(N): wasi-libc calls proc_exit(N)
 *   exit-status return N   returns N from main: _start calls exit(N)
 *   exit-status trap       executes `unreachable`
 * Anything else exits 2. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "exit") == 0)
    exit(atoi(argv[2]));
  if (argc == 3 && strcmp(argv[1], "return") == 0)
    return atoi(argv[2]);
  if (argc == 2 && strcmp(argv[1], "trap") == 0)
    __builtin_trap();
  fputs("usage: exit-status exit N | return N | trap\n", stderr);
  return 2;
}

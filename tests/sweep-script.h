/*
 * The steps of a fault sweep's script, shared by the POSIX sweep
 * (tests/test_sweep.c, each case in a child) and the wasm and Windows ones
 * (tests/test_sweep_wasm.c, tests/test_sweep_windows.c, each case in
 * process): gets that remember what they wrote into the megablocks they
 * got, frees, the check that runs after every step (live megablocks keep
 * their contents and are heap, the library's invariants hold, and whatever
 * else the sweep checks: SWEEP_STEP_CHECK, true when there is nothing
 * more), and the check that the library works once the faults stop.
 *
 * The includer defines CHECK(cond) (how a failed check is reported), MB,
 * SWEEP_STEP_CHECK() and SWEEP_NODE_GET_ERROR(e) (whether e is a documented
 * error of a failed node get there).
 */
#ifndef OSMEM_TESTS_SWEEP_SCRIPT_H
#define OSMEM_TESTS_SWEEP_SCRIPT_H

#include <errno.h>
#include <string.h>

#include "helpers.h"
#include "sweep-fault.h"

struct run {
  unsigned char *p;
  size_t n;
  unsigned char sig;
};
static struct run live[16];
static int nlive;

static void keep(void *p, size_t n) {
  unsigned char sig = (unsigned char)(0x40 + nlive);
  memset(p, sig, 64);
  ((unsigned char *)p)[n * MB - 1] = sig;
  live[nlive++] = (struct run){p, n, sig};
}

static void check_live(void) {
  for (int i = 0; i < nlive; i++) {
    CHECK(live[i].p[0] == live[i].sig && live[i].p[63] == live[i].sig);
    CHECK(live[i].p[live[i].n * MB - 1] == live[i].sig);
    CHECK(osmem_is_heap(live[i].p));
  }
  CHECK(osmem__check_invariants() == 0);
  CHECK(SWEEP_STEP_CHECK());
}

static void get(size_t n) {
  errno = 0;
  void *p = osmem_get_mblocks(n);
  if (p) keep(p, n);
  else CHECK(errno == ENOMEM);
  check_live();
}

static void get_on_node0(size_t n) {
  errno = 0;
  void *p = osmem_get_mblocks_on_node(n, 0);
  if (p) keep(p, n);
  else CHECK(SWEEP_NODE_GET_ERROR(errno));
  check_live();
}

static void free_run(int i) {
  if (i >= nlive) return;
  CHECK(osmem_free_mblocks(live[i].p, live[i].n) == 0); /* never fails */
  live[i] = live[--nlive];
  check_live();
}

/* Once the faults stop, the library works: everything a program needs. */
static void works_again(void) {
  fault.on = false;
  (void)osmem_release_free_memory();
  char *p = osmem_get_mblocks(5);
  CHECK(p != NULL);
  if (p) {
    memset(p, 7, 5 * MB);
    CHECK(osmem_free_mblocks(p, 5) == 0);
  }
  char *q = osmem_get_mblocks_on_node(1, 0);
  CHECK(q != NULL && osmem_free_mblocks(q, 1) == 0);
#ifndef __wasi__ /* wasm has no reservations (ENOSYS) */
  CHECK(osmem_reserve(4 * MB, 0, NULL, NULL) != NULL);
#endif
  CHECK(osmem__check_invariants() == 0);
  CHECK(SWEEP_STEP_CHECK());
}

#endif /* OSMEM_TESTS_SWEEP_SCRIPT_H */

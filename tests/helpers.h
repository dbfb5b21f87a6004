/* Shared by the Criterion suites: internal hooks and small checks. */
#ifndef OSMEM_TESTS_HELPERS_H
#define OSMEM_TESTS_HELPERS_H

#ifdef __wasi__
#include "minicr.h" /* Criterion cannot run on wasm: same API, subset */
#else
#include <criterion/criterion.h>
#endif
#include <stdint.h>

#include "osmem.h"

/* Internal, hidden in the shared library; tests link the static one. */
int osmem__check_invariants(void);

static inline struct osmem_stats stats_now(void) {
  struct osmem_stats s;
  osmem_stats(&s);
  return s;
}

#define assert_invariants() \
  cr_assert_eq(osmem__check_invariants(), 0, "library invariant broken")

static inline int is_mblock_aligned(const void *p) {
  return ((uintptr_t)p & OSMEM_MBLOCK_MASK) == 0;
}

#endif

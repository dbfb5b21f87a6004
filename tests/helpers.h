/* Shared by the Criterion suites: internal hooks and small checks. */
#ifndef OSMEM_TESTS_HELPERS_H
#define OSMEM_TESTS_HELPERS_H

#if defined(__wasi__) || defined(_WIN32) || defined(OSMEM_TESTS_MINICR)
/* Criterion cannot run on wasm, nor under ThreadSanitizer, and is not built
 * for Windows: same API, subset */
#include "minicr.h"
#else
#include <criterion/criterion.h>
#endif
#include <stdint.h>

#include "osmem.h"

/* Internal, hidden in the shared library; tests link the static one. */
int osmem__check_invariants(void);
void osmem__forget_everything(void);

static inline struct osmem_stats stats_now(void) {
  struct osmem_stats s;
  osmem_stats(&s);
  return s;
}

/* Frees go straight to the pool, for tests of the pool itself (thread
 * caches in front of it would hide what they check). */
static inline void pool_direct(void) { osmem_set_thread_cache(0); }

/* Lazy decommit in the free that crosses the threshold, not after the
 * decommit delay: for tests of what a free decommits. */
static inline void decommit_at_once(void) { osmem_set_decommit_delay(0); }

#define assert_invariants() \
  cr_assert_eq(osmem__check_invariants(), 0, "library invariant broken")

static inline int is_mblock_aligned(const void *p) {
  return ((uintptr_t)p & OSMEM_MBLOCK_MASK) == 0;
}

/* What the backend under test can do, known from the build rather than asked
 * of the library (whose answers are under test). Wasm memory only grows: it
 * can be neither given back nor decommitted, and memory grown ahead of need
 * would be committed for good, so each fresh get grows exactly its size. */
#ifdef __wasi__
#define OS_CAN_UNMAP 0
#define OS_CAN_DECOMMIT 0
#define OS_CHEAP_RESERVE 0
#else
#define OS_CAN_UNMAP 1
#define OS_CAN_DECOMMIT 1
#define OS_CHEAP_RESERVE 1
#endif

/* The most megablock memory one test takes. A wasm instance's memory never
 * shrinks, and Node.js 20's WASI host crashes at exit (SIGSEGV) in some runs
 * once a module has grown by 32 MiB or more (5-20% of runs; none in 100 at
 * 24 MiB), so wasm tests stay under that. Natively: no limit. */
#ifndef TEST_MEMORY_BUDGET
#ifdef __wasi__
#define TEST_MEMORY_BUDGET ((size_t)24 << 20)
#else
#define TEST_MEMORY_BUDGET SIZE_MAX
#endif
#endif

/* AddressSanitizer maps terabytes of shadow memory: under an address-space
 * limit (RLIMIT_AS) it cannot run, so tests that set one skip under it. */
#if defined(__SANITIZE_ADDRESS__)
#define TEST_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_UNDER_ASAN 1
#endif
#endif
static inline void skip_rlimit_as_under_asan(void) {
#ifdef TEST_UNDER_ASAN
  cr_skip_test("RLIMIT_AS cannot be lowered under AddressSanitizer");
#endif
}

#if !defined(__wasi__) && !defined(_WIN32)
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
/* Lowers the RLIMIT_AS soft limit to cur, the old limits going to *old (for
 * setrlimit afterwards), for a test that needs the OS to refuse. Skips
 * where the limit cannot work: under ASan, and where it is not enforced, as
 * under qemu-user, which accepts RLIMIT_AS and ignores it (it would limit
 * the emulator itself). Enforced, a mapping of cur bytes more is refused. */
static inline void lower_rlimit_as(rlim_t cur, struct rlimit *old) {
  skip_rlimit_as_under_asan();
  cr_assert_eq(getrlimit(RLIMIT_AS, old), 0);
  struct rlimit rl = {cur, old->rlim_max};
  cr_assert_eq(setrlimit(RLIMIT_AS, &rl), 0, "setrlimit: %s", strerror(errno));
  void *probe = mmap(NULL, (size_t)cur, PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (probe == MAP_FAILED) return;
  munmap(probe, (size_t)cur);
  setrlimit(RLIMIT_AS, old);
  cr_skip_test("RLIMIT_AS is not enforced here (qemu-user accepts it and "
               "ignores it: it would limit the emulator itself)");
}
#endif

/* n megablocks, or fewer where n would pass TEST_MEMORY_BUDGET. */
static inline size_t mblocks_in_budget(size_t n) {
  size_t max = TEST_MEMORY_BUDGET / OSMEM_MBLOCK_SIZE;
  return n < max ? n : max;
}

#endif

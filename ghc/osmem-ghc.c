/*
 * GHC's OS memory layer on libosmem.
 *
 * GHC 9.0's runtime asks the OS for memory through 17 functions, defined by
 * the member OSMem.o of libHSrts.a. This file defines the same 17 with the
 * same contracts (rts/sm/OSMem.h of GHC 9.0), on libosmem's public API only.
 * Linked before the RTS (see osmem-ghc.pc.in), it is the definition the
 * linker takes, and OSMem.o is never pulled out of libHSrts.a.
 *
 * What GHC prints and how it exits are part of the contract, so failures
 * are reported with GHC's own messages through GHC's own functions
 * (errorBelch, sysErrorBelch, barf) and GHC's exit codes (stg_exit).
 * Nothing else is ever printed.
 *
 * On 64-bit Linux GHC uses its "large address space": one reservation at
 * start-up (osReserveHeapMemory), megablocks committed and decommitted
 * inside it. The plain megablock calls (osGetMBlocks and friends) are what
 * builds without it use; both sets are implemented.
 */
#include "Rts.h"
#include "osmem.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* GHC's heap is built from megablocks of its own size: the library's must
 * be the same (configure libosmem --with-mblock-shift=N to match). */
_Static_assert(MBLOCK_SHIFT == OSMEM_MBLOCK_SHIFT,
               "GHC's MBLOCK_SHIFT differs from libosmem's megablock shift");

/* The RTS and the tests must see these even where the rest of the build
 * hides its symbols (-fvisibility=hidden). */
#define GHC_API __attribute__((visibility("default")))

/* GHC 9.0's rts/sm/OSMem.h, which GHC does not install. */
GHC_API void osMemInit(void);
GHC_API void *osGetMBlocks(uint32_t n);
GHC_API void osFreeMBlocks(void *addr, uint32_t n);
GHC_API void osReleaseFreeMemory(void);
GHC_API void osFreeAllMBlocks(void);
GHC_API size_t getPageSize(void);
GHC_API StgWord64 getPhysicalMemorySize(void);
GHC_API void setExecutable(void *p, W_ len, bool exec);
GHC_API bool osBuiltWithNumaSupport(void);
GHC_API bool osNumaAvailable(void);
GHC_API uint32_t osNumaNodes(void);
GHC_API uint64_t osNumaMask(void);
GHC_API void osBindMBlocksToNode(void *addr, StgWord size, uint32_t node);
GHC_API void *osReserveHeapMemory(void *startAddress, W_ *len);
GHC_API void osCommitMemory(void *at, W_ size);
GHC_API void osDecommitMemory(void *at, W_ size);
GHC_API void osReleaseHeapMemory(void);

/* For tests: the heap reservation (NULL and 0 when there is none). */
GHC_API void *osmem_ghc_heap_reservation(size_t *size);

/* GHC keeps the address space below 8 GiB for code its linker loads, which
 * must stay within reach of 32-bit relocations; the heap goes above. */
#define HEAP_MIN_ADDRESS ((uintptr_t)8 << 30)
/* GHC's default start: above the minimum, where third-party libraries do
 * not usually map (GHC ticket #12573). */
#define HEAP_DEFAULT_START ((uintptr_t)0x4200000000)
/* Reservations placed below the minimum are retried this many times in all
 * (GHC retries without bound). */
#define HEAP_TRIES 8

static void *heap_base;  /* the heap reservation, NULL when none */
static size_t heap_size;
static bool torn_down;   /* the library was torn down since osMemInit */

/* ------------------------------------------------------------- failures */

/* GHC's response to memory the OS will not give: its message, then the
 * heap-overflow exit status (251). */
static void out_of_memory(W_ bytes) {
  errorBelch("out of memory (requested %" FMT_Word " bytes)", bytes);
  stg_exit(EXIT_HEAPOVERFLOW);
}

/* libosmem returns error numbers; sysErrorBelch prints errno's text. */
static void sys_error(int err, const char *what) {
  errno = err;
  sysErrorBelch("%s", what);
}

/* ----------------------------------------------------------- statistics */

/* OSMEM_GHC_STATS=path writes libosmem's statistics there, once: before a
 * teardown (which zeroes them) or at exit. A diagnostic aid, so a file that
 * cannot be written is silently skipped. */
#define STAT_FIELDS(X)                                                      \
  X(mblocks_in_use) X(mblocks_peak) X(mblocks_pooled)                       \
  X(mblocks_pooled_resident) X(pool_ranges) X(bytes_mapped)                 \
  X(bytes_reserved_unused) X(reservations) X(os_maps) X(os_unmaps)          \
  X(os_madvise) X(os_mbind) X(align_hint_hits) X(align_exact_hits)          \
  X(align_trims) X(reserve_retries) X(bytes_decommitted) X(mblocks_cached)  \
  X(cache_gets) X(cache_frees) X(user_reservations) X(bytes_user_reserved)  \
  X(bytes_committed) X(os_mprotect)

static void write_stats(void) {
  const char *path = getenv("OSMEM_GHC_STATS");
  if (path == NULL || *path == '\0') return;
  struct osmem_stats s;
  osmem_stats(&s);
  FILE *f = fopen(path, "w");
  if (f == NULL) return;
#define PRINT_FIELD(name) fprintf(f, #name " %" PRIu64 "\n", s.name);
  STAT_FIELDS(PRINT_FIELD)
#undef PRINT_FIELD
  fprintf(f, "heap_base %#" PRIxPTR "\nheap_size %zu\n",
          (uintptr_t)heap_base, heap_size);
  fclose(f);
}

/* A normal Haskell exit leaves the heap mapped (hs_exit frees it only when
 * asked to), so the statistics are taken at exit unless a teardown took
 * them already. */
static void write_stats_at_exit(void) {
  if (!torn_down) write_stats();
}

/* Everything the library mapped goes back; its statistics are zeroed, so
 * callers write them first. */
static void teardown(void) {
  torn_down = true;
  (void)osmem_teardown(); /* a refused unmap leaves a mapping: harmless */
}

/* ----------------------------------------------------------------- init */

void osMemInit(void) {
  static bool exit_hook;
  osmem_init();
  torn_down = false;
  /* --disable-delayed-os-memory-return: GHC then decommits with
   * MADV_DONTNEED instead of MADV_FREE, so that RSS falls at once; that is
   * libosmem's eager mode. Otherwise the library's mode stands (lazy, or
   * what OSMEM_DECOMMIT says). */
  if (RtsFlags.MiscFlags.disableDelayedOsMemoryReturn)
    (void)osmem_set_decommit_mode(OSMEM_DECOMMIT_EAGER);
  /* GHC's binding: MPOL_BIND, strict, pages already present not moved.
   * Only binding uses the policy, and GHC binds only under --numa, so a
   * library refusing it matters only then. */
  int err = osmem_set_numa_policy(OSMEM_NUMA_STRICT_NO_MOVE);
  if (err && RtsFlags.GcFlags.numa) {
    sys_error(err, "mbind");
    stg_exit(EXIT_FAILURE);
  }
  if (!exit_hook) exit_hook = atexit(write_stats_at_exit) == 0;
}

/* ------------------------------------------------------ megablock calls */

void *osGetMBlocks(uint32_t n) {
  void *p = osmem_get_mblocks(n);
  if (p == NULL) {
    if (errno == ENOMEM) out_of_memory((W_)n * MBLOCK_SIZE);
    barf("getMBlock: mmap: %s", strerror(errno));
  }
  return p;
}

/* GHC ignores a failed unmap here; libosmem refuses only a range it did not
 * hand out, and then changes nothing, so ignoring it is as safe. */
void osFreeMBlocks(void *addr, uint32_t n) {
  (void)osmem_free_mblocks(addr, n);
}

/* GHC's own layer does nothing here on POSIX (it has no pool); libosmem
 * gives its pooled megablocks back, which is what the RTS means. */
void osReleaseFreeMemory(void) {
  (void)osmem_release_free_memory();
}

void osFreeAllMBlocks(void) {
  write_stats();
  heap_base = NULL;
  heap_size = 0;
  teardown();
}

/* --------------------------------------------------------- machine facts */

size_t getPageSize(void) {
  return osmem_page_size();
}

/* Installed RAM, 0 if unknown, as GHC's (not lowered by cgroup limits:
 * GHC 9.0 does not look at them either). */
StgWord64 getPhysicalMemorySize(void) {
  return osmem_physical_ram();
}

/* GHC accepts any byte range and widens it to whole pages. */
void setExecutable(void *p, W_ len, bool exec) {
  if (len == 0) return; /* no page to change */
  uintptr_t page = osmem_page_size();
  uintptr_t first = (uintptr_t)p & ~(page - 1);
  uintptr_t last = ((uintptr_t)p + len - 1) & ~(page - 1);
  if (osmem_set_executable((void *)first, last - first + page, exec) != 0)
    barf("setExecutable: failed to protect 0x%p\n", p);
}

/* ------------------------------------------------------------------ NUMA */

bool osBuiltWithNumaSupport(void) {
  return osmem_numa_supported();
}

bool osNumaAvailable(void) {
  return osmem_numa_available();
}

uint32_t osNumaNodes(void) {
  return osmem_numa_nodes_configured();
}

/* GHC's mask is one 64-bit word and GHC refuses machines it cannot hold. */
uint64_t osNumaMask(void) {
  unsigned nodes = osmem_numa_nodes_configured();
  if (nodes > OSMEM_NUMA_MASK_NODES)
    barf("osNumaMask: too many NUMA nodes (%d)", (int)nodes);
  return osmem_numa_mask();
}

/* GHC binds only under +RTS --numa, and a bind that fails ends the
 * program: memory on the wrong node is not what the user asked for. */
void osBindMBlocksToNode(void *addr, StgWord size, uint32_t node) {
  if (!RtsFlags.GcFlags.numa) return;
  int err = osmem_bind_to_node(addr, (size_t)size, node);
  if (err) {
    sys_error(err, "mbind");
    stg_exit(EXIT_FAILURE);
  }
}

/* ------------------------------------------------- the heap reservation */

/* The default stack size of a new thread: the RTS starts a few (the timer,
 * workers), and their stacks must fit beside the heap under a limit. */
static size_t default_thread_stack(void) {
  pthread_attr_t attr;
  size_t size = 0;
  int err = pthread_attr_init(&attr);
  if (!err) {
    err = pthread_attr_getstacksize(&attr, &size);
    pthread_attr_destroy(&attr);
  }
  if (err) {
    sys_error(err, "failed to read default thread stack size");
    stg_exit(EXIT_FAILURE);
  }
  return size;
}

/* GHC's rule under an address-space limit (ulimit -v) below the request:
 * take 0.666 of the limit, leaving the rest to thread stacks and the C
 * heap (GHC ticket #18623), and stop early, with GHC's message, if the rest
 * cannot hold three thread stacks. */
static size_t fit_address_space_limit(size_t len) {
  /* getrlimit itself, as GHC: libosmem's osmem_memory_info would read the
   * cgroup files too, which start-up does not need. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_AS, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
    return len;
  uint64_t limit = (uint64_t)rl.rlim_cur;
  if (limit == 0 || len <= limit) return len;
  uint64_t fit = limit <= UINT64_MAX / 666 ? limit * 666 / 1000
                                           : limit / 1000 * 666;
  fit &= ~(uint64_t)(osmem_page_size() - 1);
  size_t stack = default_thread_stack();
  if (limit - fit < 3 * (uint64_t)stack) {
    errorBelch("the current resource limit for virtual memory ('ulimit -v' or "
               "RLIMIT_AS) is too low.\nPlease make sure that at least %zuMiB "
               "of virtual memory are available.",
               stack * 9 / (1024 * 1024));
    stg_exit(EXIT_FAILURE);
  }
  return (size_t)fit;
}

/* The next hint after a reservation the OS placed too low: just past the
 * range asked for, so that a hint that was busy moves on. */
static uintptr_t next_hint(uintptr_t hint, size_t len) {
  return hint <= UINTPTR_MAX - len ? hint + len : HEAP_MIN_ADDRESS;
}

/* Reserves up to len bytes at or above HEAP_MIN_ADDRESS, starting at the
 * hint. osmem_reserve halves the size on refusal (ulimit -v) down to one
 * megablock. A reservation placed too low is held while the next attempt
 * is made, so that the OS cannot offer the same place again, and given
 * back at the end. NULL if no attempt got memory high enough. */
static void *reserve_above_minimum(size_t len, uintptr_t hint, size_t *got) {
  void *low[HEAP_TRIES];
  size_t n_low = 0;
  void *at = NULL;
  while (at == NULL && n_low < HEAP_TRIES) {
    void *p = osmem_reserve(len, OSMEM_MBLOCK_SIZE, (void *)hint, got);
    if (p == NULL) break; /* not even one megablock */
    if ((uintptr_t)p >= HEAP_MIN_ADDRESS) {
      at = p;
    } else {
      low[n_low++] = p;
      len = *got; /* what fitted: asking for more would only shrink again */
      hint = next_hint(hint, len);
    }
  }
  while (n_low > 0)
    if (osmem_unreserve(low[--n_low]) != 0)
      sysErrorBelch("unable to release reserved heap");
  return at;
}

void *osReserveHeapMemory(void *startAddress, W_ *len) {
  uintptr_t start = startAddress ? (uintptr_t)startAddress
                                 : HEAP_DEFAULT_START;
  /* A start below the minimum is reported, and then GHC moves its hint up
   * until it reaches the minimum: start there at once. */
  if (start < HEAP_MIN_ADDRESS) {
    errorBelch("Provided heap start address %p is lower than minimum "
               "address %p", (void *)start, (void *)HEAP_MIN_ADDRESS);
    start = HEAP_MIN_ADDRESS;
  }
  size_t want = fit_address_space_limit((size_t)*len) & ~OSMEM_MBLOCK_MASK;
  size_t got = 0;
  void *at = want >= OSMEM_MBLOCK_SIZE
                 ? reserve_above_minimum(want, start, &got) : NULL;
  if (at == NULL) barf("osReserveHeapMemory: Failed to allocate heap storage");
  heap_base = at;
  heap_size = got;
  *len = (W_)got;
  return at;
}

/* Memory the OS will not commit (strict overcommit at its limit) is out of
 * memory to the program, as a refused mmap is to GHC's megablock calls;
 * anything else (a range outside the heap) is a bug in the caller. */
void osCommitMemory(void *at, W_ size) {
  int err = osmem_commit(at, (size_t)size);
  if (err == ENOMEM) out_of_memory(size);
  if (err) barf("Unable to commit %" FMT_Word " bytes of memory", size);
}

/* MADV_FREE by default, MADV_DONTNEED in eager mode (see osMemInit). GHC
 * reports a failure and carries on: the memory is merely not returned. */
void osDecommitMemory(void *at, W_ size) {
  int err = osmem_decommit(at, (size_t)size);
  if (err) sys_error(err, "unable to decommit memory");
}

/* Called once, when the RTS frees its heap (hs_exit); nothing of the
 * library is used after it, so everything else goes back too. */
void osReleaseHeapMemory(void) {
  write_stats();
  if (heap_base != NULL) {
    int err = osmem_unreserve(heap_base);
    if (err) sys_error(err, "unable to release address space");
  }
  heap_base = NULL;
  heap_size = 0;
  teardown();
}

void *osmem_ghc_heap_reservation(size_t *size) {
  if (size) *size = heap_size;
  return heap_base;
}

/* The public API, call by call, as include/osmem.h documents it. The same
 * cases run natively (Criterion, POSIX backend) and on wasm32-wasi (minicr,
 * wasm backend); where the backends differ, a case asserts each one's
 * documented contract, and the OS is made to refuse through each backend's
 * own table (osmem__posix_sys, osmem__wasm_sys). */
#include <config.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __wasi__
#include "../osmem/wasm/sys.h"
#elif defined(_WIN32)
#include <windows.h>

#include "../osmem/windows/sys.h"
#else
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "../osmem/posix/sys.h"
#endif
#include "../osmem/common/internal.h"
#include "helpers.h"
#include "spares.h"

#define MB OSMEM_MBLOCK_SIZE
#define WASM_PAGE ((size_t)65536) /* the wasm spec's page */

static char at(void *p, size_t off) { return ((volatile char *)p)[off]; }

static void put(void *p, size_t off, char v) { ((volatile char *)p)[off] = v; }

/* p + d as an address, without pointer arithmetic outside an object. */
static void *addr_at(const void *p, intptr_t d) {
  return (void *)((uintptr_t)p + (uintptr_t)d);
}

/* Every field, including the OS call counters, is the same. */
static void assert_stats_same(struct osmem_stats a, struct osmem_stats b) {
  cr_assert_eq(memcmp(&a, &b, sizeof a), 0, "statistics changed");
}

/* The library's state (not its OS call counters) is the same. */
#define SAME_FIELD(a, b, f)                                                 \
  cr_assert_eq((a).f, (b).f, #f " changed: %llu before, %llu after",       \
               (unsigned long long)(a).f, (unsigned long long)(b).f)

static void assert_state_same(struct osmem_stats a, struct osmem_stats b) {
  SAME_FIELD(a, b, mblocks_in_use);
  SAME_FIELD(a, b, mblocks_peak);
  SAME_FIELD(a, b, mblocks_pooled);
  SAME_FIELD(a, b, mblocks_pooled_resident);
  SAME_FIELD(a, b, pool_ranges);
  SAME_FIELD(a, b, bytes_mapped);
  SAME_FIELD(a, b, bytes_reserved_unused);
  SAME_FIELD(a, b, reservations);
}

/* An MB-aligned region of `n` megablocks from malloc, not from the library
 * (natively glibc maps it; on wasm it comes from sbrk). free() it. */
#ifdef _WIN32 /* msvcrt has no aligned_alloc */
#define aligned_alloc(align, size) _aligned_malloc(size, align)
#define foreign_free(p) _aligned_free(p)
#else
#define foreign_free(p) free(p)
#endif
static void *foreign_region(size_t n) {
  void *p = aligned_alloc(MB, n * MB);
  cr_assert_not_null(p, "aligned_alloc: %s", strerror(errno));
  return p;
}

/* ------------------------------------------------ the OS, per backend */

/* The OS page size: sysconf natively; on wasm the 64 KiB page of the wasm
 * spec (wasm has no sysconf figure to compare with). */
static size_t os_page_size(void) {
#ifdef __wasi__
  return WASM_PAGE;
#elif defined(_WIN32)
  SYSTEM_INFO si;
  GetSystemInfo(&si);
  return si.dwPageSize;
#else
  return (size_t)sysconf(_SC_PAGESIZE);
#endif
}

/* Physical memory: sysconf natively, as far as the address space holds it
 * (4 GiB in a 32-bit process); on wasm all a wasm32 memory can hold. */
static uint64_t os_physical_memory(void) {
#ifdef __wasi__
  return (uint64_t)1 << 32;
#elif defined(_WIN32)
  MEMORYSTATUSEX ms = {.dwLength = sizeof ms};
  return GlobalMemoryStatusEx(&ms) ? ms.ullTotalPhys : 0;
#else
  uint64_t ram =
      (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
  uint64_t space = SIZE_MAX < UINT64_MAX ? (uint64_t)SIZE_MAX + 1 : UINT64_MAX;
  return ram < space ? ram : space;
#endif
}

/* Memory the process holds now: its address space (/proc/self/statm, 0 if
 * unknown) natively; the size of linear memory on wasm. */
static size_t process_memory(void) {
#ifdef __wasi__
  return __builtin_wasm_memory_size(0) * WASM_PAGE;
#elif defined(_WIN32)
  /* Windows: the process's committed private memory, region by region. */
  size_t bytes = 0;
  MEMORY_BASIC_INFORMATION mbi;
  for (uintptr_t a = 0; VirtualQuery((void *)a, &mbi, sizeof mbi) != 0;) {
    if (mbi.State == MEM_COMMIT && mbi.Type == MEM_PRIVATE)
      bytes += mbi.RegionSize;
    uintptr_t next = (uintptr_t)mbi.BaseAddress + mbi.RegionSize;
    if (next <= a) break;
    a = next;
  }
  return bytes;
#else
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f) return 0;
  unsigned long pages = 0;
  if (fscanf(f, "%lu", &pages) != 1) pages = 0;
  fclose(f);
  return pages * (size_t)sysconf(_SC_PAGESIZE);
#endif
}

/* Calls the injected refusals below turned down, and the largest size one
 * of them asked for, in bytes. */
static int os_refused;
static size_t os_largest_refused;

static void count_refusal(size_t bytes) {
  os_refused++;
  if (bytes > os_largest_refused) os_largest_refused = bytes;
}

#ifdef __wasi__
/* The wasm OS: memory.grow, refused on demand. */
static size_t grow_limit;                   /* pages memory may reach */
static size_t grow_refuse_above = SIZE_MAX; /* pages in one grow */

static size_t refusing_grow(size_t pages) {
  size_t now = __builtin_wasm_memory_size(0);
  if (pages > grow_refuse_above || now > grow_limit ||
      pages > grow_limit - now) {
    count_refusal(pages * WASM_PAGE);
    return SIZE_MAX;
  }
  return __builtin_wasm_memory_grow(0, pages);
}

static void refuse_grows(size_t limit_pages, size_t above_pages) {
  grow_limit = limit_pages;
  grow_refuse_above = above_pages;
  osmem__wasm_sys.memory_grow = refusing_grow;
}

/* Bookkeeping comes from a room of the library's own, and memory grows only
 * when that room is short. With grows refused, use the room up (to less
 * than 16 bytes) so that any new bookkeeping must grow memory. */
static void use_up_bookkeeping_room(void) {
  osmem__os_lock();
  for (size_t size = (size_t)1 << 24; size >= 16; size /= 2) {
    void *p;
    while (osmem__os_meta_alloc(size, &p) == 0) {
    }
  }
  osmem__os_unlock();
}
#elif defined(_WIN32)
/* The Windows OS: VirtualAlloc and VirtualAlloc2 through the backend's
 * table, refused on demand. A limit counts what is committed from now on
 * (as a job's commit limit would refuse it); bookkeeping is told from
 * reservations by how it is asked for: committed, anywhere, by
 * VirtualAlloc. */
static size_t commit_budget = SIZE_MAX, committed_since;
static bool refuse_reserves, refuse_meta;

static bool refuse(size_t size, DWORD type, bool reservation) {
  bool meta = !reservation && (type & MEM_COMMIT) && size >= ((size_t)64 << 10);
  if ((reservation && refuse_reserves) || (meta && refuse_meta) ||
      ((type & MEM_COMMIT) && committed_since + size > commit_budget)) {
    count_refusal(size);
    SetLastError(ERROR_COMMITMENT_LIMIT);
    return true;
  }
  if (type & MEM_COMMIT) committed_since += size;
  return false;
}

static LPVOID WINAPI refusing_alloc(LPVOID at, SIZE_T size, DWORD type,
                                    DWORD prot) {
  bool reservation = at != NULL || !(type & MEM_COMMIT);
  if (!(type & MEM_RESET) && refuse(size, type, reservation)) return NULL;
  return VirtualAlloc(at, size, type, prot);
}

static osmem__virtual_alloc2_fn real_alloc2;
static PVOID WINAPI refusing_alloc2(HANDLE h, PVOID at, SIZE_T size,
                                    ULONG type, ULONG prot,
                                    MEM_EXTENDED_PARAMETER *ext, ULONG n) {
  if (refuse(size, type, true)) return NULL;
  return real_alloc2(h, at, size, type, prot, ext, n);
}

static void refuse_windows(size_t budget, bool reserves, bool meta) {
  osmem_init(); /* the optional entries are looked up */
  commit_budget = budget, committed_since = 0;
  refuse_reserves = reserves, refuse_meta = meta;
  osmem__windows_sys_reset();
  real_alloc2 = osmem__windows_sys.VirtualAlloc2;
  osmem__windows_sys.VirtualAlloc = refusing_alloc;
  if (real_alloc2) osmem__windows_sys.VirtualAlloc2 = refusing_alloc2;
}
#else
static struct rlimit saved_as;
#endif

/* The OS refuses to let the process grow by more than `headroom` bytes from
 * now: RLIMIT_AS natively, a memory.grow that refuses past the limit on wasm.
 * os_unlimit() lifts it. */
static void os_limit(size_t headroom) {
#ifdef __wasi__
  size_t now = __builtin_wasm_memory_size(0);
  refuse_grows(now + headroom / WASM_PAGE, SIZE_MAX);
#elif defined(_WIN32)
  refuse_windows(headroom, false, false);
#else
  size_t vm = process_memory();
  if (vm == 0) cr_skip_test("/proc/self/statm unreadable");
  lower_rlimit_as(vm + headroom, &saved_as);
#endif
}

static void os_unlimit(void) {
#ifdef __wasi__
  osmem__wasm_sys_reset();
#elif defined(_WIN32)
  osmem__windows_sys_reset();
#else
  cr_assert_eq(setrlimit(RLIMIT_AS, &saved_as), 0, "setrlimit: %s",
               strerror(errno));
#endif
}

#if !defined(__wasi__) && !defined(_WIN32)
/* Pool node chunks are mapped without MAP_NORESERVE and are >= 64 KiB;
 * reservations use MAP_NORESERVE, and the heap map leaf of a small heap is
 * 4 KiB. */
static void *no_node_chunks(void *addr, size_t len, int prot, int flags, int fd,
                            off_t off) {
  if (!(flags & MAP_NORESERVE) && len >= ((size_t)64 << 10)) {
    count_refusal(len);
    errno = ENOMEM;
    return MAP_FAILED;
  }
  return mmap(addr, len, prot, flags, fd, off);
}

/* The OS refuses every reservation (MAP_NORESERVE), allows bookkeeping. */
static void *no_reservations(void *addr, size_t len, int prot, int flags,
                             int fd, off_t off) {
  if (flags & MAP_NORESERVE) {
    count_refusal(len);
    errno = ENOMEM;
    return MAP_FAILED;
  }
  return mmap(addr, len, prot, flags, fd, off);
}
#endif

/* New pool node chunks cannot be had: natively their mmap fails; on wasm
 * every grow fails, and the bookkeeping room is used up first. */
static void os_refuse_node_chunks(void) {
#ifdef __wasi__
  refuse_grows(SIZE_MAX, 0);
  use_up_bookkeeping_room();
  os_refused = 0;
  os_largest_refused = 0;
#elif defined(_WIN32)
  refuse_windows(SIZE_MAX, false, true);
#else
  osmem__posix_sys.mmap = no_node_chunks;
#endif
}

/* The OS refuses every reservation of megablocks and allows bookkeeping.
 * On wasm, reservations are told from bookkeeping by size: a grow of more
 * than 16 MiB is refused (every get made under it asks for more). */
static void os_refuse_reservations(void) {
#ifdef __wasi__
  refuse_grows(SIZE_MAX, ((size_t)16 << 20) / WASM_PAGE);
#elif defined(_WIN32)
  refuse_windows(SIZE_MAX, true, false);
#else
  osmem__posix_sys.mmap = no_reservations;
#endif
}

static void os_reset(void) {
#ifdef __wasi__
  osmem__wasm_sys_reset();
#elif defined(_WIN32)
  osmem__windows_sys_reset();
#else
  osmem__posix_sys_reset();
#endif
}

/* ------------------------------------------------------------ small calls */

Test(api, init_is_idempotent) {
  for (int i = 0; i < 5; i++) cr_assert_eq(osmem_init(), 0);
  void *p = osmem_get_mblocks(1);
  cr_assert_not_null(p);
  struct osmem_stats s = stats_now();
  cr_assert_eq(osmem_init(), 0);
  assert_stats_same(s, stats_now());
  cr_assert(osmem_is_heap(p), "init after use forgot a live megablock");
}

Test(api, version_matches_macros) {
  char want[32];
  snprintf(want, sizeof want, "%d.%d.%d", OSMEM_VERSION_MAJOR,
           OSMEM_VERSION_MINOR, OSMEM_VERSION_PATCH);
  cr_assert_str_eq(osmem_version(), want);
  cr_assert_eq(OSMEM_VERSION_HEX, (OSMEM_VERSION_MAJOR << 16) |
                                      (OSMEM_VERSION_MINOR << 8) |
                                      OSMEM_VERSION_PATCH);
}

Test(api, mblock_shift_matches_header) {
  cr_assert_eq(osmem_mblock_shift(), (unsigned)OSMEM_MBLOCK_SHIFT);
  cr_assert_eq(MB, (size_t)1 << osmem_mblock_shift());
}

Test(api, backend_is_the_one_built) {
#ifdef __wasi__
  cr_assert_str_eq(osmem_backend(), "wasm");
#elif defined(_WIN32)
  cr_assert_str_eq(osmem_backend(), "windows");
#else
  cr_assert_str_eq(osmem_backend(), "posix");
#endif
}

Test(api, page_size_is_the_os_page) {
  cr_assert_eq(osmem_page_size(), os_page_size());
}

Test(api, physical_memory_is_the_os_figure) {
  uint64_t want = os_physical_memory();
  cr_assert_gt(want, 0);
  cr_assert_eq(osmem_physical_memory(), want);
  cr_assert_eq(osmem_physical_memory(), want, "second call differs");
}

/* ------------------------------------------------------------------- get */

/* Fresh runs of 1, 2, 17 and 1024 (fewer than 1024 where all four would
 * pass the memory budget): aligned, zero-filled, every megablock writable at
 * its first and last byte, and no two runs overlapping. */
Test(api, get_aligned_fresh_zeroed_writable) {
  const size_t sizes[] = {1, 2, 17, mblocks_in_budget(20 + 1024) - 20};
  void *runs[4];
  size_t total = 0;
  for (size_t i = 0; i < 4; i++) {
    size_t n = sizes[i];
    char *p = osmem_get_mblocks(n);
    cr_assert_not_null(p, "get(%zu): %s", n, strerror(errno));
    cr_assert(is_mblock_aligned(p), "get(%zu) = %p not aligned", n, (void *)p);
    runs[i] = p;
    total += n;
    if (n <= 17) { /* whole run reads as zero */
      for (size_t off = 0; off < n * MB; off += sizeof(long))
        cr_assert_eq(*(volatile long *)(p + off), 0, "get(%zu): byte %zu", n, off);
    }
    for (size_t m = 0; m < n; m++) {
      cr_assert_eq(at(p, m * MB), 0);
      cr_assert_eq(at(p, (m + 1) * MB - 1), 0);
      put(p, m * MB, (char)(i + 1));
      put(p, (m + 1) * MB - 1, (char)(i + 1));
    }
    assert_invariants();
  }
  for (size_t i = 0; i < 4; i++) /* nobody overwrote anybody */
    for (size_t m = 0; m < sizes[i]; m++) {
      cr_assert_eq(at(runs[i], m * MB), (char)(i + 1));
      cr_assert_eq(at(runs[i], (m + 1) * MB - 1), (char)(i + 1));
    }
  cr_assert_eq(stats_now().mblocks_in_use, total);
}

Test(api, get_zero_is_einval_without_state_change) {
  struct osmem_stats before = stats_now();
  errno = 0;
  cr_assert_null(osmem_get_mblocks(0));
  cr_assert_eq(errno, EINVAL);
  assert_stats_same(before, stats_now());
}

Test(api, get_overflow_is_enomem_without_os_call) {
  static const size_t ns[] = {SIZE_MAX, (SIZE_MAX >> OSMEM_MBLOCK_SHIFT) + 1,
                              SIZE_MAX / 2};
  void *live = osmem_get_mblocks(1);
  cr_assert_not_null(live);
  struct osmem_stats before = stats_now();
  for (size_t i = 0; i < 3; i++) {
    errno = 0;
    cr_assert_null(osmem_get_mblocks(ns[i]), "get(%zu)", ns[i]);
    cr_assert_eq(errno, ENOMEM, "get(%zu): errno %d", ns[i], errno);
  }
  assert_stats_same(before, stats_now());
  assert_invariants();
}

/* Megablocks in the address space (2^48 bytes on 64-bit, as documented;
 * 2^32 on 32-bit systems and wasm32). */
#if UINTPTR_MAX > 0xffffffffu
#define VA_MBLOCKS ((size_t)1 << (48 - OSMEM_MBLOCK_SHIFT))
#else
#define VA_MBLOCKS ((size_t)1 << (32 - OSMEM_MBLOCK_SHIFT))
#endif

/* Products that fit a size_t but not the address space are refused up
 * front, like an overflow: no OS call, no bookkeeping. On 32-bit (wasm32)
 * every product that fits a size_t fits the address space, so only
 * VA_MBLOCKS + 1 is asked for there (and it overflows a size_t). */
Test(api, get_beyond_address_space_is_enomem_without_os_call) {
  const size_t ns[] = {VA_MBLOCKS + 1, SIZE_MAX >> OSMEM_MBLOCK_SHIFT};
  size_t count = ns[1] > VA_MBLOCKS ? 2 : 1;
  void *live = osmem_get_mblocks(1);
  cr_assert_not_null(live);
  struct osmem_stats before = stats_now();
  for (size_t i = 0; i < count; i++) {
    errno = 0;
    cr_assert_null(osmem_get_mblocks(ns[i]), "get(%zu)", ns[i]);
    cr_assert_eq(errno, ENOMEM, "get(%zu): errno %d", ns[i], errno);
  }
  assert_stats_same(before, stats_now());
  assert_invariants();
}

/* All of the address space, and all of it but one megablock (which fits a
 * size_t on wasm32 too): no OS maps it while we are in it. */
Test(api, get_whole_address_space_is_enomem) {
  static const size_t ns[] = {VA_MBLOCKS, VA_MBLOCKS - 1};
  void *live = osmem_get_mblocks(1);
  cr_assert_not_null(live);
  struct osmem_stats before = stats_now();
  for (size_t i = 0; i < 2; i++) {
    errno = 0;
    cr_assert_null(osmem_get_mblocks(ns[i]), "get(%zu)", ns[i]);
    cr_assert_eq(errno, ENOMEM, "get(%zu): errno %d", ns[i], errno);
    assert_state_same(before, stats_now());
    assert_invariants();
  }
}

/* Sizes that fit a size_t, refused by the OS, which lets the process grow by
 * 48 MiB more and no further: 256 MiB, and half the address space. */
Test(api, get_refused_by_os_is_enomem_and_recovers) {
  void *live = osmem_get_mblocks(1);
  cr_assert_not_null(live);
  os_limit((size_t)48 << 20);
  const size_t ns[] = {((size_t)256 << 20) / MB, VA_MBLOCKS / 2};
  struct osmem_stats before = stats_now();
  for (size_t i = 0; i < 2; i++) {
    errno = 0;
    void *p = osmem_get_mblocks(ns[i]);
    int err = errno;
    cr_assert_null(p, "get(%zu) beat the limit", ns[i]);
    cr_assert_eq(err, ENOMEM, "get(%zu): errno %d", ns[i], err);
    assert_state_same(before, stats_now());
    assert_invariants();
  }
  /* Still works, under the same limit: natively from the current
   * reservation, then from a new one; on wasm each from a new grow. */
  void *a = osmem_get_mblocks(1);
  cr_assert_not_null(a, "get(1) after ENOMEM: %s", strerror(errno));
  void *b = osmem_get_mblocks(20);
  cr_assert_not_null(b, "get(20) after ENOMEM: %s", strerror(errno));
  os_unlimit();
  cr_assert(is_mblock_aligned(a) && is_mblock_aligned(b));
  put(b, 20 * MB - 1, 1);
  cr_assert_eq(stats_now().mblocks_in_use, 22);
  assert_invariants();
}

/* Bookkeeping for the run's free (one pool node per megablock) cannot be
 * had: the get must fail with the state unchanged. It asks for as many
 * megablocks as there are spare nodes, one more than they can cover.
 * Natively the reservation is mapped before the nodes are had, so it must
 * fit: in a 32-bit process, where the first chunk's spares (24 bytes each)
 * cover 2,730 megablocks, all but 256 of them are hidden. */
Test(api, get_bookkeeping_failure_leaves_state_unchanged) {
  void *live = osmem_get_mblocks(1); /* first node chunk: its spares */
  cr_assert_not_null(live);
  const size_t fits = VA_MBLOCKS / 16;
  if (OS_CAN_UNMAP && osmem__pool_spare_nodes(&osmem__g.pool) > fits)
    hide_spares(fits);
  size_t n = osmem__pool_spare_nodes(&osmem__g.pool);
  struct osmem_stats before = stats_now();
  os_refuse_node_chunks();
  errno = 0;
  void *p = osmem_get_mblocks(n);
  int err = errno;
  os_reset();
  cr_assert_null(p, "injection did not trigger");
  cr_assert_eq(err, ENOMEM);
  cr_assert_gt(os_refused, 0, "the OS was not asked for bookkeeping");
  cr_assert_lt(os_largest_refused, n * MB,
               "refused %zu bytes: the megablocks, not their bookkeeping",
               os_largest_refused);
  assert_invariants();
  assert_state_same(before, stats_now());
}

/* A get the OS refuses hands nothing out, so it must not leave bookkeeping
 * for what it did not hand out mapped (committed memory, never given back):
 * natively the process may not grow by 48 bytes per megablock asked for.
 * Wasm sets the pool nodes aside before memory grows (grown memory could not
 * be given back if they then failed), so there the process may keep those
 * nodes (at most 48 bytes per megablock, in 64 KiB chunks) and no more. */
Test(api, refused_huge_get_leaves_no_bookkeeping_mapped) {
  void *live = osmem_get_mblocks(1);
  cr_assert_not_null(live);
  size_t mem0 = process_memory();
  if (mem0 == 0) cr_skip_test("/proc/self/statm unreadable");
  struct osmem_stats before = stats_now();
  size_t n = VA_MBLOCKS / 2; /* 128 TiB on 64-bit: 6 GiB of pool nodes */
  os_refuse_reservations();
  errno = 0;
  void *p = osmem_get_mblocks(n);
  int err = errno;
  os_reset();
  cr_assert_null(p);
  cr_assert_eq(err, ENOMEM);
  cr_assert_gt(os_refused, 0, "no reservation was refused");
  assert_state_same(before, stats_now());
  size_t mem1 = process_memory(); /* may be less: the C library unmaps too */
  size_t grown = mem1 > mem0 ? mem1 - mem0 : 0;
  size_t allowed = OS_CAN_UNMAP ? (size_t)16 << 20
                                : ((n + 2) * 48 / 65536 + 2) * 65536;
  cr_assert_lt(grown, allowed,
               "a refused get(%zu) left %zu KiB more mapped", n, grown >> 10);
  assert_invariants();
}

/* --------------------------------------------------------------- is_heap */

static int a_static_variable;

Test(api, is_heap_true_inside_live_run) {
  char *p = osmem_get_mblocks(3);
  cr_assert_not_null(p);
  cr_assert(osmem_is_heap(p));
  cr_assert(osmem_is_heap(p + MB + 12345));
  cr_assert(osmem_is_heap(p + 2 * MB));
  cr_assert(osmem_is_heap(p + 3 * MB - 1));
}

Test(api, is_heap_false_after_free) {
  char *p = osmem_get_mblocks(3);
  cr_assert_not_null(p);
  cr_assert_eq(osmem_free_mblocks(p, 3), 0);
  cr_assert(!osmem_is_heap(p));
  cr_assert(!osmem_is_heap(p + MB + 12345));
  cr_assert(!osmem_is_heap(p + 3 * MB - 1));
  assert_invariants();
}

Test(api, is_heap_false_for_foreign_pointers) {
  char *p = osmem_get_mblocks(2); /* a live heap, so the map has leaves */
  cr_assert_not_null(p);
  int on_stack = 0;
  void *heap = malloc(64);
  cr_assert_not_null(heap);
  void *foreign = foreign_region(1);
  cr_assert(!osmem_is_heap(NULL));
  cr_assert(!osmem_is_heap(&on_stack));
  cr_assert(!osmem_is_heap(&a_static_variable));
  cr_assert(!osmem_is_heap(heap));
  cr_assert(!osmem_is_heap(foreign));
  cr_assert(!osmem_is_heap((char *)foreign + MB - 1));
  cr_assert(!osmem_is_heap((void *)UINTPTR_MAX));
  /* A quarter of the way up: 2^62 on 64-bit, 1 GiB on wasm32, far above
   * this test's memory. */
  cr_assert(!osmem_is_heap((void *)(UINTPTR_MAX / 4 + 1)));
  /* Just past the run, and just before: never handed out in this process. */
  cr_assert(!osmem_is_heap(p + 2 * MB));
  cr_assert(!osmem_is_heap(addr_at(p, -1)));
  cr_assert(osmem_is_heap(p + 2 * MB - 1));
  free(heap);
  foreign_free(foreign);
}

/* ------------------------------------------------------------------ free */

/* A bad free: EINVAL, errno untouched, statistics and heap map unchanged. */
static void assert_bad_free(char *live, size_t live_n, void *p, size_t n) {
  struct osmem_stats before = stats_now();
  errno = 4242;
  int r = osmem_free_mblocks(p, n);
  cr_assert_eq(r, EINVAL, "free(%p, %zu) = %d", p, n, r);
  cr_assert_eq(errno, 4242, "free(%p, %zu) touched errno", p, n);
  assert_stats_same(before, stats_now());
  for (size_t m = 0; m < live_n; m++)
    cr_assert(osmem_is_heap(live + m * MB), "free(%p, %zu) freed %p", p, n,
              (void *)(live + m * MB));
  assert_invariants();
}

Test(api, bad_free_n_zero) {
  char *p = osmem_get_mblocks(2);
  cr_assert_not_null(p);
  assert_bad_free(p, 2, p, 0);
}

Test(api, bad_free_null) {
  char *p = osmem_get_mblocks(2);
  cr_assert_not_null(p);
  assert_bad_free(p, 2, NULL, 1);
  assert_bad_free(p, 2, NULL, 2);
}

Test(api, bad_free_misaligned) {
  char *p = osmem_get_mblocks(2);
  cr_assert_not_null(p);
  assert_bad_free(p, 2, p + 1, 1);
  /* A page in (with 64 KiB megablocks on wasm a page is a megablock, and
   * p + page the run's aligned second one). */
  if (osmem_page_size() < MB) assert_bad_free(p, 2, p + osmem_page_size(), 1);
  assert_bad_free(p, 2, p + MB / 2, 1);
}

Test(api, bad_free_foreign) {
  char *p = osmem_get_mblocks(2);
  cr_assert_not_null(p);
  void *foreign = foreign_region(2);
  assert_bad_free(p, 2, foreign, 1);
  assert_bad_free(p, 2, foreign, 2);
  foreign_free(foreign);
}

Test(api, bad_free_partial_overlap) {
  char *p = osmem_get_mblocks(2);
  cr_assert_not_null(p);
  cr_assert(!osmem_is_heap(p + 2 * MB) && !osmem_is_heap(addr_at(p, -(intptr_t)MB)),
            "neighbours of a fresh run are handed out");
  assert_bad_free(p, 2, p, 3);          /* run of 2 freed as 3 */
  void *below = addr_at(p, -(intptr_t)MB);
  assert_bad_free(p, 2, below, 2);      /* starts before the run */
  assert_bad_free(p, 2, below, 3);      /* covers it and more */
  assert_bad_free(p, 2, p + MB, 2);     /* last megablock and beyond */
}

Test(api, bad_free_double) {
  char *p = osmem_get_mblocks(2);
  cr_assert_not_null(p);
  char *q = osmem_get_mblocks(1);
  cr_assert_not_null(q);
  cr_assert_eq(osmem_free_mblocks(q, 1), 0);
  assert_bad_free(p, 2, q, 1);
  cr_assert_eq(osmem_free_mblocks(p + MB, 1), 0);
  assert_bad_free(p, 1, p + MB, 1);
  assert_bad_free(p, 1, p, 2);
}

Test(api, bad_free_end_overflows) {
  char *p = osmem_get_mblocks(2);
  cr_assert_not_null(p);
  assert_bad_free(p, 2, p, SIZE_MAX);
  assert_bad_free(p, 2, p, SIZE_MAX >> OSMEM_MBLOCK_SHIFT);
  size_t to_top = (UINTPTR_MAX >> OSMEM_MBLOCK_SHIFT) - ((uintptr_t)p >> OSMEM_MBLOCK_SHIFT);
  assert_bad_free(p, 2, p, to_top + 1); /* exactly wraps to 0 */
  assert_bad_free(p, 2, p, to_top);     /* ends at the top of memory */
  /* An aligned address near the top of the address space. */
  assert_bad_free(p, 2, (void *)(UINTPTR_MAX & ~(uintptr_t)OSMEM_MBLOCK_MASK), 2);
}

Test(api, free_middle_of_run) {
  pool_direct();
  char *p = osmem_get_mblocks(3);
  cr_assert_not_null(p);
  cr_assert_eq(osmem_free_mblocks(p + MB, 1), 0);
  cr_assert(osmem_is_heap(p) && osmem_is_heap(p + MB - 1));
  cr_assert(!osmem_is_heap(p + MB) && !osmem_is_heap(p + 2 * MB - 1));
  cr_assert(osmem_is_heap(p + 2 * MB) && osmem_is_heap(p + 3 * MB - 1));
  struct osmem_stats s = stats_now();
  cr_assert_eq(s.mblocks_in_use, 2);
  cr_assert_eq(s.mblocks_pooled, 1);
  put(p, 0, 1); /* the rest stays usable */
  put(p, 3 * MB - 1, 1);
  assert_invariants();
  cr_assert_eq(osmem_free_mblocks(p, 1), 0);
  cr_assert_eq(osmem_free_mblocks(p + 2 * MB, 1), 0);
  s = stats_now();
  cr_assert_eq(s.mblocks_in_use, 0);
  cr_assert_eq(s.mblocks_pooled, 3);
  cr_assert_eq(s.pool_ranges, 1, "three adjacent frees not coalesced");
  assert_invariants();
}

/* ----------------------------------------------------------------- stats */

Test(api, stats_follow_get_free_release) {
  pool_direct();
  struct osmem_stats s0 = stats_now();
  cr_assert_eq(s0.mblocks_in_use, 0);
  cr_assert_eq(s0.bytes_mapped, 0);

  char *p = osmem_get_mblocks(3);
  cr_assert_not_null(p);
  struct osmem_stats s1 = stats_now();
  cr_assert_eq(s1.mblocks_in_use, 3);
  cr_assert_eq(s1.mblocks_peak, 3);
  cr_assert_eq(s1.mblocks_pooled, 0);
  cr_assert_eq(s1.reservations, 1);
  cr_assert_geq(s1.bytes_mapped, 3 * MB);
  cr_assert_eq(s1.bytes_mapped - s1.bytes_reserved_unused, 3 * MB);
  cr_assert_gt(s1.os_maps, s0.os_maps);

  cr_assert_eq(osmem_free_mblocks(p, 1), 0);
  struct osmem_stats s2 = stats_now();
  cr_assert_eq(s2.mblocks_in_use, 2);
  cr_assert_eq(s2.mblocks_peak, 3);
  cr_assert_eq(s2.mblocks_pooled, 1);
  cr_assert_eq(s2.mblocks_pooled_resident, 1); /* under the threshold */
  cr_assert_eq(s2.pool_ranges, 1);
  cr_assert_eq(s2.bytes_mapped, s1.bytes_mapped);
  cr_assert_eq(s2.os_maps, s1.os_maps);
  cr_assert_eq(s2.os_madvise, s1.os_madvise);

  char *q = osmem_get_mblocks(1); /* a pool hit: no system call */
  cr_assert_eq(q, p);
  struct osmem_stats s3 = stats_now();
  cr_assert_eq(s3.mblocks_in_use, 3);
  cr_assert_eq(s3.mblocks_pooled, 0);
  cr_assert_eq(s3.os_maps, s2.os_maps);
  cr_assert_eq(s3.bytes_mapped, s2.bytes_mapped);

  cr_assert_eq(osmem_free_mblocks(p, 3), 0);
  struct osmem_stats s4 = stats_now();
  cr_assert_eq(s4.mblocks_in_use, 0);
  cr_assert_eq(s4.mblocks_peak, 3);
  cr_assert_eq(s4.mblocks_pooled, 3);
  assert_invariants();

  size_t released = osmem_release_free_memory();
  struct osmem_stats s5 = stats_now();
  if (OS_CAN_UNMAP) {
    /* The pooled three, and the reservation's unused tail. */
    cr_assert_eq(released, 3 * MB + s4.bytes_reserved_unused);
    cr_assert_eq(s5.mblocks_pooled, 0);
    cr_assert_eq(s5.pool_ranges, 0);
    cr_assert_eq(s5.bytes_reserved_unused, 0);
    cr_assert_eq(s5.bytes_mapped, s4.bytes_mapped - released);
    cr_assert_eq(s5.os_unmaps,
                 s4.os_unmaps + 1 + (s4.bytes_reserved_unused ? 1 : 0));
    cr_assert_eq(s5.mblocks_peak, 3);
  } else {
    /* Wasm memory never shrinks: nothing is released, no call is made, the
     * pool is kept whole and serves the next get without growing memory. */
    cr_assert_eq(released, 0);
    assert_stats_same(s4, s5);
    cr_assert_eq(osmem_get_mblocks(3), p, "the kept pool was not reused");
    struct osmem_stats s6 = stats_now();
    cr_assert_eq(s6.os_maps, s5.os_maps);
    cr_assert_eq(s6.mblocks_pooled, 0);
    cr_assert_eq(s6.pool_ranges, 0);
    cr_assert_eq(s6.bytes_mapped, s5.bytes_mapped);
    cr_assert_eq(osmem_free_mblocks(p, 3), 0);
  }
  cr_assert(!osmem_is_heap(p));
  assert_invariants();

  if (OS_CAN_UNMAP) {
    cr_assert_eq(osmem_release_free_memory(), 0, "empty pool released bytes");
    cr_assert_eq(stats_now().os_unmaps, s5.os_unmaps);
  } else {
    cr_assert_eq(osmem_release_free_memory(), 0, "a kept pool released bytes");
    cr_assert_eq(stats_now().os_unmaps, 0);
  }
}

Test(api, stats_null_is_noop) {
  void *p = osmem_get_mblocks(2);
  cr_assert_not_null(p);
  struct osmem_stats before = stats_now();
  osmem_stats(NULL);
  assert_stats_same(before, stats_now());
}

Test(api, stats_counters_are_consistent_after_mixed_use) {
  pool_direct();
  char *a = osmem_get_mblocks(5), *b = osmem_get_mblocks(7);
  cr_assert(a && b);
  cr_assert_eq(osmem_free_mblocks(a + MB, 2), 0);
  cr_assert_eq(osmem_free_mblocks(b, 7), 0);
  struct osmem_stats s = stats_now();
  cr_assert_eq(s.mblocks_in_use, 3);
  cr_assert_eq(s.mblocks_peak, 12);
  cr_assert_eq(s.mblocks_pooled, 9);
  cr_assert_eq(s.bytes_mapped - s.bytes_reserved_unused,
               (s.mblocks_in_use + s.mblocks_pooled) * MB);
  for (size_t i = 0; i < sizeof s.reserved_for_abi / sizeof s.reserved_for_abi[0];
       i++)
    cr_assert_eq(s.reserved_for_abi[i], 0);
  assert_invariants();
}

/* Many single-megablock gets (1,000, fewer on wasm if that would pass the
 * memory budget), and the OS calls they cost under each backend's reserve
 * policy. */
Test(api, single_gets_cost_what_the_reserve_policy_says) {
  const size_t n = mblocks_in_budget(1000);
  struct osmem_stats s0 = stats_now();
  size_t mem0 = process_memory();
  char *prev = NULL;
  for (size_t i = 0; i < n; i++) {
    char *p = osmem_get_mblocks(1);
    cr_assert_not_null(p, "get %zu: %s", i, strerror(errno));
    cr_assert(is_mblock_aligned(p));
    cr_assert_neq(p, prev);
    prev = p;
  }
  struct osmem_stats s = stats_now();
  cr_assert_eq(s.mblocks_in_use, n);
  uint64_t maps = s.os_maps - s0.os_maps;
  if (OS_CHEAP_RESERVE) {
    /* Reservations grow geometrically: a few mmaps for 1,000 gets. */
    cr_assert_leq(maps, 20, "os_maps = %llu", (unsigned long long)maps);
    cr_assert_leq(s.reservations, 12, "reservations = %llu",
                  (unsigned long long)s.reservations);
  } else {
    /* Wasm: memory grown ahead would be committed for good, so each fresh
     * get grows memory by exactly its megablock: n reservations, nothing
     * reserved unused, one memory.grow each plus at most two for the
     * bookkeeping (the first pool node chunk and the heap map leaf), and
     * memory n megablocks bigger plus at most the first one's alignment gap
     * and that bookkeeping. */
    cr_assert_eq(s.reservations - s0.reservations, n, "reservations = %llu",
                 (unsigned long long)s.reservations);
    cr_assert_eq(s.bytes_reserved_unused, 0);
    cr_assert_eq(s.bytes_mapped - s0.bytes_mapped, n * MB);
    cr_assert_geq(maps, n, "os_maps = %llu", (unsigned long long)maps);
    cr_assert_leq(maps, n + 2, "os_maps = %llu", (unsigned long long)maps);
    size_t grown = process_memory() - mem0;
    cr_assert_geq(grown, n * MB);
    cr_assert_leq(grown, (n + 1) * MB + ((size_t)128 << 10),
                  "memory grew by %zu KiB for %zu KiB of megablocks",
                  grown >> 10, (n * MB) >> 10);
  }
  assert_invariants();
}

/* -------------------------------------------------------------- decommit */

Test(api, decommit_threshold_returns_previous) {
  cr_assert_eq(osmem_set_decommit_threshold(12345), (size_t)64 << 20);
  cr_assert_eq(osmem_set_decommit_threshold(0), 12345);
  cr_assert_eq(osmem_set_decommit_threshold(SIZE_MAX), 0);
  cr_assert_eq(osmem_set_decommit_threshold((size_t)64 << 20), SIZE_MAX);
}

/* Natively pooled memory is decommitted as the threshold says; wasm has no
 * decommit: the pool stays resident and no call is made (the threshold is
 * still kept and returned). */
Test(api, lowering_threshold_decommits_pool) {
  decommit_at_once();
  pool_direct();
  char *p = osmem_get_mblocks(4);
  cr_assert_not_null(p);
  cr_assert_eq(osmem_free_mblocks(p, 1), 0);
  cr_assert_eq(osmem_free_mblocks(p + 2 * MB, 1), 0);
  struct osmem_stats s0 = stats_now();
  cr_assert_eq(s0.mblocks_pooled_resident, 2);
  cr_assert_eq(osmem_set_decommit_threshold(0), (size_t)64 << 20);
  struct osmem_stats s1 = stats_now();
  cr_assert_eq(s1.mblocks_pooled, 2);
  if (OS_CAN_DECOMMIT) {
    cr_assert_eq(s1.mblocks_pooled_resident, 0);
    cr_assert_geq(s1.os_madvise, s0.os_madvise + 2);
  } else {
    cr_assert_eq(s1.mblocks_pooled_resident, 2);
    cr_assert_eq(s1.os_madvise, 0);
  }
  assert_invariants();
  /* With threshold 0 every free decommits at once. */
  cr_assert_eq(osmem_free_mblocks(p + MB, 1), 0);
  struct osmem_stats s2 = stats_now();
  cr_assert_eq(s2.mblocks_pooled, 3);
  if (OS_CAN_DECOMMIT) {
    cr_assert_eq(s2.mblocks_pooled_resident, 0);
    cr_assert_gt(s2.os_madvise, s1.os_madvise);
  } else {
    cr_assert_eq(s2.mblocks_pooled_resident, 3);
    cr_assert_eq(s2.os_madvise, 0);
  }
  assert_invariants();
}

/* ------------------------------------------------------------------- oom */

static int oom_calls, oom_err;
static size_t oom_n;

static void count_oom(size_t n, int err) {
  oom_calls++;
  oom_n = n;
  oom_err = err;
}

static void other_oom(size_t n, int err) { (void)n, (void)err; }

Test(api, oom_handler_called_once_on_enomem) {
  cr_assert_null(osmem_set_oom_handler(count_oom));
  cr_assert_null(osmem_get_mblocks(SIZE_MAX));
  cr_assert_eq(oom_calls, 1);
  cr_assert_eq(oom_n, SIZE_MAX);
  cr_assert_eq(oom_err, ENOMEM);
  size_t big = (SIZE_MAX >> OSMEM_MBLOCK_SHIFT) + 1;
  errno = 0;
  cr_assert_null(osmem_get_mblocks(big));
  cr_assert_eq(errno, ENOMEM);
  cr_assert_eq(oom_calls, 2);
  cr_assert_eq(oom_n, big);
}

Test(api, oom_handler_not_called_on_einval) {
  osmem_set_oom_handler(count_oom);
  cr_assert_null(osmem_get_mblocks(0));
  cr_assert_eq(errno, EINVAL);
  cr_assert_eq(oom_calls, 0);
  void *p = osmem_get_mblocks(1);
  cr_assert_not_null(p);
  cr_assert_eq(osmem_free_mblocks(p, 2), EINVAL);
  cr_assert_eq(oom_calls, 0);
}

Test(api, oom_handler_set_returns_previous_and_null_removes) {
  cr_assert_null(osmem_set_oom_handler(count_oom));
  cr_assert_eq(osmem_set_oom_handler(other_oom), count_oom);
  cr_assert_eq(osmem_set_oom_handler(NULL), other_oom);
  cr_assert_null(osmem_set_oom_handler(NULL));
  errno = 0;
  cr_assert_null(osmem_get_mblocks(SIZE_MAX));
  cr_assert_eq(errno, ENOMEM);
  cr_assert_eq(oom_calls, 0, "removed handler still called");
}

/* The handler runs without the pool lock: it may call the library. If the
 * lock were held, osmem_stats would deadlock; natively alarm turns that into
 * a fail. On wasm32 SIZE_MAX >> shift megablocks fit the address space on
 * paper: the get gets past the up-front checks and fails later. */
static uint64_t oom_seen_in_use;

static void oom_calls_library(size_t n, int err) {
  count_oom(n, err);
  oom_seen_in_use = stats_now().mblocks_in_use;
  osmem_release_free_memory();
  errno = EBUSY; /* the get must still report ENOMEM */
}

Test(api, oom_handler_may_call_library) {
  void *p = osmem_get_mblocks(2);
  cr_assert_not_null(p);
  osmem_set_oom_handler(oom_calls_library);
#if !defined(__wasi__) && !defined(_WIN32) /* wasm and Windows have no
                                              alarm: a deadlock would hang */
  alarm(20);
#endif
  errno = 0;
  cr_assert_null(osmem_get_mblocks(SIZE_MAX >> OSMEM_MBLOCK_SHIFT));
  cr_assert_eq(errno, ENOMEM);
  cr_assert_eq(oom_calls, 1);
  cr_assert_eq(oom_seen_in_use, 2);
#if !defined(__wasi__) && !defined(_WIN32) /* no alarm (see above) */
  alarm(0);
#endif
  assert_invariants();
}

/*
 * Reservations (osmem_reserve, commit, decommit, unreserve), set_executable
 * and teardown. Natively the checks read the kernel's own view
 * (/proc/self/maps, mincore) and count system calls through the POSIX
 * backend's table; on Windows the same checks read VirtualQuery and
 * QueryWorkingSetEx and go through the Windows backend's table; on wasm,
 * where there are no reservations, the calls must say ENOSYS and teardown
 * must hand every megablock back to the pool.
 */
#define _GNU_SOURCE /* mincore, pthread_barrier_t, MAP_FIXED_NOREPLACE */

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define MB OSMEM_MBLOCK_SIZE
#define GB ((size_t)1 << 30)

#ifdef __wasi__

Test(reservations, are_enosys_on_wasm) {
  size_t got = 1;
  errno = 0;
  cr_assert_null(osmem_reserve(16 * MB, 0, NULL, &got));
  cr_assert_eq(errno, ENOSYS);
  cr_assert_eq(got, 1, "got untouched on failure");
  char *p = osmem_get_mblocks(1);
  cr_assert_not_null(p);
  cr_assert_eq(osmem_commit(p, MB), ENOSYS);
  cr_assert_eq(osmem_decommit(p, MB), ENOSYS);
  cr_assert_eq(osmem_set_executable(p, MB, true), ENOSYS);
  cr_assert_eq(osmem_unreserve(p), EINVAL);
  cr_assert_eq(stats_now().user_reservations, 0);
}

Test(reservations, teardown_on_wasm_pools_every_megablock) {
  char *a = osmem_get_mblocks(2), *b = osmem_get_mblocks(1);
  cr_assert(a && b);
  cr_assert_eq(osmem_free_mblocks(a, 1), 0);
  struct osmem_stats s0 = stats_now();
  cr_assert_eq(s0.mblocks_in_use, 2);
  cr_assert_eq(osmem_teardown(), 0);
  struct osmem_stats s1 = stats_now();
  cr_assert_eq(s1.mblocks_in_use, 0);
  cr_assert_eq(s1.mblocks_cached, 0);
  cr_assert_eq(s1.mblocks_pooled, s0.mblocks_pooled + s0.mblocks_cached + 2);
  cr_assert(!osmem_is_heap(a + MB) && !osmem_is_heap(b));
  cr_assert_eq(osmem_free_mblocks(b, 1), EINVAL, "taken back already");
  size_t grown = s1.bytes_mapped;
  cr_assert_not_null(osmem_get_mblocks(3), "reused, not grown");
  cr_assert_eq(stats_now().bytes_mapped, grown);
  assert_invariants();
}

#else /* POSIX and Windows */

#ifdef _WIN32
#include <windows.h>
#include <psapi.h>

#include "../osmem/windows/sys.h"
#else
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "../osmem/posix/sys.h"
#endif

/* ---------------------------------------------------- the kernel's view */

#ifdef _WIN32
static size_t page_size(void) {
  SYSTEM_INFO si;
  GetSystemInfo(&si);
  return si.dwPageSize;
}

/* The protection of the region holding p, as VirtualQuery shows it, in
 * /proc/self/maps' words: "---p" reserved, "rw-p" or "rwxp" committed, ""
 * free. */
static const char *protection_at(const void *p) {
  MEMORY_BASIC_INFORMATION mbi;
  cr_assert_neq(VirtualQuery(p, &mbi, sizeof mbi), 0);
  if (mbi.State == MEM_FREE) return "";
  if (mbi.State == MEM_RESERVE) return "---p";
  switch (mbi.Protect) {
  case PAGE_NOACCESS: return "---p";
  case PAGE_READWRITE: return "rw-p";
  case PAGE_EXECUTE_READWRITE: return "rwxp";
  default: return "?";
  }
}

/* Whether any byte of [p, p + size) is in an allocation (not MEM_FREE). */
static bool any_mapped(uintptr_t p, size_t size) {
  MEMORY_BASIC_INFORMATION mbi;
  for (uintptr_t at = p; at < p + size;) {
    if (VirtualQuery((void *)at, &mbi, sizeof mbi) == 0) return false;
    if (mbi.State != MEM_FREE) return true;
    at = (uintptr_t)mbi.BaseAddress + mbi.RegionSize;
  }
  return false;
}

/* QueryWorkingSetEx answers for every address, reserved ones included. */
static bool mincore_sees_inaccessible(void) { return true; }

/* Resident pages of [p, p + size): those in the working set. */
static size_t resident_pages(void *p, size_t size) {
  size_t page = page_size(), n = size / page, count = 0;
  PSAPI_WORKING_SET_EX_INFORMATION *v = calloc(n, sizeof *v);
  cr_assert_not_null(v);
  for (size_t i = 0; i < n; i++) v[i].VirtualAddress = (char *)p + i * page;
  cr_assert(QueryWorkingSetEx(GetCurrentProcess(), v, (DWORD)(n * sizeof *v)),
            "QueryWorkingSetEx: error %lu", GetLastError());
  for (size_t i = 0; i < n; i++) count += v[i].VirtualAttributes.Valid;
  free(v);
  return count;
}
#else
static size_t page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }

/* The protection of the mapping holding p, as /proc/self/maps shows it
 * ("rw-p", "---p"), or "" if p is not mapped. */
static const char *protection_at(const void *p) {
  static char prot[8];
  prot[0] = '\0';
  FILE *f = fopen("/proc/self/maps", "r");
  cr_assert_not_null(f);
  char line[512];
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    char perms[8];
    if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3) continue;
    if ((uintptr_t)p >= lo && (uintptr_t)p < hi) {
      snprintf(prot, sizeof prot, "%s", perms);
      break;
    }
  }
  fclose(f);
  return prot;
}

/* Whether any byte of [p, p + size) is mapped. */
static bool any_mapped(uintptr_t p, size_t size) {
  FILE *f = fopen("/proc/self/maps", "r");
  cr_assert_not_null(f);
  char line[512];
  bool hit = false;
  while (!hit && fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx", &lo, &hi) == 2)
      hit = lo < p + size && p < hi;
  }
  fclose(f);
  return hit;
}

/* Whether mincore answers for inaccessible (PROT_NONE) pages, as Linux
 * does. qemu-user refuses them with ENOMEM: it lets a guest's mincore see
 * only memory the guest may read. */
static bool mincore_sees_inaccessible(void) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  unsigned char v;
  void *p = mmap(NULL, page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  cr_assert_neq(p, MAP_FAILED);
  bool sees = mincore(p, page, &v) == 0;
  munmap(p, page);
  return sees;
}

/* Resident pages of [p, p + size). */
static size_t resident_pages(void *p, size_t size) {
  size_t page = page_size(), n = size / page, count = 0;
  unsigned char *vec = malloc(n);
  cr_assert_not_null(vec);
  cr_assert_eq(mincore(p, size, vec), 0);
  for (size_t i = 0; i < n; i++) count += vec[i] & 1;
  free(vec);
  return count;
}
#endif

/* ----------------------------------------------------------- the basics */

Test(reservations, reserve_commit_decommit_unreserve) {
  size_t got = 0;
  char *r = osmem_reserve(64 * MB, 0, NULL, &got);
  cr_assert_not_null(r);
  cr_assert(is_mblock_aligned(r));
  cr_assert_eq(got, 64 * MB);
  cr_assert_str_eq(protection_at(r), "---p", "address space only");
  struct osmem_stats s = stats_now();
  cr_assert_eq(s.user_reservations, 1);
  cr_assert_eq(s.bytes_user_reserved, 64 * MB);
  cr_assert_geq(s.bytes_mapped, 64 * MB);

  cr_assert_eq(osmem_commit(r + 8 * MB, 2 * MB), 0);
  cr_assert_str_eq(protection_at(r + 8 * MB), "rw-p");
  cr_assert_str_eq(protection_at(r + 10 * MB), "---p", "only what was asked");
  memset(r + 8 * MB, 0xab, 2 * MB);
  cr_assert_eq(stats_now().bytes_committed, 2 * MB);
  cr_assert_eq(stats_now().os_mprotect, s.os_mprotect + 1);
  cr_assert(!osmem_is_heap(r + 8 * MB), "reservations are not megablocks");
  cr_assert_eq(osmem_free_mblocks(r + 8 * MB, 1), EINVAL);
  cr_assert_eq(osmem_bind_to_node(r + 8 * MB, 2 * MB, 0), 0);

  uint64_t madv = stats_now().os_madvise;
  cr_assert_eq(osmem_decommit(r + 8 * MB, 2 * MB), 0);
  cr_assert_eq(stats_now().os_madvise, madv + 1);
  cr_assert_geq(stats_now().bytes_decommitted, 2 * MB);
  cr_assert_eq(osmem_commit(r + 8 * MB, 2 * MB), 0, "recommit is allowed");
  r[8 * MB] = 1; /* usable again */

  cr_assert_eq(osmem_unreserve(r), 0);
  cr_assert_str_eq(protection_at(r), "");
  s = stats_now();
  cr_assert_eq(s.user_reservations, 0);
  cr_assert_eq(s.bytes_user_reserved, 0);
  cr_assert_eq(osmem_unreserve(r), EINVAL, "twice");
  assert_invariants();
}

Test(reservations, a_reservation_holds_no_memory) {
  if (!mincore_sees_inaccessible())
    cr_skip_test("mincore refuses inaccessible pages here (qemu-user): "
                 "residency cannot be read");
  char *r = osmem_reserve(64 * MB, 0, NULL, NULL);
  cr_assert_not_null(r);
  cr_assert_eq(resident_pages(r, 64 * MB), 0);
}

Test(reservations, eager_decommit_empties_the_pages_now) {
  cr_assert_eq(osmem_set_decommit_mode(OSMEM_DECOMMIT_EAGER), 0);
  char *r = osmem_reserve(8 * MB, 0, NULL, NULL);
  cr_assert_not_null(r);
  cr_assert_eq(osmem_commit(r, 4 * MB), 0);
  memset(r, 1, 4 * MB);
  cr_assert_eq(resident_pages(r, 4 * MB), 4 * MB / page_size());
  cr_assert_eq(osmem_decommit(r, 4 * MB), 0);
  cr_assert_eq(resident_pages(r, 4 * MB), 0);
#ifdef _WIN32
  /* DiscardVirtualMemory and MEM_RESET leave the contents undefined; the
   * pages stay committed and usable. */
  r[0] = 2;
  cr_assert_eq(r[0], 2);
#else
  cr_assert_eq(r[0], 0, "DONTNEED pages come back zeroed");
#endif
}

Test(reservations, bad_arguments_are_einval_and_change_nothing) {
  char *r = osmem_reserve(4 * MB, 0, NULL, NULL);
  cr_assert_not_null(r);
  char *m = osmem_get_mblocks(1);
  cr_assert_not_null(m);
  struct osmem_stats s = stats_now();
  errno = 0;
  cr_assert_null(osmem_reserve(0, 0, NULL, NULL));
  cr_assert_eq(errno, EINVAL);
  errno = 0;
  cr_assert_null(osmem_reserve(MB, 2 * MB, NULL, NULL));
  cr_assert_eq(errno, EINVAL, "min_len > len");
  cr_assert_eq(osmem_commit(NULL, MB), EINVAL);
  cr_assert_eq(osmem_commit(r + 1, MB), EINVAL, "unaligned");
  cr_assert_eq(osmem_commit(r, 0), EINVAL);
  cr_assert_eq(osmem_commit(r + 3 * MB, 2 * MB), EINVAL, "past the end");
  cr_assert_eq(osmem_commit(r - MB, 2 * MB), EINVAL, "before the start");
  cr_assert_eq(osmem_commit(m, MB), EINVAL, "a megablock, not a reservation");
  cr_assert_eq(osmem_commit(r, SIZE_MAX), EINVAL, "wraps");
  cr_assert_eq(osmem_decommit(m, MB), EINVAL);
  cr_assert_eq(osmem_decommit(r + 4 * MB, MB), EINVAL);
  cr_assert_eq(osmem_unreserve(r + MB), EINVAL, "not the base");
  cr_assert_eq(osmem_unreserve(m), EINVAL);
  cr_assert_eq(osmem_unreserve(NULL), EINVAL);
  struct osmem_stats t = stats_now();
  cr_assert_eq(t.os_mprotect, s.os_mprotect, "no call for a bad argument");
  cr_assert_eq(t.os_madvise, s.os_madvise);
  cr_assert_eq(t.os_unmaps, s.os_unmaps);
  cr_assert_eq(t.user_reservations, 1);
  cr_assert_str_eq(protection_at(r), "---p");
}

Test(reservations, hint_is_used_when_free_and_missed_when_taken) {
  char *first = osmem_reserve(64 * MB, 0, NULL, NULL);
  cr_assert_not_null(first);
  cr_assert_eq(osmem_unreserve(first), 0);
  /* The range is free again: asked for inside it, it is had there. */
  char *again = osmem_reserve(32 * MB, 0, first + 1, NULL); /* rounded up */
  cr_assert_eq(again, first + MB);
  /* Taken: the reservation lands elsewhere, aligned, and both stand. */
  char *other = osmem_reserve(16 * MB, 0, again, NULL);
  cr_assert_not_null(other);
  cr_assert_neq(other, again);
  cr_assert(is_mblock_aligned(other));
  cr_assert(other + 16 * MB <= again || other >= again + 32 * MB);
  cr_assert_str_eq(protection_at(again), "---p");
  cr_assert_eq(stats_now().user_reservations, 2);
}

Test(reservations, executable_toggles_the_protection) {
  char *r = osmem_reserve(2 * MB, 0, NULL, NULL);
  cr_assert_not_null(r);
  cr_assert_eq(osmem_commit(r, MB), 0);
  cr_assert_eq(osmem_set_executable(r, 4096, true), 0);
  cr_assert_str_eq(protection_at(r), "rwxp");
  cr_assert_eq(osmem_set_executable(r, 4096, false), 0);
  cr_assert_str_eq(protection_at(r), "rw-p");
  cr_assert_eq(osmem_set_executable(r + 1, 4096, true), EINVAL);
  cr_assert_eq(osmem_set_executable(r, 0, true), EINVAL);
  cr_assert_eq(osmem_unreserve(r), 0);
  cr_assert_eq(osmem_set_executable(r, 4096, true), EFAULT, "unmapped");
}

/* ------------------------------------------------- refusals, bounded */

static size_t refuse_above;  /* mmap refuses larger requests */
static bool ignore_hints;    /* mmap places everything elsewhere */
static unsigned mmap_calls;

#ifdef _WIN32
/* Windows: VirtualAlloc and VirtualAlloc2 are the mmap. VirtualAlloc at an
 * address lands there or fails; ignoring hints, it lands 64 KiB (one
 * allocation granule) past it, which the backend must notice and undo.
 * Commits (MEM_COMMIT alone) are not reservations: not counted. */
static LPVOID WINAPI picky_alloc(LPVOID at, SIZE_T len, DWORD type,
                                 DWORD prot) {
  if (!(type & MEM_RESERVE)) return VirtualAlloc(at, len, type, prot);
  mmap_calls++;
  if (len > refuse_above) {
    SetLastError(ERROR_NOT_ENOUGH_MEMORY);
    return NULL;
  }
  if (ignore_hints && at) at = (char *)at + 65536;
  return VirtualAlloc(at, len, type, prot);
}

static osmem__virtual_alloc2_fn real_alloc2;
static PVOID WINAPI picky_alloc2(HANDLE h, PVOID at, SIZE_T len, ULONG type,
                                 ULONG prot, MEM_EXTENDED_PARAMETER *ext,
                                 ULONG n) {
  mmap_calls++;
  if (len > refuse_above) {
    SetLastError(ERROR_NOT_ENOUGH_MEMORY);
    return NULL;
  }
  return real_alloc2(h, at, len, type, prot, ext, n);
}

static void picky_install(void) {
  osmem__windows_sys_reset();
  real_alloc2 = osmem__windows_sys.VirtualAlloc2;
  osmem__windows_sys.VirtualAlloc = picky_alloc;
  if (real_alloc2) osmem__windows_sys.VirtualAlloc2 = picky_alloc2;
}

static void os_reset(void) { osmem__windows_sys_reset(); }
#else
static void *picky_mmap(void *addr, size_t len, int prot, int flags, int fd,
                        off_t off) {
  mmap_calls++;
  if (len > refuse_above) {
    errno = ENOMEM;
    return MAP_FAILED;
  }
  if (ignore_hints) {
#ifdef MAP_FIXED_NOREPLACE
    flags &= ~MAP_FIXED_NOREPLACE;
#endif
    /* Somewhere the caller did not ask for: a page past the hint. */
    addr = addr ? (char *)addr + 4096 * 16 : NULL;
  }
  return mmap(addr, len, prot, flags, fd, off);
}

static void picky_install(void) { osmem__posix_sys.mmap = picky_mmap; }

static void os_reset(void) { osmem__posix_sys_reset(); }
#endif

Test(reservations, refusal_halves_down_to_min_and_says_how_much) {
  cr_assert_eq(osmem_init(), 0);
  refuse_above = 100 * MB;
  picky_install();
  size_t got = 0;
  char *r = osmem_reserve(1024 * MB, 0, NULL, &got);
  cr_assert_not_null(r);
  cr_assert_eq(got, 64 * MB, "1024, 512, 256, 128 refused; 64 fits");
  cr_assert_eq(stats_now().bytes_user_reserved, 64 * MB);
  /* Down to min_len, tried last, and no further. */
  errno = 0;
  mmap_calls = 0;
  cr_assert_null(osmem_reserve(1024 * MB, 200 * MB, NULL, &got));
  cr_assert_eq(errno, ENOMEM);
  cr_assert_leq(mmap_calls, 3 * 7, "1024, 512, 256, 200: bounded");
  cr_assert_eq(stats_now().user_reservations, 1, "the failure left nothing");
  r = osmem_reserve(1000 * MB, 90 * MB, NULL, &got);
  cr_assert_not_null(r);
  cr_assert_eq(got, 90 * MB, "min_len itself, when halving skips past it");
  os_reset();
}

Test(reservations, a_kernel_that_ignores_hints_cannot_make_it_loop) {
  cr_assert_eq(osmem_init(), 0);
  refuse_above = SIZE_MAX;
  ignore_hints = true;
  picky_install();
  mmap_calls = 0;
  char *r = osmem_reserve(64 * MB, 0, (void *)((uintptr_t)0x4200000000), NULL);
  cr_assert_not_null(r);
  cr_assert(is_mblock_aligned(r));
  cr_assert_leq(mmap_calls, 4,
                "the table's page; hint, exact, over-allocate: then done");
  os_reset();
}

/* Windows has no limit on address space: a job's memory limit counts
 * committed memory, and an osmem_reserve reservation (MEM_RESERVE) has
 * none, so nothing there shrinks it. The halving itself is tested above
 * (refusal_halves_down_to_min_and_says_how_much), a job's limit on what the
 * pool commits in test_windows.c (gets_past_the_job_limit_fail). */
#ifndef _WIN32
Test(reservations, rlimit_as_shrinks_the_reservation) {
  struct rlimit old;
  /* Room for about 512 MiB more than this process maps now. */
  FILE *f = fopen("/proc/self/statm", "r");
  cr_assert_not_null(f);
  unsigned long pages = 0;
  cr_assert_eq(fscanf(f, "%lu", &pages), 1);
  fclose(f);
  size_t now = pages * (size_t)sysconf(_SC_PAGESIZE);
  lower_rlimit_as(now + 512 * MB, &old);
  size_t got = 0;
  /* 1 TiB; on 32-bit the largest power of two a size_t holds, 2 GiB. */
  int shift = SIZE_MAX > UINT32_MAX ? 40 : 31;
  char *r = osmem_reserve((size_t)1 << shift, 0, NULL, &got);
  cr_assert_not_null(r, "2^%d refused, a smaller size fits", shift);
  cr_assert_leq(got, 512 * MB);
  cr_assert_geq(got, 128 * MB, "halving finds one of 256 MiB or so");
  cr_assert_geq(stats_now().reserve_retries, (uint64_t)shift - 29);
}
#endif

#ifdef _WIN32
/* A commit the commit limit refuses (VirtualAlloc MEM_COMMIT of reserved
 * pages, Windows' mprotect here). */
static LPVOID WINAPI refuse_commit(LPVOID at, SIZE_T len, DWORD type,
                                   DWORD prot) {
  if (type == MEM_COMMIT) {
    SetLastError(ERROR_COMMITMENT_LIMIT);
    return NULL;
  }
  return VirtualAlloc(at, len, type, prot);
}

static void refuse_commits(void) { osmem__windows_sys.VirtualAlloc = refuse_commit; }
#else
static int refuse_mprotect(void *addr, size_t len, int prot) {
  (void)addr, (void)len, (void)prot;
  errno = ENOMEM; /* what strict overcommit says */
  return -1;
}

static void refuse_commits(void) { osmem__posix_sys.mprotect = refuse_mprotect; }
#endif

Test(reservations, a_refused_commit_is_enomem_not_a_crash) {
  char *r = osmem_reserve(4 * MB, 0, NULL, NULL);
  cr_assert_not_null(r);
  refuse_commits();
  cr_assert_eq(osmem_commit(r, MB), ENOMEM);
  os_reset();
  cr_assert_str_eq(protection_at(r), "---p", "unchanged");
  cr_assert_eq(stats_now().bytes_committed, 0);
  cr_assert_eq(osmem_commit(r, MB), 0);
}

Test(reservations, many_reservations_grow_the_table) {
  enum { N = 600 }; /* more than the first table's 256 */
  static char *r[N];
  for (int i = 0; i < N; i++) {
    r[i] = osmem_reserve(MB, 0, NULL, NULL);
    cr_assert_not_null(r[i]);
  }
  cr_assert_eq(stats_now().user_reservations, N);
  for (int i = 0; i < N; i += 2) cr_assert_eq(osmem_unreserve(r[i]), 0);
  for (int i = 1; i < N; i += 2) cr_assert_eq(osmem_commit(r[i], MB), 0);
  for (int i = 0; i < N; i += 2)
    cr_assert_eq(osmem_commit(r[i], MB), EINVAL, "gone");
  cr_assert_eq(stats_now().user_reservations, N / 2);
}

/* Windows: VirtualAlloc's NULL is always a failure, so no allocation can
 * be had at address 0 and there is nothing to guard against. */
#ifndef _WIN32
/* An OS that maps at address 0 (root may, and sanitizers rewrite hints):
 * the first reservation of each kind is placed there, without mapping
 * anything; munmap of it is recorded. */
static unsigned zero_maps, zero_unmaps;

static void *mmap_at_zero_once(void *addr, size_t len, int prot, int flags,
                               int fd, off_t off) {
  if (zero_maps < 3 && (flags & MAP_NORESERVE)) {
    zero_maps++;
    return NULL;
  }
  return mmap(addr, len, prot, flags, fd, off);
}

static int munmap_zero_aware(void *addr, size_t len) {
  if (addr == NULL) {
    zero_unmaps++;
    return 0;
  }
  return munmap(addr, len);
}

Test(reservations, a_mapping_at_address_zero_is_never_used) {
  cr_assert_eq(osmem_init(), 0);
  osmem__posix_sys.mmap = mmap_at_zero_once;
  osmem__posix_sys.munmap = munmap_zero_aware;
  char *p = osmem_get_mblocks(1);
  cr_assert_not_null(p, "the get found memory elsewhere");
  cr_assert_gt((uintptr_t)p, 0);
  cr_assert_eq(zero_unmaps, zero_maps, "each mapping at 0 was given back");
  zero_maps = zero_unmaps = 0;
  char *r = osmem_reserve(8 * MB, 0, NULL, NULL);
  cr_assert_not_null(r);
  cr_assert_gt((uintptr_t)r, 0);
  cr_assert_eq(zero_unmaps, zero_maps, "each mapping at 0 was given back");
  cr_assert(!osmem_is_heap(NULL));
  osmem__posix_sys_reset();
  assert_invariants();
}
#endif

/* ------------------------------------------------------------ teardown */

/* Every mapping the library has, as the system-call table sees them: the
 * real calls, recorded. munmap may take part of a mapping. */
#define MAX_SPANS 4096
static struct { uintptr_t lo, hi; } spans[MAX_SPANS];
static size_t span_count;

static void spans_cut(uintptr_t lo, uintptr_t hi) {
  for (size_t i = 0; i < span_count; i++) {
    if (spans[i].hi <= lo || spans[i].lo >= hi) continue;
    uintptr_t a = spans[i].lo, b = spans[i].hi;
    spans[i] = spans[--span_count];
    i--;
    if (a < lo) spans[span_count++].lo = a, spans[span_count - 1].hi = lo;
    if (b > hi) spans[span_count++].lo = hi, spans[span_count - 1].hi = b;
  }
}

static int fail_meta_maps, fail_unmaps; /* the next this many fail */

#ifdef _WIN32
/* Windows: a span is an allocation (VirtualAlloc or VirtualAlloc2 with
 * MEM_RESERVE), and only VirtualFree(MEM_RELEASE) of its base takes it
 * away, whole: a decommit keeps the address space. Bookkeeping (committed,
 * asked for anywhere) fails while fail_meta_maps says so, VirtualFree while
 * fail_unmaps does. */
static void span_add(void *p, size_t len) {
  cr_assert_lt(span_count, MAX_SPANS);
  spans[span_count].lo = (uintptr_t)p;
  spans[span_count++].hi = (uintptr_t)p + len;
}

static LPVOID WINAPI recording_alloc(LPVOID at, SIZE_T len, DWORD type,
                                     DWORD prot) {
  if (!(type & MEM_RESERVE)) return VirtualAlloc(at, len, type, prot);
  if (at == NULL && (type & MEM_COMMIT) && fail_meta_maps > 0) {
    fail_meta_maps--;
    SetLastError(ERROR_NOT_ENOUGH_MEMORY);
    return NULL;
  }
  void *p = VirtualAlloc(at, len, type, prot);
  if (p) span_add(p, len);
  return p;
}

static PVOID WINAPI recording_alloc2(HANDLE h, PVOID at, SIZE_T len,
                                     ULONG type, ULONG prot,
                                     MEM_EXTENDED_PARAMETER *ext, ULONG n) {
  void *p = real_alloc2(h, at, len, type, prot, ext, n);
  if (p) span_add(p, len);
  return p;
}

static BOOL WINAPI recording_free(LPVOID p, SIZE_T len, DWORD type) {
  if (fail_unmaps > 0) {
    fail_unmaps--;
    SetLastError(ERROR_NOT_ENOUGH_MEMORY);
    return FALSE;
  }
  if (!VirtualFree(p, len, type)) return FALSE;
  for (size_t i = 0; type == MEM_RELEASE && i < span_count; i++)
    if (spans[i].lo == (uintptr_t)p) {
      spans_cut(spans[i].lo, spans[i].hi);
      break;
    }
  return TRUE;
}

static void recording_install(void) {
  cr_assert_eq(osmem_init(), 0); /* the optional entries are looked up */
  osmem__windows_sys_reset();
  real_alloc2 = osmem__windows_sys.VirtualAlloc2;
  osmem__windows_sys.VirtualAlloc = recording_alloc;
  if (real_alloc2) osmem__windows_sys.VirtualAlloc2 = recording_alloc2;
  osmem__windows_sys.VirtualFree = recording_free;
}
#else
static void *recording_mmap(void *addr, size_t len, int prot, int flags,
                            int fd, off_t off) {
  void *p = mmap(addr, len, prot, flags, fd, off);
  if (p != MAP_FAILED) {
    cr_assert_lt(span_count, MAX_SPANS);
    spans[span_count].lo = (uintptr_t)p;
    spans[span_count++].hi = (uintptr_t)p + len;
  }
  return p;
}

static int recording_munmap(void *addr, size_t len) {
  int r = munmap(addr, len);
  if (r == 0) spans_cut((uintptr_t)addr, (uintptr_t)addr + len);
  return r;
}

#endif

static size_t spans_bytes(void) {
  size_t sum = 0;
  for (size_t i = 0; i < span_count; i++) sum += spans[i].hi - spans[i].lo;
  return sum;
}

/* A workload that leaves every kind of mapping behind: megablocks handed
 * out, cached, pooled and never used, a released range, a caller's
 * reservation partly committed, and bookkeeping of each kind. */
static void use_everything(void) {
  void *keep[64];
  for (int i = 0; i < 64; i++) {
    keep[i] = osmem_get_mblocks((size_t)(i % 5) + 1);
    cr_assert_not_null(keep[i]);
  }
  for (int i = 0; i < 64; i += 3)
    cr_assert_eq(osmem_free_mblocks(keep[i], (size_t)(i % 5) + 1), 0);
  cr_assert_gt(osmem_release_free_memory(), 0);
  for (int i = 1; i < 64; i += 3)
    cr_assert_eq(osmem_free_mblocks(keep[i], (size_t)(i % 5) + 1), 0);
  void *big = osmem_get_mblocks(300); /* past the first reservation */
  cr_assert_not_null(big);
  cr_assert_not_null(osmem_get_mblocks(60)); /* more than the pool holds:
                                               a new reservation, with a tail */
  cr_assert_not_null(osmem_get_mblocks_on_node(2, 0));
  void *one = osmem_get_mblocks(1);
  cr_assert_eq(osmem_free_mblocks(one, 1), 0); /* into the thread cache */
  char *r = osmem_reserve(256 * MB, 0, NULL, NULL);
  cr_assert_not_null(r);
  cr_assert_eq(osmem_commit(r, 8 * MB), 0);
  memset(r, 1, 8 * MB);
  cr_assert_not_null(osmem_reserve(MB, 0, NULL, NULL));
  struct osmem_stats s = stats_now();
  cr_assert_gt(s.mblocks_in_use, 0);
  cr_assert_gt(s.mblocks_pooled, 0);
  cr_assert_gt(s.mblocks_cached, 0);
  cr_assert_gt(s.bytes_reserved_unused, 0);
}

Test(teardown, leaves_no_mapping_behind) {
#ifdef _WIN32
  recording_install();
#else
  osmem__posix_sys.mmap = recording_mmap;
  osmem__posix_sys.munmap = recording_munmap;
#endif
  use_everything();
  size_t before = spans_bytes();
  cr_assert_gt(before, 300 * MB);
  static struct { uintptr_t lo, hi; } live[MAX_SPANS];
  size_t live_count = span_count;
  memcpy(live, spans, sizeof spans);
  cr_assert_eq(osmem_teardown(), 0);
  cr_assert_eq(span_count, 0, "%zu mappings (%zu bytes) left", span_count,
               spans_bytes());
  /* Under Valgrind its own allocator may take the addresses at once. */
  bool valgrind = getenv("OSMEM_TEST_UNDER_VALGRIND") != NULL;
  for (size_t i = 0; i < live_count && !valgrind; i++)
    cr_assert(!any_mapped(live[i].lo, live[i].hi - live[i].lo),
              "%#lx-%#lx still mapped", (unsigned long)live[i].lo,
              (unsigned long)live[i].hi);
  os_reset();
}

#ifndef _WIN32 /* Windows: recording_alloc and recording_free fail */
static void *faulty_recording_mmap(void *addr, size_t len, int prot,
                                   int flags, int fd, off_t off) {
  if (!(flags & MAP_NORESERVE) && fail_meta_maps > 0) {
    fail_meta_maps--;
    errno = ENOMEM;
    return MAP_FAILED;
  }
  return recording_mmap(addr, len, prot, flags, fd, off);
}

static int faulty_recording_munmap(void *addr, size_t len) {
  if (fail_unmaps > 0) {
    fail_unmaps--;
    errno = ENOMEM; /* at vm.max_map_count */
    return -1;
  }
  return recording_munmap(addr, len);
}
#endif

Test(teardown, a_mapping_whose_undo_failed_is_given_back_later) {
  cr_assert_eq(osmem_init(), 0);
#ifdef _WIN32
  recording_install();
#else
  osmem__posix_sys.mmap = faulty_recording_mmap;
  osmem__posix_sys.munmap = faulty_recording_munmap;
#endif
  /* The reservation is mapped, its bookkeeping is refused, and so is the
   * munmap that undoes it. */
  fail_meta_maps = 1;
  fail_unmaps = 1;
  errno = 0;
  cr_assert_null(osmem_get_mblocks(1));
  cr_assert_eq(errno, ENOMEM);
  cr_assert_eq(fail_unmaps, 0, "an unmap was refused");
  cr_assert_gt(span_count, 0, "so a mapping is left for now");
  struct osmem_stats s = stats_now();
  cr_assert_eq(s.mblocks_in_use + s.mblocks_pooled, 0);
  osmem_release_free_memory();
  cr_assert_eq(span_count, 0, "%zu mappings (%zu bytes) lost", span_count,
               spans_bytes());
  cr_assert_not_null(osmem_get_mblocks(1), "works once faults stop");
  assert_invariants();
  os_reset();
}

Test(teardown, resets_and_the_library_works_again) {
  cr_assert_eq(osmem_set_decommit_mode(OSMEM_DECOMMIT_EAGER), 0);
  cr_assert_eq(osmem_set_decommit_delay(7), 100);
  use_everything();
  char *old = osmem_get_mblocks(1);
  cr_assert_eq(osmem_teardown(), 0);
  struct osmem_stats s = stats_now();
  cr_assert_eq(s.mblocks_in_use + s.mblocks_pooled + s.mblocks_cached, 0);
  cr_assert_eq(s.bytes_mapped, 0);
  cr_assert_eq(s.user_reservations, 0);
  cr_assert_eq(s.reservations, 0);
  cr_assert_eq(s.cache_gets + s.cache_frees, 0);
  cr_assert(!osmem_is_heap(old));
  cr_assert_eq(osmem_free_mblocks(old, 1), EINVAL, "forgotten");
  cr_assert_eq(osmem_decommit_mode(), OSMEM_DECOMMIT_LAZY, "settings reset");
  cr_assert_eq(osmem_set_decommit_delay(100), 100);
  /* Usable again, thread cache included, and a second teardown works. */
  for (int round = 0; round < 2; round++) {
    char *p = osmem_get_mblocks(1), *q = osmem_get_mblocks(4);
    cr_assert(p && q);
    memset(p, 1, MB);
    cr_assert(osmem_is_heap(p) && osmem_is_heap(q + 3 * MB));
    cr_assert_eq(osmem_free_mblocks(p, 1), 0);
    cr_assert_eq(osmem_get_mblocks(1), p, "from the thread cache");
    cr_assert_not_null(osmem_reserve(4 * MB, 0, NULL, NULL));
    assert_invariants();
    cr_assert_eq(osmem_teardown(), 0);
  }
}

/* A barrier of the two threads below, waited at by thread `me` (0 or 1). */
#ifdef _WIN32
/* Wine 8.0 has no SYNCHRONIZATION_BARRIER: a semaphore for each thread,
 * released when it arrives; each waits for the other's. */
static HANDLE arrived[2];
static void step_init(void) {
  for (int i = 0; i < 2; i++)
    cr_assert_not_null(arrived[i] = CreateSemaphoreA(NULL, 0, 2, NULL));
}
static void step_wait(int me) {
  ReleaseSemaphore(arrived[me], 1, NULL);
  WaitForSingleObject(arrived[!me], INFINITE);
}
#else
static pthread_barrier_t step;
static void step_init(void) { pthread_barrier_init(&step, NULL, 2); }
static void step_wait(int me) {
  (void)me;
  pthread_barrier_wait(&step);
}
#endif

/* A thread that used its cache before the teardown and goes on after it. */
static void *cache_user(void *arg) {
  (void)arg;
  for (int round = 0; round < 2; round++) {
    void *p[8];
    for (int i = 0; i < 8; i++) cr_assert_not_null(p[i] = osmem_get_mblocks(1));
    for (int i = 0; i < 8; i++) cr_assert_eq(osmem_free_mblocks(p[i], 1), 0);
    step_wait(1); /* the main thread tears down */
    step_wait(1);
  }
  return NULL;
}

#ifdef _WIN32
static DWORD WINAPI cache_user_thread(LPVOID arg) {
  cache_user(arg);
  return 0;
}
#endif

Test(teardown, threads_keep_their_caches_across_it) {
  step_init();
#ifdef _WIN32
  HANDLE t = CreateThread(NULL, 0, cache_user_thread, NULL, 0, NULL);
  cr_assert_not_null(t);
#else
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, cache_user, NULL), 0);
#endif
  for (int round = 0; round < 2; round++) {
    step_wait(0);
    cr_assert_gt(stats_now().mblocks_cached, 0);
    cr_assert_eq(osmem_teardown(), 0);
    cr_assert_eq(stats_now().mblocks_cached, 0);
    assert_invariants();
    step_wait(0);
  }
#ifdef _WIN32
  WaitForSingleObject(t, INFINITE);
  CloseHandle(t);
#else
  pthread_join(t, NULL);
#endif
  assert_invariants();
  cr_assert_eq(stats_now().mblocks_in_use, 0);
}

#endif /* POSIX and Windows */

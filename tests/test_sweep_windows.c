/*
 * The fault sweep over the Windows backend's Win32 call table
 * (osmem/windows/sys.h): the Windows counterpart of tests/test_sweep.c. A
 * scripted workload (tests/sweep-script.h's steps: init, physical memory,
 * gets plain and on node 0, frees with eager and lazy decommit, a
 * reservation committed, decommitted and unreserved, protections, a
 * release, a teardown) runs once per injection point: call k of one entry
 * of the table fails with one error Win32 documents for it (SetLastError,
 * then the failure return, as Win32 does), either once or from k on. After
 * every step the answer must be one the header documents, the library's
 * invariants must hold and live megablocks must keep their contents; once
 * the faults stop, the library must work; and nothing may leak: every
 * allocation made through the table (VirtualAlloc/VirtualAlloc2/
 * VirtualAllocExNuma with MEM_RESERVE) is recorded with its release
 * (VirtualFree MEM_RELEASE), and after the case (faults off, a teardown)
 * every one must have been released and VirtualQuery must show its base
 * MEM_FREE.
 *
 * Placement, each call swept under three:
 *   plain    the real calls (DiscardVirtualMemory, which Wine 8.0 lacks,
 *            emulated with MEM_RESET so that its path runs);
 *   hostile  VirtualAlloc2 ignores the alignment (allocations 64 KiB off
 *            the 1 MiB grid) and every other VirtualAlloc at an address
 *            lands elsewhere, off the grid: the backend must see the miss
 *            and undo it;
 *   no VirtualAlloc2 (nor DiscardVirtualMemory), as before Windows 10
 *            1803: the probe fallback and MEM_RESET + VirtualUnlock run.
 *
 * Windows cannot fork, but can unmap: a teardown returns the library to
 * its initial state, so each case runs in this process, between two
 * teardowns with the faults off (run-wine.sh runs each test in a Wine
 * process of its own). VirtualAllocExNuma is called only where Windows
 * describes NUMA nodes (not under Wine 8.0, whose NUMA calls are stubs):
 * its sweep then covers nothing, which it says.
 */
#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <windows.h>

#include "helpers.h"
#include "../osmem/backend.h"
#include "../osmem/windows/sys.h"
#include "sweep-fault.h"

#define MB OSMEM_MBLOCK_SIZE
#define MAX_POINTS 600

enum call { VALLOC, VALLOC2, VFREE, VPROTECT, VQUERY, VALLOC_NUMA, DISCARD,
            MEMSTATUS, QUERYJOB, CALLS };
static const char *call_name[CALLS] = {
    "VirtualAlloc", "VirtualAlloc2", "VirtualFree", "VirtualProtect",
    "VirtualQuery", "VirtualAllocExNuma", "DiscardVirtualMemory",
    "GlobalMemoryStatusEx", "QueryInformationJobObject"};
/* The errors each call can meet without a bug of the library's own: out of
 * memory or commit charge, and refusals of the address or arguments. */
static const DWORD call_errs[CALLS][5] = {
    [VALLOC] = {ERROR_NOT_ENOUGH_MEMORY, ERROR_COMMITMENT_LIMIT,
                ERROR_INVALID_PARAMETER, ERROR_INVALID_ADDRESS},
    [VALLOC2] = {ERROR_NOT_ENOUGH_MEMORY, ERROR_COMMITMENT_LIMIT,
                 ERROR_INVALID_PARAMETER, ERROR_INVALID_ADDRESS},
    [VFREE] = {ERROR_INVALID_PARAMETER, ERROR_INVALID_ADDRESS,
               ERROR_NOT_ENOUGH_MEMORY},
    [VPROTECT] = {ERROR_INVALID_PARAMETER, ERROR_INVALID_ADDRESS,
                  ERROR_ACCESS_DENIED, ERROR_NOT_ENOUGH_MEMORY},
    [VQUERY] = {ERROR_INVALID_PARAMETER},
    [VALLOC_NUMA] = {ERROR_NOT_ENOUGH_MEMORY, ERROR_COMMITMENT_LIMIT,
                     ERROR_INVALID_PARAMETER, ERROR_INVALID_ADDRESS},
    [DISCARD] = {ERROR_INVALID_PARAMETER, ERROR_NOT_ENOUGH_MEMORY},
    [MEMSTATUS] = {ERROR_INVALID_PARAMETER},
    [QUERYJOB] = {ERROR_INVALID_PARAMETER, ERROR_ACCESS_DENIED},
};

enum placement { PLAIN, HOSTILE, NO_VA2 };
static const char *placement_name[] = {"", " (hostile placement)",
                                       " (no VirtualAlloc2)"};

static struct {
  enum call target; /* the kind of call that fails (sweep-fault.h: which) */
  DWORD err;
  enum placement placement;
  unsigned addressed; /* VirtualAllocs at an address (hostile: every other) */
  bool in_teardown;   /* the script's osmem_teardown is running */
  int teardown_err;   /* and what it answered */
  bool teardown_refused_decommit;
} sw;

static struct osmem__windows_sys real;

/* The first check that fails, kept until the case is over. */
static int failed_line;
static char failed_what[160];
#define CHECK(c)                                      \
  do {                                                \
    if (!(c) && !failed_line) failed_line = __LINE__; \
  } while (0)

/* ------------------------------------------------- allocations and leaks */

static struct rec {
  uintptr_t base;
  size_t size;
  bool released;
  bool refused; /* a release the sweep refused */
} recs[2048];
static int nrecs;

static void record(void *p, size_t size) {
  if (nrecs == (int)(sizeof recs / sizeof *recs)) {
    CHECK(!"too many allocations to record");
    return;
  }
  recs[nrecs++] = (struct rec){(uintptr_t)p, size, false, false};
}

static struct rec *recorded(const void *p) {
  for (int i = nrecs; i-- > 0;)
    if (recs[i].base == (uintptr_t)p && !recs[i].released) return &recs[i];
  return NULL;
}

/* ---------------------------------------------------------------- faults */

/* Whether this call of `c` fails. */
static bool fails(enum call c) { return c == sw.target && fault_due(); }

/* An allocation of size bytes at 64 KiB past a 1 MiB boundary, where a
 * free one can be found: off the megablock grid. */
static void *off_grid(size_t size, DWORD type, DWORD prot) {
  for (int tries = 0; tries < 8; tries++) {
    char *probe = real.VirtualAlloc(NULL, size + 2 * MB, MEM_RESERVE,
                                    PAGE_NOACCESS);
    if (!probe) break;
    uintptr_t at = (((uintptr_t)probe + MB - 1) & ~(uintptr_t)(MB - 1)) +
                   64 * 1024;
    real.VirtualFree(probe, 0, MEM_RELEASE);
    void *p = real.VirtualAlloc((void *)at, size, type, prot);
    if (p) return p;
  }
  return real.VirtualAlloc(NULL, size, type, prot);
}

static LPVOID WINAPI f_VirtualAlloc(LPVOID a, SIZE_T size, DWORD type,
                                    DWORD prot) {
  if (fails(VALLOC)) {
    SetLastError(sw.err);
    return NULL;
  }
  void *p;
  if (sw.placement == HOSTILE && a && (type & MEM_RESERVE) &&
      sw.addressed++ % 2 == 0)
    p = off_grid(size, type, prot); /* the address ignored */
  else
    p = real.VirtualAlloc(a, size, type, prot);
  if (p && (type & MEM_RESERVE)) record(p, size);
  return p;
}

static PVOID WINAPI f_VirtualAlloc2(HANDLE h, PVOID a, SIZE_T size,
                                    ULONG type, ULONG prot,
                                    MEM_EXTENDED_PARAMETER *ext, ULONG n) {
  if (fails(VALLOC2)) {
    SetLastError(sw.err);
    return NULL;
  }
  void *p = sw.placement == HOSTILE
                ? off_grid(size, type, prot) /* the alignment ignored */
                : real.VirtualAlloc2(h, a, size, type, prot, ext, n);
  if (p && (type & MEM_RESERVE)) record(p, size);
  return p;
}

static BOOL WINAPI f_VirtualFree(LPVOID p, SIZE_T size, DWORD type) {
  bool refuse = fails(VFREE);
  struct rec *r = NULL;
  if (type == MEM_RELEASE) {
    r = recorded(p);
    if (!r && !failed_line)
      snprintf(failed_what, sizeof failed_what,
               "release of %p, which is no recorded allocation", p);
    CHECK(r != NULL);
  }
  if (refuse && type == MEM_DECOMMIT && sw.in_teardown)
    sw.teardown_refused_decommit = true;
  if (refuse) {
    if (r) r->refused = true;
    SetLastError(sw.err);
    return FALSE;
  }
  BOOL ok = real.VirtualFree(p, size, type);
  if (ok && r) r->released = true;
  return ok;
}

static BOOL WINAPI f_VirtualProtect(LPVOID p, SIZE_T size, DWORD prot,
                                    PDWORD old) {
  if (fails(VPROTECT)) {
    SetLastError(sw.err);
    return FALSE;
  }
  return real.VirtualProtect(p, size, prot, old);
}

static SIZE_T WINAPI f_VirtualQuery(LPCVOID p, PMEMORY_BASIC_INFORMATION m,
                                    SIZE_T size) {
  if (fails(VQUERY)) {
    SetLastError(sw.err);
    return 0;
  }
  return real.VirtualQuery(p, m, size);
}

static LPVOID WINAPI f_VirtualAllocExNuma(HANDLE h, LPVOID a, SIZE_T size,
                                          DWORD type, DWORD prot, DWORD node) {
  if (fails(VALLOC_NUMA)) {
    SetLastError(sw.err);
    return NULL;
  }
  void *p = real.VirtualAllocExNuma(h, a, size, type, prot, node);
  if (p && (type & MEM_RESERVE)) record(p, size);
  return p;
}

/* Wine 8.0 has no DiscardVirtualMemory: MEM_RESET stands in for it (the
 * contents are undefined afterwards either way). */
static DWORD WINAPI emulated_discard(PVOID p, SIZE_T size) {
  return VirtualAlloc(p, size, MEM_RESET, PAGE_NOACCESS) ? ERROR_SUCCESS
                                                          : GetLastError();
}

static DWORD WINAPI f_DiscardVirtualMemory(PVOID p, SIZE_T size) {
  if (fails(DISCARD)) return sw.err; /* it returns its error */
  return real.DiscardVirtualMemory(p, size);
}

static BOOL WINAPI f_GlobalMemoryStatusEx(LPMEMORYSTATUSEX ms) {
  if (fails(MEMSTATUS)) {
    SetLastError(sw.err);
    return FALSE;
  }
  return real.GlobalMemoryStatusEx(ms);
}

static BOOL WINAPI f_QueryInformationJobObject(HANDLE job,
                                               JOBOBJECTINFOCLASS cls,
                                               LPVOID out, DWORD size,
                                               LPDWORD got) {
  if (fails(QUERYJOB)) {
    SetLastError(sw.err);
    return FALSE;
  }
  return real.QueryInformationJobObject(job, cls, out, size, got);
}

/* Once per process, with the library at rest: the real table (its
 * optional entries looked up by an init), then the faulty one. */
static void install(enum placement placement) {
  osmem_init();
  cr_assert_eq(osmem_teardown(), 0);
  real = osmem__windows_sys;
  if (!real.DiscardVirtualMemory) real.DiscardVirtualMemory = emulated_discard;
  struct osmem__windows_sys f = {
      f_VirtualAlloc, f_VirtualAlloc2, f_VirtualFree, f_VirtualProtect,
      f_VirtualQuery, f_VirtualAllocExNuma, f_DiscardVirtualMemory,
      f_GlobalMemoryStatusEx, f_QueryInformationJobObject};
  if (!real.VirtualAlloc2 && placement != HOSTILE) f.VirtualAlloc2 = NULL;
  if (placement == NO_VA2) f.VirtualAlloc2 = NULL, f.DiscardVirtualMemory = NULL;
  osmem__windows_sys = f;
}

/* ------------------------------------------------------------ the script */

#define SWEEP_STEP_CHECK() true
/* ENOMEM, or the error of preferring the node for a new reservation. */
#define SWEEP_NODE_GET_ERROR(e)                                           \
  ((e) == ENOMEM || (e) == EINVAL || (e) == EFAULT || (e) == EACCES || \
   (e) == ENOSYS)
#include "sweep-script.h"

static void reservation(void) {
  size_t got = 0;
  errno = 0;
  char *r = osmem_reserve(64 * MB, 0, NULL, &got);
  if (!r) {
    CHECK(errno == ENOMEM);
    check_live();
    return;
  }
  CHECK(got >= MB && got <= 64 * MB);
  int err = osmem_commit(r, 2 * MB);
  CHECK(err == 0 || err == ENOMEM);
  if (err == 0) {
    r[0] = 1, r[2 * MB - 1] = 1;
    err = osmem_decommit(r, 4 * MB); /* spans uncommitted pages */
    CHECK(err == 0 || err == EINVAL || err == ENOMEM || err == EFAULT ||
          err == EACCES);
    r[MB] = 2; /* usable after a decommit */
  }
  err = osmem_unreserve(r);
  CHECK(err == 0 || err == ENOMEM || err == EINVAL);
  check_live();
}

/* What osmem_set_executable may answer on Windows: the header's EFAULT
 * and EACCES, and ENOMEM, which it does not list (osmem.h), for commit
 * charge refused (pages of an osmem_reserve reservation are committed by
 * it) or VirtualProtect out of memory. */
static bool exec_answer(int e) {
  return e == 0 || e == EFAULT || e == EACCES || e == ENOMEM;
}

/* Protections: a live megablock made executable and back, and a part of a
 * reservation (committed by it, as mprotect would make it accessible). */
static void protections(void) {
  if (nlive > 0) {
    CHECK(exec_answer(osmem_set_executable(live[0].p, MB, true)));
    CHECK(exec_answer(osmem_set_executable(live[0].p, MB, false)));
  }
  errno = 0;
  char *r = osmem_reserve(4 * MB, 0, NULL, NULL);
  if (r) {
    CHECK(exec_answer(osmem_set_executable(r, MB, true)));
    int err = osmem_unreserve(r);
    CHECK(err == 0 || err == ENOMEM || err == EINVAL);
  } else {
    CHECK(errno == ENOMEM);
  }
  check_live();
}

/* Every call of the table: init, physical memory (GlobalMemoryStatusEx,
 * QueryInformationJobObject), gets plain and on node 0 (reservations,
 * bookkeeping), frees decommitted eagerly (DiscardVirtualMemory) and lazily
 * (MEM_RESET), a reservation (commit, decommit, unreserve), protections
 * (VirtualProtect, VirtualQuery), a release (MEM_DECOMMIT, MEM_RELEASE) and
 * a teardown. */
static void script(void) {
  osmem_init();
  (void)osmem_refresh_physical_memory();
  CHECK(osmem_set_decommit_threshold(0) == (size_t)64 << 20);
  CHECK(osmem_set_decommit_mode(OSMEM_DECOMMIT_EAGER) == 0);
  get(1);
  get(3);
  get_on_node0(2);
  get(40);
  free_run(1);
  CHECK(osmem_set_decommit_mode(OSMEM_DECOMMIT_LAZY) == 0);
  free_run(0);
  reservation();
  protections();
  get(2);
  (void)osmem_release_free_memory();
  check_live();
  get(100);
  while (nlive > 0) free_run(0);
  sw.in_teardown = true;
  int err = osmem_teardown();
  sw.in_teardown = false;
  sw.teardown_err = err;
  CHECK(err == 0 || (err == ENOMEM && fault.fired));
}

/* A teardown whose unmap the OS refused answers ENOMEM and leaves that
 * mapping behind, untracked (osmem.h): on Windows, the pieces of a
 * reservations (perhaps two, which the pool coalesced) that an unmap with
 * a refused MEM_DECOMMIT kept, still committed while the rest of their
 * allocations was given back. The sweep gives them back itself,
 * through the backend (which still tracks the allocation), so that the
 * next case starts clean; the bytes. */
static size_t give_back_left_behind(struct rec *r) {
  size_t bytes = 0;
  uintptr_t at = r->base, end = r->base + r->size;
  osmem__os_lock();
  while (at < end) {
    MEMORY_BASIC_INFORMATION mbi;
    if (VirtualQuery((void *)at, &mbi, sizeof mbi) == 0) break;
    uintptr_t stop = (uintptr_t)mbi.BaseAddress + mbi.RegionSize;
    if (stop > end) stop = end;
    if (mbi.State == MEM_COMMIT) {
      CHECK(osmem__os_unmap((void *)at, stop - at) == 0);
      bytes += stop - at;
    }
    at = stop;
  }
  osmem__os_unlock();
  return bytes;
}

/* After the case and a teardown with the faults off, nothing the library
 * allocated is still allocated: every recorded allocation was released
 * through the table and VirtualQuery shows its base free. A release the
 * sweep refused is retried by the backend (osmem__os_retry_discards, which
 * the teardown calls), so it counts as a leak if it is still there; what a
 * teardown that answered ENOMEM left behind is documented, given back here
 * and counted. */
static long documented_leftovers;
static void nothing_leaked(void) {
  for (int i = 0; i < nrecs; i++)
    if (!recs[i].released && sw.teardown_refused_decommit &&
        sw.teardown_err == ENOMEM && give_back_left_behind(&recs[i]))
      documented_leftovers++;
  for (int i = 0; i < nrecs; i++) {
    MEMORY_BASIC_INFORMATION mbi;
    bool freed = recs[i].released &&
                 VirtualQuery((void *)recs[i].base, &mbi, sizeof mbi) != 0 &&
                 (mbi.State == MEM_FREE ||
                  (uintptr_t)mbi.AllocationBase != recs[i].base);
    if (!freed && !failed_line) {
      snprintf(failed_what, sizeof failed_what,
               "allocation %p (%zu KiB) leaked%s", (void *)recs[i].base,
               recs[i].size >> 10,
               recs[i].refused ? " (its release was refused once)" : "");
      failed_line = __LINE__;
    }
  }
}

/* ---------------------------------------------------------------- driver */

/* Runs the script with call k of the target failing (once, or from k on);
 * returns whether it did fail (false: the script made fewer than k + 1
 * such calls). failed_line says which check failed, if one did. */
static bool run_case(enum call c, long k, DWORD err, bool from_k_on,
                     enum placement placement) {
  sw.target = c, sw.err = err, sw.placement = placement, sw.addressed = 0;
  sw.teardown_err = 0, sw.teardown_refused_decommit = false;
  failed_line = 0, failed_what[0] = 0, nlive = 0, nrecs = 0;
  fault_arm(k, from_k_on);
  script();
  bool fired = fault.fired;
  works_again(); /* faults off */
  while (nlive > 0) free_run(0);
  int td = osmem_teardown();
  CHECK(td == 0);
  nothing_leaked();
  return fired;
}

static void sweep_call(enum call c, enum placement placement) {
  install(placement);
  long points = 0, calls = 0;
  for (int e = 0; e < 5 && call_errs[c][e]; e++)
    for (int mode = 0; mode < 2; mode++) {
      long k;
      for (k = 0; k < MAX_POINTS; k++) {
        bool fired = run_case(c, k, call_errs[c][e], mode == 1, placement);
        cr_assert_eq(failed_line, 0,
                     "%s%s call %ld failing (error %lu, %s): check at line "
                     "%d failed %s",
                     call_name[c], placement_name[placement], k,
                     (unsigned long)call_errs[c][e],
                     mode ? "from then on" : "once", failed_line,
                     failed_what);
        if (!fired) break;
        points++;
      }
      cr_assert_lt(k, MAX_POINTS, "the sweep of %s never ended", call_name[c]);
      if (k > calls) calls = k;
    }
  printf("sweep: windows %s%s: %ld injection points (%ld calls in the "
         "script, each error, once and from then on)\n",
         call_name[c], placement_name[placement], points, calls);
  if (documented_leftovers)
    printf("  (%ld allocations left behind by a teardown that had a decommit "
           "refused and answered ENOMEM, as documented; given back)\n",
           documented_leftovers);
  fflush(stdout);
  if (c == VALLOC_NUMA && !osmem_numa_available()) return; /* Wine */
  cr_assert_gt(calls, 0, "the script never calls %s", call_name[c]);
}

#define SWEEP(name, CALL)                                              \
  Test(sweep_windows, name) { sweep_call(CALL, PLAIN); }               \
  Test(sweep_windows_hostile, name) { sweep_call(CALL, HOSTILE); }
#define SWEEP_OLD(name, CALL) \
  Test(sweep_windows_no_va2, name) { sweep_call(CALL, NO_VA2); }
SWEEP(virtualalloc, VALLOC)
SWEEP(virtualalloc2, VALLOC2)
SWEEP(virtualfree, VFREE)
SWEEP(virtualprotect, VPROTECT)
SWEEP(virtualquery, VQUERY)
SWEEP(virtualallocexnuma, VALLOC_NUMA)
SWEEP(discardvirtualmemory, DISCARD)
SWEEP(globalmemorystatusex, MEMSTATUS)
SWEEP(queryinformationjobobject, QUERYJOB)
SWEEP_OLD(virtualalloc, VALLOC)
SWEEP_OLD(virtualfree, VFREE)
SWEEP_OLD(virtualprotect, VPROTECT)
SWEEP_OLD(virtualquery, VQUERY)

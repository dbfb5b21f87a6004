/*
 * The Windows backend (osmem/windows): aligned reservations, decommit,
 * giving back parts of allocations, job object limits, refusals, thread
 * exit and protections. Runs under Wine in `make check`; where Wine differs
 * from Windows the test says so (tools/check-windows.sh, the closing note).
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <windows.h>

#include "helpers.h"
#include "../osmem/common/internal.h"
#include "../osmem/windows/machine.h"
#include "../osmem/windows/sys.h"

#define MB OSMEM_MBLOCK_SIZE

static DWORD state_of(const void *p) {
  MEMORY_BASIC_INFORMATION mbi;
  cr_assert_neq(VirtualQuery(p, &mbi, sizeof mbi), 0);
  return mbi.State;
}

static DWORD protect_of(const void *p) {
  MEMORY_BASIC_INFORMATION mbi;
  cr_assert_neq(VirtualQuery(p, &mbi, sizeof mbi), 0);
  return mbi.Protect;
}

/* ------------------------------------------------------------ basics */

Test(windows, backend_and_page_size) {
  SYSTEM_INFO si;
  GetSystemInfo(&si);
  cr_assert_str_eq(osmem_backend(), "windows");
  cr_assert_eq(osmem_page_size(), (size_t)si.dwPageSize);
}

/* Every get is aligned, whatever its size, fresh or reused, and whichever
 * way the reservation was aligned (VirtualAlloc2, or the probe fallback). */
static void gets_are_aligned(void) {
  static const size_t sizes[] = {1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 129};
  for (int round = 0; round < 3; round++) {
    void *p[sizeof sizes / sizeof *sizes];
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
      p[i] = osmem_get_mblocks(sizes[i]);
      cr_assert_not_null(p[i], "get %zu: %s", sizes[i], strerror(errno));
      cr_assert(is_mblock_aligned(p[i]), "get %zu at %p", sizes[i], p[i]);
      ((volatile char *)p[i])[0] = 1;
      ((volatile char *)p[i])[sizes[i] * MB - 1] = 1;
    }
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
      cr_assert_eq(osmem_free_mblocks(p[i], sizes[i]), 0);
    if (round == 1) osmem_release_free_memory(); /* fresh ones next */
  }
  assert_invariants();
}

Test(windows, every_get_is_aligned) { gets_are_aligned(); }

Test(windows, every_get_is_aligned_without_virtualalloc2) {
  osmem_init();
  osmem__windows_sys.VirtualAlloc2 = NULL; /* as on Windows before 10 1803 */
  gets_are_aligned();
  cr_assert_gt(stats_now().align_trims + stats_now().align_hint_hits, 0);
  osmem__windows_sys_reset();
}

/* -------------------------------------------------------------- decommit */

static void decommit_then_reuse(enum osmem_decommit_mode mode) {
  pool_direct();
  decommit_at_once();
  cr_assert_eq(osmem_set_decommit_mode(mode), 0);
  osmem_set_decommit_threshold(0);
  const size_t n = 8;
  unsigned char *p = osmem_get_mblocks(n);
  cr_assert_not_null(p);
  memset(p, 0xab, n * MB);
  cr_assert_eq(osmem_free_mblocks(p, n), 0);
  struct osmem_stats s = stats_now();
  cr_assert_geq(s.bytes_decommitted, n * MB);
  cr_assert_gt(s.os_madvise, 0);
  cr_assert_eq(state_of(p), MEM_COMMIT, "decommit must keep the range usable");
  unsigned char *q = osmem_get_mblocks(n);
  cr_assert_eq(q, p, "the pool serves the decommitted range again");
  for (size_t i = 0; i < n * MB; i += 4096) q[i] = (unsigned char)i;
  for (size_t i = 0; i < n * MB; i += 4096)
    cr_assert_eq(q[i], (unsigned char)i);
  cr_assert_eq(osmem_free_mblocks(q, n), 0);
  assert_invariants();
}

Test(windows, decommit_eager_then_reuse) {
  decommit_then_reuse(OSMEM_DECOMMIT_EAGER);
}
Test(windows, decommit_lazy_then_reuse) {
  decommit_then_reuse(OSMEM_DECOMMIT_LAZY);
}

/* An osmem_reserve range: committed on demand, decommitted and usable. */
Test(windows, reserve_commit_decommit) {
  size_t got;
  char *r = osmem_reserve(64 * MB, 0, NULL, &got);
  cr_assert_not_null(r, "%s", strerror(errno));
  cr_assert(is_mblock_aligned(r));
  cr_assert_eq(state_of(r), MEM_RESERVE, "reserved, not committed");
  cr_assert_eq(osmem_commit(r + MB, 2 * MB), 0);
  cr_assert_eq(state_of(r + MB), MEM_COMMIT);
  memset(r + MB, 1, 2 * MB);
  cr_assert_eq(osmem_decommit(r, 4 * MB), 0); /* spans uncommitted pages */
  r[MB] = 2;
  cr_assert_eq(osmem_unreserve(r), 0);
  cr_assert_eq(state_of(r), MEM_FREE);
}

/* ------------------------------------------------- giving back in parts */

/* Windows releases only whole allocations: parts are decommitted and the
 * allocation goes when the last part does. */
Test(windows, partial_unmaps_release_the_allocation) {
  osmem_init();
  osmem__os_lock();
  void *v;
  cr_assert_eq(osmem__os_reserve(8 * MB, MB, NULL, false, &v), 0);
  char *p = v;
  cr_assert_eq(osmem__os_unmap(p + 2 * MB, 3 * MB), 0);
  cr_assert_eq(state_of(p + 2 * MB), MEM_RESERVE, "a part is decommitted");
  cr_assert_eq(state_of(p), MEM_COMMIT);
  p[0] = 1, p[7 * MB] = 1; /* the rest still usable */
  cr_assert_eq(osmem__os_unmap(p, 2 * MB), 0);
  cr_assert_eq(state_of(p), MEM_RESERVE);
  cr_assert_eq(osmem__os_unmap(p + 5 * MB, 3 * MB), 0);
  cr_assert_eq(state_of(p), MEM_FREE, "the last part releases it all");
  cr_assert_eq(state_of(p + 7 * MB), MEM_FREE);
  cr_assert_eq(osmem__os_unmap(p, MB), EINVAL, "no longer ours");
  osmem__os_unlock();
}

/* Two adjacent reservations: the pool coalesces them, so one unmap may
 * span both. */
Test(windows, unmap_spanning_two_allocations) {
  osmem_init();
  osmem__os_lock();
  void *hole, *hi, *lo;
  /* 8 MiB of free address space, then two reservations at its halves. */
  cr_assert_eq(osmem__os_reserve(8 * MB, MB, NULL, false, &hole), 0);
  cr_assert_eq(osmem__os_unmap(hole, 8 * MB), 0);
  cr_assert_eq(osmem__os_reserve(4 * MB, MB, (char *)hole + 4 * MB, false, &hi), 0);
  cr_assert_eq(osmem__os_reserve(4 * MB, MB, hole, false, &lo), 0);
  if (lo != (char *)hi - 4 * MB) {
    osmem__os_unmap(lo, 4 * MB), osmem__os_unmap(hi, 4 * MB);
    osmem__os_unlock();
    cr_skip_test("the address below was taken; nothing adjacent to test");
  }
  char *base = lo;
  cr_assert_eq(osmem__os_unmap(base + 2 * MB, 4 * MB), 0);
  cr_assert_eq(state_of(base + 3 * MB), MEM_RESERVE);
  cr_assert_eq(state_of(base + 4 * MB), MEM_RESERVE);
  base[0] = 1, base[7 * MB] = 1;
  cr_assert_eq(osmem__os_unmap(base, 2 * MB), 0);
  cr_assert_eq(state_of(base), MEM_FREE, "the lower allocation is whole back");
  cr_assert_eq(state_of(base + 6 * MB), MEM_COMMIT);
  cr_assert_eq(osmem__os_unmap(base + 6 * MB, 2 * MB), 0);
  cr_assert_eq(state_of(base + 6 * MB), MEM_FREE);
  osmem__os_unlock();
}

static int refused_frees;
static BOOL WINAPI refusing_free(LPVOID p, SIZE_T size, DWORD type) {
  if (type == MEM_DECOMMIT) {
    refused_frees++;
    SetLastError(ERROR_INVALID_PARAMETER);
    return FALSE;
  }
  return VirtualFree(p, size, type);
}

/* An unmap is all or nothing: a refused decommit changes nothing. */
Test(windows, refused_unmap_changes_nothing) {
  osmem_init();
  osmem__os_lock();
  void *v;
  cr_assert_eq(osmem__os_reserve(4 * MB, MB, NULL, false, &v), 0);
  char *p = v;
  osmem__windows_sys.VirtualFree = refusing_free;
  cr_assert_eq(osmem__os_unmap(p + MB, MB), EINVAL);
  osmem__windows_sys_reset();
  cr_assert_eq(refused_frees, 1);
  p[MB] = 1;
  cr_assert_eq(osmem__os_unmap(p, 4 * MB), 0, "still whole: one release");
  cr_assert_eq(state_of(p), MEM_FREE);
  osmem__os_unlock();
}

/* Pool, release and teardown through the public calls leave nothing. */
Test(windows, teardown_leaves_no_allocation) {
  pool_direct();
  void *a = osmem_get_mblocks(3), *b = osmem_get_mblocks(40);
  cr_assert_not_null(a);
  cr_assert_not_null(b);
  cr_assert_eq(osmem_free_mblocks((char *)b + 5 * MB, 10), 0);
  osmem_release_free_memory();
  size_t got;
  void *r = osmem_reserve(16 * MB, 0, NULL, &got);
  cr_assert_not_null(r);
  cr_assert_eq(osmem_teardown(), 0);
  cr_assert_eq(state_of(a), MEM_FREE);
  cr_assert_eq(state_of(b), MEM_FREE);
  cr_assert_eq(state_of((char *)b + 39 * MB), MEM_FREE);
  cr_assert_eq(state_of(r), MEM_FREE);
}

/* -------------------------------------------------------------- refusals */

static LPVOID WINAPI no_alloc(LPVOID p, SIZE_T size, DWORD type, DWORD prot) {
  (void)p, (void)size, (void)type, (void)prot;
  SetLastError(ERROR_NOT_ENOUGH_MEMORY);
  return NULL;
}

static PVOID WINAPI no_alloc2(HANDLE h, PVOID p, SIZE_T size, ULONG type,
                              ULONG prot, MEM_EXTENDED_PARAMETER *ext,
                              ULONG n) {
  (void)h, (void)p, (void)size, (void)type, (void)prot, (void)ext, (void)n;
  SetLastError(ERROR_COMMITMENT_LIMIT);
  return NULL;
}

Test(windows, refused_reservations_are_enomem) {
  osmem_init();
  osmem__windows_sys.VirtualAlloc = no_alloc;
  osmem__windows_sys.VirtualAlloc2 = no_alloc2;
  errno = 0;
  cr_assert_null(osmem_get_mblocks(4));
  cr_assert_eq(errno, ENOMEM);
  errno = 0;
  cr_assert_null(osmem_reserve(64 * MB, 0, NULL, NULL));
  cr_assert_eq(errno, ENOMEM);
  osmem__windows_sys.VirtualAlloc2 = NULL; /* the fallback refused too */
  cr_assert_null(osmem_get_mblocks(1));
  cr_assert_eq(errno, ENOMEM);
  osmem__windows_sys_reset();
  void *p = osmem_get_mblocks(4);
  cr_assert_not_null(p, "works again once the OS says yes");
  cr_assert_eq(osmem_free_mblocks(p, 4), 0);
  assert_invariants();
}

/* ----------------------------------------------------------- job objects */

static JOBOBJECT_EXTENDED_LIMIT_INFORMATION fake_job;

static BOOL WINAPI fake_query_job(HANDLE job, JOBOBJECTINFOCLASS cls,
                                  LPVOID out, DWORD size, LPDWORD got) {
  if (job != NULL || cls != JobObjectExtendedLimitInformation ||
      size < sizeof fake_job) {
    SetLastError(ERROR_INVALID_PARAMETER);
    return FALSE;
  }
  memcpy(out, &fake_job, sizeof fake_job);
  if (got) *got = sizeof fake_job;
  return TRUE;
}

/* A commit limit as a job enforces it: committed bytes past it refused. */
static size_t commit_limit, committed;
static LPVOID WINAPI limited_alloc(LPVOID p, SIZE_T size, DWORD type,
                                   DWORD prot) {
  if ((type & MEM_COMMIT) && committed + size > commit_limit) {
    SetLastError(ERROR_COMMITMENT_LIMIT);
    return NULL;
  }
  void *r = VirtualAlloc(p, size, type, prot);
  if (r && (type & MEM_COMMIT)) committed += size;
  return r;
}

Test(windows, job_limit_is_physical_memory) {
  osmem_init();
  fake_job.BasicLimitInformation.LimitFlags =
      JOB_OBJECT_LIMIT_PROCESS_MEMORY | JOB_OBJECT_LIMIT_JOB_MEMORY;
  fake_job.ProcessMemoryLimit = 256 * MB;
  fake_job.JobMemoryLimit = 512 * MB;
  osmem__windows_sys.QueryInformationJobObject = fake_query_job;
  cr_assert_eq(osmem_refresh_physical_memory(), 256 * MB);
  struct osmem_memory_info m;
  osmem_memory_info(&m);
  cr_assert_eq(m.source, OSMEM_MEMORY_JOB);
  cr_assert_eq(m.job_max, 256 * MB);
  cr_assert_eq(m.cgroup_max, OSMEM_UNLIMITED);
  fake_job.ProcessMemoryLimit = 1024 * MB; /* the job's own is lower now */
  cr_assert_eq(osmem_refresh_physical_memory(), 512 * MB);
  fake_job.BasicLimitInformation.LimitFlags = 0; /* limits not in force */
  cr_assert_eq(osmem_refresh_physical_memory(), osmem_physical_ram());
  osmem_memory_info(&m);
  cr_assert_eq(m.source, OSMEM_MEMORY_RAM);
  cr_assert_eq(m.job_max, OSMEM_UNLIMITED);
  osmem__windows_sys_reset();
}

/* Gets past a job's commit limit fail with ENOMEM, and reserve-ahead stays
 * within a sixteenth of it (the budget). Wine neither keeps nor enforces
 * job memory limits, so the limit is simulated through the call table. */
Test(windows, gets_past_the_job_limit_fail) {
  osmem_init();
  fake_job.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_PROCESS_MEMORY;
  fake_job.ProcessMemoryLimit = 256 * MB;
  osmem__windows_sys.QueryInformationJobObject = fake_query_job;
  osmem__windows_sys.VirtualAlloc = limited_alloc;
  osmem__windows_sys.VirtualAlloc2 = NULL;
  commit_limit = 256 * MB;
  cr_assert_eq(osmem_refresh_physical_memory(), 256 * MB);
  errno = 0;
  cr_assert_null(osmem_get_mblocks(300));
  cr_assert_eq(errno, ENOMEM);
  void *p = osmem_get_mblocks(64);
  cr_assert_not_null(p, "within the limit: %s", strerror(errno));
  cr_assert_leq(stats_now().bytes_mapped, 256 * MB);
  cr_assert_eq(osmem_free_mblocks(p, 64), 0);
  osmem__windows_sys_reset();
  assert_invariants();
}

/* The real thing: this program run again in a job limited to 256 MiB
 * (windows::in_a_job checks from inside). */
Test(windows, job_limit_of_a_child) {
  char exe[MAX_PATH], cmd[MAX_PATH + 64];
  cr_assert_neq(GetModuleFileNameA(NULL, exe, sizeof exe), 0);
  snprintf(cmd, sizeof cmd, "\"%s\" --run windows::in_a_job", exe);
  HANDLE job = CreateJobObjectA(NULL, NULL);
  cr_assert_not_null(job);
  JOBOBJECT_EXTENDED_LIMIT_INFORMATION li = {0};
  li.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_PROCESS_MEMORY;
  li.ProcessMemoryLimit = 256 * MB;
  cr_assert(SetInformationJobObject(job, JobObjectExtendedLimitInformation,
                                    &li, sizeof li));
  STARTUPINFOA si = {.cb = sizeof si};
  PROCESS_INFORMATION pi;
  SetEnvironmentVariableA("OSMEM_TEST_IN_JOB", "1");
  cr_assert(CreateProcessA(NULL, cmd, NULL, NULL, FALSE, CREATE_SUSPENDED,
                           NULL, NULL, &si, &pi));
  cr_assert(AssignProcessToJobObject(job, pi.hProcess));
  ResumeThread(pi.hThread);
  WaitForSingleObject(pi.hProcess, INFINITE);
  DWORD code = 2;
  GetExitCodeProcess(pi.hProcess, &code);
  CloseHandle(pi.hThread), CloseHandle(pi.hProcess), CloseHandle(job);
  if (code == 77)
    cr_skip_test("the OS did not keep the job's memory limit (Wine 8.0 "
                 "stores no job limits); job_limit_is_physical_memory and "
                 "gets_past_the_job_limit_fail cover it");
  cr_assert_eq(code, 0, "the child failed (%lu)", code);
}

Test(windows, in_a_job) {
  if (!getenv("OSMEM_TEST_IN_JOB"))
    cr_skip_test("runs inside the job windows::job_limit_of_a_child makes");
  JOBOBJECT_EXTENDED_LIMIT_INFORMATION li = {0};
  if (!QueryInformationJobObject(NULL, JobObjectExtendedLimitInformation, &li,
                                 sizeof li, NULL) ||
      !(li.BasicLimitInformation.LimitFlags & JOB_OBJECT_LIMIT_PROCESS_MEMORY))
    exit(77);
  cr_assert_eq(osmem_physical_memory(), 256 * MB);
  struct osmem_memory_info m;
  osmem_memory_info(&m);
  cr_assert_eq(m.source, OSMEM_MEMORY_JOB);
  errno = 0;
  cr_assert_null(osmem_get_mblocks(512));
  cr_assert_eq(errno, ENOMEM);
  cr_assert_not_null(osmem_get_mblocks(16));
}

/* ---------------------------------------------------------- thread exit */

static DWORD WINAPI get_free_and_exit(LPVOID arg) {
  (void)arg;
  void *p = osmem_get_mblocks(1);
  if (!p || osmem_free_mblocks(p, 1) != 0) return 1;
  return stats_now().mblocks_cached > 0 ? 0 : 2; /* in this thread's cache */
}

/* A thread's cache goes back to the pool when it exits (the FLS callback). */
Test(windows, thread_exit_flushes_its_cache) {
  osmem_init();
  HANDLE t = CreateThread(NULL, 0, get_free_and_exit, NULL, 0, NULL);
  cr_assert_not_null(t);
  WaitForSingleObject(t, INFINITE);
  DWORD code = 9;
  GetExitCodeThread(t, &code);
  CloseHandle(t);
  cr_assert_eq(code, 0, "the thread's get and free (%lu)", code);
  struct osmem_stats s = stats_now();
  cr_assert_eq(s.mblocks_cached, 0, "the exited thread's cache was flushed");
  cr_assert_geq(s.mblocks_pooled, 1);
  assert_invariants();
}

/* ----------------------------------------------------------- protection */

Test(windows, set_executable) {
  char *p = osmem_get_mblocks(2);
  cr_assert_not_null(p);
  cr_assert_eq(osmem_set_executable(p, 2 * MB, true), 0);
  cr_assert_eq(protect_of(p), PAGE_EXECUTE_READWRITE);
  cr_assert_eq(osmem_set_executable(p, 2 * MB, false), 0);
  cr_assert_eq(protect_of(p), PAGE_READWRITE);
  char *r = osmem_reserve(8 * MB, 0, NULL, NULL);
  cr_assert_not_null(r);
  cr_assert_eq(osmem_set_executable(r, MB, true), 0, "commits, as mprotect");
  cr_assert_eq(state_of(r), MEM_COMMIT);
  cr_assert_eq(protect_of(r), PAGE_EXECUTE_READWRITE);
  cr_assert_eq(osmem_unreserve(r), 0);
  cr_assert_eq(osmem_set_executable(r, MB, true), EFAULT, "not mapped");
}

Test(windows, bind_to_node) {
  void *p = osmem_get_mblocks(2);
  cr_assert_not_null(p);
  cr_assert_eq(osmem_bind_to_node(p, 2 * MB, 0), 0);
  cr_assert_eq(osmem_bind_to_node(p, 2 * MB, osmem_numa_nodes_configured()),
               EINVAL);
  void *q = osmem_get_mblocks_on_node(3, 0);
  cr_assert_not_null(q);
  cr_assert(is_mblock_aligned(q));
  cr_assert_eq(osmem_free_mblocks(q, 3), 0);
}

Test(windows, errors_map_to_errno) {
  cr_assert_eq(osmem__windows_errno(ERROR_NOT_ENOUGH_MEMORY), ENOMEM);
  cr_assert_eq(osmem__windows_errno(ERROR_COMMITMENT_LIMIT), ENOMEM);
  cr_assert_eq(osmem__windows_errno(ERROR_OUTOFMEMORY), ENOMEM);
  cr_assert_eq(osmem__windows_errno(ERROR_INVALID_ADDRESS), EINVAL);
  cr_assert_eq(osmem__windows_errno(ERROR_INVALID_PARAMETER), EINVAL);
  cr_assert_eq(osmem__windows_errno(ERROR_ACCESS_DENIED), EACCES);
}

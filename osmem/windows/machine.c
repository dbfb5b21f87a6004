/*
 * The Windows backend's init, lock, barrier, clock, thread exit, and the
 * plain memory calls: decommit and the address budget (reservations:
 * reserve.c; giving back: allocs.c; physical memory: meminfo.c).
 *
 * Windows has no fork: osmem__fork_child_locked is never called.
 */
#include <config.h>

#include <errno.h>
#include <stdatomic.h>

#include "machine.h"
#include "osmem.h"
#include "sys.h"

size_t osmem__windows_page_size = 4096;
size_t osmem__windows_granularity = 65536;
uintptr_t osmem__windows_max_address = (uintptr_t)0x7ffffffeffff;

/* ------------------------------------------------------------------- lock */

/* Statically initialised: usable before osmem__os_init. */
static SRWLOCK pool_lock = SRWLOCK_INIT;

void osmem__os_lock(void) { AcquireSRWLockExclusive(&pool_lock); }
void osmem__os_unlock(void) { ReleaseSRWLockExclusive(&pool_lock); }

/* ---------------------------------------------------- asymmetric barrier */

/* Wine's ntdll, which exports wine_get_version, implemented
 * FlushProcessWriteBuffers as a stub that does nothing until 2024 (Wine 8.0
 * prints "fixme: stub"): there the thread caches must use full fences. */
static bool under_wine(void) {
  HMODULE ntdll = GetModuleHandleA("ntdll.dll");
  return ntdll && GetProcAddress(ntdll, "wine_get_version") != NULL;
}

static bool use_flush;

/* FlushProcessWriteBuffers interrupts every processor running a thread of
 * the process, which then executes a full barrier: Windows' membarrier. */
bool osmem__os_barrier_init(void) {
  use_flush = !under_wine();
  return use_flush;
}

void osmem__os_barrier_all(void) {
  if (use_flush) FlushProcessWriteBuffers();
  else atomic_thread_fence(memory_order_seq_cst);
}

void osmem__os_yield(void) { SwitchToThread(); }

uint64_t osmem__os_clock_ns(void) {
  static LARGE_INTEGER freq; /* fixed at boot; a race writes the same */
  LARGE_INTEGER now;
  if (freq.QuadPart == 0 && !QueryPerformanceFrequency(&freq)) return 0;
  QueryPerformanceCounter(&now);
  uint64_t c = (uint64_t)now.QuadPart, f = (uint64_t)freq.QuadPart;
  return c / f * 1000000000u + c % f * 1000000000u / f; /* no overflow */
}

/* ----------------------------------------------------------- thread exit */

/* A fiber-local slot whose callback runs when a thread exits (an FLS
 * callback rather than a TLS callback, which would need the image's TLS
 * directory, and a DllMain the static library does not have). FLS
 * callbacks also run for the exiting thread during ExitProcess, after
 * the other threads were killed, perhaps holding the pool lock: the
 * callback does nothing then (RtlDllShutdownInProgress). */
typedef BOOLEAN(WINAPI *shutdown_fn)(void);
static shutdown_fn shutting_down;
static DWORD exit_slot = FLS_OUT_OF_INDEXES;
static INIT_ONCE exit_slot_once = INIT_ONCE_STATIC_INIT;

static VOID WINAPI on_thread_exit(PVOID arg) {
  if (arg && !(shutting_down && shutting_down())) osmem__thread_exit(arg);
}

static BOOL CALLBACK make_exit_slot(PINIT_ONCE once, PVOID param, PVOID *ctx) {
  (void)once, (void)param, (void)ctx;
  HMODULE ntdll = GetModuleHandleA("ntdll.dll");
  if (ntdll)
    shutting_down = (shutdown_fn)(void *)GetProcAddress(
        ntdll, "RtlDllShutdownInProgress");
  exit_slot = FlsAlloc(on_thread_exit);
  return TRUE;
}

int osmem__os_at_thread_exit(void *arg) {
  InitOnceExecuteOnce(&exit_slot_once, make_exit_slot, NULL, NULL);
  if (exit_slot == FLS_OUT_OF_INDEXES) return EAGAIN;
  return FlsSetValue(exit_slot, arg) ? 0 : ENOMEM;
}

/* ------------------------------------------------------------------- init */

void osmem__os_init(struct osmem__os_caps *caps) {
  SYSTEM_INFO si;
  GetSystemInfo(&si);
  osmem__windows_page_size = si.dwPageSize;
  osmem__windows_granularity = si.dwAllocationGranularity;
  osmem__windows_max_address = (uintptr_t)si.lpMaximumApplicationAddress;
  osmem__windows_sys_lookup();
  osmem__windows_numa_init();
  *caps = (struct osmem__os_caps){
      .name = "windows",
      .page_size = osmem__windows_page_size,
      .can_unmap = true,
      .can_decommit = true,
      /* committed ahead, charged but not touched: see reserve.c */
      .cheap_reserve = true,
  };
}

/* --------------------------------------------------------------- memory */

/* No RLIMIT_AS on Windows. What bounds what the pool may commit is the job
 * object's memory limit (committed memory is what it counts), so the common
 * code reserves at most a sixteenth of it ahead. */
size_t osmem__os_address_budget(void) {
  uint64_t limit = osmem__windows_job_limit();
  return limit < SIZE_MAX ? (size_t)limit : SIZE_MAX;
}

/* One committed region: DiscardVirtualMemory (eager: the pages leave the
 * working set now, contents undefined, still committed and usable), or
 * MEM_RESET (the OS takes the pages when it needs them: MADV_FREE's
 * meaning). Never MEM_DECOMMIT: the contract keeps the range usable
 * without a call. Reserved regions hold no memory to give. */
static int reset_region(void *ctx, void *p, size_t size,
                        const MEMORY_BASIC_INFORMATION *mbi) {
  if (mbi->State != MEM_COMMIT) return 0;
  if (osmem__windows_reset(p, size, *(const bool *)ctx)) return 0;
  return osmem__windows_errno(GetLastError());
}

int osmem__os_decommit(void *p, size_t size, bool eager) {
  return osmem__windows_each_region(p, size, reset_region, &eager);
}

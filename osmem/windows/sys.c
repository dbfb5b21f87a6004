/* The Win32 call table of the Windows backend (see sys.h). */
#include <config.h>

#include "sys.h"

#include <errno.h>

struct osmem__os_counters osmem__os_count;

/* VirtualAlloc2 and DiscardVirtualMemory are filled in by the first
 * osmem__os_init (lookup_optional), so that the table is valid before. */
static struct osmem__windows_sys real_sys = {
    VirtualAlloc, NULL, VirtualFree, VirtualProtect, VirtualQuery,
    VirtualAllocExNuma, NULL, GlobalMemoryStatusEx, QueryInformationJobObject,
};

struct osmem__windows_sys osmem__windows_sys = {
    VirtualAlloc, NULL, VirtualFree, VirtualProtect, VirtualQuery,
    VirtualAllocExNuma, NULL, GlobalMemoryStatusEx, QueryInformationJobObject,
};

/* GetProcAddress returns a generic FARPROC; the cast through void * says
 * we know the real type. */
static void *lookup(const char *dll, const char *name) {
  HMODULE m = GetModuleHandleA(dll);
  return m ? (void *)GetProcAddress(m, name) : NULL;
}

/* Once per process, under the pool lock (from osmem__os_init): entries a
 * test has set since are left alone, and later inits change nothing. */
void osmem__windows_sys_lookup(void) {
  static bool done;
  if (done) return;
  done = true;
  void *va2 = lookup("kernelbase.dll", "VirtualAlloc2");
  void *discard = lookup("kernelbase.dll", "DiscardVirtualMemory");
  if (!discard) discard = lookup("kernel32.dll", "DiscardVirtualMemory");
  real_sys.VirtualAlloc2 = (osmem__virtual_alloc2_fn)va2;
  real_sys.DiscardVirtualMemory = (osmem__discard_fn)discard;
  if (!osmem__windows_sys.VirtualAlloc2)
    osmem__windows_sys.VirtualAlloc2 = real_sys.VirtualAlloc2;
  if (!osmem__windows_sys.DiscardVirtualMemory)
    osmem__windows_sys.DiscardVirtualMemory = real_sys.DiscardVirtualMemory;
}

void osmem__windows_sys_reset(void) {
  osmem__windows_sys_lookup();
  osmem__windows_sys = real_sys;
}

static void bump(atomic_uint_least64_t *counter) {
  atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
}

void *osmem__windows_alloc(void *at, size_t size, DWORD type, DWORD prot) {
  bump(&osmem__os_count.maps);
  return osmem__windows_sys.VirtualAlloc(at, size, type, prot);
}

void *osmem__windows_alloc_aligned(size_t size, size_t align, DWORD type,
                                   DWORD prot) {
  if (!osmem__windows_sys.VirtualAlloc2) {
    SetLastError(ERROR_CALL_NOT_IMPLEMENTED);
    return NULL;
  }
  MEM_ADDRESS_REQUIREMENTS req = {0};
  req.Alignment = align;
  MEM_EXTENDED_PARAMETER param = {0};
  param.Type = MemExtendedParameterAddressRequirements;
  param.Pointer = &req;
  bump(&osmem__os_count.maps);
  return osmem__windows_sys.VirtualAlloc2(NULL, NULL, size, type, prot,
                                          &param, 1);
}

bool osmem__windows_free(void *p, size_t size, DWORD type) {
  bump(&osmem__os_count.unmaps);
  return osmem__windows_sys.VirtualFree(p, size, type) != 0;
}

bool osmem__windows_protect(void *p, size_t size, DWORD prot) {
  DWORD old;
  bump(&osmem__os_count.mprotect);
  return osmem__windows_sys.VirtualProtect(p, size, prot, &old) != 0;
}

bool osmem__windows_commit(void *p, size_t size, DWORD prot) {
  bump(&osmem__os_count.mprotect);
  return osmem__windows_sys.VirtualAlloc(p, size, MEM_COMMIT, prot) != NULL;
}

void *osmem__windows_alloc_numa(void *p, size_t size, DWORD type,
                                DWORD node) {
  bump(&osmem__os_count.mbind);
  return osmem__windows_sys.VirtualAllocExNuma(GetCurrentProcess(), p, size,
                                               type, PAGE_READWRITE, node);
}

bool osmem__windows_reset(void *p, size_t size, bool eager) {
  bump(&osmem__os_count.madvise);
  if (eager && osmem__windows_sys.DiscardVirtualMemory) {
    DWORD err = osmem__windows_sys.DiscardVirtualMemory(p, size);
    if (err == ERROR_SUCCESS) return true;
    SetLastError(err);
    return false;
  }
  /* The protection is ignored for MEM_RESET but must be a valid one. */
  if (!osmem__windows_sys.VirtualAlloc(p, size, MEM_RESET, PAGE_NOACCESS))
    return false;
  /* Eager without DiscardVirtualMemory: VirtualUnlock of pages that are
   * not locked takes them out of the working set now (documented; it then
   * fails with ERROR_NOT_LOCKED, which says nothing about the pages). */
  if (eager) (void)VirtualUnlock(p, size);
  return true;
}

int osmem__windows_errno(DWORD err) {
  switch (err) {
  case ERROR_NOT_ENOUGH_MEMORY:
  case ERROR_OUTOFMEMORY:
  case ERROR_COMMITMENT_LIMIT:
  case ERROR_NO_SYSTEM_RESOURCES:
  case ERROR_PAGEFILE_QUOTA:
  case ERROR_WORKING_SET_QUOTA:
    return ENOMEM;
  case ERROR_ACCESS_DENIED:
    return EACCES;
  case ERROR_CALL_NOT_IMPLEMENTED:
  case ERROR_NOT_SUPPORTED:
    return ENOSYS;
  case ERROR_INVALID_ADDRESS:
  case ERROR_INVALID_PARAMETER:
  default:
    return EINVAL;
  }
}

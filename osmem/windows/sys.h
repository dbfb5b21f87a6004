/*
 * Every Win32 call the Windows backend makes that a test may want to fail
 * goes through this table, and nowhere else (as osmem/posix/sys.h does for
 * system calls). Tests replace entries to make a call fail (with
 * SetLastError) or return what they choose; osmem__windows_sys_reset()
 * puts the real calls back. The counted wrappers keep osmem_stats honest
 * whichever entry is installed.
 *
 * VirtualAlloc2 and DiscardVirtualMemory exist only on newer Windows
 * (10 1803, 8.1): they are looked up in kernelbase.dll at init, and the
 * entries are NULL where they are missing (Wine 8.0 has the first only).
 */
#ifndef OSMEM_WINDOWS_SYS_H
#define OSMEM_WINDOWS_SYS_H

#include <windows.h>

#include "../backend.h"

typedef PVOID(WINAPI *osmem__virtual_alloc2_fn)(HANDLE, PVOID, SIZE_T, ULONG,
                                                ULONG, MEM_EXTENDED_PARAMETER *,
                                                ULONG);
typedef DWORD(WINAPI *osmem__discard_fn)(PVOID, SIZE_T);

struct osmem__windows_sys {
  LPVOID(WINAPI *VirtualAlloc)(LPVOID, SIZE_T, DWORD, DWORD);
  osmem__virtual_alloc2_fn VirtualAlloc2; /* NULL where missing */
  BOOL(WINAPI *VirtualFree)(LPVOID, SIZE_T, DWORD);
  BOOL(WINAPI *VirtualProtect)(LPVOID, SIZE_T, DWORD, PDWORD);
  SIZE_T(WINAPI *VirtualQuery)(LPCVOID, PMEMORY_BASIC_INFORMATION, SIZE_T);
  LPVOID(WINAPI *VirtualAllocExNuma)(HANDLE, LPVOID, SIZE_T, DWORD, DWORD,
                                     DWORD);
  osmem__discard_fn DiscardVirtualMemory; /* NULL where missing */
  BOOL(WINAPI *GlobalMemoryStatusEx)(LPMEMORYSTATUSEX);
  BOOL(WINAPI *QueryInformationJobObject)(HANDLE, JOBOBJECTINFOCLASS, LPVOID,
                                          DWORD, LPDWORD);
};

/* The table in use. Tests may assign entries. */
OSMEM_HIDDEN extern struct osmem__windows_sys osmem__windows_sys;
/* Puts the real calls back (looking up the optional ones once). */
OSMEM_HIDDEN void osmem__windows_sys_reset(void);
/* Fills the optional entries, once per process (osmem__os_init). */
OSMEM_HIDDEN void osmem__windows_sys_lookup(void);

/* Counted calls: each bumps its osmem__os_count counter (maps, unmaps,
 * madvise, mbind, mprotect), then calls the table; GetLastError() is as the
 * call left it. */
OSMEM_HIDDEN void *osmem__windows_alloc(void *at, size_t size, DWORD type,
                                        DWORD prot);
/* VirtualAlloc2 with an alignment requirement; NULL and
 * ERROR_CALL_NOT_IMPLEMENTED (not counted) where it is missing. */
OSMEM_HIDDEN void *osmem__windows_alloc_aligned(size_t size, size_t align,
                                                DWORD type, DWORD prot);
OSMEM_HIDDEN bool osmem__windows_free(void *p, size_t size, DWORD type);
OSMEM_HIDDEN bool osmem__windows_protect(void *p, size_t size, DWORD prot);
/* VirtualAlloc(MEM_COMMIT) of pages already reserved: counted as mprotect,
 * the call that does this on POSIX. */
OSMEM_HIDDEN bool osmem__windows_commit(void *p, size_t size, DWORD prot);
OSMEM_HIDDEN void *osmem__windows_alloc_numa(void *p, size_t size, DWORD type,
                                             DWORD node);
/* DiscardVirtualMemory, or VirtualAlloc(MEM_RESET) where it is missing
 * (eager) or always (lazy); true on success. Counted as madvise. */
OSMEM_HIDDEN bool osmem__windows_reset(void *p, size_t size, bool eager);

/* The errno value the library documents for a Win32 error code. */
OSMEM_HIDDEN int osmem__windows_errno(DWORD err);

#endif /* OSMEM_WINDOWS_SYS_H */

/* Facts and helpers the Windows backend's files share. */
#ifndef OSMEM_WINDOWS_MACHINE_H
#define OSMEM_WINDOWS_MACHINE_H

#include <stddef.h>
#include <stdint.h>
#include <windows.h>

#include "../backend.h"

/* Fixed by osmem__os_init (GetSystemInfo): the page size, the allocation
 * granularity (every VirtualAlloc reservation starts on it, 64 KiB) and the
 * highest address a process may use. */
OSMEM_HIDDEN extern size_t osmem__windows_page_size;
OSMEM_HIDDEN extern size_t osmem__windows_granularity;
OSMEM_HIDDEN extern uintptr_t osmem__windows_max_address;

/* ------------------------------------------ the allocation table (allocs.c)
 * Every allocation the backend makes (reservations and bookkeeping), so
 * that sub-ranges can be given back although VirtualFree(MEM_RELEASE) frees
 * only a whole allocation. Lock held for all of these. */

/* Room for one more entry, and for n allocations undone on the way whose
 * release may be refused: 0 or ENOMEM. Made before the allocation it is
 * for, so that an allocation is never made that cannot be recorded. */
OSMEM_HIDDEN int osmem__windows_track_room(size_t n);
/* Records a fresh allocation (after track_room). inaccessible: reserved
 * only, the caller commits pieces (osmem_reserve's). */
OSMEM_HIDDEN void osmem__windows_track(void *base, size_t size,
                                       bool inaccessible);
/* Records an allocation nobody uses whose release the OS refused (after
 * track_room): osmem__os_retry_discards releases it. */
OSMEM_HIDDEN void osmem__windows_track_given_back(void *base, size_t size);
/* Whether addr lies in a live inaccessible allocation. */
OSMEM_HIDDEN bool osmem__windows_in_inaccessible(uintptr_t addr);

/* ------------------------------------------------ walking regions
 * Calls fn for each piece of [p, p + size) that lies in one region of
 * VirtualQuery (one allocation, one state): most Virtual* calls refuse a
 * range that spans two allocations, and pool ranges may (adjacent
 * reservations coalesce). Stops at the first non-zero return and returns
 * it; EFAULT when VirtualQuery cannot describe an address. */
typedef int (*osmem__windows_piece_fn)(void *ctx, void *p, size_t size,
                                       const MEMORY_BASIC_INFORMATION *mbi);
OSMEM_HIDDEN int osmem__windows_each_region(void *p, size_t size,
                                            osmem__windows_piece_fn fn,
                                            void *ctx);

/* ------------------------------------------------- NUMA (numa.c) */
OSMEM_HIDDEN void osmem__windows_numa_init(void);

/* ------------------------------------------ memory (meminfo.c) */
/* Installed RAM (GlobalMemoryStatusEx), 0 if unknown. */
OSMEM_HIDDEN uint64_t osmem__windows_ram(void);
/* The lowest memory limit of the process's job object (per process or for
 * the whole job), OSMEM_UNLIMITED when none. */
OSMEM_HIDDEN uint64_t osmem__windows_job_limit(void);

#endif /* OSMEM_WINDOWS_MACHINE_H */

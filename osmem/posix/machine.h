/* Facts the POSIX backend's files share, fixed by osmem__os_init. */
#ifndef OSMEM_POSIX_MACHINE_H
#define OSMEM_POSIX_MACHINE_H

#include <stddef.h>

#include "../backend.h"

OSMEM_HIDDEN extern size_t osmem__posix_page_size;

/* Reads a small file (from /proc or /sys) into buf, NUL-terminated, with no
 * allocation: the number of bytes read (at most size - 1), or -1. */
OSMEM_HIDDEN long osmem__posix_read_file(const char *path, char *buf,
                                         size_t size);

/* Installed RAM in bytes, 0 if unknown (meminfo.c). */
OSMEM_HIDDEN uint64_t osmem__posix_ram(void);

/* Reads the NUMA topology the process may use (numa.c). */
OSMEM_HIDDEN void osmem__posix_numa_init(void);

#endif /* OSMEM_POSIX_MACHINE_H */

/*
 * The memory limit of the process's cgroup, read from /proc/self/cgroup,
 * /proc/self/mountinfo and the cgroup file systems (v1, v2, or both on a
 * hybrid system). Runtime detection only: where there is no /proc or no
 * cgroup file system the answer is simply "none found".
 */
#ifndef OSMEM_POSIX_CGROUP_H
#define OSMEM_POSIX_CGROUP_H

#include <stdint.h>

#include "../backend.h"

struct osmem__cgroup_limits {
  /* The lowest hard limit in bytes on the path from the process's cgroup up
   * to the root of each hierarchy mounted (v2 memory.max, v1
   * memory.limit_in_bytes), or UINT64_MAX when there is none. */
  uint64_t max;
  /* The lowest v2 memory.high on the same path, or UINT64_MAX. */
  uint64_t high;
  /* 0: no memory controller found for the process; 1 or 2: the cgroup
   * version that gave `max` (when both versions have a memory controller
   * and give the same value, or none: 2). */
  unsigned version;
};

/*
 * Fills *out (nothing happens when out is NULL). `root` is prepended to every
 * absolute path read: "" (or NULL) on a real system, a directory holding a
 * fixture tree (proc/self/cgroup, proc/self/mountinfo, sys/fs/cgroup/...)
 * in tests.
 *
 * Never fails and never allocates: a file that is missing or unreadable, or
 * whose contents make no sense, counts as "no limit there". The values read:
 * a decimal number of bytes (optionally followed by white space); "max" and
 * "-1" mean no limit, and so does anything of 2^62 bytes or more (v1 writes
 * its "unlimited" as LONG_MAX rounded down to a page); 0 and anything else
 * are ignored.
 *
 * Files are read through the backend's system-call table (sys.h), into
 * static buffers: callers serialise (the library calls it with the pool lock
 * held). errno is preserved.
 */
OSMEM_HIDDEN void osmem__cgroup_read(const char *root,
                                     struct osmem__cgroup_limits *out);

#endif /* OSMEM_POSIX_CGROUP_H */

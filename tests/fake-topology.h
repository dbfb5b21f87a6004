/*
 * A made-up NUMA topology for the POSIX backend, read at init through its
 * system-call table: nodes 0, 1 and 70 (70 lies outside the 64-bit mask).
 * Lets the per-node paths run on a one-node machine. Needs libnuma's
 * <numaif.h> for MPOL_F_MEMS_ALLOWED.
 */
#ifndef OSMEM_TESTS_FAKE_TOPOLOGY_H
#define OSMEM_TESTS_FAKE_TOPOLOGY_H

#include <errno.h>
#include <limits.h>
#include <numaif.h>
#include <string.h>

static long fake_mems_allowed(int *mode, unsigned long *nodemask,
                              unsigned long maxnode, void *addr,
                              unsigned long flags) {
  (void)mode, (void)addr;
  if (!(flags & MPOL_F_MEMS_ALLOWED) || !nodemask || maxnode < 72) {
    errno = EINVAL;
    return -1;
  }
  const size_t bits = sizeof(unsigned long) * CHAR_BIT;
  memset(nodemask, 0, (maxnode + bits - 1) / bits * sizeof(unsigned long));
  nodemask[0] |= 3; /* nodes 0 and 1 */
  nodemask[70 / bits] |= 1UL << (70 % bits);
  return 0;
}

#endif /* OSMEM_TESTS_FAKE_TOPOLOGY_H */

/*
 * NUMA on POSIX systems: the nodes this process may allocate on, and mbind.
 * With libnuma, the allowed set is read with get_mempolicy(MPOL_F_MEMS_ALLOWED)
 * (cpusets and `numactl --membind` show there). Only libnuma's thin system
 * call wrappers are used: its higher-level calls print warnings to stderr,
 * which a library must not do. Without libnuma, or on a kernel without NUMA,
 * there is one node, 0, and binding to it does nothing.
 */
#include <config.h>

#include <errno.h>
#include <limits.h>
#include <stdbool.h>

#include "machine.h"
#include "sys.h"

#ifdef HAVE_LIBNUMA
#include <numaif.h>
#endif

/* Node ids below this are supported (Linux allows up to 1024 on x86-64). */
#define MAX_NODES 4096
#define LONG_BITS (sizeof(unsigned long) * CHAR_BIT)

static unsigned long allowed[MAX_NODES / LONG_BITS];
static unsigned allowed_count = 1;
static bool have_numa;

static bool bit_set(const unsigned long *mask, unsigned bit) {
  return (mask[bit / LONG_BITS] >> (bit % LONG_BITS)) & 1;
}

void osmem__posix_numa_init(void) {
  allowed[0] = 1;
  allowed_count = 1;
  have_numa = false;
#ifdef HAVE_LIBNUMA
  unsigned long mask[MAX_NODES / LONG_BITS] = {0};
  if (osmem__posix_sys.get_mempolicy(NULL, mask, MAX_NODES, NULL,
                                     MPOL_F_MEMS_ALLOWED) != 0)
    return;
  unsigned count = 0;
  for (unsigned node = 0; node < MAX_NODES; node++) count += bit_set(mask, node);
  if (count == 0) return;
  for (size_t i = 0; i < MAX_NODES / LONG_BITS; i++) allowed[i] = mask[i];
  allowed_count = count;
  have_numa = true;
#endif
}

bool osmem__os_node_allowed(unsigned node) {
  return node < MAX_NODES && bit_set(allowed, node);
}

unsigned osmem__os_numa_nodes(void) { return allowed_count; }

uint64_t osmem__os_numa_mask(void) {
  uint64_t mask = 0;
  for (unsigned node = 0; node < 64; node++)
    if (bit_set(allowed, node)) mask |= (uint64_t)1 << node;
  return mask;
}

int osmem__os_bind(void *p, size_t size, unsigned node) {
  (void)p, (void)size;
  if (!osmem__os_node_allowed(node)) return EINVAL;
  if (!have_numa) return 0; /* the only node: nothing to do */
#ifdef HAVE_LIBNUMA
  unsigned long mask[MAX_NODES / LONG_BITS] = {0};
  mask[node / LONG_BITS] = 1UL << (node % LONG_BITS);
  /* The kernel reads maxnode - 1 bits: pass one more than the highest node's
   * bit count, or that node silently falls off the mask. MPOL_MF_MOVE moves
   * pages already present (pooled memory) where it can. */
  if (osmem__posix_mbind(p, size, MPOL_BIND, mask, node + 2, MPOL_MF_MOVE) != 0)
    return errno;
#endif
  return 0;
}

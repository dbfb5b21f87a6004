/*
 * NUMA on POSIX systems: the nodes this process may allocate on, node facts,
 * and mbind.
 *
 * The allowed set is built from the sets the kernel gives, never assumed
 * contiguous: the nodes of the process's cpuset (get_mempolicy with
 * MPOL_F_MEMS_ALLOWED; the kernel keeps a cpuset's nodes within those that
 * have memory, so memoryless nodes never appear), narrowed by the task's own
 * MPOL_BIND policy if it has one (`numactl --membind`). Only libnuma's thin
 * system call
 * wrappers are used: its higher-level calls print warnings to stderr, which a
 * library must not do. Without libnuma, or on a kernel without NUMA, there is
 * one node, 0, and binding to it does nothing.
 */
#include <config.h>

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "machine.h"
#include "osmem.h"
#include "sys.h"

#ifdef HAVE_LIBNUMA
#include <numaif.h>
#endif

#define MAX_NODES OSMEM__MAX_NODES
#define LONG_BITS (sizeof(unsigned long) * CHAR_BIT)
#define MASK_LONGS (MAX_NODES / LONG_BITS)

static unsigned long allowed[MASK_LONGS];
static unsigned allowed_count = 1;
static size_t allowed_limit = 1; /* highest allowed node + 1 */
static bool have_numa;
static unsigned configured_count = 1; /* nodes with memory, allowed or not */

static bool bit_set(const unsigned long *mask, unsigned bit) {
  return bit < MAX_NODES && (mask[bit / LONG_BITS] >> (bit % LONG_BITS)) & 1;
}

static void set_bit(unsigned long *mask, unsigned bit) {
  mask[bit / LONG_BITS] |= 1UL << (bit % LONG_BITS);
}

/* Parses a kernel node list ("0-1,3\n") into mask; false if malformed. */
static bool parse_node_list(const char *text, unsigned long *mask) {
  for (size_t i = 0; i < MASK_LONGS; i++) mask[i] = 0;
  const char *s = text;
  while (*s && *s != '\n') {
    char *end;
    unsigned long lo = strtoul(s, &end, 10), hi = lo;
    if (end == s || lo >= MAX_NODES) return false;
    s = end;
    if (*s == '-') {
      hi = strtoul(s + 1, &end, 10);
      if (end == s + 1 || hi >= MAX_NODES || hi < lo) return false;
      s = end;
    }
    for (unsigned long n = lo; n <= hi; n++) set_bit(mask, (unsigned)n);
    if (*s == ',') s++;
    else if (*s && *s != '\n') return false;
  }
  return true;
}

/* Reads a node list from sysfs into mask; false if unreadable. */
static bool read_node_list(const char *path, unsigned long *mask) {
  char buf[4096];
  return osmem__posix_read_file(path, buf, sizeof buf) > 0 &&
         parse_node_list(buf, mask);
}

static void set_single_node(void) {
  configured_count = 1;
  for (size_t i = 0; i < MASK_LONGS; i++) allowed[i] = 0;
  allowed[0] = 1;
  allowed_count = 1;
  allowed_limit = 1;
  have_numa = false;
}

#ifdef HAVE_LIBNUMA
/* Nodes with memory on the machine (libnuma's configured nodes), from
 * sysfs; at least the allowed count when sysfs cannot say. */
static unsigned count_configured(unsigned at_least) {
  unsigned long mask[MASK_LONGS];
  if (!read_node_list("/sys/devices/system/node/has_memory", mask) &&
      !read_node_list("/sys/devices/system/node/online", mask))
    return at_least;
  unsigned count = 0;
  for (unsigned node = 0; node < MAX_NODES; node++) count += bit_set(mask, node);
  return count > at_least ? count : at_least;
}

/* Flags the kernel ORs into a policy's mode (<linux/mempolicy.h>:
 * MPOL_F_STATIC_NODES, MPOL_F_RELATIVE_NODES, MPOL_F_NUMA_BALANCING). */
#define MODE_FLAGS ((1 << 15) | (1 << 14) | (1 << 13))

/* The cpuset's nodes, narrowed by a task-wide MPOL_BIND. false when the
 * kernel has no NUMA. */
static bool read_allowed(unsigned long *mask) {
  if (osmem__posix_sys.get_mempolicy(NULL, mask, MAX_NODES, NULL,
                                     MPOL_F_MEMS_ALLOWED) != 0)
    return false;
  unsigned long bound[MASK_LONGS] = {0};
  int mode = -1;
  if (osmem__posix_sys.get_mempolicy(&mode, bound, MAX_NODES, NULL, 0) == 0 &&
      (mode & ~MODE_FLAGS) == MPOL_BIND)
    for (size_t i = 0; i < MASK_LONGS; i++) mask[i] &= bound[i];
  return true;
}
#endif

void osmem__posix_numa_init(void) {
  set_single_node();
#ifdef HAVE_LIBNUMA
  unsigned long mask[MASK_LONGS] = {0};
  if (!read_allowed(mask)) return;
  unsigned count = 0, limit = 0;
  for (unsigned node = 0; node < MAX_NODES; node++)
    if (bit_set(mask, node)) count++, limit = node + 1;
  if (count == 0) return;
  for (size_t i = 0; i < MASK_LONGS; i++) allowed[i] = mask[i];
  allowed_count = count;
  allowed_limit = limit;
  have_numa = true;
  configured_count = count_configured(count);
#endif
}

bool osmem__os_node_allowed(unsigned node) { return bit_set(allowed, node); }
unsigned osmem__os_numa_nodes(void) { return allowed_count; }
unsigned osmem__os_numa_nodes_configured(void) { return configured_count; }
bool osmem__os_numa_available(void) { return have_numa; }

bool osmem__os_numa_supported(void) {
#ifdef HAVE_LIBNUMA
  return true;
#else
  return false;
#endif
}
size_t osmem__os_numa_limit(void) { return allowed_limit; }

/* ------------------------------------------------------------ node facts */

static void node_path(char *buf, size_t size, unsigned node, const char *file) {
  /* "/sys/devices/system/node/node" + up to 4 digits + "/" + file */
  size_t n = 0;
  const char *prefix = "/sys/devices/system/node/node";
  while (*prefix && n + 1 < size) buf[n++] = *prefix++;
  char digits[8];
  int d = 0;
  do digits[d++] = (char)('0' + node % 10); while ((node /= 10) && d < 7);
  while (d > 0 && n + 1 < size) buf[n++] = digits[--d];
  if (n + 1 < size) buf[n++] = '/';
  while (*file && n + 1 < size) buf[n++] = *file++;
  buf[n] = '\0';
}

uint64_t osmem__os_node_memory(unsigned node) {
  if (!have_numa) return node == 0 ? osmem__posix_ram() : 0;
  char path[96], buf[4096];
  node_path(path, sizeof path, node, "meminfo");
  if (osmem__posix_read_file(path, buf, sizeof buf) <= 0) return 0;
  /* "Node 1 MemTotal:       524288 kB" */
  const char *s = strstr(buf, "MemTotal:");
  if (!s) return 0;
  char *end;
  unsigned long long kb = strtoull(s + 9, &end, 10);
  return end == s + 9 ? 0 : (uint64_t)kb * 1024;
}

int osmem__os_node_distance(unsigned from, unsigned to) {
  if (!have_numa) return from == 0 && to == 0 ? 10 : -1;
  /* nodeN/distance lists one distance per online node, in id order. */
  unsigned long online[MASK_LONGS];
  if (!read_node_list("/sys/devices/system/node/online", online)) return -1;
  if (!bit_set(online, from) || !bit_set(online, to)) return -1;
  char path[96], buf[4096];
  node_path(path, sizeof path, from, "distance");
  if (osmem__posix_read_file(path, buf, sizeof buf) <= 0) return -1;
  const char *s = buf;
  for (unsigned node = 0; node <= to; node++) {
    if (!bit_set(online, node)) continue;
    char *end;
    long d = strtol(s, &end, 10);
    if (end == s) return -1;
    if (node == to) return d > 0 && d < 256 ? (int)d : -1;
    s = end;
  }
  return -1;
}

/* ---------------------------------------------------------------- binding */

#ifdef HAVE_LIBNUMA
static int mbind_nodes(void *p, size_t size, int mode,
                       const unsigned long *mask, size_t limit,
                       unsigned flags) {
  /* The kernel reads maxnode - 1 bits: pass one more than the highest
   * node's bit count, or that node silently falls off the mask. */
  if (osmem__posix_mbind(p, size, mode, mask, limit + 1, flags) != 0)
    return errno;
  return 0;
}
#endif

int osmem__os_bind(void *p, size_t size, unsigned node, int policy) {
  (void)p, (void)size, (void)policy;
  if (!osmem__os_node_allowed(node)) return EINVAL;
  if (!have_numa) return 0; /* the only node: nothing to do */
#ifdef HAVE_LIBNUMA
  unsigned long mask[MASK_LONGS] = {0};
  set_bit(mask, node);
  /* MPOL_MF_MOVE moves pages already present (pooled memory) where it can;
   * MPOL_MF_STRICT alone only reports those on another node (EIO). */
  int mode = policy == OSMEM_NUMA_PREFERRED ? MPOL_PREFERRED : MPOL_BIND;
  unsigned flags = policy == OSMEM_NUMA_STRICT_NO_MOVE ? MPOL_MF_STRICT
                                                       : MPOL_MF_MOVE;
  return mbind_nodes(p, size, mode, mask, node + 1, flags);
#else
  return 0;
#endif
}

int osmem__os_interleave(void *p, size_t size) {
  (void)p, (void)size;
  if (!have_numa || allowed_count < 2) return 0;
#ifdef HAVE_LIBNUMA
  return mbind_nodes(p, size, MPOL_INTERLEAVE, allowed, allowed_limit,
                     MPOL_MF_MOVE);
#else
  return 0;
#endif
}

/* NUMA: topology queries, binding, and get_mblocks_on_node. The same cases
 * run on wasm, which has one node (binding to it does nothing, any other is
 * EINVAL) and no libnuma: the cases that inject mbind and get_mempolicy
 * through libnuma, or read the kernel's policy back, are built only with
 * libnuma (never on wasm). */
#include <config.h>

#include <errno.h>
#include <limits.h>
#include <string.h>

#ifdef HAVE_LIBNUMA /* never on wasm: no libnuma, no mbind */
#include <numaif.h>

#include "../osmem/posix/sys.h"
#endif
#include "helpers.h"

#define MB OSMEM_MBLOCK_SIZE

static unsigned popcount64(uint64_t x) {
  unsigned c = 0;
  for (; x; x &= x - 1) c++;
  return c;
}

/* Node ids this process may not use: the node count (when the nodes are
 * exactly the bits of the mask, so ids are 0..nodes-1 or sparse below 64 and
 * `nodes` is not one of them), 64 (likewise), 4095 and UINT_MAX. */
static size_t bad_nodes(unsigned out[4]) {
  size_t k = 0;
  unsigned nodes = osmem_numa_nodes();
  uint64_t mask = osmem_numa_mask();
  if (nodes < 64 && popcount64(mask) == nodes) {
    if (!((mask >> nodes) & 1)) out[k++] = nodes;
    out[k++] = 64;
  }
  out[k++] = 4095;
  out[k++] = UINT_MAX;
  return k;
}

/* -------------------------------------------------------------- topology */

Test(numa, nodes_and_mask_agree) {
  unsigned nodes = osmem_numa_nodes();
  uint64_t mask = osmem_numa_mask();
  cr_assert_geq(nodes, 1);
  if (nodes <= 64)
    cr_assert_eq(popcount64(mask), nodes, "mask %#llx, %u nodes",
                 (unsigned long long)mask, nodes);
  cr_assert(mask & 1, "node 0 missing from mask %#llx", (unsigned long long)mask);
  cr_assert_eq(osmem_numa_nodes(), nodes, "second call differs");
  cr_assert_eq(osmem_numa_mask(), mask, "second call differs");
}

/* ------------------------------------------------------------------ bind */

Test(numa, bind_run_to_node0) {
  char *p = osmem_get_mblocks(2);
  cr_assert_not_null(p);
  struct osmem_stats s0 = stats_now();
  cr_assert_eq(osmem_bind_to_node(p, 2 * MB, 0), 0);
  uint64_t moved = stats_now().os_mbind - s0.os_mbind;
  cr_assert_leq(moved, 1, "one bind made %llu mbind calls",
                (unsigned long long)moved);
  p[0] = p[2 * MB - 1] = 1; /* still usable */
  /* A size that is not a page multiple is rounded up, not refused. */
  cr_assert_eq(osmem_bind_to_node(p, 1, 0), 0);
  cr_assert_eq(osmem_bind_to_node(p, osmem_page_size() + 1, 0), 0);
  assert_invariants();
}

Test(numa, bind_to_nonexistent_node_is_einval) {
  char *p = osmem_get_mblocks(1);
  cr_assert_not_null(p);
  unsigned bad[4];
  size_t k = bad_nodes(bad);
  struct osmem_stats s0 = stats_now();
  for (size_t i = 0; i < k; i++) {
    errno = 0;
    cr_assert_eq(osmem_bind_to_node(p, MB, bad[i]), EINVAL, "node %u", bad[i]);
  }
  cr_assert_eq(stats_now().os_mbind, s0.os_mbind, "mbind called for a bad node");
}

Test(numa, bind_bad_arguments_are_einval) {
  char *p = osmem_get_mblocks(1);
  cr_assert_not_null(p);
  size_t page = osmem_page_size();
  struct osmem_stats s0 = stats_now();
  cr_assert_eq(osmem_bind_to_node(NULL, MB, 0), EINVAL);
  cr_assert_eq(osmem_bind_to_node(p + 1, MB - page, 0), EINVAL);
  cr_assert_eq(osmem_bind_to_node(p + page / 2, page, 0), EINVAL);
  cr_assert_eq(osmem_bind_to_node(p, 0, 0), EINVAL);
  /* p + size overflows. */
  void *top = (void *)(UINTPTR_MAX & ~(uintptr_t)(page - 1));
  cr_assert_eq(osmem_bind_to_node(top, 2 * page, 0), EINVAL);
  cr_assert_eq(osmem_bind_to_node(p, SIZE_MAX, 0), EINVAL);
  cr_assert_eq(stats_now().os_mbind, s0.os_mbind, "mbind called for bad args");
}

/* ------------------------------------------------------------ get on node */

Test(numa, get_on_node0_is_aligned_heap) {
  char *p = osmem_get_mblocks_on_node(2, 0);
  cr_assert_not_null(p, "get_on_node(2, 0): %s", strerror(errno));
  cr_assert(is_mblock_aligned(p));
  cr_assert(osmem_is_heap(p) && osmem_is_heap(p + 2 * MB - 1));
  p[0] = p[2 * MB - 1] = 1;
  struct osmem_stats s = stats_now();
  cr_assert_eq(s.mblocks_in_use, 2);
  cr_assert_leq(s.os_mbind, 1);
  cr_assert_eq(osmem_free_mblocks(p, 2), 0);
  assert_invariants();
}

Test(numa, get_on_nonexistent_node_allocates_nothing) {
  unsigned bad[4];
  size_t k = bad_nodes(bad);
  struct osmem_stats s0 = stats_now();
  for (size_t i = 0; i < k; i++) {
    errno = 0;
    cr_assert_null(osmem_get_mblocks_on_node(1, bad[i]), "node %u", bad[i]);
    cr_assert_eq(errno, EINVAL, "node %u: errno %d", bad[i], errno);
  }
  struct osmem_stats s1 = stats_now();
  cr_assert_eq(s1.mblocks_in_use, s0.mblocks_in_use);
  cr_assert_eq(s1.os_maps, s0.os_maps);
  cr_assert_eq(s1.os_mbind, s0.os_mbind);
  cr_assert_eq(s1.bytes_mapped, s0.bytes_mapped);
}

Test(numa, get_on_node_zero_count_is_einval) {
  struct osmem_stats s0 = stats_now();
  errno = 0;
  cr_assert_null(osmem_get_mblocks_on_node(0, 0));
  cr_assert_eq(errno, EINVAL);
  errno = 0;
  cr_assert_null(osmem_get_mblocks_on_node(0, UINT_MAX));
  cr_assert_eq(errno, EINVAL);
  struct osmem_stats s1 = stats_now();
  cr_assert_eq(memcmp(&s0, &s1, sizeof s0), 0, "statistics changed");
}

Test(numa, get_on_node_overflow_is_enomem) {
  struct osmem_stats s0 = stats_now();
  errno = 0;
  cr_assert_null(osmem_get_mblocks_on_node(SIZE_MAX, 0));
  cr_assert_eq(errno, ENOMEM);
  struct osmem_stats s1 = stats_now();
  cr_assert_eq(s1.os_maps, s0.os_maps);
  cr_assert_eq(s1.os_mbind, s0.os_mbind);
}

/* --------------------------------------------------------- mbind failure */

#ifndef HAVE_LIBNUMA /* as on wasm, which has no mbind to fail */
Test(numa, mbind_failure_returns_run_to_pool) {
  cr_skip_test("built without libnuma: osmem never calls mbind");
}
#else
/* Whether binding really calls mbind here: a build with libnuma on a kernel
 * that reports NUMA. Found by binding a scratch run and watching os_mbind. */
static bool mbind_is_live(void) {
  void *p = osmem_get_mblocks(1);
  cr_assert_not_null(p);
  uint64_t before = stats_now().os_mbind;
  cr_assert_eq(osmem_bind_to_node(p, MB, 0), 0);
  bool live = stats_now().os_mbind != before;
  cr_assert_eq(osmem_free_mblocks(p, 1), 0);
  return live;
}

static long mbind_eio(void *addr, unsigned long len, int mode,
                      const unsigned long *nodemask, unsigned long maxnode,
                      unsigned flags) {
  (void)addr, (void)len, (void)mode, (void)nodemask, (void)maxnode, (void)flags;
  errno = EIO;
  return -1;
}

typedef long (*mbind_fn)(void *, unsigned long, int, const unsigned long *,
                         unsigned long, unsigned);

/* A failed bind of a node's new reservation gives the reservation back and
 * reports its error, with nothing else changed; a later get with a working
 * mbind (`then`, NULL for the real one) makes and binds a new one. */
static void assert_bind_failure_returns_to_pool(mbind_fn then) {
  char *keep = osmem_get_mblocks(1); /* so the pool and carve are not empty */
  cr_assert_not_null(keep);
  struct osmem_stats s0 = stats_now();
  osmem__posix_sys.mbind = mbind_eio;
  errno = 0;
  void *p = osmem_get_mblocks_on_node(3, 0);
  int err = errno;
  osmem__posix_sys_reset();
  cr_assert_null(p);
  cr_assert_eq(err, EIO, "errno %d, not EIO", err);
  struct osmem_stats s1 = stats_now();
  cr_assert_eq(s1.mblocks_in_use, s0.mblocks_in_use);
  cr_assert_eq(s1.mblocks_pooled, s0.mblocks_pooled);
  cr_assert_eq(s1.bytes_mapped, s0.bytes_mapped);
  cr_assert_eq(s1.os_mbind, s0.os_mbind + 1);
  assert_invariants();
  if (then) osmem__posix_sys.mbind = then;
  char *q = osmem_get_mblocks_on_node(3, 0);
  osmem__posix_sys_reset();
  cr_assert_not_null(q, "after reset: %s", strerror(errno));
  struct osmem_stats s2 = stats_now();
  cr_assert_eq(s2.os_mbind, s1.os_mbind + 1, "the new reservation, bound once");
  cr_assert(osmem_is_heap(q) && osmem_is_heap(q + 3 * MB - 1));
  assert_invariants();
}

Test(numa, mbind_failure_returns_run_to_pool) {
  if (!mbind_is_live())
    cr_skip_test("the kernel reports no NUMA: osmem never calls mbind");
  pool_direct();
  assert_bind_failure_returns_to_pool(NULL);
}

#include "fake-topology.h"

static struct {
  int calls, mode;
  unsigned long maxnode, mask[4];
  unsigned flags;
} seen;

static long record_mbind(void *addr, unsigned long len, int mode,
                         const unsigned long *nodemask, unsigned long maxnode,
                         unsigned flags) {
  (void)addr, (void)len;
  seen.calls++;
  seen.mode = mode;
  seen.maxnode = maxnode;
  seen.flags = flags;
  memset(seen.mask, 0, sizeof seen.mask);
  const size_t bits = sizeof(unsigned long) * CHAR_BIT;
  /* The kernel reads maxnode - 1 bits. */
  for (unsigned long b = 0; b + 1 < maxnode && b < 4 * bits; b++)
    if ((nodemask[b / bits] >> (b % bits)) & 1) seen.mask[b / bits] |= 1UL << (b % bits);
  return 0;
}

static void fake_topology(void) {
  osmem__posix_sys.get_mempolicy = fake_mems_allowed;
  cr_assert_eq(osmem_init(), 0); /* reads the topology now */
  osmem__posix_sys_reset();
}

Test(numa, faked_topology_counts_and_masks) {
  fake_topology();
  cr_assert_eq(osmem_numa_nodes(), 3);
  cr_assert_eq(osmem_numa_mask(), 3, "mask %#llx",
               (unsigned long long)osmem_numa_mask());
  char *p = osmem_get_mblocks(1);
  cr_assert_not_null(p);
  unsigned bad[] = {2, 64, 69, 71, 4095, UINT_MAX};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cr_assert_eq(osmem_bind_to_node(p, MB, bad[i]), EINVAL, "node %u", bad[i]);
    cr_assert_null(osmem_get_mblocks_on_node(1, bad[i]), "node %u", bad[i]);
  }
  cr_assert_eq(stats_now().mblocks_in_use, 1);
}

/* The node asked for is the one bit the kernel reads. */
static void assert_bind_passes_node(char *p, unsigned node) {
  const size_t bits = sizeof(unsigned long) * CHAR_BIT;
  memset(&seen, 0, sizeof seen);
  osmem__posix_sys.mbind = record_mbind;
  int r = osmem_bind_to_node(p, MB, node);
  osmem__posix_sys_reset();
  cr_assert_eq(r, 0, "bind to node %u: %d", node, r);
  cr_assert_eq(seen.calls, 1);
  cr_assert_eq(seen.mode, MPOL_BIND);
  cr_assert(seen.flags & MPOL_MF_MOVE, "present pages not migrated: flags %#x",
            seen.flags);
  cr_assert_gt(seen.maxnode, node + 1, "maxnode %lu drops node %u",
               seen.maxnode, node);
  for (size_t w = 0; w < 4; w++)
    cr_assert_eq(seen.mask[w], w == node / bits ? 1UL << (node % bits) : 0,
                 "node %u: mask word %zu = %#lx", node, w, seen.mask[w]);
}

Test(numa, faked_topology_bind_passes_node) {
  fake_topology();
  char *p = osmem_get_mblocks(1);
  cr_assert_not_null(p);
  struct osmem_stats s0 = stats_now();
  assert_bind_passes_node(p, 0);
  assert_bind_passes_node(p, 1);
  assert_bind_passes_node(p, 70);
  cr_assert_eq(stats_now().os_mbind, s0.os_mbind + 3);
}

Test(numa, faked_topology_mbind_failure_returns_run_to_pool) {
  fake_topology();
  pool_direct();
  assert_bind_failure_returns_to_pool(record_mbind);
}

/* ---------------------------------------------------- kernel's read-back */

/* Node masks for get_mempolicy: 4096 bits, more than any kernel's node
 * count, in as many unsigned longs as that takes (64, or 128 on 32-bit). */
#define MASK_BITS 4096
#define MASK_LONGS (MASK_BITS / (sizeof(unsigned long) * CHAR_BIT))

static void assert_policy_is_bind_node0(const char *p) {
  int mode = -1;
  unsigned long mask[MASK_LONGS] = {0};
  cr_assert_eq(get_mempolicy(&mode, mask, MASK_BITS, (void *)p, MPOL_F_ADDR), 0,
               "get_mempolicy(%p): %s", (void *)p, strerror(errno));
  cr_assert_eq(mode, MPOL_BIND, "%p: mode %d", (void *)p, mode);
  cr_assert(mask[0] & 1, "%p: node 0 not in mask %#lx", (void *)p, mask[0]);
}

Test(numa, kernel_reads_back_bind_of_get_on_node) {
  if (!mbind_is_live())
    cr_skip_test("the kernel reports no NUMA: osmem never calls mbind");
  char *p = osmem_get_mblocks_on_node(2, 0);
  cr_assert_not_null(p);
  assert_policy_is_bind_node0(p);
  assert_policy_is_bind_node0(p + 2 * MB - 1);
}

Test(numa, kernel_reads_back_bind_to_node) {
  if (!mbind_is_live())
    cr_skip_test("the kernel reports no NUMA: osmem never calls mbind");
  char *p = osmem_get_mblocks(3);
  cr_assert_not_null(p);
  int mode = -1;
  unsigned long mask[MASK_LONGS] = {0};
  cr_assert_eq(get_mempolicy(&mode, mask, MASK_BITS, p + MB, MPOL_F_ADDR), 0);
  cr_assert_eq(mode, MPOL_DEFAULT, "unbound run has a policy already");
  cr_assert_eq(osmem_bind_to_node(p + MB, MB, 0), 0);
  assert_policy_is_bind_node0(p + MB);
  assert_policy_is_bind_node0(p + 2 * MB - 1);
  cr_assert_eq(get_mempolicy(&mode, mask, MASK_BITS, p, MPOL_F_ADDR), 0);
  cr_assert_eq(mode, MPOL_DEFAULT, "bind spilled below the range");
  cr_assert_eq(get_mempolicy(&mode, mask, MASK_BITS, p + 2 * MB, MPOL_F_ADDR),
               0);
  cr_assert_eq(mode, MPOL_DEFAULT, "bind spilled past the range");
}
#endif /* HAVE_LIBNUMA */

#ifndef HAVE_LIBNUMA
/* Without libnuma there is one node and binding to it makes no call. */
Test(numa, without_libnuma_bind_is_noop) {
  cr_assert_eq(osmem_numa_nodes(), 1);
  cr_assert_eq(osmem_numa_mask(), 1);
  char *p = osmem_get_mblocks_on_node(1, 0);
  cr_assert_not_null(p);
  cr_assert_eq(osmem_bind_to_node(p, MB, 0), 0);
  cr_assert_eq(stats_now().os_mbind, 0);
}
#endif

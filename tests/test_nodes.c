/*
 * Per-node pools, placement policies and the node bitmap.
 *
 * The pool-by-node cases run on a made-up topology (nodes 0, 1 and 70) that
 * the POSIX backend reads through its system-call table at init, with mbind
 * recorded instead of made: this machine has one node. The same behaviour on
 * real multi-node kernels is checked under qemu (tests/numa-vm). The fake
 * topology is meaningless on wasm (no get_mempolicy, one node by design), so
 * those cases are POSIX-only; the rest run on both backends.
 */
#include <config.h>

#include <errno.h>
#include <limits.h>
#include <string.h>

#include "helpers.h"

#define MB OSMEM_MBLOCK_SIZE

Test(nodes, bitmap_sizes_like_snprintf) {
  size_t need = osmem_numa_bitmap(NULL, 0);
  cr_assert_geq(need, 1);
  uint64_t bits[4];
  memset(bits, 0xff, sizeof bits);
  cr_assert_eq(osmem_numa_bitmap(bits, 256), need);
  unsigned count = 0;
  for (unsigned i = 0; i < 256; i++) count += (unsigned)(bits[i / 64] >> (i % 64) & 1);
  cr_assert_eq(count, osmem_numa_nodes(), "every allowed node, and only those");
  if (need <= 64) cr_assert_eq(bits[0], osmem_numa_mask());
  /* Bits past nbits are not written. */
  uint64_t word = ~(uint64_t)0;
  osmem_numa_bitmap(&word, 1);
  cr_assert_eq(word >> 1, ~(uint64_t)0 >> 1, "only bit 0 may change");
}

Test(nodes, node_facts_of_node_zero_and_of_no_node) {
  cr_assert_gt(osmem_numa_node_memory(0), 0);
  cr_assert_eq(osmem_numa_distance(0, 0), 10);
  errno = 4242; /* "no such node" is an answer, not an error */
  cr_assert_eq(osmem_numa_node_memory(5000), 0);
  cr_assert_eq(osmem_numa_distance(0, 5000), -1);
  cr_assert_eq(osmem_numa_distance(5000, 0), -1);
  cr_assert_eq(errno, 4242, "errno %d", errno);
}

Test(nodes, policy_setter_refuses_unknown_policies) {
  cr_assert_eq(osmem_set_numa_policy((enum osmem_numa_policy)7), EINVAL);
  cr_assert_eq(osmem_set_numa_policy(OSMEM_NUMA_PREFERRED), 0);
  cr_assert_eq(osmem_set_numa_policy(OSMEM_NUMA_STRICT), 0);
  cr_assert_eq(osmem_set_numa_interleave(true), 0);
  cr_assert_eq(osmem_set_numa_interleave(false), 0);
}

Test(nodes, interleave_with_one_node_makes_no_call) {
  if (osmem_numa_nodes() > 1) cr_skip_test("this machine has several nodes");
  cr_assert_eq(osmem_set_numa_interleave(true), 0);
  struct osmem_stats s0 = stats_now();
  char *p = osmem_get_mblocks(2);
  cr_assert_not_null(p);
  cr_assert_eq(stats_now().os_mbind, s0.os_mbind);
  p[0] = p[2 * MB - 1] = 1;
  cr_assert_eq(osmem_free_mblocks(p, 2), 0);
  assert_invariants();
}

#if !defined(__wasi__) && !defined(_WIN32) /* the fake topology goes
                                             through the POSIX syscall table */
#include <sys/mman.h>

#include "../osmem/posix/sys.h"

#ifdef HAVE_LIBNUMA
#include <numaif.h>

#include "fake-topology.h"

static struct {
  int calls, mode;
  unsigned long maxnode, first_node;
  unsigned flags;
} seen;

static long record_mbind(void *addr, unsigned long len, int mode,
                         const unsigned long *nodemask, unsigned long maxnode,
                         unsigned flags) {
  (void)addr, (void)len;
  const size_t bits = sizeof(unsigned long) * CHAR_BIT;
  seen.calls++;
  seen.flags = flags;
  seen.mode = mode;
  seen.maxnode = maxnode;
  seen.first_node = ULONG_MAX;
  for (unsigned long b = 0; b + 1 < maxnode; b++)
    if ((nodemask[b / bits] >> (b % bits)) & 1) {
      seen.first_node = b;
      break;
    }
  return 0;
}

static long no_numa_mempolicy(int *mode, unsigned long *nodemask,
                              unsigned long maxnode, void *addr,
                              unsigned long flags) {
  (void)mode, (void)nodemask, (void)maxnode, (void)addr, (void)flags;
  errno = ENOSYS;
  return -1;
}

/* A kernel without NUMA (get_mempolicy is ENOSYS, as under qemu-user): init
 * finds the one node, and the caller's errno survives its probe. */
Test(nodes, init_on_a_kernel_without_numa_keeps_errno) {
  osmem__posix_sys.get_mempolicy = no_numa_mempolicy;
  errno = 4242;
  cr_assert_eq(osmem_init(), 0);
  cr_assert_eq(errno, 4242, "errno %d", errno);
  osmem__posix_sys_reset();
  cr_assert_eq(osmem_numa_nodes(), 1);
  cr_assert_not(osmem_numa_available());
}

/* Nodes 0, 1 and 70; mbind recorded, not made. */
static void fake_topology(void) {
  osmem__posix_sys.get_mempolicy = fake_mems_allowed;
  cr_assert_eq(osmem_init(), 0);
  osmem__posix_sys_reset();
  osmem__posix_sys.mbind = record_mbind;
}

Test(nodes, bitmap_shows_nodes_past_64) {
  fake_topology();
  uint64_t bits[2] = {0, 0};
  cr_assert_eq(osmem_numa_bitmap(bits, 128), 71);
  cr_assert_eq(bits[0], 3);
  cr_assert_eq(bits[1], (uint64_t)1 << (70 - 64));
  cr_assert_eq(osmem_numa_mask(), 3, "node 70 does not fit the 64-bit mask");
  cr_assert_eq(osmem_numa_nodes(), 3);
}

Test(nodes, thread_cache_keeps_each_node_apart) {
  fake_topology();
  char *on1 = osmem_get_mblocks_on_node(1, 1);
  char *on70 = osmem_get_mblocks_on_node(1, 70);
  cr_assert(on1 && on70);
  cr_assert_eq(osmem_free_mblocks(on1, 1), 0);
  cr_assert_eq(osmem_free_mblocks(on70, 1), 0);
  struct osmem_stats s = stats_now();
  cr_assert_eq(s.mblocks_cached, 2, "both in this thread's cache");
  /* A plain get takes neither (they are bound); a get for node 70 takes
   * node 70's from the cache, bound already (with its reservation): no
   * call. */
  char *plain = osmem_get_mblocks(1);
  cr_assert(plain && plain != on1 && plain != on70);
  int calls = seen.calls;
  cr_assert_eq(osmem_get_mblocks_on_node(1, 70), on70);
  cr_assert_eq(seen.calls, calls, "no bind for a megablock bound already");
  cr_assert_eq(osmem_get_mblocks_on_node(1, 1), on1);
  cr_assert_eq(stats_now().cache_gets, s.cache_gets + 2);
  cr_assert_eq(osmem_free_mblocks(on1, 1), 0);
  cr_assert_eq(osmem_free_mblocks(on70, 1), 0);
  cr_assert_eq(osmem_free_mblocks(plain, 1), 0);
  assert_invariants();
}

Test(nodes, pooled_megablocks_keep_their_node) {
  fake_topology();
  char *on1 = osmem_get_mblocks_on_node(2, 1);
  cr_assert_not_null(on1);
  cr_assert_eq(seen.first_node, 1);
  cr_assert_eq(osmem_free_mblocks(on1, 2), 0);
  assert_invariants();
  /* A get for node 0 never takes node 1's megablocks. */
  char *on0 = osmem_get_mblocks_on_node(2, 0);
  cr_assert_not_null(on0);
  cr_assert_neq(on0, on1, "node 1's pooled megablocks went to node 0");
  cr_assert_eq(seen.first_node, 0);
  /* A get for node 1 reuses them, with no new mapping. */
  struct osmem_stats s = stats_now();
  cr_assert_eq(osmem_get_mblocks_on_node(2, 1), on1);
  cr_assert_eq(stats_now().os_maps, s.os_maps);
  cr_assert_eq(stats_now().reservations, s.reservations);
  assert_invariants();
}

Test(nodes, plain_get_may_use_a_node_pool_and_frees_go_back_to_it) {
  fake_topology();
  pool_direct();
  char *on70 = osmem_get_mblocks_on_node(3, 70);
  cr_assert_not_null(on70);
  cr_assert_eq(seen.first_node, 70);
  cr_assert_eq(seen.maxnode, 72, "maxnode is the highest node + 2");
  cr_assert_eq(osmem_free_mblocks(on70, 3), 0);
  /* Use up the unbound fresh memory's pool: nothing is pooled there, so a
   * plain get of 3 is served by node 70's pool (any pool will do). */
  struct osmem_stats s = stats_now();
  cr_assert_eq(s.mblocks_pooled, 3);
  char *plain = osmem_get_mblocks(3);
  cr_assert_eq(plain, on70);
  assert_invariants();
  /* Freed again, it goes back to node 70's pool: a node-0 get skips it. */
  cr_assert_eq(osmem_free_mblocks(plain, 3), 0);
  char *on0 = osmem_get_mblocks_on_node(3, 0);
  cr_assert_not_null(on0);
  cr_assert_neq(on0, on70);
  cr_assert_eq(osmem_get_mblocks_on_node(3, 70), on70);
  assert_invariants();
}

Test(nodes, policy_picks_the_mbind_mode) {
  fake_topology();
  cr_assert_not_null(osmem_get_mblocks_on_node(1, 1));
  cr_assert_eq(seen.mode, MPOL_BIND);
  cr_assert_eq(osmem_set_numa_policy(OSMEM_NUMA_PREFERRED), 0);
  char *p = osmem_get_mblocks_on_node(1, 1);
  cr_assert_not_null(p);
  cr_assert_eq(seen.mode, MPOL_PREFERRED);
  cr_assert_eq(osmem_bind_to_node(p, MB, 70), 0);
  cr_assert_eq(seen.mode, MPOL_PREFERRED);
  cr_assert_eq(seen.first_node, 70);
}

Test(nodes, strict_without_move_is_ghcs_binding) {
  fake_topology();
  char *p = osmem_get_mblocks_on_node(1, 1);
  cr_assert_not_null(p);
  cr_assert_eq(seen.mode, MPOL_BIND);
  cr_assert_eq(seen.flags, MPOL_MF_MOVE, "the default moves pages present");
  cr_assert_eq(osmem_set_numa_policy(OSMEM_NUMA_STRICT_NO_MOVE), 0);
  cr_assert_eq(osmem_bind_to_node(p, MB, 1), 0);
  cr_assert_eq(seen.mode, MPOL_BIND);
  cr_assert_eq(seen.flags, MPOL_MF_STRICT, "strict, nothing moved");
  cr_assert_eq(seen.first_node, 1);
  cr_assert_not_null(osmem_get_mblocks_on_node(2, 70));
  cr_assert_eq(seen.flags, MPOL_MF_STRICT);
  cr_assert_eq(seen.first_node, 70);
}

Test(nodes, configured_nodes_count_the_machine_not_the_process) {
  fake_topology(); /* the process may use 3 nodes, the machine has 1 */
  cr_assert_eq(osmem_numa_nodes(), 3);
  cr_assert_geq(osmem_numa_nodes_configured(), 3, "never below the allowed");
  cr_assert(osmem_numa_available(), "the kernel answered get_mempolicy");
  cr_assert(osmem_numa_supported());
}

Test(nodes, interleave_binds_fresh_plain_gets_to_all_nodes) {
  fake_topology();
  cr_assert_eq(osmem_set_numa_interleave(true), 0);
  char *p = osmem_get_mblocks(2);
  cr_assert_not_null(p);
  cr_assert_eq(seen.calls, 1);
  cr_assert_eq(seen.mode, MPOL_INTERLEAVE);
  cr_assert_eq(seen.maxnode, 72);
  /* Reused from the pool: the pages keep their placement, no new call. */
  cr_assert_eq(osmem_free_mblocks(p, 2), 0);
  cr_assert_eq(osmem_get_mblocks(2), p);
  cr_assert_eq(seen.calls, 1);
}

static long failing_mbind(void *addr, unsigned long len, int mode,
                          const unsigned long *nodemask, unsigned long maxnode,
                          unsigned flags) {
  (void)addr, (void)len, (void)mode, (void)nodemask, (void)maxnode, (void)flags;
  errno = EIO;
  return -1;
}

/* A node's reservation is bound when it is made: if the kernel refuses,
 * the reservation is given back and the get fails with that error, with
 * nothing changed; megablocks the node already has need no bind. */
Test(nodes, failed_bind_of_a_new_node_reservation_changes_nothing) {
  fake_topology();
  pool_direct();
  char *p = osmem_get_mblocks_on_node(1, 1);
  cr_assert_not_null(p);
  cr_assert_eq(osmem_free_mblocks(p, 1), 0);
  struct osmem_stats s0 = stats_now();
  osmem__posix_sys.mbind = failing_mbind;
  cr_assert_eq(osmem_get_mblocks_on_node(1, 1), p, "pooled: bound already");
  errno = 0;
  cr_assert_null(osmem_get_mblocks_on_node(1, 70), "a new reservation");
  cr_assert_eq(errno, EIO);
  struct osmem_stats s1 = stats_now();
  cr_assert_eq(s1.mblocks_in_use, s0.mblocks_in_use + 1);
  cr_assert_eq(s1.mblocks_pooled, s0.mblocks_pooled - 1);
  cr_assert_eq(s1.bytes_mapped, s0.bytes_mapped, "the reservation went back");
  cr_assert_eq(s1.reservations, s0.reservations);
  assert_invariants();
  osmem__posix_sys.mbind = record_mbind;
  cr_assert_not_null(osmem_get_mblocks_on_node(1, 70));
  cr_assert_eq(seen.first_node, 70);
}
static long enomem_mbind(void *addr, unsigned long len, int mode,
                         const unsigned long *nodemask, unsigned long maxnode,
                         unsigned flags) {
  (void)addr, (void)len, (void)mode, (void)nodemask, (void)maxnode, (void)flags;
  errno = ENOMEM;
  return -1;
}

static size_t oom_calls;
static void count_oom(size_t n, int err) {
  (void)n;
  cr_assert_eq(err, ENOMEM);
  oom_calls++;
}

Test(nodes, bind_refused_for_want_of_memory_calls_the_oom_handler) {
  fake_topology();
  osmem_set_oom_handler(count_oom);
  osmem__posix_sys.mbind = enomem_mbind;
  errno = 0;
  cr_assert_null(osmem_get_mblocks_on_node(2, 1));
  cr_assert_eq(errno, ENOMEM);
  cr_assert_eq(oom_calls, 1, "the header promises the handler runs first");
  assert_invariants();
}

Test(nodes, refused_interleave_still_hands_out_a_plain_get) {
  fake_topology();
  cr_assert_eq(osmem_set_numa_interleave(true), 0);
  osmem_set_oom_handler(count_oom);
  int errs[] = {EIO, EINVAL, EFAULT, EINTR, ENOMEM};
  for (size_t i = 0; i < sizeof errs / sizeof *errs; i++) {
    osmem__posix_sys.mbind = i == 4 ? enomem_mbind : failing_mbind;
    struct osmem_stats s0 = stats_now();
    errno = 0;
    char *p = osmem_get_mblocks(2);
    cr_assert_not_null(p, "a refused interleave is not a failed get");
    p[0] = p[2 * MB - 1] = 1;
    struct osmem_stats s1 = stats_now();
    cr_assert_eq(s1.mblocks_in_use, s0.mblocks_in_use + 2);
    cr_assert_eq(s1.mblocks_pooled, s0.mblocks_pooled, "nothing moved to the pool");
  }
  cr_assert_eq(oom_calls, 0);
  assert_invariants();
}

/* Reservations (MAP_NORESERVE mappings) placed by the test: the k-th at
 * the k-th offset listed into an arena of 512 MiB, any further one where
 * the kernel likes. Counted. */
static char *arena;
static size_t placements[8];
static int reserve_calls;
static void *placing_mmap(void *addr, size_t len, int prot, int flags, int fd,
                          off_t off) {
  if (!(flags & MAP_NORESERVE)) return mmap(addr, len, prot, flags, fd, off);
  int k = reserve_calls++;
  if (k >= 8 || !placements[k]) return mmap(addr, len, prot, flags, fd, off);
  return mmap(arena + placements[k], len, prot,
              (flags & ~MAP_FIXED_NOREPLACE) | MAP_FIXED, fd, off);
}

/* Maps the arena and lists the offsets, in MiB (0 ends the list). */
static void place_reservations(const unsigned *mib) {
  char *r = mmap(NULL, (size_t)512 << 20, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  cr_assert_neq(r, MAP_FAILED);
  arena = (char *)(((uintptr_t)r + MB - 1) & ~(uintptr_t)(MB - 1));
  for (int k = 0; k < 8; k++) placements[k] = (size_t)mib[k] << 20;
  reserve_calls = 0;
  fake_topology();
  osmem__posix_sys.mmap = placing_mmap;
}

/* Addresses that held node 1's megablocks, released and then mapped again,
 * are fresh memory bound to no node: a plain get of them and its free must
 * keep every pool's count right (a stale node tag once sent such a free to
 * node 1's pool and wrapped its count). */
Test(nodes, released_addresses_reused_lose_their_node) {
  /* The second over the first's old addresses (after a release, 16 MiB
   * again), the rest further away. */
  static const unsigned at[8] = {64, 64, 128, 192, 256, 320};
  place_reservations(at);
  char *a = osmem_get_mblocks_on_node(16, 1); /* all of reservation 1 */
  cr_assert_eq(a, arena + (64 << 20));
  cr_assert_eq(osmem_free_mblocks(a, 16), 0);
  cr_assert_eq(osmem_release_free_memory(), (size_t)16 * MB);
  cr_assert_not_null(osmem_get_mblocks(1)); /* reservation 2 covers it */
  cr_assert_not_null(osmem_get_mblocks(32)); /* 3: 2's tail to the pool */
  assert_invariants();
  char *d = osmem_get_mblocks(31);
  cr_assert_not_null(d);
  cr_assert_eq(osmem_free_mblocks(d, 31), 0);
  assert_invariants();
  cr_assert_not_null(osmem_get_mblocks_on_node(1, 1));
  assert_invariants();
  cr_assert_geq(reserve_calls, 3);
  cr_assert_leq(reserve_calls, 6, "each within the arena");
}

/* Node 0's reservation placed right below node 1's (as the kernel, placing
 * top down, often does): one free over the boundary returns each megablock
 * to its own node's pool. */
Test(nodes, a_free_spanning_two_nodes_splits_by_node) {
  static const unsigned at[8] = {64, 48};
  place_reservations(at);
  /* Fresh megablocks are carved top down: after 15, the 16th is the base. */
  cr_assert_not_null(osmem_get_mblocks_on_node(15, 1));
  char *hi = osmem_get_mblocks_on_node(1, 1);
  char *lo = osmem_get_mblocks_on_node(1, 0);
  cr_assert_eq(hi, arena + (64 << 20), "node 1's reservation where placed");
  cr_assert_eq(lo + MB, hi, "node 0's top megablock just below");
  cr_assert_eq(osmem_free_mblocks(lo, 2), 0, "one free over both nodes");
  assert_invariants();
  cr_assert_eq(stats_now().pool_ranges, 2, "two pools, one range each");
  cr_assert_eq(osmem_get_mblocks_on_node(1, 1), hi);
  cr_assert_eq(osmem_get_mblocks_on_node(1, 0), lo);
  assert_invariants();
}

/* A task bound to node 1 with MPOL_BIND | MPOL_F_STATIC_NODES (numactl
 * --membind with static nodes): the mode carries a flag, and the binding
 * must still narrow the allowed set. */
static long bound_to_node1(int *mode, unsigned long *nodemask,
                           unsigned long maxnode, void *addr,
                           unsigned long flags) {
  if (flags & MPOL_F_MEMS_ALLOWED)
    return fake_mems_allowed(mode, nodemask, maxnode, addr, flags);
  const size_t bits = sizeof(unsigned long) * CHAR_BIT;
  memset(nodemask, 0, (maxnode + bits - 1) / bits * sizeof(unsigned long));
  nodemask[0] = 2;
  *mode = MPOL_BIND | (1 << 15); /* MPOL_F_STATIC_NODES */
  return 0;
}

Test(nodes, task_binding_with_mode_flags_narrows_the_nodes) {
  osmem__posix_sys.get_mempolicy = bound_to_node1;
  cr_assert_eq(osmem_init(), 0);
  osmem__posix_sys_reset();
  cr_assert_eq(osmem_numa_nodes(), 1);
  cr_assert_eq(osmem_numa_mask(), 2);
  cr_assert_null(osmem_get_mblocks_on_node(1, 0));
  cr_assert_eq(errno, EINVAL);
}

#endif /* HAVE_LIBNUMA */
#endif /* !__wasi__ && !_WIN32 */

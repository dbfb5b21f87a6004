/*
 * The address space the library holds follows the heap, not time: after a
 * release the unused tail of the current reservation goes, the next
 * reservation is sized from the heap again (not from a counter that only
 * grows), and the OS places it where it likes, so that cycles of a heap
 * neither grow what is mapped nor march down the address space. POSIX only:
 * wasm memory is never given back.
 */
#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "helpers.h"

#define MB OSMEM_MBLOCK_SIZE
#define MiB ((size_t)1 << 20)

/* The bound the footprint must keep: what is mapped for megablocks is at
 * most four times the heap's high-water mark plus 64 MiB (a reservation is
 * at most twice the heap rounded up to a power of two, on top of the heap). */
static size_t footprint_bound(size_t peak_bytes) {
  return 4 * peak_bytes + 64 * MiB;
}

/* How far apart handed-out addresses may lie: 4 GiB, or on 32-bit, where
 * that is the whole address space, a quarter of it. */
#define SPAN_BOUND (SIZE_MAX > UINT32_MAX ? (size_t)4 << 30 : (size_t)1 << 30)

struct span {
  uintptr_t lo, hi;
};

static void widen(struct span *s, const void *p, size_t n) {
  uintptr_t a = (uintptr_t)p, b = a + n * MB;
  if (a < s->lo) s->lo = a;
  if (b > s->hi) s->hi = b;
}

/* Whether the OS maps again where a mapping of the same size was just
 * unmapped, as Linux does (the highest free range that fits): the span is
 * bounded only where it does. qemu-user places a guest's mappings itself,
 * next-fit, each one past the last, so there the span grows by itself. */
static bool os_reuses_freed_space(void) {
  const size_t len = 64 * MiB;
  const int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
  void *a = mmap(NULL, len, PROT_NONE, flags, -1, 0);
  cr_assert_neq(a, MAP_FAILED);
  munmap(a, len);
  void *b = mmap(NULL, len, PROT_NONE, flags, -1, 0);
  cr_assert_neq(b, MAP_FAILED);
  munmap(b, len);
  return a == b;
}

/* The span of handed-out addresses, where the OS lets it mean something. */
static void assert_span_bounded(struct span span, bool os_reuses) {
  if (!os_reuses)
    cr_skip_test("the OS maps each time past the last mapping (qemu-user): "
                 "the span of %ju MiB says nothing; bytes mapped stayed "
                 "within the bound", (uintmax_t)((span.hi - span.lo) >> 20));
  cr_assert_leq(span.hi - span.lo, SPAN_BOUND,
                "handed-out addresses span %ju MiB",
                (uintmax_t)((span.hi - span.lo) >> 20));
}

Test(footprint, cycles_of_a_200_mib_heap_keep_mapped_and_span_bounded) {
  enum { CYCLES = 1000, GETS = 50, EACH = 4 }; /* 200 MiB a cycle */
  static char *live[GETS];
  struct span span = {UINTPTR_MAX, 0};
  size_t most_mapped = 0;
  bool os_reuses = os_reuses_freed_space();
  for (int c = 0; c < CYCLES; c++) {
    for (int i = 0; i < GETS; i++) {
      live[i] = osmem_get_mblocks(EACH);
      cr_assert_not_null(live[i], "cycle %d get %d", c, i);
      widen(&span, live[i], EACH);
    }
    struct osmem_stats s = stats_now();
    if (s.bytes_mapped > most_mapped) most_mapped = s.bytes_mapped;
    cr_assert_leq(s.bytes_mapped, footprint_bound(GETS * EACH * MB),
                  "cycle %d: %ju MiB mapped for a 200 MiB heap", c,
                  (uintmax_t)(s.bytes_mapped >> 20));
    for (int i = 0; i < GETS; i++)
      cr_assert_eq(osmem_free_mblocks(live[i], EACH), 0);
    osmem_release_free_memory();
    s = stats_now();
    cr_assert_eq(s.bytes_mapped, 0, "cycle %d: all given back", c);
  }
  /* Before the fix: 51 GiB mapped after 400 cycles, and addresses marching
   * down by a new reservation's size every cycle. */
  assert_invariants();
  assert_span_bounded(span, os_reuses);
}

/* A random workload: about 100 MiB live, runs of 1 to 8 megablocks, a
 * release every 200 operations. */
Test(footprint, random_workload_with_releases_stays_within_the_bound) {
  enum { SLOTS = 64, OPS = 200000 };
  static struct {
    char *p;
    size_t n;
  } slot[SLOTS];
  uint64_t rng = 0x9e3779b97f4a7c15u;
  struct span span = {UINTPTR_MAX, 0};
  size_t live = 0, peak = 0;
  bool os_reuses = os_reuses_freed_space();
  for (int op = 0; op < OPS; op++) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    int i = (int)(rng % SLOTS);
    if (slot[i].p) {
      cr_assert_eq(osmem_free_mblocks(slot[i].p, slot[i].n), 0);
      live -= slot[i].n;
      slot[i].p = NULL;
    } else {
      size_t n = 1 + (size_t)((rng >> 32) % 8) * ((rng >> 40) % 2 ? 1 : 0);
      slot[i].p = osmem_get_mblocks(n);
      cr_assert_not_null(slot[i].p);
      slot[i].n = n;
      live += n;
      if (live > peak) peak = live;
      widen(&span, slot[i].p, n);
    }
    if (op % 200 == 199) {
      osmem_release_free_memory();
      struct osmem_stats s = stats_now();
      cr_assert_leq(s.bytes_mapped, footprint_bound(peak * MB),
                    "op %d: %ju MiB mapped, peak heap %zu MiB", op,
                    (uintmax_t)(s.bytes_mapped >> 20), peak);
    }
  }
  assert_invariants();
  assert_span_bounded(span, os_reuses);
}

/* Under ulimit -v 2 GiB: reservations stay a sixteenth of the budget, and
 * after everything is freed and released the library holds no megablock
 * memory at all, so the rest of the process can have the address space. */
Test(footprint, under_a_2_gib_address_space_limit_release_leaves_room) {
  struct rlimit old;
  lower_rlimit_as((rlim_t)2 << 30, &old);
  static char *live[128];
  for (int i = 0; i < 128; i++) { /* 1 GiB in 8 MiB gets */
    live[i] = osmem_get_mblocks(8);
    cr_assert_not_null(live[i], "get %d: %s", i, strerror(errno));
  }
  struct osmem_stats s = stats_now();
  cr_assert_leq(s.bytes_reserved_unused, ((size_t)2 << 30) / 16,
                "an unused tail of %ju MiB", (uintmax_t)(s.bytes_reserved_unused >> 20));
  for (int i = 0; i < 128; i++) cr_assert_eq(osmem_free_mblocks(live[i], 8), 0);
  osmem_release_free_memory();
  s = stats_now();
  cr_assert_eq(s.bytes_mapped, 0, "%ju MiB still held",
               (uintmax_t)(s.bytes_mapped >> 20));
  void *big = malloc((size_t)1 << 30);
  cr_assert_not_null(big, "malloc of 1 GiB after the release");
  free(big);
  assert_invariants();
}

/* The kernel's mappings of this process (lines of /proc/self/maps). */
static size_t mapping_count(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  cr_assert_not_null(f);
  size_t lines = 0;
  for (int c; (c = fgetc(f)) != EOF;) lines += c == '\n';
  fclose(f);
  return lines;
}

/* Node gets come from the node's own reservations, bound whole when made:
 * alternating them with plain gets must not split a mapping per get (which
 * ends in ENOMEM at vm.max_map_count, 65,530 by default, after about 32,000
 * node gets). The megablocks are never touched: this is address space, so a
 * 32-bit process makes 1,000 pairs (2 GiB), not 50,000. */
Test(footprint, alternating_node_and_plain_gets_do_not_split_mappings) {
  enum { PAIRS = SIZE_MAX > UINT32_MAX ? 50000 : 1000 };
  size_t before = mapping_count();
  for (int i = 0; i < PAIRS; i++) {
    cr_assert_not_null(osmem_get_mblocks_on_node(1, 0), "node get %d: %s", i,
                       strerror(errno));
    cr_assert_not_null(osmem_get_mblocks(1), "plain get %d", i);
  }
  size_t after = mapping_count();
  struct osmem_stats s = stats_now();
  cr_assert_eq(s.mblocks_in_use, 2 * PAIRS);
  cr_assert_leq(after - before, 64,
                "%zu mappings more after %d node and %d plain gets "
                "(%ju reservations, %ju mbind calls)",
                after - before, PAIRS, PAIRS, (uintmax_t)s.reservations,
                (uintmax_t)s.os_mbind);
  assert_invariants();
}

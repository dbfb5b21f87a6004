/*
 * The free-range pool: unit tests on a struct osmem__pool of our own, a
 * randomized comparison against a bitmap model, and the pool's behaviour
 * seen through the public API (reuse, coalescing, release, decommit, and
 * bookkeeping failures). System calls are observed, and made to fail, by
 * replacing entries of the backend's table: mmap, munmap and madvise in
 * osmem__posix_sys natively, memory.grow (and memory.size) in
 * osmem__wasm_sys on wasm, VirtualAlloc(2), VirtualFree and the resets in
 * osmem__windows_sys on Windows. The same cases run on all; where the
 * backends' contracts differ (wasm memory never shrinks, is never decommitted, and is
 * grown by exactly what each get needs), each asserts its own.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../osmem/common/internal.h"
#include "../osmem/common/range_tree.h"
#include "spares.h"
#ifdef __wasi__
#include "../osmem/wasm/sys.h"
#elif defined(_WIN32)
#include <windows.h>

#include "../osmem/windows/sys.h"
#else
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../osmem/posix/sys.h"
#endif

#define MB OSMEM_MBLOCK_SIZE
#define WASM_PAGE ((size_t)65536) /* the wasm spec's page */

/* ------------------------------------------------------------ pool helpers */

#define assert_pool_ok(p)                                                    \
  do {                                                                       \
    int err_ = osmem__pool_check(p);                                         \
    cr_assert_eq(err_, 0, "osmem__pool_check failed: invariant %d", err_);   \
  } while (0)

static struct osmem__pool *new_pool(size_t nodes) {
  static struct osmem__pool pool; /* zero-initialised; fresh per process */
  cr_assert_eq(osmem_init(), 0);
  cr_assert_eq(osmem__pool_reserve_nodes(&pool, nodes), 0);
  cr_assert_geq(osmem__pool_spare_nodes(&pool), nodes);
  assert_pool_ok(&pool);
  return &pool;
}

static size_t walk(const struct osmem__pool_node *t, struct osmem__range *out,
                   size_t i, size_t max) {
  if (!t) return i;
  i = walk(t->left, out, i, max);
  cr_assert_lt(i, max, "more ranges than expected");
  out[i++] = (struct osmem__range){t->start, t->len};
  return walk(t->right, out, i, max);
}

/* The pool's ranges in address order. */
static size_t pool_ranges(const struct osmem__pool *p, struct osmem__range *out,
                          size_t max) {
  return walk(p->root, out, 0, max);
}

static void assert_ranges(const struct osmem__pool *p,
                          const struct osmem__range *want, size_t n) {
  struct osmem__range got[16];
  size_t count = pool_ranges(p, got, 16);
  cr_assert_eq(count, n, "pool has %zu ranges, expected %zu", count, n);
  cr_assert_eq(p->ranges, n);
  size_t mblocks = 0;
  for (size_t i = 0; i < n; i++) {
    cr_assert_eq(got[i].start, want[i].start, "range %zu starts at %zu, not %zu",
                 i, (size_t)got[i].start, (size_t)want[i].start);
    cr_assert_eq(got[i].len, want[i].len, "range %zu has length %zu, not %zu",
                 i, got[i].len, want[i].len);
    mblocks += want[i].len;
  }
  cr_assert_eq(p->mblocks, mblocks);
  assert_pool_ok(p);
}

#define R(s, l) ((struct osmem__range){(s), (l)})

/* ------------------------------------------------------------ pool units */

#ifdef __wasi__
/* Bookkeeping comes from a room of the library's own, and memory grows only
 * when that room is short. Uses the room up (to less than 16 bytes), with
 * grows refused meanwhile, so that new bookkeeping must grow memory: one
 * memory.grow per allocation, as natively one mmap. */
static size_t refuse_grow(size_t pages) {
  (void)pages;
  return SIZE_MAX;
}

static void use_up_bookkeeping_room(void) {
  struct osmem__wasm_sys saved = osmem__wasm_sys;
  osmem__wasm_sys.memory_grow = refuse_grow;
  osmem__os_lock();
  for (size_t size = (size_t)1 << 24; size >= 16; size /= 2) {
    void *p;
    while (osmem__os_meta_alloc(size, &p) == 0) {
    }
  }
  osmem__os_unlock();
  osmem__wasm_sys = saved;
}
#endif

/* Bookkeeping comes straight from the OS natively (one mmap each); on wasm
 * it comes from room the library holds, so that room is used up first. */
static void bookkeeping_must_call_os(void) {
#ifdef __wasi__
  use_up_bookkeeping_room();
#endif
}

Test(pool_unit, reserve_nodes_maps_only_when_short) {
  cr_assert_eq(osmem_init(), 0);
  static struct osmem__pool pool;
  bookkeeping_must_call_os();
  struct osmem_stats s0 = stats_now();
  cr_assert_eq(osmem__pool_reserve_nodes(&pool, 10), 0);
  struct osmem_stats s1 = stats_now();
  cr_assert_eq(s1.os_maps, s0.os_maps + 1, "one bookkeeping mapping");
  size_t spares = osmem__pool_spare_nodes(&pool);
  cr_assert_geq(spares, 10);
  cr_assert_eq(osmem__pool_reserve_nodes(&pool, spares), 0);
  cr_assert_eq(stats_now().os_maps, s1.os_maps, "enough spares: no call");
  cr_assert_eq(osmem__pool_spare_nodes(&pool), spares);
  bookkeeping_must_call_os();
  struct osmem_stats s2 = stats_now();
  cr_assert_eq(osmem__pool_reserve_nodes(&pool, spares + 1), 0);
  cr_assert_eq(stats_now().os_maps, s2.os_maps + 1);
  cr_assert_gt(osmem__pool_spare_nodes(&pool), spares);
  assert_pool_ok(&pool);
}

Test(pool_unit, insert_isolated_ranges_stay_apart) {
  struct osmem__pool *p = new_pool(8);
  struct osmem__range r = osmem__pool_insert(p, 20, 5);
  cr_assert_eq(r.start, 20);
  cr_assert_eq(r.len, 5);
  assert_pool_ok(p);
  r = osmem__pool_insert(p, 10, 4); /* ends at 14: a gap before 20 */
  cr_assert_eq(r.start, 10);
  cr_assert_eq(r.len, 4);
  assert_pool_ok(p);
  assert_ranges(p, (struct osmem__range[]){R(10, 4), R(20, 5)},
                2);
}

Test(pool_unit, insert_coalesces_left) {
  struct osmem__pool *p = new_pool(8);
  osmem__pool_insert(p, 10, 5);
  assert_pool_ok(p);
  size_t spares = osmem__pool_spare_nodes(p);
  struct osmem__range r = osmem__pool_insert(p, 15, 3);
  assert_pool_ok(p);
  cr_assert_eq(r.start, 10);
  cr_assert_eq(r.len, 8);
  cr_assert_eq(osmem__pool_spare_nodes(p), spares, "one node freed, one used");
  assert_ranges(p, (struct osmem__range[]){R(10, 8)}, 1);
}

Test(pool_unit, insert_coalesces_right) {
  struct osmem__pool *p = new_pool(8);
  osmem__pool_insert(p, 20, 5);
  assert_pool_ok(p);
  struct osmem__range r = osmem__pool_insert(p, 17, 3);
  assert_pool_ok(p);
  cr_assert_eq(r.start, 17);
  cr_assert_eq(r.len, 8);
  assert_ranges(p, (struct osmem__range[]){R(17, 8)}, 1);
}

Test(pool_unit, insert_coalesces_both_sides) {
  struct osmem__pool *p = new_pool(8);
  osmem__pool_insert(p, 10, 5);
  assert_pool_ok(p);
  osmem__pool_insert(p, 20, 5);
  assert_pool_ok(p);
  osmem__pool_insert(p, 40, 1);
  assert_pool_ok(p);
  size_t spares = osmem__pool_spare_nodes(p);
  struct osmem__range r = osmem__pool_insert(p, 15, 5);
  assert_pool_ok(p);
  cr_assert_eq(r.start, 10);
  cr_assert_eq(r.len, 15);
  cr_assert_eq(osmem__pool_spare_nodes(p), spares + 1, "two nodes freed, one used");
  assert_ranges(p, (struct osmem__range[]){R(10, 15), R(40, 1)},
                2);
}

Test(pool_unit, take_is_lowest_address_first_fit) {
  struct osmem__pool *p = new_pool(8);
  osmem__pool_insert(p, 10, 3);
  osmem__pool_insert(p, 20, 10);
  osmem__pool_insert(p, 40, 5); /* the best fit for 4, but higher */
  assert_pool_ok(p);
  struct osmem__range r;
  cr_assert(osmem__pool_take(p, 4, &r));
  assert_pool_ok(p);
  cr_assert_eq(r.start, 20, "took at %zu", (size_t)r.start);
  cr_assert_eq(r.len, 4);
  /* Split from the low end: the rest keeps its high part. */
  assert_ranges(p,
                (struct osmem__range[]){R(10, 3), R(24, 6),
                                        R(40, 5)},
                3);
  cr_assert(osmem__pool_take(p, 3, &r)); /* the lowest range, whole */
  assert_pool_ok(p);
  cr_assert_eq(r.start, 10);
  cr_assert_eq(r.len, 3);
  assert_ranges(p, (struct osmem__range[]){R(24, 6), R(40, 5)},
                2);
  cr_assert(osmem__pool_take(p, 1, &r));
  assert_pool_ok(p);
  cr_assert_eq(r.start, 24);
  assert_ranges(p, (struct osmem__range[]){R(25, 5), R(40, 5)},
                2);
}

Test(pool_unit, take_without_fit_changes_nothing) {
  struct osmem__pool *p = new_pool(8);
  struct osmem__range r = {0, 0};
  cr_assert_not(osmem__pool_take(p, 1, &r), "empty pool");
  osmem__pool_insert(p, 10, 3);
  osmem__pool_insert(p, 20, 6);
  size_t spares = osmem__pool_spare_nodes(p);
  cr_assert_not(osmem__pool_take(p, 7, &r));
  assert_pool_ok(p);
  cr_assert_eq(osmem__pool_spare_nodes(p), spares);
  assert_ranges(p, (struct osmem__range[]){R(10, 3), R(20, 6)},
                2);
}

Test(pool_unit, pop_from_removes_lowest_range_at_or_after) {
  struct osmem__pool *p = new_pool(8);
  osmem__pool_insert(p, 10, 3);
  osmem__pool_insert(p, 20, 4);
  osmem__pool_insert(p, 40, 5);
  assert_pool_ok(p);
  struct osmem__range r;
  cr_assert(osmem__pool_pop_from(p, 11, &r), "11 is inside the first range");
  assert_pool_ok(p);
  cr_assert_eq(r.start, 20);
  cr_assert_eq(r.len, 4, "popped whole");
  cr_assert(osmem__pool_pop_from(p, 40, &r), "a range starting at `from`");
  assert_pool_ok(p);
  cr_assert_eq(r.start, 40);
  cr_assert_eq(r.len, 5);
  cr_assert_not(osmem__pool_pop_from(p, 41, &r));
  assert_pool_ok(p);
  cr_assert(osmem__pool_pop_from(p, 0, &r));
  assert_pool_ok(p);
  cr_assert_eq(r.start, 10);
  cr_assert_eq(r.len, 3);
  cr_assert_eq(p->ranges, 0);
  cr_assert_eq(p->mblocks, 0);
}

struct visit {
  struct osmem__range seen[8];
  size_t count, stop_after;
};

static bool visit_range(void *ctx, struct osmem__range r) {
  struct visit *v = ctx;
  v->seen[v->count++] = r;
  return v->count < v->stop_after;
}

Test(pool_unit, each_visits_in_order_and_stops) {
  struct osmem__pool *p = new_pool(8);
  osmem__pool_insert(p, 50, 1);
  osmem__pool_insert(p, 10, 2);
  osmem__pool_insert(p, 30, 3);
  osmem__pool_insert(p, 70, 4);
  assert_pool_ok(p);
  struct visit v = {.stop_after = 8};
  osmem__pool_each(p, visit_range, &v);
  cr_assert_eq(v.count, 4);
  cr_assert_eq(v.seen[0].start, 10);
  cr_assert_eq(v.seen[1].start, 30);
  cr_assert_eq(v.seen[2].start, 50);
  cr_assert_eq(v.seen[3].start, 70);
  cr_assert_eq(v.seen[3].len, 4);
  struct visit w = {.stop_after = 2};
  osmem__pool_each(p, visit_range, &w);
  cr_assert_eq(w.count, 2, "stops when fn returns false");
}

/* --------------------------------------------------- randomized vs model */

#define MODEL_N 4096
#define MODEL_BASE ((uintptr_t)1 << 24) /* megablock numbers, not 0-based */

static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint64_t rng(void) { /* xorshift64*, fixed seed: reproducible */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545f4914f6cdd1du;
}
static size_t rnd(size_t n) { return (size_t)(rng() % n); }

static bool m_free[MODEL_N];

/* The model's maximal free runs, in address order. */
static size_t model_runs(struct osmem__range *out) {
  size_t n = 0;
  for (size_t i = 0; i < MODEL_N;) {
    if (!m_free[i]) {
      i++;
      continue;
    }
    size_t j = i;
    while (j < MODEL_N && m_free[j]) j++;
    out[n++] = R(MODEL_BASE + i, j - i);
    i = j;
  }
  return n;
}

static struct osmem__range want_runs[MODEL_N], got_runs[MODEL_N];

static void assert_matches_model(const struct osmem__pool *p, int op) {
  assert_pool_ok(p);
  size_t want = model_runs(want_runs);
  size_t got = pool_ranges(p, got_runs, MODEL_N);
  cr_assert_eq(got, want, "op %d: pool has %zu ranges, model %zu", op, got,
               want);
  size_t mblocks = 0;
  for (size_t i = 0; i < want; i++) {
    cr_assert_eq(got_runs[i].start, want_runs[i].start,
                 "op %d: range %zu start", op, i);
    cr_assert_eq(got_runs[i].len, want_runs[i].len, "op %d: range %zu len",
                 op, i);
    mblocks += want_runs[i].len;
  }
  cr_assert_eq(p->ranges, want);
  cr_assert_eq(p->mblocks, mblocks);
}

/* Sets [i, j) to free or not in the model. */
static void model_set(size_t i, size_t j, bool free_) {
  for (size_t k = i; k < j; k++) m_free[k] = free_;
}

static void model_insert(struct osmem__pool *p, int op) {
  size_t used = 0;
  for (size_t i = 0; i < MODEL_N; i++) used += !m_free[i];
  if (used == 0) return;
  size_t pick = rnd(used), i = 0;
  for (;; i++)
    if (!m_free[i] && pick-- == 0) break;
  size_t room = 0;
  while (i + room < MODEL_N && !m_free[i + room]) room++;
  size_t cap = rnd(4) == 0 ? room : (room < 16 ? room : 16);
  size_t len = 1 + rnd(cap);
  size_t lo = i, hi = i + len; /* the merged run */
  while (lo > 0 && m_free[lo - 1]) lo--;
  while (hi < MODEL_N && m_free[hi]) hi++;
  struct osmem__range r = osmem__pool_insert(p, MODEL_BASE + i, len);
  model_set(lo, hi, true);
  cr_assert_eq(r.start, MODEL_BASE + lo, "op %d: insert result start", op);
  cr_assert_eq(r.len, hi - lo, "op %d: insert result len", op);
}

static void model_take(struct osmem__pool *p, int op) {
  size_t want = 1 + (rnd(8) == 0 ? rnd(600) : rnd(24));
  size_t n = model_runs(want_runs);
  struct osmem__range *fit = NULL;
  for (size_t i = 0; i < n && !fit; i++)
    if (want_runs[i].len >= want) fit = &want_runs[i];
  struct osmem__range r;
  bool ok = osmem__pool_take(p, want, &r);
  cr_assert_eq(ok, fit != NULL, "op %d: take(%zu) found a fit: %d", op, want,
               ok);
  if (!fit) return;
  cr_assert_eq(r.start, fit->start, "op %d: take(%zu) not the lowest fit", op,
               want);
  cr_assert_eq(r.len, want);
  size_t i = fit->start - MODEL_BASE;
  model_set(i, i + want, false);
}

static void model_pop(struct osmem__pool *p, int op) {
  uintptr_t from = MODEL_BASE + rnd(MODEL_N);
  size_t n = model_runs(want_runs);
  struct osmem__range *first = NULL;
  for (size_t i = 0; i < n && !first; i++)
    if (want_runs[i].start >= from) first = &want_runs[i];
  struct osmem__range r;
  bool ok = osmem__pool_pop_from(p, from, &r);
  cr_assert_eq(ok, first != NULL, "op %d: pop_from", op);
  if (!first) return;
  cr_assert_eq(r.start, first->start, "op %d: pop_from start", op);
  cr_assert_eq(r.len, first->len);
  size_t i = first->start - MODEL_BASE;
  model_set(i, i + first->len, false);
}

static void model_take_upto(struct osmem__pool *p, int op) {
  size_t most = 1 + rnd(12);
  size_t n = model_runs(want_runs);
  struct osmem__range r;
  bool ok = osmem__pool_take_upto(p, most, &r);
  cr_assert_eq(ok, n > 0, "op %d: take_upto", op);
  if (n == 0) return;
  size_t want = want_runs[0].len < most ? want_runs[0].len : most;
  cr_assert_eq(r.start, want_runs[0].start, "op %d: take_upto start", op);
  cr_assert_eq(r.len, want, "op %d: take_upto len", op);
  size_t i = r.start - MODEL_BASE;
  model_set(i, i + want, false);
}

Test(pool_model, random_operations_match_bitmap_model) {
  /* At most MODEL_N / 2 ranges can exist at once. */
  struct osmem__pool *p = new_pool(MODEL_N / 2 + 2);
  int inserts = 0, takes = 0, pops = 0;
  for (int op = 0; op < 6000; op++) {
    size_t kind = rnd(20);
    if (kind < 10) {
      model_insert(p, op);
      inserts++;
    } else if (kind < 17) {
      model_take(p, op);
      takes++;
    } else if (kind < 18) {
      model_pop(p, op);
      pops++;
    } else {
      model_take_upto(p, op);
    }
    assert_matches_model(p, op);
  }
  cr_assert_gt(inserts, 1000);
  cr_assert_gt(takes, 1000);
  cr_assert_gt(pops, 100);
  /* The run must have built up a real tree, not hovered near empty. */
  cr_assert_gt(p->ranges, 20, "only %zu ranges at the end", p->ranges);
}

/* -------------------------------------------------- system call table spy */

/* One call the spy saw: natively an mmap, munmap or madvise; on wasm a
 * memory.grow (len in bytes, ret the old end of memory). */
struct call {
  void *addr;
  size_t len;
  int arg; /* flags for mmap, advice for madvise */
  void *ret;
  bool failed;
};

#define MAX_CALLS 64
static struct call maps[MAX_CALLS], unmaps[MAX_CALLS], advs[MAX_CALLS];
static int n_maps, n_unmaps, n_advs;
/* Natively: bookkeeping mmaps left to allow. On wasm, where bookkeeping is
 * told from megablocks only by the order of the grows: memory.grow calls
 * left to allow. -1: all. */
static int meta_allowed = -1;
static int munmaps_to_fail;     /* the next this many munmaps fail */
static int trapped;             /* calls made while the trap was set */

static void record(struct call *log, int *n, void *addr, size_t len, int arg,
                   void *ret, bool failed) {
  if (*n < MAX_CALLS) log[*n] = (struct call){addr, len, arg, ret, failed};
  (*n)++;
}

#ifdef __wasi__
static size_t spy_grow(size_t pages) {
  size_t old = SIZE_MAX;
  if (meta_allowed != 0) old = __builtin_wasm_memory_grow(0, pages);
  if (meta_allowed > 0 && old != SIZE_MAX) meta_allowed--;
  record(maps, &n_maps, NULL, pages * WASM_PAGE, 0,
         old == SIZE_MAX ? NULL : (void *)(old * WASM_PAGE), old == SIZE_MAX);
  return old;
}

static void spy_install(void) {
  osmem__wasm_sys.memory_grow = spy_grow;
  n_maps = n_unmaps = n_advs = 0;
}

/* Every entry of the trap counts: proof that nothing was called. A grow
 * fails; memory.size answers truly (it changes nothing). */
static size_t trap_size(void) {
  trapped++;
  return __builtin_wasm_memory_size(0);
}

static size_t trap_grow(size_t pages) {
  (void)pages;
  trapped++;
  return SIZE_MAX;
}

static void trap_install(void) {
  osmem__wasm_sys.memory_size = trap_size;
  osmem__wasm_sys.memory_grow = trap_grow;
  trapped = 0;
}

static void os_reset(void) { osmem__wasm_sys_reset(); }
#elif defined(_WIN32)
/* Windows: the spy records VirtualAlloc and VirtualAlloc2 calls that make
 * an allocation as maps, VirtualFree as unmaps, and resets (VirtualAlloc
 * MEM_RESET, DiscardVirtualMemory) as madvise, as the backend counts them
 * (os_maps, os_unmaps, os_madvise). Commits (MEM_COMMIT alone, counted as
 * mprotect) are not recorded. madv_free_errno, when non-zero, makes the
 * lazy decommit's call (MEM_RESET) fail. */
static int madv_free_errno;
#define LAZY_ADVICE MEM_RESET
#define DISCARD 1 /* advs[].arg of a DiscardVirtualMemory */

/* Bookkeeping is committed memory asked for anywhere; reservations are
 * asked for at an address, aligned (VirtualAlloc2), or reserved only. The
 * spy records which in arg: 1 for bookkeeping. */
static bool is_meta_call(const void *at, DWORD type) {
  return at == NULL && (type & MEM_COMMIT);
}
static bool is_meta(int arg) { return arg == 1; }

/* The size of the allocation based at base, for VirtualFree(MEM_RELEASE),
 * which is told only the base: its regions, as VirtualQuery shows them. */
static size_t allocation_size(void *base) {
  size_t size = 0;
  MEMORY_BASIC_INFORMATION mbi;
  while (VirtualQuery((char *)base + size, &mbi, sizeof mbi) != 0 &&
         mbi.AllocationBase == base && mbi.State != MEM_FREE)
    size += mbi.RegionSize;
  return size;
}

static LPVOID WINAPI spy_alloc(LPVOID at, SIZE_T len, DWORD type,
                               DWORD prot) {
  if (type & MEM_RESET) {
    bool fail = madv_free_errno != 0;
    record(advs, &n_advs, at, len, MEM_RESET, NULL, fail);
    if (fail) {
      SetLastError(ERROR_INVALID_PARAMETER);
      return NULL;
    }
    return VirtualAlloc(at, len, type, prot);
  }
  if (!(type & MEM_RESERVE)) return VirtualAlloc(at, len, type, prot);
  bool meta = is_meta_call(at, type);
  void *ret = NULL;
  if (meta && meta_allowed == 0) {
    SetLastError(ERROR_NOT_ENOUGH_MEMORY);
  } else {
    if (meta && meta_allowed > 0) meta_allowed--;
    ret = VirtualAlloc(at, len, type, prot);
  }
  DWORD err = GetLastError();
  record(maps, &n_maps, at, len, meta, ret, ret == NULL);
  SetLastError(err);
  return ret;
}

static osmem__virtual_alloc2_fn real_alloc2;
static PVOID WINAPI spy_alloc2(HANDLE h, PVOID at, SIZE_T len, ULONG type,
                               ULONG prot, MEM_EXTENDED_PARAMETER *ext,
                               ULONG n) {
  void *ret = real_alloc2(h, at, len, type, prot, ext, n);
  DWORD err = GetLastError();
  record(maps, &n_maps, at, len, 0, ret, ret == NULL);
  SetLastError(err);
  return ret;
}

static BOOL WINAPI spy_free(LPVOID p, SIZE_T len, DWORD type) {
  bool fail = munmaps_to_fail > 0;
  record(unmaps, &n_unmaps, p, type == MEM_RELEASE ? allocation_size(p) : len,
         (int)type, NULL, fail);
  if (fail) {
    munmaps_to_fail--;
    SetLastError(ERROR_INVALID_PARAMETER);
    return FALSE;
  }
  return VirtualFree(p, len, type);
}

static osmem__discard_fn real_discard;
static DWORD WINAPI spy_discard(PVOID p, SIZE_T len) {
  record(advs, &n_advs, p, len, DISCARD, NULL, false);
  return real_discard(p, len);
}

static void spy_install(void) {
  cr_assert_eq(osmem_init(), 0); /* the optional entries are looked up */
  osmem__windows_sys_reset();
  real_alloc2 = osmem__windows_sys.VirtualAlloc2;
  real_discard = osmem__windows_sys.DiscardVirtualMemory;
  osmem__windows_sys.VirtualAlloc = spy_alloc;
  if (real_alloc2) osmem__windows_sys.VirtualAlloc2 = spy_alloc2;
  osmem__windows_sys.VirtualFree = spy_free;
  if (real_discard) osmem__windows_sys.DiscardVirtualMemory = spy_discard;
  n_maps = n_unmaps = n_advs = 0;
}

/* Every entry of the trap fails and counts: proof that nothing was called. */
static LPVOID WINAPI trap_alloc(LPVOID a, SIZE_T l, DWORD t, DWORD p) {
  (void)a, (void)l, (void)t, (void)p;
  trapped++;
  SetLastError(ERROR_NOT_ENOUGH_MEMORY);
  return NULL;
}
static PVOID WINAPI trap_alloc2(HANDLE h, PVOID a, SIZE_T l, ULONG t, ULONG p,
                                MEM_EXTENDED_PARAMETER *e, ULONG n) {
  (void)h, (void)e, (void)n;
  return trap_alloc(a, l, t, p);
}
static BOOL WINAPI trap_free(LPVOID a, SIZE_T l, DWORD t) {
  (void)a, (void)l, (void)t;
  trapped++;
  SetLastError(ERROR_INVALID_PARAMETER);
  return FALSE;
}
static LPVOID WINAPI trap_alloc_numa(HANDLE h, LPVOID a, SIZE_T l, DWORD t,
                                     DWORD p, DWORD node) {
  (void)h, (void)node;
  return trap_alloc(a, l, t, p);
}
static DWORD WINAPI trap_discard(PVOID a, SIZE_T l) {
  (void)a, (void)l;
  trapped++;
  return ERROR_INVALID_PARAMETER;
}

static void trap_install(void) {
  osmem__windows_sys.VirtualAlloc = trap_alloc;
  osmem__windows_sys.VirtualAlloc2 = trap_alloc2;
  osmem__windows_sys.VirtualFree = trap_free;
  osmem__windows_sys.VirtualAllocExNuma = trap_alloc_numa;
  osmem__windows_sys.DiscardVirtualMemory = trap_discard;
  trapped = 0;
}

static void os_reset(void) { osmem__windows_sys_reset(); }
#else
static int madv_free_errno; /* MADV_FREE fails with this when non-zero */
#define LAZY_ADVICE MADV_FREE

/* The library maps bookkeeping without MAP_NORESERVE and reservations with
 * it: that is how the spy tells them apart. */
static bool is_meta(int flags) { return !(flags & MAP_NORESERVE); }

/* A reservation placed anywhere comes back megablock aligned, as Linux
 * places large anonymous mappings (on THP boundaries) but Valgrind, or
 * another kernel, need not: the counts below are about the library's
 * calls, not about where the OS puts things. */
static void *aligned_anywhere(size_t len, int prot, int flags, int fd,
                              off_t off) {
  char *raw = mmap(NULL, len + MB, prot, flags, fd, off);
  if (raw == MAP_FAILED) return MAP_FAILED;
  char *first = (char *)(((uintptr_t)raw + MB - 1) & ~(uintptr_t)(MB - 1));
  if (first > raw) munmap(raw, (size_t)(first - raw));
  munmap(first + len, (size_t)(raw + MB - first));
  return first;
}

static void *spy_mmap(void *addr, size_t len, int prot, int flags, int fd,
                      off_t off) {
  void *ret;
  if (is_meta(flags) && meta_allowed == 0) {
    errno = ENOMEM;
    ret = MAP_FAILED;
  } else if (!is_meta(flags) && addr == NULL) {
    ret = aligned_anywhere(len, prot, flags, fd, off);
  } else {
    if (is_meta(flags) && meta_allowed > 0) meta_allowed--;
    ret = mmap(addr, len, prot, flags, fd, off);
  }
  int saved = errno;
  record(maps, &n_maps, addr, len, flags, ret, ret == MAP_FAILED);
  errno = saved;
  return ret;
}

static int spy_munmap(void *addr, size_t len) {
  bool fail = munmaps_to_fail > 0;
  record(unmaps, &n_unmaps, addr, len, 0, NULL, fail);
  if (fail) {
    munmaps_to_fail--;
    errno = EINVAL;
    return -1;
  }
  return munmap(addr, len);
}

static int spy_madvise(void *addr, size_t len, int advice) {
  bool fail = advice == MADV_FREE && madv_free_errno;
  record(advs, &n_advs, addr, len, advice, NULL, fail);
  if (fail) {
    errno = madv_free_errno;
    return -1;
  }
  return madvise(addr, len, advice);
}

static void spy_install(void) {
  osmem__posix_sys.mmap = spy_mmap;
  osmem__posix_sys.munmap = spy_munmap;
  osmem__posix_sys.madvise = spy_madvise;
  n_maps = n_unmaps = n_advs = 0;
}

/* Every entry of the trap fails and counts: proof that nothing was called. */
static void *trap_mmap(void *a, size_t l, int p, int f, int fd, off_t o) {
  (void)a, (void)l, (void)p, (void)f, (void)fd, (void)o;
  trapped++;
  errno = ENOMEM;
  return MAP_FAILED;
}
static int trap_munmap(void *a, size_t l) {
  (void)a, (void)l;
  trapped++;
  errno = EINVAL;
  return -1;
}
static int trap_madvise(void *a, size_t l, int adv) {
  (void)a, (void)l, (void)adv;
  trapped++;
  errno = EINVAL;
  return -1;
}
static long trap_mbind(void *a, unsigned long l, int m, const unsigned long *nm,
                       unsigned long mx, unsigned f) {
  (void)a, (void)l, (void)m, (void)nm, (void)mx, (void)f;
  trapped++;
  errno = EIO;
  return -1;
}

static void trap_install(void) {
  osmem__posix_sys.mmap = trap_mmap;
  osmem__posix_sys.munmap = trap_munmap;
  osmem__posix_sys.madvise = trap_madvise;
  osmem__posix_sys.mbind = trap_mbind;
  trapped = 0;
}

static void os_reset(void) { osmem__posix_sys_reset(); }
#endif

/* Bookkeeping is refused from now on (with meta_allowed = 0): on wasm the
 * library's bookkeeping room is used up first, so that it must grow. */
static void refuse_bookkeeping(void) {
  bookkeeping_must_call_os();
  spy_install();
  meta_allowed = 0;
}

/* Decommits the backend makes where the common code asks for `n`: wasm has
 * no decommit, so none. */
#define DECOMMITS(n) (OS_CAN_DECOMMIT ? (n) : 0)

static void assert_no_os_calls(struct osmem_stats a, struct osmem_stats b) {
  cr_assert_eq(b.os_maps, a.os_maps, "os_maps %ju -> %ju", (uintmax_t)a.os_maps,
               (uintmax_t)b.os_maps);
  cr_assert_eq(b.os_unmaps, a.os_unmaps);
  cr_assert_eq(b.os_madvise, a.os_madvise);
  cr_assert_eq(b.os_mbind, a.os_mbind);
  cr_assert_eq(b.reservations, a.reservations);
  cr_assert_eq(b.bytes_mapped, a.bytes_mapped);
  cr_assert_eq(b.align_hint_hits + b.align_exact_hits + b.align_trims,
               a.align_hint_hits + a.align_exact_hits + a.align_trims);
}

/* The library's state as osmem_stats shows it (not the OS call counters). */
static void assert_same_state(struct osmem_stats a, struct osmem_stats b) {
  cr_assert_eq(b.mblocks_in_use, a.mblocks_in_use, "mblocks_in_use %ju -> %ju",
               (uintmax_t)a.mblocks_in_use, (uintmax_t)b.mblocks_in_use);
  cr_assert_eq(b.mblocks_peak, a.mblocks_peak, "mblocks_peak %ju -> %ju",
               (uintmax_t)a.mblocks_peak, (uintmax_t)b.mblocks_peak);
  cr_assert_eq(b.mblocks_pooled, a.mblocks_pooled, "mblocks_pooled %ju -> %ju",
               (uintmax_t)a.mblocks_pooled, (uintmax_t)b.mblocks_pooled);
  cr_assert_eq(b.mblocks_pooled_resident, a.mblocks_pooled_resident,
               "mblocks_pooled_resident %ju -> %ju",
               (uintmax_t)a.mblocks_pooled_resident,
               (uintmax_t)b.mblocks_pooled_resident);
  cr_assert_eq(b.pool_ranges, a.pool_ranges, "pool_ranges %ju -> %ju",
               (uintmax_t)a.pool_ranges, (uintmax_t)b.pool_ranges);
  cr_assert_eq(b.bytes_mapped, a.bytes_mapped, "bytes_mapped %ju -> %ju",
               (uintmax_t)a.bytes_mapped, (uintmax_t)b.bytes_mapped);
  cr_assert_eq(b.bytes_reserved_unused, a.bytes_reserved_unused,
               "bytes_reserved_unused %ju -> %ju",
               (uintmax_t)a.bytes_reserved_unused,
               (uintmax_t)b.bytes_reserved_unused);
  cr_assert_eq(b.reservations, a.reservations, "reservations %ju -> %ju",
               (uintmax_t)a.reservations, (uintmax_t)b.reservations);
}

/* ------------------------------------------------- what the OS has mapped */

#ifdef __wasi__
/* Bytes of [p, p + len) inside linear memory: all of wasm's "mappings". */
static size_t mapped_bytes(const void *p, size_t len) {
  uint64_t end = (uint64_t)__builtin_wasm_memory_size(0) * WASM_PAGE;
  uint64_t lo = (uintptr_t)p, hi = lo + len;
  if (lo >= end) return 0;
  return (size_t)((hi < end ? hi : end) - lo);
}
#elif defined(_WIN32)
/* Bytes of [p, p + len) the OS holds memory for: committed (MEM_COMMIT),
 * as VirtualQuery shows it. A range given back inside an allocation that
 * is still in use is only decommitted (MEM_RESERVE): it holds none. */
static size_t mapped_bytes(const void *p, size_t len) {
  uintptr_t at = (uintptr_t)p, end = at + len;
  size_t committed = 0;
  MEMORY_BASIC_INFORMATION mbi;
  while (at < end && VirtualQuery((void *)at, &mbi, sizeof mbi) != 0) {
    uintptr_t next = (uintptr_t)mbi.BaseAddress + mbi.RegionSize;
    if (next > end) next = end;
    if (mbi.State == MEM_COMMIT) committed += next - at;
    at = next;
  }
  return committed;
}
#else
static char maps_buf[1 << 20];

/* Bytes of [p, p + len) that some mapping of this process covers. Reads with
 * open/read, so that no allocation can map memory meanwhile. */
static size_t mapped_bytes(const void *p, size_t len) {
  int fd = open("/proc/self/maps", O_RDONLY);
  cr_assert_geq(fd, 0);
  size_t n = 0;
  ssize_t got;
  while ((got = read(fd, maps_buf + n, sizeof maps_buf - 1 - n)) > 0)
    n += (size_t)got;
  close(fd);
  cr_assert_lt(n, sizeof maps_buf - 1, "/proc/self/maps too big");
  maps_buf[n] = '\0';
  uintptr_t lo = (uintptr_t)p, hi = lo + len;
  size_t covered = 0;
  for (char *s = maps_buf; *s;) {
    char *end;
    uintptr_t a = (uintptr_t)strtoull(s, &end, 16);
    cr_assert_eq(*end, '-', "unparsable /proc/self/maps line");
    uintptr_t b = (uintptr_t)strtoull(end + 1, &end, 16);
    if (a < hi && b > lo) covered += (b < hi ? b : hi) - (a > lo ? a : lo);
    s = strchr(s, '\n');
    if (!s) break;
    s++;
  }
  return covered;
}
#endif

static void fill_and_check(void *p, size_t n, unsigned char byte) {
  memset(p, byte, n * MB);
  for (size_t i = 0; i < n; i++) {
    cr_assert_eq(((unsigned char *)p)[i * MB], byte);
    cr_assert_eq(((unsigned char *)p)[i * MB + MB - 1], byte);
  }
}

/* ------------------------------------------------------ public API: reuse */

Test(pool_api, free_then_get_reuses_address_without_os_calls) {
  pool_direct();
  void *p = osmem_get_mblocks(5);
  cr_assert_not_null(p);
  cr_assert_eq(osmem_free_mblocks(p, 5), 0);
  assert_invariants();
  struct osmem_stats s0 = stats_now();
  cr_assert_eq(s0.mblocks_pooled, 5);
  trap_install();
  void *q = osmem_get_mblocks(5);
  cr_assert_eq(trapped, 0, "%d system calls on a pool hit", trapped);
  os_reset();
  cr_assert_eq(q, p);
  struct osmem_stats s1 = stats_now();
  assert_no_os_calls(s0, s1);
  cr_assert_eq(s1.mblocks_pooled, 0);
  cr_assert_eq(s1.pool_ranges, 0);
  cr_assert_eq(s1.mblocks_in_use, 5);
  assert_invariants();
}

/* Where consecutive fresh gets land: natively carved top-down from one
 * reservation; on wasm each grows memory at its end, so bottom-up. */
#define FRESH_STEP (OS_CHEAP_RESERVE ? -(intptr_t)MB : (intptr_t)MB)

Test(pool_api, freed_neighbours_coalesce_and_serve_a_larger_get) {
  pool_direct();
  char *a = osmem_get_mblocks(1), *b = osmem_get_mblocks(1),
       *c = osmem_get_mblocks(1);
  cr_assert_not_null(a);
  cr_assert_eq((uintptr_t)b, (uintptr_t)a + (uintptr_t)FRESH_STEP,
               "fresh gets are not adjacent");
  cr_assert_eq((uintptr_t)c, (uintptr_t)b + (uintptr_t)FRESH_STEP);
  char *lowest = a < c ? a : c;
  assert_invariants();
  cr_assert_eq(osmem_free_mblocks(a, 1), 0);
  assert_invariants();
  cr_assert_eq(stats_now().pool_ranges, 1);
  cr_assert_eq(osmem_free_mblocks(c, 1), 0);
  assert_invariants();
  cr_assert_eq(stats_now().pool_ranges, 2, "a and c do not touch");
  cr_assert_eq(osmem_free_mblocks(b, 1), 0);
  assert_invariants();
  struct osmem_stats s0 = stats_now();
  cr_assert_eq(s0.pool_ranges, 1, "b joins both neighbours");
  cr_assert_eq(s0.mblocks_pooled, 3);
  trap_install();
  void *d = osmem_get_mblocks(3);
  cr_assert_eq(trapped, 0);
  os_reset();
  cr_assert_eq(d, lowest, "the merged range starts at the lowest of the three");
  assert_no_os_calls(s0, stats_now());
  cr_assert_eq(stats_now().mblocks_pooled, 0);
  assert_invariants();
}

Test(pool_api, get_larger_than_any_pooled_range_leaves_pool_alone) {
  pool_direct();
  char *p = osmem_get_mblocks(2);
  cr_assert_not_null(p);
  cr_assert_eq(osmem_free_mblocks(p, 2), 0);
  assert_invariants();
  char *q = osmem_get_mblocks(3);
  cr_assert_not_null(q);
  assert_invariants();
  cr_assert(q + 3 * MB <= p || q >= p + 2 * MB, "overlaps the pooled range");
  struct osmem_stats s = stats_now();
  cr_assert_eq(s.mblocks_pooled, 2);
  cr_assert_eq(s.pool_ranges, 1);
  cr_assert_eq(osmem_get_mblocks(2), p, "the pooled range is still there");
  assert_invariants();
}

/* ---------------------------------------------------- public API: release */

/* Natively release unmaps exactly the pooled ranges. Wasm memory never
 * shrinks: release returns 0 and makes no call, the pooled ranges stay
 * mapped, in the pool, and serve the next gets without growing memory. */
Test(pool_api, release_unmaps_exactly_the_pooled_ranges) {
  pool_direct();
  char *a = osmem_get_mblocks(2), *b = osmem_get_mblocks(3),
       *c = osmem_get_mblocks(4), *d = osmem_get_mblocks(5);
  cr_assert(a && b && c && d);
  fill_and_check(a, 2, 0x11);
  fill_and_check(c, 4, 0x33);
  cr_assert_eq(osmem_free_mblocks(a, 2), 0);
  cr_assert_eq(osmem_free_mblocks(c, 4), 0);
  assert_invariants();
  struct osmem_stats s0 = stats_now();
  cr_assert_eq(s0.pool_ranges, 2);
  cr_assert_eq(s0.mblocks_pooled, 6);
  spy_install();
  size_t released = osmem_release_free_memory();
  os_reset();
  struct osmem_stats s1 = stats_now();
  if (OS_CAN_UNMAP) {
    /* Each pooled range, and the reservation's unused tail. */
    cr_assert_gt(s0.bytes_reserved_unused, 0);
    cr_assert_eq(released, s0.mblocks_pooled * MB + s0.bytes_reserved_unused,
                 "released %zu", released);
    cr_assert_eq(s1.mblocks_pooled, 0);
    cr_assert_eq(s1.mblocks_pooled_resident, 0);
    cr_assert_eq(s1.pool_ranges, 0);
    cr_assert_eq(s1.bytes_reserved_unused, 0);
    cr_assert_eq(s1.bytes_mapped, s0.bytes_mapped - released);
    cr_assert_eq(s1.os_unmaps, s0.os_unmaps + 3, "one munmap per range");
    cr_assert_eq(n_unmaps, 3);
  } else {
    cr_assert_eq(released, 0, "released %zu", released);
    assert_same_state(s0, s1);
    assert_no_os_calls(s0, s1);
    cr_assert_eq(n_maps + n_unmaps, 0);
    cr_assert_eq(s1.bytes_reserved_unused, s0.bytes_reserved_unused);
  }
  size_t still = OS_CAN_UNMAP ? 0 : 1;
  cr_assert_eq(mapped_bytes(a, 2 * MB), still * 2 * MB, "a mapped or not");
  cr_assert_eq(mapped_bytes(c, 4 * MB), still * 4 * MB, "c mapped or not");
  cr_assert_eq(mapped_bytes(b, 3 * MB), 3 * MB, "in-use b unmapped");
  cr_assert_eq(mapped_bytes(d, 5 * MB), 5 * MB, "in-use d unmapped");
  fill_and_check(b, 3, 0x22);
  fill_and_check(d, 5, 0x44);
  cr_assert(osmem_is_heap(b) && osmem_is_heap(d));
  cr_assert_not(osmem_is_heap(a) || osmem_is_heap(c));
  assert_invariants();
  if (!OS_CAN_UNMAP) { /* the kept ranges are served again, no call made */
    trap_install();
    char *a2 = osmem_get_mblocks(2), *c2 = osmem_get_mblocks(4);
    int calls = trapped;
    os_reset();
    cr_assert_eq(calls, 0, "%d calls for pooled gets", calls);
    cr_assert_eq(a2, a < c ? a : c, "the lower kept range first");
    cr_assert_eq(c2, a < c ? c : a);
    fill_and_check(a2, 2, 0x55);
    fill_and_check(c2, 4, 0x66);
    cr_assert_eq(stats_now().mblocks_pooled, 0);
    assert_invariants();
  }
}

/* With nothing pooled, a release gives back only the unused part of the
 * current reservation (natively: one munmap), and a second one nothing. */
Test(pool_api, release_with_empty_pool_unmaps_only_the_unused_tail) {
  char *p = osmem_get_mblocks(3);
  cr_assert_not_null(p);
  struct osmem_stats s0 = stats_now();
  size_t tail = OS_CAN_UNMAP ? s0.bytes_reserved_unused : 0;
  cr_assert_eq(osmem_release_free_memory(), tail);
  struct osmem_stats s1 = stats_now();
  cr_assert_eq(s1.os_unmaps, s0.os_unmaps + (tail ? 1 : 0));
  cr_assert_eq(s1.bytes_mapped, s0.bytes_mapped - tail);
  cr_assert_eq(s1.mblocks_in_use, 3);
  cr_assert_eq(osmem_release_free_memory(), 0);
  assert_no_os_calls(s1, stats_now());
  cr_assert_eq(mapped_bytes(p, 3 * MB), 3 * MB);
  assert_invariants();
}

/* Natively the OS refuses to unmap the lowest range: it stays in the pool,
 * uncounted, and a later release succeeds. On wasm the OS refuses every
 * range (memory never shrinks): release keeps both ranges, counts nothing
 * and makes no call, however often it is tried, and they serve later gets. */
Test(pool_api, release_keeps_a_range_the_os_refuses) {
  pool_direct();
  char *p = osmem_get_mblocks(6);
  cr_assert_not_null(p);
  cr_assert_eq(osmem_free_mblocks(p, 2), 0);
  cr_assert_eq(osmem_free_mblocks(p + 3 * MB, 2), 0);
  assert_invariants();
  struct osmem_stats s0 = stats_now();
  spy_install();
  munmaps_to_fail = 1; /* the lowest range goes first, and fails */
  size_t released = osmem_release_free_memory();
  struct osmem_stats s1 = stats_now();
  if (OS_CAN_UNMAP) {
    cr_assert_eq(n_unmaps, 3, "two ranges and the unused tail");
    cr_assert_eq(unmaps[0].addr, p);
    cr_assert_eq(unmaps[0].len, 2 * MB);
    cr_assert(unmaps[0].failed);
    cr_assert_eq(unmaps[1].addr, p + 3 * MB);
    cr_assert_eq(released, 2 * MB + s0.bytes_reserved_unused,
                 "only the unmapped range (and the tail) counts");
    cr_assert_eq(s1.mblocks_pooled, 2);
    cr_assert_eq(s1.pool_ranges, 1);
    cr_assert_eq(s1.bytes_mapped, s0.bytes_mapped - released);
  } else {
    cr_assert_eq(n_unmaps + n_maps, 0);
    cr_assert_eq(released, 0, "nothing can be unmapped");
    assert_same_state(s0, s1);
    assert_no_os_calls(s0, s1);
  }
  assert_invariants();
  cr_assert_eq(osmem_release_free_memory(), OS_CAN_UNMAP ? 2 * MB : 0,
               "a later try");
  os_reset();
  cr_assert_eq(stats_now().mblocks_pooled, OS_CAN_UNMAP ? 0 : 4);
  assert_invariants();
  if (!OS_CAN_UNMAP) {
    cr_assert_eq(osmem_get_mblocks(2), p);
    cr_assert_eq(osmem_get_mblocks(2), p + 3 * MB);
    cr_assert_eq(stats_now().os_maps, s0.os_maps, "kept ranges not reused");
  }
}

/* --------------------------------------------------- public API: decommit */

/* The threshold the decommit tests pass, in megablocks: natively the default
 * (64 MiB). Wasm decommits nothing whatever the threshold, and a pool past
 * 64 MiB would pass the memory budget there, so a third of the budget is set
 * as the threshold instead (after checking the default). */
static size_t test_threshold(void) {
  size_t t = OSMEM__DEFAULT_DECOMMIT_THRESHOLD / MB;
  size_t fit = mblocks_in_budget(SIZE_MAX) / 3;
  if (t > fit) {
    cr_assert_eq(osmem_set_decommit_threshold(fit * MB),
                 OSMEM__DEFAULT_DECOMMIT_THRESHOLD);
    t = fit;
  }
  return t;
}

Test(decommit, threshold_zero_decommits_each_free) {
  osmem_set_decommit_threshold(0);
  char *p = osmem_get_mblocks(3);
  cr_assert_not_null(p);
  fill_and_check(p, 3, 0x5a);
  spy_install();
  struct osmem_stats s0 = stats_now();
  cr_assert_eq(osmem_free_mblocks(p, 3), 0);
  struct osmem_stats s1 = stats_now();
  cr_assert_eq(s1.os_madvise, s0.os_madvise + DECOMMITS(1));
  cr_assert_eq(n_advs, DECOMMITS(1));
  if (OS_CAN_DECOMMIT) {
    cr_assert_eq(advs[0].addr, p);
    cr_assert_eq(advs[0].len, 3 * MB);
#if defined(MADV_FREE) || defined(_WIN32)
    cr_assert_eq(advs[0].arg, LAZY_ADVICE);
#endif
  }
  cr_assert_eq(s1.mblocks_pooled, 3);
  cr_assert_eq(s1.mblocks_pooled_resident, OS_CAN_DECOMMIT ? 0 : 3);
  assert_invariants();
}

/* The megablocks a free over the threshold leaves resident: a little below
 * the threshold, so that frees near it batch their decommits. */
static size_t after_free_target(size_t t) {
  size_t slack = t / 8 < 32 ? t / 8 : 32;
  return t - slack;
}

Test(decommit, exceeding_default_threshold_decommits_highest_down_to_below) {
  decommit_at_once();
  pool_direct();
  const size_t t = test_threshold();
  char *p = osmem_get_mblocks(t + 1);
  cr_assert_not_null(p);
  spy_install();
  cr_assert_eq(osmem_free_mblocks(p + MB, t), 0);
  assert_invariants();
  cr_assert_eq(n_advs, 0, "%zu megablocks do not exceed the threshold", t);
  cr_assert_eq(stats_now().mblocks_pooled_resident, t);
  cr_assert_eq(osmem_free_mblocks(p, 1), 0);
  assert_invariants();
  cr_assert_eq(n_advs, DECOMMITS(1), "one run, one call");
  size_t left = after_free_target(t), gone = t + 1 - left;
  if (OS_CAN_DECOMMIT) { /* the highest addresses: reused last */
    cr_assert_eq(advs[0].addr, p + left * MB);
    cr_assert_eq(advs[0].len, gone * MB);
  }
  struct osmem_stats s = stats_now();
  cr_assert_eq(s.mblocks_pooled_resident, OS_CAN_DECOMMIT ? left : t + 1);
  cr_assert_eq(s.bytes_decommitted, OS_CAN_DECOMMIT ? gone * MB : 0);
  cr_assert_eq(s.mblocks_pooled, t + 1);
  cr_assert_eq(s.pool_ranges, 1);
  /* Decommitted megablocks are not decommitted again: the next free over
   * the threshold decommits only resident ones. */
  char *q = osmem_get_mblocks(1);
  cr_assert_eq(q, p, "lowest first: a resident megablock");
  cr_assert_eq(osmem_free_mblocks(q, 1), 0);
  cr_assert_eq(n_advs, DECOMMITS(1), "back to where it was: no call");
  assert_invariants();
}

Test(decommit, large_threshold_makes_no_madvise) {
  const size_t n = test_threshold() * 5 / 4; /* over the threshold */
  osmem_set_decommit_threshold((size_t)1 << 30);
  char *p = osmem_get_mblocks(n);
  cr_assert_not_null(p);
  struct osmem_stats s0 = stats_now();
  cr_assert_eq(osmem_free_mblocks(p, n), 0);
  struct osmem_stats s1 = stats_now();
  cr_assert_eq(s1.os_madvise, s0.os_madvise);
  cr_assert_eq(s1.mblocks_pooled_resident, n);
  assert_invariants();
}

Test(decommit, lowering_threshold_decommits_at_once_highest_first) {
  pool_direct();
  char *p = osmem_get_mblocks(14);
  cr_assert_not_null(p);
  /* Three ranges of 4, kept apart by megablocks still in use. */
  cr_assert_eq(osmem_free_mblocks(p, 4), 0);
  cr_assert_eq(osmem_free_mblocks(p + 5 * MB, 4), 0);
  cr_assert_eq(osmem_free_mblocks(p + 10 * MB, 4), 0);
  assert_invariants();
  cr_assert_eq(stats_now().mblocks_pooled_resident, 12);
  spy_install();
  struct osmem_stats s0 = stats_now();
  cr_assert_eq(osmem_set_decommit_threshold(8 * MB),
               OSMEM__DEFAULT_DECOMMIT_THRESHOLD, "returns the old threshold");
  struct osmem_stats s1 = stats_now();
  assert_invariants();
  cr_assert_eq(s1.os_madvise, s0.os_madvise + DECOMMITS(1));
  cr_assert_eq(n_advs, DECOMMITS(1));
  if (OS_CAN_DECOMMIT) {
    cr_assert_eq(advs[0].addr, p + 10 * MB, "the highest range first");
    cr_assert_eq(advs[0].len, 4 * MB);
  }
  cr_assert_eq(s1.mblocks_pooled_resident, OS_CAN_DECOMMIT ? 8 : 12,
               "exactly at the threshold");
  cr_assert_eq(osmem_set_decommit_threshold(0), 8 * MB);
  assert_invariants();
  cr_assert_eq(n_advs, DECOMMITS(3));
  if (OS_CAN_DECOMMIT) {
    cr_assert_eq(advs[1].addr, p + 5 * MB);
    cr_assert_eq(advs[2].addr, p);
    cr_assert_eq(advs[2].len, 4 * MB);
  }
  struct osmem_stats s2 = stats_now();
  cr_assert_eq(s2.mblocks_pooled_resident, OS_CAN_DECOMMIT ? 0 : 12);
  cr_assert_eq(s2.mblocks_pooled, 12);
}

Test(decommit, size_max_never_decommits) {
  pool_direct();
  const size_t t = test_threshold();
  const size_t n = (t + t / 2 + 4) / 2 * 2; /* over it, and even */
  cr_assert_eq(osmem_set_decommit_threshold(SIZE_MAX), t * MB);
  char *p = osmem_get_mblocks(n);
  cr_assert_not_null(p);
  struct osmem_stats s0 = stats_now();
  cr_assert_eq(osmem_free_mblocks(p, n / 2), 0);
  cr_assert_eq(osmem_free_mblocks(p + n / 2 * MB, n / 2), 0);
  assert_invariants();
  struct osmem_stats s1 = stats_now();
  cr_assert_eq(s1.os_madvise, s0.os_madvise);
  cr_assert_eq(s1.mblocks_pooled_resident, n);
  /* The same memory is decommitted as soon as the threshold allows it. */
  cr_assert_eq(osmem_set_decommit_threshold(t * MB), SIZE_MAX);
  assert_invariants();
  struct osmem_stats s2 = stats_now();
  cr_assert_eq(s2.os_madvise, s1.os_madvise + DECOMMITS(1));
  cr_assert_eq(s2.mblocks_pooled_resident, OS_CAN_DECOMMIT ? t : n,
               "down to the threshold, no further");
  cr_assert_eq(s2.bytes_decommitted - s1.bytes_decommitted,
               OS_CAN_DECOMMIT ? (n - t) * MB : 0);
}

/* MADV_FREE's fallback: wasm has no madvise at all, and Windows no advice
 * to fall back from (lazy decommit is MEM_RESET, with nothing to retry). */
#if !defined(__wasi__) && !defined(_WIN32)
Test(decommit, madv_free_einval_falls_back_to_dontneed_for_good) {
  osmem_set_decommit_threshold(0);
  char *p = osmem_get_mblocks(3);
  cr_assert_not_null(p);
  spy_install();
  madv_free_errno = EINVAL; /* a kernel without MADV_FREE */
  struct osmem_stats s0 = stats_now();
  cr_assert_eq(osmem_free_mblocks(p, 1), 0);
  struct osmem_stats s1 = stats_now();
  assert_invariants();
  cr_assert_eq(s1.os_madvise, s0.os_madvise + 2);
  cr_assert_eq(n_advs, 2);
  cr_assert_eq(advs[0].arg, MADV_FREE);
  cr_assert_eq(advs[1].arg, MADV_DONTNEED);
  cr_assert_eq(advs[1].addr, p);
  cr_assert_eq(advs[1].len, MB);
  cr_assert_eq(s1.mblocks_pooled_resident, 0);
  cr_assert_eq(osmem_free_mblocks(p + 2 * MB, 1), 0); /* not adjacent */
  struct osmem_stats s2 = stats_now();
  assert_invariants();
  cr_assert_eq(s2.os_madvise, s1.os_madvise + 1, "MADV_FREE not retried");
  cr_assert_eq(n_advs, 3);
  cr_assert_eq(advs[2].arg, MADV_DONTNEED);
  cr_assert_eq(advs[2].addr, p + 2 * MB);
  cr_assert_eq(s2.mblocks_pooled_resident, 0);
}
#endif

/* madvise's errors: wasm has no madvise to fail. On Windows the lazy
 * decommit's MEM_RESET fails instead (madv_free_errno). */
#ifndef __wasi__
Test(decommit, other_madvise_error_keeps_range_resident) {
  osmem_set_decommit_threshold(0);
  char *p = osmem_get_mblocks(3);
  cr_assert_not_null(p);
  spy_install();
  madv_free_errno = EAGAIN;
  cr_assert_eq(osmem_free_mblocks(p, 1), 0);
  assert_invariants();
  cr_assert_eq(n_advs, 1, "no fallback for an error other than EINVAL");
  cr_assert_eq(stats_now().mblocks_pooled_resident, 1);
  madv_free_errno = 0;
  cr_assert_eq(osmem_free_mblocks(p + 2 * MB, 1), 0);
  assert_invariants();
  cr_assert_eq(n_advs, 3, "the new free, then the one that failed");
  cr_assert_eq(advs[1].arg, LAZY_ADVICE, "MADV_FREE still in use");
  cr_assert_eq(advs[1].addr, p + 2 * MB, "highest first");
  cr_assert_eq(advs[2].addr, p, "retried");
  cr_assert_eq(stats_now().mblocks_pooled_resident, 0);
}
#endif

/* ---------------------------------------------------- bookkeeping failure */

#ifdef __wasi__
/* Sets the first get up so that its grows are exactly, in order: the
 * reservation, then its heap map leaf. The pool nodes it needs are set aside
 * now, the bookkeeping room is used up, and memory is grown (as another
 * grower, say malloc, might) to a megablock boundary, so that the
 * reservation leaves no gap below or above it to serve as room. */
static void first_get_grows_reservation_then_leaf(void) {
  osmem__os_lock();
  int err = osmem__pool_reserve_nodes(&osmem__g.pool, 4);
  osmem__os_unlock();
  cr_assert_eq(err, 0);
  use_up_bookkeeping_room();
  uintptr_t end = __builtin_wasm_memory_size(0) * WASM_PAGE;
  size_t gap = (size_t)((MB - (end & OSMEM_MBLOCK_MASK)) & OSMEM_MBLOCK_MASK);
  if (gap) cr_assert_neq(__builtin_wasm_memory_grow(0, gap / WASM_PAGE), SIZE_MAX);
}
#endif

/* Natively the first get maps its reservation, then the heap map leaf for
 * it, then the pool nodes: bookkeeping is only mapped once the OS has given
 * the memory, and a bookkeeping failure gives the reservation back. On wasm,
 * where a reservation can never be given back, the leaf (one for the whole
 * 32-bit space) and the pool nodes come first, so that their failure comes
 * before memory grows for the megablocks: nothing is grown for them. */
Test(bookkeeping, leaf_failure_unmaps_the_reservation) {
  cr_assert_eq(osmem_init(), 0);
#ifdef __wasi__
  first_get_grows_reservation_then_leaf();
#endif
  spy_install();
  meta_allowed = 0; /* heap map leaf no */
  struct osmem_stats s0 = stats_now();
  errno = 0;
  cr_assert_null(osmem_get_mblocks(1));
  cr_assert_eq(errno, ENOMEM);
  struct osmem_stats s1 = stats_now();
  assert_same_state(s0, s1);
  assert_invariants();
#ifdef __wasi__
  cr_assert_eq(n_maps, 1, "the failed leaf and nothing else: %d grows", n_maps);
  cr_assert(maps[0].failed);
  cr_assert_lt(maps[0].len, MB + 1, "the leaf's grow, not the megablock's");
  cr_assert_eq(s1.os_maps, s0.os_maps + 1);
  cr_assert_eq(s1.os_unmaps, 0, "wasm never unmaps");
#else
  cr_assert_eq(n_maps, 2, "reservation, failed leaf: %d calls", n_maps);
  cr_assert_not(maps[0].failed);
  cr_assert(maps[1].failed);
  cr_assert_eq(s1.os_maps, s0.os_maps + 2);
  cr_assert(!is_meta(maps[0].arg) && is_meta(maps[1].arg));
  cr_assert_eq(n_unmaps, 1, "the untracked reservation is given back");
  cr_assert_eq(unmaps[0].addr, maps[0].ret);
  cr_assert_eq(unmaps[0].len, maps[0].len);
  cr_assert_eq(s1.os_unmaps, s0.os_unmaps + 1);
  cr_assert_eq(mapped_bytes(maps[0].ret, maps[0].len), 0);
#endif
  meta_allowed = -1;
  void *p = osmem_get_mblocks(1);
  cr_assert_not_null(p);
  cr_assert(is_mblock_aligned(p) && osmem_is_heap(p));
  assert_invariants();
  cr_assert_eq(stats_now().reservations, 1);
  /* A failed try does not grow the next reservation (on wasm a reservation
   * is the megablock plus the gap below it). */
  if (OS_CHEAP_RESERVE)
    cr_assert_eq(maps[2].len, OSMEM__RESERVE_FIRST);
  else
    cr_assert_lt(maps[2].len, 2 * MB);
  cr_assert_eq(stats_now().bytes_mapped,
               OS_CHEAP_RESERVE ? OSMEM__RESERVE_FIRST : MB);
  os_reset();
}

/* Natively the pool nodes are mapped after the reservation and the leaf,
 * and their failure gives the reservation back. On wasm they are set aside
 * first, so that their failure comes before memory grows for the megablocks:
 * nothing is grown, nothing to give back. */
Test(bookkeeping, node_failure_unmaps_the_reservation) {
  const size_t n = 16; /* far more than its bookkeeping */
  cr_assert_eq(osmem_init(), 0);
  struct osmem_stats s0 = stats_now();
#ifdef __wasi__
  size_t mem0 = mapped_bytes(NULL, SIZE_MAX);
  refuse_bookkeeping(); /* the pool nodes' grow: no */
#else
  spy_install();
  meta_allowed = 1; /* heap map leaf yes, pool nodes no */
#endif
  errno = 0;
  cr_assert_null(osmem_get_mblocks(n));
  cr_assert_eq(errno, ENOMEM);
  struct osmem_stats s1 = stats_now();
  assert_same_state(s0, s1);
  assert_invariants();
#ifdef __wasi__
  cr_assert_eq(n_maps, 1, "failed nodes, and nothing else: %d grows", n_maps);
  cr_assert(maps[0].failed);
  cr_assert_lt(maps[0].len, n * MB, "the megablocks themselves were asked for");
  cr_assert_eq(mapped_bytes(NULL, SIZE_MAX), mem0, "memory grew");
#else
  cr_assert_eq(n_maps, 3, "reservation, leaf, failed nodes: %d mmaps", n_maps);
  cr_assert(!is_meta(maps[0].arg) && is_meta(maps[1].arg) &&
            is_meta(maps[2].arg));
  cr_assert_not(maps[1].failed);
  cr_assert(maps[2].failed);
  cr_assert_eq(n_unmaps, 1, "the reservation is given back");
  cr_assert_eq(unmaps[0].addr, maps[0].ret);
  cr_assert_eq(unmaps[0].len, maps[0].len);
  cr_assert_eq(mapped_bytes(maps[0].ret, maps[0].len), 0);
#endif
  meta_allowed = -1;
  char *p = osmem_get_mblocks(n);
  cr_assert_not_null(p);
  cr_assert(is_mblock_aligned(p) && osmem_is_heap(p) &&
            osmem_is_heap(p + n * MB - 1));
  assert_invariants();
  os_reset();
}

Test(bookkeeping, late_failure_on_pool_path_leaves_state_unchanged) {
  char *p = osmem_get_mblocks(8);
  cr_assert_not_null(p);
  osmem_set_decommit_threshold(0); /* the undo must keep it non-resident */
  cr_assert_eq(osmem_free_mblocks(p + 2 * MB, 6), 0);
  assert_invariants();
  cr_assert_eq(stats_now().mblocks_pooled_resident, OS_CAN_DECOMMIT ? 0 : 6);
  /* 2 in use: the get's first check (in_use + 2 spares) passes, the one for
   * the 5 megablocks it hands out must map bookkeeping, and fails. */
  hide_spares(osmem__g.in_use + 2);
  assert_invariants();
  struct osmem_stats s0 = stats_now();
  refuse_bookkeeping();
  errno = 0;
  cr_assert_null(osmem_get_mblocks(5));
  cr_assert_eq(errno, ENOMEM);
  cr_assert_eq(n_maps, 1);
  cr_assert(maps[0].failed);
  assert_same_state(s0, stats_now());
  assert_invariants();
  meta_allowed = -1;
  cr_assert_eq(osmem_get_mblocks(5), p + 2 * MB);
  assert_invariants();
  os_reset();
}

#ifndef __wasi__
/* Grows the heap with real gets until the current reservation holds n unused
 * megablocks and handing them out needs more pool nodes than are spare. A
 * 32-bit process cannot grow that far: the first node chunk's spares (24
 * bytes each) cover 2,730 megablocks, most of its address space. There the
 * spares the get would need are hidden once the carve holds n. */
static void build_up_carve(size_t n) {
  const bool hide = SIZE_MAX <= UINT32_MAX;
  cr_assert_not_null(osmem_get_mblocks(1));
  for (size_t k = 16;; k *= 2) {
    struct osmem_stats s = stats_now();
    if (s.bytes_reserved_unused >= n * MB &&
        (hide ||
         s.mblocks_in_use + n > osmem__pool_spare_nodes(&osmem__g.pool)))
      break;
    cr_assert_leq(k, 4096, "setup never reached a carve of %zu", n);
    cr_assert_not_null(osmem_get_mblocks(k));
    assert_invariants();
  }
  if (hide && osmem__pool_spare_nodes(&osmem__g.pool) >= osmem__g.in_use + n)
    hide_spares(osmem__g.in_use + n);
  const struct osmem__pool_node *root = osmem__g.pool.root;
  cr_assert(root == NULL || root->max_len < n, "no pooled range fits");
}
#endif

/* A get of n fresh megablocks that needs more pool nodes than are spare:
 * natively carved from a current reservation that holds them; on wasm, where
 * each get grows its own reservation, with the spares one short. */
static void set_up_fresh_get_short_of_nodes(size_t n) {
#ifdef __wasi__
  cr_assert_not_null(osmem_get_mblocks(1));
  hide_spares(osmem__g.in_use + n);
#else
  build_up_carve(n);
#endif
}

/* A get that needs fresh memory and cannot map the bookkeeping for it fails
 * before anything is carved (or, on wasm, grown): osmem.h promises an
 * unchanged state. 200 megablocks in a 32-bit process, whose reservations
 * leave unused tails of at most 255 (wasm reserves each get alone). */
Test(bookkeeping, late_failure_on_fresh_path_leaves_state_unchanged) {
  const size_t n = OS_CAN_UNMAP && SIZE_MAX <= UINT32_MAX ? 200 : 400;
  set_up_fresh_get_short_of_nodes(n);
  struct osmem_stats s0 = stats_now();
  refuse_bookkeeping();
  errno = 0;
  cr_assert_null(osmem_get_mblocks(n));
  cr_assert_eq(errno, ENOMEM);
  cr_assert_eq(n_maps, 1, "only the failed bookkeeping call");
  cr_assert(maps[0].failed);
  cr_assert_lt(maps[0].len, n * MB, "the megablocks themselves were asked for");
  assert_invariants();
  /* osmem.h: "On failure the library's state is unchanged." */
  assert_same_state(s0, stats_now());
  os_reset();
}

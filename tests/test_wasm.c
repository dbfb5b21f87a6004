/*
 * Cases that exist only for the wasm backend: megablocks, malloc and the
 * library's own break sharing one linear memory that only grows.
 *
 * Built twice (Makefile.am): tests/test_wasm with the engines' 4 GiB limit,
 * and tests/test_wasm_maxmem with -Wl,--max-memory=64MiB and TEST_MAX_MEMORY
 * defined; every test runs in both, against LIMIT. Each test runs in a fresh
 * instance (tests/wasm/suite.sh), so each starts from the module's initial
 * memory. Deterministic: a fixed PRNG seed, no timing.
 *
 * Internal hooks used (the tests link the static library): the memory.grow
 * table osmem__wasm_sys (to count grows, fail them, or put another grower in
 * front of the library's grow) and the break's osmem__wasm_break_take(0)
 * (reads the break, moves nothing) and osmem__wasm_break_room().
 */
#include <config.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "osmem/wasm/sys.h"

#ifndef __wasi__
#error "tests/test_wasm.c is built for the wasm backend only"
#endif

#define MB ((uint64_t)OSMEM_MBLOCK_SIZE)
#define PAGE ((uint64_t)OSMEM__WASM_PAGE)
#define KiB ((uint64_t)1024)
#define MiB ((uint64_t)1 << 20)
#define GiB4 ((uint64_t)1 << 32)
#ifdef TEST_MAX_MEMORY
#define LIMIT ((uint64_t)TEST_MAX_MEMORY)
#else
#define LIMIT GiB4
#endif

/* ------------------------------------------------------------- helpers */

/* The end of linear memory, read directly (not through osmem__wasm_sys). */
static uint64_t mem_end(void) {
  return (uint64_t)__builtin_wasm_memory_size(0) * PAGE;
}

static uint64_t align_up(uint64_t x, uint64_t to) {
  return (x + to - 1) & ~(to - 1);
}

static uint64_t addr(const void *p) { return (uint64_t)(uintptr_t)p; }

/* malloc through a volatile: the compiler may not drop an allocation whose
 * result it would otherwise see unused, nor assume it succeeded. */
static void *volatile sink;
static void *xmalloc(size_t size) {
  sink = malloc(size);
  return sink;
}

/* The library's break (takes 0 bytes: moves nothing) and its room. */
static uint64_t brk_now(void) { return osmem__wasm_break_take(0); }
static uint64_t brk_room(void) { return osmem__wasm_break_room(); }

static uint64_t rng_state;
static void rng_seed(uint64_t s) { rng_state = s; }
static uint64_t rnd(void) { /* xorshift64 */
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}
/* 16 B .. 256 KiB, uniform in log2. */
static size_t rnd_size(void) {
  size_t base = (size_t)1 << (4 + rnd() % 14);
  return base + (size_t)(rnd() % base);
}

/* A pattern that depends on the address and a tag: a block written for one
 * owner and overwritten by another never verifies. */
static uint64_t pat(uint64_t a, uint64_t tag) {
  return (a * 0x9e3779b97f4a7c15u) ^ tag;
}
static void fill(uint64_t lo, uint64_t hi, uint64_t tag) {
  uint64_t a = lo;
  for (; a + 8 <= hi; a += 8) *(uint64_t *)(uintptr_t)a = pat(a, tag);
  for (; a < hi; a++)
    *(unsigned char *)(uintptr_t)a = (unsigned char)pat(a, tag);
}
/* The first address that does not hold the pattern, or 0. */
static uint64_t bad_at(uint64_t lo, uint64_t hi, uint64_t tag) {
  uint64_t a = lo;
  for (; a + 8 <= hi; a += 8)
    if (*(uint64_t *)(uintptr_t)a != pat(a, tag)) return a;
  for (; a < hi; a++)
    if (*(unsigned char *)(uintptr_t)a != (unsigned char)pat(a, tag)) return a;
  return 0;
}

static int overlaps(uint64_t alo, uint64_t ahi, uint64_t blo, uint64_t bhi) {
  return alo < bhi && blo < ahi;
}

/* The first field of the statistics that differs, besides os_maps (every
 * grow attempt counts there, failed or not), or NULL. A failing get may move
 * thread-cached megablocks into the pool (to find a run there): then the
 * pool's shape may change, but pooled + cached may not. */
static const char *stats_diff(const struct osmem_stats *a,
                              const struct osmem_stats *b) {
  /* clang-format off */
#define CMP(f) \
  if (a->f != b->f) return #f
  CMP(mblocks_in_use); CMP(mblocks_peak);
  if (a->mblocks_pooled + a->mblocks_cached !=
      b->mblocks_pooled + b->mblocks_cached)
    return "mblocks_pooled + mblocks_cached";
  if (a->mblocks_cached == b->mblocks_cached) {
    CMP(mblocks_pooled_resident); CMP(pool_ranges);
  }
  CMP(bytes_mapped);
  CMP(bytes_reserved_unused); CMP(reservations); CMP(os_unmaps);
  CMP(os_madvise); CMP(os_mbind); CMP(align_hint_hits);
  CMP(align_exact_hits); CMP(align_trims); CMP(reserve_retries);
#undef CMP
  /* clang-format on */
  return NULL;
}

#define assert_stats_same(before, after, grow_attempts)              \
  do {                                                               \
    struct osmem_stats b_ = (before), a_ = (after);                  \
    const char *d_ = stats_diff(&b_, &a_);                           \
    cr_assert(d_ == NULL, "statistics changed: %s", d_ ? d_ : "");   \
    cr_assert_eq(a_.os_maps, b_.os_maps + (grow_attempts),           \
                 "os_maps %llu, expected %llu + %llu grow attempts", \
                 (unsigned long long)a_.os_maps,                     \
                 (unsigned long long)b_.os_maps,                     \
                 (unsigned long long)(grow_attempts));               \
  } while (0)

/* Memory.grow replacements. They call the real instruction directly. */
static unsigned grow_calls;  /* calls seen */
static uint64_t grown_pages; /* pages grown by successful calls */
static size_t counting_grow(size_t pages) {
  grow_calls++;
  size_t old = __builtin_wasm_memory_grow(0, pages);
  if (old != SIZE_MAX) grown_pages += pages;
  return old;
}
static size_t failing_grow(size_t pages) {
  (void)pages;
  grow_calls++;
  return SIZE_MAX;
}
static int wrapped;
static void use_grow(size_t (*fn)(size_t)) {
  grow_calls = 0;
  grown_pages = 0;
  osmem__wasm_sys.memory_grow = fn;
  wrapped = 1;
}
static void unwrap(void) {
  osmem__wasm_sys_reset();
  wrapped = 0;
}

/* A get that must fail with ENOMEM and change nothing: no memory grown, the
 * statistics as before except os_maps, which counts the grows tried (seen by
 * the wrapper in place, or by a counting one put in for the call), the
 * invariants kept. The grows tried are left in last_attempts. */
static unsigned last_attempts;
#define assert_get_fails_cleanly(n)                                            \
  do {                                                                         \
    int own_ = !wrapped;                                                       \
    if (own_) use_grow(counting_grow);                                         \
    unsigned c0_ = grow_calls;                                                 \
    struct osmem_stats s0_ = stats_now();                                      \
    uint64_t e0_ = mem_end();                                                  \
    errno = 0;                                                                 \
    void *p_ = osmem_get_mblocks(n);                                           \
    int err_ = errno;                                                          \
    last_attempts = grow_calls - c0_;                                          \
    if (own_) unwrap();                                                        \
    cr_assert_null(p_, "get(%zu) gave %p", (size_t)(n), p_);                   \
    cr_assert_eq(err_, ENOMEM, "get(%zu): errno %d", (size_t)(n), err_);       \
    cr_assert_eq(mem_end(), e0_,                                               \
                 "failed get(%zu) grew memory from %llu to %llu", (size_t)(n), \
                 (unsigned long long)e0_, (unsigned long long)mem_end());      \
    assert_stats_same(s0_, stats_now(), last_attempts);                        \
    assert_invariants();                                                       \
  } while (0)

/* Every run handed out must be aligned and lie inside memory. */
#define assert_run_ok(p, n)                                                   \
  do {                                                                        \
    cr_assert_not_null((p), "get(%zu): errno %d", (size_t)(n), errno);        \
    cr_assert(is_mblock_aligned(p), "get(%zu) = %p not aligned", (size_t)(n), \
              (void *)(p));                                                   \
    cr_assert_leq(addr(p) + (uint64_t)(n)*MB, mem_end(),                      \
                  "get(%zu) = %p ends past memory (%llu)", (size_t)(n),       \
                  (void *)(p), (unsigned long long)mem_end());                \
    cr_assert(osmem_is_heap(p) &&                                             \
                  osmem_is_heap((char *)(p) + (n)*OSMEM_MBLOCK_SIZE - 1),     \
              "get(%zu) = %p not in the heap map", (size_t)(n), (void *)(p)); \
  } while (0)

/* ------------------------------------------------------ plain facts */

Test(wasm, backend_facts) {
  cr_assert_str_eq(osmem_backend(), "wasm");
  cr_assert_eq(osmem_page_size(), 65536u);
  cr_assert_eq(osmem_mblock_shift(), (unsigned)OSMEM_MBLOCK_SHIFT);
  cr_assert_eq(osmem_physical_memory(), GiB4);
  cr_assert_eq(osmem_numa_nodes(), 1u);
  /* Wasm memory never shrinks: a freed megablock stays pooled. */
  void *p = osmem_get_mblocks(2);
  assert_run_ok(p, 2);
  cr_assert_eq(osmem_free_mblocks(p, 2), 0);
  uint64_t e = mem_end();
  cr_assert_eq(osmem_release_free_memory(), 0u);
  cr_assert_eq(stats_now().mblocks_pooled, 2u);
  cr_assert_eq(mem_end(), e);
  assert_invariants();
}

/* A fresh get grows memory by exactly what it needs: up to the next
 * megablock boundary plus the request, in one grow; the megablock starts at
 * that boundary. With 64 KiB megablocks that is exactly n pages. */
Test(wasm, fresh_get_grows_exactly) {
  void *warm = osmem_get_mblocks(1); /* bookkeeping set aside first */
  assert_run_ok(warm, 1);
  rng_seed(0x5eed0001);
  uint64_t total = 0;
  const int rounds = LIMIT < GiB4 ? 10 : 24; /* up to 4 MiB each */
  for (int i = 0; i < rounds; i++) {
    /* Another grower moves the end to an assorted offset. */
    size_t skew = (size_t)(rnd() % (MB / PAGE));
    if (skew) cr_assert_neq(__builtin_wasm_memory_grow(0, skew), SIZE_MAX);
    size_t n = 1 + (size_t)(rnd() % 3);
    uint64_t e = mem_end();
    uint64_t meta_before = stats_now().os_maps;
    uint64_t b = brk_now(), room = brk_room();
    use_grow(counting_grow);
    void *p = osmem_get_mblocks(n);
    unwrap();
    assert_run_ok(p, n);
    cr_assert_eq(addr(p), align_up(e, MB),
                 "round %d: get(%zu) at %p, end was %llu", i, n, p,
                 (unsigned long long)e);
    cr_assert_eq(mem_end(), addr(p) + n * MB,
                 "round %d: memory grew past the run", i);
    cr_assert_eq(grow_calls, 1u, "round %d: %u grows for one get", i,
                 grow_calls);
    cr_assert_eq(stats_now().os_maps, meta_before + 1);
    if (MB == PAGE)
      cr_assert_eq(grown_pages, n, "64 KiB megablocks: %zu pages for get(%zu)",
                   (size_t)grown_pages, n);
    /* Only sbrk moves the break. The gap joins the break's room when that
     * room ended where the gap starts (with the sbrk replacement), else it
     * is bookkeeping room. */
    cr_assert_eq(brk_now(), b, "round %d: a get moved the break", i);
#ifdef OSMEM_WASM_SBRK
    uint64_t joined = b + room == e ? addr(p) - e : 0;
#else
    uint64_t joined = 0;
#endif
    cr_assert_eq(brk_room(), room + joined,
                 "round %d: room %zu, was %llu, gap %llu", i,
                 (size_t)brk_room(), (unsigned long long)room,
                 (unsigned long long)(addr(p) - e));
    total += n;
  }
  struct osmem_stats s = stats_now();
  cr_assert_eq(s.mblocks_in_use, total + 1);
  cr_assert_eq(s.reservations, (uint64_t)rounds + 1);
  assert_invariants();
}

/* ------------------------------------------- malloc and megablocks */

/* Runs live at once are bounded so that the test stays within its memory:
 * 64 MiB in the --max-memory module, a few hundred MiB (all written) in the
 * other. */
#ifdef TEST_MAX_MEMORY
#define ILV_FRESH_ROUNDS 12 /* no run freed: every get is fresh */
#define ILV_ROUNDS 100
#define ILV_KEEP_RUNS 8 /* afterwards, runs beyond this are freed */
#else
#define ILV_FRESH_ROUNDS 60
#define ILV_ROUNDS 300
#define ILV_KEEP_RUNS 24
#endif
#define ILV_MAX_RUNS (ILV_FRESH_ROUNDS + 1)
#define ILV_MAX_BLOCKS 48

struct span {
  uint64_t lo, hi, tag;
};
static struct span ilv_runs[ILV_MAX_RUNS], ilv_blocks[ILV_MAX_BLOCKS];
static int ilv_nruns, ilv_nblocks;

static void ilv_drop_run(int i) {
  struct span *r = &ilv_runs[i];
  uint64_t bad = bad_at(r->lo, r->hi, r->tag);
  cr_assert_eq(bad, 0u, "megablock run [%llx, %llx) overwritten at %llx",
               (unsigned long long)r->lo, (unsigned long long)r->hi,
               (unsigned long long)bad);
  cr_assert_eq(osmem_free_mblocks((void *)(uintptr_t)r->lo,
                                  (size_t)((r->hi - r->lo) / MB)),
               0);
  *r = ilv_runs[--ilv_nruns];
}

static void ilv_drop_block(int i) {
  struct span *b = &ilv_blocks[i];
  uint64_t bad = bad_at(b->lo, b->hi, b->tag);
  cr_assert_eq(bad, 0u, "malloc block [%llx, %llx) overwritten at %llx",
               (unsigned long long)b->lo, (unsigned long long)b->hi,
               (unsigned long long)bad);
  free((void *)(uintptr_t)b->lo);
  *b = ilv_blocks[--ilv_nblocks];
}

static void ilv_check_all(void) {
  for (int i = 0; i < ilv_nruns; i++) {
    struct span *r = &ilv_runs[i];
    cr_assert_eq(bad_at(r->lo, r->hi, r->tag), 0u, "run %d overwritten", i);
    for (int j = 0; j < ilv_nblocks; j++)
      cr_assert_not(overlaps(r->lo, r->hi, ilv_blocks[j].lo, ilv_blocks[j].hi),
                    "malloc block [%llx, %llx) inside run [%llx, %llx)",
                    (unsigned long long)ilv_blocks[j].lo,
                    (unsigned long long)ilv_blocks[j].hi,
                    (unsigned long long)r->lo, (unsigned long long)r->hi);
    for (int j = i + 1; j < ilv_nruns; j++)
      cr_assert_not(overlaps(r->lo, r->hi, ilv_runs[j].lo, ilv_runs[j].hi),
                    "runs %d and %d overlap", i, j);
  }
  for (int j = 0; j < ilv_nblocks; j++)
    cr_assert_eq(bad_at(ilv_blocks[j].lo, ilv_blocks[j].hi, ilv_blocks[j].tag),
                 0u, "malloc block %d overwritten", j);
}

/* Malloc grows memory (through the library's sbrk, or wasi-libc's own
 * without the replacement) in between megablock gets, in many orders: every
 * run is aligned, inside memory, and overlaps no live malloc block and no
 * other run; every byte written stays. */
Test(wasm, interleave_malloc_alignment) {
  rng_seed(0x1badb002);
  uint64_t tag = 1;
  int fresh = 0, pooled = 0;
  for (int round = 0; round < ILV_ROUNDS; round++) {
    int mallocs = (int)(rnd() % 7);
    for (int k = 0; k < mallocs; k++) {
      if (ilv_nblocks == ILV_MAX_BLOCKS)
        ilv_drop_block((int)(rnd() % ILV_MAX_BLOCKS));
      size_t size = rnd_size();
      void *q = xmalloc(size);
      cr_assert_not_null(q, "malloc(%zu) failed", size);
      struct span b = {addr(q), addr(q) + size, tag++};
      cr_assert_leq(b.hi, mem_end());
      cr_assert_not(osmem_is_heap(q), "malloc gave megablock memory %p", q);
      for (int i = 0; i < ilv_nruns; i++)
        cr_assert_not(overlaps(b.lo, b.hi, ilv_runs[i].lo, ilv_runs[i].hi),
                      "malloc(%zu) = %p overlaps run [%llx, %llx)", size, q,
                      (unsigned long long)ilv_runs[i].lo,
                      (unsigned long long)ilv_runs[i].hi);
      fill(b.lo, b.hi, b.tag);
      ilv_blocks[ilv_nblocks++] = b;
    }
    if (ilv_nblocks && rnd() % 3 == 0)
      ilv_drop_block((int)(rnd() % ilv_nblocks));
    if (round >= ILV_FRESH_ROUNDS) {
      while (ilv_nruns > ILV_KEEP_RUNS) ilv_drop_run((int)(rnd() % ilv_nruns));
      if (ilv_nruns && rnd() % 3 == 0) ilv_drop_run((int)(rnd() % ilv_nruns));
    }

    size_t n = 1 + (size_t)(rnd() % 3);
    uint64_t maps = stats_now().os_maps;
    void *p = osmem_get_mblocks(n);
    assert_run_ok(p, n);
    if (stats_now().os_maps == maps)
      pooled++;
    else
      fresh++;
    struct span r = {addr(p), addr(p) + n * MB, tag++};
    for (int j = 0; j < ilv_nblocks; j++)
      cr_assert_not(
          overlaps(r.lo, r.hi, ilv_blocks[j].lo, ilv_blocks[j].hi),
          "round %d: get(%zu) = %p overlaps malloc block [%llx, %llx)", round,
          n, p, (unsigned long long)ilv_blocks[j].lo,
          (unsigned long long)ilv_blocks[j].hi);
    for (int i = 0; i < ilv_nruns; i++)
      cr_assert_not(overlaps(r.lo, r.hi, ilv_runs[i].lo, ilv_runs[i].hi),
                    "round %d: get(%zu) = %p overlaps a live run", round, n, p);
    fill(r.lo, r.hi, r.tag);
    ilv_runs[ilv_nruns++] = r;
    if (round % 10 == 9) ilv_check_all();
  }
  ilv_check_all();
  assert_invariants();
  /* Both paths were taken many times. */
  cr_assert_geq(fresh, ILV_FRESH_ROUNDS, "only %d fresh gets", fresh);
  cr_assert_geq(pooled, (ILV_ROUNDS - ILV_FRESH_ROUNDS) / 4,
                "only %d pooled gets", pooled);
  while (ilv_nruns) ilv_drop_run(ilv_nruns - 1);
  while (ilv_nblocks) ilv_drop_block(ilv_nblocks - 1);
  cr_assert_eq(stats_now().mblocks_in_use, 0u);
  assert_invariants();
}

/* ------------------------------------------------- sbrk replacement */

/* Malloc's memory comes from the library's sbrk: every page malloc grows
 * goes through the library's memory.grow table, which wasi-libc's own sbrk
 * never reaches. */
Test(wasm, sbrk_replacement_linked) {
#ifndef OSMEM_WASM_SBRK
  cr_skip_test("built with --disable-wasm-sbrk: malloc uses wasi-libc's sbrk");
#else
  uint64_t e0 = mem_end();
  uint64_t maps0 = stats_now().os_maps;
  use_grow(counting_grow);
  void *a = xmalloc(3 * MiB), *b = xmalloc(MiB + 17), *c = xmalloc(300000);
  unwrap();
  cr_assert(a && b && c, "malloc failed");
  cr_assert_geq(grow_calls, 1u, "malloc never reached the library's sbrk");
  cr_assert_eq(mem_end() - e0, grown_pages * PAGE,
               "memory grew %llu bytes, the library's sbrk %llu",
               (unsigned long long)(mem_end() - e0),
               (unsigned long long)(grown_pages * PAGE));
  cr_assert_eq(stats_now().os_maps, maps0 + grow_calls);
  /* 3 MiB cannot fit in the initial memory: it ends in grown memory. */
  cr_assert_gt(addr(a) + 3 * MiB, e0);
  cr_assert_leq(addr(a) + 3 * MiB, mem_end());
  /* The break covers what malloc holds. */
  cr_assert_geq(brk_now(), addr(a) + 3 * MiB);
  cr_assert_leq(brk_now() + brk_room(), mem_end());
  free(a), free(b), free(c);
#endif
}

/* sbrk's contract: sbrk(0) is the break; sbrk(+n) returns the old break and
 * the n bytes are writable; sbrk(-n) moves it back and returns the old
 * value; too large a negative fails with ENOMEM and changes nothing. When
 * the room is used up and not at the end of memory, the break moves to the
 * end (a new region, which sbrk(-n) never goes below). */
Test(wasm, sbrk_contract) {
#ifndef OSMEM_WASM_SBRK
  cr_skip_test("built with --disable-wasm-sbrk: sbrk is wasi-libc's");
#else
  uint64_t b0 = addr(sbrk(0));
  cr_assert_eq(addr(sbrk(0)), b0, "sbrk(0) moved the break");
  cr_assert_eq(brk_now(), b0);
  cr_assert_leq(b0, mem_end());

  /* Small steps, in the room there is or, where the room ends at the end of
   * memory (so in a fresh instance), past it: memory grows in place. */
  cr_assert(brk_room() >= 24 || b0 + brk_room() == mem_end(),
            "no room for 24 bytes and not at the end of memory");
  uint64_t e = mem_end();
  char *p = sbrk(24);
  cr_assert_neq(p, (void *)-1);
  cr_assert_eq(addr(p), b0, "sbrk(24) = %p, break was %llx", (void *)p,
               (unsigned long long)b0);
  cr_assert_eq(addr(sbrk(0)), b0 + 24);
  memset(p, 0x5a, 24);
  cr_assert_eq(addr(sbrk(-24)), b0 + 24, "sbrk(-24) returns the old break");
  cr_assert_eq(addr(sbrk(0)), b0);
  cr_assert_geq(mem_end(), e);

  /* Far below the start of memory: ENOMEM, nothing changes. */
  e = mem_end();
  size_t room = brk_room();
  errno = 0;
  cr_assert_eq(sbrk(-(intptr_t)(b0 + 1)), (void *)-1);
  cr_assert_eq(errno, ENOMEM);
  errno = 0;
  cr_assert_eq(sbrk(INTPTR_MIN), (void *)-1);
  cr_assert_eq(errno, ENOMEM);
  cr_assert_eq(addr(sbrk(0)), b0);
  cr_assert_eq(brk_room(), room);
  cr_assert_eq(mem_end(), e);

  /* Another grower takes the end: the room left is not at the end, so a
   * request larger than the room moves the break to a new region at the
   * end of memory. */
  cr_assert_neq(__builtin_wasm_memory_grow(0, 1), SIZE_MAX);
  room = brk_room();
  e = mem_end();
  size_t big = room + 3 * PAGE + 100;
  p = sbrk((intptr_t)big);
  cr_assert_neq(p, (void *)-1);
  cr_assert_eq(addr(p), e, "the break moved to %p, memory ended at %llx",
               (void *)p, (unsigned long long)e);
  cr_assert_eq(mem_end(), e + align_up(big, PAGE));
  cr_assert_eq(addr(sbrk(0)), e + big);
  memset(p, 0xa5, big);
  /* Not below the start of its region. */
  errno = 0;
  cr_assert_eq(sbrk(-(intptr_t)(big + 1)), (void *)-1);
  cr_assert_eq(errno, ENOMEM);
  cr_assert_eq(addr(sbrk(0)), e + big);
  cr_assert_eq(addr(sbrk(-(intptr_t)big)), e + big);
  cr_assert_eq(addr(sbrk(0)), e);

  /* At the end of memory the break simply grows: sbrk(+n) returns the old
   * break even past the room, and memory grows by what is missing. */
  uint64_t b1 = addr(sbrk(0));
  room = brk_room();
  cr_assert_eq(b1 + room, mem_end(), "the break's room is at the end");
  e = mem_end();
  big = room + 2 * PAGE + 8;
  p = sbrk((intptr_t)big);
  cr_assert_eq(addr(p), b1);
  cr_assert_eq(mem_end(), e + align_up(big - room, PAGE));
  memset(p, 0x3c, big);
  cr_assert_eq(addr(sbrk(-(intptr_t)big)), b1 + big);
  cr_assert_eq(addr(sbrk(0)), b1);
  cr_assert_eq(brk_room(), room + align_up(big - room, PAGE));

  /* A failed grow: -1, ENOMEM, nothing changes. */
  room = brk_room();
  e = mem_end();
  use_grow(failing_grow);
  errno = 0;
  void *q = sbrk((intptr_t)(room + 1));
  int err = errno;
  unwrap();
  cr_assert_eq(q, (void *)-1);
  cr_assert_eq(err, ENOMEM);
  cr_assert_geq(grow_calls, 1u);
  cr_assert_eq(addr(sbrk(0)), b1);
  cr_assert_eq(brk_room(), room);
  cr_assert_eq(mem_end(), e);
  /* Malloc copes with a failing sbrk: NULL, no trap. */
  use_grow(failing_grow);
  errno = 0;
  void *m = xmalloc(8 * MiB);
  unwrap();
  cr_assert_null(m);
  cr_assert_eq(mem_end(), e);
  assert_invariants();
#endif
}

/* Gaps below aligned megablocks are filled by malloc: the gap under a
 * megablock got right after malloc grew memory continues the break, and
 * malloc's next sbrk lands there without growing memory. Over many rounds,
 * memory stays close to the payload. */
Test(wasm, malloc_fills_gaps) {
#ifndef OSMEM_WASM_SBRK
  cr_skip_test("built with --disable-wasm-sbrk: malloc does not use the gaps");
#else
  if (MB == PAGE) cr_skip_test("64 KiB megablocks leave no gaps");
  void *warm = osmem_get_mblocks(1);
  assert_run_ok(warm, 1);
  /* Malloc grows memory at its end: the break's room is at the end, and
   * the end is not aligned. */
  void *m0 = xmalloc(300 * KiB);
  cr_assert_not_null(m0);
  uint64_t lo = mem_end();
  cr_assert_eq(brk_now() + brk_room(), lo, "the break is not at the end");
  cr_assert_neq(lo % MB, 0u, "malloc left the end aligned");
  size_t room = brk_room();
  void *p = osmem_get_mblocks(1);
  assert_run_ok(p, 1);
  cr_assert_eq(addr(p), align_up(lo, MB));
  cr_assert_eq(brk_room(), room + (addr(p) - lo),
               "the gap did not join the break");
  uint64_t e = mem_end();
  size_t want = (size_t)(addr(p) - lo) / 2;
  char *m1 = xmalloc(want);
  cr_assert_not_null(m1);
  cr_assert_eq(mem_end(), e, "malloc grew memory instead of using the gap");
  cr_assert(addr(m1) + want > lo && addr(m1) + want <= addr(p),
            "malloc(%zu) = %p, not in the gap [%llx, %p)", want, (void *)m1,
            (unsigned long long)lo, p);
  memset(m1, 0x77, want);

  /* Many rounds: memory grown stays close to what is used. */
  rng_seed(0xfeedf00d);
  uint64_t start = mem_end(), payload = 0;
  int rounds = LIMIT < GiB4 ? 20 : 48, in_gaps = 0;
  for (int r = 0; r < rounds; r++) {
    for (int k = 0; k < 3; k++) {
      size_t size = 64 * KiB + (size_t)(rnd() % (192 * KiB));
      char *q = xmalloc(size);
      cr_assert_not_null(q);
      memset(q, 0x11, size);
      payload += size;
    }
    uint64_t end_before = mem_end();
    void *mb = osmem_get_mblocks(1);
    assert_run_ok(mb, 1);
    payload += MB;
    char *q = xmalloc(100 * KiB);
    cr_assert_not_null(q);
    payload += 100 * KiB;
    if (addr(q) + 100 * KiB > end_before && addr(q) < addr(mb)) in_gaps++;
  }
  uint64_t grown = mem_end() - start;
  /* Measured: 1.03 times the payload with the replacement, 1.25 without. */
  cr_assert_leq(grown, payload + payload / 16 + MB,
                "memory grew %llu bytes for a payload of %llu",
                (unsigned long long)grown, (unsigned long long)payload);
  /* A malloc right after a get comes from the gap below the megablock (or
   * from malloc's own free memory): never the case without the sbrk
   * replacement, where malloc grows memory above the megablock. */
  cr_assert_geq(in_gaps, rounds / 2,
                "only %d of %d mallocs used the gap "
                "below the megablock just got",
                in_gaps, rounds);
  assert_invariants();
#endif
}

/* ------------------------------------------------ other growers, failures */

/* An interloper: on the first `left` grows, another grower takes `pages`
 * pages (between the library's memory.size read and its grow), fills them
 * with a pattern, and the real grow follows. */
#define IL_MAX 32
static size_t il_pages;
static int il_left, il_count;
static struct span il[IL_MAX];
static size_t interloper_grow(size_t pages) {
  grow_calls++;
  if (il_left > 0 && il_count < IL_MAX) {
    il_left--;
    size_t old = __builtin_wasm_memory_grow(0, il_pages);
    if (old != SIZE_MAX) {
      struct span s = {old * PAGE, (old + il_pages) * PAGE,
                       0xabcd0000u + il_count};
      fill(s.lo, s.hi, s.tag);
      il[il_count++] = s;
    }
  }
  size_t old = __builtin_wasm_memory_grow(0, pages);
  if (old != SIZE_MAX) grown_pages += pages;
  return old;
}

static void assert_clear_of_interlopers(uint64_t lo, uint64_t hi) {
  for (int i = 0; i < il_count; i++)
    cr_assert_not(overlaps(lo, hi, il[i].lo, il[i].hi),
                  "[%llx, %llx) overlaps the other grower's [%llx, %llx)",
                  (unsigned long long)lo, (unsigned long long)hi,
                  (unsigned long long)il[i].lo, (unsigned long long)il[i].hi);
}

Test(wasm, grow_landed_elsewhere) {
  /* Sizes below, at and above a megablock's pages; fewer in 64 MiB. */
#ifdef TEST_MAX_MEMORY
  static const size_t sizes[] = {1, 15, 17, 40};
#else
  static const size_t sizes[] = {1, 3, 15, 16, 17, 31, 40};
#endif
  static struct span got[64];
  int ngot = 0;
  uint64_t tag = 77;
  /* The first get is cold (its first grow is for bookkeeping); then, for
   * each size, one with the end as it is and one with the end aligned. */
  for (int step = -1; step < (int)(2 * (sizeof sizes / sizeof sizes[0]));
       step++) {
    if (step >= 0 && step % 2 == 1) { /* align the end first */
      size_t to = (size_t)((align_up(mem_end(), MB) - mem_end()) / PAGE);
      if (to) cr_assert_neq(__builtin_wasm_memory_grow(0, to), SIZE_MAX);
    }
    size_t n = LIMIT < GiB4 ? 1 : 1 + (size_t)(step & 1);
    il_pages = step < 0 ? 3 : sizes[step / 2];
    il_left = 1;
    use_grow(interloper_grow);
    void *p = osmem_get_mblocks(n);
    unwrap();
    assert_run_ok(p, n);
    cr_assert_eq(il_left, 0, "step %d: the interloper never ran", step);
    struct span r = {addr(p), addr(p) + n * MB, tag++};
    assert_clear_of_interlopers(r.lo, r.hi);
    for (int i = 0; i < ngot; i++)
      cr_assert_not(overlaps(r.lo, r.hi, got[i].lo, got[i].hi));
    fill(r.lo, r.hi, r.tag);
    got[ngot++] = r;
    assert_invariants();
  }
  /* An interloper on every grow: a result is still right, or ENOMEM after
   * a bounded number of tries, never a trap. (With 1 MiB megablocks, 15
   * pages before each grow make every try land short of the boundary; with
   * 64 KiB megablocks any grow is aligned, so the get succeeds.) */
  il_pages = MB / PAGE > 1 ? MB / PAGE - 1 : 1;
  il_left = 1000;
  struct osmem_stats s0 = stats_now();
  use_grow(interloper_grow);
  void *p = osmem_get_mblocks(1);
  unwrap();
  il_left = 0;
  if (p) {
    assert_run_ok(p, 1);
    assert_clear_of_interlopers(addr(p), addr(p) + MB);
    got[ngot++] = (struct span){addr(p), addr(p) + MB, tag++};
    fill(addr(p), addr(p) + MB, tag - 1);
  } else {
    cr_assert_neq(MB, PAGE, "64 KiB megablocks always fit: errno %d", errno);
    cr_assert_eq(errno, ENOMEM);
    assert_stats_same(s0, stats_now(), grow_calls);
  }
  cr_assert_leq(grow_calls, 8u, "%u grows for one get", grow_calls);
  /* Malloc and later gets never use the other grower's pages. */
  for (int k = 0; k < 40; k++) {
    size_t size = 16 * KiB + (size_t)k * 4 * KiB;
    void *q = xmalloc(size);
    cr_assert_not_null(q);
    assert_clear_of_interlopers(addr(q), addr(q) + size);
  }
  for (int k = 0; k < 4; k++) {
    void *q = osmem_get_mblocks(1);
    assert_run_ok(q, 1);
    assert_clear_of_interlopers(addr(q), addr(q) + MB);
  }
  for (int i = 0; i < il_count; i++)
    cr_assert_eq(bad_at(il[i].lo, il[i].hi, il[i].tag), 0u,
                 "the other grower's pages were written");
  for (int i = 0; i < ngot; i++)
    cr_assert_eq(bad_at(got[i].lo, got[i].hi, got[i].tag), 0u);
  assert_invariants();
}

static size_t oom_calls, oom_n;
static int oom_err;
static void count_oom(size_t n, int err) {
  oom_calls++;
  oom_n = n;
  oom_err = err;
}

/* memory.grow fails: ENOMEM, nothing changes, no trap; the pool still
 * serves; once grows work again, so do gets. */
Test(wasm, grow_fails) {
  osmem_set_oom_handler(count_oom);
  /* Cold: the first grow the library makes (for its bookkeeping) fails. */
  use_grow(failing_grow);
  assert_get_fails_cleanly(1);
  cr_assert_geq(last_attempts, 1u);
  cr_assert_eq(oom_calls, 1u);
  cr_assert_eq(oom_n, 1u);
  cr_assert_eq(oom_err, ENOMEM);
  unwrap();

  void *a = osmem_get_mblocks(1), *b = osmem_get_mblocks(2);
  assert_run_ok(a, 1);
  assert_run_ok(b, 2);
  cr_assert_eq(osmem_free_mblocks(a, 1), 0);

  /* Warm: the reservation's grow fails. */
  use_grow(failing_grow);
  assert_get_fails_cleanly(3);
  cr_assert_geq(last_attempts, 1u);
  cr_assert_eq(oom_calls, 2u);
  cr_assert_eq(oom_n, 3u);
  /* A pooled megablock needs no grow. */
  grow_calls = 0;
  uint64_t e = mem_end();
  void *c = osmem_get_mblocks(1);
  cr_assert_eq(c, a, "the pooled megablock was not reused");
  cr_assert_eq(grow_calls, 0u);
  cr_assert_eq(mem_end(), e);
  assert_get_fails_cleanly(1);
  cr_assert_geq(last_attempts, 1u);
  unwrap();

  void *d = osmem_get_mblocks(4);
  assert_run_ok(d, 4);
  cr_assert_eq(stats_now().mblocks_in_use, 7u);
  cr_assert_eq(oom_calls, 3u);
  osmem_set_oom_handler(NULL);
  assert_invariants();
}

/* Requests whose size cannot be represented: n * OSMEM_MBLOCK_SIZE does not
 * fit a 32-bit size_t (n = 2^32 / OSMEM_MBLOCK_SIZE is exactly 4 GiB).
 * Refused with ENOMEM before anything grows, cold and warm. */
Test(wasm, huge_requests) {
  const size_t overflow = (size_t)1 << (32 - OSMEM_MBLOCK_SHIFT);
  osmem_set_oom_handler(count_oom);
  for (int warm = 0; warm < 2; warm++) {
    if (warm) {
      void *p = osmem_get_mblocks(2);
      assert_run_ok(p, 2);
    }
    static const size_t ns[] = {SIZE_MAX,        SIZE_MAX - 1, (size_t)1 << 31,
                                (size_t)1 << 24, overflow + 1, overflow};
    for (unsigned i = 0; i < sizeof ns / sizeof ns[0]; i++) {
      assert_get_fails_cleanly(ns[i]);
      cr_assert_eq(last_attempts, 0u, "get(%zu): %u grows", ns[i],
                   last_attempts);
      cr_assert_eq(oom_n, ns[i]);
    }
  }
  cr_assert_eq(oom_calls, 12u);
  osmem_set_oom_handler(NULL);
  void *p = osmem_get_mblocks(1);
  assert_run_ok(p, 1);
}

/* The smallest n whose run would pass 4 GiB from the current end of memory
 * (representable in a size_t): refused before anything grows, cold and warm
 * (docs/design.md: "A request whose end would pass 4 GiB is refused before
 * anything grows"). */
Test(wasm, request_past_4gib) {
  for (int warm = 0; warm < 2; warm++) {
    if (warm) {
      void *p = osmem_get_mblocks(2);
      assert_run_ok(p, 2);
    }
    size_t past = (size_t)((GiB4 - align_up(mem_end(), MB)) / MB) + 1;
    assert_get_fails_cleanly(past);
    cr_assert_eq(last_attempts, 0u, "get(%zu): %u grows", past, last_attempts);
    assert_get_fails_cleanly(past + 1);
    cr_assert_eq(last_attempts, 0u);
  }
  void *p = osmem_get_mblocks(1);
  assert_run_ok(p, 1);
}

/* One request for all the memory left below 4 GiB succeeds, untouched: with
 * 1 MiB megablocks exactly all (the bookkeeping fits in the gap below the
 * first boundary), with 64 KiB megablocks all but 64 (the bookkeeping for
 * 65,000 megablocks, about 30 pages, comes first). Then nothing more fits,
 * and the pool still serves. (This once failed: an overflow guard for
 * rounding reservations up to 2 MiB, which wasm never does, refused any
 * request within 2 MiB of 4 GiB.) */
Test(wasm, request_up_to_4gib) {
#ifdef TEST_MAX_MEMORY
  cr_skip_test("needs the 4 GiB module (test_wasm)");
#else
  uint64_t e0 = mem_end();
  size_t fit = (size_t)((GiB4 - align_up(e0, MB)) / MB);
  size_t n = MB == PAGE ? fit - 64 : fit;
  use_grow(counting_grow);
  void *p = osmem_get_mblocks(n);
  unwrap();
  assert_run_ok(p, n);
  if (MB != PAGE) {
    cr_assert_eq(addr(p), align_up(e0, MB));
    cr_assert_eq(addr(p) + n * MB, GiB4);
  }
  cr_assert_eq(mem_end() - e0, grown_pages * PAGE);
  cr_assert_leq(addr(p) + n * MB, GiB4);
  /* Whatever is left is less than a megablock, or bookkeeping room. */
  size_t more = 0;
  while (osmem_get_mblocks(1)) more++;
  cr_assert_eq(errno, ENOMEM);
  cr_assert_leq(more, 64u);
  cr_assert_gt(align_up(mem_end(), MB) + MB, GiB4);
  assert_get_fails_cleanly(1);
  cr_assert_eq(osmem_free_mblocks(p, 1), 0);
  cr_assert_eq(osmem_get_mblocks(1), p);
  assert_invariants();
#endif
}

/* --------------------------------------------------------- exhaustion */

/* Gets of one megablock until memory is exhausted (4 GiB, or the module's
 * maximum): exactly as many succeed as fit, then ENOMEM with nothing
 * changed; frees and gets still work, from the pool, with no grow. The
 * megablocks are never touched, so the host commits none of them. */
Test(wasm, exhaust_memory) {
  /* Bookkeeping set aside first (pool nodes, the heap map), so that the
   * count depends only on where memory ends at the start. */
  void *warm = osmem_get_mblocks(1);
  assert_run_ok(warm, 1);
  cr_assert_eq(osmem_free_mblocks(warm, 1), 0);
  size_t cap = (size_t)(LIMIT / MB);
  uint32_t *got = xmalloc(cap * sizeof *got);
  unsigned char *seen = xmalloc(cap);
  cr_assert(got && seen);
  memset(seen, 0, cap);
  /* More than 4,096 megablocks to go (4 GiB of 64 KiB megablocks): all but
   * 4,096 are got in one request and freed to the pool first, and the gets
   * below take them from there. Node.js runs a full garbage collection on
   * most memory.grow calls once memory is large (V8 counts it as external
   * memory): 65,536 fresh gets took it 290 s, 4,096 take 10 to 40 s. */
  size_t left = (size_t)((LIMIT - align_up(mem_end(), MB)) / MB);
  size_t pooled = left > 4096 ? left - 4096 : 0;
  if (pooled) {
    void *big = osmem_get_mblocks(pooled);
    assert_run_ok(big, pooled);
    cr_assert_eq(osmem_free_mblocks(big, pooled), 0);
  }
  uint64_t e0 = mem_end();
  size_t count = 0;
  struct osmem_stats before;
  unsigned calls_before;
  uint64_t end_before;
  void *p;
  use_grow(counting_grow);
  for (;;) {
    before = stats_now();
    calls_before = grow_calls;
    end_before = mem_end();
    p = osmem_get_mblocks(1);
    if (!p) break;
    cr_assert(is_mblock_aligned(p), "%p", p);
    cr_assert_leq(addr(p) + MB, mem_end());
    cr_assert_lt(count, cap, "more megablocks than fit");
    size_t i = (size_t)(addr(p) / MB);
    cr_assert_not(seen[i], "%p handed out twice", p);
    seen[i] = 1;
    got[count++] = (uint32_t)i;
  }
  int err = errno;
  unsigned attempts = grow_calls - calls_before;
  unwrap();
  cr_assert_eq(err, ENOMEM);
  uint64_t e = mem_end();
  cr_assert_gt(align_up(e, MB) + MB, LIMIT,
               "ENOMEM after %zu megablocks, but memory ends at %llu and one "
               "more would fit below %llu",
               count, (unsigned long long)e, (unsigned long long)LIMIT);
  /* Every byte grown was grown by the library. */
  cr_assert_eq(e - e0, grown_pages * PAGE);
  /* The failed get changed nothing. */
  cr_assert_eq(e, end_before, "the failed get grew memory");
  assert_stats_same(before, stats_now(), attempts);
  cr_assert_eq(stats_now().mblocks_in_use, count);
  size_t distinct = 0;
  for (size_t i = 0; i < cap; i++) distinct += seen[i];
  cr_assert_eq(distinct, count);
  cr_assert_gt(count, pooled + 1, "no fresh megablock after the pooled ones");
#ifdef TEST_MAX_MEMORY
  /* The pooled warm-up megablock, then all that fit above the start. */
  size_t fit = 1 + (size_t)((LIMIT - align_up(e0, MB)) / MB);
  cr_assert_eq(count, fit,
               "%zu megablocks below %llu from an end at %llu, "
               "expected %zu",
               count, (unsigned long long)LIMIT, (unsigned long long)e0, fit);
#endif
  /* Nothing changes however often it is asked. */
  assert_get_fails_cleanly(1);
  assert_get_fails_cleanly(2);
  assert_invariants();

  /* Frees and gets: from the pool, lowest address first, no grow. */
  use_grow(counting_grow);
  void *x = (void *)(uintptr_t)((uint64_t)got[count / 2] * MB);
  void *y = (void *)(uintptr_t)((uint64_t)got[count / 3] * MB);
  cr_assert_eq(osmem_free_mblocks(x, 1), 0);
  cr_assert_eq(osmem_free_mblocks(y, 1), 0);
  cr_assert_not(osmem_is_heap(x));
  void *lo = addr(x) < addr(y) ? x : y, *hi = lo == x ? y : x;
  if (addr(hi) != addr(lo) + MB) /* two single holes: no run of two */
    assert_get_fails_cleanly(2);
  unsigned g0 = grow_calls;
  cr_assert_eq(osmem_get_mblocks(1), lo);
  cr_assert_eq(osmem_get_mblocks(1), hi);
  cr_assert_eq(grow_calls, g0, "%u grows with the pool serving",
               grow_calls - g0);
  assert_get_fails_cleanly(1);
  /* Two neighbours freed make a run of two. */
  uint64_t a = 0;
  for (size_t i = 0; i + 1 < count && !a; i++)
    if (got[i + 1] == got[i] + 1) a = (uint64_t)got[i] * MB;
  if (a == 0)
    for (size_t i = 0; i + 1 < count && !a; i++)
      if (got[i] == got[i + 1] + 1) a = (uint64_t)got[i + 1] * MB;
  cr_assert_neq(a, 0u, "no two neighbouring megablocks");
  cr_assert_eq(osmem_free_mblocks((void *)(uintptr_t)a, 1), 0);
  cr_assert_eq(osmem_free_mblocks((void *)(uintptr_t)(a + MB), 1), 0);
  /* They sit in the thread cache: the get tries fresh memory (refused:
   * memory is exhausted), then coalesces the cache into the pool. */
  g0 = grow_calls;
  cr_assert_eq(osmem_get_mblocks(2), (void *)(uintptr_t)a);
  cr_assert_leq(grow_calls - g0, 1, "%u grows with the pool serving",
                grow_calls - g0);
  unwrap();
  /* Malloc of more than is left fails without a trap. */
  cr_assert_null(xmalloc((size_t)(LIMIT < GiB4 ? LIMIT / 2 : 16 * MiB)));
  cr_assert_eq(stats_now().mblocks_in_use, count);
  assert_invariants();
}

/* One request for everything left: exactly what fits below the limit, and
 * one more megablock than that fails cleanly. Only with the 64 MiB module:
 * with 4 GiB and 64 KiB megablocks, the bookkeeping for 65,000 megablocks
 * itself takes memory first. */
Test(wasm, limit_one_request) {
#ifndef TEST_MAX_MEMORY
  cr_skip_test("runs in the --max-memory module (test_wasm_maxmem)");
#else
  void *warm = osmem_get_mblocks(1);
  assert_run_ok(warm, 1);
  uint64_t e0 = mem_end();
  size_t fit = (size_t)((LIMIT - align_up(e0, MB)) / MB);
  assert_get_fails_cleanly(fit + 1);
  cr_assert_eq(last_attempts, 1u, "the engine refuses the grow");
  void *p = osmem_get_mblocks(fit);
  assert_run_ok(p, fit);
  cr_assert_eq(addr(p), align_up(e0, MB));
  cr_assert_eq(addr(p) + fit * MB, LIMIT);
  assert_get_fails_cleanly(1);
  cr_assert_eq(osmem_free_mblocks(warm, 1), 0);
  cr_assert_eq(osmem_get_mblocks(1), warm);
  assert_get_fails_cleanly(1);
  assert_invariants();
#endif
}

/* ------------------------------------------------- 64 KiB megablocks */

/* With 64 KiB megablocks every megablock is one wasm page: no gap is ever
 * left, whatever malloc does in between; each fresh get grows memory by
 * exactly n pages, at its end. */
Test(wasm, shift16_no_gaps) {
  if (MB != PAGE) cr_skip_test("only with --with-mblock-shift=16");
  void *warm = osmem_get_mblocks(1);
  assert_run_ok(warm, 1);
  rng_seed(0xabad1dea);
  uint64_t start = mem_end(), mblocks = 0;
  uint64_t other = 0; /* grown by anything but the gets */
  for (int round = 0; round < 200; round++) {
    uint64_t e = mem_end();
    for (int k = (int)(rnd() % 4); k > 0; k--)
      cr_assert_not_null(xmalloc(rnd_size()));
    other += mem_end() - e;
    size_t n = 1 + (size_t)(rnd() % 3);
    e = mem_end();
    use_grow(counting_grow);
    void *p = osmem_get_mblocks(n);
    unwrap();
    assert_run_ok(p, n);
    cr_assert_eq(addr(p), e, "round %d: get(%zu) at %p, memory ended at %llx",
                 round, n, p, (unsigned long long)e);
    cr_assert_eq(mem_end(), e + n * PAGE);
    cr_assert_eq(grow_calls, 1u);
    cr_assert_eq(grown_pages, n);
    mblocks += n;
  }
  cr_assert_eq(mem_end() - start, mblocks * PAGE + other);
  assert_invariants();
}

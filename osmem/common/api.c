/*
 * The public API: argument checks, the get/free paths through the pool, and
 * statistics. Every OS-specific step is a call into the backend (backend.h).
 */
#include <config.h>

#include <errno.h>

#include "heapmap.h"
#include "internal.h"

struct osmem__state osmem__g;

static _Atomic(osmem_oom_handler) oom_handler;

#define STR_(x) #x
#define STR(x) STR_(x)

const char *osmem_version(void) {
  return STR(OSMEM_VERSION_MAJOR) "." STR(OSMEM_VERSION_MINOR) "." STR(
      OSMEM_VERSION_PATCH);
}

unsigned osmem_mblock_shift(void) { return OSMEM_MBLOCK_SHIFT; }

void osmem__ensure_init(void) {
  if (atomic_load_explicit(&osmem__g.ready, memory_order_acquire)) return;
  osmem__os_lock();
  if (!atomic_load_explicit(&osmem__g.ready, memory_order_relaxed)) {
    osmem__os_init(&osmem__g.caps);
    osmem__g.next_reserve = OSMEM__RESERVE_FIRST;
    osmem__g.decommit_threshold = OSMEM__DEFAULT_DECOMMIT_THRESHOLD;
    atomic_store_explicit(&osmem__g.ready, true, memory_order_release);
  }
  osmem__os_unlock();
}

int osmem_init(void) {
  osmem__ensure_init();
  return 0;
}

/* ------------------------------------------------------------------- get */

/* Hands out n megablocks; the lock is held. 0 or ENOMEM, state unchanged.
 *
 * Every megablock handed out keeps one pool node set aside for its free (a
 * free adds at most one range), so that a free never needs memory. The nodes
 * are set aside only once the memory is certain, so that a get the OS refuses
 * maps no bookkeeping, and a failure to set them aside undoes the take. */
static int get_locked(size_t n, uintptr_t *mblock) {
  struct osmem__state *g = &osmem__g;
  size_t nodes = g->in_use + n;
  struct osmem__range r;
  if (osmem__pool_take(&g->pool, n, &r)) {
    if (osmem__pool_reserve_nodes(&g->pool, nodes) != 0) {
      osmem__pool_insert(&g->pool, r.start, n, r.resident); /* exact undo */
      return ENOMEM;
    }
    *mblock = r.start;
  } else if (osmem__fresh_take(n, nodes + 1, mblock) != 0) {
    return ENOMEM;
  }
  osmem__heapmap_set(*mblock, n);
  g->in_use += n;
  if (g->in_use > g->peak) g->peak = g->in_use;
  return 0;
}

static void *fail_oom(size_t n) {
  osmem_oom_handler h = atomic_load(&oom_handler);
  if (h) h(n, ENOMEM);
  errno = ENOMEM;
  return NULL;
}

void *osmem_get_mblocks(size_t n) {
  if (n == 0) {
    errno = EINVAL;
    return NULL;
  }
  /* More than the address space the heap map covers can never succeed:
   * refuse it before any bookkeeping is set aside for it. */
  if (n > (SIZE_MAX >> OSMEM_MBLOCK_SHIFT) || n > OSMEM__MBLOCK_LIMIT)
    return fail_oom(n);
  osmem__ensure_init();
  uintptr_t mblock;
  osmem__os_lock();
  int err = get_locked(n, &mblock);
  osmem__os_unlock();
  if (err) return fail_oom(n);
  return (void *)(mblock << OSMEM_MBLOCK_SHIFT);
}

/* ------------------------------------------------------------------ free */

/* Decommits range r if the pool's resident part is now over the threshold. */
static void decommit_if_over(struct osmem__range r) {
  struct osmem__state *g = &osmem__g;
  if (!g->caps.can_decommit) return;
  if (g->pool.resident_mblocks <= g->decommit_threshold >> OSMEM_MBLOCK_SHIFT)
    return;
  if (osmem__os_decommit((void *)(r.start << OSMEM_MBLOCK_SHIFT),
                         r.len << OSMEM_MBLOCK_SHIFT) == 0)
    osmem__pool_mark_decommitted(&g->pool, r.start);
}

int osmem_free_mblocks(void *p, size_t n) {
  uintptr_t addr = (uintptr_t)p;
  if (n == 0 || addr == 0 || (addr & OSMEM_MBLOCK_MASK) != 0) return EINVAL;
  uintptr_t start = addr >> OSMEM_MBLOCK_SHIFT;
  if (n > (UINTPTR_MAX >> OSMEM_MBLOCK_SHIFT) - start) return EINVAL;
  osmem__ensure_init();
  osmem__os_lock();
  if (!osmem__heapmap_all_set(start, n)) {
    osmem__os_unlock();
    return EINVAL;
  }
  struct osmem__state *g = &osmem__g;
  osmem__heapmap_clear(start, n);
  g->in_use -= n;
  decommit_if_over(osmem__pool_insert(&g->pool, start, n, true));
  osmem__os_unlock();
  return 0;
}

/* --------------------------------------------------------------- release */

size_t osmem_release_free_memory(void) {
  osmem__ensure_init();
  struct osmem__state *g = &osmem__g;
  size_t released = 0;
  osmem__os_lock();
  if (g->caps.can_unmap) {
    struct osmem__range r;
    uintptr_t from = 0;
    while (osmem__pool_pop_from(&g->pool, from, &r)) {
      size_t bytes = r.len << OSMEM_MBLOCK_SHIFT;
      from = r.start + r.len;
      if (osmem__os_unmap((void *)(r.start << OSMEM_MBLOCK_SHIFT), bytes)) {
        osmem__pool_insert(&g->pool, r.start, r.len, r.resident);
        continue;
      }
      released += bytes;
      g->bytes_mapped -= bytes;
    }
  }
  osmem__os_unlock();
  return released;
}

/* -------------------------------------------------------------- decommit */

struct decommit_ctx {
  size_t limit; /* megablocks */
};

static bool decommit_one(void *ctx, struct osmem__range r) {
  struct osmem__state *g = &osmem__g;
  struct decommit_ctx *c = ctx;
  if (g->pool.resident_mblocks <= c->limit) return false;
  if (osmem__os_decommit((void *)(r.start << OSMEM_MBLOCK_SHIFT),
                         r.len << OSMEM_MBLOCK_SHIFT) == 0)
    osmem__pool_mark_decommitted(&g->pool, r.start);
  return true;
}

size_t osmem_set_decommit_threshold(size_t bytes) {
  osmem__ensure_init();
  struct osmem__state *g = &osmem__g;
  osmem__os_lock();
  size_t old = g->decommit_threshold;
  g->decommit_threshold = bytes;
  if (g->caps.can_decommit) {
    struct decommit_ctx c = {bytes >> OSMEM_MBLOCK_SHIFT};
    osmem__pool_each_resident(&g->pool, decommit_one, &c);
  }
  osmem__os_unlock();
  return old;
}

/* ---------------------------------------------------------------- lookups */

bool osmem_is_heap(const void *p) { return osmem__heapmap_contains(p); }

osmem_oom_handler osmem_set_oom_handler(osmem_oom_handler h) {
  return atomic_exchange(&oom_handler, h);
}

const char *osmem_backend(void) {
  osmem__ensure_init();
  return osmem__g.caps.name;
}

size_t osmem_page_size(void) {
  osmem__ensure_init();
  return osmem__g.caps.page_size;
}

uint64_t osmem_physical_memory(void) {
  osmem__ensure_init();
  return osmem__os_physical_memory();
}

/* ------------------------------------------------------------------- NUMA */

unsigned osmem_numa_nodes(void) {
  osmem__ensure_init();
  return osmem__os_numa_nodes();
}

uint64_t osmem_numa_mask(void) {
  osmem__ensure_init();
  return osmem__os_numa_mask();
}

int osmem_bind_to_node(void *p, size_t size, unsigned node) {
  osmem__ensure_init();
  uintptr_t addr = (uintptr_t)p;
  size_t page = osmem__g.caps.page_size;
  if (addr == 0 || (addr & (page - 1)) != 0 || size == 0) return EINVAL;
  if (size > SIZE_MAX - page || addr + size < addr) return EINVAL;
  if (!osmem__os_node_allowed(node)) return EINVAL;
  return osmem__os_bind(p, (size + page - 1) & ~(page - 1), node);
}

void *osmem_get_mblocks_on_node(size_t n, unsigned node) {
  osmem__ensure_init();
  if (n != 0 && !osmem__os_node_allowed(node)) {
    errno = EINVAL;
    return NULL;
  }
  void *p = osmem_get_mblocks(n);
  if (!p) return NULL;
  int err = osmem__os_bind(p, n << OSMEM_MBLOCK_SHIFT, node);
  if (err) {
    osmem_free_mblocks(p, n);
    errno = err;
    return NULL;
  }
  return p;
}

/* ------------------------------------------------------------ statistics */

static uint64_t load(atomic_uint_least64_t *c) {
  return atomic_load_explicit(c, memory_order_relaxed);
}

void osmem_stats(struct osmem_stats *out) {
  if (!out) return;
  osmem__ensure_init();
  struct osmem__state *g = &osmem__g;
  struct osmem__os_counters *c = &osmem__os_count;
  osmem__os_lock();
  *out = (struct osmem_stats){
      .mblocks_in_use = g->in_use,
      .mblocks_peak = g->peak,
      .mblocks_pooled = g->pool.mblocks,
      .mblocks_pooled_resident = g->pool.resident_mblocks,
      .pool_ranges = g->pool.ranges,
      .bytes_mapped = g->bytes_mapped,
      .bytes_reserved_unused = g->carve_end - g->carve,
      .reservations = g->reservations,
      .os_maps = load(&c->maps),
      .os_unmaps = load(&c->unmaps),
      .os_madvise = load(&c->madvise),
      .os_mbind = load(&c->mbind),
      .align_hint_hits = load(&c->align_hint_hits),
      .align_exact_hits = load(&c->align_exact_hits),
      .align_trims = load(&c->align_trims),
      .reserve_retries = g->reserve_retries,
  };
  osmem__os_unlock();
}

int osmem__check_invariants(void) {
  struct osmem__state *g = &osmem__g;
  osmem__os_lock();
  int err = osmem__pool_check(&g->pool);
  if (!err && osmem__pool_spare_nodes(&g->pool) < g->in_use) err = 20;
  if (!err && g->carve > g->carve_end) err = 21;
  if (!err && g->peak < g->in_use) err = 22;
  if (!err && (g->in_use + g->pool.mblocks) << OSMEM_MBLOCK_SHIFT !=
                  g->bytes_mapped - (g->carve_end - g->carve))
    err = 23;
  osmem__os_unlock();
  return err;
}

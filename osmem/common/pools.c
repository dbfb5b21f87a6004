/*
 * Pools by NUMA class, and the get, free, release and decommit paths over
 * them. Class 0 holds memory bound to no node; class k + 1 memory bound to
 * node k. A get for node k is served only from class k + 1 (or fresh memory,
 * then bound); a plain get tries class 0 first, then any node's pool. Each
 * megablock's class is kept in the heap map, so a free returns it to the
 * pool it came from. Classes exist only where there is more than one node;
 * elsewhere everything is class 0. All of it runs under the pool lock.
 */
#include <config.h>

#include <errno.h>

#include "heapmap.h"
#include "internal.h"

struct osmem__pool *osmem__class_pool(unsigned cls, bool create) {
  struct osmem__state *g = &osmem__g;
  if (cls == 0) return &g->pool;
  if (cls > OSMEM__MAX_NODES) return NULL;
  struct osmem__pool **slot = &g->node_pools[cls - 1];
  if (!*slot && create) {
    void *mem;
    if (osmem__os_meta_alloc(sizeof(struct osmem__pool), &mem) != 0)
      return NULL;
    *slot = mem;
    g->pool_classes[g->pool_class_count++] = cls;
  }
  return *slot;
}

/* The i-th node pool made (i < pool_class_count). */
static struct osmem__pool *made_pool(unsigned i) {
  return osmem__g.node_pools[osmem__g.pool_classes[i] - 1];
}

/* Takes n megablocks from one pool, with the nodes their frees will need;
 * false (nothing changed) when the pool has no fit or no nodes can be had. */
static bool take_pooled(struct osmem__pool *pool, size_t n, uintptr_t *mblock,
                        int *err) {
  struct osmem__range r;
  if (!osmem__pool_take(pool, n, &r)) return false;
  if (osmem__pool_reserve_nodes(pool, pool->handed_out + n) != 0) {
    osmem__pool_insert(pool, r.start, n, r.resident); /* exact undo */
    *err = ENOMEM;
    return false;
  }
  *mblock = r.start;
  return true;
}

/* A plain get may use any pool: class 0 first, then the nodes' pools. */
static struct osmem__pool *take_any(size_t n, uintptr_t *mblock, int *err) {
  struct osmem__state *g = &osmem__g;
  if (take_pooled(&g->pool, n, mblock, err)) return &g->pool;
  for (unsigned i = 0; i < g->pool_class_count && !*err; i++) {
    struct osmem__pool *pool = made_pool(i);
    if (take_pooled(pool, n, mblock, err)) return pool;
  }
  return NULL;
}

/*
 * Hands out n megablocks of class cls (or, for a plain get, cls 0 and any
 * pool). 0 or ENOMEM with the state unchanged; *fresh tells whether the
 * memory was never handed out before.
 *
 * Every megablock handed out keeps one pool node of its class set aside for
 * its free (a free adds at most one range), so that a free never needs
 * memory. The nodes are set aside only once the memory is certain, so that a
 * get the OS refuses maps no bookkeeping.
 */
int osmem__get_locked(size_t n, unsigned cls, bool plain, uintptr_t *mblock,
                      bool *fresh) {
  struct osmem__state *g = &osmem__g;
  struct osmem__pool *pool = osmem__class_pool(cls, true);
  if (!pool) return ENOMEM;
  int err = 0;
  struct osmem__pool *from = plain ? take_any(n, mblock, &err)
                                   : (take_pooled(pool, n, mblock, &err) ? pool
                                                                         : NULL);
  if (err) return err;
  *fresh = from == NULL;
  if (from) {
    pool = from; /* the megablocks keep the class they had */
  } else {
    size_t nodes = pool->handed_out + n + (pool == &g->pool);
    if (osmem__fresh_take(n, pool, nodes, mblock) != 0) return ENOMEM;
    osmem__heapmap_set_class(*mblock, n, cls);
  }
  osmem__heapmap_set(*mblock, n);
  pool->handed_out += n;
  g->in_use += n;
  if (g->in_use > g->peak) g->peak = g->in_use;
  return 0;
}

/* ------------------------------------------------------------- decommit */

static size_t resident_total(void) {
  struct osmem__state *g = &osmem__g;
  size_t total = g->pool.resident_mblocks;
  for (unsigned i = 0; i < g->pool_class_count; i++)
    total += made_pool(i)->resident_mblocks;
  return total;
}

static bool over_threshold(void) {
  return resident_total() > osmem__g.decommit_threshold >> OSMEM_MBLOCK_SHIFT;
}

static void decommit_range(struct osmem__pool *pool, struct osmem__range r) {
  if (osmem__os_decommit((void *)(r.start << OSMEM_MBLOCK_SHIFT),
                         r.len << OSMEM_MBLOCK_SHIFT) == 0)
    osmem__pool_mark_decommitted(pool, r.start);
}

static bool decommit_while_over(void *ctx, struct osmem__range r) {
  if (!over_threshold()) return false;
  decommit_range(ctx, r);
  return true;
}

void osmem__decommit_over_threshold(void) {
  struct osmem__state *g = &osmem__g;
  if (!g->caps.can_decommit) return;
  osmem__pool_each_resident(&g->pool, decommit_while_over, &g->pool);
  for (unsigned i = 0; i < g->pool_class_count; i++) {
    struct osmem__pool *pool = made_pool(i);
    osmem__pool_each_resident(pool, decommit_while_over, pool);
  }
}

/* ------------------------------------------------------------------ free */

void osmem__free_locked(uintptr_t start, size_t n) {
  struct osmem__state *g = &osmem__g;
  osmem__heapmap_clear(start, n);
  g->in_use -= n;
  for (size_t run; n > 0; start += run, n -= run) {
    run = osmem__heapmap_class_run(start, n);
    struct osmem__pool *pool =
        osmem__class_pool(osmem__heapmap_class(start), false);
    pool->handed_out -= run;
    struct osmem__range r = osmem__pool_insert(pool, start, run, true);
    /* Decommit the range just freed (with its neighbours) once the pooled
     * memory that may be resident is over the threshold. */
    if (g->caps.can_decommit && over_threshold()) decommit_range(pool, r);
  }
}

/* --------------------------------------------------------------- release */

static size_t release_pool(struct osmem__pool *pool) {
  struct osmem__state *g = &osmem__g;
  size_t released = 0;
  struct osmem__range r;
  uintptr_t from = 0;
  while (osmem__pool_pop_from(pool, from, &r)) {
    size_t bytes = r.len << OSMEM_MBLOCK_SHIFT;
    from = r.start + r.len;
    if (osmem__os_unmap((void *)(r.start << OSMEM_MBLOCK_SHIFT), bytes)) {
      osmem__pool_insert(pool, r.start, r.len, r.resident); /* stays pooled */
      continue;
    }
    released += bytes;
    g->bytes_mapped -= bytes;
  }
  return released;
}

size_t osmem__release_locked(void) {
  struct osmem__state *g = &osmem__g;
  if (!g->caps.can_unmap) return 0;
  size_t released = release_pool(&g->pool);
  for (unsigned i = 0; i < g->pool_class_count; i++)
    released += release_pool(made_pool(i));
  return released;
}

/* ------------------------------------------------------------ statistics */

void osmem__pools_sum(size_t *mblocks, size_t *resident, size_t *ranges) {
  struct osmem__state *g = &osmem__g;
  *mblocks = g->pool.mblocks;
  *resident = g->pool.resident_mblocks;
  *ranges = g->pool.ranges;
  for (unsigned i = 0; i < g->pool_class_count; i++) {
    const struct osmem__pool *pool = made_pool(i);
    *mblocks += pool->mblocks;
    *resident += pool->resident_mblocks;
    *ranges += pool->ranges;
  }
}

/* 0, or the number of the first broken invariant. */
static int check_pool(const struct osmem__pool *pool) {
  int err = osmem__pool_check(pool);
  if (!err && osmem__pool_spare_nodes(pool) < pool->handed_out) err = 20;
  return err;
}

int osmem__pools_check(void) {
  struct osmem__state *g = &osmem__g;
  int err = check_pool(&g->pool);
  size_t handed_out = g->pool.handed_out;
  for (unsigned i = 0; i < g->pool_class_count && !err; i++) {
    const struct osmem__pool *pool = made_pool(i);
    err = check_pool(pool);
    handed_out += pool->handed_out;
  }
  if (!err && handed_out != g->in_use) err = 24;
  return err;
}

/*
 * Pools by NUMA class, and the get, free, release and decommit paths over
 * them; thread caches sit in front (thread_cache.c). Class 0 holds memory
 * bound to no node; class k + 1 memory bound to node k. A get for node k is
 * served only from class k + 1 (or fresh memory, then bound); a plain get
 * tries class 0 first, then any node's pool. Each
 * megablock's class is kept in the heap map, so a free returns it to the
 * pool it came from. Classes exist only where there is more than one node;
 * elsewhere everything is class 0. All of it runs under the pool lock.
 *
 * Decommit is proportional to what is freed: the heap map marks each
 * pooled megablock that may be resident; a free marks what it frees, and
 * when the pools are over the threshold it decommits resident megablocks,
 * highest addresses first, down to a little below the threshold. A
 * decommitted megablock loses its mark, so it is decommitted at most once
 * between two times it is handed out: the decommit work of a free is paid
 * for by the megablocks earlier frees marked.
 */
#include <config.h>

#include <errno.h>

#include "heapmap.h"
#include "internal.h"

struct osmem__pool *osmem__class_pool(unsigned cls, bool create) {
  struct osmem__state *g = &osmem__g;
  if (cls == 0) return &g->pool;
  if (cls > OSMEM__NODE_CLASSES) return NULL;
  struct osmem__pool **slot = &g->node_pools[cls - 1];
  if (!*slot && create) {
    /* The node's fresh memory lives beside its pool. */
    struct node_class {
      struct osmem__pool pool;
      struct osmem__carve carve;
    };
    void *mem;
    if (osmem__meta_alloc(sizeof(struct node_class), &mem) != 0)
      return NULL;
    struct node_class *made = mem;
    *slot = &made->pool;
    g->node_carves[cls - 1] = &made->carve;
    g->pool_classes[g->pool_class_count++] = cls;
  }
  return *slot;
}

/* The i-th node pool made (i < pool_class_count). */
static struct osmem__pool *made_pool(unsigned i) {
  return osmem__g.node_pools[osmem__g.pool_classes[i] - 1];
}

/* ------------------------------------------------------ resident count */

/* Megablocks [start, start + n) leave the pool: their resident marks go,
 * and the count of pooled megablocks that may be resident (all pools) with
 * them. */
static void left_pool(uintptr_t start, size_t n) {
  osmem__g.pooled_resident -= osmem__heapmap_resident_take(start, n);
}

/* ------------------------------------------------------------------- get */

/* Takes n megablocks from one pool, with the nodes their frees will need;
 * false (nothing changed) when the pool has no fit or no nodes can be had. */
static bool take_pooled(struct osmem__pool *pool, size_t n, uintptr_t *mblock,
                        int *err) {
  struct osmem__range r;
  if (!osmem__pool_take(pool, n, &r)) return false;
  if (osmem__pool_reserve_nodes(pool, pool->handed_out + n) != 0) {
    osmem__pool_insert(pool, r.start, n); /* exact undo */
    *err = ENOMEM;
    return false;
  }
  left_pool(r.start, n);
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

/* Counts n megablocks of `pool` as out of the pool. */
static void count_out(struct osmem__pool *pool, size_t n) {
  struct osmem__state *g = &osmem__g;
  pool->handed_out += n;
  g->in_use += n;
  if (g->in_use > g->peak) g->peak = g->in_use;
}

/*
 * Hands out n megablocks of class cls (or, for a plain get, cls 0 and any
 * pool). 0 or ENOMEM with the state unchanged; *fresh tells whether the
 * memory was never handed out before.
 *
 * Every megablock out of the pool keeps one pool node of its class set
 * aside for its free (a free adds at most one range), so that a free never
 * needs memory. The nodes are set aside only once the memory is certain, so
 * that a get the OS refuses maps no bookkeeping.
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
    /* One node more, for the old tail a new reservation may leave. */
    size_t nodes = pool->handed_out + n + 1;
    err = osmem__fresh_take(n, cls, pool, nodes, mblock);
    if (err) return err;
    if (g->classes) osmem__heapmap_set_class(*mblock, n, cls);
  }
  osmem__heapmap_set(*mblock, n);
  count_out(pool, n);
  osmem__decommit_if_due_locked();
  return 0;
}

bool osmem__take_unbound_locked(size_t most, struct osmem__range *out) {
  struct osmem__pool *pool = &osmem__g.pool;
  if (!osmem__pool_take_upto(pool, most, out)) return false;
  if (osmem__pool_reserve_nodes(pool, pool->handed_out + out->len) != 0) {
    osmem__pool_insert(pool, out->start, out->len); /* exact undo */
    return false;
  }
  left_pool(out->start, out->len);
  count_out(pool, out->len);
  return true;
}

bool osmem__take_fresh_locked(size_t most, struct osmem__range *out) {
  struct osmem__state *g = &osmem__g;
  struct osmem__pool *pool = &g->pool;
  size_t room = (g->carve.hi - g->carve.lo) >> OSMEM_MBLOCK_SHIFT;
  size_t n = room < most ? room : most;
  /* Plain fresh gets are interleaved when asked for: not from a cache. */
  if (n == 0 || g->numa_interleave ||
      osmem__fresh_take(n, 0, pool, pool->handed_out + n + 1, &out->start) != 0)
    return false;
  if (g->classes) osmem__heapmap_set_class(out->start, n, 0);
  out->len = n;
  count_out(pool, n);
  return true;
}

/* ------------------------------------------------------------- decommit */

static size_t threshold_mblocks(void) {
  return osmem__g.decommit_threshold >> OSMEM_MBLOCK_SHIFT;
}

static bool decommit_on(void) {
  return osmem__g.caps.can_decommit &&
         osmem__g.decommit_mode != OSMEM_DECOMMIT_NEVER;
}

/* The class runs of [start, start + n): where there is one node, the whole
 * range is class 0 and the heap map is not walked. */
static size_t class_run(uintptr_t start, size_t n) {
  return osmem__g.classes ? osmem__heapmap_class_run(start, n) : n;
}

/* Decommits pooled, resident megablocks [start, start + n). false when the
 * OS refused (they stay marked resident). */
static bool decommit(uintptr_t start, size_t n) {
  struct osmem__state *g = &osmem__g;
  size_t bytes = n << OSMEM_MBLOCK_SHIFT;
  if (osmem__os_decommit((void *)(start << OSMEM_MBLOCK_SHIFT), bytes,
                         g->decommit_mode == OSMEM_DECOMMIT_EAGER) != 0)
    return false;
  left_pool(start, n);
  g->bytes_decommitted += bytes;
  return true;
}

/* Decommits pooled resident megablocks, highest addresses first (gets take
 * the lowest first, so these are reused last), until at most `target` are
 * left. Each call covers one run of resident megablocks. */
static void decommit_down_to(size_t target) {
  struct osmem__state *g = &osmem__g;
  uintptr_t top;
  while (g->pooled_resident > target && osmem__heapmap_resident_highest(&top)) {
    size_t run =
        osmem__heapmap_resident_run_down(top, g->pooled_resident - target);
    if (!decommit(top + 1 - run, run)) return;
  }
}

/* A free that takes the pools over the threshold decommits down to a little
 * below it, so that frees near the threshold batch their decommits instead
 * of making one call each. */
static size_t after_free_target(void) {
  size_t limit = threshold_mblocks();
  size_t slack = limit / 8;
  size_t most = ((size_t)32 << 20) >> OSMEM_MBLOCK_SHIFT;
  return limit - (slack < most ? slack : most);
}

void osmem__decommit_over_threshold(void) {
  osmem__g.decommit_due = 0;
  if (decommit_on()) decommit_down_to(threshold_mblocks());
}

/* Lazy mode lets the excess wait out a delay (default 100 ms) before it is
 * decommitted, at the first call that takes the lock after it: a burst of
 * frees costs no system call, and memory freed and soon got again is never
 * decommitted at all. Eager mode decommits at once, for RSS's sake. */
static bool decommit_waits(void) {
  return osmem__g.decommit_mode == OSMEM_DECOMMIT_LAZY &&
         osmem__g.decommit_delay_ns > 0 && osmem__g.decommit_threshold > 0;
}

void osmem__decommit_if_due_locked(void) {
  struct osmem__state *g = &osmem__g;
  if (!g->decommit_due) return;
  if (g->pooled_resident <= threshold_mblocks()) {
    g->decommit_due = 0; /* gets took the excess back */
    return;
  }
  if (osmem__os_clock_ns() < g->decommit_due) return;
  g->decommit_due = 0;
  if (decommit_on()) decommit_down_to(after_free_target());
}

/* The pools just went over the threshold (or were over it already). */
static void over_threshold_after_free(void) {
  struct osmem__state *g = &osmem__g;
  if (!decommit_waits()) {
    decommit_down_to(after_free_target());
  } else if (!g->decommit_due) {
    uint64_t due = osmem__os_clock_ns() + g->decommit_delay_ns;
    g->decommit_due = due ? due : 1;
  } else {
    osmem__decommit_if_due_locked();
  }
}

/* ------------------------------------------------------------------ free */

void osmem__put_locked(uintptr_t start, size_t n) {
  struct osmem__state *g = &osmem__g;
  g->in_use -= n;
  for (size_t run; n > 0; start += run, n -= run) {
    run = class_run(start, n);
    struct osmem__pool *pool =
        osmem__class_pool(osmem__heapmap_class(start), false);
    pool->handed_out -= run;
    osmem__pool_insert(pool, start, run);
    osmem__heapmap_resident_set(start, run);
    g->pooled_resident += run;
  }
  if (decommit_on() && g->pooled_resident > threshold_mblocks())
    over_threshold_after_free();
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
      osmem__pool_insert(pool, r.start, r.len); /* stays pooled */
      continue;
    }
    left_pool(r.start, r.len);
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
  *resident = g->pooled_resident;
  *ranges = g->pool.ranges;
  for (unsigned i = 0; i < g->pool_class_count; i++) {
    const struct osmem__pool *pool = made_pool(i);
    *mblocks += pool->mblocks;
    *ranges += pool->ranges;
  }
}

struct resident_check {
  size_t resident;
  bool out_set; /* some pooled megablock is marked out of the pool */
};

static bool count_resident(void *ctx, struct osmem__range r) {
  struct resident_check *c = ctx;
  uintptr_t at, end = r.start + r.len;
  size_t run;
  for (uintptr_t from = r.start;
       from < end && osmem__heapmap_resident_next(from, end - from, &at, &run);
       from = at + run)
    c->resident += run;
  for (uintptr_t m = r.start; m < end && !c->out_set; m++)
    c->out_set = osmem__heapmap_all_set(m, 1);
  return true;
}

/* 0, or the number of the first broken invariant; adds the pool's resident
 * megablocks to c. */
static int check_pool(struct osmem__pool *pool, struct resident_check *c) {
  int err = osmem__pool_check(pool);
  if (!err && osmem__pool_spare_nodes(pool) < pool->handed_out) err = 20;
  if (!err) osmem__pool_each(pool, count_resident, c);
  if (!err && c->out_set) err = 26;
  return err;
}

int osmem__pools_check(void) {
  struct osmem__state *g = &osmem__g;
  struct resident_check c = {0, false};
  int err = check_pool(&g->pool, &c);
  size_t handed_out = g->pool.handed_out;
  for (unsigned i = 0; i < g->pool_class_count && !err; i++) {
    struct osmem__pool *pool = made_pool(i);
    err = check_pool(pool, &c);
    handed_out += pool->handed_out;
  }
  if (!err && handed_out != g->in_use) err = 24;
  if (!err && c.resident != g->pooled_resident) err = 27;
  return err;
}

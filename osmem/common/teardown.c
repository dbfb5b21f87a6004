/*
 * osmem_teardown: everything the library mapped goes back to the OS, and
 * the library returns to its initial state. In order: thread caches drain
 * into the pool; the pool is unmapped (as a release); megablocks still
 * handed out are found in the heap map and unmapped; then the unused part
 * of the current reservation, the caller's reservations and the
 * bookkeeping; last the state is cleared, so that the next call
 * initialises again.
 *
 * Where memory cannot be given back (wasm) the megablocks handed out return
 * to the pool instead, and the state stays.
 */
#include <config.h>

#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "heapmap.h"
#include "internal.h"

static void keep_first(int *first, int err) {
  if (!*first) *first = err;
}

static bool unmap_run(void *ctx, uintptr_t start, size_t n) {
  keep_first(ctx, osmem__os_unmap((void *)(start << OSMEM_MBLOCK_SHIFT),
                                  n << OSMEM_MBLOCK_SHIFT));
  return true;
}

static bool pool_run(void *ctx, uintptr_t start, size_t n) {
  (void)ctx;
  osmem__heapmap_clear(start, n);
  osmem__put_locked(start, n);
  return true;
}

/* Clears the state but what must outlive a teardown: the thread caches,
 * which their threads may still hold (emptied, and their counts zeroed).
 * The node pool table is cleared entry by entry, only where pools were
 * made: most of its pages were never touched, and a teardown at exit
 * should not fault them in. */
static void reset_state_locked(void) {
  struct osmem__state *g = &osmem__g;
  struct osmem__cache *caches = g->caches, *idle = g->idle_caches;
  osmem__caches_forget_counts_locked();
  for (unsigned i = 0; i < g->pool_class_count; i++) {
    g->node_pools[g->pool_classes[i] - 1] = NULL;
    g->node_carves[g->pool_classes[i] - 1] = NULL;
    g->pool_classes[i] = 0;
  }
  /* Zero around the tables (ready false: the next call initialises). */
  size_t tail = offsetof(struct osmem__state, pool_class_count);
  memset(g, 0, offsetof(struct osmem__state, node_pools));
  memset((char *)g + tail, 0, sizeof *g - tail);
  g->caches = caches;
  g->idle_caches = idle;
  memset(&osmem__os_count, 0, sizeof osmem__os_count);
}

static int give_everything_back_locked(void) {
  int first_err = 0;
  osmem__release_locked();
  osmem__os_retry_discards();
  size_t still_pooled, resident, ranges;
  osmem__pools_sum(&still_pooled, &resident, &ranges);
  if (still_pooled) first_err = ENOMEM; /* the OS refused an unmap */
  osmem__heapmap_each_out(unmap_run, &first_err);
  osmem__fresh_release_locked();
  if (osmem__fresh_unused() != 0)
    keep_first(&first_err, ENOMEM); /* a tail the OS would not unmap */
  keep_first(&first_err, osmem__reservations_release_all_locked());
  osmem__heapmap_forget();
  keep_first(&first_err, osmem__meta_release_all());
  return first_err;
}

int osmem_teardown(void) {
  osmem__ensure_init();
  osmem__os_lock();
  osmem__caches_drain_locked();
  int err = 0;
  if (osmem__g.caps.can_unmap) {
    err = give_everything_back_locked();
    reset_state_locked();
    osmem__api_reset_locked();
  } else {
    osmem__heapmap_each_out(pool_run, NULL);
  }
  osmem__os_unlock();
  return err;
}

void osmem__forget_everything(void) {
  osmem__ensure_init();
  osmem__os_lock();
  osmem__caches_drain_locked();
  osmem__heapmap_forget();
  osmem__meta_forget();
  reset_state_locked();
  osmem__api_reset_locked();
  osmem__os_unlock();
}

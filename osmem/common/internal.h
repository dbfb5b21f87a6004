/*
 * State shared by the files of osmem/common. One instance, osmem__g, guarded
 * by the backend's pool lock except where a field says otherwise.
 */
#ifndef OSMEM_COMMON_INTERNAL_H
#define OSMEM_COMMON_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../backend.h"
#include "osmem.h"
#include "meta.h"
#include "range_tree.h"

/* Reservations start at this size and double up to the cap (a quarter of a
 * 32-bit address space, 64 GiB on 64-bit). Multiples of 2 MiB so that the
 * kernel can back them with transparent huge pages. */
#define OSMEM__RESERVE_GRAIN ((size_t)2 << 20 > OSMEM_MBLOCK_SIZE \
                                  ? (size_t)2 << 20 : OSMEM_MBLOCK_SIZE)
#define OSMEM__RESERVE_FIRST ((size_t)16 << 20)
#if UINTPTR_MAX > 0xffffffffu
#define OSMEM__RESERVE_CAP ((size_t)64 << 30)
#else
#define OSMEM__RESERVE_CAP ((size_t)1 << 30)
#endif

#define OSMEM__DEFAULT_DECOMMIT_THRESHOLD ((size_t)64 << 20)
#define OSMEM__DEFAULT_DECOMMIT_DELAY_MS 100

/* Thread caches: default and largest capacity, in megablocks. */
#define OSMEM__CACHE_DEFAULT 16
#define OSMEM__CACHE_SLOTS 64

struct osmem__cache;

/* Classes of memory: 0 is bound to no node; 1 + node + policy *
 * OSMEM__MAX_NODES is bound to `node` with `policy` (enum
 * osmem_numa_policy). Each class has its own pool and its own reservations,
 * bound as a whole when made, so that a megablock carries the binding of
 * the get that first had it and a get never binds (nor splits a mapping). */
#define OSMEM__POLICIES 3
#define OSMEM__NODE_CLASSES (OSMEM__MAX_NODES * OSMEM__POLICIES)
static inline unsigned osmem__node_class(unsigned node, int policy) {
  return 1 + node + (unsigned)policy * OSMEM__MAX_NODES;
}
static inline unsigned osmem__class_node(unsigned cls) {
  return (cls - 1) % OSMEM__MAX_NODES;
}
static inline int osmem__class_policy(unsigned cls) {
  return (int)((cls - 1) / OSMEM__MAX_NODES);
}

/* Fresh memory of one class (fresh.c): the not yet handed out part [lo, hi)
 * of its newest reservation, handed out from the top down, and the size its
 * next reservation may grow to (0: the first size). */
struct osmem__carve {
  uintptr_t lo, hi;
  size_t next;
};

/* A caller's reservation (reservations.c). */
struct osmem__span {
  uintptr_t base;
  size_t size;
};

struct osmem__state {
  atomic_bool ready;              /* set once init is done; read lock-free */
  struct osmem__os_caps caps;
  /* Pools by class (class_pools.c): class 0 is memory bound to no node, class
   * k + 1 memory bound to node k; node pools are made on first use. */
  struct osmem__pool pool;
  struct osmem__pool *node_pools[OSMEM__NODE_CLASSES];
  struct osmem__carve *node_carves[OSMEM__NODE_CLASSES]; /* beside the pool */
  uint16_t pool_classes[OSMEM__NODE_CLASSES]; /* classes made, in order */
  unsigned pool_class_count;
  bool classes;                   /* the kernel has NUMA: keep classes */
  atomic_int numa_policy;         /* enum osmem_numa_policy */
  atomic_bool numa_interleave;    /* interleave fresh plain gets */
  /* Fresh memory bound to no node (class 0); each node's is beside its
   * pool, in node_carves. */
  struct osmem__carve carve;
  size_t decommit_threshold;      /* bytes */
  enum osmem_decommit_mode decommit_mode;
  uint64_t decommit_delay_ns;     /* lazy mode: how long the excess waits */
  uint64_t decommit_due;          /* clock time it is due; 0: none waits */
  size_t pooled_resident;         /* megablocks, all pools */
  /* Thread caches (thread_cache.c): the capacity each may use, read
   * without the lock; every cache ever made, and those without a thread. */
  atomic_size_t cache_cap;
  struct osmem__cache *caches, *idle_caches;
  /* Counters reported by osmem_stats. in_use counts megablocks out of the
   * pool: handed out, or in thread caches. */
  size_t in_use, peak;            /* megablocks */
  uint64_t bytes_mapped, reservations, reserve_retries, bytes_decommitted;
  /* The caller's reservations (osmem_reserve), sorted by base; not in
   * bytes_mapped, which is the pool's. */
  struct osmem__span *user;
  size_t user_count, user_cap;
  uint64_t user_bytes, bytes_committed;
};

OSMEM_HIDDEN extern struct osmem__state osmem__g;

/* Initialises on first use; cheap afterwards. */
OSMEM_HIDDEN void osmem__ensure_init(void);

/* Takes n megablocks of never-used memory of class cls (n *
 * OSMEM_MBLOCK_SIZE is known to fit a size_t) from the class's current
 * reservation, making a new one when it is too small (a node's is bound to
 * the node as a whole), and makes sure `nodes` pool nodes are set aside in
 * `owner`, the class's pool (one more than the megablocks out, for the old
 * tail a new reservation may leave). Lock held. 0, or ENOMEM (or the
 * error of binding a node's new reservation) with nothing changed. */
OSMEM_HIDDEN int osmem__fresh_take(size_t n, unsigned cls,
                                   struct osmem__pool *owner, size_t nodes,
                                   uintptr_t *mblock);
/* The fresh memory of a class (its node pool must exist). */
OSMEM_HIDDEN struct osmem__carve *osmem__carve_of(unsigned cls);
/* Bytes reserved and not handed out yet, all classes. Lock held. */
OSMEM_HIDDEN size_t osmem__fresh_unused(void);

/* Unmaps the unused part of the current reservation (a release) and lets
 * reservations grow from the heap's size again; bytes unmapped. Lock held. */
OSMEM_HIDDEN size_t osmem__fresh_release_locked(void);

/* Gets n megablocks of class cls (plain: any pool; class k + 1: node k's,
 * placed there by its reservation's binding), interleaved when plain, fresh
 * and asked for. NULL with errno on failure. */
OSMEM_HIDDEN void *osmem__get(size_t n, unsigned cls, bool plain);

/* class_pools.c; all with the lock held. */
/* The pool of a class; made (zeroed bookkeeping) when create is true and it
 * does not exist yet. NULL if it cannot be. */
OSMEM_HIDDEN struct osmem__pool *osmem__class_pool(unsigned cls, bool create);
/* Hands out n megablocks of class cls (a plain get may use any pool). 0,
 * ENOMEM, or the error of binding a node's new reservation, state
 * unchanged. *fresh: never handed out before. */
OSMEM_HIDDEN int osmem__get_locked(size_t n, unsigned cls, bool plain,
                                   uintptr_t *mblock, bool *fresh);
/* Takes up to `most` megablocks (at least one) of class 0 from the low end
 * of the pool, out of the pool, for a thread cache: counted as out, but not
 * marked `out` in the heap map. false (nothing changed) when the pool is
 * empty or no pool nodes can be set aside. */
OSMEM_HIDDEN bool osmem__take_unbound_locked(size_t most,
                                             struct osmem__range *out);
/* The same from the current reservation's unused part (never a new
 * reservation); not while fresh plain gets are to be interleaved. */
OSMEM_HIDDEN bool osmem__take_fresh_locked(size_t most,
                                           struct osmem__range *out);
/* Returns megablocks [start, start + n), out of the pool but not marked
 * `out` (or `cached`) in the heap map, to their pools; decommits what the
 * threshold asks for. */
OSMEM_HIDDEN void osmem__put_locked(uintptr_t start, size_t n);
/* Unmaps every pooled range; bytes unmapped. */
OSMEM_HIDDEN size_t osmem__release_locked(void);
/* Decommits pooled memory, highest first, until under the threshold; now,
 * whatever the delay (an explicit change of threshold, mode or delay). */
OSMEM_HIDDEN void osmem__decommit_over_threshold(void);
/* Decommits what waited its delay out, if anything did. */
OSMEM_HIDDEN void osmem__decommit_if_due_locked(void);
/* Totals over all pools. */
OSMEM_HIDDEN void osmem__pools_sum(size_t *mblocks, size_t *resident,
                                   size_t *ranges);
/* Every pool's invariants; 0 or the first broken one. */
OSMEM_HIDDEN int osmem__pools_check(void);

/* thread_cache.c. The calling thread's cache: get and free of at most
 * OSMEM_THREAD_CACHE_RUN megablocks, without the lock. cache_get: true and
 * *mblock when the cache had n megablocks of class cls. cache_free: 0 (the
 * cache took them), EINVAL (not handed out: state unchanged), or -1 (the
 * cache cannot take them: use the pool). */
OSMEM_HIDDEN bool osmem__cache_get(size_t n, unsigned cls, uintptr_t *mblock);
OSMEM_HIDDEN int osmem__cache_free(uintptr_t start, size_t n);
/* After a get of one plain megablock missed the cache: moves a few more from
 * the pool into the calling thread's cache. Lock held. */
OSMEM_HIDDEN void osmem__cache_refill_locked(void);
/* Empties every cache into the pool (release, threshold 0, a get that would
 * fail otherwise). Lock held. Megablocks moved. */
OSMEM_HIDDEN size_t osmem__caches_drain_locked(void);
/* The calling thread's cache into the pool; megablocks moved. */
OSMEM_HIDDEN size_t osmem__cache_flush_mine(void);
/* Sums over every cache. Lock held. */
OSMEM_HIDDEN void osmem__caches_sum(uint64_t *cached, uint64_t *gets,
                                    uint64_t *frees);

/* reservations.c: unmaps every caller's reservation; 0 or the first
 * error. Lock held. */
OSMEM_HIDDEN int osmem__reservations_release_all_locked(void);

/* After a teardown: every cache's counts to zero (the caches are empty and
 * no thread is using the library). Lock held. */
OSMEM_HIDDEN void osmem__caches_forget_counts_locked(void);
/* api.c's own settings back to their defaults. Lock held. */
OSMEM_HIDDEN void osmem__api_reset_locked(void);

/* For tests: checks the pool and counters agree. 0 or the broken invariant. */
OSMEM_HIDDEN int osmem__check_invariants(void);

/* For tests that cannot start a fresh process for each case (the wasm
 * fault sweep): the library forgets everything it holds, as if the process
 * had just started, and gives nothing back (teardown.c). */
OSMEM_HIDDEN void osmem__forget_everything(void);

#endif /* OSMEM_COMMON_INTERNAL_H */

/*
 * Thread caches: each thread keeps the few megablocks it last freed in a
 * small array of its own, in front of the pool. A get or free of at most
 * OSMEM_THREAD_CACHE_RUN megablocks that the cache can serve takes no lock
 * and touches no memory shared with other threads but the heap map's
 * `cached` bits, which are striped so that neighbouring megablocks do not
 * share a cache line (heapmap.h).
 *
 * How the heap map shows cached megablocks: a single one keeps its `out`
 * bit and gets its `cached` bit (striped: threads flipping neighbours do not
 * contend); a run of two or more loses its `out` bits instead (one or two
 * word operations for the run, where striped bits would take one per
 * megablock). Either way osmem_is_heap is false for them and freeing them
 * again is refused.
 *
 * Who touches a cache: its owner, without the lock; and a thread holding the
 * pool lock that drains it (release, a get that would fail, the decommit
 * threshold set to 0). They never work on it at the same time, by a
 * Dekker-style handshake that costs the owner no atomic read-modify-write:
 * the owner sets `busy`, then reads `frozen`, and backs off to the pool path
 * if it is set; a drainer sets `frozen`, makes every thread execute a full
 * barrier (membarrier on Linux; where that is missing, the owner fences
 * instead), then waits for `busy` to clear. Slots are then plain loads and
 * stores for whoever holds the cache. A thread's own cache is drained by the
 * thread itself (when full, at exit), and after fork the child drains the
 * caches of the threads that are gone, alone.
 *
 * Counts: the owner adds what it caches and takes out (`pushed`, `popped`),
 * lock holders what they drain (`removed`); the megablocks held are
 * pushed - popped - removed. Every counter has one writer at a time, so none
 * needs a read-modify-write on the fast path.
 */
#include <config.h>

#include <errno.h>

#include "heapmap.h"
#include "internal.h"

/* Aligned to cache lines, so that two threads' caches never share one. */
struct osmem__cache {
  _Alignas(64) osmem__atomic_u64 slot[OSMEM__CACHE_SLOTS]; /* 0: empty */
  unsigned top;                    /* owner only: slots >= top are empty */
  atomic_bool busy;                /* the owner is working on its slots */
  atomic_bool frozen;              /* a drainer holds the cache */
  osmem__atomic_u64 pushed, popped, gets, frees; /* owner writes */
  osmem__atomic_u64 removed;       /* lock holders write */
  struct osmem__cache *next;       /* every cache (lock) */
  struct osmem__cache *next_idle;  /* caches without a thread (lock) */
  bool idle;                       /* on the idle list (lock) */
  _Alignas(64) char end[];         /* pads the size to whole lines */
};

/* ----------------------------------------------------------------- slots */

/* A slot's run: bit 63 marks it used, bit 62 a run whose `out` bits are
 * clear (else a single megablock, marked `cached`); class in bits 48-59,
 * length in 40-47, first megablock number in 0-39 (megablock numbers are
 * below 2^32). */
#define USED ((uint64_t)1 << 63)
#define UNMARKED ((uint64_t)1 << 62)

static uint64_t pack(uintptr_t start, size_t len, unsigned cls,
                     bool unmarked) {
  return USED | (unmarked ? UNMARKED : 0) | (uint64_t)cls << 48 |
         (uint64_t)len << 40 | (uint64_t)start;
}
static uintptr_t run_start(uint64_t e) {
  return (uintptr_t)(e & (((uint64_t)1 << 40) - 1));
}
static size_t run_len(uint64_t e) { return (size_t)((e >> 40) & 0xff); }
static unsigned run_cls(uint64_t e) { return (unsigned)((e >> 48) & 0xfff); }

/* ------------------------------------------------------- the thread's own */

#if defined(__ELF__) && (defined(__GNUC__) || defined(__clang__))
/* The library's own two thread-locals fit the static TLS any loader keeps
 * spare, and initial-exec spares the fast path a __tls_get_addr call. */
#define TLS_MODEL __attribute__((tls_model("initial-exec")))
#else
#define TLS_MODEL
#endif

static _Thread_local struct osmem__cache *mine TLS_MODEL;
static _Thread_local bool exiting TLS_MODEL; /* its cache is gone for good */

static uint64_t load(atomic_uint_least64_t *c) {
  return atomic_load_explicit(c, memory_order_relaxed);
}

/* A counter with one writer at a time: no read-modify-write needed. */
static void bump(atomic_uint_least64_t *c, uint64_t by) {
  atomic_store_explicit(c, load(c) + by, memory_order_relaxed);
}

static size_t held(struct osmem__cache *c) {
  return (size_t)(load(&c->pushed) - load(&c->popped) - load(&c->removed));
}

static size_t capacity(void) {
  return atomic_load_explicit(&osmem__g.cache_cap, memory_order_relaxed);
}

/* ------------------------------------------------------------------- get */

/* Set by the first cache's creation: whether drainers make every thread
 * fence (then the owner needs only a compiler barrier). */
static bool drainers_fence_all;

/* The owner's side of the handshake: false when a drainer holds the cache
 * (the caller then takes the pool path, which waits for the lock). */
static inline bool enter(struct osmem__cache *c) {
  atomic_store_explicit(&c->busy, true, memory_order_relaxed);
  if (drainers_fence_all)
    atomic_signal_fence(memory_order_seq_cst);
  else
    atomic_thread_fence(memory_order_seq_cst);
  if (!atomic_load_explicit(&c->frozen, memory_order_acquire)) return true;
  atomic_store_explicit(&c->busy, false, memory_order_release);
  return false;
}

static inline void leave(struct osmem__cache *c) {
  atomic_store_explicit(&c->busy, false, memory_order_release);
}

static uint64_t slot_get(struct osmem__cache *c, unsigned i) {
  return atomic_load_explicit(&c->slot[i], memory_order_relaxed);
}

static void slot_put(struct osmem__cache *c, unsigned i, uint64_t e) {
  atomic_store_explicit(&c->slot[i], e, memory_order_relaxed);
}

/* Takes n megablocks of class cls out of the slots, newest first; 0 when
 * none fits. The cache is held. */
static uint64_t take_run(struct osmem__cache *c, size_t n, unsigned cls) {
  for (unsigned i = c->top; i-- > 0;) {
    uint64_t e = slot_get(c, i);
    if (!e || run_cls(e) != cls || run_len(e) < n) continue;
    size_t rest = run_len(e) - n;
    /* Only unmarked runs are longer than one: the rest stays unmarked. */
    slot_put(c, i, rest ? pack(run_start(e) + n, rest, cls, true) : 0);
    while (c->top > 0 && !slot_get(c, c->top - 1)) c->top--;
    return e;
  }
  return 0;
}

bool osmem__cache_get(size_t n, unsigned cls, uintptr_t *mblock) {
  struct osmem__cache *c = mine;
  if (!c || !enter(c)) return false;
  uint64_t e = take_run(c, n, cls);
  if (e) {
    bump(&c->popped, n);
    bump(&c->gets, 1);
  }
  leave(c);
  if (!e) return false;
  uintptr_t start = run_start(e);
  if (e & UNMARKED)
    osmem__heapmap_set(start, n); /* handed out: out, never cached */
  else
    osmem__heapmap_cache_release(start);
  *mblock = start;
  return true;
}

/* ----------------------------------------------------- back to the pool */

/* Sorts runs by address (at most OSMEM__CACHE_SLOTS: insertion sort). */
static void sort_runs(uint64_t *e, unsigned n) {
  for (unsigned i = 1; i < n; i++) {
    uint64_t x = e[i];
    unsigned j = i;
    for (; j > 0 && run_start(e[j - 1]) > run_start(x); j--) e[j] = e[j - 1];
    e[j] = x;
  }
}

/* Returns runs to the pool, neighbours merged so that each stretch is one
 * insert and at most one decommit. Lock held. Megablocks moved. */
static size_t return_runs(uint64_t *e, unsigned n) {
  size_t moved = 0;
  sort_runs(e, n);
  for (unsigned i = 0; i < n;) {
    unsigned first = i;
    uintptr_t start = run_start(e[i]);
    size_t len = 0;
    for (; i < n && run_start(e[i]) == start + len; i++) len += run_len(e[i]);
    /* Singles: not out, then not cached (heapmap.h); unmarked runs are
     * neither already. */
    for (unsigned j = first; j < i; j++)
      if (!(e[j] & UNMARKED)) osmem__heapmap_uncache(run_start(e[j]));
    osmem__put_locked(start, len);
    moved += len;
  }
  return moved;
}

/* Empties c into the pool but for its newest `keep` megablocks, which the
 * owner (only) moves to the bottom slots. Lock held, and the cache held (by
 * its owner, or frozen with its owner out). Megablocks moved. */
static size_t drain_locked(struct osmem__cache *c, size_t keep, bool owner) {
  uint64_t got[OSMEM__CACHE_SLOTS];
  unsigned n = 0, limit = owner ? c->top : OSMEM__CACHE_SLOTS;
  for (unsigned i = 0; i < limit; i++) {
    uint64_t e = slot_get(c, i);
    if (e) got[n++] = e;
    slot_put(c, i, 0);
  }
  unsigned first_kept = n;
  size_t kept = 0;
  if (owner) {
    while (first_kept > 0 && kept + run_len(got[first_kept - 1]) <= keep)
      kept += run_len(got[--first_kept]);
    for (unsigned j = first_kept; j < n; j++) slot_put(c, j - first_kept, got[j]);
    c->top = n - first_kept;
  }
  size_t moved = return_runs(got, first_kept);
  atomic_fetch_add_explicit(&c->removed, moved, memory_order_relaxed);
  return moved;
}

/* A cache whose thread is gone: drained and kept for the next new thread. */
static void make_idle_locked(struct osmem__cache *c, bool owner) {
  drain_locked(c, 0, owner);
  c->top = 0;
  if (c->idle) return;
  c->idle = true;
  c->next_idle = osmem__g.idle_caches;
  osmem__g.idle_caches = c;
}

/* Whether c belongs to another live thread (and must be frozen to drain). */
static bool foreign(const struct osmem__cache *c) {
  return c != mine && !c->idle;
}

size_t osmem__caches_drain_locked(void) {
  struct osmem__cache *c;
  bool any = false;
  for (c = osmem__g.caches; c; c = c->next)
    if (foreign(c)) {
      atomic_store_explicit(&c->frozen, true, memory_order_relaxed);
      any = true;
    }
  if (any) osmem__os_barrier_all();
  size_t moved = 0;
  for (c = osmem__g.caches; c; c = c->next) {
    if (!foreign(c)) {
      if (c == mine) moved += drain_locked(c, 0, true);
      continue;
    }
    for (unsigned spins = 0;
         atomic_load_explicit(&c->busy, memory_order_acquire); spins++)
      if (spins > 100) osmem__os_yield();
    moved += drain_locked(c, 0, false);
    atomic_store_explicit(&c->frozen, false, memory_order_release);
  }
  return moved;
}

/* The owner empties its own cache into the pool but for its newest `keep`
 * megablocks, taking the lock for it. Megablocks moved. */
static size_t drain_mine(struct osmem__cache *c, size_t keep) {
  osmem__os_lock();
  size_t moved = drain_locked(c, keep, true);
  osmem__os_unlock();
  return moved;
}

size_t osmem__cache_flush_mine(void) {
  return mine ? drain_mine(mine, 0) : 0;
}

void osmem__thread_exit(void *arg) {
  struct osmem__cache *c = arg;
  osmem__os_lock();
  make_idle_locked(c, true);
  osmem__os_unlock();
  mine = NULL;
  exiting = true; /* frees from later destructors go to the pool */
}

/* The child of a fork has only the forking thread: every other thread's
 * cache goes back to the pool, and its cache to the idle list. (A thread
 * that was in the middle of a cache operation at the fork left `busy` set:
 * no one is there to clear it.) */
void osmem__fork_child_locked(void) {
  for (struct osmem__cache *c = osmem__g.caches; c; c = c->next)
    if (c != mine) {
      make_idle_locked(c, false);
      atomic_store_explicit(&c->busy, false, memory_order_relaxed);
      /* Its owner may have stopped between a slot and its count: empty
       * now, whatever the counts said. */
      atomic_store_explicit(&c->removed, load(&c->pushed) - load(&c->popped),
                            memory_order_relaxed);
    }
}

/* ------------------------------------------------------------- new cache */

/* Caches are never freed, not even by a teardown (a thread may still hold
 * its own): the first few live here, the rest in memory taken from the
 * backend a chunk at a time, outside the bookkeeping a teardown unmaps. */
#define STATIC_CACHES 4
#define CACHE_CHUNK_BYTES ((size_t)64 * 1024)
static struct osmem__cache static_caches[STATIC_CACHES];
static unsigned static_used;
static struct osmem__cache *chunk_next, *chunk_end;

static struct osmem__cache *new_cache_locked(void) {
  struct osmem__cache *c;
  if (!osmem__g.caches) drainers_fence_all = osmem__os_barrier_init();
  if (static_used < STATIC_CACHES) {
    c = &static_caches[static_used++];
  } else {
    if (chunk_next == chunk_end) {
      void *mem;
      if (osmem__os_meta_alloc(CACHE_CHUNK_BYTES, &mem) != 0) return NULL;
      chunk_next = mem;
      chunk_end = chunk_next + CACHE_CHUNK_BYTES / sizeof *c;
    }
    c = chunk_next++;
  }
  c->next = osmem__g.caches;
  osmem__g.caches = c;
  return c;
}

static struct osmem__cache *adopt_cache(void) {
  if (exiting) return NULL;
  osmem__os_lock();
  struct osmem__cache *c = osmem__g.idle_caches;
  if (c) {
    osmem__g.idle_caches = c->next_idle;
    c->idle = false;
  } else {
    c = new_cache_locked();
  }
  osmem__os_unlock();
  if (c && osmem__os_at_thread_exit(c) != 0) {
    osmem__os_lock(); /* it could never be given back at exit */
    make_idle_locked(c, true);
    osmem__os_unlock();
    c = NULL;
  }
  mine = c;
  return c;
}

/* ------------------------------------------------------------------ free */

/* Marks [start, start + n) cached if all of it is handed out (see the top
 * of the file for how); false, with nothing changed, if not. */
#ifdef OSMEM_CACHE_MARKS
#define MARK_SINGLES 1
#else
#define MARK_SINGLES 0 /* no cached marks: singles are unmarked too */
#endif

/* Whether a run of n is cached with its mark (else unmarked). */
static bool marked(size_t n) { return MARK_SINGLES && n == 1; }

static bool claim(uintptr_t start, size_t n) {
  return marked(n) ? osmem__heapmap_cache_claim(start)
                   : osmem__heapmap_claim_free(start, n);
}

static void unclaim(uintptr_t start, size_t n) {
  if (marked(n))
    osmem__heapmap_cache_release(start);
  else
    osmem__heapmap_set(start, n);
}

int osmem__cache_free(uintptr_t start, size_t n) {
  size_t cap = capacity();
  if (n > cap || exiting) {
    if (mine && held(mine) > cap) drain_mine(mine, cap); /* cap lowered */
    return -1;
  }
  if (!claim(start, n)) return EINVAL;
  unsigned cls = osmem__g.classes ? osmem__heapmap_class(start) : 0;
  struct osmem__cache *c = mine;
  if ((n > 1 && osmem__heapmap_class_run(start, n) < n) ||
      (!c && !(c = adopt_cache()))) {
    unclaim(start, n); /* the pool path takes it */
    return -1;
  }
  if (held(c) + n > cap || c->top == OSMEM__CACHE_SLOTS) {
    drain_mine(c, cap / 2 < cap - n ? cap / 2 : cap - n);
  }
  if (!enter(c)) { /* a drainer has it: the pool path waits for the lock */
    unclaim(start, n);
    return -1;
  }
  slot_put(c, c->top++, pack(start, n, cls, !marked(n)));
  bump(&c->pushed, n);
  bump(&c->frees, 1);
  leave(c);
  return 0;
}

/* ---------------------------------------------------------------- refill */

/* A thread that gets single megablocks and finds its cache empty takes a
 * few more at once, from the pool or else from the current reservation
 * (fresh megablocks stay zero-filled and untouched in the cache), so that
 * most of its gets take no lock. */
void osmem__cache_refill_locked(void) {
  struct osmem__cache *c = mine;
  size_t cap = capacity();
  if (!c || cap < 2 || held(c) != 0 || c->top == OSMEM__CACHE_SLOTS) return;
  /* Half the cache from the pool, leaving room for frees; the whole of it
   * from fresh memory, which a thread that only gets never frees into it. */
  size_t want = cap / 2 < OSMEM_THREAD_CACHE_RUN ? cap / 2 : OSMEM_THREAD_CACHE_RUN;
  struct osmem__range r;
  if (!osmem__take_unbound_locked(want, &r) &&
      !osmem__take_fresh_locked(cap, &r))
    return;
  /* Unmarked, even a single one: marking it would race with a bad free. */
  slot_put(c, c->top++, pack(r.start, r.len, 0, true)); /* ours: lock held */
  bump(&c->pushed, r.len);
}

/* ------------------------------------------------------------ statistics */

void osmem__caches_forget_counts_locked(void) {
  for (struct osmem__cache *c = osmem__g.caches; c; c = c->next) {
    atomic_uint_least64_t *counts[] = {&c->pushed, &c->popped, &c->gets,
                                       &c->frees, &c->removed};
    for (size_t i = 0; i < sizeof counts / sizeof *counts; i++)
      atomic_store_explicit(counts[i], 0, memory_order_relaxed);
  }
}

void osmem__caches_sum(uint64_t *cached, uint64_t *gets, uint64_t *frees) {
  *cached = *gets = *frees = 0;
  for (struct osmem__cache *c = osmem__g.caches; c; c = c->next) {
    *cached += held(c);
    *gets += load(&c->gets);
    *frees += load(&c->frees);
  }
}

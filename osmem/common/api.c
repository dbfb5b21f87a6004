/*
 * The public API: argument checks, the get/free paths through the pool, and
 * statistics. Every OS-specific step is a call into the backend (backend.h).
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

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

/* OSMEM_DECOMMIT=lazy|eager|never; anything else keeps the default. */
static enum osmem_decommit_mode decommit_mode_from_env(void) {
  const char *v = getenv("OSMEM_DECOMMIT");
  if (v && strcmp(v, "eager") == 0) return OSMEM_DECOMMIT_EAGER;
  if (v && strcmp(v, "never") == 0) return OSMEM_DECOMMIT_NEVER;
  return OSMEM_DECOMMIT_LAZY;
}

void osmem__ensure_init(void) {
  if (atomic_load_explicit(&osmem__g.ready, memory_order_acquire)) return;
  osmem__os_lock();
  if (!atomic_load_explicit(&osmem__g.ready, memory_order_relaxed)) {
    osmem__os_init(&osmem__g.caps);
    osmem__g.decommit_threshold = OSMEM__DEFAULT_DECOMMIT_THRESHOLD;
    osmem__g.decommit_mode = decommit_mode_from_env();
    osmem__g.decommit_delay_ns =
        (uint64_t)OSMEM__DEFAULT_DECOMMIT_DELAY_MS * 1000000u;
    atomic_store_explicit(&osmem__g.cache_cap, OSMEM__CACHE_DEFAULT,
                          memory_order_relaxed);
    osmem__g.classes = osmem__os_numa_available();
    atomic_store_explicit(&osmem__g.ready, true, memory_order_release);
  }
  osmem__os_unlock();
}

int osmem_init(void) {
  osmem__ensure_init();
  return 0;
}

/* ------------------------------------------------------------------- get */

static void *fail_oom(size_t n) {
  osmem_oom_handler h = atomic_load(&oom_handler);
  if (h) h(n, ENOMEM);
  errno = ENOMEM;
  return NULL;
}

/* Gets n megablocks of class cls (plain: any pool). Megablocks of node k
 * (class k + 1) come from node k's pool or its own reservations, which are
 * bound to the node as a whole when made (fresh.c), so a get binds nothing;
 * a failed bind of a new reservation fails the get with that error, after
 * the OOM handler when it is ENOMEM. Fresh plain megablocks are interleaved
 * when the runtime asked for it; that is a wish about placement, not part
 * of a plain get's contract (EINVAL or ENOMEM only): when the kernel
 * refuses it the megablocks are handed out with the default policy. */
void *osmem__get(size_t n, unsigned cls, bool plain) {
  if (n == 0) {
    errno = EINVAL;
    return NULL;
  }
  /* More than the address space the heap map covers can never succeed:
   * refuse it before any bookkeeping is set aside for it. */
  if (n > (SIZE_MAX >> OSMEM_MBLOCK_SHIFT) || n > OSMEM__MBLOCK_LIMIT)
    return fail_oom(n);
  struct osmem__state *g = &osmem__g;
  uintptr_t mblock;
  bool fresh = false;
  int err = 0;
  if (n > OSMEM_THREAD_CACHE_RUN || !osmem__cache_get(n, cls, &mblock)) {
    osmem__ensure_init();
    osmem__os_lock();
    err = osmem__get_locked(n, cls, plain, &mblock, &fresh);
    /* Megablocks in thread caches are free memory too: before failing,
     * coalesce them into the pool and try again. */
    if (err == ENOMEM && osmem__caches_drain_locked() > 0)
      err = osmem__get_locked(n, cls, plain, &mblock, &fresh);
    if (!err && n == 1 && plain) osmem__cache_refill_locked();
    osmem__os_unlock();
    if (err == ENOMEM) return fail_oom(n);
    if (err) { /* binding a node's new reservation failed */
      errno = err;
      return NULL;
    }
  }
  void *p = (void *)(mblock << OSMEM_MBLOCK_SHIFT);
  if (plain && fresh && g->numa_interleave)
    (void)osmem__os_interleave(p, n << OSMEM_MBLOCK_SHIFT);
  return p;
}

void *osmem_get_mblocks(size_t n) { return osmem__get(n, 0, true); }

/* ------------------------------------------------------------------ free */

int osmem_free_mblocks(void *p, size_t n) {
  uintptr_t addr = (uintptr_t)p;
  if (n == 0 || addr == 0 || (addr & OSMEM_MBLOCK_MASK) != 0) return EINVAL;
  uintptr_t start = addr >> OSMEM_MBLOCK_SHIFT;
  if (n > (UINTPTR_MAX >> OSMEM_MBLOCK_SHIFT) - start) return EINVAL;
  if (n <= OSMEM_THREAD_CACHE_RUN) {
    int err = osmem__cache_free(start, n);
    if (err >= 0) return err;
  }
  osmem__ensure_init();
  osmem__os_lock();
  bool handed_out = osmem__heapmap_claim_free(start, n);
  if (handed_out) osmem__put_locked(start, n);
  osmem__os_unlock();
  return handed_out ? 0 : EINVAL;
}

/* ------------------------------------------------------ release, decommit */

size_t osmem_release_free_memory(void) {
  osmem__ensure_init();
  osmem__os_lock();
  osmem__caches_drain_locked();
  size_t released = osmem__release_locked() + osmem__fresh_release_locked();
  /* Mappings a failed munmap left behind (never counted as mapped) go too. */
  (void)osmem__os_retry_discards();
  osmem__os_unlock();
  return released;
}

/* The capacity in force: none while every free must decommit at once. */
static size_t cache_capacity(size_t wanted, size_t threshold) {
  return threshold == 0 ? 0 : wanted;
}

static size_t cache_wanted = OSMEM__CACHE_DEFAULT; /* lock */

void osmem__api_reset_locked(void) {
  cache_wanted = OSMEM__CACHE_DEFAULT;
  atomic_store(&oom_handler, NULL);
}

size_t osmem_set_decommit_threshold(size_t bytes) {
  osmem__ensure_init();
  osmem__os_lock();
  size_t old = osmem__g.decommit_threshold;
  osmem__g.decommit_threshold = bytes;
  atomic_store_explicit(&osmem__g.cache_cap, cache_capacity(cache_wanted, bytes),
                        memory_order_relaxed);
  if (bytes == 0) osmem__caches_drain_locked(); /* every free decommits */
  osmem__decommit_over_threshold();
  osmem__os_unlock();
  return old;
}

int osmem_set_decommit_mode(enum osmem_decommit_mode mode) {
  if (mode != OSMEM_DECOMMIT_LAZY && mode != OSMEM_DECOMMIT_EAGER &&
      mode != OSMEM_DECOMMIT_NEVER)
    return EINVAL;
  osmem__ensure_init();
  osmem__os_lock();
  osmem__g.decommit_mode = mode;
  osmem__decommit_over_threshold();
  osmem__os_unlock();
  return 0;
}

unsigned osmem_set_decommit_delay(unsigned ms) {
  osmem__ensure_init();
  osmem__os_lock();
  unsigned old = (unsigned)(osmem__g.decommit_delay_ns / 1000000u);
  osmem__g.decommit_delay_ns = (uint64_t)ms * 1000000u;
  if (osmem__g.decommit_due && ms == 0) osmem__decommit_over_threshold();
  osmem__os_unlock();
  return old;
}

enum osmem_decommit_mode osmem_decommit_mode(void) {
  osmem__ensure_init();
  osmem__os_lock();
  enum osmem_decommit_mode mode = osmem__g.decommit_mode;
  osmem__os_unlock();
  return mode;
}

/* ---------------------------------------------------------- thread caches */

size_t osmem_set_thread_cache(size_t mblocks) {
  if (mblocks > OSMEM__CACHE_SLOTS) mblocks = OSMEM__CACHE_SLOTS;
  osmem__ensure_init();
  osmem__os_lock();
  size_t old = cache_wanted;
  cache_wanted = mblocks;
  atomic_store_explicit(
      &osmem__g.cache_cap,
      cache_capacity(mblocks, osmem__g.decommit_threshold),
      memory_order_relaxed);
  osmem__os_unlock();
  return old;
}

size_t osmem_flush_thread_cache(void) {
  osmem__ensure_init();
  return osmem__cache_flush_mine();
}

/* ---------------------------------------------------------------- lookups */

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

/* ------------------------------------------------------- physical memory */

/* The pieces behind osmem_physical_memory(), read on first use and on
 * refresh; guarded by the pool lock. */
static struct osmem_memory_info mem_info;
static bool mem_info_valid;

/* A limit counts when it is known: not 0, not OSMEM_UNLIMITED. */
static void take_lower(struct osmem_memory_info *m, uint64_t x,
                       enum osmem_memory_source source) {
  if (x == 0 || x == OSMEM_UNLIMITED) return;
  if (m->source == OSMEM_MEMORY_UNKNOWN || x < m->physical) {
    m->physical = x;
    m->source = source;
  }
}

/* RAM as far as this process can use it: a 32-bit process cannot hold more
 * than its 4 GiB of address space, however much the machine has. */
static uint64_t usable_ram(uint64_t ram) {
  const uint64_t space =
      SIZE_MAX < UINT64_MAX ? (uint64_t)SIZE_MAX + 1 : OSMEM_UNLIMITED;
  return ram < space ? ram : space;
}

/* Reads the pieces and takes the lowest; on a tie the first of RAM, cgroup,
 * rlimit names the source. Lock held. */
static void mem_info_read_locked(void) {
  struct osmem_memory_info m = {
      .ram = 0,
      .cgroup_max = OSMEM_UNLIMITED,
      .cgroup_high = OSMEM_UNLIMITED,
      .rlimit_as = OSMEM_UNLIMITED,
      .job_max = OSMEM_UNLIMITED,
  };
  osmem__os_memory_info(&m);
  m.physical = 0;
  m.source = OSMEM_MEMORY_UNKNOWN;
  take_lower(&m, usable_ram(m.ram), OSMEM_MEMORY_RAM);
  take_lower(&m, m.cgroup_max, OSMEM_MEMORY_CGROUP);
  take_lower(&m, m.rlimit_as, OSMEM_MEMORY_RLIMIT);
  take_lower(&m, m.job_max, OSMEM_MEMORY_JOB);
  mem_info = m;
  mem_info_valid = true;
}

static struct osmem_memory_info mem_info_get(bool refresh) {
  osmem__ensure_init();
  osmem__os_lock();
  if (refresh || !mem_info_valid) mem_info_read_locked();
  struct osmem_memory_info m = mem_info;
  osmem__os_unlock();
  return m;
}

uint64_t osmem_physical_memory(void) { return mem_info_get(false).physical; }

/* RAM alone, read once: GHC asks for it at start-up, where reading every
 * limit (cgroup files up the tree) would cost more than it needs. */
uint64_t osmem_physical_ram(void) {
  static _Atomic uint64_t ram; /* 0: not read yet (or unknown: read again) */
  uint64_t r = atomic_load_explicit(&ram, memory_order_relaxed);
  if (r == 0) {
    osmem__ensure_init();
    r = osmem__os_ram();
    atomic_store_explicit(&ram, r, memory_order_relaxed);
  }
  return r;
}

uint64_t osmem_refresh_physical_memory(void) {
  return mem_info_get(true).physical;
}

void osmem_memory_info(struct osmem_memory_info *out) {
  if (!out) return;
  *out = mem_info_get(false);
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
  size_t pooled, resident, ranges;
  uint64_t cached, cache_gets, cache_frees;
  osmem__os_lock();
  osmem__pools_sum(&pooled, &resident, &ranges);
  osmem__caches_sum(&cached, &cache_gets, &cache_frees);
  if (cached > g->in_use) cached = g->in_use; /* a moment's reading */
  *out = (struct osmem_stats){
      .mblocks_in_use = g->in_use - cached,
      .mblocks_peak = g->peak,
      .mblocks_pooled = pooled,
      .mblocks_pooled_resident = resident,
      .pool_ranges = ranges,
      .bytes_mapped = g->bytes_mapped,
      .bytes_reserved_unused = osmem__fresh_unused(),
      .reservations = g->reservations,
      .os_maps = load(&c->maps),
      .os_unmaps = load(&c->unmaps),
      .os_madvise = load(&c->madvise),
      .os_mbind = load(&c->mbind),
      .align_hint_hits = load(&c->align_hint_hits),
      .align_exact_hits = load(&c->align_exact_hits),
      .align_trims = load(&c->align_trims),
      .reserve_retries = g->reserve_retries,
      .bytes_decommitted = g->bytes_decommitted,
      .mblocks_cached = cached,
      .cache_gets = cache_gets,
      .cache_frees = cache_frees,
      .user_reservations = g->user_count,
      .bytes_user_reserved = g->user_bytes,
      .bytes_committed = g->bytes_committed,
      .os_mprotect = load(&c->mprotect),
  };
  out->bytes_mapped += g->user_bytes;
  osmem__os_unlock();
}

int osmem__check_invariants(void) {
  struct osmem__state *g = &osmem__g;
  size_t pooled, resident, ranges;
  osmem__os_lock();
  osmem__pools_sum(&pooled, &resident, &ranges);
  int err = osmem__pools_check();
  if (!err && g->carve.lo > g->carve.hi) err = 21;
  if (!err && g->peak < g->in_use) err = 22;
  if (!err && (g->in_use + pooled) << OSMEM_MBLOCK_SHIFT !=
                  g->bytes_mapped - osmem__fresh_unused())
    err = 23;
  osmem__os_unlock();
  return err;
}

/*
 * Thread caches and decommit, counted: what a free decommits, what the
 * caches hold, how they behave across threads, release, thread exit and
 * fork, and what each decommit mode does to the process's RSS. Nothing here
 * is timed. Natively with Criterion; with -DOSMEM_TESTS_MINICR the same
 * file builds on tests/minicr.h, for ThreadSanitizer (tools/check-tsan.sh),
 * under which Criterion cannot start.
 */
#include <config.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if !defined(__wasi__) && !defined(_WIN32) /* threads and fork: POSIX */
#include <pthread.h>
#include <sched.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#endif

#ifdef _WIN32
#include <windows.h> /* Sleep */
#endif

#include "helpers.h"

#define MB OSMEM_MBLOCK_SIZE

/* ------------------------------------------------------- decommit counts */

#ifndef __wasi__ /* wasm never decommits; these need more than its budget */
/* Every byte, not a byte a page: no page size is assumed, and under an
 * emulator (qemu-user -p 65536) a guest page spans several of the host's. */
static void touch(char *p, size_t n) { memset(p, 1, n * MB); }

/* Freeing k touched megablocks one by one into a pool already at the
 * threshold makes at most k decommit calls, covering at most k megablocks:
 * nothing is decommitted twice, and nothing a free did not return. With the
 * default delay the frees make none, and the decommit comes once the delay
 * is over (here: when it is lowered to 0, which decommits what waits). */
static void free_one_by_one_past_threshold(size_t cache, bool delayed) {
  const size_t t = 16, k = 48;
  osmem_set_decommit_threshold(t * MB);
  osmem_set_thread_cache(cache);
  osmem_set_decommit_delay(delayed ? 3600 * 1000 : 0);
  char *fill = osmem_get_mblocks(t);
  char *p[48];
  cr_assert_not_null(fill);
  touch(fill, t);
  for (size_t i = 0; i < k; i++) {
    p[i] = osmem_get_mblocks(1);
    cr_assert_not_null(p[i]);
    touch(p[i], 1);
  }
  cr_assert_eq(osmem_free_mblocks(fill, t), 0); /* the pool at the threshold */
  struct osmem_stats s0 = stats_now();
  cr_assert_eq(s0.mblocks_pooled_resident, t);
  for (size_t i = 0; i < k; i++) cr_assert_eq(osmem_free_mblocks(p[i], 1), 0);
  if (delayed) {
    struct osmem_stats w = stats_now();
    cr_assert_eq(w.os_madvise, s0.os_madvise, "the frees wait out the delay");
    cr_assert_gt(w.mblocks_pooled_resident, t);
    osmem_set_decommit_delay(0);
  }
  struct osmem_stats s1 = stats_now();
  uint64_t calls = s1.os_madvise - s0.os_madvise;
  uint64_t bytes = s1.bytes_decommitted - s0.bytes_decommitted;
  cr_assert_leq(calls, k, "%ju decommit calls for %zu frees", (uintmax_t)calls,
                k);
  cr_assert_leq(bytes, k * MB, "%ju MiB decommitted for %zu MiB freed",
                (uintmax_t)(bytes / MB), k);
  cr_assert_gt(calls, 0, "over the threshold, something was decommitted");
  cr_assert_leq(s1.mblocks_pooled_resident, t, "back under the threshold");
  /* Everything freed is pooled or cached; what is resident is bounded. */
  cr_assert_eq(s1.mblocks_pooled + s1.mblocks_cached, t + k);
  assert_invariants();
}

Test(decommit_count, one_by_one_without_cache) {
  free_one_by_one_past_threshold(0, false);
}

Test(decommit_count, one_by_one_with_cache) {
  free_one_by_one_past_threshold(16, false);
}

Test(decommit_count, one_by_one_after_the_delay) {
  free_one_by_one_past_threshold(16, true);
}

/* Memory over the threshold that is got back before its delay is over is
 * never decommitted. */
Test(decommit_count, got_back_within_the_delay_is_never_decommitted) {
  const size_t t = 16;
  osmem_set_decommit_threshold(t * MB);
  osmem_set_thread_cache(0);
  osmem_set_decommit_delay(3600 * 1000);
  char *p = osmem_get_mblocks(t + 24);
  cr_assert_not_null(p);
  touch(p, t + 24);
  struct osmem_stats s0 = stats_now();
  cr_assert_eq(osmem_free_mblocks(p, t + 24), 0);
  char *q = osmem_get_mblocks(24); /* the excess, back at once */
  cr_assert_eq(q, p);
  cr_assert_leq(stats_now().mblocks_pooled_resident, t);
  osmem_set_decommit_delay(0); /* nothing waits any more */
  struct osmem_stats s1 = stats_now();
  cr_assert_eq(s1.os_madvise, s0.os_madvise, "nothing decommitted");
  cr_assert_eq(s1.bytes_decommitted, s0.bytes_decommitted);
  assert_invariants();
}

/* A get that reaches the pool after the delay decommits what waited. */
Test(decommit_count, the_next_call_after_the_delay_decommits) {
  const size_t t = 16;
  osmem_set_decommit_threshold(t * MB);
  osmem_set_thread_cache(0);
  osmem_set_decommit_delay(1);
  char *p = osmem_get_mblocks(t + 24);
  cr_assert_not_null(p);
  struct osmem_stats s0 = stats_now();
  cr_assert_eq(osmem_free_mblocks(p, t + 24), 0);
  cr_assert_eq(stats_now().os_madvise, s0.os_madvise);
#ifdef _WIN32
  Sleep(5); /* past the 1 ms delay */
#else
  struct timespec ms5 = {0, 5 * 1000 * 1000};
  nanosleep(&ms5, NULL); /* past the 1 ms delay */
#endif
  char *q = osmem_get_mblocks(1); /* reaches the pool: no cache */
  cr_assert_not_null(q);
  struct osmem_stats s1 = stats_now();
  cr_assert_gt(s1.os_madvise, s0.os_madvise, "decommitted once due");
  cr_assert_leq(s1.mblocks_pooled_resident, t);
  assert_invariants();
}

/* Pooled get+free pairs in a pool past the threshold make no decommit call:
 * gets take the resident megablocks, highest ones were decommitted. */
Test(decommit_count, pairs_after_touched_frees_make_no_calls) {
  enum { N = 256 };
  decommit_at_once(); /* the strictest case */
  static char *p[N];
  for (size_t i = 0; i < N; i++) {
    p[i] = osmem_get_mblocks(1);
    cr_assert_not_null(p[i]);
    touch(p[i], 1);
  }
  for (size_t i = 0; i < N; i++) cr_assert_eq(osmem_free_mblocks(p[i], 1), 0);
  struct osmem_stats s0 = stats_now();
  for (int i = 0; i < 1000; i++) {
    char *q = osmem_get_mblocks(1 + (size_t)(i % 3)); /* 1, 2 and 3 */
    cr_assert_not_null(q);
    q[0] = 1;
    cr_assert_eq(osmem_free_mblocks(q, 1 + (size_t)(i % 3)), 0);
  }
  struct osmem_stats s1 = stats_now();
  cr_assert_leq(s1.os_madvise - s0.os_madvise, 10,
                "%ju madvise calls in 1,000 pooled pairs",
                (uintmax_t)(s1.os_madvise - s0.os_madvise));
  assert_invariants();
}

#endif

/* ------------------------------------------------------- cache behaviour */

Test(cache, cached_megablocks_are_not_handed_out) {
  char *p = osmem_get_mblocks(2);
  cr_assert_not_null(p);
  cr_assert(osmem_is_heap(p) && osmem_is_heap(p + MB));
  cr_assert_eq(osmem_free_mblocks(p, 1), 0);
  struct osmem_stats s = stats_now();
  cr_assert_eq(s.mblocks_cached, 1, "the free went to the thread cache");
  cr_assert_eq(s.cache_frees, 1);
  cr_assert_eq(s.mblocks_in_use, 1);
  cr_assert_not(osmem_is_heap(p), "a cached megablock is not handed out");
  cr_assert(osmem_is_heap(p + MB));
  cr_assert_eq(osmem_free_mblocks(p, 1), EINVAL, "double free into the cache");
  cr_assert_eq(osmem_free_mblocks(p, 2), EINVAL, "half cached, half not");
  cr_assert(osmem_is_heap(p + MB), "a refused free changes nothing");
  cr_assert_eq(stats_now().mblocks_cached, 1);
  char *q = osmem_get_mblocks(1);
  cr_assert_eq(q, p, "served from the cache");
  cr_assert(osmem_is_heap(p));
  s = stats_now();
  cr_assert_eq(s.cache_gets, 1);
  cr_assert_eq(s.mblocks_cached, 0);
  cr_assert_eq(s.mblocks_in_use, 2);
  cr_assert_eq(osmem_free_mblocks(p, 2), 0);
  assert_invariants();
}

Test(cache, foreign_and_unaligned_frees_are_refused) {
  char *p = osmem_get_mblocks(1);
  cr_assert_not_null(p);
  static char stack_like[64];
  cr_assert_eq(osmem_free_mblocks(stack_like, 1), EINVAL);
  cr_assert_eq(osmem_free_mblocks(p + 4096, 1), EINVAL);
  cr_assert_eq(osmem_free_mblocks(p + MB, 1), EINVAL, "never handed out");
  cr_assert_eq(stats_now().mblocks_cached, 0);
  cr_assert_eq(osmem_free_mblocks(p, 1), 0);
  assert_invariants();
}

Test(cache, capacity_bounds_what_a_thread_holds) {
  enum { N = 40 };
  char *p[N];
  size_t cap = osmem_set_thread_cache(8);
  cr_assert_eq(cap, 16, "the default capacity");
  for (size_t i = 0; i < N; i++) cr_assert_not_null(p[i] = osmem_get_mblocks(1));
  for (size_t i = 0; i < N; i++) {
    cr_assert_eq(osmem_free_mblocks(p[i], 1), 0);
    cr_assert_leq(stats_now().mblocks_cached, 8);
  }
  struct osmem_stats s = stats_now();
  cr_assert_eq(s.mblocks_pooled + s.mblocks_cached, N);
  cr_assert_eq(osmem_flush_thread_cache(), s.mblocks_cached);
  cr_assert_eq(stats_now().mblocks_cached, 0);
  cr_assert_eq(osmem_set_thread_cache(1000), 8);
  cr_assert_eq(osmem_set_thread_cache(16), 64, "capped at 64");
  assert_invariants();
}

Test(cache, a_lowered_capacity_shrinks_the_cache_on_its_next_free) {
  char *p = osmem_get_mblocks(5);
  cr_assert_not_null(p);
  for (size_t i = 0; i < 4; i++) cr_assert_eq(osmem_free_mblocks(p + i * MB, 1), 0);
  cr_assert_eq(stats_now().mblocks_cached, 4);
  cr_assert_eq(osmem_set_thread_cache(0), 16);
  cr_assert_eq(stats_now().mblocks_cached, 4, "not before its next free");
  cr_assert_eq(osmem_free_mblocks(p + 4 * MB, 1), 0);
  struct osmem_stats s = stats_now();
  cr_assert_eq(s.mblocks_cached, 0);
  cr_assert_eq(s.mblocks_pooled, 5);
  assert_invariants();
}

Test(cache, threshold_zero_turns_caching_off) {
  char *p = osmem_get_mblocks(2);
  cr_assert_not_null(p);
  cr_assert_eq(osmem_free_mblocks(p, 1), 0);
  cr_assert_eq(stats_now().mblocks_cached, 1);
  osmem_set_decommit_threshold(0);
  cr_assert_eq(stats_now().mblocks_cached, 0, "drained at once");
  cr_assert_eq(osmem_free_mblocks(p + MB, 1), 0);
  struct osmem_stats s = stats_now();
  cr_assert_eq(s.mblocks_cached, 0);
  cr_assert_eq(s.mblocks_pooled, 2);
  cr_assert_eq(s.mblocks_pooled_resident, OS_CAN_DECOMMIT ? 0 : 2);
  assert_invariants();
}

Test(cache, release_takes_every_cache) {
  char *p = osmem_get_mblocks(4);
  cr_assert_not_null(p);
  cr_assert_eq(osmem_free_mblocks(p, 2), 0);
  cr_assert_eq(osmem_free_mblocks(p + 2 * MB, 2), 0);
  struct osmem_stats s0 = stats_now();
  cr_assert_eq(s0.mblocks_cached, 4);
  size_t released = osmem_release_free_memory();
  struct osmem_stats s = stats_now();
  cr_assert_eq(s.mblocks_cached, 0);
  if (OS_CAN_UNMAP) {
    cr_assert_eq(released, 4 * MB + s0.bytes_reserved_unused,
                 "the cached four and the reservation's unused tail");
    cr_assert_eq(s.mblocks_pooled, 0);
  } else {
    cr_assert_eq(released, 0);
    cr_assert_eq(s.mblocks_pooled, 4);
  }
  assert_invariants();
}

/* --------------------------------------------------------------- threads */

#if !defined(__wasi__) && !defined(_WIN32) /* pthreads and fork; Windows:
                                              tests/test_windows.c */
#define WORKERS 8
#define WORKER_OPS 4000
#define WORKER_SLOTS 12

struct worker {
  unsigned id;
  uint64_t seed;
  char *p[WORKER_SLOTS];
  size_t n[WORKER_SLOTS];
  atomic_int *failures;
};

/* Every megablock a worker holds carries its signature at the start and the
 * end of each megablock: a megablock handed to two holders at once, or
 * recycled while held, shows up as a foreign signature. */
static uint64_t signature(const struct worker *w, unsigned slot, size_t i) {
  return (uint64_t)w->id << 48 | (uint64_t)slot << 32 | i;
}

static void sign(struct worker *w, unsigned s) {
  for (size_t i = 0; i < w->n[s]; i++) {
    uint64_t sig = signature(w, s, i);
    memcpy(w->p[s] + i * MB, &sig, sizeof sig);
    memcpy(w->p[s] + (i + 1) * MB - sizeof sig, &sig, sizeof sig);
  }
}

static bool signed_by(const struct worker *w, unsigned s) {
  for (size_t i = 0; i < w->n[s]; i++) {
    uint64_t a, b, sig = signature(w, s, i);
    memcpy(&a, w->p[s] + i * MB, sizeof a);
    memcpy(&b, w->p[s] + (i + 1) * MB - sizeof b, sizeof b);
    if (a != sig || b != sig) return false;
  }
  return true;
}

static uint64_t next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void worker_step(struct worker *w) {
  unsigned s = (unsigned)(next(&w->seed) % WORKER_SLOTS);
  unsigned what = (unsigned)(next(&w->seed) % 100);
  if (what < 2) {
    osmem_release_free_memory();
  } else if (w->p[s]) {
    if (!signed_by(w, s) || !osmem_is_heap(w->p[s]) ||
        osmem_free_mblocks(w->p[s], w->n[s]) != 0)
      atomic_fetch_add(w->failures, 1);
    /* (No double free here: another thread may own it by now.) */
    w->p[s] = NULL;
  } else {
    size_t n = what < 70 ? 1 : 1 + (size_t)(next(&w->seed) % 12);
    w->p[s] = osmem_get_mblocks(n);
    w->n[s] = n;
    if (!w->p[s] || !osmem_is_heap(w->p[s] + n * MB - 1)) {
      atomic_fetch_add(w->failures, 1);
      w->p[s] = NULL;
      return;
    }
    sign(w, s);
  }
}

static void *worker_main(void *arg) {
  struct worker *w = arg;
  for (int i = 0; i < WORKER_OPS; i++) worker_step(w);
  for (unsigned s = 0; s < WORKER_SLOTS; s++) /* some exit holding memory */
    if (w->p[s] && (w->id % 2 == 0 || s % 2 == 0)) {
      if (!signed_by(w, s) || osmem_free_mblocks(w->p[s], w->n[s]) != 0)
        atomic_fetch_add(w->failures, 1);
      w->p[s] = NULL;
    }
  return NULL;
}

Test(cache_threads, eight_threads_random_ops_signatures_and_stats,
     .timeout = 120) {
  static struct worker w[WORKERS];
  static atomic_int failures;
  pthread_t t[WORKERS];
  for (unsigned i = 0; i < WORKERS; i++) {
    w[i] = (struct worker){.id = i + 1, .seed = 0x9e3779b97f4a7c15u * (i + 1),
                           .failures = &failures};
    cr_assert_eq(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
  }
  for (unsigned i = 0; i < WORKERS; i++)
    cr_assert_eq(pthread_join(t[i], NULL), 0);
  cr_assert_eq(atomic_load(&failures), 0, "%d failures",
               atomic_load(&failures));
  /* The threads are gone: their caches went back to the pool at exit. */
  size_t held = 0;
  for (unsigned i = 0; i < WORKERS; i++)
    for (unsigned s = 0; s < WORKER_SLOTS; s++)
      if (w[i].p[s]) {
        cr_assert(signed_by(&w[i], s), "a megablock held changed hands");
        held += w[i].n[s];
      }
  struct osmem_stats st = stats_now();
  cr_assert_eq(st.mblocks_cached, 0, "exited threads keep no cache");
  cr_assert_eq(st.mblocks_in_use, held);
  cr_assert_eq(st.bytes_mapped - st.bytes_reserved_unused,
               (st.mblocks_in_use + st.mblocks_pooled) * MB);
  cr_assert_gt(st.cache_gets, 0, "the caches served gets");
  assert_invariants();
  for (unsigned i = 0; i < WORKERS; i++)
    for (unsigned s = 0; s < WORKER_SLOTS; s++)
      if (w[i].p[s]) cr_assert_eq(osmem_free_mblocks(w[i].p[s], w[i].n[s]), 0);
  osmem_release_free_memory();
  st = stats_now();
  cr_assert_eq(st.mblocks_in_use + st.mblocks_pooled + st.mblocks_cached, 0);
  assert_invariants();
}

/* A bad free of [A0, A0 + 2), A0 a single in another thread's cache and A1
 * handed out, racing with that cache draining A0 into the pool: the free is
 * refused every time, A0 never reads as heap once pooled, and A0 is never
 * in the pool and a cache at once (found by review; 2-20 rounds to fail). */
#define RACE_ROUNDS 20000

struct race {
  atomic_long go, done;
  char *_Atomic a;
  atomic_int result;
};

/* Under Valgrind threads take turns: spinning waits out whole time slices,
 * so the race runs fewer rounds there and its waits yield. */
static long race_rounds(void) {
  return getenv("OSMEM_TEST_UNDER_VALGRIND") ? 200 : RACE_ROUNDS;
}

static void spin(void) {
  static int yield = -1;
  if (yield < 0) yield = getenv("OSMEM_TEST_UNDER_VALGRIND") != NULL;
  if (yield) sched_yield();
}

static void pause_a_little(unsigned *seed) {
  *seed = *seed * 1103515245u + 12345u;
  for (volatile unsigned i = 0; i < (*seed >> 16) % 200; i++) {
  }
}

static void *bad_range_free(void *arg) {
  struct race *r = arg;
  unsigned seed = 7;
  long rounds = race_rounds();
  for (long round = 1; round <= rounds; round++) {
    long go;
    while ((go = atomic_load(&r->go)) < round) spin();
    if (go > rounds) return NULL; /* the main thread stopped early */
    pause_a_little(&seed);
    atomic_store(&r->result, osmem_free_mblocks(atomic_load(&r->a), 2));
    atomic_store(&r->done, round);
  }
  return NULL;
}

Test(cache_threads, bad_range_free_racing_a_drain_is_refused, .timeout = 120) {
  static struct race r;
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, bad_range_free, &r), 0);
  unsigned seed = 1;
  int failures = 0;
  long rounds = race_rounds();
  for (long round = 1; round <= rounds && !failures; round++) {
    char *p = osmem_get_mblocks(2);
    cr_assert_not_null(p);
    bool early = round % 2; /* A0 cached before the race, or during it */
    if (early) cr_assert_eq(osmem_free_mblocks(p, 1), 0);
    atomic_store(&r.a, p);
    atomic_store(&r.go, round);
    pause_a_little(&seed);
    int mine_ok = early || osmem_free_mblocks(p, 1) == 0;
    osmem_flush_thread_cache(); /* A0 to the pool, racing the bad free */
    while (atomic_load(&r.done) != round) spin();
    int theirs_ok = atomic_load(&r.result) == 0;
    /* At most one of the two frees of A0 wins (both may lose). */
    failures += mine_ok && theirs_ok;
    failures += early && theirs_ok; /* A0 was cached all along */
    failures += mine_ok && osmem_is_heap(p);
    failures += osmem__check_invariants() != 0;
    if (!theirs_ok) /* what is still handed out */
      failures += osmem_free_mblocks(p + (mine_ok ? MB : 0), mine_ok ? 1 : 2);
  }
  atomic_store(&r.go, rounds + 1);
  cr_assert_eq(pthread_join(t, NULL), 0);
  cr_assert_eq(failures, 0, "the bad free won, or state broke");
  assert_invariants();
}

/* ----------------------------------------------------------------- fork */

static pthread_barrier_t holding, forked;

static void *hold_cached(void *arg) {
  char **out = arg;
  char *p = osmem_get_mblocks(3);
  if (p) {
    osmem_free_mblocks(p, 1); /* three megablocks in this thread's cache */
    osmem_free_mblocks(p + MB, 1);
    osmem_free_mblocks(p + 2 * MB, 1);
  }
  *out = p;
  pthread_barrier_wait(&holding);
  pthread_barrier_wait(&forked); /* keeps its cache across the fork */
  return NULL;
}

Test(cache_threads, fork_while_another_thread_holds_cached_megablocks) {
  char *theirs = NULL;
  pthread_t t;
  cr_assert_eq(pthread_barrier_init(&holding, NULL, 2), 0);
  cr_assert_eq(pthread_barrier_init(&forked, NULL, 2), 0);
  char *mine = osmem_get_mblocks(1);
  cr_assert_not_null(mine);
  cr_assert_eq(pthread_create(&t, NULL, hold_cached, &theirs), 0);
  pthread_barrier_wait(&holding);
  cr_assert_not_null(theirs);
  cr_assert_eq(stats_now().mblocks_cached, 3);
  pid_t pid = fork();
  cr_assert_neq(pid, -1);
  if (pid == 0) {
    /* The child has one thread: the other's cache came back to its pool. */
    struct osmem_stats s = stats_now();
    int bad = s.mblocks_cached != 0 || s.mblocks_pooled < 3;
    char *q = osmem_get_mblocks(3);
    bad |= q != theirs; /* the three coalesced and serve a run of three */
    bad |= osmem_free_mblocks(q, 3) != 0;
    bad |= osmem_free_mblocks(mine, 1) != 0;
    bad |= osmem__check_invariants() != 0;
    _exit(bad);
  }
  int status;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "the child could not get and free (status %d)", status);
  pthread_barrier_wait(&forked);
  cr_assert_eq(pthread_join(t, NULL), 0);
  cr_assert_eq(stats_now().mblocks_cached, 0, "the thread's exit drained it");
  cr_assert_eq(osmem_free_mblocks(mine, 1), 0);
  assert_invariants();
}

/* ------------------------------------------------------------------ RSS */

/* A field of /proc/self/smaps_rollup, in bytes; -1 when unreadable. */
static long long rollup(const char *field) {
  FILE *f = fopen("/proc/self/smaps_rollup", "r");
  if (!f) return -1;
  char line[256];
  long long kb = -1;
  size_t len = strlen(field);
  while (fgets(line, sizeof line, f))
    if (strncmp(line, field, len) == 0 && line[len] == ':')
      kb = atoll(line + len + 1);
  fclose(f);
  return kb < 0 ? -1 : kb * 1024;
}

/* Frees 128 touched megablocks (threshold 32 MiB, no cache) and returns how
 * much RSS fell and how much LazyFree rose. */
static void rss_after_free(enum osmem_decommit_mode mode, long long *fell,
                           long long *lazy) {
  enum { N = 128 };
  if (rollup("Rss") < 0) cr_skip_test("no /proc/self/smaps_rollup");
  cr_assert_eq(osmem_set_decommit_mode(mode), 0);
  cr_assert_eq(osmem_decommit_mode(), mode);
  decommit_at_once(); /* lazy: in the free, not after the delay */
  osmem_set_decommit_threshold((size_t)32 << 20);
  osmem_set_thread_cache(0);
  char *p = osmem_get_mblocks(N);
  cr_assert_not_null(p);
  touch(p, N);
  long long rss0 = rollup("Rss"), lazy0 = rollup("LazyFree");
  cr_assert_eq(osmem_free_mblocks(p, N), 0);
  *fell = rss0 - rollup("Rss");
  *lazy = rollup("LazyFree") - lazy0;
  assert_invariants();
}

Test(rss, eager_returns_what_is_over_the_threshold_at_once) {
  long long fell, lazy;
  rss_after_free(OSMEM_DECOMMIT_EAGER, &fell, &lazy);
  /* At least what exceeded the threshold (128 - 32 MiB) left RSS. */
  cr_assert_geq(fell, (long long)96 << 20, "RSS fell by %lld MiB only",
                fell >> 20);
  cr_assert_lt(lazy, (long long)1 << 20, "nothing left lazily freed");
}

/* Whether MADV_FREE of touched pages shows as LazyFree here. qemu-user
 * accepts madvise and ignores all advice but MADV_DONTNEED (a guest's
 * advice does not map onto the emulator's pages), and kernels before 4.5
 * refuse MADV_FREE. */
static bool madv_free_shows(void) {
#ifdef MADV_FREE
  const size_t len = (size_t)4 << 20;
  char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  cr_assert_neq(p, MAP_FAILED);
  memset(p, 1, len);
  long long lazy0 = rollup("LazyFree");
  bool shows = madvise(p, len, MADV_FREE) == 0 &&
               rollup("LazyFree") - lazy0 >= (long long)len / 2;
  munmap(p, len);
  return shows;
#else
  return false;
#endif
}

Test(rss, lazy_marks_pages_lazily_freed) {
  long long fell, lazy;
  if (!madv_free_shows())
    cr_skip_test("MADV_FREE does not show as LazyFree here (qemu-user "
                 "ignores it; kernels before 4.5 refuse it)");
  rss_after_free(OSMEM_DECOMMIT_LAZY, &fell, &lazy);
  /* MADV_FREE: the pages stay in RSS, counted as LazyFree, until the
   * kernel needs memory. */
  cr_assert_geq(lazy, (long long)96 << 20, "LazyFree rose by %lld MiB",
                lazy >> 20);
}

Test(rss, never_keeps_everything_until_release) {
  long long fell, lazy;
  rss_after_free(OSMEM_DECOMMIT_NEVER, &fell, &lazy);
  cr_assert_lt(fell, (long long)1 << 20, "RSS fell by %lld MiB", fell >> 20);
  cr_assert_lt(lazy, (long long)1 << 20);
  long long before = rollup("Rss");
  cr_assert_eq(osmem_release_free_memory(), (size_t)128 << 20);
  cr_assert_geq(before - rollup("Rss"), (long long)127 << 20,
                "release gives it all back");
}

/* OSMEM_DECOMMIT is read once, at initialisation: each test runs in a fresh
 * process, and sets it before its first call into the library. */
static enum osmem_decommit_mode mode_with_env(const char *value) {
  cr_assert_eq(setenv("OSMEM_DECOMMIT", value, 1), 0);
  return osmem_decommit_mode();
}

Test(rss, environment_eager) {
  cr_assert_eq(mode_with_env("eager"), OSMEM_DECOMMIT_EAGER);
}

Test(rss, environment_never) {
  cr_assert_eq(mode_with_env("never"), OSMEM_DECOMMIT_NEVER);
}

Test(rss, environment_unknown_keeps_lazy) {
  cr_assert_eq(mode_with_env("sometimes"), OSMEM_DECOMMIT_LAZY);
  cr_assert_eq(osmem_set_decommit_mode((enum osmem_decommit_mode)7), EINVAL);
  cr_assert_eq(osmem_decommit_mode(), OSMEM_DECOMMIT_LAZY, "unchanged");
}
#endif /* !__wasi__ && !_WIN32 */

/* Concurrency and fork: the library from many threads, and across fork(). */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

#define MB OSMEM_MBLOCK_SIZE

static uint64_t xorshift(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

/* Worker threads must not assert (Criterion aborts through the main thread);
 * they count failures and keep the first message for the main thread. */
struct failures {
  atomic_int count;
  char first[160];
};

static void fail(struct failures *f, const char *what, unsigned thread) {
  if (atomic_fetch_add(&f->count, 1) == 0)
    snprintf(f->first, sizeof f->first, "thread %u: %s", thread, what);
}

#define assert_no_failures(f) \
  cr_assert_eq(atomic_load(&(f)->count), 0, "%d failures, first: %s", \
               atomic_load(&(f)->count), (f)->first)

static void start_threads(pthread_t *t, unsigned count, void *(*fn)(void *),
                          void *args, size_t arg_size) {
  for (unsigned i = 0; i < count; i++)
    cr_assert_eq(pthread_create(&t[i], NULL, fn, (char *)args + i * arg_size), 0);
}

static void join_threads(pthread_t *t, unsigned count) {
  for (unsigned i = 0; i < count; i++) cr_assert_eq(pthread_join(t[i], NULL), 0);
}

/* ---------------------------------------------------------------- stress */

#define STRESS_THREADS 8
#define STRESS_OPS 3000
#define STRESS_SLOTS 16

struct run {
  char *p;
  size_t n;
  uint64_t tag;
};

struct stress_arg {
  unsigned id;
  struct failures *fail;
  struct run slots[STRESS_SLOTS];
};

/* The first and last word of every megablock of r hold r's tag. */
static void tag_run(const struct run *r) {
  for (size_t m = 0; m < r->n; m++) {
    char *mb = r->p + m * MB;
    *(volatile uint64_t *)mb = r->tag;
    *(volatile uint64_t *)(mb + MB - sizeof(uint64_t)) = r->tag;
  }
}

static bool tag_intact(const struct run *r) {
  for (size_t m = 0; m < r->n; m++) {
    char *mb = r->p + m * MB;
    if (*(volatile uint64_t *)mb != r->tag) return false;
    if (*(volatile uint64_t *)(mb + MB - sizeof(uint64_t)) != r->tag) return false;
  }
  return true;
}

static void *stress_thread(void *varg) {
  struct stress_arg *a = varg;
  uint64_t rng = 0x9E3779B97F4A7C15ull * (a->id + 1);
  uint64_t serial = 0;
  for (int op = 0; op < STRESS_OPS; op++) {
    struct run *r = &a->slots[xorshift(&rng) % STRESS_SLOTS];
    if (!r->p) {
      size_t n = 1 + xorshift(&rng) % 8;
      char *p = osmem_get_mblocks(n);
      if (!p) { fail(a->fail, "get returned NULL", a->id); continue; }
      if (!is_mblock_aligned(p)) fail(a->fail, "misaligned run", a->id);
      if (!osmem_is_heap(p) || !osmem_is_heap(p + n * MB - 1))
        fail(a->fail, "own run not heap", a->id);
      *r = (struct run){p, n, ((uint64_t)a->id << 48) | ++serial};
      tag_run(r);
    } else {
      if (!tag_intact(r)) fail(a->fail, "tag overwritten: runs overlap", a->id);
      int err;
      if (r->n > 1 && xorshift(&rng) % 4 == 0) { /* free in two pieces */
        size_t k = 1 + xorshift(&rng) % (r->n - 1);
        err = osmem_free_mblocks(r->p + k * MB, r->n - k);
        if (!err && !osmem_is_heap(r->p + k * MB - 1))
          fail(a->fail, "partial free freed too much", a->id);
        if (!err) err = osmem_free_mblocks(r->p, k);
      } else {
        err = osmem_free_mblocks(r->p, r->n);
      }
      if (err) fail(a->fail, "free of own run failed", a->id);
      r->p = NULL;
    }
  }
  return NULL;
}

static int by_address(const void *a, const void *b) {
  const struct run *x = a, *y = b;
  return x->p < y->p ? -1 : x->p > y->p;
}

Test(threads, stress_runs_never_overlap, .timeout = 120) {
  static struct stress_arg args[STRESS_THREADS];
  static struct failures f;
  pthread_t t[STRESS_THREADS];
  for (unsigned i = 0; i < STRESS_THREADS; i++)
    args[i] = (struct stress_arg){.id = i, .fail = &f};
  start_threads(t, STRESS_THREADS, stress_thread, args, sizeof args[0]);
  join_threads(t, STRESS_THREADS);
  assert_no_failures(&f);
  assert_invariants();

  static struct run live[STRESS_THREADS * STRESS_SLOTS];
  size_t count = 0;
  uint64_t mblocks = 0;
  for (unsigned i = 0; i < STRESS_THREADS; i++)
    for (unsigned s = 0; s < STRESS_SLOTS; s++)
      if (args[i].slots[s].p) {
        live[count++] = args[i].slots[s];
        mblocks += args[i].slots[s].n;
      }
  cr_assert_gt(count, 0, "no run left live: the check below is empty");
  qsort(live, count, sizeof live[0], by_address);
  for (size_t i = 0; i + 1 < count; i++)
    cr_assert_leq((uintptr_t)live[i].p + live[i].n * MB, (uintptr_t)live[i + 1].p,
                  "runs %p+%zu and %p overlap", (void *)live[i].p, live[i].n,
                  (void *)live[i + 1].p);
  struct osmem_stats s = stats_now();
  cr_assert_eq(s.mblocks_in_use, mblocks);
  cr_assert_geq(s.mblocks_peak, mblocks);
  for (size_t i = 0; i < count; i++) {
    cr_assert(tag_intact(&live[i]), "run %p lost its tag", (void *)live[i].p);
    cr_assert_eq(osmem_free_mblocks(live[i].p, live[i].n), 0);
  }
  s = stats_now();
  cr_assert_eq(s.mblocks_in_use, 0);
  cr_assert_eq(s.bytes_mapped - s.bytes_reserved_unused,
               (s.mblocks_pooled + s.mblocks_cached) * MB);
  assert_invariants();
}

/* ------------------------------------------------------------------ init */

#define INIT_THREADS 16

static pthread_barrier_t init_barrier;

struct init_arg {
  int result;
};

static void *init_thread(void *varg) {
  struct init_arg *a = varg;
  pthread_barrier_wait(&init_barrier);
  a->result = osmem_init();
  return NULL;
}

Test(threads, concurrent_init_all_return_zero, .timeout = 60) {
  static struct init_arg args[INIT_THREADS];
  pthread_t t[INIT_THREADS];
  for (unsigned i = 0; i < INIT_THREADS; i++) args[i].result = -1;
  cr_assert_eq(pthread_barrier_init(&init_barrier, NULL, INIT_THREADS), 0);
  start_threads(t, INIT_THREADS, init_thread, args, sizeof args[0]);
  join_threads(t, INIT_THREADS);
  pthread_barrier_destroy(&init_barrier);
  for (unsigned i = 0; i < INIT_THREADS; i++)
    cr_assert_eq(args[i].result, 0, "thread %u: osmem_init() = %d", i,
                 args[i].result);
  cr_assert_eq(osmem_page_size(), (size_t)sysconf(_SC_PAGESIZE));
  void *p = osmem_get_mblocks(1);
  cr_assert_not_null(p);
  cr_assert_eq(osmem_free_mblocks(p, 1), 0);
  assert_invariants();
}

/* ----------------------------------------------------- is_heap under load */

#define READERS 4
#define WRITER_OPS 4000
#define READER_ROUNDS 400

static _Atomic(char *) writer_latest; /* some run of the writer, maybe freed */
static atomic_bool writer_done;

struct reader_arg {
  unsigned id;
  struct failures *fail;
  unsigned long probes;
};

static void *writer_thread(void *varg) {
  struct failures *f = varg;
  struct run slots[8] = {{0}};
  uint64_t rng = 12345;
  for (int op = 0; op < WRITER_OPS; op++) {
    struct run *r = &slots[xorshift(&rng) % 8];
    if (r->p) {
      if (osmem_free_mblocks(r->p, r->n) != 0) fail(f, "writer free", 99);
      r->p = NULL;
    } else {
      r->n = 1 + xorshift(&rng) % 4;
      r->p = osmem_get_mblocks(r->n);
      if (!r->p) fail(f, "writer get", 99);
      atomic_store(&writer_latest, r->p);
    }
  }
  for (int i = 0; i < 8; i++)
    if (slots[i].p) osmem_free_mblocks(slots[i].p, slots[i].n);
  atomic_store(&writer_done, true);
  return NULL;
}

static void *reader_thread(void *varg) {
  struct reader_arg *a = varg;
  uint64_t rng = 777 + a->id;
  int on_stack;
  for (int round = 0; round < READER_ROUNDS || !atomic_load(&writer_done); round++) {
    size_t n = 1 + xorshift(&rng) % 3;
    char *own = osmem_get_mblocks(n);
    if (!own) { fail(a->fail, "reader get", a->id); break; }
    for (int k = 0; k < 50; k++) {
      /* Own run: exact. */
      for (size_t m = 0; m < n; m++)
        if (!osmem_is_heap(own + m * MB) || !osmem_is_heap(own + (m + 1) * MB - 1))
          fail(a->fail, "own live run read as not heap", a->id);
      /* Never heap. */
      if (osmem_is_heap(&on_stack) || osmem_is_heap(NULL))
        fail(a->fail, "stack or NULL read as heap", a->id);
      /* The writer's runs: either answer, but no crash. */
      uintptr_t w = (uintptr_t)atomic_load(&writer_latest);
      a->probes += osmem_is_heap((void *)w) + osmem_is_heap((void *)(w + MB));
    }
    if (osmem_free_mblocks(own, n) != 0) fail(a->fail, "reader free", a->id);
  }
  return NULL;
}

Test(threads, is_heap_exact_for_own_runs_under_load, .timeout = 120) {
  static struct failures f;
  static struct reader_arg args[READERS];
  pthread_t readers[READERS], writer;
  osmem_init();
  for (unsigned i = 0; i < READERS; i++)
    args[i] = (struct reader_arg){.id = i, .fail = &f};
  cr_assert_eq(pthread_create(&writer, NULL, writer_thread, &f), 0);
  start_threads(readers, READERS, reader_thread, args, sizeof args[0]);
  cr_assert_eq(pthread_join(writer, NULL), 0);
  join_threads(readers, READERS);
  assert_no_failures(&f);
  cr_assert_eq(stats_now().mblocks_in_use, 0);
  assert_invariants();
}

/* ------------------------------------------------------------------ fork */

/* Child steps report through the exit status: 0 = all good, else the step
 * that failed. _exit, so that no Criterion exit handler runs in the child. */
static int child_uses_library(char *parent_run, size_t n) {
  if (!osmem_is_heap(parent_run)) return 1;
  if (parent_run[0] != 'P' || parent_run[n * MB - 1] != 'Q') return 2;
  char *mine = osmem_get_mblocks(2);
  if (!mine || !is_mblock_aligned(mine)) return 3;
  mine[0] = mine[2 * MB - 1] = 'C';
  if (osmem_free_mblocks(mine, 2) != 0) return 4;
  if (osmem_free_mblocks(parent_run, n) != 0) return 5; /* inherited */
  if (osmem_is_heap(parent_run)) return 6;
  if (osmem_free_mblocks(parent_run, n) != EINVAL) return 7;
  struct osmem_stats s;
  osmem_stats(&s);
  if (s.mblocks_in_use != 0) return 8;
  if (osmem__check_invariants() != 0) return 9;
  return 0;
}

static void assert_child_ok(pid_t pid) {
  int status;
  cr_assert_eq(waitpid(pid, &status, 0), pid, "waitpid: %s", strerror(errno));
  cr_assert(!WIFSIGNALED(status), "child killed by signal %d%s",
            WTERMSIG(status), WTERMSIG(status) == SIGALRM ? " (deadlock?)" : "");
  cr_assert(WIFEXITED(status));
  cr_assert_eq(WEXITSTATUS(status), 0, "child failed at step %d",
               WEXITSTATUS(status));
}

Test(threads, fork_child_gets_and_frees_parent_run, .timeout = 60) {
  const size_t n = 3;
  char *p = osmem_get_mblocks(n);
  cr_assert_not_null(p);
  p[0] = 'P';
  p[n * MB - 1] = 'Q';
  pid_t pid = fork();
  cr_assert_neq(pid, -1, "fork: %s", strerror(errno));
  if (pid == 0) {
    alarm(30);
    _exit(child_uses_library(p, n));
  }
  assert_child_ok(pid);
  for (size_t m = 0; m < n; m++) cr_assert(osmem_is_heap(p + m * MB));
  cr_assert_eq(p[0], 'P');
  cr_assert_eq(p[n * MB - 1], 'Q');
  cr_assert_eq(stats_now().mblocks_in_use, n);
  cr_assert_eq(osmem_free_mblocks(p, n), 0);
  assert_invariants();
}

static atomic_bool hammer_stop;
static atomic_ulong hammer_rounds;

static void *hammer_thread(void *varg) {
  struct failures *f = varg;
  uint64_t rng = 4242;
  while (!atomic_load(&hammer_stop)) {
    size_t n = 1 + xorshift(&rng) % 4;
    char *p = osmem_get_mblocks(n);
    if (!p) { fail(f, "hammer get", 0); break; }
    if (osmem_free_mblocks(p, n) != 0) fail(f, "hammer free", 0);
    atomic_fetch_add(&hammer_rounds, 1);
  }
  return NULL;
}

static int child_get_free(void) {
  char *p = osmem_get_mblocks(1);
  if (!p) return 1;
  p[0] = p[MB - 1] = 1;
  if (osmem_free_mblocks(p, 1) != 0) return 2;
  if (osmem__check_invariants() != 0) return 3;
  return 0;
}

Test(threads, fork_while_other_thread_hammers, .timeout = 120) {
  static struct failures f;
  pthread_t t;
  osmem_init();
  cr_assert_eq(pthread_create(&t, NULL, hammer_thread, &f), 0);
  for (int i = 0; i < 40; i++) {
    /* Let the hammer make progress between forks (no timing involved). */
    unsigned long seen = atomic_load(&hammer_rounds);
    while (atomic_load(&hammer_rounds) < seen + 50 && !atomic_load(&f.count))
      sched_yield();
    pid_t pid = fork();
    int fork_errno = errno;
    if (pid == 0) {
      alarm(10); /* a child stuck on the pool lock dies of SIGALRM */
      _exit(child_get_free());
    }
    int status = 0;
    pid_t got = pid == -1 ? -1 : waitpid(pid, &status, 0);
    int wait_errno = errno;
    if (got != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      atomic_store(&hammer_stop, true);
      pthread_join(t, NULL);
      cr_assert_neq(pid, -1, "fork %d: %s", i, strerror(fork_errno));
      cr_assert_eq(got, pid, "waitpid: %s", strerror(wait_errno));
      cr_assert(WIFEXITED(status), "fork %d: child killed by signal %d%s", i,
                WTERMSIG(status), WTERMSIG(status) == SIGALRM ? " (deadlock)" : "");
      cr_assert_fail("fork %d: child failed at step %d", i, WEXITSTATUS(status));
    }
  }
  atomic_store(&hammer_stop, true);
  cr_assert_eq(pthread_join(t, NULL), 0);
  assert_no_failures(&f);
  cr_assert_eq(stats_now().mblocks_in_use, 0);
  assert_invariants();
}

/*
 * bench-peers: libosmem side by side with what a runtime could use instead
 * for its megablocks (1 MiB aligned, 1 MiB long):
 *
 *   glibc      posix_memalign / free, release = malloc_trim(0)
 *   mimalloc   mi_malloc_aligned / mi_free, release = mi_collect(true)
 *   jemalloc   mallocx(MALLOCX_ALIGN) / dallocx, release = arena purge
 *   mmap+trim  mmap n+1 megablocks, unmap head and tail, munmap on free
 *   libosmem   the library in its default configuration
 *
 * mimalloc and jemalloc are dlopen()ed (RTLD_NOW | RTLD_LOCAL), so they do
 * not replace malloc; a contender whose library is missing is reported as
 * "n/a (not installed)". libosmem is always used as it comes: this program
 * calls none of its setters. One extra contender, clearly labelled as tuned,
 * runs libosmem with OSMEM_DECOMMIT=never in its environment (only for the
 * workload whose target is stated against it); it never counts as a peer.
 *
 * Every measurement runs in its own process: the driver (no arguments, or
 * --out/--plot options) re-executes itself as
 *   bench-peers --child CONTENDER WORKLOAD PARAM
 * and the child prints one line: "R v1 v2 ...", "NA reason", "ENOMEM k" or
 * "ERR reason". Contenders are rotated from one repetition to the next.
 * OS calls are counted from osmem_stats() for libosmem and by running the
 * child under `strace -f -c` for the others.
 *
 * Prints nothing but the results (markdown on stdout, the same in
 * OUT/results.md, OUT/results.csv, and gnuplot charts OUT/<name>.png).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <gnu/libc-version.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "osmem.h"

#define MBS OSMEM_MBLOCK_SIZE
#define TOUCH_STEP 4096 /* one byte written per 4 KiB page */
#define REPS 7
#define BUDGET_NS 80e6 /* timed loops run this long (80 ms) */

/* Counts (chosen so that the whole run stays within a few minutes). */
#define POOL_PREFILL 2048   /* pooled (b)/(c): got and freed first */
#define FRESH_COUNT 1024    /* fresh gets, and the touched one-by-one free */
#define RSS_MBLOCKS 256     /* 256 MiB got, touched, freed */
#define FRAG_OPS 20000      /* random free + get operations */
#define FRAG_SETUP_S 10     /* give up building the fragmented pool after */
#define OSCALL_POOLED 10000 /* pairs counted for OS calls */
#define OSCALL_FRESH 1024   /* fresh gets counted for OS calls */
#define THREAD_MS 200       /* threads run this long */
#define ISHEAP_PTRS 4096

/* ================================================================ timing */

static inline double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* The cost of one clock read, subtracted where single calls are timed. */
static double timer_overhead(void) {
  double best = 1e9;
  for (int r = 0; r < 5; r++) {
    double t0 = now_ns(), t = t0;
    for (int i = 0; i < 2000; i++) t = now_ns();
    double per = (t - t0) / 2000;
    if (per < best) best = per;
  }
  return best;
}

/* ============================================================ contenders */

struct contender {
  const char *id;
  int (*load)(char *why, size_t len); /* 0, or -1 (not installed) */
  void *(*get)(size_t n);
  void (*free)(void *p, size_t n);
  void (*release)(void);
  bool (*is_heap)(const void *p); /* NULL: no such call */
};

/* ---- glibc */
static int glibc_load(char *why, size_t len) {
  (void)why;
  (void)len;
  return 0;
}
static void *glibc_get(size_t n) {
  void *p;
  return posix_memalign(&p, MBS, n * MBS) == 0 ? p : NULL;
}
static void glibc_free(void *p, size_t n) {
  (void)n;
  free(p);
}
static void glibc_release(void) { malloc_trim(0); }

/* ---- mimalloc */
static void *(*mi_malloc_aligned_fn)(size_t, size_t);
static void (*mi_free_fn)(void *);
static void (*mi_collect_fn)(bool);
static bool (*mi_is_in_heap_region_fn)(const void *);

static void *open_lib(const char *const *names, char *why, size_t len) {
  void *h = NULL;
  for (size_t i = 0; names[i] && !h; i++) {
    h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) snprintf(why, len, "%s", dlerror());
  }
  return h;
}

static int mimalloc_load(char *why, size_t len) {
  static const char *const names[] = {"libmimalloc.so.2", "libmimalloc.so",
                                      NULL};
  void *h = open_lib(names, why, len);
  if (!h) return -1;
  mi_malloc_aligned_fn = (void *(*)(size_t, size_t))dlsym(h, "mi_malloc_aligned");
  mi_free_fn = (void (*)(void *))dlsym(h, "mi_free");
  mi_collect_fn = (void (*)(bool))dlsym(h, "mi_collect");
  mi_is_in_heap_region_fn = (bool (*)(const void *))dlsym(h, "mi_is_in_heap_region");
  if (!mi_malloc_aligned_fn || !mi_free_fn || !mi_collect_fn ||
      !mi_is_in_heap_region_fn) {
    snprintf(why, len, "missing symbols");
    return -1;
  }
  mi_free_fn(mi_malloc_aligned_fn(8, 8)); /* initialised before timing */
  return 0;
}
static void *mimalloc_get(size_t n) { return mi_malloc_aligned_fn(n * MBS, MBS); }
static void mimalloc_free(void *p, size_t n) {
  (void)n;
  mi_free_fn(p);
}
static void mimalloc_release(void) { mi_collect_fn(true); }
static bool mimalloc_is_heap(const void *p) { return mi_is_in_heap_region_fn(p); }

/* ---- jemalloc */
static void *(*je_mallocx_fn)(size_t, int);
static void (*je_dallocx_fn)(void *, int);
static int (*je_mallctl_fn)(const char *, void *, size_t *, void *, size_t);
static int je_flags; /* MALLOCX_ALIGN(MBS) == MALLOCX_LG_ALIGN(shift) */

static int jemalloc_load(char *why, size_t len) {
  static const char *const names[] = {"libjemalloc.so.2", "libjemalloc.so",
                                      NULL};
  void *h = open_lib(names, why, len);
  if (!h) return -1;
  je_mallocx_fn = (void *(*)(size_t, int))dlsym(h, "mallocx");
  je_dallocx_fn = (void (*)(void *, int))dlsym(h, "dallocx");
  je_mallctl_fn = (int (*)(const char *, void *, size_t *, void *, size_t))
      dlsym(h, "mallctl");
  if (!je_mallocx_fn || !je_dallocx_fn || !je_mallctl_fn) {
    snprintf(why, len, "missing symbols");
    return -1;
  }
  je_flags = OSMEM_MBLOCK_SHIFT; /* MALLOCX_LG_ALIGN(la) is la itself */
  je_dallocx_fn(je_mallocx_fn(8, 0), 0); /* initialised before timing */
  return 0;
}
static void *jemalloc_get(size_t n) { return je_mallocx_fn(n * MBS, je_flags); }
static void jemalloc_free(void *p, size_t n) {
  (void)n;
  je_dallocx_fn(p, je_flags);
}
static void jemalloc_release(void) {
  /* 4096 = MALLCTL_ARENAS_ALL */
  je_mallctl_fn("arena.4096.purge", NULL, NULL, NULL, 0);
}

/* ---- mmap over-allocate and trim */
static int mmap_load(char *why, size_t len) {
  (void)why;
  (void)len;
  return 0;
}
static void *mmap_get(size_t n) {
  size_t len = (n + 1) * MBS;
  char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return NULL;
  uintptr_t a = ((uintptr_t)p + MBS - 1) & ~(uintptr_t)(MBS - 1);
  size_t head = a - (uintptr_t)p, tail = MBS - head;
  if (head) munmap(p, head);
  if (tail) munmap((char *)a + n * MBS, tail);
  return (void *)a;
}
static void mmap_free(void *p, size_t n) { munmap(p, n * MBS); }
static void mmap_release(void) {}

/* ---- libosmem (default configuration: no setter is ever called) */
static int osmem_load(char *why, size_t len) {
  (void)why;
  (void)len;
  /* Initialised before timing, as the peers are (their first small
   * allocation): osmem_init() is the documented way, and changes nothing. */
  return osmem_init();
}
static int osmem_tuned_load(char *why, size_t len) {
  /* The driver put OSMEM_DECOMMIT=never in this process's environment
   * before it started; the library reads it when it initialises. */
  const char *e = getenv("OSMEM_DECOMMIT");
  if (!e || strcmp(e, "never") != 0) {
    snprintf(why, len, "OSMEM_DECOMMIT is not set");
    return -1;
  }
  return osmem_init();
}
static void *osm_get(size_t n) { return osmem_get_mblocks(n); }
static void osm_free(void *p, size_t n) { osmem_free_mblocks(p, n); }
static void osm_release(void) { osmem_release_free_memory(); }
static bool osm_is_heap(const void *p) { return osmem_is_heap(p); }

enum { C_GLIBC, C_MIMALLOC, C_JEMALLOC, C_MMAP, C_OSMEM, C_TUNED, NC };
#define NPEERS 4 /* C_GLIBC .. C_MMAP: the "other contenders" */

static const struct contender contenders[NC] = {
    {"glibc", glibc_load, glibc_get, glibc_free, glibc_release, NULL},
    {"mimalloc", mimalloc_load, mimalloc_get, mimalloc_free, mimalloc_release,
     mimalloc_is_heap},
    {"jemalloc", jemalloc_load, jemalloc_get, jemalloc_free, jemalloc_release,
     NULL},
    {"mmap", mmap_load, mmap_get, mmap_free, mmap_release, NULL},
    {"osmem", osmem_load, osm_get, osm_free, osm_release, osm_is_heap},
    {"osmem-never", osmem_tuned_load, osm_get, osm_free, osm_release,
     osm_is_heap},
};
static const char *const clabel[NC] = {
    "glibc", "mimalloc", "jemalloc", "mmap+trim", "libosmem",
    "libosmem, tuned: decommit off (OSMEM_DECOMMIT=never)"};
static const char *const cshort[NC] = {"glibc",     "mimalloc", "jemalloc",
                                       "mmap+trim", "libosmem", "libosmem tuned"};

static bool is_osmem(int c) { return c == C_OSMEM || c == C_TUNED; }

/* ================================================================= child */

static const struct contender *C; /* the child's contender */

static void child_fail(const char *what) {
  printf("ERR %s failed (errno %d)\n", what, errno);
  fflush(stdout);
  _exit(1);
}

static void touch(void *p, size_t n) {
  volatile char *c = p;
  for (size_t off = 0; off < n * MBS; off += TOUCH_STEP) c[off] = 1;
}

static void *get_or_die(size_t n) {
  void *p = C->get(n);
  if (!p) child_fail("get");
  return p;
}

/* ns per get(n)+free pair, over BUDGET_NS. */
static double pairs_timed(size_t n) {
  uint64_t ops = 0;
  double t0 = now_ns(), t;
  do {
    for (int i = 0; i < 64; i++) {
      void *p = get_or_die(n);
      C->free(p, n);
    }
    ops += 64;
    t = now_ns();
  } while (t - t0 < BUDGET_NS);
  return (t - t0) / (double)ops;
}

static void **ptr_array(size_t n) {
  void **a = calloc(n, sizeof *a);
  if (!a) child_fail("calloc");
  return a;
}

static struct osmem_stats stats_now(void) {
  struct osmem_stats s;
  memset(&s, 0, sizeof s);
  osmem_stats(&s);
  return s;
}

/* /proc readers that do not allocate (the RSS workload reads them). */
static char procbuf[1 << 16];
static size_t read_proc(const char *path) {
  int fd = open(path, O_RDONLY);
  size_t len = 0;
  if (fd < 0) return 0;
  for (;;) {
    ssize_t r = read(fd, procbuf + len, sizeof procbuf - 1 - len);
    if (r <= 0) break;
    len += (size_t)r;
    if (len == sizeof procbuf - 1) break;
  }
  close(fd);
  procbuf[len] = 0;
  return len;
}
static long count_maps(void) {
  /* Count newlines without a buffer limit: maps may be long. */
  int fd = open("/proc/self/maps", O_RDONLY);
  long lines = 0;
  if (fd < 0) return -1;
  for (;;) {
    ssize_t r = read(fd, procbuf, sizeof procbuf);
    if (r <= 0) break;
    for (ssize_t i = 0; i < r; i++) lines += procbuf[i] == '\n';
  }
  close(fd);
  return lines;
}
static long rollup_kib(const char *field) {
  read_proc("/proc/self/smaps_rollup");
  size_t fl = strlen(field);
  for (char *l = procbuf; *l;) {
    if (strncmp(l, field, fl) == 0 && l[fl] == ':') return strtol(l + fl + 1, NULL, 10);
    char *nl = strchr(l, '\n');
    if (!nl) break;
    l = nl + 1;
  }
  return -1;
}

struct thr {
  pthread_t t;
  atomic_bool *stop;
  pthread_barrier_t *bar;
  uint64_t pairs;
  double ns;
};
static void *thread_main(void *arg) {
  struct thr *t = arg;
  void *p = get_or_die(1); /* warm-up pair */
  C->free(p, 1);
  pthread_barrier_wait(t->bar);
  double t0 = now_ns();
  uint64_t n = 0;
  while (!atomic_load_explicit(t->stop, memory_order_relaxed)) {
    for (int i = 0; i < 64; i++) {
      p = get_or_die(1);
      C->free(p, 1);
    }
    n += 64;
  }
  t->ns = now_ns() - t0;
  t->pairs = n;
  return NULL;
}

static void *spin_main(void *arg) {
  struct thr *t = arg;
  pthread_barrier_wait(t->bar);
  double t0 = now_ns();
  uint64_t n = 0;
  volatile uint64_t x = 0;
  while (!atomic_load_explicit(t->stop, memory_order_relaxed)) {
    for (int i = 0; i < 64; i++) x += (uint64_t)i * 2654435761u;
    n += 64;
  }
  t->ns = now_ns() - t0;
  t->pairs = n + (x & 0); /* reads x: the loop is not dead code */
  return NULL;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint64_t rng(void) { /* xorshift64*: the same sequence everywhere */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545f4914f6cdd1du;
}

/* Runs fn on n threads (1 to 8) for THREAD_MS; their pairs per second,
 * added up. */
static double threads_rate(long n, void *(*fn)(void *)) {
  struct thr th[8];
  atomic_bool stop = false;
  pthread_barrier_t bar;
  if (n < 1 || n > 8) n = 1;
  pthread_barrier_init(&bar, NULL, (unsigned)n + 1);
  for (long i = 0; i < n; i++) {
    th[i] = (struct thr){.stop = &stop, .bar = &bar};
    if (pthread_create(&th[i].t, NULL, fn, &th[i])) child_fail("pthread_create");
  }
  pthread_barrier_wait(&bar);
  struct timespec ts = {THREAD_MS / 1000, (THREAD_MS % 1000) * 1000000L};
  nanosleep(&ts, NULL);
  atomic_store(&stop, true);
  double rate = 0;
  for (long i = 0; i < n; i++) {
    pthread_join(th[i].t, NULL);
    rate += (double)th[i].pairs / th[i].ns * 1e9;
  }
  return rate;
}

static int child_main(const char *cid, const char *wl, long param) {
  int ci = -1;
  for (int i = 0; i < NC; i++)
    if (strcmp(contenders[i].id, cid) == 0) ci = i;
  if (ci < 0) {
    printf("ERR unknown contender\n");
    return 1;
  }
  C = &contenders[ci];
  char why[256] = "";
  if (C->load(why, sizeof why) != 0) {
    for (char *s = why; *s; s++)
      if (*s == '\n') *s = ' ';
    printf("NA %s\n", why);
    return 0;
  }
  size_t n = param > 0 ? (size_t)param : 0;

  if (strcmp(wl, "probe") == 0) {
    void *p = get_or_die(1);
    C->free(p, 1);
    printf("R 1\n");
  } else if (strncmp(wl, "pooled", 6) == 0) {
    /* pooled: clean; pooled-untouched / pooled-touched: after n got+freed */
    if (n) {
      void **a = ptr_array(n);
      bool t = strcmp(wl, "pooled-touched") == 0;
      for (size_t i = 0; i < n; i++) {
        a[i] = get_or_die(1);
        if (t) touch(a[i], 1);
      }
      for (size_t i = 0; i < n; i++) C->free(a[i], 1);
    }
    void *p = get_or_die(1); /* warm-up pair */
    C->free(p, 1);
    printf("R %.3f\n", pairs_timed(1));
  } else if (strcmp(wl, "getn") == 0) {
    void *p = get_or_die(n); /* warm-up pair */
    C->free(p, n);
    printf("R %.3f\n", pairs_timed(n));
  } else if (strcmp(wl, "fresh") == 0) {
    void **a = ptr_array(n);
    double t0 = now_ns();
    for (size_t i = 0; i < n; i++) a[i] = get_or_die(1);
    double t1 = now_ns();
    printf("R %.3f\n", (t1 - t0) / (double)n);
  } else if (strcmp(wl, "fresh-touched") == 0) {
    /* Each get is timed alone (minus one clock read); touching is timed
     * separately and reported as its own figure. */
    void **a = ptr_array(n);
    double ov = timer_overhead(), get = 0, tch = 0;
    for (size_t i = 0; i < n; i++) {
      double t0 = now_ns();
      a[i] = get_or_die(1);
      double t1 = now_ns();
      touch(a[i], 1);
      double t2 = now_ns();
      get += t1 - t0 - ov;
      tch += t2 - t1 - ov;
    }
    printf("R %.3f %.3f\n", get / (double)n, tch / (double)n);
  } else if (strcmp(wl, "free-touched") == 0) {
    void **a = ptr_array(n);
    for (size_t i = 0; i < n; i++) {
      a[i] = get_or_die(1);
      touch(a[i], 1);
    }
    struct osmem_stats s0 = is_osmem(ci) ? stats_now() : (struct osmem_stats){0};
    double t0 = now_ns();
    for (size_t i = 0; i < n; i++) C->free(a[i], 1);
    double t1 = now_ns();
    struct osmem_stats s1 = is_osmem(ci) ? stats_now() : (struct osmem_stats){0};
    printf("R %.3f %" PRIu64 "\n", (t1 - t0) / (double)n,
           s1.os_madvise - s0.os_madvise);
  } else if (strcmp(wl, "batch64") == 0) {
    void *a[64];
    uint64_t rounds = 0;
    for (int i = 0; i < 64; i++) a[i] = get_or_die(1); /* warm-up round */
    for (int i = 0; i < 64; i++) C->free(a[i], 1);
    double t0 = now_ns(), t;
    do {
      for (int i = 0; i < 64; i++) a[i] = get_or_die(1);
      for (int i = 0; i < 64; i++) C->free(a[i], 1);
      rounds++;
      t = now_ns();
    } while (t - t0 < BUDGET_NS);
    printf("R %.3f\n", (t - t0) / (double)(rounds * 64));
  } else if (strcmp(wl, "rss") == 0) {
    void **a = ptr_array(n);
    long m0 = count_maps(), r0 = rollup_kib("Rss"), l0 = rollup_kib("LazyFree");
    for (size_t i = 0; i < n; i++) {
      a[i] = get_or_die(1);
      touch(a[i], 1);
    }
    for (size_t i = 0; i < n; i++) C->free(a[i], 1);
    long m1 = count_maps(), r1 = rollup_kib("Rss"), l1 = rollup_kib("LazyFree");
    C->release();
    long m2 = count_maps(), r2 = rollup_kib("Rss"), l2 = rollup_kib("LazyFree");
    printf("R %ld %ld %ld %ld %ld %ld\n", m1 - m0, r1 - r0, l1 - l0, m2 - m0,
           r2 - r0, l2 - l0);
  } else if (strcmp(wl, "frag") == 0) {
    /* 2F single gets, every other one freed: F free ranges. A contender
     * that cannot get there says so: ENOMEM (from a get, or the mapping
     * count reaching vm.max_map_count, where munmap fails and glibc's free
     * fails silently), or SLOW (the setup takes over FRAG_SETUP_S). */
    size_t f = n, total = 2 * f;
    void **a = ptr_array(total), **held = ptr_array(f);
    long maxmap = -1;
    if (read_proc("/proc/sys/vm/max_map_count")) maxmap = strtol(procbuf, NULL, 10);
    double limit = now_ns() + FRAG_SETUP_S * 1e9;
    for (size_t i = 0; i < total; i++) {
      if (!(a[i] = C->get(1))) {
        printf("ENOMEM %zu of %zu gets\n", i, total);
        return 0;
      }
      if (i % 256 == 255 && now_ns() > limit) {
        printf("SLOW setup over %d s: %zu of %zu gets done\n", FRAG_SETUP_S, i + 1, total);
        return 0;
      }
    }
    for (size_t i = 0; i < total; i += 2) { /* F free ranges */
      C->free(a[i], 1);
      if (maxmap > 0 && i % 4096 == 4094 && count_maps() >= maxmap - 8) {
        printf("ENOMEM %zu gets and %zu frees (vm.max_map_count = %ld mappings "
               "reached: munmap fails)\n", total, i / 2 + 1, maxmap);
        return 0;
      }
      if (i % 512 == 510 && now_ns() > limit) {
        printf("SLOW setup over %d s: %zu gets, %zu of %zu frees done\n",
               FRAG_SETUP_S, total, i / 2 + 1, f);
        return 0;
      }
    }
    if (maxmap > 0 && count_maps() >= maxmap - 8) {
      printf("ENOMEM %zu gets and %zu frees (vm.max_map_count = %ld mappings "
             "reached: munmap fails)\n", total, f, maxmap);
      return 0;
    }
    for (size_t i = 0; i < f; i++) held[i] = a[2 * i + 1];
    double ov = timer_overhead(), tfree = 0, tpair = 0;
    for (int k = 0; k < FRAG_OPS; k++) {
      size_t j = (size_t)(rng() % f);
      double t0 = now_ns();
      C->free(held[j], 1); /* both neighbours are free: a coalescing free */
      double t1 = now_ns();
      void *p = C->get(1);
      double t2 = now_ns();
      if (!p) {
        printf("ENOMEM %zu gets and %d random operations\n", total, k);
        return 0;
      }
      held[j] = p;
      tfree += t1 - t0 - ov;
      tpair += t2 - t0 - 2 * ov;
    }
    printf("R %.3f %.3f\n", tpair / FRAG_OPS, tfree / FRAG_OPS);
  } else if (strcmp(wl, "threads") == 0) {
    printf("R %.1f\n", threads_rate(n, thread_main));
  } else if (strcmp(wl, "spin") == 0) {
    /* The machine's own scaling: the threads harness with arithmetic in
     * place of get+free (the contender is loaded but never called). */
    printf("R %.1f\n", threads_rate(n, spin_main));
  } else if (strcmp(wl, "isheap") == 0) {
    if (!C->is_heap) {
      printf("NA no such call\n");
      return 0;
    }
    enum { HELD = 16 };
    void *held[HELD];
    for (int i = 0; i < HELD; i++) held[i] = get_or_die(1);
    void *foreign = mmap(NULL, 4 * MBS, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *small = malloc(64);
    static int static_var;
    int stack_var = 0;
    const void **ptrs = calloc(ISHEAP_PTRS, sizeof *ptrs);
    bool *expect = calloc(ISHEAP_PTRS, sizeof *expect);
    if (!ptrs || !expect || !small || foreign == MAP_FAILED) child_fail("setup");
    for (int i = 0; i < ISHEAP_PTRS; i++) {
      uint64_t r = rng();
      if (i % 2 == 0) { /* heap: anywhere in a held megablock */
        ptrs[i] = (char *)held[r % HELD] + (r >> 16) % MBS;
        expect[i] = true;
      } else {
        switch ((r >> 8) % 6) {
        case 0: ptrs[i] = NULL; break;
        case 1: ptrs[i] = &stack_var; break;
        case 2: ptrs[i] = &static_var; break;
        case 3: ptrs[i] = small + (r >> 20) % 64; break;
        case 4: ptrs[i] = (char *)foreign + (r >> 16) % (4 * MBS); break;
        default: ptrs[i] = (void *)(uintptr_t)((r >> 20) & 0x7fffffffffffu); break;
        }
        expect[i] = false;
        for (int h = 0; h < HELD; h++) /* a random address may hit the heap */
          if ((const char *)ptrs[i] >= (char *)held[h] &&
              (const char *)ptrs[i] < (char *)held[h] + MBS)
            expect[i] = true;
      }
    }
    for (int i = 0; i < ISHEAP_PTRS; i++)
      if (C->is_heap(ptrs[i]) != expect[i]) {
        printf("ERR is_heap answered wrong for pointer %d\n", i);
        return 1;
      }
    uint64_t calls = 0;
    volatile unsigned sink = 0;
    double t0 = now_ns(), t;
    do {
      unsigned s = 0;
      for (int i = 0; i < ISHEAP_PTRS; i++) s += C->is_heap(ptrs[i]);
      sink += s;
      calls += ISHEAP_PTRS;
      t = now_ns();
    } while (t - t0 < BUDGET_NS);
    (void)sink;
    printf("R %.3f\n", (t - t0) / (double)calls);
  } else if (strncmp(wl, "oscalls-", 8) == 0) {
    /* n operations after the same setup; run with n = 0 for the baseline.
     * libosmem: osmem_stats deltas; under strace: the syscall counts. */
    const char *k = wl + 8;
    struct osmem_stats s0, s1;
    memset(&s0, 0, sizeof s0);
    memset(&s1, 0, sizeof s1);
    if (strcmp(k, "pooled") == 0) {
      void *p = get_or_die(1);
      C->free(p, 1);
      if (is_osmem(ci)) s0 = stats_now();
      for (size_t i = 0; i < n; i++) {
        p = get_or_die(1);
        C->free(p, 1);
      }
    } else {
      bool t = strcmp(k, "fresh-touched") == 0;
      void **a = ptr_array(n ? n : 1);
      if (is_osmem(ci)) s0 = stats_now();
      for (size_t i = 0; i < n; i++) {
        a[i] = get_or_die(1);
        if (t) touch(a[i], 1);
      }
    }
    if (is_osmem(ci)) s1 = stats_now();
    printf("R %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", s1.os_maps - s0.os_maps,
           s1.os_unmaps - s0.os_unmaps, s1.os_madvise - s0.os_madvise);
  } else {
    printf("ERR unknown workload\n");
    return 1;
  }
  fflush(stdout);
  return 0;
}

/* ================================================================ driver */

enum { ST_OK, ST_NA, ST_ENOMEM, ST_ERR, ST_SKIP, ST_SLOW };
#define MAXV 6
struct result {
  int st;
  int nv;
  double v[MAXV];
  char note[128];
};

static char self_exe[4096];
static bool je_tunable; /* jemalloc needed GLIBC_TUNABLES to load */
#define JE_TUNABLE "glibc.rtld.optional_static_tls=65536"

static void child_env(int c) {
  unsetenv("OSMEM_DECOMMIT"); /* the default contender runs the default */
  if (c == C_TUNED) setenv("OSMEM_DECOMMIT", "never", 1);
  if (c == C_JEMALLOC && je_tunable) {
    const char *old = getenv("GLIBC_TUNABLES");
    char buf[1024];
    if (old && *old)
      snprintf(buf, sizeof buf, "%s:%s", old, JE_TUNABLE);
    else
      snprintf(buf, sizeof buf, "%s", JE_TUNABLE);
    setenv("GLIBC_TUNABLES", buf, 1);
  }
}

/* Runs one child; with strace_out, under `strace -f -c -o strace_out`. */
static struct result run_child(int c, const char *wl, long param,
                               const char *strace_out) {
  struct result r;
  memset(&r, 0, sizeof r);
  r.st = ST_ERR;
  int fd[2];
  if (pipe(fd) != 0) {
    snprintf(r.note, sizeof r.note, "pipe failed");
    return r;
  }
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) {
    close(fd[0]);
    close(fd[1]);
    snprintf(r.note, sizeof r.note, "fork failed");
    return r;
  }
  if (pid == 0) {
    char ps[32];
    snprintf(ps, sizeof ps, "%ld", param);
    child_env(c);
    dup2(fd[1], 1);
    int dn = open("/dev/null", O_WRONLY);
    if (dn >= 0) dup2(dn, 2);
    close(fd[0]);
    close(fd[1]);
    if (strace_out) {
      char *argv[] = {"strace", "-f", "-c", "-U", "name,calls", "-o",
                      (char *)strace_out, "--", self_exe, "--child",
                      (char *)contenders[c].id, (char *)wl, ps, NULL};
      execvp("strace", argv);
    } else {
      char *argv[] = {self_exe, "--child", (char *)contenders[c].id,
                      (char *)wl, ps, NULL};
      execv(self_exe, argv);
    }
    _exit(127);
  }
  close(fd[1]);
  char buf[4096];
  size_t len = 0;
  for (;;) {
    ssize_t k = read(fd[0], buf + len, sizeof buf - 1 - len);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) break;
    len += (size_t)k;
    if (len == sizeof buf - 1) break;
  }
  close(fd[0]);
  buf[len] = 0;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  char *nl = strchr(buf, '\n');
  if (nl) *nl = 0;
  if (strncmp(buf, "R ", 2) == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    char *s = buf + 2, *e;
    r.st = ST_OK;
    while (r.nv < MAXV) {
      double v = strtod(s, &e);
      if (e == s) break;
      r.v[r.nv++] = v;
      s = e;
    }
  } else if (strncmp(buf, "NA", 2) == 0) {
    r.st = ST_NA;
    snprintf(r.note, sizeof r.note, "%.120s", buf[2] ? buf + 3 : "");
  } else if (strncmp(buf, "ENOMEM ", 7) == 0) {
    r.st = ST_ENOMEM;
    snprintf(r.note, sizeof r.note, "%.120s", buf + 7);
  } else if (strncmp(buf, "SLOW ", 5) == 0) {
    r.st = ST_SLOW;
    snprintf(r.note, sizeof r.note, "%.120s", buf + 5);
  } else if (strncmp(buf, "ERR ", 4) == 0) {
    snprintf(r.note, sizeof r.note, "%.120s", buf + 4);
  } else if (WIFSIGNALED(status)) {
    snprintf(r.note, sizeof r.note, "killed by signal %d", WTERMSIG(status));
  } else if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
    snprintf(r.note, sizeof r.note, strace_out ? "strace not runnable" : "exec failed");
  } else {
    snprintf(r.note, sizeof r.note, "exit status %d, no result",
             WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  }
  return r;
}

/* ---- the runs and the figures they give */

#define M(c) (1u << (c))
#define ALL_MAIN (M(C_GLIBC) | M(C_MIMALLOC) | M(C_JEMALLOC) | M(C_MMAP) | M(C_OSMEM))

struct run {
  const char *wl;
  long param;
  unsigned mask;
};
static const struct run runs[] = {
    {"pooled", 0, ALL_MAIN},                                       /* 0 */
    {"pooled-untouched", POOL_PREFILL, ALL_MAIN},                  /* 1 */
    {"pooled-touched", POOL_PREFILL, ALL_MAIN},                    /* 2 */
    {"fresh", FRESH_COUNT, ALL_MAIN},                              /* 3 */
    {"fresh-touched", FRESH_COUNT, ALL_MAIN},                      /* 4 */
    {"free-touched", FRESH_COUNT, ALL_MAIN | M(C_TUNED)},          /* 5 */
    {"batch64", 64, ALL_MAIN},                                     /* 6 */
    {"getn", 2, ALL_MAIN},                                         /* 7 */
    {"getn", 8, ALL_MAIN},                                         /* 8 */
    {"getn", 64, ALL_MAIN},                                        /* 9 */
    {"getn", 512, ALL_MAIN},                                       /* 10 */
    {"rss", RSS_MBLOCKS, ALL_MAIN},                                /* 11 */
    {"frag", 10, ALL_MAIN},                                        /* 12 */
    {"frag", 1000, ALL_MAIN},                                      /* 13 */
    {"frag", 100000, ALL_MAIN},                                    /* 14 */
    {"threads", 1, ALL_MAIN},                                      /* 15 */
    {"threads", 2, ALL_MAIN},                                      /* 16 */
    {"isheap", ISHEAP_PTRS, M(C_MIMALLOC) | M(C_OSMEM)},           /* 17 */
    {"spin", 1, M(C_MMAP)},                                        /* 18 */
    {"spin", 2, M(C_MMAP)},                                        /* 19 */
};
#define NRUNS (int)(sizeof runs / sizeof runs[0])

enum { LOWER, HIGHER, MEMORY, INFO, MACHINE };
struct metric {
  int run, idx;
  const char *key, *title, *unit;
  int kind;
  double scale;
};
static const struct metric metrics[] = {
    {0, 0, "pooled_clean", "pooled get(1)+free, clean (after 1 warm-up pair)", "ns/pair", LOWER, 1},
    {1, 0, "pooled_after_2048_untouched", "pooled get(1)+free, after 2,048 untouched got+freed", "ns/pair", LOWER, 1},
    {2, 0, "pooled_after_2048_touched", "pooled get(1)+free, after 2,048 touched got+freed", "ns/pair", LOWER, 1},
    {3, 0, "fresh_untouched", "fresh get, untouched (1,024 gets)", "ns/MiB", LOWER, 1},
    {4, 0, "fresh_touched_get", "fresh get, touched (get only; touch excluded)", "ns/MiB", LOWER, 1},
    {4, 1, "fresh_touched_touch", "  (touching those, not in the row above)", "ns/MiB", INFO, 1},
    {5, 0, "free_touched_one_by_one", "free touched, one by one (1,024)", "ns/free", LOWER, 1},
    {6, 0, "batch_64_singles", "64 single gets then 64 frees", "ns/MiB", LOWER, 1},
    {7, 0, "getn_free_2", "get(2)+free", "ns/pair", LOWER, 1},
    {8, 0, "getn_free_8", "get(8)+free", "ns/pair", LOWER, 1},
    {9, 0, "getn_free_64", "get(64)+free", "ns/pair", LOWER, 1},
    {10, 0, "getn_free_512", "get(512)+free", "ns/pair", LOWER, 1},
    {12, 0, "frag_10_pair", "fragmented, 10 free ranges: free+get pair", "ns/pair", LOWER, 1},
    {12, 1, "frag_10_free", "fragmented, 10 free ranges: coalescing free", "ns/free", LOWER, 1},
    {13, 0, "frag_1000_pair", "fragmented, 1,000 free ranges: free+get pair", "ns/pair", LOWER, 1},
    {13, 1, "frag_1000_free", "fragmented, 1,000 free ranges: coalescing free", "ns/free", LOWER, 1},
    {14, 0, "frag_100000_pair", "fragmented, 100,000 free ranges: free+get pair", "ns/pair", LOWER, 1},
    {14, 1, "frag_100000_free", "fragmented, 100,000 free ranges: coalescing free", "ns/free", LOWER, 1},
    {15, 0, "threads_1", "1 thread, pooled get+free", "M pairs/s", HIGHER, 1e-6},
    {16, 0, "threads_2", "2 threads, pooled get+free (total)", "M pairs/s", HIGHER, 1e-6},
    {17, 0, "is_heap", "is_heap (50% heap pointers)", "ns/call", LOWER, 1},
    {18, 0, "machine_spin_1", "machine: 1 thread, arithmetic only", "M loops/s", MACHINE, 1e-6},
    {19, 0, "machine_spin_2", "machine: 2 threads, arithmetic only", "M loops/s", MACHINE, 1e-6},
    {11, 0, "rss_maps_added_before_release", "256 MiB touched, all freed: mappings added", "maps lines", MEMORY, 1},
    {11, 1, "rss_kept_before_release", "256 MiB touched, all freed: Rss kept", "MiB", MEMORY, 1.0 / 1024},
    {11, 2, "lazyfree_before_release", "256 MiB touched, all freed: LazyFree", "MiB", MEMORY, 1.0 / 1024},
    {11, 3, "rss_maps_added_after_release", "... after the release call: mappings added", "maps lines", MEMORY, 1},
    {11, 4, "rss_kept_after_release", "... after the release call: Rss kept", "MiB", MEMORY, 1.0 / 1024},
    {11, 5, "lazyfree_after_release", "... after the release call: LazyFree", "MiB", MEMORY, 1.0 / 1024},
};
#define NMETRICS (int)(sizeof metrics / sizeof metrics[0])

static struct result res[NRUNS][NC][REPS];
static int probe_st[NC];
static char probe_note[NC][128];

struct summary {
  int st; /* ST_OK: med/min/max valid */
  double med, min, max;
  int reps;
  char text[200]; /* why not, when st != ST_OK */
};

static int cmpd(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static struct summary summarize(int run, int c, int idx, double scale) {
  struct summary s;
  memset(&s, 0, sizeof s);
  s.st = ST_SKIP;
  if (!(runs[run].mask & M(c))) {
    snprintf(s.text, sizeof s.text, "–");
    return s;
  }
  if (probe_st[c] != ST_OK) {
    s.st = ST_NA;
    snprintf(s.text, sizeof s.text, "n/a (not installed)");
    return s;
  }
  double v[REPS];
  int n = 0;
  const char *err = NULL, *na = NULL, *enomem = NULL, *slow = NULL;
  for (int r = 0; r < REPS; r++) {
    const struct result *x = &res[run][c][r];
    if (x->st == ST_OK && x->nv > idx)
      v[n++] = x->v[idx] * scale;
    else if (x->st == ST_ENOMEM)
      enomem = x->note;
    else if (x->st == ST_SLOW)
      slow = x->note;
    else if (x->st == ST_NA)
      na = x->note;
    else if (x->st == ST_ERR)
      err = x->note;
  }
  if (enomem) {
    s.st = ST_ENOMEM;
    snprintf(s.text, sizeof s.text, "n/a (ENOMEM after %.130s)", enomem);
  } else if (slow) {
    s.st = ST_SLOW;
    snprintf(s.text, sizeof s.text, "n/a (%.140s)", slow);
  } else if (n == 0 && na) {
    s.st = ST_NA;
    snprintf(s.text, sizeof s.text, "n/a (%s)", na);
  } else if (n == 0) {
    s.st = ST_ERR;
    snprintf(s.text, sizeof s.text, "failed (%s)", err ? err : "no result");
  } else {
    qsort(v, (size_t)n, sizeof v[0], cmpd);
    s.st = ST_OK;
    s.reps = n;
    s.min = v[0];
    s.max = v[n - 1];
    s.med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  }
  return s;
}

static void fmtnum(char *b, size_t len, double v) {
  double a = v < 0 ? -v : v;
  if (a >= 100 || v == (double)(long)v)
    snprintf(b, len, "%.0f", v);
  else if (a >= 10)
    snprintf(b, len, "%.1f", v);
  else if (a >= 1)
    snprintf(b, len, "%.2f", v);
  else
    snprintf(b, len, "%.3f", v);
}

static void cell(char *b, size_t len, const struct summary *s) {
  if (s->st != ST_OK) {
    snprintf(b, len, "%s", s->text);
    return;
  }
  char m[32], lo[32], hi[32];
  fmtnum(m, sizeof m, s->med);
  fmtnum(lo, sizeof lo, s->min);
  fmtnum(hi, sizeof hi, s->max);
  snprintf(b, len, "%s (%s–%s)", m, lo, hi);
  if (s->reps < REPS) {
    size_t l = strlen(b);
    snprintf(b + l, len - l, " [%d reps]", s->reps);
  }
}

/* The fastest of the four peers (lowest, or highest for throughput). */
static bool fastest_peer(const struct metric *m, double *best, int *who) {
  bool any = false;
  for (int c = 0; c < NPEERS; c++) {
    struct summary s = summarize(m->run, c, m->idx, m->scale);
    if (s.st != ST_OK) continue;
    if (!any || (m->kind == HIGHER ? s.med > *best : s.med < *best)) {
      *best = s.med;
      *who = c;
    }
    any = true;
  }
  return any;
}

static const struct metric *metric_by_key(const char *key) {
  for (int i = 0; i < NMETRICS; i++)
    if (strcmp(metrics[i].key, key) == 0) return &metrics[i];
  return NULL;
}
static struct summary sum_key(const char *key, int c) {
  const struct metric *m = metric_by_key(key);
  return summarize(m->run, c, m->idx, m->scale);
}

/* ---- OS calls */

static const char *const memcalls[] = {"mmap", "munmap", "mremap", "madvise",
                                       "mprotect", "brk", "mbind", NULL};
struct calls {
  bool ok;
  char why[96];
  long n[8]; /* per memcalls[] */
};

static struct calls strace_counts(int c, const char *wl, long param) {
  struct calls k;
  memset(&k, 0, sizeof k);
  char path[] = "/tmp/bench-peers-strace-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) {
    snprintf(k.why, sizeof k.why, "mkstemp failed");
    return k;
  }
  close(fd);
  struct result r = run_child(c, wl, param, path);
  if (r.st != ST_OK) {
    snprintf(k.why, sizeof k.why, "%.90s", r.st == ST_NA ? "not installed" : r.note);
    unlink(path);
    return k;
  }
  FILE *f = fopen(path, "r");
  char line[256];
  bool seen = false;
  while (f && fgets(line, sizeof line, f)) {
    char name[64];
    long calls;
    if (sscanf(line, "%63s %ld", name, &calls) != 2) continue;
    if (strcmp(name, "total") == 0) seen = true;
    for (int i = 0; memcalls[i]; i++)
      if (strcmp(name, memcalls[i]) == 0) k.n[i] = calls;
  }
  if (f) fclose(f);
  unlink(path);
  k.ok = seen;
  if (!seen) snprintf(k.why, sizeof k.why, "no strace summary");
  return k;
}

struct oscell {
  bool ok;
  double per1000;
  char method[32];
  char detail[400];
};

static bool have_strace;

static struct oscell oscalls(int c, const char *wl, long n) {
  struct oscell o;
  memset(&o, 0, sizeof o);
  if (probe_st[c] != ST_OK) {
    snprintf(o.detail, sizeof o.detail, "n/a (not installed)");
    return o;
  }
  char sdetail[160] = "";
  double sper = -1;
  if (have_strace) {
    struct calls a = strace_counts(c, wl, 0), b = strace_counts(c, wl, n);
    if (a.ok && b.ok) {
      long tot = 0;
      size_t l = 0;
      for (int i = 0; memcalls[i]; i++) {
        long d = b.n[i] - a.n[i];
        tot += d;
        if (d && l < sizeof sdetail)
          l += (size_t)snprintf(sdetail + l, sizeof sdetail - l, "%s%s %.1f",
                                l ? ", " : "", memcalls[i], (double)d * 1000 / (double)n);
      }
      if (!l) snprintf(sdetail, sizeof sdetail, "none");
      sper = (double)tot * 1000 / (double)n;
    } else {
      snprintf(sdetail, sizeof sdetail, "strace failed: %s", a.ok ? b.why : a.why);
    }
  }
  if (is_osmem(c)) {
    struct result r = run_child(c, wl, n, NULL);
    if (r.st != ST_OK || r.nv < 3) {
      snprintf(o.detail, sizeof o.detail, "failed (%s)", r.note);
      return o;
    }
    o.ok = true;
    o.per1000 = (r.v[0] + r.v[1] + r.v[2]) * 1000 / (double)n;
    snprintf(o.method, sizeof o.method, "osmem_stats");
    snprintf(o.detail, sizeof o.detail,
             "os_maps %.1f, os_unmaps %.1f, os_madvise %.1f; strace check: %s%s",
             r.v[0] * 1000 / (double)n, r.v[1] * 1000 / (double)n,
             r.v[2] * 1000 / (double)n, have_strace ? "" : "not run", sdetail);
    if (sper >= 0) {
      size_t l = strlen(o.detail);
      snprintf(o.detail + l, sizeof o.detail - l, " (total %.1f)", sper);
    }
    return o;
  }
  if (!have_strace) {
    snprintf(o.detail, sizeof o.detail, "n/a (strace not installed)");
    return o;
  }
  if (sper < 0) {
    snprintf(o.detail, sizeof o.detail, "n/a (%s)", sdetail);
    return o;
  }
  o.ok = true;
  o.per1000 = sper;
  snprintf(o.method, sizeof o.method, "strace -f -c");
  snprintf(o.detail, sizeof o.detail, "%s", sdetail);
  return o;
}

/* ---- machine facts */

static void cpu_model(char *b, size_t len) {
  snprintf(b, len, "unknown CPU");
  FILE *f = fopen("/proc/cpuinfo", "r");
  char line[512];
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "model name", 10) == 0) {
      char *p = strchr(line, ':');
      if (p) {
        p++;
        while (*p == ' ') p++;
        p[strcspn(p, "\n")] = 0;
        snprintf(b, len, "%s", p);
      }
      break;
    }
  if (f) fclose(f);
}

static void pkg_versions(char *b, size_t len) {
  /* dpkg-query lists the installed packages of those names. */
  snprintf(b, len, "n/a (no dpkg)");
  FILE *p = popen("dpkg-query -W -f '${Package} ${Version} ${db:Status-Abbrev}\\n' "
                  "libc6 'libmimalloc*' 'libjemalloc*' 2>/dev/null", "r");
  if (!p) return;
  char line[256];
  size_t l = 0;
  b[0] = 0;
  while (fgets(line, sizeof line, p)) {
    char pkg[96], ver[96], st[16];
    if (sscanf(line, "%95s %95s %15s", pkg, ver, st) != 3 || st[1] != 'i') continue;
    if (strstr(pkg, "-dev") || strstr(pkg, "-dbg")) continue;
    if (l < len)
      l += (size_t)snprintf(b + l, len - l, "%s%s %s", l ? ", " : "", pkg, ver);
  }
  pclose(p);
  if (!l) snprintf(b, len, "n/a");
}

static void read_line_file(const char *path, char *b, size_t len) {
  snprintf(b, len, "n/a");
  FILE *f = fopen(path, "r");
  if (f && fgets(b, (int)len, f)) b[strcspn(b, "\n")] = 0;
  if (f) fclose(f);
}

static bool in_path(const char *prog) {
  const char *path = getenv("PATH");
  if (!path) path = "/usr/bin:/bin";
  char buf[4096];
  for (const char *s = path; *s;) {
    size_t n = strcspn(s, ":");
    snprintf(buf, sizeof buf, "%.*s/%s", (int)n, s, prog);
    if (access(buf, X_OK) == 0) return true;
    s += n;
    if (*s) s++;
  }
  return false;
}

/* ---- plots */

static void dat_triple(FILE *f, const struct summary *s) {
  if (s->st == ST_OK)
    fprintf(f, " %g %g %g", s->med, s->min, s->max);
  else
    fprintf(f, " NaN NaN NaN");
}
static void dat_header(FILE *f, const char *first) {
  fprintf(f, "%s", first);
  for (int c = 0; c <= C_OSMEM; c++) fprintf(f, " \"%s\" min max", cshort[c]);
  fprintf(f, "\n");
}

static bool write_plot_data(const char *dir) {
  char path[4096];
  FILE *f;
  static const char *lat[][2] = {
      {"pooled_clean", "pooled, clean"},
      {"pooled_after_2048_untouched", "pooled, after untouched"},
      {"pooled_after_2048_touched", "pooled, after touched"},
      {"fresh_untouched", "fresh, untouched"},
      {"fresh_touched_get", "fresh, touched (get)"},
      {"free_touched_one_by_one", "free touched 1 by 1"},
      {"batch_64_singles", "64 gets + 64 frees (per MiB)"}};
  snprintf(path, sizeof path, "%s/peers-latency.dat", dir);
  if (!(f = fopen(path, "w"))) return false;
  dat_header(f, "workload");
  for (size_t i = 0; i < sizeof lat / sizeof lat[0]; i++) {
    fprintf(f, "\"%s\"", lat[i][1]);
    for (int c = 0; c <= C_OSMEM; c++) {
      struct summary s = sum_key(lat[i][0], c);
      dat_triple(f, &s);
    }
    fprintf(f, "\n");
  }
  fclose(f);

  static const char *getn[] = {"getn_free_2", "getn_free_8", "getn_free_64",
                               "getn_free_512"};
  static const int ns[] = {2, 8, 64, 512};
  snprintf(path, sizeof path, "%s/peers-getn.dat", dir);
  if (!(f = fopen(path, "w"))) return false;
  dat_header(f, "n");
  for (int i = 0; i < 4; i++) {
    fprintf(f, "%d", ns[i]);
    for (int c = 0; c <= C_OSMEM; c++) {
      struct summary s = sum_key(getn[i], c);
      dat_triple(f, &s);
    }
    fprintf(f, "\n");
  }
  fclose(f);

  static const char *fr[][2] = {{"frag_10_pair", "frag_10_free"},
                                {"frag_1000_pair", "frag_1000_free"},
                                {"frag_100000_pair", "frag_100000_free"}};
  static const int fs[] = {10, 1000, 100000};
  for (int which = 0; which < 2; which++) {
    snprintf(path, sizeof path, "%s/peers-frag-%s.dat", dir, which ? "free" : "pair");
    if (!(f = fopen(path, "w"))) return false;
    dat_header(f, "ranges");
    for (int i = 0; i < 3; i++) {
      fprintf(f, "%d", fs[i]);
      for (int c = 0; c <= C_OSMEM; c++) {
        struct summary s = sum_key(fr[i][which], c);
        dat_triple(f, &s);
      }
      fprintf(f, "\n");
    }
    fclose(f);
  }

  snprintf(path, sizeof path, "%s/peers-threads.dat", dir);
  if (!(f = fopen(path, "w"))) return false;
  fprintf(f, "contender \"1 thread\" min max \"2 threads\" min max\n");
  for (int c = 0; c <= C_OSMEM; c++) {
    fprintf(f, "\"%s\"", cshort[c]);
    struct summary a = sum_key("threads_1", c), b = sum_key("threads_2", c);
    dat_triple(f, &a);
    dat_triple(f, &b);
    fprintf(f, "\n");
  }
  fclose(f);
  return true;
}

static void run_gnuplot(const char *script, const char *datadir,
                        const char *outdir, char *note, size_t len) {
  if (!outdir) outdir = ".";
  if (!script) {
    snprintf(note, len, "Plots not made: no --plot-script given.");
    return;
  }
  if (!in_path("gnuplot")) {
    snprintf(note, len, "Plots skipped: gnuplot is not installed.");
    return;
  }
  if (!write_plot_data(datadir)) {
    snprintf(note, len, "Plots skipped: could not write data to %s.", datadir);
    return;
  }
  char expr[8192], logp[4096];
  snprintf(expr, sizeof expr, "datadir='%s'; outdir='%s'", datadir, outdir);
  snprintf(logp, sizeof logp, "%s/peers-gnuplot.log", datadir);
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    int lf = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (lf >= 0) {
      dup2(lf, 1);
      dup2(lf, 2);
    }
    char *argv[] = {"gnuplot", "-e", expr, (char *)script, NULL};
    execvp("gnuplot", argv);
    _exit(127);
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
      WEXITSTATUS(status) != 0)
    snprintf(note, len, "gnuplot failed: see %s.", logp);
  else
    note[0] = 0;
}

/* ---- the report */

struct target {
  const char *what;
  char figure[160];
  int met; /* 1 met, 0 missed, -1 n/a */
};

static int driver(const char *outdir, const char *script, const char *datadir) {
  double t_start = now_ns();
  ssize_t l = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
  if (l <= 0) return 1;
  self_exe[l] = 0;
  have_strace = in_path("strace");

  /* Which contenders load at all (jemalloc may need static TLS room). */
  for (int c = 0; c < NC; c++) {
    struct result r = run_child(c, "probe", 0, NULL);
    if (c == C_JEMALLOC && r.st != ST_OK) {
      je_tunable = true;
      struct result r2 = run_child(c, "probe", 0, NULL);
      if (r2.st == ST_OK)
        r = r2;
      else
        je_tunable = false;
    }
    probe_st[c] = r.st;
    snprintf(probe_note[c], sizeof probe_note[c], "%s", r.note);
  }

  /* REPS repetitions; in each, every run for every contender, the
   * contenders' order rotated by one from one repetition to the next. */
  for (int rep = 0; rep < REPS; rep++)
    for (int w = 0; w < NRUNS; w++)
      for (int k = 0; k < NC; k++) {
        int c = (k + rep) % NC;
        if (!(runs[w].mask & M(c)) || probe_st[c] != ST_OK) {
          res[w][c][rep].st = ST_SKIP;
          continue;
        }
        if (rep > 0 && (res[w][c][0].st == ST_ENOMEM || res[w][c][0].st == ST_SLOW)) {
          res[w][c][rep].st = ST_SKIP; /* it will not get there this time either */
          continue;
        }
        res[w][c][rep] = run_child(c, runs[w].wl, runs[w].param, NULL);
      }

  /* OS calls: deterministic counts, measured once. */
  static const char *oswl[] = {"oscalls-pooled", "oscalls-fresh",
                               "oscalls-fresh-touched"};
  static const char *ostitle[] = {"pooled get(1)+free pair",
                                  "fresh get, untouched", "fresh get, touched"};
  static const long osn[] = {OSCALL_POOLED, OSCALL_FRESH, OSCALL_FRESH};
  static struct oscell osc[3][NC];
  for (int w = 0; w < 3; w++)
    for (int c = 0; c <= C_OSMEM; c++) osc[w][c] = oscalls(c, oswl[w], osn[w]);

  char plotnote[4600] = "";
  run_gnuplot(script, datadir, outdir, plotnote, sizeof plotnote);

  /* ---- the document */
  char *doc = NULL;
  size_t doclen = 0;
  FILE *o = open_memstream(&doc, &doclen);
  if (!o) return 1;
  char cpu[256], pk[512], thp[128], date[64], elapsed[32];
  struct utsname u;
  uname(&u);
  cpu_model(cpu, sizeof cpu);
  pkg_versions(pk, sizeof pk);
  read_line_file("/sys/kernel/mm/transparent_hugepage/enabled", thp, sizeof thp);
  time_t now = time(NULL);
  strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&now));

  fprintf(o, "# libosmem and its peers: megablock benchmark\n\n");
  fprintf(o, "Command: `make -C build bench` (runs `bench/bench-peers`).\n\n");
  fprintf(o, "- Machine: %s, %ld cores, kernel %s (%s), THP %s\n", cpu,
          sysconf(_SC_NPROCESSORS_ONLN), u.release, u.machine, thp);
  fprintf(o, "- Libraries: glibc %s; packages: %s; libosmem %s (default configuration; "
             "megablock %zu bytes)\n",
          gnu_get_libc_version(), pk, osmem_version(), (size_t)MBS);
  fprintf(o, "- Date: %s\n", date);
  fprintf(o, "- Method: every figure is the median of %d runs, each in its own "
             "process, with the range (min–max) in brackets; contenders "
             "rotated from one repetition to the next. Timed loops run %.0f ms.%s\n\n",
          REPS, BUDGET_NS / 1e6,
          je_tunable ? " jemalloc was loaded with GLIBC_TUNABLES=" JE_TUNABLE
                       " in its processes (dlopen fails without: static TLS)."
                     : "");
  for (int c = 0; c < NC; c++)
    if (probe_st[c] != ST_OK)
      fprintf(o, "- %s: n/a (not installed: %s)\n", clabel[c], probe_note[c]);

  fprintf(o, "\n## Latency and throughput\n\n");
  fprintf(o, "| workload | unit |");
  for (int c = 0; c <= C_OSMEM; c++) fprintf(o, " %s |", clabel[c]);
  fprintf(o, " libosmem / fastest other | %s |\n|---|---|", clabel[C_TUNED]);
  for (int c = 0; c <= C_OSMEM + 2; c++) fprintf(o, "---|");
  fprintf(o, "\n");
  for (int i = 0; i < NMETRICS; i++) {
    const struct metric *m = &metrics[i];
    if (m->kind == MEMORY || m->kind == MACHINE) continue;
    char b[256];
    fprintf(o, "| %s | %s |", m->title, m->unit);
    for (int c = 0; c <= C_OSMEM; c++) {
      struct summary s = summarize(m->run, c, m->idx, m->scale);
      cell(b, sizeof b, &s);
      fprintf(o, " %s |", b);
    }
    double best = 0;
    int who = -1;
    struct summary me = summarize(m->run, C_OSMEM, m->idx, m->scale);
    if (m->kind != INFO && me.st == ST_OK && fastest_peer(m, &best, &who) && best > 0) {
      char r[32];
      fmtnum(r, sizeof r, me.med / best);
      fprintf(o, " %s (vs %s) |", r, cshort[who]);
    } else
      fprintf(o, " – |");
    struct summary t = summarize(m->run, C_TUNED, m->idx, m->scale);
    cell(b, sizeof b, &t);
    fprintf(o, " %s |\n", b);
  }
  /* the thread scaling row */
  fprintf(o, "| 2 threads / 1 thread | ratio |");
  for (int c = 0; c <= C_OSMEM; c++) {
    struct summary a = sum_key("threads_1", c), b2 = sum_key("threads_2", c);
    if (a.st == ST_OK && b2.st == ST_OK && a.med > 0)
      fprintf(o, " %.2f |", b2.med / a.med);
    else
      fprintf(o, " %s |", a.st == ST_OK ? b2.text : a.text);
  }
  fprintf(o, " – | – |\n\n");
  {
    struct summary a = sum_key("machine_spin_1", C_MMAP), b2 = sum_key("machine_spin_2", C_MMAP);
    if (a.st == ST_OK && b2.st == ST_OK && a.med > 0) {
      char ca[256], cb[256];
      cell(ca, sizeof ca, &a);
      cell(cb, sizeof cb, &b2);
      fprintf(o, "Machine baseline for the thread rows: the same harness with an "
                 "arithmetic loop in place of get+free runs %s M loops/s on 1 thread "
                 "and %s on 2, a ratio of %.2f: that is as far as this machine "
                 "scales from 1 to 2 threads.\n\n", ca, cb, b2.med / a.med);
    }
    double dm[REPS], tm[REPS];
    int nd = 0, nt2 = 0;
    for (int r = 0; r < REPS; r++) {
      if (res[5][C_OSMEM][r].st == ST_OK && res[5][C_OSMEM][r].nv > 1) dm[nd++] = res[5][C_OSMEM][r].v[1];
      if (res[5][C_TUNED][r].st == ST_OK && res[5][C_TUNED][r].nv > 1) tm[nt2++] = res[5][C_TUNED][r].v[1];
    }
    if (nd) {
      qsort(dm, (size_t)nd, sizeof dm[0], cmpd);
      fprintf(o, "During the 1,024 touched one-by-one frees libosmem made %.0f madvise "
                 "calls (median, from osmem_stats)", dm[nd / 2]);
      if (nt2) {
        qsort(tm, (size_t)nt2, sizeof tm[0], cmpd);
        fprintf(o, "; tuned with OSMEM_DECOMMIT=never, %.0f", tm[nt2 / 2]);
      }
      fprintf(o, ".\n\n");
    }
  }
  fprintf(o, "For throughput rows (M pairs/s) higher is better, so the ratio is "
             "libosmem / highest other. The tuned column is libosmem with "
             "OSMEM_DECOMMIT=never in its environment; it is never compared with "
             "the peers.\n");

  fprintf(o, "\n## Memory after getting 256 MiB (256 single megablocks, touched) and "
             "freeing it all\n\nDifferences from the process's start (lines of "
             "/proc/self/maps, Rss and LazyFree from /proc/self/smaps_rollup), before "
             "and after the contender's release call (glibc malloc_trim(0), "
             "mimalloc mi_collect(true), jemalloc arena.4096.purge, libosmem "
             "osmem_release_free_memory(); mmap+trim has none).\n\n");
  fprintf(o, "| figure | unit |");
  for (int c = 0; c <= C_OSMEM; c++) fprintf(o, " %s |", clabel[c]);
  fprintf(o, "\n|---|---|");
  for (int c = 0; c <= C_OSMEM; c++) fprintf(o, "---|");
  fprintf(o, "\n");
  for (int i = 0; i < NMETRICS; i++) {
    const struct metric *m = &metrics[i];
    if (m->kind != MEMORY) continue;
    fprintf(o, "| %s | %s |", m->title, m->unit);
    for (int c = 0; c <= C_OSMEM; c++) {
      char b[256];
      struct summary s = summarize(m->run, c, m->idx, m->scale);
      cell(b, sizeof b, &s);
      fprintf(o, " %s |", b);
    }
    fprintf(o, "\n");
  }

  fprintf(o, "\n## OS calls per 1,000 operations\n\nMemory system calls (mmap, "
             "munmap, mremap, madvise, mprotect, brk, mbind) per 1,000 operations, "
             "counted once (they do not vary run to run): libosmem from "
             "osmem_stats() deltas around the operations (os_maps + os_unmaps + "
             "os_madvise), checked against strace; the others from `strace -f -c` "
             "on the child, the run with 0 operations subtracted from the run with "
             "N (N = %d pairs, %d fresh gets).\n\n",
          OSCALL_POOLED, OSCALL_FRESH);
  fprintf(o, "| workload | contender | method | calls / 1,000 ops | detail (per 1,000 ops) |\n"
             "|---|---|---|---|---|\n");
  for (int w = 0; w < 3; w++)
    for (int c = 0; c <= C_OSMEM; c++) {
      char b[32] = "n/a";
      if (osc[w][c].ok) fmtnum(b, sizeof b, osc[w][c].per1000);
      fprintf(o, "| %s | %s | %s | %s | %s |\n", ostitle[w], clabel[c],
              osc[w][c].ok ? osc[w][c].method : "–", b, osc[w][c].detail);
    }

  /* ---- targets */
  struct target tg[24];
  int nt = 0;
  static const char *ratio_targets[][3] = {
      {"pooled_clean", "pooled get+free (clean) <= 1/10 of the fastest other", "0.1"},
      {"pooled_after_2048_untouched", "pooled get+free (after 2,048 untouched) <= 1/10 of the fastest other", "0.1"},
      {"pooled_after_2048_touched", "pooled get+free (after 2,048 touched) <= 1/10 of the fastest other", "0.1"},
      {"fresh_untouched", "fresh untouched get <= 1/50 of the fastest other", "0.02"},
      {"batch_64_singles", "64 singles then 64 frees <= 1/5 of the fastest other", "0.2"},
      {"getn_free_2", "get(2)+free <= 1/5 of the fastest other", "0.2"},
      {"getn_free_8", "get(8)+free <= 1/5 of the fastest other", "0.2"},
      {"getn_free_64", "get(64)+free <= 1/5 of the fastest other", "0.2"},
      {"getn_free_512", "get(512)+free <= 1/5 of the fastest other", "0.2"},
  };
  for (size_t i = 0; i < sizeof ratio_targets / sizeof ratio_targets[0]; i++) {
    const struct metric *m = metric_by_key(ratio_targets[i][0]);
    struct target *t = &tg[nt++];
    t->what = ratio_targets[i][1];
    double lim = strtod(ratio_targets[i][2], NULL), best = 0;
    int who = -1;
    struct summary me = summarize(m->run, C_OSMEM, m->idx, m->scale);
    if (me.st != ST_OK || !fastest_peer(m, &best, &who) || best <= 0) {
      t->met = -1;
      snprintf(t->figure, sizeof t->figure, "n/a");
      continue;
    }
    double r = me.med / best;
    snprintf(t->figure, sizeof t->figure, "%.4f (libosmem %.1f ns vs %s %.1f ns)", r,
             me.med, cshort[who], best);
    t->met = r <= lim;
  }
  { /* touched one-by-one free vs libosmem's own cost with decommit off */
    struct target *t = &tg[nt++];
    t->what = "touched one-by-one free <= 3x libosmem with decommit off (tuned)";
    struct summary a = sum_key("free_touched_one_by_one", C_OSMEM),
                   b = sum_key("free_touched_one_by_one", C_TUNED);
    bool honoured = true;
    for (int r = 0; r < REPS; r++)
      if (res[5][C_TUNED][r].st == ST_OK && res[5][C_TUNED][r].v[1] > 0) honoured = false;
    if (a.st != ST_OK || b.st != ST_OK || b.med <= 0) {
      t->met = -1;
      snprintf(t->figure, sizeof t->figure, "n/a");
    } else {
      snprintf(t->figure, sizeof t->figure, "%.2fx (%.1f ns vs %.1f ns)%s",
               a.med / b.med, a.med, b.med,
               honoured ? "" : "; OSMEM_DECOMMIT=never NOT honoured by this build "
                               "(madvise calls seen)");
      t->met = honoured ? a.med / b.med <= 3 : -1;
    }
  }
  for (int which = 0; which < 2; which++) {
    struct target *t = &tg[nt++];
    t->what = which ? "fragmentation: coalescing free at 100,000 ranges <= 2x at 10"
                    : "fragmentation: free+get pair at 100,000 ranges <= 2x at 10";
    struct summary a = sum_key(which ? "frag_100000_free" : "frag_100000_pair", C_OSMEM),
                   b = sum_key(which ? "frag_10_free" : "frag_10_pair", C_OSMEM);
    if (a.st != ST_OK || b.st != ST_OK || b.med <= 0) {
      t->met = -1;
      snprintf(t->figure, sizeof t->figure, "n/a");
    } else {
      snprintf(t->figure, sizeof t->figure, "%.2fx (%.1f ns vs %.1f ns)",
               a.med / b.med, a.med, b.med);
      t->met = a.med / b.med <= 2;
    }
  }
  { /* threads */
    struct target *t = &tg[nt++];
    t->what = "2 threads >= 1.8x 1 thread, and above every other contender";
    struct summary a = sum_key("threads_1", C_OSMEM), b = sum_key("threads_2", C_OSMEM);
    double best = 0;
    int who = -1;
    if (a.st != ST_OK || b.st != ST_OK || a.med <= 0) {
      t->met = -1;
      snprintf(t->figure, sizeof t->figure, "n/a");
    } else {
      bool any = fastest_peer(metric_by_key("threads_2"), &best, &who);
      snprintf(t->figure, sizeof t->figure,
               "%.2fx (%.1f vs %.1f M pairs/s); best other at 2 threads: %s %.1f",
               b.med / a.med, b.med, a.med, any ? cshort[who] : "none", best);
      t->met = b.med / a.med >= 1.8 && (!any || b.med > best);
    }
  }
  { /* RSS */
    struct target *t = &tg[nt++];
    t->what = "Rss after free-all + release within 1 MiB of start";
    struct summary a = sum_key("rss_kept_after_release", C_OSMEM);
    if (a.st != ST_OK) {
      t->met = -1;
      snprintf(t->figure, sizeof t->figure, "n/a");
    } else {
      snprintf(t->figure, sizeof t->figure, "%+.2f MiB", a.med);
      t->met = a.med <= 1.0;
    }
  }
  { /* is_heap */
    struct target *t = &tg[nt++];
    t->what = "osmem_is_heap no slower than mi_is_in_heap_region";
    struct summary a = sum_key("is_heap", C_OSMEM), b = sum_key("is_heap", C_MIMALLOC);
    if (a.st != ST_OK || b.st != ST_OK) {
      t->met = -1;
      snprintf(t->figure, sizeof t->figure, "n/a (%.150s)", a.st != ST_OK ? a.text : b.text);
    } else {
      snprintf(t->figure, sizeof t->figure, "%.2f ns vs %.2f ns", a.med, b.med);
      t->met = a.med <= b.med;
    }
  }
  fprintf(o, "\n## Targets\n\n```\n");
  int met = 0, missed = 0;
  for (int i = 0; i < nt; i++) {
    const char *v = tg[i].met == 1 ? "met" : tg[i].met == 0 ? "MISSED" : "n/a";
    met += tg[i].met == 1;
    missed += tg[i].met == 0;
    fprintf(o, "%-7s %s: %s\n", v, tg[i].what, tg[i].figure);
  }
  fprintf(o, "%d met, %d missed, %d n/a\n```\n", met, missed, nt - met - missed);

  snprintf(elapsed, sizeof elapsed, "%.0f", (now_ns() - t_start) / 1e9);
  fprintf(o, "\n%s%sThe run took %s s.\n", plotnote, plotnote[0] ? " " : "", elapsed);
  fclose(o);

  fputs(doc, stdout);
  fflush(stdout);
  if (outdir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/results.md", outdir);
    FILE *f = fopen(path, "w");
    if (f) {
      fputs(doc, f);
      fclose(f);
    }
    snprintf(path, sizeof path, "%s/results.csv", outdir);
    f = fopen(path, "w");
    if (f) {
      fprintf(f, "workload,contender,unit,median,min,max,reps\n");
      for (int i = 0; i < NMETRICS; i++)
        for (int c = 0; c < NC; c++) {
          const struct metric *m = &metrics[i];
          if (!(runs[m->run].mask & M(c))) continue;
          struct summary s = summarize(m->run, c, m->idx, m->scale);
          const char *who = m->kind == MACHINE ? "none" : contenders[c].id;
          if (s.st == ST_OK)
            fprintf(f, "%s,%s,%s,%g,%g,%g,%d\n", m->key, who, m->unit, s.med, s.min,
                    s.max, s.reps);
          else
            fprintf(f, "%s,%s,%s,NA,NA,NA,0\n", m->key, who, m->unit);
        }
      for (int w = 0; w < 3; w++)
        for (int c = 0; c <= C_OSMEM; c++) {
          if (osc[w][c].ok)
            fprintf(f, "oscalls_%s,%s,calls/1000 ops (%s),%g,%g,%g,1\n", oswl[w] + 8,
                    contenders[c].id, osc[w][c].method, osc[w][c].per1000,
                    osc[w][c].per1000, osc[w][c].per1000);
          else
            fprintf(f, "oscalls_%s,%s,calls/1000 ops,NA,NA,NA,0\n", oswl[w] + 8,
                    contenders[c].id);
        }
      fclose(f);
    }
  }
  free(doc);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 5 && strcmp(argv[1], "--child") == 0)
    return child_main(argv[2], argv[3], strtol(argv[4], NULL, 10));
  const char *out = NULL, *script = NULL, *data = ".";
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
      out = argv[++i];
    else if (strcmp(argv[i], "--plot-script") == 0 && i + 1 < argc)
      script = argv[++i];
    else if (strcmp(argv[i], "--plot-data") == 0 && i + 1 < argc)
      data = argv[++i];
    else {
      fprintf(stderr,
              "usage: %s [--out DIR] [--plot-script plot.gp] [--plot-data DIR]\n",
              argv[0]);
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  return driver(out, script, data);
}

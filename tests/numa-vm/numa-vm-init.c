/*
 * The NUMA checks that need more than one node, run as /init of a small
 * qemu VM (tests/numa-vm/run.sh boots it; see README.md there).
 *
 * As PID 1 it mounts /proc, /sys and /dev, reads the topology to test from
 * the kernel command line (osmem.topology=two|sparse|restricted), and runs
 * the checks in child processes that re-execute this program with
 * `--checks MODE`: libnuma reads the topology in a constructor before main,
 * and a cpuset or a memory policy must be in place before the program
 * starts. It relays the children's lines to the console, counts them, and
 * closes with "N passed, N failed" before powering the VM off.
 *
 * Lines: "PASS mode.name", "FAIL mode.name: why", "PAGES mode.name: node0=N
 * node1=N ..." (pages of a touched range per node, from move_pages), and
 * "INFO ..." for facts worth seeing. The library never prints; only this
 * program does.
 *
 * Calls the library may not define yet are weak references: a missing one
 * makes its checks FAIL with "not in the library" instead of breaking the
 * link (run.sh links the whole archive, so a defined one is always found).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <numaif.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "osmem.h"

#pragma weak osmem_set_numa_policy
#pragma weak osmem_numa_bitmap
#pragma weak osmem_numa_node_memory
#pragma weak osmem_numa_distance

/* Mode flags get_mempolicy may add to the mode (linux/mempolicy.h, which
 * clashes with numaif.h). */
#ifndef MPOL_F_STATIC_NODES
#define MPOL_F_STATIC_NODES (1 << 15)
#endif
#ifndef MPOL_F_RELATIVE_NODES
#define MPOL_F_RELATIVE_NODES (1 << 14)
#endif
#ifndef MPOL_F_NUMA_BALANCING
#define MPOL_F_NUMA_BALANCING (1 << 13)
#endif
#define MODE_FLAGS \
  (MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES | MPOL_F_NUMA_BALANCING)

#define MB ((size_t)1 << 20)
#define MAX_SHOWN_NODES 16   /* nodes a page count can name */
#define POLICY_BITS 1024     /* get_mempolicy mask size (kernel MAX_NUMNODES) */
#define LONG_BITS (8 * sizeof(unsigned long))
#define RUN_DEADLINE_S 150   /* one checks process, guest seconds */

static const char *mode = "init"; /* prefix of every check name */
static size_t page;

/* ------------------------------------------------------------ reporting */

static void pass(const char *name) { printf("PASS %s.%s\n", mode, name); }

static void vfail(const char *name, const char *fmt, va_list ap) {
  char why[512];
  vsnprintf(why, sizeof why, fmt, ap);
  printf("FAIL %s.%s: %s\n", mode, name, why);
}

static void fail(const char *name, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfail(name, fmt, ap);
  va_end(ap);
}

/* PASS when ok, else FAIL with the formatted reason. Returns ok. */
static bool check(bool ok, const char *name, const char *fmt, ...) {
  if (ok) {
    pass(name);
  } else {
    va_list ap;
    va_start(ap, fmt);
    vfail(name, fmt, ap);
    va_end(ap);
  }
  return ok;
}

static bool missing(const void *fn, const char *call, const char *name) {
  if (fn) return false;
  fail(name, "%s is not in the library (not implemented yet)", call);
  return true;
}

/* ---------------------------------------------------------------- sysfs */

static bool read_file(const char *path, char *buf, size_t len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t got = read(fd, buf, len - 1);
  close(fd);
  if (got < 0) return false;
  buf[got] = '\0';
  return true;
}

static bool write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t len = (ssize_t)strlen(text);
  bool ok = write(fd, text, (size_t)len) == len;
  return close(fd) == 0 && ok;
}

/* A field of /sys/devices/system/node/nodeN/meminfo, in bytes; 0 if none. */
static uint64_t node_meminfo(unsigned node, const char *field) {
  char path[96], buf[4096], key[64];
  snprintf(path, sizeof path, "/sys/devices/system/node/node%u/meminfo", node);
  if (!read_file(path, buf, sizeof buf)) return 0;
  snprintf(key, sizeof key, " %s:", field);
  const char *at = strstr(buf, key);
  return at ? strtoull(at + strlen(key), NULL, 10) * 1024 : 0;
}

/* Distance from `from` to the `index`-th online node, from sysfs; -1 if
 * unknown. */
static int sysfs_distance(unsigned from, unsigned index) {
  char path[96], buf[1024];
  snprintf(path, sizeof path, "/sys/devices/system/node/node%u/distance", from);
  if (!read_file(path, buf, sizeof buf)) return -1;
  char *s = buf, *end;
  for (unsigned i = 0;; i++) {
    long d = strtol(s, &end, 10);
    if (end == s) return -1;
    if (i == index) return (int)d;
    s = end;
  }
}

/* Node ids that exist in sysfs (online, with or without memory). */
static unsigned sysfs_nodes(unsigned *ids, unsigned max) {
  unsigned n = 0;
  for (unsigned node = 0; node < 64 && n < max; node++) {
    char path[64];
    struct stat st;
    snprintf(path, sizeof path, "/sys/devices/system/node/node%u", node);
    if (stat(path, &st) == 0) ids[n++] = node;
  }
  return n;
}

/* ------------------------------------------------------- page placement */

struct counts {
  unsigned long node[MAX_SHOWN_NODES];
  unsigned long elsewhere; /* on a node >= MAX_SHOWN_NODES */
  unsigned long absent;    /* not present (or another error) */
  unsigned long total;
};

static void touch(void *p, size_t bytes) {
  for (size_t off = 0; off < bytes; off += page) ((volatile char *)p)[off] = 1;
}

/* Where each page of [p, p + bytes) lives, added to *c. */
static void count_pages(void *p, size_t bytes, struct counts *c) {
  enum { BATCH = 1024 };
  void *pages[BATCH];
  int status[BATCH];
  for (size_t off = 0; off < bytes;) {
    unsigned long n = 0;
    for (; n < BATCH && off < bytes; n++, off += page)
      pages[n] = (char *)p + off;
    long r = move_pages(0, n, pages, NULL, status, 0);
    for (unsigned long i = 0; i < n; i++) {
      int s = r == 0 ? status[i] : -1;
      if (s < 0) c->absent++;
      else if (s < MAX_SHOWN_NODES) c->node[s]++;
      else c->elsewhere++;
    }
    c->total += n;
  }
}

static void print_pages(const char *name, const struct counts *c) {
  unsigned ids[MAX_SHOWN_NODES];
  unsigned n = sysfs_nodes(ids, MAX_SHOWN_NODES);
  printf("PAGES %s.%s:", mode, name);
  for (unsigned i = 0; i < n; i++)
    if (ids[i] < MAX_SHOWN_NODES) printf(" node%u=%lu", ids[i], c->node[ids[i]]);
  if (c->elsewhere) printf(" other=%lu", c->elsewhere);
  if (c->absent) printf(" absent=%lu", c->absent);
  printf(" (of %lu)\n", c->total);
}

static bool all_on(const struct counts *c, unsigned node) {
  return node < MAX_SHOWN_NODES && c->total > 0 && c->node[node] == c->total;
}

/* Touches n megablocks at p, prints their page counts and checks that all
 * pages are on `node`. */
static bool check_placed(const char *name, void *p, size_t n, unsigned node) {
  struct counts c = {0};
  touch(p, n * MB);
  count_pages(p, n * MB, &c);
  print_pages(name, &c);
  return check(all_on(&c, node), name, "%lu of %lu pages on node %u",
               node < MAX_SHOWN_NODES ? c.node[node] : 0, c.total, node);
}

/* osmem_get_mblocks_on_node(n, node), touched and checked page by page. */
static void *get_placed(const char *name, size_t n, unsigned node) {
  errno = 0;
  void *p = osmem_get_mblocks_on_node(n, node);
  if (!p) {
    fail(name, "osmem_get_mblocks_on_node(%zu, %u) = NULL, errno %d (%s)", n,
         node, errno, strerror(errno));
    return NULL;
  }
  check_placed(name, p, n, node);
  return p;
}

/* The policy of the range at p: mode (flags removed) and nodes as a mask of
 * the first 64. Returns 0 or errno. */
static int policy_of(void *p, int *mpol, uint64_t *nodes) {
  unsigned long mask[POLICY_BITS / LONG_BITS] = {0};
  if (get_mempolicy(mpol, mask, POLICY_BITS, p, MPOL_F_ADDR) != 0) return errno;
  *mpol &= ~MODE_FLAGS;
  *nodes = (uint64_t)mask[0];
  return 0;
}

static const char *mpol_name(int m) {
  static const char *names[] = {"MPOL_DEFAULT", "MPOL_PREFERRED", "MPOL_BIND",
                                "MPOL_INTERLEAVE", "MPOL_LOCAL",
                                "MPOL_PREFERRED_MANY"};
  return m >= 0 && m < 6 ? names[m] : "MPOL_?";
}

static bool check_policy(const char *name, void *p, int want, uint64_t nodes) {
  int got = -1;
  uint64_t mask = 0;
  int err = policy_of(p, &got, &mask);
  if (err) {
    fail(name, "get_mempolicy(MPOL_F_ADDR): %s", strerror(err));
    return false;
  }
  return check(got == want && mask == nodes, name,
               "read back %s nodes 0x%" PRIx64 ", want %s nodes 0x%" PRIx64,
               mpol_name(got), mask, mpol_name(want), nodes);
}

static struct osmem_stats stats_now(void) {
  struct osmem_stats s;
  osmem_stats(&s);
  return s;
}

static bool same_allocation(const struct osmem_stats *a,
                            const struct osmem_stats *b) {
  return a->mblocks_in_use == b->mblocks_in_use &&
         a->mblocks_pooled == b->mblocks_pooled &&
         a->bytes_mapped == b->bytes_mapped && a->os_maps == b->os_maps;
}

/* A get on a node the process may not use: NULL, EINVAL, nothing allocated. */
static void check_get_refused(const char *name, size_t n, unsigned node) {
  struct osmem_stats before = stats_now();
  errno = 0;
  void *p = osmem_get_mblocks_on_node(n, node);
  int err = errno;
  struct osmem_stats after = stats_now();
  if (p) {
    fail(name, "osmem_get_mblocks_on_node(%zu, %u) returned %p", n, node, p);
    osmem_free_mblocks(p, n);
    return;
  }
  check(err == EINVAL && same_allocation(&before, &after), name,
        "errno %d (%s), want EINVAL; in use %" PRIu64 " -> %" PRIu64
        ", pooled %" PRIu64 " -> %" PRIu64 ", mapped %" PRIu64 " -> %" PRIu64,
        err, strerror(err), before.mblocks_in_use, after.mblocks_in_use,
        before.mblocks_pooled, after.mblocks_pooled, before.bytes_mapped,
        after.bytes_mapped);
}

/* osmem_bind_to_node(p, 1 MiB, node) on a plain megablock: EINVAL, and the
 * range keeps the default policy. */
static void check_bind_refused(const char *name, unsigned node) {
  void *p = osmem_get_mblocks(1);
  if (!p) {
    fail(name, "osmem_get_mblocks(1) = NULL, errno %d", errno);
    return;
  }
  int r = osmem_bind_to_node(p, MB, node);
  int got = -1;
  uint64_t mask = 0;
  policy_of(p, &got, &mask);
  check(r == EINVAL && got == MPOL_DEFAULT, name,
        "osmem_bind_to_node(p, 1 MiB, %u) = %d (%s), want EINVAL; range "
        "policy %s",
        node, r, r > 0 ? strerror(r) : "-", mpol_name(got));
  osmem_free_mblocks(p, 1);
}

/* -------------------------------------------------------- allowed nodes */

static void check_nodes(unsigned want_nodes, uint64_t want_mask) {
  unsigned nodes = osmem_numa_nodes();
  uint64_t mask = osmem_numa_mask();
  check(nodes == want_nodes, "numa_nodes", "osmem_numa_nodes() = %u, want %u",
        nodes, want_nodes);
  check(mask == want_mask, "numa_mask",
        "osmem_numa_mask() = 0x%" PRIx64 ", want 0x%" PRIx64, mask, want_mask);
  if (missing((const void *)osmem_numa_bitmap, "osmem_numa_bitmap",
              "numa_bitmap"))
    return;
  size_t want_bits = 64 - (size_t)__builtin_clzll(want_mask);
  size_t need = osmem_numa_bitmap(NULL, 0);
  uint64_t full[2] = {0, 0};
  size_t got = osmem_numa_bitmap(full, 128);
  /* With nbits = 2, bits 2 and up must stay as they were. */
  uint64_t part = UINT64_C(0xA5A5A5A5A5A5A5A4);
  osmem_numa_bitmap(&part, 2);
  uint64_t part_want = (UINT64_C(0xA5A5A5A5A5A5A5A4) & ~UINT64_C(3)) |
                       (want_mask & 3);
  check(need == want_bits && got == want_bits && full[0] == want_mask &&
            full[1] == 0 && part == part_want,
        "numa_bitmap",
        "bitmap(NULL, 0) = %zu, bitmap(b, 128) = %zu with b = {0x%" PRIx64
        ", 0x%" PRIx64 "}, bitmap(b, 2) gave 0x%" PRIx64 "; want %zu, {0x%" PRIx64
        ", 0}, 0x%" PRIx64,
        need, got, full[0], full[1], part, want_bits, want_mask, part_want);
}

/* ------------------------------------------------- topology 1: two nodes */

/* Freed node-1 megablocks must not serve a node-0 get. */
static void check_pool_apart(void) {
  const size_t k = 4;
  void *a = get_placed("pool.first_get_on_node1", k, 1);
  if (!a) return;
  if (osmem_free_mblocks(a, k) != 0) {
    fail("pool.free", "osmem_free_mblocks of the node-1 run failed");
    return;
  }
  void *b = osmem_get_mblocks_on_node(k, 0);
  if (!b) {
    fail("pool.node0_get", "osmem_get_mblocks_on_node(%zu, 0) = NULL, errno %d",
         k, errno);
    return;
  }
  char *lo = (char *)a > (char *)b ? a : b;
  char *hi_a = (char *)a + k * MB, *hi_b = (char *)b + k * MB;
  char *hi = hi_a < hi_b ? hi_a : hi_b;
  size_t shared = hi > lo ? (size_t)(hi - lo) / MB : 0;
  check(shared == 0, "pool.node0_get_not_from_node1_frees",
        "the node-0 get returned %zu of the %zu megablocks just freed from "
        "node 1 (%p, freed run %p)",
        shared, k, b, a);
  check_placed("pool.node0_get_pages", b, k, 0);
  void *c = get_placed("pool.node1_get_after_free", k, 1);
  if (c) {
    printf("INFO %s.pool: node-1 get after the free %s the freed megablocks\n",
           mode, c == a ? "reused" : "did not reuse");
    osmem_free_mblocks(c, k);
  }
  osmem_free_mblocks(b, k);
}

static void check_policies(void) {
  /* The default is strict: MPOL_BIND. */
  void *d = osmem_get_mblocks_on_node(1, 1);
  if (d) check_policy("policy.default_strict_readback", d, MPOL_BIND, 2);
  else fail("policy.default_strict_readback", "get on node 1 failed");
  if (!osmem_set_numa_policy) {
    const char *names[] = {"policy.unknown_einval", "policy.preferred_readback",
                           "policy.strict_readback"};
    for (size_t i = 0; i < 3; i++)
      missing(NULL, "osmem_set_numa_policy", names[i]);
    if (d) osmem_free_mblocks(d, 1);
    return;
  }
  int r = osmem_set_numa_policy((enum osmem_numa_policy)7);
  check(r == EINVAL, "policy.unknown_einval",
        "osmem_set_numa_policy(7) = %d, want EINVAL", r);
  const struct { enum osmem_numa_policy p; int mpol; const char *name; } t[] = {
      {OSMEM_NUMA_PREFERRED, MPOL_PREFERRED, "policy.preferred_readback"},
      {OSMEM_NUMA_STRICT, MPOL_BIND, "policy.strict_readback"},
  };
  for (size_t i = 0; i < 2; i++) {
    r = osmem_set_numa_policy(t[i].p);
    void *p = osmem_get_mblocks_on_node(1, 1);
    if (r != 0 || !p) {
      fail(t[i].name, "osmem_set_numa_policy = %d, get on node 1 = %p", r, p);
      continue;
    }
    check_policy(t[i].name, p, t[i].mpol, 2);
    osmem_free_mblocks(p, 1);
  }
  if (d) osmem_free_mblocks(d, 1);
}

/* One chunk of a spill child's progress, sent to the parent. */
struct chunk {
  unsigned long node0, node1, other;
};

#define SPILL_CHUNK_MB 16

/* The child: get `mb` megablocks on node 1 under `policy`, touch them chunk
 * by chunk and send each chunk's placement. It may be OOM-killed. */
static void spill_child(int fd, size_t mb, bool set_policy,
                        enum osmem_numa_policy policy) {
  write_file("/proc/self/oom_score_adj", "1000");
  if (set_policy && osmem_set_numa_policy(policy) != 0) _exit(3);
  char *p = osmem_get_mblocks_on_node(mb, 1);
  if (!p) _exit(4);
  for (size_t off = 0; off < mb * MB; off += SPILL_CHUNK_MB * MB) {
    struct counts c = {0};
    touch(p + off, SPILL_CHUNK_MB * MB);
    count_pages(p + off, SPILL_CHUNK_MB * MB, &c);
    struct chunk ch = {c.node[0], c.node[1], c.total - c.node[0] - c.node[1]};
    if (write(fd, &ch, sizeof ch) != (ssize_t)sizeof ch) _exit(5);
  }
  _exit(0);
}

struct spill {
  unsigned long chunks, node0, node1, other;
  bool first_on_node1; /* the first chunk entirely on node 1 */
  int status;          /* waitpid status */
};

static bool run_spill(size_t mb, bool set_policy, enum osmem_numa_policy policy,
                      struct spill *s) {
  int fds[2];
  if (pipe(fds) != 0) return false;
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    close(fds[0]);
    spill_child(fds[1], mb, set_policy, policy);
  }
  close(fds[1]);
  *s = (struct spill){0};
  struct chunk ch;
  while (read(fds[0], &ch, sizeof ch) == (ssize_t)sizeof ch) {
    if (s->chunks == 0) s->first_on_node1 = ch.node0 == 0 && ch.other == 0;
    s->chunks++;
    s->node0 += ch.node0, s->node1 += ch.node1, s->other += ch.other;
  }
  close(fds[0]);
  waitpid(pid, &s->status, 0);
  return true;
}

static void describe_exit(int status, char *buf, size_t len) {
  if (WIFSIGNALED(status))
    snprintf(buf, len, "killed by signal %d%s", WTERMSIG(status),
             WTERMSIG(status) == SIGKILL ? " (OOM killer)" : "");
  else
    snprintf(buf, len, "exited with %d%s", WEXITSTATUS(status),
             WEXITSTATUS(status) == 4 ? " (the get failed)" : "");
}

static void print_spill(const char *name, const struct spill *s) {
  printf("PAGES %s.%s: node0=%lu node1=%lu", mode, name, s->node0, s->node1);
  if (s->other) printf(" absent/other=%lu", s->other);
  printf(" (of %lu touched)\n", s->chunks * SPILL_CHUNK_MB * MB / page);
}

/* Node 1 over-filled: preferred spills to node 0 without failing; strict
 * never puts a page on node 0 (the child is OOM-killed instead). */
static void check_spill(void) {
  uint64_t free1 = node_meminfo(1, "MemFree");
  size_t mb = (size_t)(free1 / MB) + 96;
  mb = (mb + SPILL_CHUNK_MB - 1) / SPILL_CHUNK_MB * SPILL_CHUNK_MB;
  printf("INFO %s.spill: node 1 has %" PRIu64 " MiB free; touching %zu MiB\n",
         mode, free1 / MB, mb);
  struct spill s;
  char how[96];
  bool have_policy = osmem_set_numa_policy != NULL;
  if (!missing((const void *)osmem_set_numa_policy, "osmem_set_numa_policy",
               "preferred.spills_to_node0")) {
    if (!run_spill(mb, true, OSMEM_NUMA_PREFERRED, &s)) {
      fail("preferred.spills_to_node0", "pipe/fork: %s", strerror(errno));
    } else {
      describe_exit(s.status, how, sizeof how);
      print_spill("preferred.spill", &s);
      bool done = WIFEXITED(s.status) && WEXITSTATUS(s.status) == 0;
      check(done && s.first_on_node1 && s.node0 > 0 && s.node1 > 0 &&
                s.other == 0,
            "preferred.spills_to_node0",
            "child %s after %lu MiB; node0=%lu node1=%lu other=%lu, first "
            "chunk %s on node 1",
            how, s.chunks * SPILL_CHUNK_MB, s.node0, s.node1, s.other,
            s.first_on_node1 ? "all" : "not all");
    }
  }
  /* Strict: the default, or set explicitly where the call exists. */
  if (!run_spill(mb, have_policy, OSMEM_NUMA_STRICT, &s)) {
    fail("strict.never_spills", "pipe/fork: %s", strerror(errno));
    return;
  }
  describe_exit(s.status, how, sizeof how);
  print_spill("strict.spill", &s);
  printf("INFO %s.strict: child %s after touching %lu MiB\n", mode, how,
         s.chunks * SPILL_CHUNK_MB);
  bool killed = WIFSIGNALED(s.status) && WTERMSIG(s.status) == SIGKILL;
  bool done = WIFEXITED(s.status) && WEXITSTATUS(s.status) == 0;
  check((killed || done) && s.chunks > 0 && s.node0 == 0, "strict.never_spills",
        "child %s after %lu MiB; node0=%lu node1=%lu", how,
        s.chunks * SPILL_CHUNK_MB, s.node0, s.node1);
}

static size_t mapping_count(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f) return 0;
  size_t lines = 0;
  for (int c; (c = fgetc(f)) != EOF;) lines += c == '\n';
  fclose(f);
  return lines;
}

/* Node gets come from reservations bound whole: gets alternating between
 * the nodes and plain ones must not split a mapping each (the kernel would
 * refuse at vm.max_map_count). Address space only: nothing is touched. */
static void check_mappings_not_split(void) {
  enum { ROUNDS = 50000 }; /* 100,000 gets */
  static void *got[2 * ROUNDS];
  size_t before = mapping_count(), n = 0;
  for (unsigned i = 0; i < ROUNDS; i++) {
    if (!(got[n++] = osmem_get_mblocks_on_node(1, i % 2)) ||
        !(got[n++] = osmem_get_mblocks(1))) {
      fail("gets_keep_mappings_whole", "get %u failed: %s", i, strerror(errno));
      n--;
      break;
    }
  }
  size_t after = mapping_count();
  struct osmem_stats s = stats_now();
  check(after - before <= 64, "gets_keep_mappings_whole",
        "%zu mappings more after %d node gets (both nodes) and %d plain gets; "
        "%llu mbind calls", after - before, ROUNDS, ROUNDS,
        (unsigned long long)s.os_mbind);
  printf("INFO two.mappings: %zu before, %zu after %d node and %d plain gets, "
         "%llu mbind calls\n", before, after, ROUNDS, ROUNDS,
         (unsigned long long)s.os_mbind);
  for (size_t i = 0; i < n; i++) osmem_free_mblocks(got[i], 1);
  osmem_release_free_memory();
}

/* Address space follows the heap on real nodes too: cycles of a 200 MiB
 * heap got on both nodes in turn, freed and released, keep what is mapped
 * within four times the heap plus 64 MiB, and give all of it back each
 * time (tests/test_footprint.c holds the same bound natively). Nothing is
 * touched: this is address space. */
static void check_footprint_cycles(void) {
  enum { CYCLES = 300, GETS = 50, EACH = 4 };
  static void *got[GETS];
  uint64_t most = 0, left = 0;
  int bad = -1;
  for (int c = 0; c < CYCLES && bad < 0; c++) {
    for (int i = 0; i < GETS; i++)
      if (!(got[i] = osmem_get_mblocks_on_node(EACH, (unsigned)(i + c) % 2))) {
        bad = c;
        for (int j = 0; j < i; j++) osmem_free_mblocks(got[j], EACH);
        break;
      }
    if (bad >= 0) break;
    struct osmem_stats s = stats_now();
    if (s.bytes_mapped > most) most = s.bytes_mapped;
    for (int i = 0; i < GETS; i++) osmem_free_mblocks(got[i], EACH);
    osmem_release_free_memory();
    s = stats_now();
    if (s.bytes_mapped > left) left = s.bytes_mapped;
  }
  uint64_t bound = 4 * (uint64_t)GETS * EACH * MB + 64 * MB;
  check(bad < 0 && most <= bound && left == 0, "footprint_follows_the_heap",
        "%d cycles of a 200 MiB heap on both nodes: most mapped %llu MiB "
        "(bound %llu), most left after a release %llu MiB%s",
        CYCLES, (unsigned long long)(most >> 20),
        (unsigned long long)(bound >> 20), (unsigned long long)(left >> 20),
        bad >= 0 ? ", a get failed" : "");
  printf("INFO two.footprint: %d cycles of 200 MiB on both nodes, most "
         "mapped %llu MiB, left after release %llu MiB\n", CYCLES,
         (unsigned long long)(most >> 20), (unsigned long long)(left >> 20));
}

static void checks_two(void) {
  check_nodes(2, 0x3);
  void *p1 = get_placed("get_on_node1", 8, 1);
  void *p0 = get_placed("get_on_node0", 8, 0);
  void *q = osmem_get_mblocks(2);
  int r = q ? osmem_bind_to_node(q, 2 * MB, 1) : -1;
  if (check(r == 0, "bind_to_node1", "osmem_bind_to_node(p, 2 MiB, 1) = %d", r))
    check_placed("bind_to_node1_pages", q, 2, 1);
  if (q) osmem_free_mblocks(q, 2);
  if (p1) osmem_free_mblocks(p1, 8);
  if (p0) osmem_free_mblocks(p0, 8);
  osmem_release_free_memory();
  check_pool_apart();
  check_policies();
  osmem_release_free_memory();
  check_mappings_not_split();
  check_footprint_cycles();
  check_spill();
}

/* ------------------------- topology 2: node 2 has CPUs but no memory */

static void check_node_facts(void) {
  if (!missing((const void *)osmem_numa_node_memory, "osmem_numa_node_memory",
               "node_memory")) {
    uint64_t m[5];
    for (unsigned n = 0; n < 5; n++) m[n] = osmem_numa_node_memory(n);
    uint64_t s3 = node_meminfo(3, "MemTotal");
    check(m[2] == 0 && m[3] > 0 && m[3] == s3 && m[0] > 0 && m[1] > 0 &&
              m[4] == 0,
          "node_memory",
          "node_memory(0..4) = %" PRIu64 ", %" PRIu64 ", %" PRIu64 ", %" PRIu64
          ", %" PRIu64 "; want >0, >0, 0, %" PRIu64 " (sysfs), 0",
          m[0], m[1], m[2], m[3], m[4], s3);
  }
  if (missing((const void *)osmem_numa_distance, "osmem_numa_distance",
              "distance"))
    return;
  int self = osmem_numa_distance(0, 0);
  check(self == 10, "distance_self", "osmem_numa_distance(0, 0) = %d", self);
  /* Every pair of online nodes against sysfs (index = position online). */
  unsigned ids[MAX_SHOWN_NODES];
  unsigned n = sysfs_nodes(ids, MAX_SHOWN_NODES);
  char bad[256] = "";
  for (unsigned i = 0; i < n; i++)
    for (unsigned j = 0; j < n; j++) {
      int got = osmem_numa_distance(ids[i], ids[j]);
      int want = sysfs_distance(ids[i], j);
      if (got != want && strlen(bad) < sizeof bad - 40)
        snprintf(bad + strlen(bad), sizeof bad - strlen(bad),
                 " (%u,%u)=%d want %d", ids[i], ids[j], got, want);
    }
  int none = osmem_numa_distance(0, 9);
  check(bad[0] == '\0' && none == -1, "distance",
        "mismatches with sysfs:%s; distance(0, 9) = %d, want -1",
        bad[0] ? bad : " none", none);
}

static void checks_sparse(void) {
  check_nodes(3, 0xb);
  check_get_refused("get_on_node2_einval", 1, 2);
  check_bind_refused("bind_to_node2_einval", 2);
  const unsigned nodes[] = {3, 0, 1};
  for (size_t i = 0; i < 3; i++) {
    char name[32];
    snprintf(name, sizeof name, "get_on_node%u", nodes[i]);
    void *p = get_placed(name, 4, nodes[i]);
    if (p) osmem_free_mblocks(p, 4);
  }
  check_node_facts();
}

/* ------------------------------- topology 3: restricted to node 1 */

static void checks_restricted(void) {
  if (strcmp(mode, "cpuset") == 0) {
    char buf[4096] = "", mems[64] = "?";
    read_file("/proc/self/status", buf, sizeof buf);
    const char *at = strstr(buf, "Mems_allowed_list:");
    if (at) {
      at += strlen("Mems_allowed_list:");
      snprintf(mems, sizeof mems, "%s", at + strspn(at, " \t"));
      mems[strcspn(mems, "\n")] = '\0';
    }
    check(strcmp(mems, "1") == 0, "setup_cpuset_mems",
          "Mems_allowed_list is %s, want 1", mems);
  } else {
    int m = -1;
    unsigned long mask[POLICY_BITS / LONG_BITS] = {0};
    get_mempolicy(&m, mask, POLICY_BITS, NULL, 0);
    check((m & ~MODE_FLAGS) == MPOL_BIND && mask[0] == 2, "setup_membind",
          "process policy %s 0x%lx", mpol_name(m & ~MODE_FLAGS), mask[0]);
  }
  check_nodes(1, 0x2);
  check_get_refused("get_on_node0_einval", 1, 0);
  check_bind_refused("bind_to_node0_einval", 0);
  void *p = get_placed("get_on_node1", 8, 1);
  if (p) osmem_free_mblocks(p, 8);
  void *q = osmem_get_mblocks(4);
  if (q) {
    check_placed("plain_get_pages_on_node1", q, 4, 1);
    osmem_free_mblocks(q, 4);
  }
}

static void checks_unrestricted(void) { check_nodes(2, 0x3); }

static int run_checks(const char *m) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  mode = m;
  page = (size_t)sysconf(_SC_PAGESIZE);
  if (strcmp(m, "two") == 0) checks_two();
  else if (strcmp(m, "sparse") == 0) checks_sparse();
  else if (strcmp(m, "cpuset") == 0 || strcmp(m, "membind") == 0)
    checks_restricted();
  else if (strcmp(m, "base") == 0) checks_unrestricted();
  else {
    fail("mode", "unknown checks mode '%s'", m);
    return 2;
  }
  return 0;
}

/* ---------------------------------------------------------------- PID 1 */

static int passed, failed;

static void init_fail(const char *name, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfail(name, fmt, ap);
  va_end(ap);
  failed++;
}

static void mount_basics(void) {
  mkdir("/proc", 0555);
  mkdir("/sys", 0555);
  mkdir("/dev", 0755);
  mount("proc", "/proc", "proc", 0, NULL);
  mount("sysfs", "/sys", "sysfs", 0, NULL);
  mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
  /* Without a dev/console in the initramfs the kernel gave us no stdio. */
  if (fcntl(1, F_GETFD) < 0) {
    int fd = open("/dev/console", O_RDWR);
    if (fd >= 0) {
      dup2(fd, 0), dup2(fd, 1), dup2(fd, 2);
      if (fd > 2) close(fd);
    }
  }
}

static void topology_from_cmdline(char *out, size_t len) {
  char buf[1024] = "";
  read_file("/proc/cmdline", buf, sizeof buf);
  const char *at = strstr(buf, "osmem.topology=");
  snprintf(out, len, "%s", at ? at + 15 : "");
  out[strcspn(out, " \n")] = '\0';
}

/* A child cpuset with mems 1 and cpus 0-1: cgroup v2, else v1. */
static bool make_cpuset(char *procs, size_t len, char *why, size_t wlen) {
  const char *root = "/sys/fs/cgroup";
  mkdir(root, 0755);
  if (mount("cgroup2", root, "cgroup2", 0, NULL) == 0) {
    if (!write_file("/sys/fs/cgroup/cgroup.subtree_control", "+cpuset")) {
      snprintf(why, wlen, "cgroup2: enabling cpuset: %s", strerror(errno));
      return false;
    }
    snprintf(procs, len, "%s/node1/cgroup.procs", root);
  } else if (mount("cpuset", root, "cgroup", 0, "cpuset") == 0) {
    snprintf(procs, len, "%s/node1/tasks", root);
  } else {
    snprintf(why, wlen, "mounting cgroup2 or the v1 cpuset: %s", strerror(errno));
    return false;
  }
  mkdir("/sys/fs/cgroup/node1", 0755);
  if (!write_file("/sys/fs/cgroup/node1/cpuset.cpus", "0-1") ||
      !write_file("/sys/fs/cgroup/node1/cpuset.mems", "1")) {
    snprintf(why, wlen, "writing cpuset.cpus/mems: %s", strerror(errno));
    return false;
  }
  return true;
}

/* In the forked child, before exec: put this process where `how` says. */
static bool restrict_self(const char *how, const char *procs) {
  if (strcmp(how, "cpuset") == 0) {
    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    return write_file(procs, pid);
  }
  if (strcmp(how, "membind") == 0) {
    unsigned long mask = 1UL << 1; /* numactl --membind=1 */
    return set_mempolicy(MPOL_BIND, &mask, LONG_BITS) == 0;
  }
  return true;
}

static void relay_line(char *line) {
  if (strncmp(line, "PASS ", 5) == 0) passed++;
  else if (strncmp(line, "FAIL ", 5) == 0) failed++;
  printf("%s\n", line);
}

/* Relays the child's lines until EOF or the deadline; returns false on
 * timeout. */
static bool relay(int fd, time_t deadline) {
  char buf[8192];
  size_t have = 0;
  for (;;) {
    struct pollfd pfd = {fd, POLLIN, 0};
    int left = (int)(deadline - time(NULL));
    if (left <= 0 || poll(&pfd, 1, left * 1000) == 0) return false;
    ssize_t got = read(fd, buf + have, sizeof buf - 1 - have);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    have += (size_t)got;
    char *start = buf, *nl;
    while ((nl = memchr(start, '\n', have - (size_t)(start - buf)))) {
      *nl = '\0';
      relay_line(start);
      start = nl + 1;
    }
    have -= (size_t)(start - buf);
    memmove(buf, start, have);
    if (have == sizeof buf - 1) { /* an overlong line: pass it on cut */
      buf[have] = '\0';
      relay_line(buf);
      have = 0;
    }
  }
  if (have) {
    buf[have] = '\0';
    relay_line(buf);
  }
  return true;
}

/* Runs argv in a child (restricted as mode m says), relaying its PASS and
 * FAIL lines; a child that does not finish in time or exits non-zero is a
 * failure. */
static void run_program(const char *m, const char *procs, char *const argv[]) {
  int fds[2];
  if (pipe(fds) != 0) {
    init_fail("run", "pipe: %s", strerror(errno));
    return;
  }
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], 1), dup2(fds[1], 2);
    close(fds[1]);
    if (!restrict_self(m, procs)) {
      printf("FAIL %s.setup: restricting to node 1: %s\n", m, strerror(errno));
      _exit(1);
    }
    execv(argv[0], argv);
    printf("FAIL %s.exec: %s: %s\n", m, argv[0], strerror(errno));
    _exit(127);
  }
  close(fds[1]);
  if (pid < 0) {
    init_fail("run", "fork: %s", strerror(errno));
    close(fds[0]);
    return;
  }
  bool in_time = relay(fds[0], time(NULL) + RUN_DEADLINE_S);
  close(fds[0]);
  if (!in_time) kill(pid, SIGKILL);
  int status;
  waitpid(pid, &status, 0);
  if (!in_time)
    init_fail("run", "'%s' checks did not finish in %d s", m, RUN_DEADLINE_S);
  else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    char how[96];
    describe_exit(status, how, sizeof how);
    init_fail("run", "'%s' checks process %s", m, how);
  }
}

static void run_mode(const char *self, const char *m, const char *procs) {
  char *argv[] = {(char *)self, "--checks", (char *)m, NULL};
  run_program(m, procs, argv);
}

/* GHC's threaded runtime on libosmem (tests/numa-vm/GhcNuma.hs), when
 * run.sh could build it into the initramfs: with two capabilities and
 * --numa, the heap must have pages on both nodes. */
static void run_ghc_program(void) {
  if (access("/ghc-numa", X_OK) != 0) return;
  char *argv[] = {"/ghc-numa", "+RTS", "-N2", "--numa", "-RTS", NULL};
  run_program("ghc", "", argv);
}

static void print_uptime(void) {
  char buf[128] = "";
  read_file("/proc/uptime", buf, sizeof buf);
  printf("INFO uptime %.2f s\n", strtod(buf, NULL));
}

static void init_main(const char *self) {
  mount_basics();
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("\n"); /* the firmware's output may end without one */
  char topo[64];
  topology_from_cmdline(topo, sizeof topo);
  char online[64] = "?", cpus[64] = "?";
  read_file("/sys/devices/system/node/online", online, sizeof online);
  read_file("/sys/devices/system/cpu/online", cpus, sizeof cpus);
  online[strcspn(online, "\n")] = cpus[strcspn(cpus, "\n")] = '\0';
  printf("INFO topology %s: nodes online %s, cpus %s\n", topo, online, cpus);
  mode = topo;
  if (strcmp(topo, "two") == 0 || strcmp(topo, "sparse") == 0) {
    run_mode(self, topo, "");
    if (strcmp(topo, "two") == 0) run_ghc_program();
  } else if (strcmp(topo, "restricted") == 0) {
    char procs[128] = "", why[160] = "";
    run_mode(self, "base", "");
    if (make_cpuset(procs, sizeof procs, why, sizeof why))
      run_mode(self, "cpuset", procs);
    else
      init_fail("cpuset_setup", "%s", why);
    run_mode(self, "membind", "");
  } else {
    init_fail("topology", "unknown osmem.topology '%s' on the kernel command line",
              topo);
  }
  print_uptime();
  printf("%d passed, %d failed\n", passed, failed);
  fflush(stdout);
  sync();
  reboot(RB_POWER_OFF);
  for (;;) pause();
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--checks") == 0) return run_checks(argv[2]);
  if (getpid() == 1) init_main(argv[0][0] == '/' ? argv[0] : "/init");
  fprintf(stderr,
          "usage: %s --checks two|sparse|cpuset|membind|base\n"
          "(as PID 1 it runs the topology named by osmem.topology=)\n",
          argv[0]);
  return 2;
}

/*
 * Reservations under fault injection: the three alignment paths of
 * osmem/posix/reserve.c forced one by one, the halving retry on ENOMEM, and
 * a countdown sweep that makes each mmap / munmap of a scripted sequence
 * fail in turn. Every system call goes through osmem__posix_sys, which the
 * wrapper below replaces; the wrapper logs each call so that the tests can
 * account for them exactly.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child-check.h"

#include "../osmem/common/internal.h"
#include "../osmem/posix/sys.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0
#endif

#define MB OSMEM_MBLOCK_SIZE
#define MiB ((size_t)1 << 20)

static size_t page(void) { return (size_t)sysconf(_SC_PAGESIZE); }

static uintptr_t align_up(uintptr_t x, uintptr_t a) {
  return (x + a - 1) & ~(a - 1);
}

/* ------------------------------------------------------- the fake kernel */

/* How a reservation mmap (one with MAP_NORESERVE; bookkeeping is mapped
 * without it) is answered. Kinds: "hinted" has an address; "exact" has none
 * and a length that is a multiple of the megablock; "trim" is the
 * over-allocation, size + align - page, which is not. */
enum hint_mode {
  HINT_REAL,
  HINT_IGNORED_MISALIGNED, /* an old kernel: the hint is ignored, and the
                              mapping lands at a misaligned address */
  HINT_ELSEWHERE_ALIGNED,  /* placed elsewhere, but aligned */
  HINT_ARENA,              /* the hinted range is freed, then a real call */
};
enum exact_mode { EXACT_REAL, EXACT_ALIGNED, EXACT_MISALIGNED, EXACT_ARENA };
enum trim_mode { TRIM_REAL, TRIM_OFFSET };

#define TRIM_OFFSET_PAGES 3 /* TRIM_OFFSET maps at aligned + 3 pages */

enum kind { META, HINTED, EXACT, TRIM };

struct map_call {
  enum kind kind;
  void *addr;
  size_t len;
  int flags;
  void *ret;
};
struct unmap_call {
  void *addr;
  size_t len;
};

#define MAX_LOG 128
static struct {
  enum hint_mode hint;
  enum exact_mode exact;
  enum trim_mode trim;
  size_t fail_above;   /* reservation calls longer than this get ENOMEM */
  long mmap_fail_at;   /* 0-based index of the mmap call to fail; -1 none */
  long munmap_fail_at; /* the same for munmap */
  long mmaps, munmaps; /* calls seen since install */
  bool fired;
  /* the arena: a PROT_NONE placeholder that keeps the kernel out */
  char *arena_lo, *arena_top, *arena_base;
  struct map_call maps[MAX_LOG];
  struct unmap_call unmaps[MAX_LOG];
  int n_maps, n_unmaps;
} fi;

static enum kind kind_of(void *addr, size_t len, int flags) {
  if (!(flags & MAP_NORESERVE)) return META;
  if (addr) return HINTED;
  return len % MB == 0 ? EXACT : TRIM;
}

/* A real mapping of len bytes at (2 MiB aligned) + off, never at `avoid`.
 * The helper's own calls bypass the table: the library does not see them. */
static void *place(size_t len, size_t off, int prot, int flags, void *avoid) {
  size_t extra = 6 * MiB;
  flags &= ~(MAP_FIXED | MAP_FIXED_NOREPLACE);
  char *raw = mmap(NULL, len + extra, prot, flags, -1, 0);
  if (raw == MAP_FAILED) return MAP_FAILED;
  uintptr_t a = align_up((uintptr_t)raw, 2 * MiB);
  if ((void *)(a + off) == avoid) a += 2 * MiB;
  char *q = (char *)(a + off), *end = raw + len + extra;
  if (q > raw) munmap(raw, (size_t)(q - raw));
  if (q + len < end) munmap(q + len, (size_t)(end - (q + len)));
  return q;
}

static void *fi_answer(enum kind k, void *addr, size_t len, int prot,
                       int flags, int fd, off_t off) {
  if (k == META) return mmap(addr, len, prot, flags, fd, off);
  if (len > fi.fail_above) {
    errno = ENOMEM;
    return MAP_FAILED;
  }
  switch (k) {
    case HINTED:
      if (fi.hint == HINT_IGNORED_MISALIGNED)
        return place(len, page(), prot, flags, NULL);
      if (fi.hint == HINT_ELSEWHERE_ALIGNED)
        return place(len, 0, prot, flags, addr);
      if (fi.hint == HINT_ARENA && fi.arena_base &&
          (char *)addr >= fi.arena_lo && (char *)addr + len <= fi.arena_base) {
        munmap(fi.arena_lo, (size_t)(fi.arena_base - fi.arena_lo));
        fi.arena_lo = fi.arena_base = NULL;
      }
      break;
    case EXACT:
      if (fi.exact == EXACT_ALIGNED) return place(len, 0, prot, flags, NULL);
      if (fi.exact == EXACT_MISALIGNED)
        return place(len, page(), prot, flags, NULL);
      if (fi.exact == EXACT_ARENA && !fi.arena_base) {
        char *p = fi.arena_top - len;
        void *r = mmap(p, len, prot, flags | MAP_FIXED, fd, off);
        if (r != MAP_FAILED) fi.arena_base = p;
        return r;
      }
      break;
    case TRIM:
      if (fi.trim == TRIM_OFFSET)
        return place(len, TRIM_OFFSET_PAGES * page(), prot, flags, NULL);
      break;
    case META:
      break;
  }
  return mmap(addr, len, prot, flags, fd, off);
}

static void *fi_mmap(void *addr, size_t len, int prot, int flags, int fd,
                     off_t off) {
  enum kind k = kind_of(addr, len, flags);
  void *ret;
  if (fi.mmaps++ == fi.mmap_fail_at) {
    fi.fired = true;
    errno = ENOMEM;
    ret = MAP_FAILED;
  } else {
    ret = fi_answer(k, addr, len, prot, flags, fd, off);
  }
  int saved = errno;
  if (fi.n_maps < MAX_LOG)
    fi.maps[fi.n_maps] = (struct map_call){k, addr, len, flags, ret};
  fi.n_maps++;
  errno = saved;
  return ret;
}

static int fi_munmap(void *addr, size_t len) {
  if (fi.n_unmaps < MAX_LOG)
    fi.unmaps[fi.n_unmaps] = (struct unmap_call){addr, len};
  fi.n_unmaps++;
  if (fi.munmaps++ == fi.munmap_fail_at) {
    fi.fired = true;
    errno = ENOMEM;
    return -1;
  }
  return munmap(addr, len);
}

static void fi_install(void) {
  fi.fail_above = SIZE_MAX;
  fi.mmap_fail_at = fi.munmap_fail_at = -1;
  osmem__posix_sys.mmap = fi_mmap;
  osmem__posix_sys.munmap = fi_munmap;
}

static void fi_clear_log(void) { fi.n_maps = fi.n_unmaps = 0; }

/* Reservation calls in the log (bookkeeping left out). */
static int reserve_calls(struct map_call *out) {
  int n = 0;
  for (int i = 0; i < fi.n_maps && i < MAX_LOG; i++)
    if (fi.maps[i].kind != META) out[n++] = fi.maps[i];
  return n;
}

/* Every call the library made since the log was cleared, as osmem_stats
 * counts them, is in the log. */
static void assert_calls_logged(struct osmem_stats before,
                                struct osmem_stats after) {
  cr_assert_eq(after.os_maps - before.os_maps, (uint64_t)fi.n_maps,
               "os_maps grew by %ju, %d mmaps logged",
               (uintmax_t)(after.os_maps - before.os_maps), fi.n_maps);
  cr_assert_eq(after.os_unmaps - before.os_unmaps, (uint64_t)fi.n_unmaps,
               "os_unmaps grew by %ju, %d munmaps logged",
               (uintmax_t)(after.os_unmaps - before.os_unmaps), fi.n_unmaps);
}

static void assert_align_counts(struct osmem_stats before,
                                struct osmem_stats after, uint64_t hint,
                                uint64_t exact, uint64_t trims) {
  cr_assert_eq(after.align_hint_hits - before.align_hint_hits, hint,
               "align_hint_hits grew by %ju",
               (uintmax_t)(after.align_hint_hits - before.align_hint_hits));
  cr_assert_eq(after.align_exact_hits - before.align_exact_hits, exact,
               "align_exact_hits grew by %ju",
               (uintmax_t)(after.align_exact_hits - before.align_exact_hits));
  cr_assert_eq(after.align_trims - before.align_trims, trims,
               "align_trims grew by %ju",
               (uintmax_t)(after.align_trims - before.align_trims));
}

static void assert_same_state(struct osmem_stats a, struct osmem_stats b) {
  cr_assert_eq(b.mblocks_in_use, a.mblocks_in_use);
  cr_assert_eq(b.mblocks_peak, a.mblocks_peak);
  cr_assert_eq(b.mblocks_pooled, a.mblocks_pooled);
  cr_assert_eq(b.mblocks_pooled_resident, a.mblocks_pooled_resident);
  cr_assert_eq(b.pool_ranges, a.pool_ranges);
  cr_assert_eq(b.bytes_mapped, a.bytes_mapped);
  cr_assert_eq(b.bytes_reserved_unused, a.bytes_reserved_unused);
  cr_assert_eq(b.reservations, a.reservations);
}

/* Bytes of [p, p + len) covered by a mapping, from /proc/self/maps (read
 * with open/read: nothing may map memory while we look). */
static char maps_buf[1 << 20];
static size_t mapped_bytes(const void *p, size_t len) {
  int fd = open("/proc/self/maps", O_RDONLY);
  cr_assert_geq(fd, 0);
  size_t n = 0;
  ssize_t got;
  while ((got = read(fd, maps_buf + n, sizeof maps_buf - 1 - n)) > 0)
    n += (size_t)got;
  close(fd);
  maps_buf[n] = '\0';
  uintptr_t lo = (uintptr_t)p, hi = lo + len;
  size_t covered = 0;
  for (char *s = maps_buf; *s;) {
    char *end;
    uintptr_t a = (uintptr_t)strtoull(s, &end, 16);
    uintptr_t b = (uintptr_t)strtoull(end + 1, &end, 16);
    if (a < hi && b > lo) covered += (b < hi ? b : hi) - (a > lo ? a : lo);
    s = strchr(s, '\n');
    if (!s) break;
    s++;
  }
  return covered;
}

/* The first reservation, 16 MiB, handed out whole: the next get needs a new
 * reservation, hinted just below this one. Returns its base. */
static char *use_up_first_reservation(void) {
  char *p = osmem_get_mblocks(OSMEM__RESERVE_FIRST / MB);
  cr_assert_not_null(p);
  struct osmem_stats s = stats_now();
  cr_assert_eq(s.reservations, 1);
  cr_assert_eq(s.bytes_mapped, OSMEM__RESERVE_FIRST);
  cr_assert_eq(s.bytes_reserved_unused, 0);
  assert_invariants();
  return p;
}

/* ------------------------------------------------------- alignment paths */

Test(align, hint_hit_places_reservation_just_below) {
  /* A placeholder arena: the first reservation goes at its top, so that
   * the range below it is known to be free when the hint is tried. */
  size_t arena = 128 * MiB;
  char *raw = mmap(NULL, arena + 2 * MiB, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  cr_assert_neq(raw, MAP_FAILED);
  fi.arena_lo = raw;
  fi.arena_top = (char *)((uintptr_t)(raw + arena + 2 * MiB) & ~(2 * MiB - 1));
  fi_install();
  fi.hint = HINT_ARENA;
  fi.exact = EXACT_ARENA;
  char *old = osmem_get_mblocks(10); /* 6 of the first 16 stay unused */
  cr_assert_not_null(old);
  char *base = fi.arena_top - OSMEM__RESERVE_FIRST;
  cr_assert_eq(old, base + 6 * MB);
  struct osmem_stats s0 = stats_now();
  cr_assert_eq(s0.align_exact_hits, 1);
  fi_clear_log();
  char *p = osmem_get_mblocks(10);
  struct osmem_stats s1 = stats_now();
  cr_assert_not_null(p);
  assert_invariants();
  struct map_call r[MAX_LOG];
  cr_assert_eq(reserve_calls(r), 1, "one mmap for the reservation");
  size_t size = 2 * OSMEM__RESERVE_FIRST; /* the next one doubles */
  cr_assert_eq(r[0].kind, HINTED);
  cr_assert_eq(r[0].addr, base - size, "hinted just below");
  cr_assert_eq(r[0].len, size);
  cr_assert_eq(r[0].flags & (MAP_FIXED_NOREPLACE | MAP_NORESERVE),
               MAP_FIXED_NOREPLACE | MAP_NORESERVE);
  cr_assert_eq(r[0].ret, r[0].addr, "the kernel honoured the hint");
  assert_calls_logged(s0, s1);
  cr_assert_eq(fi.n_unmaps, 0);
  assert_align_counts(s0, s1, 1, 0, 0);
  cr_assert_eq(s1.reservations, 2);
  cr_assert_eq(s1.bytes_mapped, OSMEM__RESERVE_FIRST + size);
  /* Adjacent: the old unused tail and the new reservation are one carve, so
   * the get spans both and nothing goes to the pool. */
  cr_assert_eq(p, base + 6 * MB - 10 * MB);
  cr_assert_eq(s1.bytes_reserved_unused, 6 * MB + size - 10 * MB);
  cr_assert_eq(s1.pool_ranges, 0);
  cr_assert_eq(mapped_bytes(base - size, size + OSMEM__RESERVE_FIRST),
               size + OSMEM__RESERVE_FIRST);
  memset(p, 0xa5, 10 * MB);
}

Test(align, ignored_hint_is_unmapped_then_exact_mapping_kept) {
  char *base = use_up_first_reservation();
  fi_install();
  fi.hint = HINT_IGNORED_MISALIGNED;
  fi.exact = EXACT_ALIGNED;
  struct osmem_stats s0 = stats_now();
  fi_clear_log();
  char *p = osmem_get_mblocks(1);
  struct osmem_stats s1 = stats_now();
  cr_assert_not_null(p);
  assert_invariants();
  size_t size = 2 * OSMEM__RESERVE_FIRST;
  struct map_call r[MAX_LOG];
  cr_assert_eq(reserve_calls(r), 2);
  cr_assert_eq(r[0].kind, HINTED);
  cr_assert_eq(r[0].addr, base - size);
  cr_assert_neq(r[0].ret, r[0].addr);
  cr_assert_not(is_mblock_aligned(r[0].ret));
  cr_assert_eq(r[1].kind, EXACT);
  cr_assert_eq(r[1].len, size);
  cr_assert(is_mblock_aligned(r[1].ret));
  cr_assert_eq(fi.n_unmaps, 1, "the misaligned mapping is given back");
  cr_assert_eq(fi.unmaps[0].addr, r[0].ret);
  cr_assert_eq(fi.unmaps[0].len, size);
  assert_calls_logged(s0, s1);
  assert_align_counts(s0, s1, 0, 1, 0);
  cr_assert(is_mblock_aligned(p));
  cr_assert_eq(p, (char *)r[1].ret + size - MB, "carved from the top");
  cr_assert(osmem_is_heap(p));
  cr_assert_eq(s1.reservations, 2);
  cr_assert_eq(s1.bytes_mapped, OSMEM__RESERVE_FIRST + size);
  cr_assert_eq(s1.bytes_reserved_unused, size - MB);
  memset(p, 0x5a, MB);
}

Test(align, ignored_hint_and_misaligned_exact_fall_to_trim) {
  char *base = use_up_first_reservation();
  fi_install();
  fi.hint = HINT_IGNORED_MISALIGNED;
  fi.exact = EXACT_MISALIGNED;
  fi.trim = TRIM_OFFSET;
  struct osmem_stats s0 = stats_now();
  fi_clear_log();
  char *p = osmem_get_mblocks(1);
  struct osmem_stats s1 = stats_now();
  cr_assert_not_null(p);
  assert_invariants();
  size_t size = 2 * OSMEM__RESERVE_FIRST, slack = MB - page();
  struct map_call r[MAX_LOG];
  cr_assert_eq(reserve_calls(r), 3);
  cr_assert_eq(r[0].kind, HINTED);
  cr_assert_eq(r[0].addr, base - size);
  cr_assert_eq(r[1].kind, EXACT);
  cr_assert_eq(r[2].kind, TRIM);
  cr_assert_eq(r[2].len, size + slack, "over-allocates by align - page");
  char *first = (char *)align_up((uintptr_t)r[2].ret, MB);
  cr_assert_eq(fi.n_unmaps, 4);
  cr_assert_eq(fi.unmaps[0].addr, r[0].ret);
  cr_assert_eq(fi.unmaps[1].addr, r[1].ret);
  cr_assert_eq(fi.unmaps[1].len, size);
  cr_assert_eq(fi.unmaps[2].addr, r[2].ret, "head");
  cr_assert_eq((char *)fi.unmaps[2].addr + fi.unmaps[2].len, first);
  cr_assert_eq(fi.unmaps[3].addr, first + size, "tail");
  cr_assert_eq(fi.unmaps[2].len + fi.unmaps[3].len, slack);
  assert_calls_logged(s0, s1);
  assert_align_counts(s0, s1, 0, 0, 1);
  cr_assert_eq(p, first + size - MB);
  cr_assert_eq(s1.bytes_mapped, OSMEM__RESERVE_FIRST + size);
  memset(p, 0x3c, MB);
}

Test(align, misaligned_exact_mapping_is_trimmed) {
  cr_assert_eq(osmem_init(), 0);
  fi_install();
  fi.exact = EXACT_MISALIGNED;
  fi.trim = TRIM_OFFSET;
  struct osmem_stats s0 = stats_now();
  fi_clear_log();
  char *p = osmem_get_mblocks(1);
  struct osmem_stats s1 = stats_now();
  cr_assert_not_null(p);
  assert_invariants();
  size_t size = OSMEM__RESERVE_FIRST, slack = MB - page();
  struct map_call r[MAX_LOG];
  cr_assert_eq(reserve_calls(r), 2, "no hint for the first reservation");
  cr_assert_eq(r[0].kind, EXACT);
  cr_assert_eq(r[0].len, size);
  cr_assert_eq((uintptr_t)r[0].ret & OSMEM_MBLOCK_MASK, page());
  cr_assert_eq(r[1].kind, TRIM);
  cr_assert_eq(r[1].len, size + slack, "trim length %zu", r[1].len);
  char *start = r[1].ret;
  char *first = (char *)align_up((uintptr_t)start, MB);
  cr_assert_eq((size_t)(first - start), MB - TRIM_OFFSET_PAGES * page());
  cr_assert_eq(fi.n_unmaps, 3);
  cr_assert_eq(fi.unmaps[0].addr, r[0].ret, "the misaligned exact mapping");
  cr_assert_eq(fi.unmaps[0].len, size);
  cr_assert_eq(fi.unmaps[1].addr, start);
  cr_assert_eq(fi.unmaps[1].len, (size_t)(first - start));
  cr_assert_eq(fi.unmaps[2].addr, first + size);
  cr_assert_eq(fi.unmaps[2].len, (TRIM_OFFSET_PAGES - 1) * page());
  cr_assert_eq(fi.unmaps[1].len + fi.unmaps[2].len, slack,
               "head + tail = align - page");
  assert_calls_logged(s0, s1);
  assert_align_counts(s0, s1, 0, 0, 1);
  cr_assert_eq(s1.align_trims, 1);
  cr_assert(is_mblock_aligned(p));
  cr_assert_eq(p, first + size - MB);
  cr_assert_eq(s1.bytes_mapped, size);
  cr_assert_eq(mapped_bytes(first, size), size);
  memset(first, 0x77, size);
}

Test(align, hint_result_elsewhere_counts_as_exact_hit) {
  char *old = osmem_get_mblocks(10);
  cr_assert_not_null(old);
  char *old_base = old; /* 10 of 16 handed out from the top: 6 remain */
  cr_assert_eq(stats_now().bytes_reserved_unused, 6 * MB);
  old_base -= 6 * MB;
  fi_install();
  fi.hint = HINT_ELSEWHERE_ALIGNED;
  struct osmem_stats s0 = stats_now();
  fi_clear_log();
  char *p = osmem_get_mblocks(10);
  struct osmem_stats s1 = stats_now();
  cr_assert_not_null(p);
  assert_invariants();
  size_t size = 2 * OSMEM__RESERVE_FIRST;
  struct map_call r[MAX_LOG];
  cr_assert_eq(reserve_calls(r), 1);
  cr_assert_eq(r[0].kind, HINTED);
  cr_assert_eq(r[0].addr, old_base - size);
  cr_assert_neq(r[0].ret, r[0].addr);
  cr_assert(is_mblock_aligned(r[0].ret));
  cr_assert_eq(fi.n_unmaps, 0, "an aligned mapping elsewhere is kept");
  assert_calls_logged(s0, s1);
  assert_align_counts(s0, s1, 0, 1, 0);
  cr_assert_eq(p, (char *)r[0].ret + size - 10 * MB);
  /* Not adjacent: the old reservation's unused tail goes to the pool. */
  cr_assert_eq(s1.pool_ranges, 1);
  cr_assert_eq(s1.mblocks_pooled, 6);
  cr_assert_eq(s1.mblocks_pooled_resident, 0, "never touched");
  cr_assert_eq(s1.bytes_reserved_unused, size - 10 * MB);
  cr_assert_eq(osmem_get_mblocks(6), old_base, "the old tail is reused");
  assert_invariants();
}

Test(align, reservations_double_from_16_mib) {
  size_t want[] = {16, 32, 64, 128};
  size_t total = 0;
  for (size_t i = 0; i < 4; i++) {
    cr_assert_not_null(osmem_get_mblocks(want[i] * MiB / MB));
    total += want[i] * MiB;
    struct osmem_stats s = stats_now();
    cr_assert_eq(s.reservations, i + 1);
    cr_assert_eq(s.bytes_mapped, total, "after %zu gets: %ju bytes", i + 1,
                 (uintmax_t)s.bytes_mapped);
    cr_assert_eq(s.bytes_reserved_unused, 0);
    assert_invariants();
  }
}

/* --------------------------------------------------------- ENOMEM retries */

Test(retry, enomem_on_big_size_retries_at_half) {
  cr_assert_eq(osmem_init(), 0);
  fi_install();
  fi.exact = EXACT_ALIGNED;
  fi.fail_above = OSMEM__RESERVE_FIRST / 2;
  struct osmem_stats s0 = stats_now();
  fi_clear_log();
  char *p = osmem_get_mblocks(1);
  struct osmem_stats s1 = stats_now();
  cr_assert_not_null(p);
  cr_assert(is_mblock_aligned(p) && osmem_is_heap(p));
  assert_invariants();
  struct map_call r[MAX_LOG];
  size_t half = OSMEM__RESERVE_FIRST / 2;
  cr_assert_eq(reserve_calls(r), 3);
  cr_assert_eq(r[0].len, OSMEM__RESERVE_FIRST);
  cr_assert_eq(r[0].ret, MAP_FAILED);
  cr_assert_eq(r[1].kind, TRIM, "the trim path is tried too");
  cr_assert_eq(r[1].ret, MAP_FAILED);
  cr_assert_eq(r[2].len, half);
  cr_assert_neq(r[2].ret, MAP_FAILED);
  assert_calls_logged(s0, s1);
  cr_assert_eq(s1.reserve_retries, s0.reserve_retries + 1);
  cr_assert_eq(s1.reservations, 1);
  cr_assert_eq(s1.bytes_mapped, half);
  cr_assert_eq(s1.bytes_reserved_unused, half - MB);
  cr_assert_eq(p, (char *)r[2].ret + half - MB);
}

Test(retry, every_size_refused_fails_with_state_unchanged) {
  char *base = use_up_first_reservation();
  fi_install();
  fi.fail_above = 0;
  struct osmem_stats s0 = stats_now();
  fi_clear_log();
  errno = 0;
  cr_assert_null(osmem_get_mblocks(1));
  cr_assert_eq(errno, ENOMEM);
  struct osmem_stats s1 = stats_now();
  assert_invariants();
  assert_same_state(s0, s1);
  assert_calls_logged(s0, s1);
  cr_assert_eq(fi.n_unmaps, 0);
  /* 32 MiB halved down to the grain, 2 MiB: 32, 16, 8, 4, 2, each tried at
   * the hint, exactly, and over-allocated. */
  struct map_call r[MAX_LOG];
  int n = reserve_calls(r);
  cr_assert_eq(n, 15, "%d reservation calls", n);
  size_t size = 2 * OSMEM__RESERVE_FIRST;
  for (int i = 0; i < 5; i++, size /= 2) {
    cr_assert_eq(r[3 * i].kind, HINTED);
    cr_assert_eq(r[3 * i].addr, base - size);
    cr_assert_eq(r[3 * i].len, size);
    cr_assert_eq(r[3 * i + 1].kind, EXACT);
    cr_assert_eq(r[3 * i + 1].len, size);
    cr_assert_eq(r[3 * i + 2].kind, TRIM);
    cr_assert_eq(r[3 * i + 2].len, size + MB - page());
  }
  cr_assert_eq(size, OSMEM__RESERVE_GRAIN / 2, "stopped at the grain");
  cr_assert_eq(s1.reserve_retries - s0.reserve_retries, 4);
  fi.fail_above = SIZE_MAX;
  char *p = osmem_get_mblocks(1);
  cr_assert_not_null(p, "works again once the OS agrees");
  cr_assert_eq(stats_now().reservations, 2);
  assert_invariants();
}

/* ------------------------------------------------------- countdown sweep */

/* The sweep forks a child per k (library state starts fresh in each; the
 * parent never touches the library). Children report through shared
 * memory and their exit status, never through Criterion (child-check.h). */
#define SCHECK CHILD_CHECK

struct run {
  char *p;
  size_t n;
};
static struct run live[8];
static int nlive;

static bool same_state(struct osmem_stats a, struct osmem_stats b) {
  return a.mblocks_in_use == b.mblocks_in_use &&
         a.mblocks_pooled == b.mblocks_pooled &&
         a.pool_ranges == b.pool_ranges && a.bytes_mapped == b.bytes_mapped &&
         a.bytes_reserved_unused == b.bytes_reserved_unused &&
         a.reservations == b.reservations;
}

static void step_get(size_t n) {
  struct osmem_stats s0 = stats_now();
  errno = 0;
  char *p = osmem_get_mblocks(n);
  struct osmem_stats s1 = stats_now();
  SCHECK(osmem__check_invariants() == 0);
  if (!p) {
    SCHECK(errno == ENOMEM);
    SCHECK(same_state(s0, s1));
    return;
  }
  SCHECK(is_mblock_aligned(p));
  SCHECK(osmem_is_heap(p) && osmem_is_heap(p + n * MB - 1));
  SCHECK(s1.mblocks_in_use == s0.mblocks_in_use + n);
  for (int i = 0; i < nlive; i++)
    SCHECK(p + n * MB <= live[i].p || p >= live[i].p + live[i].n * MB);
  p[0] = 1; /* mapped and writable */
  p[n * MB - 1] = 1;
  live[nlive++] = (struct run){p, n};
}

static void step_free(int i) {
  if (i >= nlive) return;
  SCHECK(osmem_free_mblocks(live[i].p, live[i].n) == 0);
  SCHECK(!osmem_is_heap(live[i].p));
  SCHECK(osmem__check_invariants() == 0);
  live[i] = live[--nlive];
}

static void step_release(void) {
  struct osmem_stats s0 = stats_now();
  size_t r = osmem_release_free_memory();
  struct osmem_stats s1 = stats_now();
  SCHECK(osmem__check_invariants() == 0);
  /* Release first moves thread-cached megablocks to the pool. */
  SCHECK(s1.mblocks_cached == 0);
  /* The pool, and the current reservation's unused tail. */
  SCHECK(r == (s0.mblocks_pooled + s0.mblocks_cached - s1.mblocks_pooled) * MB +
                  (s0.bytes_reserved_unused - s1.bytes_reserved_unused));
  SCHECK(s0.bytes_mapped - s1.bytes_mapped == r);
}

/* get 1, get 40, free the 40, get 3, release, get 100; then free all. */
static void script(void) {
  step_get(1);
  step_get(40);
  for (int i = 0; i < nlive; i++)
    if (live[i].n == 40) step_free(i);
  step_get(3);
  step_release();
  step_get(100);
  for (int i = 0; i < nlive; i++) /* all still handed out */
    SCHECK(osmem_is_heap(live[i].p) && live[i].p[0] == 1);
  while (nlive > 0) step_free(0);
  step_release();
  step_release(); /* only one call fails: the second try gets the rest */
  struct osmem_stats s = stats_now();
  SCHECK(s.mblocks_in_use == 0);
  SCHECK(s.mblocks_pooled == 0);
  SCHECK(s.bytes_mapped == s.bytes_reserved_unused);
}

enum target { FAIL_MMAP, FAIL_MUNMAP };

/* Runs the script with call k of the target failing. 0: it failed and all
 * was well; 1: it never came (the sweep is over); 2: a check failed. */
static int run_child(enum target t, long k, bool hostile) {
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    fi_install();
    if (hostile) { /* every path that unmaps is taken */
      fi.hint = HINT_IGNORED_MISALIGNED;
      fi.exact = EXACT_MISALIGNED;
      fi.trim = TRIM_OFFSET;
    }
    if (t == FAIL_MMAP)
      fi.mmap_fail_at = k;
    else
      fi.munmap_fail_at = k;
    script();
    _exit(fi.fired ? 0 : 1);
  }
  int status;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFEXITED(status), "k=%ld: child killed by signal %d", k,
            WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  return WEXITSTATUS(status);
}

static void sweep(enum target t, bool hostile, long min_calls) {
  child_report_map();
  long k;
  for (k = 0; k < 500; k++) {
    child_report->line = 0;
    int code = run_child(t, k, hostile);
    cr_assert_neq(code, 2, "%s call %ld failing: check at line %d failed",
                  t == FAIL_MMAP ? "mmap" : "munmap", k, child_report->line);
    cr_assert(code == 0 || code == 1, "k=%ld: exit status %d", k, code);
    if (code == 1) break;
  }
  cr_assert_lt(k, 500, "the sweep never ended");
  cr_assert_geq(k, min_calls, "only %ld calls were swept", k);
}

/* The minimum counts are what the script makes at the least. Real
 * placement: mmap for nodes, the first reservation, its heap map leaf, and
 * one for each later reservation (40, 100); munmap for the two releases.
 * Hostile placement (hints ignored, exact mappings misaligned, so every
 * reservation takes all the paths that apply): mmap 4 for the first get
 * (nodes, exact, trim, leaf) and 3 for each later reservation (hinted, exact,
 * trim); munmap 3 for the first (exact, head, tail), 4 for each later one,
 * and one per release. */
Test(sweep, each_mmap_failing_in_turn) { sweep(FAIL_MMAP, false, 5); }
Test(sweep, each_munmap_failing_in_turn) { sweep(FAIL_MUNMAP, false, 2); }
Test(sweep, each_mmap_failing_in_turn_hostile_placement) {
  sweep(FAIL_MMAP, true, 10);
}
Test(sweep, each_munmap_failing_in_turn_hostile_placement) {
  sweep(FAIL_MUNMAP, true, 13);
}

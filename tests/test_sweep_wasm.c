/*
 * The fault sweep over the wasm backend's one system call, memory.grow
 * (osmem/wasm/sys.h): the wasm counterpart of tests/test_sweep.c. A
 * scripted workload that grows memory in every way the backend does
 * (megablock reservations, the gaps below them, bookkeeping, sbrk) runs once
 * per injection point: grow k is refused, either once or from k on. After
 * every step the answer must be one the header documents, the library's
 * invariants must hold, live megablocks must keep their contents, and every
 * byte the library grew must be accounted for (held as megablocks, or in the
 * break's or the bookkeeping room: wasm memory cannot be given back, so a
 * byte grown and then forgotten is lost for good); once the grows stop
 * failing, the library must work.
 *
 * Hostile placement: another grower (malloc in another thread) moves the end
 * of memory between the library's memory.size and its memory.grow, by
 * amounts that put the end off the megablock grid or leave a grow short.
 *
 * wasm cannot fork, so each case runs in this process on a fake linear
 * memory: an arena grown once, whose end the table moves, and the library
 * forgets its state between cases (osmem__forget_everything) the way a
 * fresh process starts. Nothing may call malloc while a case runs (malloc's
 * sbrk would take memory from the arena), so failures are reported after.
 */
#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "osmem/wasm/sys.h"
#include "sweep-fault.h"

#ifndef __wasi__
#error "tests/test_sweep_wasm.c is built for the wasm backend only"
#endif

#define MB ((uint64_t)OSMEM_MBLOCK_SIZE)
#define PAGE ((uint64_t)OSMEM__WASM_PAGE)
#define ARENA_BYTES ((uint64_t)96 << 20)
#define MAX_POINTS 400

static struct {
  uint64_t lo, hi; /* the arena, in real memory */
  uint64_t end;    /* the fake end of memory */
  uint64_t grown;  /* bytes the library grew (not the other grower) */
  bool hostile;
  unsigned foreign; /* grows by the other grower */
} fake;

static size_t fake_size(void) { return (size_t)(fake.end / PAGE); }

/* What the other grower adds in front of a grow: 1 page (the end leaves the
 * grid), 16 pages (a whole megablock: a grow sized from memory.size falls
 * short), or 3 pages, in turn. */
static uint64_t foreign_growth(void) {
  static const uint64_t pages[] = {1, 16, 3};
  return pages[fake.foreign++ % 3] * PAGE;
}

static size_t fake_grow(size_t pages) {
  if (fake.hostile && fake.end + 16 * PAGE <= fake.hi)
    fake.end += foreign_growth();
  if (fault_due()) return SIZE_MAX; /* which grow: sweep-fault.h */
  uint64_t bytes = (uint64_t)pages * PAGE;
  if (bytes > fake.hi - fake.end) return SIZE_MAX; /* the arena's limit */
  uint64_t old = fake.end;
  fake.end += bytes;
  fake.grown += bytes;
  return (size_t)(old / PAGE);
}

/* The first check that fails, kept until the case is over. */
static int failed_line;
#define CHECK(c)                                      \
  do {                                                \
    if (!(c) && !failed_line) failed_line = __LINE__; \
  } while (0)

/* ------------------------------------------------------------ the script */

/* Every byte the library grew is held as megablocks or sits in a room. */
static bool all_accounted(void) {
  struct osmem_stats s;
  osmem_stats(&s);
  return fake.grown == s.bytes_mapped + osmem__wasm_room_bytes;
}

#define SWEEP_STEP_CHECK() all_accounted()
#define SWEEP_NODE_GET_ERROR(e) ((e) == ENOMEM)
#include "sweep-script.h"

/* Linear memory cannot hold address space without memory: always ENOSYS,
 * and nothing grows. */
static void reservation(void) {
  uint64_t before = fake.grown;
  errno = 0;
  CHECK(osmem_reserve(64 * MB, 0, NULL, NULL) == NULL && errno == ENOSYS);
  CHECK(fake.grown == before);
  check_live();
}

/* sbrk (the replacement malloc calls) grows memory through the same table,
 * when n is more than the room left. A refusal is ENOMEM and leaves the
 * break where it was. */
static void break_up_and_down(intptr_t N) {
#ifdef OSMEM_WASM_SBRK
  char *b0 = sbrk(0);
  errno = 0;
  char *p = sbrk(N);
  if (p == (void *)-1) {
    CHECK(errno == ENOMEM && sbrk(0) == b0);
  } else {
    p[0] = 1, p[N - 1] = 2;
    CHECK(sbrk(0) == p + N);
    CHECK(sbrk(-N) == p + N && sbrk(0) == p);
  }
  check_live();
#else
  (void)N;
#endif
}

/* Every way the backend grows: sbrk at the end of memory and away from
 * it, the first reservation (heap map and pool
 * nodes set aside first), gets served fresh and from the pool, a node get,
 * bookkeeping, a release and a teardown (which pool on wasm). */
static void script(void) {
  /* First, while the break's room ends at the end of memory: the second
   * grows that room in place, or, when another grower got in between, moves
   * the break to a new region, which a grow sized for the old room leaves
   * short (a second grow then, whose refusal must put the break back). */
  break_up_and_down(300 * 1024);
  break_up_and_down(600 * 1024);
  osmem_init();
  (void)osmem_refresh_physical_memory();
  get(1);
  get(3);
  get_on_node0(2);
  break_up_and_down(2 * 1024 * 1024);
  get(12);
  free_run(1);
  free_run(0);
  reservation();
  get(2);
  (void)osmem_release_free_memory();
  check_live();
  get(20);
  while (nlive > 0) free_run(0);
  CHECK(osmem_teardown() == 0);
  check_live();
}

/* Once grows stop failing, the library works: everything a program needs. */
/* ---------------------------------------------------------------- driver */

/* Makes the arena once: the fake memory every case starts from. */
static void make_arena(void) {
  if (fake.lo) return;
  size_t old = __builtin_wasm_memory_grow(0, (size_t)(ARENA_BYTES / PAGE));
  cr_assert_neq(old, SIZE_MAX, "could not grow the %llu MiB arena",
                (unsigned long long)(ARENA_BYTES >> 20));
  fake.lo = (uint64_t)old * PAGE;
  fake.hi = fake.lo + ARENA_BYTES;
}

/* Runs the script with grow k refused (once, or from k on); returns whether
 * the refusal happened (false: the script made fewer than k + 1 grows).
 * failed_line says which check failed, if one did. */
static bool run_case(long k, bool from_k_on, bool hostile) {
  struct osmem__wasm_rooms real_rooms, fresh = {0};
  osmem__forget_everything();
  osmem__wasm_rooms_save(&real_rooms);
  osmem__wasm_rooms_restore(&fresh);
  fake.end = fake.lo, fake.grown = 0, fake.foreign = 0;
  fake.hostile = hostile;
  fault_arm(k, from_k_on);
  failed_line = 0, nlive = 0;
  osmem__wasm_sys.memory_size = fake_size;
  osmem__wasm_sys.memory_grow = fake_grow;
  script();
  bool fired = fault.fired;
  works_again();
  /* Back to real memory before anything may call malloc. */
  osmem__forget_everything();
  osmem__wasm_sys_reset();
  osmem__wasm_rooms_restore(&real_rooms);
  return fired;
}

static void sweep(bool hostile) {
  make_arena();
  long points = 0, grows = 0;
  for (int mode = 0; mode < 2; mode++) {
    long k;
    for (k = 0; k < MAX_POINTS; k++) {
      bool fired = run_case(k, mode == 1, hostile);
      cr_assert_eq(failed_line, 0,
                   "grow %ld refused (%s%s): check at line %d failed", k,
                   mode ? "from then on" : "once",
                   hostile ? ", hostile placement" : "", failed_line);
      if (!fired) break;
      points++;
    }
    cr_assert_lt(k, MAX_POINTS, "the sweep never ended");
    if (k > grows) grows = k;
  }
  cr_assert_geq(grows, 5, "the script made only %ld grows", grows);
  printf("sweep: wasm memory.grow%s: %ld injection points (%ld grows in the "
         "script, once and from then on)\n",
         hostile ? " (hostile placement)" : "", points, grows);
  fflush(stdout);
}

Test(sweep_wasm, memory_grow) { sweep(false); }
Test(sweep_wasm, memory_grow_hostile_placement) { sweep(true); }

/* The sweep's accounting can fail: a grow the library does not know of is
 * caught by the first check after it. */
Test(sweep_wasm, accounting_sees_a_lost_grow) {
  make_arena();
  struct osmem__wasm_rooms real_rooms, fresh = {0};
  osmem__forget_everything();
  osmem__wasm_rooms_save(&real_rooms);
  osmem__wasm_rooms_restore(&fresh);
  fake.end = fake.lo, fake.grown = 0, fake.hostile = false;
  fault.on = false;
  osmem__wasm_sys.memory_size = fake_size;
  osmem__wasm_sys.memory_grow = fake_grow;
  void *p = osmem_get_mblocks(1);
  bool before = all_accounted();
  (void)osmem__wasm_grow(PAGE); /* grown behind the library's back */
  bool after = all_accounted();
  if (p) osmem_free_mblocks(p, 1);
  osmem__forget_everything();
  osmem__wasm_sys_reset();
  osmem__wasm_rooms_restore(&real_rooms);
  cr_assert_not_null(p);
  cr_assert(before, "accounting off before the lost grow");
  cr_assert(!after, "a lost 64 KiB grow went unnoticed");
}

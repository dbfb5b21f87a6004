/*
 * The fault sweep over the whole POSIX system-call table (osmem/posix/sys.h):
 * a scripted workload that makes every kind of call the backend makes (mmap,
 * munmap, madvise, mprotect, mbind, get_mempolicy, open, read, close) runs
 * once per injection point: call k of one kind fails with one errno the OS
 * documents for it, either once or from k on. After every step of the script
 * the answer must be one the header documents, the library's invariants must
 * hold and live megablocks must keep their contents; once the faults stop,
 * the library must work. Each run is a child process (state starts fresh);
 * the parent never calls the library. The number of injection points
 * covered is printed ("sweep: ...").
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "child-check.h"
#include "sweep-fault.h"

#include "../osmem/posix/sys.h"

#define MB OSMEM_MBLOCK_SIZE

enum call { MMAP, MUNMAP, MADVISE, MPROTECT, MBIND, GET_MEMPOLICY, OPEN, READ,
            CLOSE, CALLS };
static const char *call_name[CALLS] = {"mmap", "munmap", "madvise", "mprotect",
                                       "mbind", "get_mempolicy", "open",
                                       "read", "close"};
/* The errors each call documents (its man page), the ones a library can
 * meet without a bug of its own. */
static const int call_errs[CALLS][5] = {
    [MMAP] = {ENOMEM, EAGAIN, EINVAL, EPERM},
    [MUNMAP] = {ENOMEM, EINVAL},
    [MADVISE] = {EINVAL, EAGAIN, ENOMEM, EIO},
    [MPROTECT] = {ENOMEM, EACCES, EINVAL},
    [MBIND] = {EIO, EINVAL, EFAULT, ENOMEM, EPERM},
    [GET_MEMPOLICY] = {EINVAL, EFAULT, ENOSYS},
    [OPEN] = {ENOENT, EACCES, EMFILE, EINTR},
    [READ] = {EIO, EINTR, EAGAIN},
    [CLOSE] = {EIO, EINTR},
};

static struct {
  enum call target; /* the kind of call that fails (sweep-fault.h: which) */
  int err;
  bool hostile; /* hints ignored, reservations never aligned */
} sw;

static struct osmem__posix_sys real;

/* Whether this call of `c` fails (errno set). */
static bool fails(enum call c) {
  if (c != sw.target || !fault_due()) return false;
  errno = sw.err;
  return true;
}

/* Hostile placement: every reservation (MAP_NORESERVE) lands where it was
 * not asked for and off the megablock grid, so every path that misses and
 * undoes a mapping is taken. */
static void *misplaced(size_t l, int p, int f, int fd, off_t o) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
#ifdef MAP_FIXED_NOREPLACE
  f &= ~MAP_FIXED_NOREPLACE;
#endif
  char *q = real.mmap(NULL, l + page, p, f, fd, o);
  if (q == MAP_FAILED) return q;
  if (((uintptr_t)q + page) % MB == 0) { /* then q itself is off the grid */
    real.munmap(q + l, page);
    return q;
  }
  real.munmap(q, page);
  return q + page;
}

static void *f_mmap(void *a, size_t l, int p, int f, int fd, off_t o) {
  if (fails(MMAP)) return MAP_FAILED;
  if (sw.hostile && (f & MAP_NORESERVE)) return misplaced(l, p, f, fd, o);
  return real.mmap(a, l, p, f, fd, o);
}
static int f_munmap(void *a, size_t l) {
  return fails(MUNMAP) ? -1 : real.munmap(a, l);
}
static int f_madvise(void *a, size_t l, int adv) {
  return fails(MADVISE) ? -1 : real.madvise(a, l, adv);
}
static int f_mprotect(void *a, size_t l, int p) {
  return fails(MPROTECT) ? -1 : real.mprotect(a, l, p);
}
static long f_mbind(void *a, unsigned long l, int m, const unsigned long *nm,
                    unsigned long mx, unsigned fl) {
  return fails(MBIND) ? -1 : real.mbind(a, l, m, nm, mx, fl);
}
static long f_get_mempolicy(int *m, unsigned long *nm, unsigned long mx,
                            void *a, unsigned long fl) {
  return fails(GET_MEMPOLICY) ? -1 : real.get_mempolicy(m, nm, mx, a, fl);
}
static int f_open(const char *p, int fl) {
  return fails(OPEN) ? -1 : real.open(p, fl);
}
static ssize_t f_read(int fd, void *b, size_t l) {
  return fails(READ) ? -1 : real.read(fd, b, l);
}
static int f_close(int fd) {
  if (fails(CLOSE)) {
    real.close(fd); /* the descriptor is gone either way (close(2)) */
    return -1;
  }
  return real.close(fd);
}

static void install(void) {
  real = osmem__posix_sys;
  osmem__posix_sys.mmap = f_mmap;
  osmem__posix_sys.munmap = f_munmap;
  osmem__posix_sys.madvise = f_madvise;
  osmem__posix_sys.mprotect = f_mprotect;
  osmem__posix_sys.mbind = f_mbind;
  osmem__posix_sys.get_mempolicy = f_get_mempolicy;
  osmem__posix_sys.open = f_open;
  osmem__posix_sys.read = f_read;
  osmem__posix_sys.close = f_close;
}

/* ------------------------------------------------------------ the script */

#define CHECK CHILD_CHECK /* child-check.h */
#define SWEEP_STEP_CHECK() true
/* ENOMEM, or the error of binding the node's new reservation. */
#define SWEEP_NODE_GET_ERROR(e) ((e) != 0)
#include "sweep-script.h"

static void reservation(void) {
  size_t got = 0;
  errno = 0;
  char *r = osmem_reserve(64 * MB, 0, NULL, &got);
  if (!r) {
    CHECK(errno == ENOMEM);
    return;
  }
  CHECK(got >= MB && got <= 64 * MB);
  int err = osmem_commit(r, MB);
  CHECK(err == 0 || err == ENOMEM);
  if (err == 0) {
    r[0] = 1;
    err = osmem_decommit(r, MB);
    CHECK(err == 0 || err == EINVAL || err == EAGAIN || err == ENOMEM ||
          err == EIO);
  }
  err = osmem_unreserve(r);
  CHECK(err == 0 || err == ENOMEM || err == EINVAL);
  check_live();
}

/* Every kind of call: init (NUMA topology), physical memory (files), gets
 * plain and on a node, frees over a small threshold (madvise), a release
 * (munmap), a reservation (mprotect, madvise, munmap), and a teardown. */
static void script(void) {
  osmem_init();
  (void)osmem_refresh_physical_memory();
  CHECK(osmem_set_decommit_threshold(0) == (size_t)64 << 20);
  get(1);
  get(3);
  get_on_node0(2);
  get(40);
  free_run(1);
  free_run(0);
  reservation();
  get(2);
  (void)osmem_release_free_memory();
  check_live();
  get(100);
  while (nlive > 0) free_run(0);
  CHECK(osmem_teardown() == 0 || fault.fired);
}

/* ---------------------------------------------------------------- driver */

/* 0: the fault fired and all was well; 1: call k never came; 2: a check
 * failed (child_report->line). */
static int run_child(enum call c, long k, int err, bool from_k_on,
                     bool hostile) {
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    install();
    sw.target = c, sw.err = err, sw.hostile = hostile;
    fault_arm(k, from_k_on);
    script();
    bool fired = fault.fired;
    works_again();
    _exit(fired ? 0 : 1);
  }
  int status;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFEXITED(status), "%s call %ld failing with %s: killed by signal %d",
            call_name[c], k, strerror(err),
            WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  return WEXITSTATUS(status);
}

static void sweep_call(enum call c, bool hostile) {
  child_report_map();
  long points = 0, calls = 0;
  for (int e = 0; e < 5 && call_errs[c][e]; e++)
    for (int mode = 0; mode < 2; mode++) {
      long k;
      for (k = 0; k < 400; k++) {
        child_report->line = 0;
        int code = run_child(c, k, call_errs[c][e], mode == 1, hostile);
        cr_assert_neq(code, 2, "%s call %ld failing (%s, %s): check at line %d",
                      call_name[c], k, strerror(call_errs[c][e]),
                      mode ? "from then on" : "once", child_report->line);
        cr_assert(code == 0 || code == 1, "exit status %d", code);
        if (code == 1) break;
        points++;
      }
      cr_assert_lt(k, 400, "the sweep of %s never ended", call_name[c]);
      if (k > calls) calls = k;
    }
  printf("sweep: posix %s%s: %ld injection points (%ld calls in the script, "
         "each errno, once and from then on)\n",
         call_name[c], hostile ? " (hostile placement)" : "", points, calls);
  fflush(stdout);
  munmap(child_report, sizeof *child_report);
}

/* The script makes each kind of call at least this often, on any Linux
 * with NUMA in the kernel; without it (or libnuma) the NUMA calls are not
 * made at all, and their sweeps cover nothing, which is said. */
#define SWEEP(call, CALL)                                            \
  Test(sweep_all, call) { sweep_call(CALL, false); }                 \
  Test(sweep_all_hostile, call) { sweep_call(CALL, true); }
SWEEP(mmap, MMAP)
SWEEP(munmap, MUNMAP)
SWEEP(madvise, MADVISE)
SWEEP(mprotect, MPROTECT)
SWEEP(mbind, MBIND)
SWEEP(get_mempolicy, GET_MEMPOLICY)
SWEEP(open, OPEN)
SWEEP(read, READ)
SWEEP(close, CLOSE)

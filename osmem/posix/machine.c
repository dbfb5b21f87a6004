/*
 * The POSIX backend's init, lock, and plain memory calls: unmap, decommit,
 * bookkeeping memory and page size (physical memory: meminfo.c).
 */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>
#if HAVE_DECL_MEMBARRIER_CMD_PRIVATE_EXPEDITED && HAVE_DECL_SYS_MEMBARRIER
#define HAVE_MEMBARRIER 1
#include <linux/membarrier.h>
#include <sys/syscall.h>
#endif

#include "machine.h"
#include "sys.h"

size_t osmem__posix_page_size = 4096;

/* ------------------------------------------------------------------- lock */

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;

/* Held across fork() so that the child gets the pool in a consistent state
 * and the lock free (the forking thread is the one that unlocks it). */
static void before_fork(void) { pthread_mutex_lock(&pool_lock); }
static void after_fork_parent(void) { pthread_mutex_unlock(&pool_lock); }
static void after_fork_child(void) {
  osmem__fork_child_locked();
  pthread_mutex_unlock(&pool_lock);
}

/* Registered before the lock is first taken, so that no fork can ever find
 * it held without the handlers in place. pthread_atfork can only fail with
 * ENOMEM; the library then still works, but a child forked while another
 * thread holds the lock could find it held. */
static pthread_once_t fork_handlers_once = PTHREAD_ONCE_INIT;
static void register_fork_handlers(void) {
  (void)pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

void osmem__os_lock(void) {
  pthread_once(&fork_handlers_once, register_fork_handlers);
  pthread_mutex_lock(&pool_lock);
}

void osmem__os_unlock(void) { pthread_mutex_unlock(&pool_lock); }

/* ---------------------------------------------------- asymmetric barrier */

#ifdef HAVE_MEMBARRIER
static long membarrier(int cmd) { return syscall(SYS_membarrier, cmd, 0, 0); }

bool osmem__os_barrier_init(void) {
  int saved = errno; /* the library preserves errno where it can */
  bool ok = membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0;
  errno = saved;
  return ok;
}

/* Registered, it fails only for want of kernel memory for a CPU mask
 * (ENOMEM, with CONFIG_CPUMASK_OFFSTACK), which passes: the owners rely on
 * it, so it is retried until it is done. */
void osmem__os_barrier_all(void) {
  int saved = errno;
  while (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0) sched_yield();
  errno = saved;
}
#else
bool osmem__os_barrier_init(void) { return false; }
void osmem__os_barrier_all(void) { atomic_thread_fence(memory_order_seq_cst); }
#endif

void osmem__os_yield(void) { sched_yield(); }

uint64_t osmem__os_clock_ns(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return 0;
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ----------------------------------------------------------- thread exit */

/* A key whose destructor runs at thread exit for threads that set it. */
static pthread_key_t exit_key;
static int exit_key_err;
static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;

static void make_exit_key(void) {
  exit_key_err = pthread_key_create(&exit_key, osmem__thread_exit);
}

int osmem__os_at_thread_exit(void *arg) {
  pthread_once(&exit_key_once, make_exit_key);
  if (exit_key_err) return exit_key_err;
  return pthread_setspecific(exit_key, arg);
}

/* ------------------------------------------------------------------- init */

static size_t query_page_size(void) {
  long page = sysconf(_SC_PAGESIZE);
  return page > 0 ? (size_t)page : 4096;
}

/* Init probes what the system has, and a probe that says no sets errno
 * (get_mempolicy is ENOSYS where the kernel has no NUMA, as under
 * qemu-user; sysfs files may be missing): the caller's errno is kept. */
void osmem__os_init(struct osmem__os_caps *caps) {
  int saved = errno;
  osmem__posix_page_size = query_page_size();
  osmem__posix_numa_init();
  errno = saved;
  *caps = (struct osmem__os_caps){
      .name = "posix",
      .page_size = osmem__posix_page_size,
      .can_unmap = true,
      .can_decommit = true,
      .cheap_reserve = true,
  };
}

/* --------------------------------------------------------------- memory */

size_t osmem__os_address_budget(void) {
  size_t budget = SIZE_MAX;
  int limits[] = {RLIMIT_AS, RLIMIT_DATA};
  for (size_t i = 0; i < sizeof limits / sizeof *limits; i++) {
    struct rlimit rl;
    if (getrlimit(limits[i], &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < budget)
      budget = (size_t)rl.rlim_cur;
  }
  return budget;
}

int osmem__os_unmap(void *p, size_t size) {
  return osmem__posix_munmap(p, size) == 0 ? 0 : errno;
}

/* Mappings given up whose munmap failed (it can: splitting a mapping needs
 * a new one, and the process may be at vm.max_map_count). The first 64 are
 * kept and tried again on every release and teardown; past that they are
 * lost address space, which takes 64 failures outstanding at once. */
#define STRANDED_MAX 64
static struct {
  void *p;
  size_t size;
} stranded[STRANDED_MAX];
static size_t stranded_count; /* lock */

void osmem__os_discard(void *p, size_t size) {
  if (osmem__posix_munmap(p, size) == 0 || stranded_count == STRANDED_MAX)
    return;
  stranded[stranded_count].p = p;
  stranded[stranded_count++].size = size;
}

size_t osmem__os_retry_discards(void) {
  size_t bytes = 0;
  for (size_t i = 0; i < stranded_count;) {
    if (osmem__posix_munmap(stranded[i].p, stranded[i].size) != 0) {
      i++;
      continue;
    }
    bytes += stranded[i].size;
    stranded[i] = stranded[--stranded_count];
  }
  return bytes;
}

#ifdef MADV_FREE
/* MADV_FREE (Linux 4.5, the BSDs, macOS) lets the kernel take the pages
 * lazily; kernels that lack it say EINVAL, and from then on MADV_DONTNEED. */
static atomic_bool madv_free_works = true;
#endif

int osmem__os_decommit(void *p, size_t size, bool eager) {
#ifdef MADV_FREE
  if (!eager && atomic_load_explicit(&madv_free_works, memory_order_relaxed)) {
    if (osmem__posix_madvise(p, size, MADV_FREE) == 0) return 0;
    if (errno != EINVAL) return errno;
    atomic_store_explicit(&madv_free_works, false, memory_order_relaxed);
  }
#endif
  return osmem__posix_madvise(p, size, MADV_DONTNEED) == 0 ? 0 : errno;
}

int osmem__os_meta_alloc(size_t size, void **out) {
  /* Not MAP_NORESERVE: bookkeeping is committed memory, though pages of it
   * mapped ahead of need are touched only when used. */
  void *p = osmem__posix_mmap(NULL, size, PROT_READ | PROT_WRITE, 0);
  if (p == NULL) osmem__os_discard(p, size); /* never at NULL */
  if (p == MAP_FAILED || p == NULL) return ENOMEM;
  *out = p;
  return 0;
}

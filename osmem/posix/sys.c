/* The system-call table of the POSIX backend (see sys.h). */
#include <config.h>

#include "sys.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#ifdef HAVE_LIBNUMA
#include <numaif.h>
#include <sys/syscall.h>
#endif

#ifndef MAP_ANONYMOUS
#define MAP_ANONYMOUS MAP_ANON
#endif

struct osmem__os_counters osmem__os_count;

#if defined(HAVE_LIBNUMA) && HAVE_DECL_SYS_MBIND && HAVE_DECL_SYS_GET_MEMPOLICY
/* The system calls themselves, as libnuma's wrappers make them: the
 * library then needs no libnuma at run time (configure.ac says why). */
static long real_mbind(void *addr, unsigned long len, int mode,
                       const unsigned long *nodemask, unsigned long maxnode,
                       unsigned flags) {
  return syscall(SYS_mbind, addr, len, (long)mode, nodemask, maxnode, flags);
}

static long real_get_mempolicy(int *mode, unsigned long *nodemask,
                               unsigned long maxnode, void *addr,
                               unsigned long flags) {
  return syscall(SYS_get_mempolicy, mode, nodemask, maxnode, addr, flags);
}
#elif defined(HAVE_LIBNUMA)
static long real_mbind(void *addr, unsigned long len, int mode,
                       const unsigned long *nodemask, unsigned long maxnode,
                       unsigned flags) {
  return mbind(addr, len, mode, nodemask, maxnode, flags);
}

static long real_get_mempolicy(int *mode, unsigned long *nodemask,
                               unsigned long maxnode, void *addr,
                               unsigned long flags) {
  return get_mempolicy(mode, nodemask, maxnode, addr, flags);
}
#else
static long real_mbind(void *addr, unsigned long len, int mode,
                       const unsigned long *nodemask, unsigned long maxnode,
                       unsigned flags) {
  (void)addr, (void)len, (void)mode, (void)nodemask, (void)maxnode,
      (void)flags;
  errno = ENOSYS;
  return -1;
}

static long real_get_mempolicy(int *mode, unsigned long *nodemask,
                               unsigned long maxnode, void *addr,
                               unsigned long flags) {
  (void)mode, (void)nodemask, (void)maxnode, (void)addr, (void)flags;
  errno = ENOSYS;
  return -1;
}
#endif

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif

/* open(2) is variadic; the table's entry is not. */
static int real_open(const char *path, int flags) { return open(path, flags); }

static const struct osmem__posix_sys real_sys = {
    mmap, munmap, madvise, real_mbind, real_get_mempolicy,
    real_open, read, close, mprotect,
};

struct osmem__posix_sys osmem__posix_sys = {
    mmap, munmap, madvise, real_mbind, real_get_mempolicy,
    real_open, read, close, mprotect,
};

void osmem__posix_sys_reset(void) { osmem__posix_sys = real_sys; }

static void bump(atomic_uint_least64_t *counter) {
  atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
}

void *osmem__posix_mmap(void *addr, size_t len, int prot, int flags) {
  bump(&osmem__os_count.maps);
  return osmem__posix_sys.mmap(addr, len, prot,
                               flags | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

int osmem__posix_mprotect(void *addr, size_t len, int prot) {
  bump(&osmem__os_count.mprotect);
  return osmem__posix_sys.mprotect(addr, len, prot);
}

int osmem__posix_munmap(void *addr, size_t len) {
  bump(&osmem__os_count.unmaps);
  return osmem__posix_sys.munmap(addr, len);
}

int osmem__posix_madvise(void *addr, size_t len, int advice) {
  bump(&osmem__os_count.madvise);
  return osmem__posix_sys.madvise(addr, len, advice);
}

long osmem__posix_mbind(void *addr, unsigned long len, int mode,
                        const unsigned long *nodemask, unsigned long maxnode,
                        unsigned flags) {
  bump(&osmem__os_count.mbind);
  return osmem__posix_sys.mbind(addr, len, mode, nodemask, maxnode, flags);
}

int osmem__posix_open(const char *path) {
  return osmem__posix_sys.open(path, O_RDONLY | O_CLOEXEC);
}

ssize_t osmem__posix_read(int fd, void *buf, size_t len) {
  for (int tries = 0;; tries++) {
    ssize_t got = osmem__posix_sys.read(fd, buf, len);
    if (got >= 0 || errno != EINTR || tries == 100) return got;
  }
}

void osmem__posix_close(int fd) {
  int saved = errno;
  (void)osmem__posix_sys.close(fd); /* read-only: nothing to lose */
  errno = saved;
}

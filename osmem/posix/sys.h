/*
 * Every system call the POSIX backend makes goes through this table, and
 * nowhere else. Tests replace entries to make a call fail, or return an
 * address of their choosing, on demand (fault injection); the counted
 * wrappers below keep osmem_stats honest whichever entry is installed.
 */
#ifndef OSMEM_POSIX_SYS_H
#define OSMEM_POSIX_SYS_H

#include <stddef.h>
#include <sys/types.h>

#include "../backend.h"

struct osmem__posix_sys {
  void *(*mmap)(void *addr, size_t len, int prot, int flags, int fd, off_t off);
  int (*munmap)(void *addr, size_t len);
  int (*madvise)(void *addr, size_t len, int advice);
  /* mbind(2); the default fails with ENOSYS when built without libnuma. */
  long (*mbind)(void *addr, unsigned long len, int mode,
                const unsigned long *nodemask, unsigned long maxnode,
                unsigned flags);
  /* get_mempolicy(2); the same. */
  long (*get_mempolicy)(int *mode, unsigned long *nodemask,
                        unsigned long maxnode, void *addr, unsigned long flags);
  /* Reading small files (/proc, cgroupfs): open(2) read-only, read(2),
   * close(2). */
  int (*open)(const char *path, int flags);
  ssize_t (*read)(int fd, void *buf, size_t len);
  int (*close)(int fd);
  int (*mprotect)(void *addr, size_t len, int prot);
};

/* The table in use. Tests may assign entries; osmem__posix_sys_reset()
 * puts the real calls back. */
OSMEM_HIDDEN extern struct osmem__posix_sys osmem__posix_sys;
OSMEM_HIDDEN void osmem__posix_sys_reset(void);

/* Counted calls: each bumps its osmem__os_count counter, then calls the
 * table. They return what the system call returns and leave errno as it set
 * it. */
OSMEM_HIDDEN void *osmem__posix_mmap(void *addr, size_t len, int prot,
                                     int flags);
OSMEM_HIDDEN int osmem__posix_mprotect(void *addr, size_t len, int prot);
OSMEM_HIDDEN int osmem__posix_munmap(void *addr, size_t len);
OSMEM_HIDDEN int osmem__posix_madvise(void *addr, size_t len, int advice);
OSMEM_HIDDEN long osmem__posix_mbind(void *addr, unsigned long len, int mode,
                                     const unsigned long *nodemask,
                                     unsigned long maxnode, unsigned flags);

/* Not counted: file reads through the table, so that tests can make them
 * fail. osmem__posix_open opens read-only and close-on-exec; -1 and errno on
 * failure, as open(2). osmem__posix_read retries EINTR a bounded number of
 * times, otherwise as read(2). */
OSMEM_HIDDEN int osmem__posix_open(const char *path);
OSMEM_HIDDEN ssize_t osmem__posix_read(int fd, void *buf, size_t len);
OSMEM_HIDDEN void osmem__posix_close(int fd);

#endif /* OSMEM_POSIX_SYS_H */

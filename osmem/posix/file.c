/* Small files from /proc and /sys, read into the caller's fixed buffer
 * through the system-call table (sys.h), so that tests can make them fail. */
#include <config.h>

#include <errno.h>

#include "machine.h"
#include "sys.h"

/* A missing file is an answer (no such node, no such limit), not an error
 * of the caller's: errno is kept. */
long osmem__posix_read_file(const char *path, char *buf, size_t size) {
  if (size == 0) return -1;
  int saved = errno;
  int fd = osmem__posix_open(path);
  errno = saved;
  if (fd < 0) return -1;
  size_t used = 0;
  while (used + 1 < size) {
    ssize_t got = osmem__posix_read(fd, buf + used, size - 1 - used);
    if (got <= 0) break;
    used += (size_t)got;
  }
  osmem__posix_close(fd);
  buf[used] = '\0';
  errno = saved;
  return (long)used;
}

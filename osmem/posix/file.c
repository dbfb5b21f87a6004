/* Small files from /proc and /sys, read into the caller's fixed buffer. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "machine.h"

long osmem__posix_read_file(const char *path, char *buf, size_t size) {
  if (size == 0) return -1;
  int fd;
  do fd = open(path, O_RDONLY | O_CLOEXEC); while (fd < 0 && errno == EINTR);
  if (fd < 0) return -1;
  size_t used = 0;
  while (used + 1 < size) {
    ssize_t got = read(fd, buf + used, size - 1 - used);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    used += (size_t)got;
  }
  close(fd);
  buf[used] = '\0';
  return (long)used;
}

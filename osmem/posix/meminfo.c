/*
 * The pieces of physical memory (backend.h, osmem__os_memory_info): the
 * machine's RAM, the cgroup's memory limit (cgroup.c) and RLIMIT_AS. The
 * common code takes the lowest.
 *
 * RAM: sysctl where configure found sysctlbyname and <sys/sysctl.h> (macOS
 * hw.memsize, 64 bits; FreeBSD hw.physmem, an unsigned long), else
 * sysconf(_SC_PHYS_PAGES) times the page size.
 */
#include <config.h>

#include <errno.h>
#include <stdint.h>
#include <sys/resource.h>
#include <unistd.h>

#if defined(HAVE_SYSCTLBYNAME) && defined(HAVE_SYS_SYSCTL_H)
#include <sys/types.h>
#include <sys/sysctl.h>
#define OSMEM_RAM_BY_SYSCTL 1
#endif

#include "osmem.h"

#include "cgroup.h"
#include "machine.h"

uint64_t osmem__posix_ram(void) {
#ifdef OSMEM_RAM_BY_SYSCTL
  static const char *const names[] = {"hw.memsize", "hw.physmem"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    union {
      uint64_t u64;
      uint32_t u32;
    } v = {0};
    size_t len = sizeof v;
    if (sysctlbyname(names[i], &v, &len, NULL, 0) != 0) continue;
    if (len == sizeof v.u64 && v.u64 != 0) return v.u64;
    if (len == sizeof v.u32 && v.u32 != 0) return v.u32;
  }
#endif
#ifdef _SC_PHYS_PAGES
  long pages = sysconf(_SC_PHYS_PAGES);
  if (pages > 0) return (uint64_t)pages * osmem__posix_page_size;
#endif
  return 0;
}

static uint64_t rlimit_as(void) {
#ifdef RLIMIT_AS
  struct rlimit rl;
  /* A 64-bit limit of UINT64_MAX reads as OSMEM_UNLIMITED, as it should. */
  if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      rl.rlim_cur > 0)
    return (uint64_t)rl.rlim_cur;
#endif
  return OSMEM_UNLIMITED;
}

uint64_t osmem__os_ram(void) { return osmem__posix_ram(); }

void osmem__os_memory_info(struct osmem_memory_info *out) {
  int saved_errno = errno;
  struct osmem__cgroup_limits cg;
  osmem__cgroup_read("", &cg);
  out->ram = osmem__posix_ram();
  out->cgroup_max = cg.max;
  out->cgroup_high = cg.high;
  out->cgroup_version = cg.version;
  out->rlimit_as = rlimit_as();
  errno = saved_errno;
}

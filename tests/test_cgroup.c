/*
 * Physical memory: the cgroup reader on fixture trees (tests/fixtures/cgroup,
 * written by generate.py there), the same trees under short reads, EINTR and
 * failed opens and reads, the public API on this machine (RAM, cgroup,
 * RLIMIT_AS, refresh), and one real cgroup: as root, a child moved into a
 * fresh 256 MiB memory cgroup must see 256 MiB.
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

#include "../osmem/posix/cgroup.h"
#include "../osmem/posix/sys.h"

#ifndef CGROUP_FIXTURES
#error "CGROUP_FIXTURES must name tests/fixtures/cgroup (see Makefile.am)"
#endif

#define MiB ((uint64_t)1 << 20)
#define GiB ((uint64_t)1 << 30)
#define U OSMEM_UNLIMITED

/* ------------------------------------------------------------ fixtures */

struct expect {
  const char *name;
  uint64_t max, high;
  unsigned version;
};

/* What each fixture of generate.py must read as. */
static const struct expect cases[] = {
    {"v1", 512 * MiB, U, 1},
    {"v2", 1 * GiB, 768 * MiB, 2},
    {"v2_parent_lower", 256 * MiB, 900 * MiB, 2},
    {"v1_parent_lower", 384 * MiB, U, 1},
    {"hybrid", 768 * MiB, U, 1},
    {"hybrid_v2_lower", 1536 * MiB, U, 2},
    {"hybrid_v1_lower", 1 * GiB, U, 1},
    {"unlimited_v1", U, U, 1},
    {"unlimited_v2", U, U, 2},
    {"v2_root", U, U, 2},
    {"moved", 300 * MiB, U, 2},
    {"namespaced", 200 * MiB, U, 1},
    {"dotdot", 118 * MiB, U, 2},
    {"missing_files", 640 * MiB, 600 * MiB, 2},
    {"no_proc_cgroup", U, U, 0},
    {"no_mountinfo", U, U, 0},
    {"no_memory_controller", U, U, 0},
    {"none", U, U, 0},
    {"garbage_values", 700 * MiB, U, 2},
    {"garbage_v1", U, U, 1},
    {"garbage_proc", 450 * MiB, U, 1},
    {"binary_proc", U, U, 0},
    {"long_paths", U, U, 0},
    {"escaped", 100 * MiB, U, 2},
    {"two_mounts", 150 * MiB, U, 2},
    {"v1_nohierarchy", 512 * MiB, U, 1},
    {"does-not-exist", U, U, 0},
};
#define NCASES (sizeof cases / sizeof cases[0])

static const struct expect *find_case(const char *name) {
  for (size_t i = 0; i < NCASES; i++)
    if (strcmp(cases[i].name, name) == 0) return &cases[i];
  return NULL;
}

static const char *fixture(const char *name) {
  static char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", CGROUP_FIXTURES, name);
  return path;
}

static struct osmem__cgroup_limits read_fixture(const char *name) {
  struct osmem__cgroup_limits got;
  memset(&got, 0x5A, sizeof got);
  osmem__cgroup_read(fixture(name), &got);
  return got;
}

static void check_case(const struct expect *e, const char *how) {
  struct osmem__cgroup_limits got = read_fixture(e->name);
  cr_expect_eq(got.max, e->max, "%s%s: max %llu, want %llu", e->name, how,
               (unsigned long long)got.max, (unsigned long long)e->max);
  cr_expect_eq(got.high, e->high, "%s%s: high %llu, want %llu", e->name, how,
               (unsigned long long)got.high, (unsigned long long)e->high);
  cr_expect_eq(got.version, e->version, "%s%s: version %u, want %u", e->name,
               how, got.version, e->version);
}

#define FIXTURE_TEST(id)                                       \
  Test(cgroup_fixture, id) {                                   \
    const struct expect *e = find_case(#id);                   \
    cr_assert_not_null(e);                                     \
    check_case(e, "");                                         \
  }

FIXTURE_TEST(v1)
FIXTURE_TEST(v2)
FIXTURE_TEST(v2_parent_lower)
FIXTURE_TEST(v1_parent_lower)
FIXTURE_TEST(hybrid)
FIXTURE_TEST(hybrid_v2_lower)
FIXTURE_TEST(hybrid_v1_lower)
FIXTURE_TEST(unlimited_v1)
FIXTURE_TEST(unlimited_v2)
FIXTURE_TEST(v2_root)
FIXTURE_TEST(moved)
FIXTURE_TEST(namespaced)
FIXTURE_TEST(dotdot)
FIXTURE_TEST(missing_files)
FIXTURE_TEST(no_proc_cgroup)
FIXTURE_TEST(no_mountinfo)
FIXTURE_TEST(no_memory_controller)
FIXTURE_TEST(none)
FIXTURE_TEST(garbage_values)
FIXTURE_TEST(garbage_v1)
FIXTURE_TEST(garbage_proc)
FIXTURE_TEST(binary_proc)
FIXTURE_TEST(long_paths)
FIXTURE_TEST(escaped)
FIXTURE_TEST(two_mounts)
FIXTURE_TEST(v1_nohierarchy)

Test(cgroup_fixture, missing_root_directory) {
  check_case(find_case("does-not-exist"), "");
}

/* Every fixture directory is in the table, so none goes untested. */
Test(cgroup_fixture, every_fixture_has_an_expectation) {
  DIR *d = opendir(CGROUP_FIXTURES);
  cr_assert_not_null(d, "%s: %s", CGROUP_FIXTURES, strerror(errno));
  size_t dirs = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    struct stat st;
    if (e->d_name[0] == '.') continue;
    if (stat(fixture(e->d_name), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    dirs++;
    cr_expect_not_null(find_case(e->d_name), "fixture %s has no expectation",
                       e->d_name);
  }
  closedir(d);
  cr_assert_eq(dirs, NCASES - 1, "%zu fixture directories", dirs);
}

Test(cgroup_fixture, null_out_and_null_root) {
  osmem__cgroup_read(fixture("v2"), NULL); /* nothing to fill: no crash */
  struct osmem__cgroup_limits a, b;
  osmem__cgroup_read(NULL, &a);
  osmem__cgroup_read("", &b);
  cr_assert_eq(a.max, b.max);
  cr_assert_eq(a.high, b.high);
  cr_assert_eq(a.version, b.version);
}

Test(cgroup_fixture, errno_is_preserved) {
  struct osmem__cgroup_limits got;
  errno = 4242;
  osmem__cgroup_read(fixture("missing_files"), &got); /* fails opens */
  cr_assert_eq(errno, 4242);
  cr_assert_eq(got.max, 640 * MiB);
}

/* ----------------------------------------------------- the system calls */

/* A table entry wrapper that can misbehave: short reads, EINTR, failing the
 * k-th open or read. It also checks every open is closed. */
static struct {
  long opens, reads, closes_ok, opens_ok;
  long fail_open_at, fail_read_at; /* 0-based call index; -1: never */
  bool fail_all_opens, fail_all_reads;
  bool one_byte, eintr;
  bool eintr_next;
  const char *redirect; /* prefix every opened path with this */
} fake;

static void fake_reset(void) {
  memset(&fake, 0, sizeof fake);
  fake.fail_open_at = fake.fail_read_at = -1;
}

static int fake_open(const char *path, int flags) {
  long i = fake.opens++;
  if (i == fake.fail_open_at || fake.fail_all_opens) {
    errno = EACCES;
    return -1;
  }
  int fd;
  if (fake.redirect) {
    char full[PATH_MAX * 2];
    snprintf(full, sizeof full, "%s%s", fake.redirect, path);
    fd = open(full, flags);
  } else {
    fd = open(path, flags);
  }
  if (fd >= 0) fake.opens_ok++;
  return fd;
}

static ssize_t fake_read(int fd, void *buf, size_t len) {
  long i = fake.reads++;
  if (i == fake.fail_read_at || fake.fail_all_reads) {
    errno = EIO;
    return -1;
  }
  if (fake.eintr) {
    fake.eintr_next = !fake.eintr_next;
    if (fake.eintr_next) {
      errno = EINTR;
      return -1;
    }
  }
  return read(fd, buf, fake.one_byte && len > 1 ? 1 : len);
}

static int fake_close(int fd) {
  int r = close(fd);
  if (r == 0) fake.closes_ok++;
  return r;
}

static void fake_install(void) {
  osmem__posix_sys.open = fake_open;
  osmem__posix_sys.read = fake_read;
  osmem__posix_sys.close = fake_close;
}

static void fake_remove(void) { osmem__posix_sys_reset(); }

Test(cgroup_syscalls, one_byte_reads_give_the_same_answers) {
  fake_reset();
  fake.one_byte = true;
  fake_install();
  for (size_t i = 0; i < NCASES; i++) check_case(&cases[i], " (1-byte reads)");
  fake_remove();
  cr_assert_gt(fake.reads, 1000, "the fake read was not used");
  cr_assert_eq(fake.opens_ok, fake.closes_ok, "a file was left open");
}

Test(cgroup_syscalls, eintr_is_retried) {
  fake_reset();
  fake.eintr = true;
  fake_install();
  for (size_t i = 0; i < NCASES; i++) check_case(&cases[i], " (EINTR)");
  fake_remove();
  cr_assert_gt(fake.reads, 100, "the fake read was not used");
  cr_assert_eq(fake.opens_ok, fake.closes_ok, "a file was left open");
}

/* Fails the k-th open, or the k-th read, for every k until a run makes no
 * more calls than k: every run must end with each file closed, and a failure
 * can only take limits away (the answer never drops below the true one). */
static void sweep(const char *name, bool reads) {
  const struct expect *e = find_case(name);
  cr_assert_not_null(e);
  long k;
  for (k = 0; k < 1000; k++) {
    fake_reset();
    if (reads)
      fake.fail_read_at = k;
    else
      fake.fail_open_at = k;
    fake_install();
    struct osmem__cgroup_limits got = read_fixture(name);
    fake_remove();
    long calls = reads ? fake.reads : fake.opens;
    cr_assert_eq(fake.opens_ok, fake.closes_ok, "%s, k=%ld: a file left open",
                 name, k);
    cr_assert_geq(got.max, e->max, "%s, k=%ld: max %llu below %llu", name, k,
                  (unsigned long long)got.max, (unsigned long long)e->max);
    cr_assert_geq(got.high, e->high, "%s, k=%ld", name, k);
    cr_assert_leq(got.version, 2u, "%s, k=%ld", name, k);
    if (calls <= k) { /* nothing failed: the exact answer */
      cr_assert_eq(got.max, e->max, "%s: max without faults", name);
      cr_assert_eq(got.high, e->high, "%s: high without faults", name);
      cr_assert_eq(got.version, e->version, "%s: version", name);
      break;
    }
    if (k == 0 && !reads) /* /proc/self/cgroup unreadable: nothing found */
      cr_assert_eq(got.version, 0u, "%s: version with no /proc/self/cgroup",
                   name);
  }
  cr_assert_gt(k, 3, "%s: too few calls to sweep", name);
  cr_assert_lt(k, 1000, "%s: the sweep never ended", name);
}

Test(cgroup_syscalls, failed_opens_fall_back) {
  sweep("v2_parent_lower", false);
  sweep("v1_parent_lower", false);
  sweep("hybrid_v2_lower", false);
  sweep("garbage_proc", false);
  sweep("namespaced", false);
}

Test(cgroup_syscalls, failed_reads_fall_back) {
  sweep("v2_parent_lower", true);
  sweep("v1_parent_lower", true);
  sweep("hybrid_v2_lower", true);
  sweep("garbage_proc", true);
  sweep("namespaced", true);
}

/* --------------------------------------------------- the public API */

static uint64_t ram_now(void) {
  return (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
}

static uint64_t rlimit_now(void) {
  struct rlimit rl;
  cr_assert_eq(getrlimit(RLIMIT_AS, &rl), 0);
  return rl.rlim_cur == RLIM_INFINITY ? U : (uint64_t)rl.rlim_cur;
}

/* The most a process of this build can address: 4 GiB on 32-bit. */
static uint64_t address_space(void) {
  return SIZE_MAX < UINT64_MAX ? (uint64_t)SIZE_MAX + 1 : UINT64_MAX;
}

/* The lowest known piece and its source, ties going to RAM, then cgroup;
 * RAM counts as far as the address space holds it. */
static void expected_physical(uint64_t ram, uint64_t cg, uint64_t rl,
                              uint64_t *phys, enum osmem_memory_source *src) {
  *phys = 0;
  *src = OSMEM_MEMORY_UNKNOWN;
  if (ram > address_space()) ram = address_space();
  if (ram) *phys = ram, *src = OSMEM_MEMORY_RAM;
  if (cg != U && (*phys == 0 || cg < *phys))
    *phys = cg, *src = OSMEM_MEMORY_CGROUP;
  if (rl != U && (*phys == 0 || rl < *phys))
    *phys = rl, *src = OSMEM_MEMORY_RLIMIT;
}

static struct osmem_memory_info info_now(void) {
  struct osmem_memory_info m;
  memset(&m, 0xA5, sizeof m);
  osmem_memory_info(&m);
  return m;
}

Test(memory_api, physical_is_the_lowest_piece_on_this_machine) {
  struct osmem_memory_info m = info_now();
  struct osmem__cgroup_limits cg;
  osmem__cgroup_read("", &cg);
  cr_assert_eq(m.ram, ram_now());
  cr_assert_gt(m.ram, 0);
  cr_assert_eq(m.cgroup_max, cg.max);
  cr_assert_eq(m.cgroup_high, cg.high);
  cr_assert_eq(m.cgroup_version, cg.version);
  cr_assert_eq(m.rlimit_as, rlimit_now());
  uint64_t want;
  enum osmem_memory_source src;
  expected_physical(m.ram, cg.max, m.rlimit_as, &want, &src);
  cr_assert_eq(m.physical, want);
  cr_assert_eq(m.source, src);
  for (size_t i = 0; i < sizeof m.reserved_for_abi / sizeof m.reserved_for_abi[0]; i++)
    cr_assert_eq(m.reserved_for_abi[i], 0);
  cr_assert_eq(osmem_physical_memory(), want);
  cr_assert_eq(osmem_refresh_physical_memory(), want);
  cr_assert_eq(osmem_physical_memory(), want);
}

/* This machine's cgroup, read independently (simply: only where the memory
 * hierarchy is mounted with "/" as its root): cgroup_max must be the lowest
 * limit file on the way up. */
Test(memory_api, this_machines_cgroup_read_independently) {
  char line[8192], path[4096] = "", mnt[4096] = "";
  int version = 0;
  FILE *f = fopen("/proc/self/cgroup", "r");
  if (!f) cr_skip_test("no /proc/self/cgroup: no cgroups here");
  char v1[4096] = "", v2[4096] = "";
  bool have_v1 = false, have_v2 = false;
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = '\0';
    char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (!c2) continue;
    *c2 = '\0';
    if (strncmp(line, "0:", 2) == 0 && c1 + 1 == c2)
      have_v2 = snprintf(v2, sizeof v2, "%s", c2 + 1) > 0;
    else if (strstr(c1 + 1, "memory"))
      have_v1 = snprintf(v1, sizeof v1, "%s", c2 + 1) > 0;
  }
  fclose(f);
  f = fopen("/proc/self/mountinfo", "r");
  cr_assert_not_null(f);
  while (fgets(line, sizeof line, f)) {
    char root[4096], point[4096];
    if (sscanf(line, "%*s %*s %*s %4095s %4095s", root, point) != 2) continue;
    const char *dash = strstr(line, " - ");
    if (!dash || strcmp(root, "/") != 0) continue;
    if (have_v1 && strncmp(dash, " - cgroup ", 10) == 0 &&
        strstr(dash, "memory")) {
      snprintf(mnt, sizeof mnt, "%s", point);
      snprintf(path, sizeof path, "%s", v1);
      version = 1;
      break;
    }
    if (have_v2 && strncmp(dash, " - cgroup2 ", 11) == 0) {
      char probe[8300];
      snprintf(probe, sizeof probe, "%s%s/memory.max", point, v2);
      if (access(probe, R_OK) != 0) continue; /* no memory controller */
      snprintf(mnt, sizeof mnt, "%s", point);
      snprintf(path, sizeof path, "%s", v2);
      version = 2;
    }
  }
  fclose(f);
  if (version == 0) cr_skip_test("no memory cgroup mounted at its root here");
  uint64_t lowest = U;
  size_t n = strlen(path);
  for (;;) {
    char file[8300];
    snprintf(file, sizeof file, "%s%.*s/%s", mnt, (int)n, path,
             version == 1 ? "memory.limit_in_bytes" : "memory.max");
    FILE *lf = fopen(file, "r");
    if (lf) {
      unsigned long long x;
      if (fscanf(lf, "%llu", &x) == 1 && x > 0 && x < ((uint64_t)1 << 62) &&
          x < lowest)
        lowest = x;
      fclose(lf);
    }
    if (n <= 1) break;
    while (n > 0 && path[n - 1] != '/') n--;
    if (n > 1) n--; /* drop the slash, except the root's */
  }
  struct osmem_memory_info m = info_now();
  cr_assert_eq(m.cgroup_max, lowest, "library %llu, direct %llu",
               (unsigned long long)m.cgroup_max, (unsigned long long)lowest);
  cr_assert_neq(m.cgroup_version, 0u);
}

Test(memory_api, rlimit_below_ram_is_reported_after_refresh) {
  struct osmem_memory_info before = info_now();
  cr_assert_gt(before.physical, 64 * MiB);
  /* Below all the pieces and page aligned. A 32-bit rlim_t holds it (2^32
   * - 1 is RLIM_INFINITY there): physical memory is at most the 4 GiB of
   * the address space. */
  uint64_t lim = before.physical - 16 * MiB;
  cr_assert_lt(lim, (uint64_t)(rlim_t)RLIM_INFINITY, "%llu fits no rlim_t",
               (unsigned long long)lim);
  struct rlimit old;
  lower_rlimit_as((rlim_t)lim, &old);

  cr_assert_eq(osmem_physical_memory(), before.physical, "cached: no refresh");
  uint64_t got = osmem_refresh_physical_memory();
  struct osmem_memory_info after = info_now();
  cr_assert_eq(setrlimit(RLIMIT_AS, &old), 0);

  cr_assert_eq(got, lim);
  cr_assert_eq(after.physical, lim);
  cr_assert_eq(after.rlimit_as, lim);
  cr_assert_eq(after.source, OSMEM_MEMORY_RLIMIT);
  cr_assert_lt(after.physical, after.ram);
  cr_assert_eq(after.ram, before.ram);
  cr_assert_eq(after.cgroup_max, before.cgroup_max);

  /* raised again: the next refresh sees it */
  cr_assert_eq(osmem_physical_memory(), lim, "cached: no refresh");
  cr_assert_eq(osmem_refresh_physical_memory(), before.physical);
  struct osmem_memory_info again = info_now();
  cr_assert_eq(again.source, before.source);
  cr_assert_eq(again.rlimit_as, before.rlimit_as);
}

/* A 32-bit process cannot use more than its 4 GiB of address space, so it
 * is told no more, from RAM, where the machine has more RAM and no lower
 * limit; osmem_physical_ram() and the ram piece stay the installed RAM. */
Test(memory_api, physical_memory_fits_the_address_space) {
  struct osmem_memory_info m = info_now();
  cr_assert_eq(m.ram, ram_now());
  cr_assert_eq(osmem_physical_ram(), ram_now(), "RAM is not capped");
  cr_assert_leq(m.physical, address_space());
  if (m.ram <= address_space() || m.cgroup_max <= address_space() ||
      m.rlimit_as <= address_space())
    return; /* nothing to cap: 64-bit, less RAM, or a lower limit */
  cr_assert_eq(m.physical, address_space());
  cr_assert_eq(m.source, OSMEM_MEMORY_RAM);
  cr_assert_lt(m.physical, osmem_physical_ram());
}

Test(memory_api, memory_info_null_is_a_no_op) {
  uint64_t p = osmem_physical_memory();
  errno = 0;
  osmem_memory_info(NULL);
  cr_assert_eq(errno, 0);
  cr_assert_eq(osmem_physical_memory(), p);
}

Test(memory_api, errno_is_preserved) {
  errno = 4242;
  uint64_t p = osmem_refresh_physical_memory();
  cr_assert_eq(errno, 4242);
  cr_assert_gt(p, 0);
}

/* The public API, made to read fixture trees by an open() that prefixes
 * every path: the cgroup's limit, a refresh after the "machine" changed, and
 * the fall back to RAM when opens or reads fail. */
enum fault { NO_FAULT, FIRST_OPEN, EVERY_OPEN, FIRST_READ, EVERY_READ };

static struct osmem_memory_info refresh_with(const char *fixture_name,
                                             enum fault fault) {
  osmem_init(); /* before the fake: init's own reads stay real */
  fake_reset();
  fake.redirect = fixture(fixture_name);
  fake.fail_open_at = fault == FIRST_OPEN ? 0 : -1;
  fake.fail_read_at = fault == FIRST_READ ? 0 : -1;
  fake.fail_all_opens = fault == EVERY_OPEN;
  fake.fail_all_reads = fault == EVERY_READ;
  fake_install();
  osmem_refresh_physical_memory();
  fake_remove();
  return info_now();
}

Test(memory_api, cgroup_limit_and_refresh_after_change) {
  uint64_t rl = rlimit_now();
  uint64_t ram = ram_now();
  if (rl < GiB) cr_skip_test("RLIMIT_AS is below the fixtures' limits");
  if (ram <= GiB) cr_skip_test("RAM is below the fixtures' limits");
  struct osmem_memory_info m = refresh_with("v2", NO_FAULT);
  cr_assert_eq(m.physical, 1 * GiB);
  cr_assert_eq(m.source, OSMEM_MEMORY_CGROUP);
  cr_assert_eq(m.cgroup_max, 1 * GiB);
  cr_assert_eq(m.cgroup_high, 768 * MiB);
  cr_assert_eq(m.cgroup_version, 2);
  cr_assert_eq(m.ram, ram, "RAM is not read from files");
  cr_assert_eq(osmem_physical_memory(), 1 * GiB, "cached");

  m = refresh_with("v1_parent_lower", NO_FAULT);
  cr_assert_eq(m.physical, 384 * MiB);
  cr_assert_eq(m.source, OSMEM_MEMORY_CGROUP);
  cr_assert_eq(m.cgroup_version, 1);
  cr_assert_eq(m.cgroup_high, U);

  m = refresh_with("none", NO_FAULT);
  cr_assert_eq(m.cgroup_version, 0);
  cr_assert_eq(m.cgroup_max, U);
  uint64_t want;
  enum osmem_memory_source src;
  expected_physical(ram, U, rl, &want, &src);
  cr_assert_eq(m.physical, want);
  cr_assert_eq(m.source, src);
}

static void assert_fell_back(struct osmem_memory_info m, const char *how) {
  uint64_t want;
  enum osmem_memory_source src;
  expected_physical(ram_now(), U, rlimit_now(), &want, &src);
  cr_assert_eq(m.cgroup_version, 0, "%s", how);
  cr_assert_eq(m.cgroup_max, U, "%s", how);
  cr_assert_eq(m.cgroup_high, U, "%s", how);
  cr_assert_eq(m.physical, want, "%s", how);
  cr_assert_eq(m.source, src, "%s", how);
  cr_assert_eq(osmem_physical_memory(), want, "%s", how);
}

Test(memory_api, failing_open_falls_back_to_ram) {
  if (rlimit_now() < GiB) cr_skip_test("RLIMIT_AS is below the fixtures' limits");
  struct osmem_memory_info m = refresh_with("v2", NO_FAULT);
  cr_assert_eq(m.source, OSMEM_MEMORY_CGROUP, "the fixture is seen");
  assert_fell_back(refresh_with("v2", FIRST_OPEN), "first open fails");
  assert_fell_back(refresh_with("v2", EVERY_OPEN), "every open fails");
  cr_assert_gt(fake.opens, 0, "the fake open was not used");
}

Test(memory_api, failing_read_falls_back_to_ram) {
  if (rlimit_now() < GiB) cr_skip_test("RLIMIT_AS is below the fixtures' limits");
  struct osmem_memory_info m = refresh_with("v2", NO_FAULT);
  cr_assert_eq(m.source, OSMEM_MEMORY_CGROUP, "the fixture is seen");
  assert_fell_back(refresh_with("v2", FIRST_READ), "first read fails");
  assert_fell_back(refresh_with("v2", EVERY_READ), "every read fails");
  cr_assert_gt(fake.reads, 0, "the fake read was not used");
  /* the fixture again: a refresh without faults recovers */
  m = refresh_with("v2", NO_FAULT);
  cr_assert_eq(m.physical, 1 * GiB);
}

/* ------------------------------------------------------ a real cgroup */

#define REAL_LIMIT (256 * MiB)

static bool write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY);
  if (fd < 0) return false;
  ssize_t len = (ssize_t)strlen(text);
  bool ok = write(fd, text, (size_t)len) == len;
  return close(fd) == 0 && ok;
}

static bool file_has_word(const char *path, const char *word) {
  char buf[1024];
  FILE *f = fopen(path, "r");
  if (!f) return false;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  for (char *t = strtok(buf, " \n"); t; t = strtok(NULL, " \n"))
    if (strcmp(t, word) == 0) return true;
  return false;
}

/* Finds the mount point of the v2 hierarchy (version 2) or of the v1 memory
 * hierarchy (version 1). */
static bool find_mount(int version, char *out, size_t cap) {
  FILE *f = fopen("/proc/self/mountinfo", "r");
  if (!f) return false;
  char line[8192];
  bool found = false;
  while (!found && fgets(line, sizeof line, f)) {
    char point[4096];
    if (sscanf(line, "%*s %*s %*s %*s %4095s", point) != 1) continue;
    const char *dash = strstr(line, " - ");
    if (!dash) continue;
    if (version == 2 && strncmp(dash, " - cgroup2 ", 11) == 0) found = true;
    if (version == 1 && strncmp(dash, " - cgroup ", 10) == 0 &&
        strstr(dash + 10, "memory"))
      found = true;
    if (found) snprintf(out, cap, "%s", point);
  }
  fclose(f);
  return found;
}

/* Makes dir, a fresh cgroup with a 256 MiB hard limit: v2 where the memory
 * controller is there, else v1. NULL, or why it could not. */
static const char *make_real_cgroup(char *dir, size_t cap, int *version) {
  static char why[1024];
  char mnt[4096], file[8300], limit[32];
  snprintf(limit, sizeof limit, "%llu", (unsigned long long)REAL_LIMIT);
  snprintf(why, sizeof why, "no cgroup file system mounted");
  if (find_mount(2, mnt, sizeof mnt)) {
    snprintf(file, sizeof file, "%s/cgroup.controllers", mnt);
    if (!file_has_word(file, "memory")) {
      snprintf(why, sizeof why, "cgroup v2 at %.200s has no memory controller", mnt);
    } else {
      snprintf(file, sizeof file, "%s/cgroup.subtree_control", mnt);
      (void)write_file(file, "+memory");
      snprintf(dir, cap, "%s/osmem-test-%ld", mnt, (long)getpid());
      snprintf(file, sizeof file, "%s/memory.max", dir);
      if (mkdir(dir, 0755) != 0) {
        snprintf(why, sizeof why, "mkdir %.200s: %s", dir, strerror(errno));
      } else if (!write_file(file, limit)) {
        snprintf(why, sizeof why, "writing %.200s: %s", file, strerror(errno));
        rmdir(dir);
      } else {
        *version = 2;
        return NULL;
      }
    }
  }
  if (find_mount(1, mnt, sizeof mnt)) {
    snprintf(dir, cap, "%s/osmem-test-%ld", mnt, (long)getpid());
    snprintf(file, sizeof file, "%s/memory.limit_in_bytes", dir);
    if (mkdir(dir, 0755) != 0) {
      snprintf(why + strlen(why), sizeof why - strlen(why),
               "; v1: mkdir %.200s: %s", dir, strerror(errno));
    } else if (!write_file(file, limit)) {
      snprintf(why + strlen(why), sizeof why - strlen(why),
               "; v1: writing %.200s: %s", file, strerror(errno));
      rmdir(dir);
    } else {
      *version = 1;
      return NULL;
    }
  } else {
    snprintf(why + strlen(why), sizeof why - strlen(why),
             "; no cgroup v1 memory hierarchy");
  }
  return why;
}

static void remove_real_cgroup(const char *dir) {
  /* The child has been reaped; a v2 cgroup can stay busy for a moment
   * while the kernel finishes with it. */
  for (int i = 0; i < 200 && rmdir(dir) != 0 && errno == EBUSY; i++)
    usleep(10000);
}

Test(real_cgroup, child_in_a_256_mib_cgroup_sees_it) {
  if (geteuid() != 0)
    cr_skip_test("not root: cannot create a cgroup to move a child into");
  char dir[4200];
  int version = 0;
  const char *why = make_real_cgroup(dir, sizeof dir, &version);
  if (why) cr_skip_test("cannot create a memory cgroup here: %s", why);

  int go[2], back[2];
  cr_assert_eq(pipe(go), 0);
  cr_assert_eq(pipe(back), 0);
  pid_t pid = fork();
  if (pid < 0) {
    rmdir(dir);
    cr_assert_fail("fork: %s", strerror(errno));
  }
  if (pid == 0) { /* the child: no Criterion asserts here */
    close(go[1]);
    close(back[0]);
    char c;
    if (read(go[0], &c, 1) != 1 || c != 'y') _exit(2);
    struct osmem_memory_info m[2];
    uint64_t phys = osmem_physical_memory(); /* the first call: reads now */
    osmem_memory_info(&m[0]);
    m[0].physical = phys;
    osmem_refresh_physical_memory();
    osmem_memory_info(&m[1]);
    _exit(write(back[1], m, sizeof m) == (ssize_t)sizeof m ? 0 : 3);
  }
  close(go[0]);
  close(back[1]);
  char file[4300], pidtext[32];
  snprintf(file, sizeof file, "%s/cgroup.procs", dir);
  snprintf(pidtext, sizeof pidtext, "%ld", (long)pid);
  bool moved = write_file(file, pidtext);
  int move_errno = errno;
  ssize_t w = write(go[1], moved ? "y" : "n", 1);
  (void)w;
  close(go[1]);
  struct osmem_memory_info m[2];
  ssize_t got = read(back[0], m, sizeof m);
  close(back[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  remove_real_cgroup(dir);
  struct stat st;
  bool left = stat(dir, &st) == 0;

  if (!moved)
    cr_skip_test("cannot move a process into %s: %s", dir, strerror(move_errno));
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "the child failed (status %d)", status);
  cr_assert_eq(got, (ssize_t)sizeof m);
  cr_expect_not(left, "%s could not be removed", dir);
  for (int i = 0; i < 2; i++) {
    const char *when = i ? "after refresh" : "first call";
    cr_assert_eq(m[i].cgroup_max, REAL_LIMIT, "%s: cgroup_max %llu", when,
                 (unsigned long long)m[i].cgroup_max);
    cr_assert_eq(m[i].cgroup_version, (unsigned)version, "%s", when);
    if (m[i].ram > REAL_LIMIT && m[i].rlimit_as > REAL_LIMIT) {
      cr_assert_eq(m[i].physical, REAL_LIMIT, "%s: physical %llu", when,
                   (unsigned long long)m[i].physical);
      cr_assert_eq(m[i].source, OSMEM_MEMORY_CGROUP, "%s", when);
    }
  }
}

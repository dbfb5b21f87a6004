/*
 * Checks inside a forked child, for the fault sweeps: a child must not
 * report through the test framework (it runs in the parent), so the first
 * check that fails writes its line to memory shared with the parent and the
 * child exits with status 2; the parent reads child_report->line.
 */
#ifndef OSMEM_TESTS_CHILD_CHECK_H
#define OSMEM_TESTS_CHILD_CHECK_H

#include <sys/mman.h>
#include <unistd.h>

struct child_report {
  int line;
};
static struct child_report *child_report;

/* Maps the shared report (once per test; the parent then forks). */
static inline void child_report_map(void) {
  child_report = mmap(NULL, sizeof *child_report, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  cr_assert_neq(child_report, MAP_FAILED);
}

#define CHILD_CHECK(c)                 \
  do {                                 \
    if (!(c)) {                        \
      child_report->line = __LINE__;   \
      _exit(2);                        \
    }                                  \
  } while (0)

#endif /* OSMEM_TESTS_CHILD_CHECK_H */

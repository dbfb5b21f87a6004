/*
 * minicr: the subset of Criterion's API that the libosmem suites use, for
 * targets Criterion cannot run on (wasm32-wasi: no fork, threads or
 * sockets). The same test sources build against either.
 *
 * A test program built with it:
 *   --list        prints "suite::name" for every test, one a line;
 *   --run NAME    runs that one test: exit 0 pass, 1 fail, 77 skip;
 *   (no argument) runs every test, in order, and prints a summary line.
 *                 Where there is fork, each test runs in a child
 *                 process of its own, as under Criterion, and the summary is
 *                 Criterion's "Synthesis" line (exit 0 when none failed, 77
 *                 when all skipped, else 1): `make check` runs the suites so
 *                 (configure --enable-minicr-tests). Elsewhere (wasm,
 *                 Windows) they all run in this one process and state
 *                 carries over, so the runners (tests/wasm/suite.sh) use
 *                 --list and --run, one fresh instance per test.
 * Test options (.timeout, ...) are accepted and ignored.
 */
#ifndef OSMEM_TESTS_MINICR_H
#define OSMEM_TESTS_MINICR_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if !defined(__wasi__) && !defined(_WIN32) /* fork */
#include <errno.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

/* mingw: check formats as its C99 stdio takes them (%zu), not msvcrt's. */
#ifdef __MINGW_PRINTF_FORMAT
#define MINICR_PRINTF __MINGW_PRINTF_FORMAT
#else
#define MINICR_PRINTF printf
#endif

struct minicr_test {
  const char *suite, *name;
  void (*fn)(void);
};

#define MINICR_MAX_TESTS 256
static struct minicr_test minicr_tests[MINICR_MAX_TESTS];
static int minicr_count;
static const struct minicr_test *minicr_current;

static inline void minicr_register(const char *suite, const char *name,
                                   void (*fn)(void)) {
  if (minicr_count < MINICR_MAX_TESTS)
    minicr_tests[minicr_count++] = (struct minicr_test){suite, name, fn};
}

#define Test(suite, name, ...)                                             \
  static void minicr_fn_##suite##_##name(void);                            \
  __attribute__((constructor)) static void minicr_reg_##suite##_##name(    \
      void) {                                                              \
    minicr_register(#suite, #name, minicr_fn_##suite##_##name);            \
  }                                                                        \
  static void minicr_fn_##suite##_##name(void)

__attribute__((format(MINICR_PRINTF, 4, 5), noreturn)) static inline void
minicr_fail(const char *file, int line, const char *expr, const char *fmt,
            ...) {
  fprintf(stderr, "[----] %s:%d: Assertion Failed\n[----]   %s\n", file, line,
          expr);
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "[----]  ");
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n[FAIL] %s::%s\n", minicr_current->suite,
          minicr_current->name);
  fflush(NULL);
  exit(1);
}

__attribute__((format(MINICR_PRINTF, 1, 2), noreturn)) static inline void
minicr_skip(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "[SKIP] %s::%s:", minicr_current->suite,
          minicr_current->name);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  fflush(NULL);
  exit(77);
}

/* " " __VA_ARGS__: an optional printf-style message after the condition. */
#define cr_assert(cond, ...)                                               \
  do {                                                                     \
    if (!(cond)) minicr_fail(__FILE__, __LINE__, #cond, " " __VA_ARGS__);  \
  } while (0)
#define cr_assert_not(cond, ...) cr_assert(!(cond), __VA_ARGS__)
#define cr_assert_eq(a, b, ...) cr_assert((a) == (b), __VA_ARGS__)
#define cr_assert_neq(a, b, ...) cr_assert((a) != (b), __VA_ARGS__)
#define cr_assert_lt(a, b, ...) cr_assert((a) < (b), __VA_ARGS__)
#define cr_assert_leq(a, b, ...) cr_assert((a) <= (b), __VA_ARGS__)
#define cr_assert_gt(a, b, ...) cr_assert((a) > (b), __VA_ARGS__)
#define cr_assert_geq(a, b, ...) cr_assert((a) >= (b), __VA_ARGS__)
#define cr_assert_null(p, ...) cr_assert((p) == NULL, __VA_ARGS__)
#define cr_assert_not_null(p, ...) cr_assert((p) != NULL, __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...) cr_assert(strcmp((a), (b)) == 0, __VA_ARGS__)
#define cr_assert_fail(...) minicr_fail(__FILE__, __LINE__, "fail", " " __VA_ARGS__)
#define cr_skip_test(...) minicr_skip(" " __VA_ARGS__)
/* Criterion's cr_expect_* go on after a failure; here they stop the test at
 * once, which fails it all the same. */
#define cr_expect(cond, ...) cr_assert(cond, __VA_ARGS__)
#define cr_expect_not(cond, ...) cr_assert_not(cond, __VA_ARGS__)
#define cr_expect_eq(a, b, ...) cr_assert_eq(a, b, __VA_ARGS__)
#define cr_expect_neq(a, b, ...) cr_assert_neq(a, b, __VA_ARGS__)
#define cr_expect_null(p, ...) cr_assert_null(p, __VA_ARGS__)
#define cr_expect_not_null(p, ...) cr_assert_not_null(p, __VA_ARGS__)
#define cr_expect_str_eq(a, b, ...) cr_assert_str_eq(a, b, __VA_ARGS__)

static int minicr_run_one(const struct minicr_test *t) {
  minicr_current = t;
  t->fn();
  fprintf(stderr, "[PASS] %s::%s\n", t->suite, t->name);
  return 0;
}

static const struct minicr_test *minicr_find(const char *full) {
  for (int i = 0; i < minicr_count; i++) {
    size_t ls = strlen(minicr_tests[i].suite);
    if (strncmp(full, minicr_tests[i].suite, ls) == 0 &&
        strncmp(full + ls, "::", 2) == 0 &&
        strcmp(full + ls + 2, minicr_tests[i].name) == 0)
      return &minicr_tests[i];
  }
  return NULL;
}

#if !defined(__wasi__) && !defined(_WIN32) /* fork */
/* Runs t in a child, so that no state carries over: 0 passed, 77 skipped,
 * 1 failed, 2 crashed (the child died of a signal or exited otherwise). */
static int minicr_run_forked(const struct minicr_test *t) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) exit(minicr_run_one(t));
  int status = 0;
  while (pid > 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  if (pid > 0 && WIFEXITED(status) &&
      (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 77 ||
       WEXITSTATUS(status) == 1))
    return WEXITSTATUS(status);
  if (pid < 0)
    fprintf(stderr, "[CRASH] %s::%s: fork: %s\n", t->suite, t->name,
            strerror(errno));
  else if (WIFSIGNALED(status))
    fprintf(stderr, "[CRASH] %s::%s: signal %d\n", t->suite, t->name,
            WTERMSIG(status));
  else
    fprintf(stderr, "[CRASH] %s::%s: exit status %d\n", t->suite, t->name,
            WEXITSTATUS(status));
  return 2;
}

/* Every test, one child each, and Criterion's summary line. */
static int minicr_run_all(void) {
  int count[3] = {0}, skipped = 0; /* passed, failed, crashed */
  for (int i = 0; i < minicr_count; i++) {
    int rc = minicr_run_forked(&minicr_tests[i]);
    if (rc == 77)
      skipped++;
    else
      count[rc]++;
  }
  fprintf(stderr,
          "[====] Synthesis: Tested: %d | Passing: %d | Failing: %d | "
          "Crashing: %d | Skipped: %d\n",
          minicr_count, count[0], count[1], count[2], skipped);
  if (count[1] + count[2] > 0) return 1;
  return count[0] == 0 && skipped > 0 ? 77 : 0;
}
#endif

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--list") == 0) {
    for (int i = 0; i < minicr_count; i++)
      printf("%s::%s\n", minicr_tests[i].suite, minicr_tests[i].name);
    return 0;
  }
  if (argc > 2 && strcmp(argv[1], "--run") == 0) {
    const struct minicr_test *t = minicr_find(argv[2]);
    if (!t) {
      fprintf(stderr, "no test named %s\n", argv[2]);
      return 2;
    }
    return minicr_run_one(t);
  }
#if !defined(__wasi__) && !defined(_WIN32) /* fork */
  return minicr_run_all();
#else
  /* Everything in one process: a failure or skip exits at once. */
  for (int i = 0; i < minicr_count; i++) minicr_run_one(&minicr_tests[i]);
  printf("%d passed, 0 failed\n", minicr_count);
  return 0;
#endif
}

#endif /* OSMEM_TESTS_MINICR_H */

/*
 * minicr: the subset of Criterion's API that the libosmem suites use, for
 * targets Criterion cannot run on (wasm32-wasi: no fork, threads or
 * sockets). The same test sources build against either.
 *
 * A test program built with it:
 *   --list        prints "suite::name" for every test, one a line;
 *   --run NAME    runs that one test: exit 0 pass, 1 fail, 77 skip;
 *   (no argument) runs every test in this one process, in order, and prints
 *                 a summary line; state carries over between tests, so the
 *                 runners (tests/wasm/suite.sh) use --list and --run, one
 *                 fresh instance per test, as Criterion isolates each test in
 *                 its own process.
 * Test options (.timeout, ...) are accepted and ignored.
 */
#ifndef OSMEM_TESTS_MINICR_H
#define OSMEM_TESTS_MINICR_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

__attribute__((format(printf, 4, 5), noreturn)) static inline void
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

__attribute__((format(printf, 1, 2), noreturn)) static inline void
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
  /* Everything in one process: a failure or skip exits at once. */
  for (int i = 0; i < minicr_count; i++) minicr_run_one(&minicr_tests[i]);
  printf("%d passed, 0 failed\n", minicr_count);
  return 0;
}

#endif /* OSMEM_TESTS_MINICR_H */

/*
 * A fuzz harness for the public API, checked against a model. Each input is
 * a program: bytes decode into calls (get, get on node 0, frees of live,
 * partial, foreign, double and overlapping ranges, release, osmem_is_heap
 * anywhere, bind, reservations and their commits) and every answer is
 * compared with what the model of handed-out megablocks and live
 * reservations says it must be. Any difference aborts (the fuzzer's crash).
 *
 * Built two ways:
 *   with libFuzzer (`make fuzz`: clang -fsanitize=fuzzer,address,undefined),
 *     LLVMFuzzerTestOneInput is the entry point;
 *   without (make check: tests/fuzz-replay), main() replays every file of
 *     the seed corpus (the files given, or $top_srcdir/tests/fuzz/corpus),
 *     then a seeded random run.
 * Each input starts from a fresh library (osmem_teardown).
 */
#ifdef HAVE_CONFIG_H
#include <config.h> /* system extensions: dirent, snprintf */
#endif

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "osmem.h"

int osmem__check_invariants(void);

#define MB OSMEM_MBLOCK_SIZE
#define MAX_RUNS 256 /* model capacity; gets stop at 64 live runs */
#define MAX_RES 8

static struct run {
  char *p;
  size_t n;
} runs[MAX_RUNS];
static size_t nruns;

static struct res {
  char *p;
  size_t size, committed; /* committed: a prefix, in bytes */
} res[MAX_RES];
static size_t nres;

static void must(bool ok, const char *what) {
  if (ok) return;
  fprintf(stderr, "fuzz: model mismatch: %s\n", what);
  abort();
}

/* Whether address a lies in a live run (the model's osmem_is_heap). */
static bool model_is_heap(uintptr_t a) {
  for (size_t i = 0; i < nruns; i++)
    if (a >= (uintptr_t)runs[i].p && a < (uintptr_t)runs[i].p + runs[i].n * MB)
      return true;
  return false;
}

/* Whether [p, p + n megablocks) is all handed out. */
static bool model_all_out(uintptr_t p, size_t n) {
  for (size_t k = 0; k < n; k++)
    if (!model_is_heap(p + k * MB)) return false;
  return true;
}

static void model_add(char *p, size_t n) {
  for (size_t i = 0; i < nruns; i++)
    must(p + n * MB <= runs[i].p || p >= runs[i].p + runs[i].n * MB,
         "a get overlaps a live run");
  runs[nruns++] = (struct run){p, n};
}

/* Removes [p, p + n) from the live runs (it is all out), splitting runs. */
static void model_remove(uintptr_t p, size_t n) {
  uintptr_t end = p + n * MB;
  for (size_t i = 0; i < nruns;) {
    uintptr_t a = (uintptr_t)runs[i].p, b = a + runs[i].n * MB;
    if (b <= p || a >= end) {
      i++;
      continue;
    }
    runs[i] = runs[--nruns];
    must(nruns + 2 <= MAX_RUNS, "the model is full");
    if (a < p) runs[nruns++] = (struct run){(char *)a, (p - a) / MB};
    if (b > end) runs[nruns++] = (struct run){(char *)end, (b - end) / MB};
  }
}

struct input {
  const uint8_t *at, *end;
};

static unsigned byte(struct input *in) {
  return in->at < in->end ? *in->at++ : 0;
}

static void op_get(struct input *in, bool on_node) {
  size_t n = 1 + byte(in) % 12;
  if (nruns >= 64) return;
  errno = 0;
  char *p = on_node ? osmem_get_mblocks_on_node(n, 0) : osmem_get_mblocks(n);
  if (!p) {
    must(errno == ENOMEM, "a get failed with other than ENOMEM");
    return;
  }
  must(((uintptr_t)p & OSMEM_MBLOCK_MASK) == 0, "a get is not aligned");
  must(osmem_is_heap(p) && osmem_is_heap(p + n * MB - 1), "a get is not heap");
  p[0] = (char)n; /* writable */
  p[n * MB - 1] = (char)n;
  model_add(p, n);
}

/* A free of some range near a live run: the run, part of it, past it,
 * before it, or twice. The library must answer as the model does. */
static void op_free(struct input *in) {
  if (nruns == 0 || nruns >= MAX_RUNS - 2) return; /* room for a split */
  struct run r = runs[byte(in) % nruns];
  unsigned how = byte(in) % 6;
  uintptr_t p = (uintptr_t)r.p;
  size_t n = r.n;
  switch (how) {
    case 0: break;                                 /* the whole run */
    case 1: n = 1 + byte(in) % r.n; break;         /* its head */
    case 2: p += (byte(in) % r.n) * MB; n = 1; break; /* one inside */
    case 3: n = r.n + 1 + byte(in) % 3; break;     /* past its end */
    case 4: p -= MB; n = r.n; break;               /* from before it */
    case 5: p += MB / 2; break;                    /* misaligned */
  }
  bool ok = how != 5 && model_all_out(p, n);
  int got = osmem_free_mblocks((void *)p, n);
  must(got == (ok ? 0 : EINVAL), "a free answered other than the model");
  if (ok) {
    model_remove(p, n);
    must(osmem_free_mblocks((void *)p, n) == EINVAL, "a double free passed");
  }
}

static void op_is_heap(struct input *in) {
  uintptr_t a;
  if (nruns && byte(in) % 2) {
    struct run r = runs[byte(in) % nruns];
    a = (uintptr_t)r.p + (uintptr_t)byte(in) * (r.n * MB / 256 + 1);
  } else {
    a = (uintptr_t)byte(in) << (byte(in) % 48);
  }
  must(osmem_is_heap((void *)a) == model_is_heap(a), "osmem_is_heap is wrong");
}

static void op_reserve(struct input *in) {
  if (nres >= MAX_RES) return;
  size_t size = (1 + byte(in) % 16) * MB, got = 0;
  char *p = osmem_reserve(size, 0, NULL, &got);
  if (!p) {
    must(errno == ENOMEM || errno == ENOSYS, "reserve failed oddly");
    return;
  }
  must(got == size && !osmem_is_heap(p), "a reservation is wrong");
  res[nres++] = (struct res){p, size, 0};
}

/* Whether [p, p + size) lies inside one live reservation (reservations
 * may be adjacent: past one's end can be inside the next). */
static bool model_inside_one(const char *p, size_t size) {
  for (size_t i = 0; i < nres; i++)
    if (p >= res[i].p && p + size <= res[i].p + res[i].size) return true;
  return false;
}

/* Commits the next piece of a reservation, sometimes past its end. */
static void op_commit(struct input *in) {
  if (nres == 0) return;
  struct res *r = &res[byte(in) % nres];
  size_t want = (1 + byte(in) % 4) * MB;
  char *at = r->p + r->committed;
  bool inside = model_inside_one(at, want);
  int err = osmem_commit(at, want);
  must(err == (inside ? 0 : EINVAL) || (inside && err == ENOMEM),
       "commit answered other than the model");
  if (err) return;
  at[0] = 1; /* committed: writable */
  if (r->committed + want <= r->size) r->committed += want;
  if (r->committed && byte(in) % 2)
    must(osmem_decommit(r->p, r->committed) == 0, "decommit");
}

static void op_unreserve(struct input *in) {
  if (nres == 0) return;
  size_t i = byte(in) % nres;
  if (res[i].size > MB && byte(in) % 2) /* inside it, not its base */
    must(osmem_unreserve(res[i].p + MB) == EINVAL, "unreserve off the base");
  int err = osmem_unreserve(res[i].p);
  must(err == 0 || err == EINVAL, "unreserve");
  if (err == 0) res[i] = res[--nres];
}

static void op_bind(struct input *in) {
  if (nruns == 0) return;
  struct run r = runs[byte(in) % nruns];
  int err = osmem_bind_to_node(r.p, r.n * MB, byte(in) % 3 == 0 ? 1000 : 0);
  must(err == 0 || err == EINVAL, "bind answered other than 0 or EINVAL");
}

static void run_program(const uint8_t *data, size_t size) {
  must(osmem_teardown() == 0, "teardown");
  nruns = nres = 0;
  struct input in = {data, data + size};
  while (in.at < in.end) {
    switch (byte(&in) % 10) {
      case 0: case 1: op_get(&in, false); break;
      case 2: op_get(&in, true); break;
      case 3: case 4: op_free(&in); break;
      case 5: (void)osmem_release_free_memory(); break;
      case 6: op_is_heap(&in); break;
      case 7: op_reserve(&in); break;
      case 8: op_commit(&in); break;
      case 9: byte(&in) % 2 ? op_unreserve(&in) : op_bind(&in); break;
    }
    must(osmem__check_invariants() == 0, "library invariants");
  }
  struct osmem_stats s;
  osmem_stats(&s);
  size_t out = 0;
  for (size_t i = 0; i < nruns; i++) out += runs[i].n;
  must(s.mblocks_in_use == out, "mblocks_in_use disagrees with the model");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  run_program(data, size);
  return 0;
}

#ifndef OSMEM_FUZZ_LIBFUZZER
#include <dirent.h>

static uint8_t buf[1 << 16];

static void replay_file(const char *path) {
  FILE *f = fopen(path, "rb");
  must(f != NULL, "a corpus file cannot be read");
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  run_program(buf, n);
}

/* Every file of the seed corpus in $top_srcdir/tests/fuzz/corpus. */
static int replay_corpus(void) {
  const char *top = getenv("top_srcdir");
  char dir[4096], path[8192];
  snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus", top ? top : ".");
  DIR *d = opendir(dir);
  must(d != NULL, "no seed corpus (set top_srcdir)");
  int files = 0;
  for (struct dirent *e; (e = readdir(d));) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    replay_file(path);
    files++;
  }
  closedir(d);
  return files;
}

int main(int argc, char **argv) {
  int files = 0;
  for (int i = 1; i < argc; i++, files++) replay_file(argv[i]);
  if (argc == 1) files = replay_corpus();
  uint64_t x = 0x2545f4914f6cdd1dULL;
  enum { LEN = 400 };
  /* OSMEM_FUZZ_ROUNDS lowers the count where a run costs more than here:
   * qemu-user 7.2 places every mapping at a new address and never frees
   * its page tables for unmapped ranges, so 1,000 programs grow the
   * emulator to 21 GB (tools/check-cross.sh). */
  int ROUNDS = 1000;
  const char *rounds = getenv("OSMEM_FUZZ_ROUNDS");
  if (rounds && atoi(rounds) > 0) ROUNDS = atoi(rounds);
  for (int r = 0; r < ROUNDS; r++) {
    for (size_t i = 0; i < LEN; i++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      buf[i] = (uint8_t)x;
    }
    run_program(buf, LEN);
  }
  printf("fuzz-replay: %d corpus files and %d random programs of %d bytes, "
         "all as the model says\n", files, ROUNDS, LEN);
  return 0;
}
#endif

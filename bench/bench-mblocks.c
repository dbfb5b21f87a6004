/*
 * bench-mblocks: time and count what libosmem does for the common patterns.
 * A benchmark, not a test: numbers vary run to run (take the median of
 * several runs); the OS-call counts do not.
 *
 *   fresh get      N single-megablock gets from an empty library
 *   fresh free     freeing them (into the pool)
 *   pooled get+free  one get and one free, served by the pool
 *   batch n=64     get and free 64 megablocks at once, pooled
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "osmem.h"

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

int main(int argc, char **argv) {
  size_t count = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 2048;
  void **blocks = malloc(count * sizeof *blocks);
  if (!blocks) die("malloc");
  osmem_init();
  osmem_set_decommit_threshold(SIZE_MAX); /* time the pool, not madvise */

  double t0 = now_ns();
  for (size_t i = 0; i < count; i++)
    if (!(blocks[i] = osmem_get_mblocks(1))) die("osmem_get_mblocks");
  double t1 = now_ns();
  struct osmem_stats s;
  osmem_stats(&s);
  for (size_t i = 0; i < count; i++) osmem_free_mblocks(blocks[i], 1);
  double t2 = now_ns();

  enum { ROUNDS = 100000 };
  for (int i = 0; i < ROUNDS; i++) {
    void *p = osmem_get_mblocks(1);
    if (!p) die("pooled get");
    osmem_free_mblocks(p, 1);
  }
  double t3 = now_ns();
  for (int i = 0; i < ROUNDS / 10; i++) {
    void *p = osmem_get_mblocks(64);
    if (!p) die("batch get");
    osmem_free_mblocks(p, 64);
  }
  double t4 = now_ns();

  printf("libosmem %s (%s), %zu megablocks of %zu bytes\n", osmem_version(),
         osmem_backend(), count, (size_t)OSMEM_MBLOCK_SIZE);
  printf("fresh get:        %8.1f ns per megablock\n", (t1 - t0) / (double)count);
  printf("fresh free:       %8.1f ns per megablock\n", (t2 - t1) / (double)count);
  printf("pooled get+free:  %8.1f ns\n", (t3 - t2) / ROUNDS);
  printf("batch n=64:       %8.1f ns per get+free\n", (t4 - t3) / (ROUNDS / 10));
  printf("OS calls for the %zu fresh gets: mmap %" PRIu64 " (%.4f per get), "
         "munmap %" PRIu64 ", in %" PRIu64 " reservations\n",
         count, s.os_maps, (double)s.os_maps / (double)count, s.os_unmaps,
         s.reservations);
  printf("reservations placed: at hint %" PRIu64 ", exact %" PRIu64
         ", trimmed %" PRIu64 "\n",
         s.align_hint_hits, s.align_exact_hits, s.align_trims);
  free(blocks);
  return 0;
}

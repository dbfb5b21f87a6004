/*
 * wasm-overhead: how much linear memory a runtime's mix of megablocks and
 * malloc costs on wasm32. It simulates a runtime: 1,000 rounds, each of 10
 * malloc calls of random sizes (16 B to 64 KiB, log-uniform) of which about
 * half are freed again, then one request for 1 MiB of megablocks. It prints
 * the final memory size divided by the payload (megablock bytes handed out
 * plus bytes malloc holds). Deterministic: a fixed seed, no timing.
 *
 * Built with -DUSE_ALIGNED_ALLOC it takes each 1 MiB from wasi-libc's
 * aligned_alloc instead of libosmem, the baseline.
 */
#include <config.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef USE_ALIGNED_ALLOC
#include "osmem.h"
#endif

#define ROUNDS 1000
#define MALLOCS_PER_ROUND 10
#define REQUEST_BYTES ((size_t)1 << 20)

static uint64_t rng = 0x9e3779b97f4a7c15u;

/* Kept so that the compiler cannot drop an allocation it sees unused. */
void *volatile requests[ROUNDS];

static uint64_t next_random(void) { /* xorshift64 */
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

/* 16 B .. 64 KiB, uniform in log2. */
static size_t random_size(void) {
  unsigned shift = 4 + (unsigned)(next_random() % 12); /* 2^4 .. 2^15 */
  size_t base = (size_t)1 << shift;
  return base + (size_t)(next_random() % base);
}

static void *get_request(void) {
#ifdef USE_ALIGNED_ALLOC
  return aligned_alloc(REQUEST_BYTES, REQUEST_BYTES);
#else
  return osmem_get_mblocks(REQUEST_BYTES / OSMEM_MBLOCK_SIZE);
#endif
}

static const char *variant(void) {
#ifdef USE_ALIGNED_ALLOC
  return "aligned_alloc";
#elif defined(OSMEM_WASM_SBRK)
  return "libosmem, sbrk replacement";
#else
  return "libosmem, no sbrk replacement";
#endif
}

int main(void) {
  uint64_t live_malloc = 0, megablock_bytes = 0;
  for (int round = 0; round < ROUNDS; round++) {
    void *ptrs[MALLOCS_PER_ROUND];
    size_t sizes[MALLOCS_PER_ROUND];
    for (int i = 0; i < MALLOCS_PER_ROUND; i++) {
      sizes[i] = random_size();
      if (!(ptrs[i] = malloc(sizes[i]))) {
        perror("malloc");
        return 1;
      }
      live_malloc += sizes[i];
    }
    for (int i = 0; i < MALLOCS_PER_ROUND; i++) {
      if (next_random() & 1) {
        free(ptrs[i]);
        live_malloc -= sizes[i];
      }
    }
    if (!(requests[round] = get_request())) {
      perror("megablock request");
      return 1;
    }
    megablock_bytes += REQUEST_BYTES;
  }
  uint64_t memory = (uint64_t)__builtin_wasm_memory_size(0) * 65536;
  uint64_t payload = megablock_bytes + live_malloc;
  printf("%s, megablock 2^%d bytes: memory %.1f MiB, payload %.1f MiB "
         "(megablocks %.1f MiB + malloc %.1f MiB), ratio %.3f\n",
         variant(),
#ifdef USE_ALIGNED_ALLOC
         20,
#else
         OSMEM_MBLOCK_SHIFT,
#endif
         memory / 1048576.0, payload / 1048576.0, megablock_bytes / 1048576.0,
         live_malloc / 1048576.0, (double)memory / (double)payload);
  return 0;
}

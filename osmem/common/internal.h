/*
 * State shared by the files of osmem/common. One instance, osmem__g, guarded
 * by the backend's pool lock except where a field says otherwise.
 */
#ifndef OSMEM_COMMON_INTERNAL_H
#define OSMEM_COMMON_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../backend.h"
#include "osmem.h"
#include "pool.h"

/* Reservations start at this size and double up to the cap (a quarter of a
 * 32-bit address space, 64 GiB on 64-bit). Multiples of 2 MiB so that the
 * kernel can back them with transparent huge pages. */
#define OSMEM__RESERVE_GRAIN ((size_t)2 << 20 > OSMEM_MBLOCK_SIZE \
                                  ? (size_t)2 << 20 : OSMEM_MBLOCK_SIZE)
#define OSMEM__RESERVE_FIRST ((size_t)16 << 20)
#if UINTPTR_MAX > 0xffffffffu
#define OSMEM__RESERVE_CAP ((size_t)64 << 30)
#else
#define OSMEM__RESERVE_CAP ((size_t)1 << 30)
#endif

#define OSMEM__DEFAULT_DECOMMIT_THRESHOLD ((size_t)64 << 20)

struct osmem__state {
  atomic_bool ready;              /* set once init is done; read lock-free */
  struct osmem__os_caps caps;
  struct osmem__pool pool;
  /* Fresh memory: the not yet handed out part [carve, carve_end) of the
   * newest reservation, handed out from the top down. */
  uintptr_t carve, carve_end;     /* byte addresses */
  size_t next_reserve;            /* bytes of the next reservation */
  size_t decommit_threshold;      /* bytes */
  /* Counters reported by osmem_stats. */
  size_t in_use, peak;            /* megablocks */
  uint64_t bytes_mapped, reservations, reserve_retries;
};

OSMEM_HIDDEN extern struct osmem__state osmem__g;

/* Initialises on first use; cheap afterwards. */
OSMEM_HIDDEN void osmem__ensure_init(void);

/* Takes n megablocks of never-used memory (n * OSMEM_MBLOCK_SIZE is known to
 * fit a size_t) from the current reservation, making a new one when it is too
 * small, and makes sure `nodes` pool nodes are set aside (one of them may go
 * to a reservation's old tail). Lock held. 0, or ENOMEM with nothing
 * changed. */
OSMEM_HIDDEN int osmem__fresh_take(size_t n, size_t nodes, uintptr_t *mblock);

/* For tests: checks the pool and counters agree. 0 or the broken invariant. */
OSMEM_HIDDEN int osmem__check_invariants(void);

#endif /* OSMEM_COMMON_INTERNAL_H */

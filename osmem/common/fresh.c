/*
 * Fresh memory: large reservations from the backend, carved into megablocks
 * with no system call. A reservation grows geometrically, so 1,000 single
 * megablock gets make about six mappings; where reserving ahead is not cheap
 * (wasm: memory can never be given back) each get reserves exactly what it
 * needs.
 *
 * Carving goes downward, from the top of the reservation, and the next
 * reservation is asked for just below the current one: kernels place
 * mappings top-down, so the hint is usually free, the new reservation
 * extends the unused tail, and the kernel merges the two into one mapping.
 */
#include <config.h>

#include <errno.h>

#include "heapmap.h"
#include "internal.h"

static size_t round_up(size_t x, size_t to) { return (x + to - 1) / to * to; }

/* The smallest power of two >= x (x <= OSMEM__RESERVE_CAP). */
static size_t pow2_at_least(size_t x) {
  size_t p = OSMEM__RESERVE_FIRST;
  while (p < x && p < OSMEM__RESERVE_CAP) p *= 2;
  return p;
}

/* The size of the next reservation for a request of `need` bytes: the
 * doubling counter, but never more than twice the heap (megablocks out of
 * the pool, rounded up to a power of two) and never more than a sixteenth
 * of the address-space budget the OS sets (RLIMIT_AS, RLIMIT_DATA), so
 * that what the library maps follows the heap, not the time it has run. */
static size_t reserve_size(size_t need, size_t smallest) {
  struct osmem__state *g = &osmem__g;
  if (!g->caps.cheap_reserve) return need;
  size_t size = g->next_reserve;
  size_t heap_cap = 2 * pow2_at_least(g->in_use << OSMEM_MBLOCK_SHIFT);
  if (size > heap_cap) size = heap_cap;
  size_t budget = osmem__os_address_budget() / 16;
  if (size > budget) size = round_up(budget, OSMEM__RESERVE_GRAIN);
  return size > smallest ? size : smallest;
}

/* Maps a reservation of at least `need` bytes, halving the size down to the
 * smallest that fits when the OS says no (strict overcommit, RLIMIT_AS). */
static int map_reservation(size_t need, uintptr_t *base, size_t *size_out) {
  bool grain = osmem__g.caps.cheap_reserve; /* else exactly what is needed */
  if (grain && need > SIZE_MAX - OSMEM__RESERVE_GRAIN) return ENOMEM;
  size_t smallest = grain ? round_up(need, OSMEM__RESERVE_GRAIN) : need;
  size_t size = reserve_size(need, smallest);
  uintptr_t low = osmem__g.carve;
  for (;;) {
    void *hint = low > size ? (void *)(low - size) : NULL;
    void *p;
    int err = osmem__os_reserve(size, OSMEM_MBLOCK_SIZE, hint, false, &p);
    if (err == 0) {
      *base = (uintptr_t)p;
      *size_out = size;
      return 0;
    }
    if (err != ENOMEM || size == smallest) return ENOMEM;
    size = round_up(size / 2, OSMEM__RESERVE_GRAIN);
    if (size < smallest) size = smallest;
    osmem__g.reserve_retries++;
  }
}

/* Makes [base, base + size) the current reservation. */
static void adopt_reservation(uintptr_t base, size_t size) {
  struct osmem__state *g = &osmem__g;
  /* The addresses may have held another node's megablocks before a release
   * unmapped them: fresh memory is bound to no node until carved. */
  if (g->classes)
    osmem__heapmap_set_class(base >> OSMEM_MBLOCK_SHIFT,
                             size >> OSMEM_MBLOCK_SHIFT, 0);
  g->bytes_mapped += size;
  g->reservations++;
  if (g->caps.cheap_reserve && size >= g->next_reserve)
    g->next_reserve = size >= OSMEM__RESERVE_CAP / 2 ? OSMEM__RESERVE_CAP
                                                     : size * 2;
  if (base + size == g->carve) { /* just below the old tail: extend it */
    g->carve = base;
    return;
  }
  if (g->carve_end > g->carve) /* keep the old tail, in the pool */
    osmem__pool_insert(&g->pool, g->carve >> OSMEM_MBLOCK_SHIFT,
                       (g->carve_end - g->carve) >> OSMEM_MBLOCK_SHIFT);
  g->carve = base;
  g->carve_end = base + size;
}

/* Sets aside the pool nodes a fresh take needs: `nodes` in the owner's
 * pool, and one in class 0 for the old tail a new reservation may leave. */
static int reserve_nodes(struct osmem__pool *owner, size_t nodes) {
  struct osmem__pool *tail = &osmem__g.pool;
  if (owner != tail &&
      osmem__pool_reserve_nodes(tail, tail->handed_out + 1) != 0)
    return ENOMEM;
  return osmem__pool_reserve_nodes(owner, nodes);
}

/* Where memory cannot be given back, everything a reservation needs besides
 * itself is had before it is made: the heap map for the whole (32-bit)
 * address space, one leaf, and the pool nodes; and the request must still
 * fit after that bookkeeping has grown memory. */
static int set_aside_first(size_t need, struct osmem__pool *owner,
                           size_t nodes) {
  if (!osmem__os_may_reserve(need, OSMEM_MBLOCK_SIZE) ||
      osmem__heapmap_prepare(0, OSMEM__MBLOCK_LIMIT, osmem__g.classes) != 0 ||
      reserve_nodes(owner, nodes) != 0 ||
      !osmem__os_may_reserve(need, OSMEM_MBLOCK_SIZE))
    return ENOMEM;
  return 0;
}

/* Maps a new reservation for `need` bytes and makes it current. The pool
 * nodes the get needs are set aside once the OS has said yes, so a refused
 * get maps no bookkeeping; if they cannot be had, the reservation is given
 * back and nothing has changed. Where memory cannot be given back (wasm), the
 * nodes are set aside first instead, once the request is known to fit, so
 * that a request past the end of the address space grows nothing. */
static int new_reservation(size_t need, struct osmem__pool *owner,
                           size_t nodes) {
  struct osmem__state *g = &osmem__g;
  if (!g->caps.can_unmap && set_aside_first(need, owner, nodes) != 0)
    return ENOMEM;
  uintptr_t base;
  size_t size;
  if (map_reservation(need, &base, &size) != 0) return ENOMEM;
  if (osmem__heapmap_prepare(base >> OSMEM_MBLOCK_SHIFT,
                             size >> OSMEM_MBLOCK_SHIFT, g->classes) != 0 ||
      reserve_nodes(owner, nodes) != 0) {
    /* Memory we cannot track must not be handed out. Where it cannot be
     * given back either, it is lost address space, but state stays sound. */
    osmem__os_discard((void *)base, size);
    return ENOMEM;
  }
  adopt_reservation(base, size);
  return 0;
}

size_t osmem__fresh_release_locked(void) {
  struct osmem__state *g = &osmem__g;
  size_t tail = g->carve_end - g->carve;
  if (g->caps.can_unmap && tail &&
      osmem__os_unmap((void *)g->carve, tail) == 0) {
    g->bytes_mapped -= tail;
    g->carve = g->carve_end = 0; /* the next reservation goes where the OS
                                    likes: the lowest free place it has */
  } else {
    tail = 0;
  }
  /* The counter starts again from the heap as it is now. */
  g->next_reserve = pow2_at_least(g->in_use << OSMEM_MBLOCK_SHIFT);
  return tail;
}

int osmem__fresh_take(size_t n, struct osmem__pool *owner, size_t nodes,
                      uintptr_t *mblock) {
  struct osmem__state *g = &osmem__g;
  size_t need = n << OSMEM_MBLOCK_SHIFT;
  if (g->carve_end - g->carve < need) {
    if (new_reservation(need, owner, nodes) != 0) return ENOMEM;
  } else if (reserve_nodes(owner, nodes) != 0) {
    return ENOMEM;
  }
  g->carve_end -= need;
  *mblock = g->carve_end >> OSMEM_MBLOCK_SHIFT;
  return 0;
}

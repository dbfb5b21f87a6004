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

struct osmem__carve *osmem__carve_of(unsigned cls) {
  return cls == 0 ? &osmem__g.carve : osmem__g.node_carves[cls - 1];
}

/* The i-th carve that exists: class 0's, then each node class made
 * (i <= pool_class_count). */
static struct osmem__carve *carve_at(unsigned i) {
  return i == 0 ? &osmem__g.carve
                : osmem__carve_of(osmem__g.pool_classes[i - 1]);
}

/* The size carve c's next reservation may grow to (0 stands for the first). */
static size_t next_size(const struct osmem__carve *c) {
  return c->next ? c->next : OSMEM__RESERVE_FIRST;
}

/* The size of the next reservation of carve c for a request of `need`
 * bytes: its doubling counter, but never more than twice the heap
 * (megablocks out of the pool, rounded up to a power of two) and never
 * more than a sixteenth of the address-space budget the OS sets
 * (RLIMIT_AS, RLIMIT_DATA), so that what the library maps follows the
 * heap, not the time it has run. */
static size_t reserve_size(const struct osmem__carve *c, size_t need,
                           size_t smallest) {
  struct osmem__state *g = &osmem__g;
  if (!g->caps.cheap_reserve) return need;
  size_t size = next_size(c);
  size_t heap_cap = 2 * pow2_at_least(g->in_use << OSMEM_MBLOCK_SHIFT);
  if (size > heap_cap) size = heap_cap;
  size_t budget = osmem__os_address_budget() / 16;
  if (size > budget) size = round_up(budget, OSMEM__RESERVE_GRAIN);
  return size > smallest ? size : smallest;
}

/* Maps a reservation of at least `need` bytes for carve c, halving the size
 * down to the smallest that fits when the OS says no (strict overcommit,
 * RLIMIT_AS). */
static int map_reservation(const struct osmem__carve *c, size_t need,
                           uintptr_t *base, size_t *size_out) {
  bool grain = osmem__g.caps.cheap_reserve; /* else exactly what is needed */
  if (grain && need > SIZE_MAX - OSMEM__RESERVE_GRAIN) return ENOMEM;
  size_t smallest = grain ? round_up(need, OSMEM__RESERVE_GRAIN) : need;
  size_t size = reserve_size(c, need, smallest);
  uintptr_t low = c->lo;
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

/* Makes [base, base + size) carve c's current reservation, of class cls;
 * its old unused tail, if not adjacent, goes to `owner`, the class's pool. */
static void adopt_reservation(struct osmem__carve *c, unsigned cls,
                              struct osmem__pool *owner, uintptr_t base,
                              size_t size) {
  struct osmem__state *g = &osmem__g;
  /* The addresses may have held another class's megablocks before a
   * release unmapped them. */
  if (g->classes)
    osmem__heapmap_set_class(base >> OSMEM_MBLOCK_SHIFT,
                             size >> OSMEM_MBLOCK_SHIFT, cls);
  g->bytes_mapped += size;
  g->reservations++;
  if (g->caps.cheap_reserve && size >= next_size(c))
    c->next = size >= OSMEM__RESERVE_CAP / 2 ? OSMEM__RESERVE_CAP : size * 2;
  if (base + size == c->lo) { /* just below the old tail: extend it */
    c->lo = base;
    return;
  }
  if (c->hi > c->lo) /* keep the old tail, in the pool */
    osmem__pool_insert(owner, c->lo >> OSMEM_MBLOCK_SHIFT,
                       (c->hi - c->lo) >> OSMEM_MBLOCK_SHIFT);
  c->lo = base;
  c->hi = base + size;
}

/* Where memory cannot be given back, everything a reservation needs besides
 * itself is had before it is made: the heap map for the whole (32-bit)
 * address space, one leaf, and the pool nodes; and the request must still
 * fit after that bookkeeping has grown memory. */
static int set_aside_first(size_t need, struct osmem__pool *owner,
                           size_t nodes) {
  if (!osmem__os_may_reserve(need, OSMEM_MBLOCK_SIZE) ||
      osmem__heapmap_prepare(0, OSMEM__MBLOCK_LIMIT, osmem__g.classes) != 0 ||
      osmem__pool_reserve_nodes(owner, nodes) != 0 ||
      !osmem__os_may_reserve(need, OSMEM_MBLOCK_SIZE))
    return ENOMEM;
  return 0;
}

/* A node's reservation is bound to the node as a whole, once, before
 * anything in it is touched: every megablock carved from it is placed
 * there, and the kernel keeps it one mapping however many gets it serves
 * (binding each get's range would split it, up to vm.max_map_count). */
static int bind_reservation(unsigned cls, uintptr_t base, size_t size) {
  if (cls == 0) return 0;
  return osmem__os_bind((void *)base, size, osmem__class_node(cls),
                        osmem__class_policy(cls));
}

/* Maps a new reservation of class cls for `need` bytes and makes it
 * current. The pool nodes the get needs are set aside once the OS has said
 * yes, so a refused get maps no bookkeeping; if they cannot be had, or a
 * node's reservation cannot be bound, the reservation is given back and
 * nothing has changed. Where memory cannot be given back (wasm), the nodes
 * are set aside first instead, once the request is known to fit, so that a
 * request past the end of the address space grows nothing. */
static int new_reservation(struct osmem__carve *c, unsigned cls, size_t need,
                           struct osmem__pool *owner, size_t nodes) {
  struct osmem__state *g = &osmem__g;
  if (!g->caps.can_unmap && set_aside_first(need, owner, nodes) != 0)
    return ENOMEM;
  uintptr_t base;
  size_t size;
  if (map_reservation(c, need, &base, &size) != 0) return ENOMEM;
  int err = 0;
  if (osmem__heapmap_prepare(base >> OSMEM_MBLOCK_SHIFT,
                             size >> OSMEM_MBLOCK_SHIFT, g->classes) != 0 ||
      osmem__pool_reserve_nodes(owner, nodes) != 0)
    err = ENOMEM;
  if (!err) err = bind_reservation(cls, base, size);
  if (err) {
    /* Memory we cannot track (or place) must not be handed out. Where it
     * cannot be given back either, it is lost address space, but state
     * stays sound. */
    osmem__os_discard((void *)base, size);
    return err;
  }
  adopt_reservation(c, cls, owner, base, size);
  return 0;
}

static size_t release_tail(struct osmem__carve *c) {
  struct osmem__state *g = &osmem__g;
  size_t tail = c->hi - c->lo;
  if (!g->caps.can_unmap || tail == 0 || osmem__os_unmap((void *)c->lo, tail))
    tail = 0;
  if (tail) {
    g->bytes_mapped -= tail;
    c->lo = c->hi = 0; /* the next reservation goes where the OS likes: the
                          lowest free place it has */
  }
  /* The counter starts again from the heap as it is now. */
  c->next = pow2_at_least(g->in_use << OSMEM_MBLOCK_SHIFT);
  return tail;
}

size_t osmem__fresh_release_locked(void) {
  size_t bytes = 0;
  for (unsigned i = 0; i <= osmem__g.pool_class_count; i++)
    bytes += release_tail(carve_at(i));
  return bytes;
}

size_t osmem__fresh_unused(void) {
  size_t bytes = 0;
  for (unsigned i = 0; i <= osmem__g.pool_class_count; i++)
    bytes += carve_at(i)->hi - carve_at(i)->lo;
  return bytes;
}

int osmem__fresh_take(size_t n, unsigned cls, struct osmem__pool *owner,
                      size_t nodes, uintptr_t *mblock) {
  struct osmem__carve *c = osmem__carve_of(cls);
  size_t need = n << OSMEM_MBLOCK_SHIFT;
  if (c->hi - c->lo < need) {
    int err = new_reservation(c, cls, need, owner, nodes);
    if (err) return err;
  } else if (osmem__pool_reserve_nodes(owner, nodes) != 0) {
    return ENOMEM;
  }
  c->hi -= need;
  *mblock = c->hi >> OSMEM_MBLOCK_SHIFT;
  return 0;
}

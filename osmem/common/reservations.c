/*
 * Reservations made for the caller (osmem_reserve): address space the
 * caller commits and decommits at addresses of its choosing. They are kept
 * in a table sorted by address, so that commit and decommit can check that
 * a range lies inside one; the pool never sees them.
 */
#include <config.h>

#include <errno.h>
#include <string.h>

#include "internal.h"

static size_t round_up(size_t x, size_t to) { return (x + to - 1) & ~(to - 1); }

/* ------------------------------------------------------------------ table */

/* The index of the first reservation whose base is above addr. */
static size_t upper_bound(uintptr_t addr) {
  struct osmem__state *g = &osmem__g;
  size_t lo = 0, hi = g->user_count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (g->user[mid].base <= addr) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/* The reservation holding all of [addr, addr + size), or NULL. Lock held. */
static struct osmem__span *holding(uintptr_t addr, size_t size) {
  size_t i = upper_bound(addr);
  if (i == 0) return NULL;
  struct osmem__span *r = &osmem__g.user[i - 1];
  if (addr - r->base > r->size || size > r->size - (addr - r->base))
    return NULL;
  return r;
}

/* Room for one more entry; the old table is bookkeeping a teardown gives
 * back. ENOMEM if a larger one cannot be had. Lock held. */
static int table_room(void) {
  struct osmem__state *g = &osmem__g;
  if (g->user_count < g->user_cap) return 0;
  size_t cap = g->user_cap ? g->user_cap * 2 : 256;
  void *mem;
  if (osmem__meta_alloc(cap * sizeof *g->user, &mem) != 0) return ENOMEM;
  if (g->user_count) memcpy(mem, g->user, g->user_count * sizeof *g->user);
  g->user = mem;
  g->user_cap = cap;
  return 0;
}

static void table_insert(uintptr_t base, size_t size) {
  struct osmem__state *g = &osmem__g;
  size_t i = upper_bound(base);
  memmove(&g->user[i + 1], &g->user[i], (g->user_count - i) * sizeof *g->user);
  g->user[i] = (struct osmem__span){base, size};
  g->user_count++;
  g->user_bytes += size;
}

static void table_remove(struct osmem__span *r) {
  struct osmem__state *g = &osmem__g;
  g->user_bytes -= r->size;
  size_t i = (size_t)(r - g->user);
  memmove(r, r + 1, (g->user_count - i - 1) * sizeof *r);
  g->user_count--;
}

/* ---------------------------------------------------------------- reserve */

/* Reserves the largest of size, size / 2, ... (whole megablocks), min that
 * the OS grants, tried at the hint first each time. Lock held. */
static int reserve_shrinking(size_t size, size_t min, void *hint,
                             uintptr_t *base, size_t *got) {
  for (;;) {
    void *p;
    int err = osmem__os_reserve(size, OSMEM_MBLOCK_SIZE, hint, true, &p);
    if (err == 0) {
      *base = (uintptr_t)p;
      *got = size;
      return 0;
    }
    if (err != ENOMEM || size == min) return err;
    size = (size / 2) & ~OSMEM_MBLOCK_MASK;
    if (size < min) size = min;
    osmem__g.reserve_retries++;
  }
}

/* The hint rounded up to a megablock boundary; NULL if that wraps. */
static void *aligned_hint(void *hint) {
  uintptr_t h = (uintptr_t)hint;
  if (h > UINTPTR_MAX - OSMEM_MBLOCK_MASK) return NULL;
  return (void *)((h + OSMEM_MBLOCK_MASK) & ~(uintptr_t)OSMEM_MBLOCK_MASK);
}

static void *fail(int err) {
  errno = err;
  return NULL;
}

void *osmem_reserve(size_t len, size_t min_len, void *hint, size_t *got) {
  if (len == 0 || min_len > len) return fail(EINVAL);
  if (len > OSMEM_RESERVE_MAX) len = OSMEM_RESERVE_MAX;
  if (min_len > OSMEM_RESERVE_MAX) return fail(ENOMEM);
  size_t size = round_up(len, OSMEM_MBLOCK_SIZE);
  size_t min = min_len ? round_up(min_len, OSMEM_MBLOCK_SIZE) : OSMEM_RESERVE_MIN;
  osmem__ensure_init();
  struct osmem__state *g = &osmem__g;
  if (!g->caps.cheap_reserve || !g->caps.can_unmap) return fail(ENOSYS);
  osmem__os_lock();
  uintptr_t base = 0;
  size_t size_got = 0;
  int err = table_room();
  if (!err) err = reserve_shrinking(size, min, aligned_hint(hint), &base, &size_got);
  if (!err) table_insert(base, size_got);
  osmem__os_unlock();
  if (err) return fail(err == ENOSYS ? ENOSYS : ENOMEM);
  if (got) *got = size_got;
  return (void *)base;
}

int osmem_unreserve(void *base) {
  osmem__ensure_init();
  osmem__os_lock();
  struct osmem__span *r = holding((uintptr_t)base, 0);
  int err = EINVAL;
  if (base && r && r->base == (uintptr_t)base) {
    err = osmem__os_unmap(base, r->size);
    if (!err) table_remove(r);
  }
  osmem__os_unlock();
  return err;
}

/* ------------------------------------------------------- commit, decommit */

/* Checks a page range and rounds its size up to pages; EINVAL if bad. */
static int page_range(void *p, size_t size, size_t *rounded) {
  osmem__ensure_init();
  size_t page = osmem__g.caps.page_size;
  uintptr_t addr = (uintptr_t)p;
  if (addr == 0 || (addr & (page - 1)) != 0 || size == 0) return EINVAL;
  if (size > SIZE_MAX - page) return EINVAL;
  size = round_up(size, page);
  if (size - 1 > UINTPTR_MAX - addr) return EINVAL;
  *rounded = size;
  return 0;
}

int osmem_commit(void *p, size_t size) {
  int err = page_range(p, size, &size);
  if (err) return err;
  if (!osmem__g.caps.cheap_reserve) return ENOSYS;
  osmem__os_lock();
  err = holding((uintptr_t)p, size) ? osmem__os_commit(p, size) : EINVAL;
  if (!err) osmem__g.bytes_committed += size;
  osmem__os_unlock();
  return err;
}

int osmem_decommit(void *p, size_t size) {
  int err = page_range(p, size, &size);
  if (err) return err;
  if (!osmem__g.caps.cheap_reserve) return ENOSYS;
  osmem__os_lock();
  bool eager = osmem__g.decommit_mode == OSMEM_DECOMMIT_EAGER;
  err = holding((uintptr_t)p, size) ? osmem__os_decommit(p, size, eager)
                                    : EINVAL;
  if (!err) osmem__g.bytes_decommitted += size;
  osmem__os_unlock();
  return err;
}

int osmem_set_executable(void *p, size_t size, bool exec) {
  int err = page_range(p, size, &size);
  return err ? err : osmem__os_set_executable(p, size, exec);
}

/* --------------------------------------------------------------- teardown */

int osmem__reservations_release_all_locked(void) {
  struct osmem__state *g = &osmem__g;
  int first_err = 0;
  while (g->user_count > 0) {
    struct osmem__span *r = &g->user[g->user_count - 1];
    int err = osmem__os_unmap((void *)r->base, r->size);
    if (!first_err) first_err = err;
    table_remove(r);
  }
  return first_err;
}

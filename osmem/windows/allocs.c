/*
 * Giving memory back on Windows, where VirtualFree(MEM_RELEASE) frees only
 * a whole allocation, from its base, while the common code unmaps any
 * sub-range of what it reserved (a pooled range, a reservation's unused
 * tail, each megablock still out at teardown), and ranges that span two
 * adjacent reservations (the pool coalesces them).
 *
 * So the backend keeps a table of its allocations: base, size, and bytes
 * given back. osmem__os_unmap splits its range by allocation; a piece that
 * leaves part of its allocation in use is decommitted (MEM_DECOMMIT: memory
 * and commit charge go back, the address space stays reserved) and counted;
 * the piece that completes an allocation releases it whole (MEM_RELEASE).
 * Placeholders (VirtualAlloc2 MEM_RESERVE_PLACEHOLDER, split with
 * VirtualFree MEM_PRESERVE_PLACEHOLDER) would give address space back
 * piece by piece, but need Windows 10 1803 and Wine 8.0 refuses them
 * (ERROR_INVALID_PARAMETER); the table works everywhere.
 *
 * The common code never unmaps a byte twice, so a count is enough. To keep
 * it exact, an unmap is all or nothing: every piece is decommitted first
 * and counted only once all have been; if one refuses, those done are
 * committed again and the call fails. A release the OS refuses leaves the
 * allocation in the table, fully given back, to be released again by
 * osmem__os_retry_discards; so does an allocation the backend made and
 * undoes at once (a misplaced reservation, reserve.c), and the table's own
 * old storage.
 *
 * The table is sorted by base; its storage comes from VirtualAlloc (never
 * malloc): 64 entries in static storage first, then a table that doubles,
 * given back when the last allocation is (after a teardown).
 */
#include <config.h>

#include <errno.h>
#include <string.h>

#include "machine.h"
#include "sys.h"

struct alloc {
  uintptr_t base;
  size_t size;
  size_t given_back; /* == size: waiting to be released */
  bool inaccessible;
};

#define STATIC_ENTRIES 64
static struct alloc static_table[STATIC_ENTRIES];
static struct alloc *table = static_table; /* lock */
static size_t count, cap = STATIC_ENTRIES;

/* ------------------------------------------------------------------ table */

/* The index of the first allocation whose base is above addr. */
static size_t upper_bound(uintptr_t addr) {
  size_t lo = 0, hi = count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (table[mid].base <= addr) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/* The allocation holding addr, or NULL. */
static struct alloc *holding(uintptr_t addr) {
  size_t i = upper_bound(addr);
  if (i == 0) return NULL;
  struct alloc *a = &table[i - 1];
  return addr - a->base < a->size ? a : NULL;
}

/* Table storage is not counted in os_maps (it is not memory handed out),
 * but goes through the call table so that tests can refuse it. The old
 * storage is released; where the OS refuses, it is recorded in the new
 * table, given back, for osmem__os_retry_discards. */
int osmem__windows_track_room(size_t n) {
  while (cap - count < n + 1) {
    size_t bytes = 2 * cap * sizeof *table;
    struct alloc *bigger = osmem__windows_sys.VirtualAlloc(
        NULL, bytes, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    if (!bigger) return ENOMEM;
    memcpy(bigger, table, count * sizeof *table);
    struct alloc *old = table;
    size_t old_bytes = cap * sizeof *table;
    table = bigger;
    cap *= 2;
    if (old != static_table &&
        !osmem__windows_sys.VirtualFree(old, 0, MEM_RELEASE))
      osmem__windows_track_given_back(old, old_bytes);
  }
  return 0;
}

void osmem__windows_track(void *base, size_t size, bool inaccessible) {
  size_t i = upper_bound((uintptr_t)base);
  memmove(&table[i + 1], &table[i], (count - i) * sizeof *table);
  table[i] = (struct alloc){(uintptr_t)base, size, 0, inaccessible};
  count++;
}

void osmem__windows_track_given_back(void *base, size_t size) {
  if (count == cap) return; /* cannot happen: track_room made room */
  osmem__windows_track(base, size, false);
  holding((uintptr_t)base)->given_back = size;
}

/* After a teardown nothing is left: the table's own storage goes too, so
 * that a teardown leaves no mapping behind (where the OS refuses, the
 * table keeps it, and tries again when it is empty next). */
static void untrack(struct alloc *a) {
  size_t i = (size_t)(a - table);
  memmove(a, a + 1, (count - i - 1) * sizeof *table);
  count--;
  if (count == 0 && table != static_table &&
      osmem__windows_sys.VirtualFree(table, 0, MEM_RELEASE)) {
    table = static_table;
    cap = STATIC_ENTRIES;
  }
}

bool osmem__windows_in_inaccessible(uintptr_t addr) {
  struct alloc *a = holding(addr);
  return a && a->inaccessible && a->given_back < a->size;
}

/* ----------------------------------------------------------------- unmap */

/* The piece of [at, end) in allocation a. */
static size_t piece(const struct alloc *a, uintptr_t at, uintptr_t end) {
  uintptr_t a_end = a->base + a->size;
  return (end < a_end ? end : a_end) - at;
}

/* Whether a piece of this length is what is left of a. */
static bool completes(const struct alloc *a, size_t len) {
  return a->given_back + len == a->size;
}

/* Every byte of [at, end) lies in a tracked allocation. */
static bool covered(uintptr_t at, uintptr_t end) {
  while (at < end) {
    struct alloc *a = holding(at);
    if (!a) return false;
    at += piece(a, at, end);
  }
  return true;
}

/* Commits again the pieces of [at, stop) that a failed unmap decommitted:
 * they were read-write, and the caller still owns them. */
static void undo_decommits(uintptr_t at, uintptr_t stop) {
  while (at < stop) {
    struct alloc *a = holding(at);
    size_t len = piece(a, at, stop);
    if (!completes(a, len) && !a->inaccessible)
      (void)osmem__windows_commit((void *)at, len, PAGE_READWRITE);
    at += len;
  }
}

/* Phase 1: decommits every piece that does not complete its allocation. */
static int decommit_pieces(uintptr_t start, uintptr_t end) {
  for (uintptr_t at = start; at < end;) {
    struct alloc *a = holding(at);
    size_t len = piece(a, at, end);
    if (!completes(a, len) &&
        !osmem__windows_free((void *)at, len, MEM_DECOMMIT)) {
      int err = osmem__windows_errno(GetLastError());
      undo_decommits(start, at);
      return err;
    }
    at += len;
  }
  return 0;
}

/* Releases a fully given back allocation; it stays in the table when the
 * OS refuses. The bytes released. */
static size_t release(struct alloc *a) {
  size_t size = a->size;
  if (!osmem__windows_free((void *)a->base, 0, MEM_RELEASE)) return 0;
  untrack(a);
  return size;
}

/* Phase 2: counts every piece and releases the allocations completed. */
static void count_pieces(uintptr_t at, uintptr_t end) {
  while (at < end) {
    struct alloc *a = holding(at);
    size_t len = piece(a, at, end);
    at += len;
    a->given_back += len;
    if (a->given_back == a->size) release(a);
  }
}

int osmem__os_unmap(void *p, size_t size) {
  uintptr_t start = (uintptr_t)p, end = start + size;
  if (end < start || !covered(start, end)) return EINVAL;
  int err = decommit_pieces(start, end);
  if (err) return err;
  count_pieces(start, end);
  return 0;
}

/* A tracked mapping is always given back by unmap: a whole allocation
 * waits in the table when its release is refused. Pieces can only fail to
 * decommit, which a valid range does not. */
void osmem__os_discard(void *p, size_t size) { (void)osmem__os_unmap(p, size); }

size_t osmem__os_retry_discards(void) {
  size_t bytes = 0;
  for (size_t i = count; i-- > 0;) {
    if (i >= count || table[i].given_back != table[i].size) continue;
    bytes += release(&table[i]);
  }
  return bytes;
}

/* ------------------------------------------------------------ bookkeeping */

int osmem__os_meta_alloc(size_t size, void **out) {
  if (osmem__windows_track_room(0) != 0) return ENOMEM;
  void *p = osmem__windows_alloc(NULL, size, MEM_RESERVE | MEM_COMMIT,
                                 PAGE_READWRITE);
  if (!p) return ENOMEM;
  osmem__windows_track(p, size, false);
  *out = p;
  return 0;
}

/* ---------------------------------------------------------- region walks */

int osmem__windows_each_region(void *p, size_t size,
                               osmem__windows_piece_fn fn, void *ctx) {
  uintptr_t at = (uintptr_t)p, end = at + size;
  while (at < end) {
    MEMORY_BASIC_INFORMATION mbi;
    if (osmem__windows_sys.VirtualQuery((void *)at, &mbi, sizeof mbi) == 0)
      return EFAULT;
    uintptr_t region_end = (uintptr_t)mbi.BaseAddress + mbi.RegionSize;
    size_t len = (region_end < end ? region_end : end) - at;
    int err = fn(ctx, (void *)at, len, &mbi);
    if (err) return err;
    at += len;
  }
  return 0;
}

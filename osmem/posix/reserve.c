/*
 * Aligned reservations from mmap. Three ways, cheapest first:
 *   1. at the caller's hint (just below its previous reservation), with
 *      MAP_FIXED_NOREPLACE where the system has it: one mmap, and the heap
 *      stays one contiguous mapping. The result is always compared with the
 *      hint, since kernels before 4.17 ignore the flag and place the mapping
 *      elsewhere.
 *   2. an exact mapping anywhere: one mmap, kept if it happens to be aligned
 *      (Linux aligns mappings whose size is a multiple of 2 MiB for THP).
 *   3. over-allocate by align - page, the tight bound (the start is page
 *      aligned, so at most align - page bytes precede an aligned address),
 *      and unmap the head and tail: three calls.
 * Each way that misses undoes its mapping before the next is tried.
 *
 * The pool's reservations are read-write from the start (MAP_NORESERVE: no
 * commit charge where the kernel honours it); the caller's own reservations
 * (osmem_reserve) are PROT_NONE, which costs no commit charge under any
 * overcommit policy, and are made accessible piece by piece by mprotect.
 */
#include <config.h>

#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>

#include "machine.h"
#include "sys.h"

#ifndef MAP_NORESERVE
#define MAP_NORESERVE 0
#endif

static bool aligned(const void *p, size_t align) {
  return ((uintptr_t)p & (align - 1)) == 0;
}

static void count(atomic_uint_least64_t *counter) {
  atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
}

/* A reserve that missed gives its mapping back; ENOMEM when mmap refused. */
static int missed(void *p, size_t size) {
  if (p == MAP_FAILED) return errno == ENOMEM ? ENOMEM : EAGAIN;
  osmem__os_discard(p, size);
  return EAGAIN;
}

/* A mapping at address 0 (root may map page 0, and sanitizers rewrite
 * hints) would put a megablock at NULL: never usable. */
static bool at_zero(const void *p) { return p == NULL; }

static int reserve_at_hint(size_t size, size_t align, void *hint, int prot,
                           void **out) {
  int flags = MAP_NORESERVE;
#ifdef MAP_FIXED_NOREPLACE
  flags |= MAP_FIXED_NOREPLACE;
#endif
  void *p = osmem__posix_mmap(hint, size, prot, flags);
  if (at_zero(p)) {
    return missed(p, size);
  } else if (p == hint) {
    count(&osmem__os_count.align_hint_hits);
  } else if (p != MAP_FAILED && aligned(p, align)) {
    count(&osmem__os_count.align_exact_hits); /* elsewhere, but aligned */
  } else {
    return missed(p, size);
  }
  *out = p;
  return 0;
}

static int reserve_exact(size_t size, size_t align, int prot, void **out) {
  void *p = osmem__posix_mmap(NULL, size, prot, MAP_NORESERVE);
  if (p == MAP_FAILED || at_zero(p) || !aligned(p, align))
    return missed(p, size);
  count(&osmem__os_count.align_exact_hits);
  *out = p;
  return 0;
}

static int reserve_and_trim(size_t size, size_t align, int prot,
                            void **out) {
  size_t slack = align - osmem__posix_page_size;
  if (size > SIZE_MAX - slack) return ENOMEM;
  void *p = osmem__posix_mmap(NULL, size + slack, prot, MAP_NORESERVE);
  if (p == MAP_FAILED) return ENOMEM;
  uintptr_t start = (uintptr_t)p;
  uintptr_t first = (start + align - 1) & ~(uintptr_t)(align - 1);
  if (first == 0) { /* the aligned start would be NULL */
    osmem__os_discard(p, size + slack);
    return ENOMEM;
  }
  size_t head = first - start, tail = slack - head;
  /* A failed trim leaves address space mapped, to be given back later; the
   * result is good. */
  if (head) osmem__os_discard(p, head);
  if (tail) osmem__os_discard((void *)(first + size), tail);
  count(&osmem__os_count.align_trims);
  *out = (void *)first;
  return 0;
}

/* Only mmap knows; asking costs as much as trying. */
bool osmem__os_may_reserve(size_t size, size_t align) {
  (void)size, (void)align;
  return true;
}

int osmem__os_reserve(size_t size, size_t align, void *hint,
                      bool inaccessible, void **out) {
  int prot = inaccessible ? PROT_NONE : PROT_READ | PROT_WRITE;
  if (align < osmem__posix_page_size) align = osmem__posix_page_size;
  if (hint && aligned(hint, align) &&
      reserve_at_hint(size, align, hint, prot, out) == 0)
    return 0;
  if (reserve_exact(size, align, prot, out) == 0) return 0;
  return reserve_and_trim(size, align, prot, out);
}

int osmem__os_commit(void *p, size_t size) {
  if (osmem__posix_mprotect(p, size, PROT_READ | PROT_WRITE) == 0) return 0;
  /* The range is known to be ours and whole, so a refusal is for want of
   * memory: the commit limit (strict overcommit) or the mapping count.
   * Whatever errno the kernel chose, the contract says ENOMEM. */
  return ENOMEM;
}

int osmem__os_set_executable(void *p, size_t size, bool exec) {
  int prot = PROT_READ | PROT_WRITE | (exec ? PROT_EXEC : 0);
  if (osmem__posix_mprotect(p, size, prot) == 0) return 0;
  return errno == ENOMEM ? EFAULT : errno; /* ENOMEM: a hole in the range */
}

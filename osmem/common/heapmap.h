/*
 * The heap map: three bits per megablock, kept per 32 GiB of address space.
 *
 *   out      the megablock is handed out, or a single megablock in a thread
 *            cache (a cached run of several is unmarked). Written under the
 *            pool lock, and by a thread cache for runs it takes or gives
 *            back, always with atomic read-modify-writes.
 *   cached   the megablock is a single one in a thread cache. Written by
 *            the thread caches without the lock. A byte each, so that
 *            clearing one is a plain store. Only where threads run in
 *            parallel (OSMEM_CACHE_MARKS, the POSIX backend): elsewhere a
 *            cache holds singles unmarked, like runs.
 *   resident the megablock is pooled and may hold resident pages (freed and
 *            not decommitted since). Under the pool lock only, with a
 *            summary bit per word and per leaf, so that the highest
 *            resident megablock (the one the pool will reuse last) is
 *            found in a few reads.
 *
 * osmem_is_heap(p) is "out and not cached": exactly the megablocks handed
 * out now. The cached marks are laid out in stripes, so that megablocks next
 * to each other (which different threads often hold) sit on different cache
 * lines and threads flipping them do not contend; the other two are plain
 * bitmaps, cheap over long ranges.
 *
 * Shape: a two-level radix map. The top level is a static array of pointers,
 * one per 32 GiB of address space; a leaf holds the three bitmaps for those
 * 32 GiB, allocated when the library first maps memory there and never
 * freed. Cost: the top level has one pointer per 32 GiB of a 2^48-byte
 * address space, 8,192 pointers = 64 KiB of zero-initialised BSS on 64-bit
 * (pages of it never touched cost no memory), one pointer on 32-bit; a leaf
 * is 2 bits and a byte per megablock: 40 KiB of address space for 1 MiB
 * megablocks, of which the pages that describe memory in use are touched.
 *
 * Readers take no lock: a leaf pointer is published with a release store
 * after the leaf is zeroed. A free of megablocks that are handed out must
 * win against a concurrent bad free of the same megablocks through a
 * thread cache: the locked free clears `out` and then checks `cached`, the
 * cache sets `cached` and then checks `out`, both sequentially consistent,
 * so at most one of them succeeds.
 *
 * Addresses at or above 2^OSMEM__VA_BITS cannot be tracked; the library never
 * hands out memory there (osmem__heapmap_prepare refuses it).
 */
#ifndef OSMEM_COMMON_HEAPMAP_H
#define OSMEM_COMMON_HEAPMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../backend.h"
#include "osmem.h"

#if UINTPTR_MAX > 0xffffffffu
#define OSMEM__VA_BITS 48
#else
#define OSMEM__VA_BITS 32
#endif

/* Megablocks in the address space the map covers; also the largest n a get
 * can ever satisfy. */
#define OSMEM__MBLOCK_LIMIT \
  ((size_t)((((uint64_t)1 << OSMEM__VA_BITS) - 1) >> OSMEM_MBLOCK_SHIFT) + 1)

/* Makes sure leaves exist for megablocks [start, start + len), and class
 * arrays too when with_classes. ENOMEM when bookkeeping memory cannot be had
 * or the range is beyond OSMEM__VA_BITS. */
OSMEM_HIDDEN int osmem__heapmap_prepare(uintptr_t start, size_t len,
                                        bool with_classes);

/* Pool classes (0: memory bound to no node; k + 1: bound to node k), one per
 * megablock, handed out or pooled. Written under the lock, on megablocks
 * nobody holds. Where no class array was prepared every megablock is class
 * 0, and setting another class is ignored. */
OSMEM_HIDDEN void osmem__heapmap_set_class(uintptr_t start, size_t len,
                                           unsigned cls);
OSMEM_HIDDEN unsigned osmem__heapmap_class(uintptr_t mblock);
/* How many megablocks from start on (at most len) share start's class. */
OSMEM_HIDDEN size_t osmem__heapmap_class_run(uintptr_t start, size_t len);

/* `out` bits. Leaves must exist. Atomic; callers own the megablocks. */
OSMEM_HIDDEN void osmem__heapmap_set(uintptr_t start, size_t len);
OSMEM_HIDDEN void osmem__heapmap_clear(uintptr_t start, size_t len);
/* Clears the `out` bits of [start, start + len) if every megablock of it is
 * handed out (out and not cached); otherwise changes nothing and returns
 * false. Lock-free: concurrent claims of the same megablocks, through here
 * or cache_claim, let at most one succeed. A word's bits are cleared only if
 * all of its part of the range is out (compare-and-swap); a range of more
 * than 8 with a cached single is found out only after its bits were cleared
 * for a moment, so a good free of a neighbour racing with such a bad free
 * may fail too. */
OSMEM_HIDDEN bool osmem__heapmap_claim_free(uintptr_t start, size_t len);

/* `cached` marks of single megablocks, lock-free. cache_claim marks mblock
 * if it is handed out (one atomic exchange), else changes nothing and
 * returns false. cache_release clears the mark (a plain store: only the
 * cache holding the megablock does it, when it hands it out again or gives
 * it to the pool). */
OSMEM_HIDDEN bool osmem__heapmap_cache_claim(uintptr_t mblock);
OSMEM_HIDDEN void osmem__heapmap_cache_release(uintptr_t mblock);
/* A cached single leaves the cache for the pool: its `out` bit, then its
 * mark, are cleared (waiting out a racing claim's brief change). Lock held. */
OSMEM_HIDDEN void osmem__heapmap_uncache(uintptr_t mblock);

/* `resident` bits. Lock held. set: marks the range. take: clears the range
 * and returns how many were set. */
OSMEM_HIDDEN void osmem__heapmap_resident_set(uintptr_t start, size_t len);
OSMEM_HIDDEN size_t osmem__heapmap_resident_take(uintptr_t start, size_t len);
/* The first run of resident megablocks in [start, start + len): true and
 * *run_start, *run_len, or false when there is none. */
OSMEM_HIDDEN bool osmem__heapmap_resident_next(uintptr_t start, size_t len,
                                               uintptr_t *run_start,
                                               size_t *run_len);

/* The highest resident megablock: true and *mblock, or false if none. */
OSMEM_HIDDEN bool osmem__heapmap_resident_highest(uintptr_t *mblock);
/* How many megablocks from mblock downward (mblock, mblock - 1, ...) are
 * resident, at most `most`; mblock itself must be. */
OSMEM_HIDDEN size_t osmem__heapmap_resident_run_down(uintptr_t mblock,
                                                     size_t most);

/* Whether every megablock of [start, start + len) is out of the pool (for
 * the invariant checks). */
OSMEM_HIDDEN bool osmem__heapmap_all_set(uintptr_t start, size_t len);

/* Calls fn for each maximal run of megablocks marked `out`, lowest first,
 * until it returns false. fn may clear the bits of the run it is given.
 * Lock held. */
OSMEM_HIDDEN void osmem__heapmap_each_out(bool (*fn)(void *ctx,
                                                     uintptr_t start,
                                                     size_t n),
                                          void *ctx);

/* Forgets every leaf and class array (a teardown has unmapped them): the
 * map is as at start. Lock held; no reader may run. */
OSMEM_HIDDEN void osmem__heapmap_forget(void);

/* osmem_is_heap (include/osmem.h) is defined in heapmap.c. */

#endif /* OSMEM_COMMON_HEAPMAP_H */

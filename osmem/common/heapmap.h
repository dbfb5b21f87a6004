/*
 * The heap map behind osmem_is_heap: one bit per megablock, set while the
 * megablock is handed out.
 *
 * Shape: a two-level radix map. The top level is a static array of pointers,
 * one per 32 GiB of address space; a leaf is a bitmap for those 32 GiB,
 * allocated when the library first maps memory there and never freed.
 * Cost: the top level has one pointer per 32 GiB of a 2^48-byte address space,
 * 8,192 pointers = 64 KiB of zero-initialised BSS on 64-bit (pages of it never
 * touched cost no memory), one pointer on 32-bit; each leaf is
 * 32 GiB / OSMEM_MBLOCK_SIZE / 8 bytes: 4 KiB for 1 MiB megablocks. A heap
 * inside one 32 GiB window thus costs one 4 KiB page. A single reservation
 * check would be cheaper but cannot say "handed out now"; a flat bitmap for
 * 2^48 bytes would need 32 MiB of address space.
 *
 * Readers take no lock: a leaf pointer is published with a release store
 * after the leaf is zeroed, and bits are read with relaxed loads. Writers (set,
 * clear) run under the pool lock and use atomic read-modify-write.
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
 * megablock, handed out or pooled. Lock held. Where no class array was
 * prepared every megablock is class 0, and setting another class is ignored. */
OSMEM_HIDDEN void osmem__heapmap_set_class(uintptr_t start, size_t len,
                                           unsigned cls);
OSMEM_HIDDEN unsigned osmem__heapmap_class(uintptr_t mblock);
/* How many megablocks from start on (at most len) share start's class. */
OSMEM_HIDDEN size_t osmem__heapmap_class_run(uintptr_t start, size_t len);

/* Set or clear the bits of [start, start + len); leaves must exist. */
OSMEM_HIDDEN void osmem__heapmap_set(uintptr_t start, size_t len);
OSMEM_HIDDEN void osmem__heapmap_clear(uintptr_t start, size_t len);

/* Whether every megablock of [start, start + len) is handed out. */
OSMEM_HIDDEN bool osmem__heapmap_all_set(uintptr_t start, size_t len);

/* Whether the megablock holding address p is handed out. Lock-free. */
OSMEM_HIDDEN bool osmem__heapmap_contains(const void *p);

#endif /* OSMEM_COMMON_HEAPMAP_H */

/*
 * The wasm backend's only "system calls": memory.size and memory.grow, in
 * 64 KiB wasm pages, reached through this table so that tests can make a
 * grow fail, or simulate another grower that moved the end of memory.
 */
#ifndef OSMEM_WASM_SYS_H
#define OSMEM_WASM_SYS_H

#include <stddef.h>
#include <stdint.h>

#include "../backend.h"

#define OSMEM__WASM_PAGE ((size_t)65536)
/* A wasm32 memory holds at most 65536 pages: 4 GiB. */
#define OSMEM__WASM_MAX_BYTES ((uint64_t)1 << 32)

struct osmem__wasm_sys {
  size_t (*memory_size)(void);         /* pages */
  size_t (*memory_grow)(size_t pages); /* old size in pages, or SIZE_MAX */
};

OSMEM_HIDDEN extern struct osmem__wasm_sys osmem__wasm_sys;
OSMEM_HIDDEN void osmem__wasm_sys_reset(void);

/* Counted: the end of memory in bytes, and a grow by `bytes` (a multiple of
 * the wasm page) returning the old end in bytes, or UINT64_MAX. */
OSMEM_HIDDEN uint64_t osmem__wasm_memory_end(void);
OSMEM_HIDDEN uint64_t osmem__wasm_grow(uint64_t bytes);

/* The break (brk.c): room the library keeps for sbrk and its own
 * bookkeeping, separate from the end of memory. */

/* Offers [lo, hi) (page aligned or not) to the break: a gap left below an
 * aligned megablock. */
OSMEM_HIDDEN void osmem__wasm_break_offer(uint64_t lo, uint64_t hi);

/* Moves the break up by `bytes` and returns its old value, growing memory
 * when the room left is too small; 0 when memory cannot grow. */
OSMEM_HIDDEN uintptr_t osmem__wasm_break_take(size_t bytes);

/* Bytes of room left above the break (for tests and statistics). */
OSMEM_HIDDEN size_t osmem__wasm_break_room(void);

/* Bytes of grown memory that went to the break's room or the bookkeeping
 * room, counted where they enter it: with the megablocks the library holds
 * (bytes_mapped), everything the library ever grew. Lock held. */
OSMEM_HIDDEN extern uint64_t osmem__wasm_room_bytes;

/* For the fault sweep, which runs every case in one process: the break and
 * the bookkeeping room, saved, and put back (a zeroed state is the one a
 * fresh process starts with). */
struct osmem__wasm_rooms {
  uint64_t brk_base, brk_cur, brk_end, meta_cur, meta_end, room_bytes;
};
OSMEM_HIDDEN void osmem__wasm_rooms_save(struct osmem__wasm_rooms *out);
OSMEM_HIDDEN void osmem__wasm_rooms_restore(const struct osmem__wasm_rooms *in);

#endif /* OSMEM_WASM_SYS_H */

/*
 * The break, and room for the library's bookkeeping.
 *
 * The break is a region [base, end) of linear memory with a current break
 * inside it, kept separately from the end of memory; only sbrk moves it.
 * Gaps below aligned megablocks are offered here: a gap that starts right at
 * the end of the break's room extends the room, so malloc's later sbrk calls
 * (with the sbrk replacement, --enable-wasm-sbrk) fill it instead of growing
 * memory. Other gaps become room for the library's own bookkeeping, which is
 * kept apart so that nothing but sbrk ever moves the break.
 *
 * Why that matters: when an sbrk result does not continue malloc's last
 * segment, dlmalloc (wasi-libc's malloc) asks once more, for the rest, and
 * assumes without checking that the second result continues the first. So
 * the break never jumps to a gap elsewhere: it only ever continues, or, when
 * its room is used up, moves to the end of memory, where a second request
 * then grows memory contiguously.
 *
 * Contracts kept for sbrk: sbrk(0) returns the current break; sbrk(+n)
 * returns the old break, and the n bytes above it are the caller's; sbrk(-n)
 * moves the break down (never below the start of its region) and returns the
 * old break; failure returns (void *)-1 with errno ENOMEM and changes nothing.
 */
#include <config.h>

#include <errno.h>
#include <string.h>

#include "sys.h"

static uint64_t brk_base, brk_cur, brk_end; /* the break and its room */
static uint64_t meta_cur, meta_end;         /* room for bookkeeping */
uint64_t osmem__wasm_room_bytes;

void osmem__wasm_rooms_save(struct osmem__wasm_rooms *out) {
  *out = (struct osmem__wasm_rooms){brk_base, brk_cur,  brk_end,
                                    meta_cur, meta_end, osmem__wasm_room_bytes};
}

void osmem__wasm_rooms_restore(const struct osmem__wasm_rooms *in) {
  brk_base = in->brk_base, brk_cur = in->brk_cur, brk_end = in->brk_end;
  meta_cur = in->meta_cur, meta_end = in->meta_end;
  osmem__wasm_room_bytes = in->room_bytes;
}

static uint64_t page_round(uint64_t x) {
  return (x + OSMEM__WASM_PAGE - 1) & ~(uint64_t)(OSMEM__WASM_PAGE - 1);
}

static void break_init(void) {
  if (brk_end != 0) return;
  brk_base = brk_cur = brk_end = osmem__wasm_memory_end();
}

size_t osmem__wasm_break_room(void) {
  break_init();
  return (size_t)(brk_end - brk_cur);
}

static void meta_offer(uint64_t lo, uint64_t hi) {
  if (lo == meta_end)
    meta_end = hi;
  else if (hi - lo > meta_end - meta_cur)
    meta_cur = lo, meta_end = hi;
}

void osmem__wasm_break_offer(uint64_t lo, uint64_t hi) {
  if (hi <= lo) return;
  break_init();
  osmem__wasm_room_bytes += hi - lo;
#ifdef OSMEM_WASM_SBRK
  if (lo == brk_end) { /* right above the break's room: the room grows */
    brk_end = hi;
    return;
  }
#endif
  meta_offer(lo, hi);
}

/* Grows memory so that the break's room holds `bytes`: in place when the
 * room ends at the end of memory, else by moving the break to a new region
 * at the end. false when memory cannot grow (or another grower got in the
 * way and the room is still short). */
static bool break_grow(size_t bytes) {
  uint64_t room = brk_end - brk_cur;
  bool at_end = brk_end == osmem__wasm_memory_end();
  uint64_t want = page_round(at_end ? bytes - room : bytes);
  uint64_t old = osmem__wasm_grow(want);
  if (old == UINT64_MAX) return false;
  osmem__wasm_room_bytes += want;
  if (old == brk_end) {
    brk_end += want;
  } else { /* the caller settles what was left of the old room */
    brk_base = brk_cur = old;
    brk_end = old + want;
  }
  return bytes <= brk_end - brk_cur;
}

uintptr_t osmem__wasm_break_take(size_t bytes) {
  break_init();
  if (bytes > brk_end - brk_cur) {
    uint64_t base = brk_base, cur = brk_cur, end = brk_end;
    bool grown = break_grow(bytes) || break_grow(bytes);
    if (!grown) {
      /* A failure changes nothing the caller can see: the break stays
       * where it was; memory grown on the way becomes bookkeeping room. */
      if (brk_base != base) meta_offer(brk_cur, brk_end);
      brk_base = base, brk_cur = cur, brk_end = end;
      return 0;
    }
    if (brk_base != base) meta_offer(cur, end); /* the old room's rest */
  }
  uintptr_t p = (uintptr_t)brk_cur;
  brk_cur += bytes;
  return p;
}

/* Bookkeeping: 16-byte aligned, zero-filled, from the bookkeeping room,
 * growing memory at its end when the room is short. */
int osmem__os_meta_alloc(size_t size, void **out) {
  break_init();
  for (int tries = 0; tries < 2; tries++) {
    uint64_t start = (meta_cur + 15) & ~(uint64_t)15;
    if (meta_end >= start && meta_end - start >= size) {
      meta_cur = start + size;
      memset((void *)(uintptr_t)start, 0, size); /* a gap may hold old data */
      *out = (void *)(uintptr_t)start;
      return 0;
    }
    uint64_t want = page_round((uint64_t)size + 16);
    uint64_t old = osmem__wasm_grow(want);
    if (old == UINT64_MAX) return ENOMEM;
    osmem__wasm_room_bytes += want;
    meta_offer(old, old + want);
  }
  return ENOMEM;
}

#ifdef OSMEM_WASM_SBRK
/* Replaces wasi-libc's sbrk (a separate archive member there, so a static
 * link resolves malloc's calls here). The one symbol this library defines
 * outside the osmem_ prefix, on purpose. */
__attribute__((visibility("default"))) void *sbrk(intptr_t increment) {
  void *result = (void *)-1;
  osmem__os_lock();
  break_init();
  if (increment >= 0) {
    uintptr_t p = increment == 0 ? (uintptr_t)brk_cur
                                 : osmem__wasm_break_take((size_t)increment);
    if (p) result = (void *)p;
  } else {
    uint64_t down = (uint64_t)(-(increment + 1)) + 1; /* no overflow at MIN */
    if (down <= brk_cur - brk_base) {
      result = (void *)(uintptr_t)brk_cur;
      brk_cur -= down;
    }
  }
  osmem__os_unlock();
  if (result == (void *)-1) errno = ENOMEM;
  return result;
}
#endif

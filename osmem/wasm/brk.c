/*
 * The break: a region [base, end) of linear memory, with a current break
 * inside it, that the library keeps separately from the end of memory.
 * Gaps below aligned megablocks are offered to it, so that malloc's later
 * sbrk calls (with the sbrk replacement, --enable-wasm-sbrk) and the
 * library's bookkeeping are placed there instead of growing memory.
 *
 * Contracts kept for sbrk: sbrk(0) returns the current break; sbrk(+n)
 * returns the old break and the n bytes above it are the caller's; sbrk(-n)
 * moves the break down (never below the start of the current region) and
 * returns the old break. When the room left is too small, the break moves to
 * fresh memory at the end (non-contiguous, which malloc copes with) unless
 * the room is itself at the end of memory, where it simply grows.
 */
#include <config.h>

#include <errno.h>
#include <string.h>

#include "sys.h"

static uint64_t brk_base, brk_cur, brk_end;

static void break_init(void) {
  if (brk_end != 0) return;
  brk_base = brk_cur = brk_end = osmem__wasm_memory_end();
}

size_t osmem__wasm_break_room(void) {
  break_init();
  return (size_t)(brk_end - brk_cur);
}

void osmem__wasm_break_offer(uint64_t lo, uint64_t hi) {
  if (hi <= lo) return;
  break_init();
  if (lo == brk_end) { /* right above the room: the room grows */
    brk_end = hi;
  } else if (hi - lo > brk_end - brk_cur) { /* more room than is left */
    brk_base = brk_cur = lo;
    brk_end = hi;
  }
}

/* Grows memory so that the room holds at least `bytes`; false if it can't. */
static bool break_grow(size_t bytes) {
  uint64_t room = brk_end - brk_cur;
  bool at_end = brk_end == osmem__wasm_memory_end();
  uint64_t want = at_end ? bytes - room : bytes;
  want = (want + OSMEM__WASM_PAGE - 1) & ~(uint64_t)(OSMEM__WASM_PAGE - 1);
  uint64_t old = osmem__wasm_grow(want);
  if (old == UINT64_MAX) return false;
  osmem__wasm_break_offer(old, old + want);
  return bytes <= brk_end - brk_cur;
}

uintptr_t osmem__wasm_break_take(size_t bytes) {
  break_init();
  if (bytes > brk_end - brk_cur && !break_grow(bytes) && !break_grow(bytes))
    return 0;
  uintptr_t p = (uintptr_t)brk_cur;
  brk_cur += bytes;
  return p;
}

int osmem__os_meta_alloc(size_t size, void **out) {
  break_init();
  size_t pad = (size_t)((16 - (brk_cur & 15)) & 15);
  if (size > SIZE_MAX - pad) return ENOMEM;
  uintptr_t p = osmem__wasm_break_take(size + pad);
  if (!p) return ENOMEM;
  /* Room below the break may have been malloc's before an sbrk(-n). */
  memset((void *)(p + pad), 0, size);
  *out = (void *)(p + pad);
  return 0;
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
  } else if ((uint64_t)-(increment + 1) + 1 <= brk_cur - brk_base) {
    result = (void *)(uintptr_t)brk_cur;
    brk_cur -= (uint64_t)-(increment + 1) + 1;
  }
  osmem__os_unlock();
  if (result == (void *)-1) errno = ENOMEM;
  return result;
}
#endif

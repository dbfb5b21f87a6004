/*
 * Megablocks on wasm: linear memory grows, in 64 KiB pages, and never
 * shrinks. A reservation is memory grown to the next aligned boundary plus
 * the request; the space between the old end and the aligned start (the gap)
 * is offered to the break (brk.c), where malloc's sbrk calls and the
 * library's bookkeeping can use it instead of wasting it.
 *
 * The old end of memory is taken from what memory.grow returns, never from an
 * earlier memory.size read: another grower (malloc's own sbrk, or another
 * thread) may have moved the end in between. If the grow landed higher than
 * expected and is too short for the aligned range, what it gave becomes
 * break room and the grow is tried again from the new end.
 */
#include <config.h>

#include <errno.h>

#include "sys.h"

#define MAX_TRIES 4

static uint64_t align_up(uint64_t x, uint64_t to) {
  return (x + to - 1) & ~(to - 1);
}

bool osmem__os_may_reserve(size_t size, size_t align) {
  return align_up(osmem__wasm_memory_end(), align) + size <= OSMEM__WASM_MAX_BYTES;
}

int osmem__os_reserve(size_t size, size_t align, void *hint,
                      bool inaccessible, void **out) {
  (void)hint; /* memory only grows at its end */
  if (inaccessible) return ENOSYS; /* all of memory is accessible */
  uint64_t end = osmem__wasm_memory_end();
  for (int tries = 0; tries < MAX_TRIES; tries++) {
    uint64_t start = align_up(end, align);
    if (start + size > OSMEM__WASM_MAX_BYTES) return ENOMEM; /* no wrap */
    uint64_t bytes = align_up(start + size - end, OSMEM__WASM_PAGE);
    uint64_t old = osmem__wasm_grow(bytes);
    if (old == UINT64_MAX) return ENOMEM; /* nothing grown */
    uint64_t got_end = old + bytes;
    start = align_up(old, align);
    if (start + size <= got_end) {
      osmem__wasm_break_offer(old, start);
      osmem__wasm_break_offer(start + size, got_end); /* only if moved */
      *out = (void *)(uintptr_t)start;
      return 0;
    }
    osmem__wasm_break_offer(old, got_end);
    end = got_end;
  }
  return ENOMEM;
}

/* Wasm memory cannot be given back. */
int osmem__os_unmap(void *p, size_t size) {
  (void)p, (void)size;
  return ENOSYS;
}

/* Growth is exact on wasm (no reservation ahead): no budget to keep. */
size_t osmem__os_address_budget(void) { return SIZE_MAX; }

/* Nothing is ever given back, so nothing waits to be. */
void osmem__os_discard(void *p, size_t size) { (void)p, (void)size; }
size_t osmem__os_retry_discards(void) { return 0; }

/* There are no inaccessible reservations to commit, and no protections. */
int osmem__os_commit(void *p, size_t size) {
  (void)p, (void)size;
  return ENOSYS;
}

int osmem__os_set_executable(void *p, size_t size, bool exec) {
  (void)p, (void)size, (void)exec;
  return ENOSYS;
}

/* Nor decommitted: there is no madvise. */
int osmem__os_decommit(void *p, size_t size, bool eager) {
  (void)p, (void)size, (void)eager;
  return 0;
}

/* memory.size and memory.grow through a replaceable table (see sys.h). */
#include <config.h>

#include "sys.h"

struct osmem__os_counters osmem__os_count;

static size_t real_memory_size(void) { return __builtin_wasm_memory_size(0); }

static size_t real_memory_grow(size_t pages) {
  return __builtin_wasm_memory_grow(0, pages);
}

struct osmem__wasm_sys osmem__wasm_sys = {real_memory_size, real_memory_grow};

void osmem__wasm_sys_reset(void) {
  osmem__wasm_sys =
      (struct osmem__wasm_sys){real_memory_size, real_memory_grow};
}

uint64_t osmem__wasm_memory_end(void) {
  return (uint64_t)osmem__wasm_sys.memory_size() * OSMEM__WASM_PAGE;
}

uint64_t osmem__wasm_grow(uint64_t bytes) {
  if (bytes > OSMEM__WASM_MAX_BYTES) return UINT64_MAX;
  atomic_fetch_add_explicit(&osmem__os_count.maps, 1, memory_order_relaxed);
  size_t old = osmem__wasm_sys.memory_grow((size_t)(bytes / OSMEM__WASM_PAGE));
  if (old == SIZE_MAX) return UINT64_MAX;
  return (uint64_t)old * OSMEM__WASM_PAGE;
}

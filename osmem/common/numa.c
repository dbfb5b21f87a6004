/*
 * The public NUMA calls: which nodes may be used, placement policy, and
 * binding. The backend knows the topology and binds; the pools by node live
 * in class_pools.c.
 */
#include <config.h>

#include <errno.h>

#include "internal.h"

unsigned osmem_numa_nodes(void) {
  osmem__ensure_init();
  return osmem__os_numa_nodes();
}

uint64_t osmem_numa_mask(void) {
  uint64_t mask = 0;
  osmem_numa_bitmap(&mask, OSMEM_NUMA_MASK_NODES);
  return mask;
}

size_t osmem_numa_bitmap(uint64_t *bitmap, size_t nbits) {
  osmem__ensure_init();
  size_t limit = osmem__os_numa_limit();
  for (size_t node = 0; node < nbits; node++) {
    uint64_t bit = (uint64_t)1 << (node % 64);
    if (node < limit && osmem__os_node_allowed((unsigned)node))
      bitmap[node / 64] |= bit;
    else
      bitmap[node / 64] &= ~bit;
  }
  return limit;
}

uint64_t osmem_numa_node_memory(unsigned node) {
  osmem__ensure_init();
  return osmem__os_node_memory(node);
}

int osmem_numa_distance(unsigned from, unsigned to) {
  osmem__ensure_init();
  return osmem__os_node_distance(from, to);
}

unsigned osmem_numa_nodes_configured(void) {
  osmem__ensure_init();
  unsigned configured = osmem__os_numa_nodes_configured();
  unsigned allowed = osmem__os_numa_nodes();
  return configured > allowed ? configured : allowed;
}

bool osmem_numa_supported(void) { return osmem__os_numa_supported(); }

bool osmem_numa_available(void) {
  osmem__ensure_init();
  return osmem__os_numa_available();
}

int osmem_set_numa_policy(enum osmem_numa_policy policy) {
  if (policy != OSMEM_NUMA_STRICT && policy != OSMEM_NUMA_PREFERRED &&
      policy != OSMEM_NUMA_STRICT_NO_MOVE)
    return EINVAL;
  osmem__ensure_init();
  atomic_store_explicit(&osmem__g.numa_policy, (int)policy,
                        memory_order_relaxed);
  return 0;
}

int osmem_set_numa_interleave(bool on) {
  osmem__ensure_init();
  osmem__os_lock();
  osmem__g.numa_interleave = on;
  osmem__os_unlock();
  return 0;
}

int osmem_bind_to_node(void *p, size_t size, unsigned node) {
  osmem__ensure_init();
  uintptr_t addr = (uintptr_t)p;
  size_t page = osmem__g.caps.page_size;
  if (addr == 0 || (addr & (page - 1)) != 0 || size == 0) return EINVAL;
  if (size > SIZE_MAX - page || addr + size < addr) return EINVAL;
  if (!osmem__os_node_allowed(node)) return EINVAL;
  int policy = atomic_load_explicit(&osmem__g.numa_policy, memory_order_relaxed);
  return osmem__os_bind(p, (size + page - 1) & ~(page - 1), node, policy);
}

void *osmem_get_mblocks_on_node(size_t n, unsigned node) {
  osmem__ensure_init();
  if (n != 0 && !osmem__os_node_allowed(node)) {
    errno = EINVAL;
    return NULL;
  }
  /* Without NUMA in the kernel there are no classes: binding does nothing,
   * and pooled memory is all node 0's. */
  int policy = atomic_load_explicit(&osmem__g.numa_policy, memory_order_relaxed);
  unsigned cls = osmem__g.classes ? osmem__node_class(node, policy) : 0;
  return osmem__get(n, cls, false);
}

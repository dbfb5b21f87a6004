/*
 * The wasm backend's init, lock and machine facts. A wasm32 module has one
 * linear memory of at most 4 GiB, no NUMA and, without the threads proposal,
 * one thread; the lock is a spinlock so that a threaded build stays correct.
 */
#include <config.h>

#include <errno.h>
#include <stdatomic.h>
#include <time.h>

#include "osmem.h"
#include "sys.h"

static atomic_flag pool_lock = ATOMIC_FLAG_INIT;

void osmem__os_lock(void) {
  while (atomic_flag_test_and_set_explicit(&pool_lock, memory_order_acquire)) {
  }
}

void osmem__os_unlock(void) {
  atomic_flag_clear_explicit(&pool_lock, memory_order_release);
}

/* One thread: no other side to a barrier, and no one to wait for. */
bool osmem__os_barrier_init(void) { return true; }
void osmem__os_barrier_all(void) {}
void osmem__os_yield(void) {}

/* Never asked for: wasm memory is never decommitted. */
uint64_t osmem__os_clock_ns(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return 0;
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* One thread: it never exits while the library runs. */
int osmem__os_at_thread_exit(void *arg) {
  (void)arg;
  return 0;
}

void osmem__os_init(struct osmem__os_caps *caps) {
  *caps = (struct osmem__os_caps){
      .name = "wasm",
      .page_size = OSMEM__WASM_PAGE,
      .can_unmap = false,     /* memory never shrinks */
      .can_decommit = false,  /* no madvise */
      .cheap_reserve = false, /* what is grown is committed for good */
  };
}

/* RAM is all of a wasm32 address space (the host may allow less); there are
 * no cgroups and no rlimits. */
void osmem__os_memory_info(struct osmem_memory_info *out) {
  out->ram = OSMEM__WASM_MAX_BYTES;
  out->cgroup_max = OSMEM_UNLIMITED;
  out->cgroup_high = OSMEM_UNLIMITED;
  out->rlimit_as = OSMEM_UNLIMITED;
  out->cgroup_version = 0;
}

uint64_t osmem__os_ram(void) { return OSMEM__WASM_MAX_BYTES; }

unsigned osmem__os_numa_nodes(void) { return 1; }
unsigned osmem__os_numa_nodes_configured(void) { return 1; }
bool osmem__os_numa_supported(void) { return false; }
bool osmem__os_numa_available(void) { return false; }
size_t osmem__os_numa_limit(void) { return 1; }
bool osmem__os_node_allowed(unsigned node) { return node == 0; }

uint64_t osmem__os_node_memory(unsigned node) {
  return node == 0 ? OSMEM__WASM_MAX_BYTES : 0;
}

int osmem__os_node_distance(unsigned from, unsigned to) {
  return from == 0 && to == 0 ? 10 : -1;
}

int osmem__os_bind(void *p, size_t size, unsigned node, int policy) {
  (void)p, (void)size, (void)policy;
  return node == 0 ? 0 : EINVAL;
}

int osmem__os_interleave(void *p, size_t size) {
  (void)p, (void)size;
  return 0;
}

/*
 * osmem-info: what libosmem sees on this machine, and a short demonstration
 * of its main job: get megablocks, bind them, free them, release them.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "osmem.h"

#define MIB (1024.0 * 1024.0)

/* A limit in bytes and MiB, or "unlimited". */
static void print_limit(const char *label, uint64_t bytes) {
  if (bytes == OSMEM_UNLIMITED)
    printf("  %-16sunlimited\n", label);
  else
    printf("  %-16s%" PRIu64 " bytes (%.1f MiB)\n", label, bytes,
           (double)bytes / MIB);
}

/* Physical memory and where it came from: the lowest of the pieces. */
static void print_memory(void) {
  static const char *const sources[] = {"unknown", "RAM", "cgroup",
                                        "RLIMIT_AS", "job object"};
  struct osmem_memory_info m;
  osmem_memory_info(&m);
  printf("physical memory:  %" PRIu64 " bytes (%.1f MiB), from %s\n",
         m.physical, (double)m.physical / MIB,
         (unsigned)m.source < 5 ? sources[m.source] : "?");
  if (m.ram)
    print_limit("RAM:", m.ram);
  else
    printf("  %-16sunknown\n", "RAM:");
  if (m.cgroup_version == 0) {
    printf("  %-16snone found\n", "cgroup:");
  } else {
    char label[32];
    snprintf(label, sizeof label, "cgroup v%u max:", m.cgroup_version);
    print_limit(label, m.cgroup_max);
    /* memory.high exists in cgroup v2 only (a hybrid system may have it
     * beside a v1 limit). */
    if (m.cgroup_version == 2 || m.cgroup_high != OSMEM_UNLIMITED)
      print_limit("memory.high:", m.cgroup_high);
  }
  print_limit("RLIMIT_AS:", m.rlimit_as);
  if (m.job_max != OSMEM_UNLIMITED) print_limit("job object:", m.job_max);
}

static void print_facts(void) {
  printf("libosmem %s, backend %s\n", osmem_version(), osmem_backend());
  printf("page size:        %zu bytes\n", osmem_page_size());
  printf("megablock size:   %zu bytes (2^%u)\n", (size_t)OSMEM_MBLOCK_SIZE,
         osmem_mblock_shift());
  print_memory();
  printf("NUMA nodes:       %u (mask 0x%" PRIx64 ")\n", osmem_numa_nodes(),
         osmem_numa_mask());
}

/* Each node the process may allocate on, its memory and its distances. */
static void print_topology(void) {
  enum { MAX_BITS = 1024 };
  uint64_t bitmap[MAX_BITS / 64];
  size_t limit = osmem_numa_bitmap(bitmap, MAX_BITS);
  if (limit > MAX_BITS) limit = MAX_BITS;
  for (unsigned node = 0; node < limit; node++) {
    if (!(bitmap[node / 64] >> (node % 64) & 1)) continue;
    printf("  node %u: %.1f MiB, distances:", node,
           (double)osmem_numa_node_memory(node) / MIB);
    for (unsigned to = 0; to < limit; to++) {
      if (!(bitmap[to / 64] >> (to % 64) & 1)) continue;
      int d = osmem_numa_distance(node, to);
      if (d < 0) printf(" %u:?", to);
      else printf(" %u:%d", to, d);
    }
    printf("\n");
  }
}

static void print_stats(const char *when) {
  struct osmem_stats s;
  osmem_stats(&s);
  printf("stats %s:\n", when);
  printf("  megablocks: in use %" PRIu64 ", peak %" PRIu64 ", pooled %" PRIu64
         " (%" PRIu64 " resident) in %" PRIu64 " ranges\n",
         s.mblocks_in_use, s.mblocks_peak, s.mblocks_pooled,
         s.mblocks_pooled_resident, s.pool_ranges);
  printf("  mapped %.1f MiB, of which never handed out %.1f MiB, in %" PRIu64
         " reservations\n",
         (double)s.bytes_mapped / MIB, (double)s.bytes_reserved_unused / MIB,
         s.reservations);
  printf("  OS calls: mmap %" PRIu64 ", munmap %" PRIu64 ", madvise %" PRIu64
         ", mbind %" PRIu64 "\n",
         s.os_maps, s.os_unmaps, s.os_madvise, s.os_mbind);
  printf("  alignment: hint %" PRIu64 ", exact %" PRIu64 ", trimmed %" PRIu64
         ", retried smaller %" PRIu64 "\n",
         s.align_hint_hits, s.align_exact_hits, s.align_trims,
         s.reserve_retries);
}

/* Gets, touches, binds and frees a few megablocks; 0 on success. */
static int demo(void) {
  enum { COUNT = 8 };
  void *blocks[COUNT];
  for (int i = 0; i < COUNT; i++) {
    blocks[i] = osmem_get_mblocks((size_t)i + 1);
    if (!blocks[i]) {
      fprintf(stderr, "osmem-info: get of %d megablocks: %s\n", i + 1,
              strerror(errno));
      return 1;
    }
    memset(blocks[i], 0xA5, OSMEM_MBLOCK_SIZE);
  }
  printf("got %d runs of 1..%d megablocks, first at %p\n", COUNT, COUNT,
         blocks[0]);
  void *bound = osmem_get_mblocks_on_node(2, 0);
  int err = bound ? 0 : errno;
  printf("get 2 megablocks on node 0: %s\n", bound ? "ok" : strerror(err));
  print_stats("after gets");
  for (int i = 0; i < COUNT; i++) osmem_free_mblocks(blocks[i], (size_t)i + 1);
  if (bound) osmem_free_mblocks(bound, 2);
  print_stats("after frees");
  size_t released = osmem_release_free_memory();
  printf("released %zu bytes (%.1f MiB) to the OS\n", released,
         (double)released / MIB);
  print_stats("after release");
  return err;
}

int main(int argc, char **argv) {
  if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    printf("usage: %s\nPrints what libosmem sees on this machine, then gets, "
           "binds, frees and releases a few megablocks and prints the "
           "statistics.\n", argv[0]);
    return 0;
  }
  if (osmem_init() != 0) {
    fprintf(stderr, "osmem-info: osmem_init failed\n");
    return 1;
  }
  print_facts();
  print_topology();
  return demo();
}

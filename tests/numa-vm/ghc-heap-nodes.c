/*
 * For GhcNuma.hs, linked into it: counts the pages of the GHC heap on each
 * NUMA node with move_pages (query mode), over the heap reservation the
 * libosmem-ghc adapter made, and reports in the VM's PASS/FAIL/PAGES form.
 * Pages on both nodes alone would not show that the adapter bound anything
 * (each capability's thread runs on its own node, and the kernel places
 * pages where they are first touched), so each present page's policy is read
 * too: it must be MPOL_BIND to the node the page is on, for both nodes.
 */
#include <numaif.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

void *osmem_ghc_heap_reservation(size_t *size);

#define CHUNK 4096
#define SCAN_BYTES ((size_t)512 << 20) /* the heap grows from its base */

int heap_nodes_check(int nodes_wanted) {
  size_t size = 0, page = (size_t)sysconf(_SC_PAGESIZE);
  char *base = osmem_ghc_heap_reservation(&size);
  if (!base || size == 0) {
    printf("FAIL ghc.heap_reservation: the adapter made none\n");
    return 1;
  }
  printf("PASS ghc.heap_reservation: %zu MiB at %p\n", size >> 20, (void *)base);
  if (size > SCAN_BYTES) size = SCAN_BYTES;
  long count[8] = {0}, bound[8] = {0}, misplaced = 0;
  static void *pages[CHUNK];
  static int status[CHUNK];
  for (size_t off = 0; off < size; off += CHUNK * page) {
    unsigned long n = 0;
    for (; n < CHUNK && off + n * page < size; n++)
      pages[n] = base + off + n * page;
    if (move_pages(0, n, pages, NULL, status, 0) != 0) {
      perror("FAIL ghc.move_pages");
      return 1;
    }
    for (unsigned long i = 0; i < n; i++) {
      if (status[i] < 0 || status[i] >= 8) continue;
      count[status[i]]++;
      int mode = -1;
      unsigned long mask = 0;
      if (get_mempolicy(&mode, &mask, 64, pages[i], MPOL_F_ADDR) != 0 ||
          mode != MPOL_BIND)
        continue;
      if (mask == 1UL << status[i]) bound[status[i]]++;
      else misplaced++;
    }
  }
  printf("PAGES ghc.heap: node0=%ld node1=%ld; bound there: node0=%ld "
         "node1=%ld; bound elsewhere: %ld\n",
         count[0], count[1], bound[0], bound[1], misplaced);
  int on = 0;
  for (int i = 0; i < 8; i++) on += bound[i] > 0;
  if (on < nodes_wanted || misplaced) {
    printf("FAIL ghc.heap_bound_on_every_node: bound pages on %d nodes for %d "
           "capabilities, %ld on another node than their binding\n",
           on, nodes_wanted, misplaced);
    return 1;
  }
  printf("PASS ghc.heap_bound_on_every_node: pages bound (MPOL_BIND) and "
         "placed on %d nodes\n", on);
  return 0;
}

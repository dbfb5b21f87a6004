/*
 * NUMA on Windows: the nodes this process may allocate on, node facts, and
 * binding.
 *
 * Nodes: 0 .. GetNumaHighestNodeNumber. A node is allowed when Windows
 * describes it (GetNumaNodeProcessorMaskEx) and either has no processors
 * (a memory-only node) or shares processors with the process's affinity
 * in its processor group. Where Windows cannot say (Wine 8.0's calls are
 * stubs failing with ERROR_CALL_NOT_IMPLEMENTED) there is one node, 0.
 *
 * Binding: Windows cannot set a policy on a range after the fact, as
 * mbind does. VirtualAllocExNuma(MEM_COMMIT) over the committed pages of
 * the range names the node as their preferred one: pages not touched yet
 * are placed there when first touched, where it has free memory (always a
 * preference: the policies are not told apart); pages already present are
 * not moved. Interleaving has no Windows equivalent and does nothing.
 */
#include <config.h>

#include <errno.h>
#include <limits.h>

#include "machine.h"
#include "osmem.h"
#include "sys.h"

#define MAX_NODES OSMEM__MAX_NODES
#define WORD_BITS 64

static uint64_t allowed[MAX_NODES / WORD_BITS];
static unsigned allowed_count = 1, configured_count = 1;
static size_t allowed_limit = 1;
static bool have_numa; /* Windows described the nodes */

static bool bit_set(const uint64_t *mask, unsigned bit) {
  return bit < MAX_NODES && (mask[bit / WORD_BITS] >> (bit % WORD_BITS)) & 1;
}

static void set_bit(uint64_t *mask, unsigned bit) {
  mask[bit / WORD_BITS] |= (uint64_t)1 << (bit % WORD_BITS);
}

static void single_node(void) {
  for (size_t i = 0; i < MAX_NODES / WORD_BITS; i++) allowed[i] = 0;
  allowed[0] = 1;
  allowed_count = configured_count = 1;
  allowed_limit = 1;
  have_numa = false;
}

/* Whether the process may run on the node's processors. A process in
 * more than one group (Windows 11 lets threads roam) may use any node. */
static bool runs_on(const GROUP_AFFINITY *node) {
  if (node->Mask == 0) return true; /* memory only */
  USHORT groups[4], n = 4;
  if (!GetProcessGroupAffinity(GetCurrentProcess(), &n, groups) || n != 1)
    return true;
  if (groups[0] != node->Group) return false;
  DWORD_PTR process, system;
  if (!GetProcessAffinityMask(GetCurrentProcess(), &process, &system))
    return true;
  return (process & node->Mask) != 0;
}

void osmem__windows_numa_init(void) {
  single_node();
  ULONG highest = 0;
  if (!GetNumaHighestNodeNumber(&highest)) return;
  if (highest >= MAX_NODES) highest = MAX_NODES - 1;
  uint64_t mask[MAX_NODES / WORD_BITS] = {0};
  unsigned count = 0, known = 0, limit = 0;
  for (unsigned node = 0; node <= highest; node++) {
    GROUP_AFFINITY aff;
    if (!GetNumaNodeProcessorMaskEx((USHORT)node, &aff)) continue;
    known++;
    if (!runs_on(&aff)) continue;
    set_bit(mask, node);
    count++, limit = node + 1;
  }
  if (count == 0) return;
  for (size_t i = 0; i < MAX_NODES / WORD_BITS; i++) allowed[i] = mask[i];
  allowed_count = count;
  allowed_limit = limit;
  configured_count = known;
  have_numa = true;
}

bool osmem__os_node_allowed(unsigned node) { return bit_set(allowed, node); }
unsigned osmem__os_numa_nodes(void) { return allowed_count; }
unsigned osmem__os_numa_nodes_configured(void) { return configured_count; }
size_t osmem__os_numa_limit(void) { return allowed_limit; }

/* The NUMA calls are part of every Windows (Wine's are stubs). */
bool osmem__os_numa_supported(void) { return true; }
bool osmem__os_numa_available(void) { return have_numa; }

/* Windows tells a node's free memory, not its size: with one node, the
 * RAM; with several, what is free on the node now. */
uint64_t osmem__os_node_memory(unsigned node) {
  if (!osmem__os_node_allowed(node)) return 0;
  if (allowed_count == 1 && configured_count == 1) return osmem__windows_ram();
  ULONGLONG bytes;
  if (!GetNumaAvailableMemoryNodeEx((USHORT)node, &bytes)) return 0;
  return bytes;
}

/* Windows has no documented distance table (the SLIT is not exposed). */
int osmem__os_node_distance(unsigned from, unsigned to) {
  if (from == to && osmem__os_node_allowed(from) && allowed_count == 1)
    return 10;
  return -1;
}

/* ---------------------------------------------------------------- binding */

static int prefer_region(void *ctx, void *p, size_t size,
                         const MEMORY_BASIC_INFORMATION *mbi) {
  if (mbi->State == MEM_FREE) return EFAULT;
  if (mbi->State != MEM_COMMIT) return 0; /* no memory: nothing to place */
  DWORD node = *(const DWORD *)ctx;
  if (osmem__windows_alloc_numa(p, size, MEM_COMMIT, node)) return 0;
  return osmem__windows_errno(GetLastError());
}

int osmem__os_bind(void *p, size_t size, unsigned node, int policy) {
  (void)policy; /* always a preference on Windows */
  if (!osmem__os_node_allowed(node)) return EINVAL;
  if (!have_numa) return 0; /* the only node: nothing to do */
  DWORD n = node;
  return osmem__windows_each_region(p, size, prefer_region, &n);
}

int osmem__os_interleave(void *p, size_t size) {
  (void)p, (void)size;
  return 0;
}

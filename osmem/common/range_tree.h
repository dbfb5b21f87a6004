/*
 * The pool of free megablock ranges: an AVL tree ordered by address, each
 * node also holding the longest range in its subtree, so that insert, remove
 * and lowest-address first fit are all O(log F) for F free ranges. Adjacent
 * ranges are always coalesced, so no two nodes touch.
 *
 * Nodes live in bookkeeping memory of their own (never inside the pooled
 * megablocks, which may be decommitted or unmapped). Nodes are set aside
 * ahead of need (osmem__pool_reserve_nodes) so that inserting never fails.
 *
 * Units: megablock numbers (address >> OSMEM_MBLOCK_SHIFT) and counts.
 * Not thread-safe: the caller holds the pool lock.
 */
#ifndef OSMEM_COMMON_RANGE_TREE_H
#define OSMEM_COMMON_RANGE_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../backend.h"

struct osmem__pool_node {
  struct osmem__pool_node *left, *right;
  uintptr_t start;   /* first megablock number */
  size_t len;        /* megablocks in the range */
  size_t max_len;    /* longest len in this subtree */
  int height;
};

struct osmem__pool {
  struct osmem__pool_node *root;
  struct osmem__pool_node *spare;  /* unused nodes, linked through ->right */
  size_t spare_count;              /* nodes on the spare list */
  /* Never used nodes: bookkeeping mapped ahead but not yet touched, so that
   * setting nodes aside for a huge heap costs address space, not memory. */
  struct osmem__pool_node *fresh, *fresh_end;
  size_t ranges;                   /* nodes in the tree */
  size_t mblocks;                  /* megablocks in the tree */
  size_t handed_out;               /* megablocks of this pool's class handed
                                      out now (kept by the caller) */
};

/* A free range as the pool reports it. */
struct osmem__range {
  uintptr_t start;
  size_t len;
};

/* Makes sure at least `count` nodes are available (spare or fresh). ENOMEM
 * (nothing changed except possibly more spares) when bookkeeping memory
 * cannot be had. */
OSMEM_HIDDEN int osmem__pool_reserve_nodes(struct osmem__pool *pool,
                                           size_t count);

/* Nodes available without asking for more bookkeeping memory. */
OSMEM_HIDDEN size_t osmem__pool_spare_nodes(const struct osmem__pool *pool);

/* Adds [start, start + len), which must not overlap the pool, coalescing with
 * its neighbours. Uses at most one spare node, which must exist. Returns the
 * whole range it ended up in. */
OSMEM_HIDDEN struct osmem__range osmem__pool_insert(struct osmem__pool *pool,
                                                    uintptr_t start,
                                                    size_t len);

/* Takes len megablocks from the low end of the lowest-addressed range that
 * has room. false when no range is long enough. */
OSMEM_HIDDEN bool osmem__pool_take(struct osmem__pool *pool, size_t len,
                                   struct osmem__range *out);

/* Takes up to `most` megablocks (at least one) from the low end of the
 * lowest-addressed range. false when the pool is empty. */
OSMEM_HIDDEN bool osmem__pool_take_upto(struct osmem__pool *pool, size_t most,
                                        struct osmem__range *out);

/* Removes, whole, the lowest-addressed range that starts at or after `from`.
 * false when there is none. */
OSMEM_HIDDEN bool osmem__pool_pop_from(struct osmem__pool *pool, uintptr_t from,
                                       struct osmem__range *out);

/* Calls fn on every range in address order until fn returns false. */
OSMEM_HIDDEN void osmem__pool_each(struct osmem__pool *pool,
                                   bool (*fn)(void *ctx, struct osmem__range r),
                                   void *ctx);

/* Checks every invariant of the tree (order, no touching ranges, heights,
 * balance, max_len, range and megablock counts). Returns 0, or a positive number naming the
 * first broken invariant. For tests; O(F). */
OSMEM_HIDDEN int osmem__pool_check(const struct osmem__pool *pool);

#endif /* OSMEM_COMMON_RANGE_TREE_H */

/* Pool nodes hidden from the library, for tests of a get that is short of
 * them (test_pool.c, test_api.c). Needs the internal headers. */
#ifndef OSMEM_TESTS_SPARES_H
#define OSMEM_TESTS_SPARES_H

#include "../osmem/common/internal.h"
#include "../osmem/common/range_tree.h"

/* Hides available pool nodes (spare list first, then never used ones) so
 * that exactly `keep` remain. The hidden nodes are simply never used again. */
static inline void hide_spares(size_t keep) {
  struct osmem__pool *p = &osmem__g.pool;
  while (osmem__pool_spare_nodes(p) > keep && p->spare) {
    p->spare = p->spare->right;
    p->spare_count--;
  }
  size_t fresh = (size_t)(p->fresh_end - p->fresh);
  if (fresh > keep - p->spare_count)
    p->fresh_end = p->fresh + (keep - p->spare_count);
  cr_assert_eq(osmem__pool_spare_nodes(p), keep);
}

#endif /* OSMEM_TESTS_SPARES_H */

/* The free-range pool: an address-ordered AVL tree augmented with the longest
 * range of each subtree. See range_tree.h for the contract. */
#include <config.h>

#include "range_tree.h"

#include <errno.h>

#include "meta.h"

typedef struct osmem__pool_node node_t;

/* Bookkeeping is taken from the backend in chunks this big: one wasm page,
 * sixteen 4 KiB pages; about 1,300 nodes. */
#define NODE_CHUNK_BYTES ((size_t)64 * 1024)

static int height(const node_t *t) { return t ? t->height : 0; }
static size_t max_len(const node_t *t) { return t ? t->max_len : 0; }

static void update(node_t *t) {
  int hl = height(t->left), hr = height(t->right);
  size_t ml = max_len(t->left), mr = max_len(t->right);
  t->height = 1 + (hl > hr ? hl : hr);
  t->max_len = t->len;
  if (ml > t->max_len) t->max_len = ml;
  if (mr > t->max_len) t->max_len = mr;
}

static node_t *rotate_right(node_t *t) {
  node_t *l = t->left;
  t->left = l->right;
  l->right = t;
  update(t);
  update(l);
  return l;
}

static node_t *rotate_left(node_t *t) {
  node_t *r = t->right;
  t->right = r->left;
  r->left = t;
  update(t);
  update(r);
  return r;
}

static node_t *rebalance(node_t *t) {
  update(t);
  int balance = height(t->left) - height(t->right);
  if (balance > 1) {
    if (height(t->left->left) < height(t->left->right))
      t->left = rotate_left(t->left);
    return rotate_right(t);
  }
  if (balance < -1) {
    if (height(t->right->right) < height(t->right->left))
      t->right = rotate_right(t->right);
    return rotate_left(t);
  }
  return t;
}

static node_t *tree_insert(node_t *t, node_t *n) {
  if (!t) {
    n->left = n->right = NULL;
    update(n);
    return n;
  }
  if (n->start < t->start)
    t->left = tree_insert(t->left, n);
  else
    t->right = tree_insert(t->right, n);
  return rebalance(t);
}

static node_t *tree_remove_min(node_t *t, node_t **min) {
  if (!t->left) {
    *min = t;
    return t->right;
  }
  t->left = tree_remove_min(t->left, min);
  return rebalance(t);
}

/* Removes the node whose start is `start` (it must exist). */
static node_t *tree_remove(node_t *t, uintptr_t start) {
  if (start < t->start) {
    t->left = tree_remove(t->left, start);
  } else if (start > t->start) {
    t->right = tree_remove(t->right, start);
  } else {
    if (!t->left) return t->right;
    if (!t->right) return t->left;
    node_t *succ;
    node_t *right = tree_remove_min(t->right, &succ);
    succ->left = t->left;
    succ->right = right;
    t = succ;
  }
  return rebalance(t);
}

/* The node with the greatest start below `start`, or NULL. */
static node_t *find_below(node_t *t, uintptr_t start) {
  node_t *best = NULL;
  while (t) {
    if (t->start < start) {
      best = t;
      t = t->right;
    } else {
      t = t->left;
    }
  }
  return best;
}

static node_t *find_exact(node_t *t, uintptr_t start) {
  while (t && t->start != start) t = start < t->start ? t->left : t->right;
  return t;
}

/* The lowest-addressed node with len >= want, or NULL. */
static node_t *find_fit(node_t *t, size_t want) {
  while (t && t->max_len >= want) {
    if (max_len(t->left) >= want)
      t = t->left;
    else if (t->len >= want)
      return t;
    else
      t = t->right;
  }
  return NULL;
}

static void put_spare(struct osmem__pool *pool, node_t *n) {
  n->right = pool->spare;
  pool->spare = n;
  pool->spare_count++;
}

static node_t *get_spare(struct osmem__pool *pool) {
  if (!pool->spare) return pool->fresh++;
  node_t *n = pool->spare;
  pool->spare = n->right;
  pool->spare_count--;
  return n;
}

size_t osmem__pool_spare_nodes(const struct osmem__pool *pool) {
  return pool->spare_count + (size_t)(pool->fresh_end - pool->fresh);
}

/* Unlinks n from the tree and from the counters; n stays valid. */
static void detach(struct osmem__pool *pool, node_t *n) {
  pool->root = tree_remove(pool->root, n->start);
  pool->ranges--;
  pool->mblocks -= n->len;
}

static void attach(struct osmem__pool *pool, node_t *n) {
  pool->root = tree_insert(pool->root, n);
  pool->ranges++;
  pool->mblocks += n->len;
}

int osmem__pool_reserve_nodes(struct osmem__pool *pool, size_t count) {
  size_t have = osmem__pool_spare_nodes(pool);
  if (have >= count) return 0;
  size_t missing = count - pool->spare_count; /* the fresh tail is recycled */
  if (missing > (SIZE_MAX - NODE_CHUNK_BYTES) / sizeof(node_t)) return ENOMEM;
  size_t bytes = missing * sizeof(node_t);
  bytes = (bytes + NODE_CHUNK_BYTES - 1) / NODE_CHUNK_BYTES * NODE_CHUNK_BYTES;
  void *chunk;
  if (osmem__meta_alloc(bytes, &chunk) != 0) return ENOMEM;
  while (pool->fresh < pool->fresh_end) put_spare(pool, pool->fresh++);
  pool->fresh = chunk;
  pool->fresh_end = pool->fresh + bytes / sizeof(node_t);
  return 0;
}

struct osmem__range osmem__pool_insert(struct osmem__pool *pool,
                                       uintptr_t start, size_t len) {
  node_t *below = find_below(pool->root, start);
  if (below && below->start + below->len == start) {
    detach(pool, below);
    start = below->start;
    len += below->len;
    put_spare(pool, below);
  }
  node_t *above = find_exact(pool->root, start + len);
  if (above) {
    detach(pool, above);
    len += above->len;
    put_spare(pool, above);
  }
  node_t *n = get_spare(pool);
  n->start = start;
  n->len = len;
  attach(pool, n);
  return (struct osmem__range){start, len};
}

/* Takes len megablocks from the low end of node n. */
static void take_low(struct osmem__pool *pool, node_t *n, size_t len,
                     struct osmem__range *out) {
  detach(pool, n);
  *out = (struct osmem__range){n->start, len};
  if (n->len == len) {
    put_spare(pool, n);
  } else {
    n->start += len;
    n->len -= len;
    attach(pool, n);
  }
}

bool osmem__pool_take(struct osmem__pool *pool, size_t len,
                      struct osmem__range *out) {
  node_t *n = find_fit(pool->root, len);
  if (!n) return false;
  take_low(pool, n, len, out);
  return true;
}

bool osmem__pool_take_upto(struct osmem__pool *pool, size_t most,
                           struct osmem__range *out) {
  node_t *n = pool->root;
  if (!n) return false;
  while (n->left) n = n->left;
  take_low(pool, n, n->len < most ? n->len : most, out);
  return true;
}

bool osmem__pool_pop_from(struct osmem__pool *pool, uintptr_t from,
                          struct osmem__range *out) {
  node_t *n = NULL;
  for (node_t *t = pool->root; t;) {
    if (t->start >= from) {
      n = t;
      t = t->left;
    } else {
      t = t->right;
    }
  }
  if (!n) return false;
  detach(pool, n);
  *out = (struct osmem__range){n->start, n->len};
  put_spare(pool, n);
  return true;
}

static bool each(node_t *t, bool (*fn)(void *, struct osmem__range),
                 void *ctx) {
  if (!t) return true;
  if (!each(t->left, fn, ctx)) return false;
  if (!fn(ctx, (struct osmem__range){t->start, t->len})) return false;
  return each(t->right, fn, ctx);
}

void osmem__pool_each(struct osmem__pool *pool,
                      bool (*fn)(void *ctx, struct osmem__range r), void *ctx) {
  each(pool->root, fn, ctx);
}

/* ------------------------------------------------------------ invariants */

struct check_state {
  bool have_prev;
  uintptr_t prev_end;
  size_t ranges, mblocks;
};

/* Returns 0 or the number of the broken invariant. */
static int check_subtree(const node_t *t, struct check_state *s) {
  if (!t) return 0;
  int err = check_subtree(t->left, s);
  if (err) return err;
  if (t->len == 0) return 1;
  if (t->start + t->len < t->start) return 2;         /* wraps */
  if (s->have_prev && s->prev_end >= t->start) return 3; /* order, touching */
  int hl = height(t->left), hr = height(t->right);
  if (t->height != 1 + (hl > hr ? hl : hr)) return 4;
  if (hl - hr > 1 || hr - hl > 1) return 5;
  size_t m = t->len;
  if (max_len(t->left) > m) m = max_len(t->left);
  if (max_len(t->right) > m) m = max_len(t->right);
  if (t->max_len != m) return 6;
  s->have_prev = true;
  s->prev_end = t->start + t->len;
  s->ranges++;
  s->mblocks += t->len;
  return check_subtree(t->right, s);
}

int osmem__pool_check(const struct osmem__pool *pool) {
  struct check_state s = {false, 0, 0, 0};
  int err = check_subtree(pool->root, &s);
  if (err) return err;
  if (s.ranges != pool->ranges) return 7;
  if (s.mblocks != pool->mblocks) return 8;
  size_t spares = 0;
  for (const node_t *n = pool->spare; n; n = n->right) spares++;
  if (spares != pool->spare_count) return 10;
  if (pool->fresh > pool->fresh_end) return 11;
  return 0;
}

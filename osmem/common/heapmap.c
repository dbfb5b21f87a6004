/* The heap map: out, cached and resident marks per megablock; see heapmap.h
 * for its shape, cost and concurrency. */
#include <config.h>

#include "heapmap.h"

#include <errno.h>
#include <string.h>

#include "meta.h"
#include "osmem.h"

#if OSMEM__VA_BITS > 35
#define LEAF_SPAN_SHIFT 35 /* 32 GiB per leaf */
#else
#define LEAF_SPAN_SHIFT OSMEM__VA_BITS
#endif

#define TOP_ENTRIES ((size_t)1 << (OSMEM__VA_BITS - LEAF_SPAN_SHIFT))
#define LEAF_BITS_SHIFT (LEAF_SPAN_SHIFT - OSMEM_MBLOCK_SHIFT)
#define LEAF_BITS ((uintptr_t)1 << LEAF_BITS_SHIFT)
#define LEAF_WORDS (LEAF_BITS / 64 ? LEAF_BITS / 64 : 1)
#define MBLOCK_LIMIT ((uintptr_t)TOP_ENTRIES << LEAF_BITS_SHIFT)

/* Cached marks: one byte per megablock, so that the owner of a cached
 * megablock can clear its mark with a plain store. Laid out in 64 stripes
 * (where a leaf has 512 megablocks or more): megablock i of a leaf is byte
 * i / 64 of stripe i % 64, so neighbours fall on different cache lines.
 * Accessed only through the __atomic builtins, which also read eight marks at
 * once when checking a long range. */
#if LEAF_BITS_SHIFT >= 9
#define STRIPE_SHIFT 6
#else
#define STRIPE_SHIFT 0
#endif
#define STRIPES ((uintptr_t)1 << STRIPE_SHIFT)
#define STRIPE_BYTES (LEAF_BITS >> STRIPE_SHIFT)

typedef osmem__atomic_u64 word_t; /* 8-aligned on i386 too (backend.h) */

#define SUM_WORDS ((LEAF_WORDS + 63) / 64)

struct leaf {
  _Alignas(8) word_t out[LEAF_WORDS]; /* said, as for the type (i386) */
#ifdef OSMEM_CACHE_MARKS
  _Alignas(64) uint8_t cached[LEAF_BITS];
#endif
  uint64_t resident[LEAF_WORDS];
  uint64_t resident_sum[SUM_WORDS]; /* bit i: resident[i] != 0 */
};

static struct leaf *_Atomic top[TOP_ENTRIES];

/* The lowest and highest leaves that exist, and the leaf itself while there
 * is one (a heap within 32 GiB): osmem_is_heap answers pointers outside them
 * (most foreign pointers) without reading the top level, and finds a lone
 * leaf on the same cache line. */
static struct {
  _Alignas(64) atomic_uintptr_t lo;
  atomic_uintptr_t hi;
  struct leaf *_Atomic only; /* NULL unless lo == hi */
} bounds = {UINTPTR_MAX, 0, NULL};

/* Bit i: leaf i has a resident megablock (lock held). With the per-leaf
 * summaries, the highest resident megablock is found in a few word reads. */
static uint64_t resident_leaves[(TOP_ENTRIES + 63) / 64];

static struct leaf *leaf_of(uintptr_t mblock) {
  return atomic_load_explicit(&top[mblock >> LEAF_BITS_SHIFT],
                              memory_order_acquire);
}

#define CLASS_BYTES (LEAF_BITS * sizeof(uint16_t))

/* Pool classes, one per megablock, beside the bits: written only under the
 * pool lock, and only allocated where classes are wanted (more than one NUMA
 * node); a missing array means class 0 throughout. */
static uint16_t *classes[TOP_ENTRIES];

/* Allocates, in one piece, what `count` missing leaves (or class arrays)
 * need; NULL when the backend cannot give it. */
static char *alloc_missing(size_t count, size_t each) {
  void *block;
  if (count == 0 || osmem__meta_alloc(count * each, &block) != 0) return NULL;
  return block;
}

static int prepare_bits(uintptr_t first, uintptr_t last) {
  size_t missing = 0;
  for (uintptr_t i = first; i <= last; i++)
    missing += !atomic_load_explicit(&top[i], memory_order_relaxed);
  if (missing == 0) return 0;
  char *leaf = alloc_missing(missing, sizeof(struct leaf));
  if (!leaf) return ENOMEM;
  for (uintptr_t i = first; i <= last; i++) {
    if (atomic_load_explicit(&top[i], memory_order_relaxed)) continue;
    atomic_store_explicit(&top[i], (struct leaf *)(void *)leaf,
                          memory_order_release);
    leaf += sizeof(struct leaf);
  }
  return 0;
}

static int prepare_classes(uintptr_t first, uintptr_t last) {
  size_t missing = 0;
  for (uintptr_t i = first; i <= last; i++) missing += !classes[i];
  if (missing == 0) return 0;
  char *array = alloc_missing(missing, CLASS_BYTES);
  if (!array) return ENOMEM;
  for (uintptr_t i = first; i <= last; i++) {
    if (classes[i]) continue;
    classes[i] = (uint16_t *)(void *)array;
    array += CLASS_BYTES;
  }
  return 0;
}

int osmem__heapmap_prepare(uintptr_t start, size_t len, bool with_classes) {
  if (start >= MBLOCK_LIMIT || len > MBLOCK_LIMIT - start) return ENOMEM;
  uintptr_t first = start >> LEAF_BITS_SHIFT;
  uintptr_t last = (start + len - 1) >> LEAF_BITS_SHIFT;
  if (prepare_bits(first, last) != 0) return ENOMEM;
  uintptr_t lo = atomic_load_explicit(&bounds.lo, memory_order_relaxed);
  uintptr_t hi = atomic_load_explicit(&bounds.hi, memory_order_relaxed);
  if (first < lo || last > hi) {
    lo = first < lo ? first : lo;
    hi = last > hi ? last : hi;
    /* A reader that finds no lone leaf looks in the top level. */
    atomic_store_explicit(&bounds.only, lo == hi ? leaf_of(lo << LEAF_BITS_SHIFT)
                                                 : NULL,
                          memory_order_release);
    atomic_store_explicit(&bounds.lo, lo, memory_order_release);
    atomic_store_explicit(&bounds.hi, hi, memory_order_release);
  }
  if (with_classes && prepare_classes(first, last) != 0) return ENOMEM;
  return 0;
}

/* Whether leaves exist for all of [start, start + len). */
static bool leaves_exist(uintptr_t start, size_t len) {
  if (start >= MBLOCK_LIMIT || len > MBLOCK_LIMIT - start) return false;
  for (uintptr_t i = start >> LEAF_BITS_SHIFT;
       i <= (start + len - 1) >> LEAF_BITS_SHIFT; i++)
    if (!atomic_load_explicit(&top[i], memory_order_acquire)) return false;
  return true;
}

/* ---------------------------------------------------------------- classes */

void osmem__heapmap_set_class(uintptr_t start, size_t len, unsigned cls) {
  for (uintptr_t m = start; m < start + len; m++) {
    uint16_t *array = classes[m >> LEAF_BITS_SHIFT];
    if (array) array[m & (LEAF_BITS - 1)] = (uint16_t)cls;
  }
}

unsigned osmem__heapmap_class(uintptr_t mblock) {
  const uint16_t *array = classes[mblock >> LEAF_BITS_SHIFT];
  return array ? array[mblock & (LEAF_BITS - 1)] : 0;
}

size_t osmem__heapmap_class_run(uintptr_t start, size_t len) {
  unsigned cls = osmem__heapmap_class(start);
  uint64_t four = (uint64_t)cls * 0x0001000100010001u; /* cls, 4 times */
  size_t run = 1;
  while (run < len) {
    uintptr_t m = start + run;
    const uint16_t *array = classes[m >> LEAF_BITS_SHIFT];
    size_t i = m & (LEAF_BITS - 1);
    uint64_t next4;
    if (array && (i & 3) == 0 && len - run >= 4 && i + 4 <= LEAF_BITS) {
      memcpy(&next4, &array[i], sizeof next4); /* four at a time */
      if (next4 == four) {
        run += 4;
        continue;
      }
    }
    if (osmem__heapmap_class(m) != cls) break;
    run++;
  }
  return run;
}

/* ------------------------------------------------------- plain bitmaps */

/* Runs body for each (word index, mask) piece of [start, start + len) within
 * one plain bitmap `field` of the leaves; `lf` is the piece's leaf. */
#define FOR_EACH_WORD(start, len, lf, idx, mask, body)                     \
  do {                                                                     \
    uintptr_t at_ = (start), end_ = (start) + (len);                       \
    while (at_ < end_) {                                                   \
      unsigned bit_ = (unsigned)(at_ & 63);                                \
      uintptr_t n_ = 64 - bit_;                                            \
      if (n_ > end_ - at_) n_ = end_ - at_;                                \
      uint64_t mask = (n_ == 64 ? ~(uint64_t)0 : ((uint64_t)1 << n_) - 1) \
                      << bit_;                                             \
      struct leaf *lf = leaf_of(at_);                                      \
      size_t idx = (size_t)((at_ & (LEAF_BITS - 1)) >> 6);                 \
      body;                                                                \
      at_ += n_;                                                           \
    }                                                                      \
  } while (0)

void osmem__heapmap_set(uintptr_t start, size_t len) {
  FOR_EACH_WORD(start, len, lf, i, mask,
                atomic_fetch_or_explicit(&lf->out[i], mask,
                                         memory_order_release));
}

void osmem__heapmap_clear(uintptr_t start, size_t len) {
  FOR_EACH_WORD(start, len, lf, i, mask,
                atomic_fetch_and_explicit(&lf->out[i], ~mask,
                                          memory_order_release));
}

bool osmem__heapmap_all_set(uintptr_t start, size_t len) {
  if (!leaves_exist(start, len)) return false;
  FOR_EACH_WORD(start, len, lf, i, mask, {
    if ((atomic_load_explicit(&lf->out[i], memory_order_relaxed) & mask) !=
        mask)
      return false;
  });
  return true;
}

/* -------------------------------------------------------- cached marks */

#ifdef OSMEM_CACHE_MARKS
static uint8_t *mark_of(struct leaf *lf, uintptr_t mblock) {
  uintptr_t i = mblock & (LEAF_BITS - 1);
  return &lf->cached[(i & (STRIPES - 1)) * STRIPE_BYTES + (i >> STRIPE_SHIFT)];
}

/* The bits of an 8-byte word that hold its bytes [lo, hi), 0 <= lo < hi <=
 * 8, in memory order. */
static uint64_t byte_mask(unsigned lo, unsigned hi) {
  uint64_t m = (hi == 8 ? ~(uint64_t)0 : ((uint64_t)1 << (8 * hi)) - 1) &
               (~(uint64_t)0 << (8 * lo));
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  m = __builtin_bswap64(m);
#endif
  return m;
}

/* Whether any of n marks from p (in one stripe) is set: the aligned words
 * that cover them, read whole, with the bytes outside masked off. */
static bool marks_any(const uint8_t *p, uintptr_t n) {
  uintptr_t from = (uintptr_t)p, end = from + n;
  for (uintptr_t w = from & ~(uintptr_t)7; w < end; w += 8) {
    uint64_t v = __atomic_load_n((const uint64_t *)w, __ATOMIC_SEQ_CST);
    unsigned lo = w < from ? (unsigned)(from - w) : 0;
    unsigned hi = end - w < 8 ? (unsigned)(end - w) : 8;
    if (v & byte_mask(lo, hi)) return true;
  }
  return false;
}

/* Whether any megablock of [a, b) (one leaf) is cached: per megablock for
 * short ranges, else per stripe, whose marks in [a, b) are contiguous. */
static bool cached_any_in_leaf(struct leaf *lf, uintptr_t a, uintptr_t b) {
  if (b - a < 2 * STRIPES) {
    for (uintptr_t m = a; m < b; m++)
      if (__atomic_load_n(mark_of(lf, m), __ATOMIC_SEQ_CST)) return true;
    return false;
  }
  uintptr_t base = a & ~(LEAF_BITS - 1);
  uintptr_t la = a - base, lb = b - base;
  for (uintptr_t k = 0; k < STRIPES; k++) {
    uintptr_t p0 = la <= k ? 0 : (la - k + STRIPES - 1) >> STRIPE_SHIFT;
    uintptr_t p1 = (lb - 1 - k) >> STRIPE_SHIFT; /* lb - 1 >= k: long range */
    if (marks_any(&lf->cached[k * STRIPE_BYTES + p0], p1 - p0 + 1)) return true;
  }
  return false;
}

static bool cached_any(uintptr_t start, size_t len) {
  uintptr_t end = start + len;
  while (start < end) {
    uintptr_t leaf_end = (start | (LEAF_BITS - 1)) + 1;
    uintptr_t b = leaf_end < end ? leaf_end : end;
    if (cached_any_in_leaf(leaf_of(start), start, b)) return true;
    start = b;
  }
  return false;
}

void osmem__heapmap_cache_release(uintptr_t mblock) {
  __atomic_store_n(mark_of(leaf_of(mblock), mblock), 0, __ATOMIC_RELEASE);
}

void osmem__heapmap_uncache(uintptr_t mblock) {
  struct leaf *lf = leaf_of(mblock);
  uintptr_t i = mblock & (LEAF_BITS - 1);
  uint64_t bit = (uint64_t)1 << (i & 63);
  /* A cached single is out. A claim that cleared the bit a moment ago sees
   * the mark and puts it back; wait for that rather than let the claim find
   * the mark gone. */
  for (unsigned spins = 0; !(atomic_fetch_and_explicit(
                               &lf->out[i >> 6], ~bit, memory_order_seq_cst) &
                           bit);
       spins++)
    if (spins > 100) osmem__os_yield();
  __atomic_store_n(mark_of(lf, mblock), 0, __ATOMIC_RELEASE);
}

bool osmem__heapmap_cache_claim(uintptr_t mblock) {
  if (mblock >= MBLOCK_LIMIT) return false;
  struct leaf *lf = leaf_of(mblock);
  if (!lf) return false;
  uint8_t *mark = mark_of(lf, mblock);
  if (__atomic_exchange_n(mark, 1, __ATOMIC_SEQ_CST))
    return false; /* cached already: a double free */
  uintptr_t i = mblock & (LEAF_BITS - 1);
  if (!((atomic_load_explicit(&lf->out[i >> 6], memory_order_seq_cst) >>
         (i & 63)) & 1)) {
    __atomic_store_n(mark, 0, __ATOMIC_RELEASE); /* not out: a foreign free */
    return false;
  }
  return true;
}

#else
/* No marks: a thread cache holds every run unmarked (thread_cache.c), so
 * nothing is ever marked; the two calls keep their meaning all the same. */
static bool cached_any(uintptr_t start, size_t len) {
  (void)start, (void)len;
  return false;
}

bool osmem__heapmap_cache_claim(uintptr_t mblock) {
  return osmem__heapmap_claim_free(mblock, 1);
}

void osmem__heapmap_cache_release(uintptr_t mblock) {
  osmem__heapmap_set(mblock, 1);
}

void osmem__heapmap_uncache(uintptr_t mblock) { (void)mblock; }
#endif

/* Puts back the `out` bits of [start, upto) that claim_free cleared. */
static void restore_out(uintptr_t start, uintptr_t upto) {
  if (upto > start) osmem__heapmap_set(start, upto - start);
}

bool osmem__heapmap_claim_free(uintptr_t start, size_t len) {
  if (!leaves_exist(start, len)) return false;
  /* A short range with a cached single is refused before anything changes,
   * so that this bad free does not make a neighbour's good free fail; for
   * long ranges the extra pass over the marks costs more than it saves. */
  if (len <= 8 && cached_any(start, len)) return false;
  FOR_EACH_WORD(start, len, lf, i, mask, {
    uint64_t old = atomic_load_explicit(&lf->out[i], memory_order_relaxed);
    do { /* clear the bits only if all are set */
      if ((old & mask) != mask) {
        restore_out(start, at_);
        return false;
      }
    } while (!atomic_compare_exchange_weak_explicit(
        &lf->out[i], &old, old & ~mask, memory_order_seq_cst,
        memory_order_relaxed));
  });
  /* Cached meanwhile: a thread cache took one of them (a racing bad free). */
  if (cached_any(start, len)) {
    restore_out(start, start + len);
    return false;
  }
  return true;
}

/* ------------------------------------------------------------- teardown */

void osmem__heapmap_each_out(bool (*fn)(void *ctx, uintptr_t start, size_t n),
                             void *ctx) {
  uintptr_t lo = atomic_load_explicit(&bounds.lo, memory_order_relaxed);
  uintptr_t hi = atomic_load_explicit(&bounds.hi, memory_order_relaxed);
  uintptr_t run_start = 0;
  size_t run_len = 0;
  for (uintptr_t i = lo; i <= hi && lo != UINTPTR_MAX; i++) {
    struct leaf *l = atomic_load_explicit(&top[i], memory_order_relaxed);
    for (size_t w = 0; l && w < LEAF_WORDS; w++) {
      /* A snapshot: fn may clear the bits of the runs it is given. */
      uint64_t bits = atomic_load_explicit(&l->out[w], memory_order_relaxed);
      uintptr_t first = (i << LEAF_BITS_SHIFT) + w * 64;
      for (unsigned b = 0; b < 64 && (w * 64 + b) < LEAF_BITS; b++) {
        if ((bits >> b) & 1) {
          if (run_len && run_start + run_len == first + b) {
            run_len++;
            continue;
          }
          if (run_len && !fn(ctx, run_start, run_len)) return;
          run_start = first + b;
          run_len = 1;
        }
      }
    }
  }
  if (run_len) fn(ctx, run_start, run_len);
}

/* Only entries that were set are written: the top level is 128 KiB of BSS
 * on 64-bit, whose untouched pages a teardown at exit should not fault in. */
void osmem__heapmap_forget(void) {
  uintptr_t lo = atomic_load_explicit(&bounds.lo, memory_order_relaxed);
  uintptr_t hi = atomic_load_explicit(&bounds.hi, memory_order_relaxed);
  for (uintptr_t i = lo; i <= hi && lo != UINTPTR_MAX; i++) {
    if (atomic_load_explicit(&top[i], memory_order_relaxed))
      atomic_store_explicit(&top[i], NULL, memory_order_relaxed);
    if (classes[i]) classes[i] = NULL;
  }
  for (size_t i = 0; i < sizeof resident_leaves / sizeof *resident_leaves; i++)
    if (resident_leaves[i]) resident_leaves[i] = 0;
  atomic_store_explicit(&bounds.only, NULL, memory_order_relaxed);
  atomic_store_explicit(&bounds.hi, 0, memory_order_relaxed);
  atomic_store_explicit(&bounds.lo, UINTPTR_MAX, memory_order_release);
}


/* The public call lives here, beside the layout it reads: one call, no
 * second hop into the heap map. */
bool osmem_is_heap(const void *p) {
  uintptr_t mblock = (uintptr_t)p >> OSMEM_MBLOCK_SHIFT;
  uintptr_t lo = atomic_load_explicit(&bounds.lo, memory_order_acquire);
  uintptr_t hi = atomic_load_explicit(&bounds.hi, memory_order_acquire);
  if ((mblock >> LEAF_BITS_SHIFT) - lo > hi - lo) return false;
  /* `only` is the leaf of index lo, while lo == hi: checked by index, so a
   * reader that saw the bounds half updated never takes it for another. */
  uintptr_t li = mblock >> LEAF_BITS_SHIFT;
  struct leaf *lf = NULL;
  if (li == lo) lf = atomic_load_explicit(&bounds.only, memory_order_acquire);
  if (!lf) lf = leaf_of(mblock);
  if (!lf) return false;
  uintptr_t i = mblock & (LEAF_BITS - 1);
#ifdef OSMEM_CACHE_MARKS
  /* The mark first: a drain clears `out`, then the mark, so a reader that
   * sees the mark gone sees `out` gone too. */
  uint8_t mark = __atomic_load_n(mark_of(lf, mblock), __ATOMIC_ACQUIRE);
#else
  uint8_t mark = 0;
#endif
  uint64_t out = atomic_load_explicit(&lf->out[i >> 6], memory_order_relaxed);
  return ((out >> (i & 63)) & 1) & !mark;
}

/* ------------------------------------------------------ resident bits */

/* Word i of lf's resident bits changed: keeps the summaries true. */
static void resident_word_changed(struct leaf *lf, uintptr_t leaf_index,
                                  size_t i) {
  uint64_t bit = (uint64_t)1 << (i & 63);
  if (lf->resident[i]) {
    lf->resident_sum[i >> 6] |= bit;
  } else {
    lf->resident_sum[i >> 6] &= ~bit;
    for (size_t k = 0; k < SUM_WORDS; k++)
      if (lf->resident_sum[k]) return;
  }
  uint64_t leaf_bit = (uint64_t)1 << (leaf_index & 63);
  if (lf->resident[i])
    resident_leaves[leaf_index >> 6] |= leaf_bit;
  else
    resident_leaves[leaf_index >> 6] &= ~leaf_bit;
}

void osmem__heapmap_resident_set(uintptr_t start, size_t len) {
  FOR_EACH_WORD(start, len, lf, i, mask, {
    lf->resident[i] |= mask;
    resident_word_changed(lf, at_ >> LEAF_BITS_SHIFT, i);
  });
}

size_t osmem__heapmap_resident_take(uintptr_t start, size_t len) {
  size_t count = 0;
  FOR_EACH_WORD(start, len, lf, i, mask, {
    uint64_t hit = lf->resident[i] & mask;
    if (hit) {
      count += (size_t)__builtin_popcountll(hit);
      lf->resident[i] &= ~mask;
      resident_word_changed(lf, at_ >> LEAF_BITS_SHIFT, i);
    }
  });
  return count;
}

static unsigned highest_bit(uint64_t w) { return 63u - (unsigned)__builtin_clzll(w); }

bool osmem__heapmap_resident_highest(uintptr_t *mblock) {
  for (size_t k = sizeof resident_leaves / sizeof resident_leaves[0]; k-- > 0;) {
    if (!resident_leaves[k]) continue;
    uintptr_t leaf_index = k * 64 + highest_bit(resident_leaves[k]);
    struct leaf *lf = atomic_load_explicit(&top[leaf_index],
                                           memory_order_relaxed);
    for (size_t j = SUM_WORDS; j-- > 0;) {
      if (!lf->resident_sum[j]) continue;
      size_t i = j * 64 + highest_bit(lf->resident_sum[j]);
      *mblock = (leaf_index << LEAF_BITS_SHIFT) + i * 64 +
                highest_bit(lf->resident[i]);
      return true;
    }
  }
  return false;
}

size_t osmem__heapmap_resident_run_down(uintptr_t mblock, size_t most) {
  size_t len = 0;
  for (;;) {
    uint64_t w = leaf_of(mblock)->resident[(mblock & (LEAF_BITS - 1)) >> 6];
    unsigned b = (unsigned)(mblock & 63);
    uint64_t gaps = ~w << (63 - b); /* bit b moves to bit 63 */
    unsigned ones = gaps ? (unsigned)__builtin_clzll(gaps) : b + 1;
    len += ones;
    if (len >= most) return most;
    if (ones < b + 1 || mblock < 64) return len;
    mblock = (mblock & ~(uintptr_t)63) - 1;
    if (!leaf_of(mblock)) return len;
  }
}

/* The first megablock in [from, end) whose resident bit is `want`, or end. */
static uintptr_t scan_resident(uintptr_t from, uintptr_t end, bool want) {
  while (from < end) {
    uint64_t w = leaf_of(from)->resident[(from & (LEAF_BITS - 1)) >> 6];
    if (!want) w = ~w;
    w >>= (from & 63);
    if (w) {
      uintptr_t hit = from + (uintptr_t)__builtin_ctzll(w);
      return hit < end ? hit : end;
    }
    from = (from | 63) + 1;
  }
  return end;
}

bool osmem__heapmap_resident_next(uintptr_t start, size_t len,
                                  uintptr_t *run_start, size_t *run_len) {
  uintptr_t end = start + len;
  uintptr_t a = scan_resident(start, end, true);
  if (a == end) return false;
  uintptr_t b = scan_resident(a, end, false);
  *run_start = a;
  *run_len = b - a;
  return true;
}

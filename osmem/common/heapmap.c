/* The two-level heap map; see heapmap.h for its shape and cost. */
#include <config.h>

#include "heapmap.h"

#include <errno.h>

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

typedef atomic_uint_least64_t word_t;

static word_t *_Atomic top[TOP_ENTRIES];

static word_t *leaf_of(uintptr_t mblock) {
  return atomic_load_explicit(&top[mblock >> LEAF_BITS_SHIFT],
                              memory_order_acquire);
}

#define LEAF_BYTES (LEAF_WORDS * sizeof(word_t))
#define CLASS_BYTES (LEAF_BITS * sizeof(uint16_t))

/* Pool classes, one per megablock, beside the bits: read and written only
 * under the pool lock, and only allocated where classes are wanted (more
 * than one NUMA node); a missing array means class 0 throughout. */
static uint16_t *classes[TOP_ENTRIES];

/* Allocates, in one piece, what `count` missing leaves (or class arrays)
 * need; NULL when the backend cannot give it. */
static char *alloc_missing(size_t count, size_t each) {
  void *block;
  if (count == 0 || osmem__os_meta_alloc(count * each, &block) != 0) return NULL;
  return block;
}

static int prepare_bits(uintptr_t first, uintptr_t last) {
  size_t missing = 0;
  for (uintptr_t i = first; i <= last; i++)
    missing += !atomic_load_explicit(&top[i], memory_order_relaxed);
  if (missing == 0) return 0;
  char *leaf = alloc_missing(missing, LEAF_BYTES);
  if (!leaf) return ENOMEM;
  for (uintptr_t i = first; i <= last; i++) {
    if (atomic_load_explicit(&top[i], memory_order_relaxed)) continue;
    atomic_store_explicit(&top[i], (word_t *)leaf, memory_order_release);
    leaf += LEAF_BYTES;
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
  if (with_classes && prepare_classes(first, last) != 0) return ENOMEM;
  return 0;
}

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
  size_t run = 1;
  while (run < len && osmem__heapmap_class(start + run) == cls) run++;
  return run;
}

/* Calls fn on each (word, mask) piece of [start, start + len). */
#define FOR_EACH_WORD(start, len, word, mask, body)                         \
  do {                                                                      \
    uintptr_t at_ = (start), end_ = (start) + (len);                        \
    while (at_ < end_) {                                                    \
      unsigned bit_ = (unsigned)(at_ & 63);                                 \
      uintptr_t n_ = 64 - bit_;                                             \
      if (n_ > end_ - at_) n_ = end_ - at_;                                 \
      uint64_t mask = (n_ == 64 ? ~(uint64_t)0 : ((uint64_t)1 << n_) - 1)  \
                      << bit_;                                              \
      word_t *word = &leaf_of(at_)[(at_ & (LEAF_BITS - 1)) >> 6];           \
      body;                                                                 \
      at_ += n_;                                                            \
    }                                                                       \
  } while (0)

void osmem__heapmap_set(uintptr_t start, size_t len) {
  FOR_EACH_WORD(start, len, w, mask,
                atomic_fetch_or_explicit(w, mask, memory_order_release));
}

void osmem__heapmap_clear(uintptr_t start, size_t len) {
  FOR_EACH_WORD(start, len, w, mask,
                atomic_fetch_and_explicit(w, ~mask, memory_order_release));
}

bool osmem__heapmap_all_set(uintptr_t start, size_t len) {
  if (start >= MBLOCK_LIMIT || len > MBLOCK_LIMIT - start) return false;
  for (uintptr_t i = start >> LEAF_BITS_SHIFT;
       i <= (start + len - 1) >> LEAF_BITS_SHIFT; i++)
    if (!atomic_load_explicit(&top[i], memory_order_acquire)) return false;
  FOR_EACH_WORD(start, len, w, mask, {
    if ((atomic_load_explicit(w, memory_order_relaxed) & mask) != mask)
      return false;
  });
  return true;
}

bool osmem__heapmap_contains(const void *p) {
  uintptr_t mblock = (uintptr_t)p >> OSMEM_MBLOCK_SHIFT;
  if (mblock >= MBLOCK_LIMIT) return false;
  word_t *leaf = leaf_of(mblock);
  if (!leaf) return false;
  uint64_t w = atomic_load_explicit(&leaf[(mblock & (LEAF_BITS - 1)) >> 6],
                                    memory_order_relaxed);
  return (w >> (mblock & 63)) & 1;
}

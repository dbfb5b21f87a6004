/*
 * The library's own bookkeeping memory (heap map leaves, pool nodes, node
 * pools, the reservation table), taken from the backend and recorded, so
 * that a teardown can give every piece of it back. The records live in pages
 * of their own, chained; where memory can never be given back (wasm) nothing
 * is recorded.
 *
 * Thread caches are the exception (thread_cache.c): a thread may still hold
 * its cache after a teardown, so caches outlive it.
 */
#include <config.h>

#include <errno.h>

#include "internal.h"
#include "meta.h"

#define RECORD_PAGE_BYTES 4096

struct record {
  void *p;
  size_t size;
};

struct record_page {
  struct record_page *next;
  size_t used;
  struct record rec[(RECORD_PAGE_BYTES - 2 * sizeof(void *)) /
                    sizeof(struct record)];
};

#define RECORDS_PER_PAGE (sizeof(((struct record_page *)0)->rec) / \
                          sizeof(struct record))

/* The first page is static, so that a program that needs fewer than 255
 * pieces of bookkeeping (most) makes no system call for the records. */
static struct record_page first_page;
static struct record_page *pages; /* lock */

/* Makes room for one more record; ENOMEM if a page cannot be had. */
static int room_for_record(void) {
  if (!pages) pages = &first_page;
  if (pages->used < RECORDS_PER_PAGE) return 0;
  void *mem;
  if (osmem__os_meta_alloc(sizeof(struct record_page), &mem) != 0)
    return ENOMEM;
  struct record_page *page = mem;
  page->next = pages;
  pages = page;
  return 0;
}

int osmem__meta_alloc(size_t size, void **out) {
  bool record = osmem__g.caps.can_unmap;
  if (record && room_for_record() != 0) return ENOMEM;
  if (osmem__os_meta_alloc(size, out) != 0) return ENOMEM;
  if (record) pages->rec[pages->used++] = (struct record){*out, size};
  return 0;
}

int osmem__meta_release_all(void) {
  int first_err = 0;
  while (pages) {
    struct record_page *page = pages;
    for (size_t i = 0; i < page->used; i++) {
      int err = osmem__os_unmap(page->rec[i].p, page->rec[i].size);
      if (!first_err) first_err = err;
    }
    pages = page->next;
    page->used = 0;
    if (page == &first_page) continue;
    int err = osmem__os_unmap(page, sizeof *page);
    if (!first_err) first_err = err;
  }
  return first_err;
}

void osmem__meta_forget(void) {
  first_page.used = 0;
  pages = NULL;
}

/*
 * Aligned reservations from VirtualAlloc, and commit and protection.
 *
 * Every reservation starts on the 64 KiB allocation granularity; megablocks
 * need 1 MiB. Three ways, cheapest first:
 *   1. at the caller's hint (just below its previous reservation): one
 *      VirtualAlloc at that address, which either lands there or fails;
 *   2. VirtualAlloc2 with MEM_ADDRESS_REQUIREMENTS (Windows 10 1803 and
 *      later, and Wine; looked up at init): the OS aligns it, one call;
 *   3. where VirtualAlloc2 is missing: reserve size + align (address space
 *      only), release it, and reserve again at the aligned address inside
 *      it. Another thread may take that hole in between, so this is retried,
 *      a bounded number of times (RETRIES), each time somewhere new.
 *
 * Commit charge. Windows counts committed memory against the commit limit
 * (RAM plus page file) at once, whether or not it is ever touched; there is
 * no MAP_NORESERVE. The contract says a reservation that is not
 * `inaccessible` is read-write, so the pool's reservations are committed
 * when made (MEM_RESERVE | MEM_COMMIT): they cost commit charge, never
 * memory (pages are zero-filled on first touch). The caps still say
 * cheap_reserve, as on Linux under strict overcommit
 * (vm.overcommit_memory=2, where MAP_NORESERVE is ignored and reservations
 * are charged the same way): the common code reserves at most twice the heap
 * ahead, and at most a sixteenth of the job object's memory limit
 * (osmem__os_address_budget), and halves a reservation the OS refuses.
 * Setting cheap_reserve false instead would take osmem_reserve away, which
 * Windows supports fully: an inaccessible reservation is MEM_RESERVE,
 * PAGE_NOACCESS, and costs no commit charge until osmem_commit.
 */
#include <config.h>

#include <errno.h>

#include "machine.h"
#include "sys.h"

#define RETRIES 8

static bool aligned(uintptr_t p, size_t align) { return (p & (align - 1)) == 0; }

static void count(atomic_uint_least64_t *counter) {
  atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
}

/* Gives back an allocation that was never tracked (a miss). Where the OS
 * refuses, it is tracked as given back, for osmem__os_retry_discards:
 * osmem__os_reserve made room for every undo it may make (UNDOS). */
static void undo(void *p, size_t size) {
  if (!osmem__windows_free(p, 0, MEM_RELEASE))
    osmem__windows_track_given_back(p, size);
}

/* The most undos one osmem__os_reserve makes: at the hint, VirtualAlloc2,
 * and two for each try of the probe. */
#define UNDOS (2 + 2 * RETRIES)

static void *at_hint(void *hint, size_t size, DWORD type, DWORD prot) {
  void *p = osmem__windows_alloc(hint, size, type, prot);
  if (p && p != hint) { /* cannot happen for an aligned hint; be sure */
    undo(p, size);
    return NULL;
  }
  if (p) count(&osmem__os_count.align_hint_hits);
  return p;
}

/* VirtualAlloc2 aligns for us. *gone: the OS said no for want of memory or
 * address space, so there is no point in the fallback. */
static void *aligned_by_os(size_t size, size_t align, DWORD type, DWORD prot,
                           bool *gone) {
  void *p = osmem__windows_alloc_aligned(size, align, type, prot);
  if (p && aligned((uintptr_t)p, align)) {
    count(&osmem__os_count.align_exact_hits);
    return p;
  }
  if (p) undo(p, size); /* an OS that ignored the requirement */
  else *gone = osmem__windows_errno(GetLastError()) == ENOMEM;
  return NULL;
}

/* Over-reserve, release, reserve again at the aligned address inside. */
static void *by_probe(size_t size, size_t align, DWORD type, DWORD prot) {
  size_t slack = align - osmem__windows_granularity;
  if (size > SIZE_MAX - slack) return NULL;
  for (int tries = 0; tries < RETRIES; tries++) {
    void *probe =
        osmem__windows_alloc(NULL, size + slack, MEM_RESERVE, PAGE_NOACCESS);
    if (!probe) return NULL;
    uintptr_t first = ((uintptr_t)probe + align - 1) & ~(uintptr_t)(align - 1);
    undo(probe, size + slack);
    void *p = osmem__windows_alloc((void *)first, size, type, prot);
    if (p == (void *)first) {
      count(&osmem__os_count.align_trims);
      return p;
    }
    if (p) undo(p, size);
  }
  return NULL;
}

bool osmem__os_may_reserve(size_t size, size_t align) {
  uintptr_t room = osmem__windows_max_address;
  return size <= room && align <= room - size;
}

int osmem__os_reserve(size_t size, size_t align, void *hint,
                      bool inaccessible, void **out) {
  DWORD type = inaccessible ? MEM_RESERVE : MEM_RESERVE | MEM_COMMIT;
  DWORD prot = inaccessible ? PAGE_NOACCESS : PAGE_READWRITE;
  if (align < osmem__windows_granularity) align = osmem__windows_granularity;
  if (osmem__windows_track_room(UNDOS) != 0) return ENOMEM;
  void *p = NULL;
  bool gone = false;
  if (hint && aligned((uintptr_t)hint, align))
    p = at_hint(hint, size, type, prot);
  if (!p) p = aligned_by_os(size, align, type, prot, &gone);
  if (!p && !gone) p = by_probe(size, align, type, prot);
  if (!p) return ENOMEM;
  osmem__windows_track(p, size, inaccessible);
  *out = p;
  return 0;
}

/* The range lies in one inaccessible reservation (the common code checks):
 * a refusal is for want of commit charge. */
int osmem__os_commit(void *p, size_t size) {
  return osmem__windows_commit(p, size, PAGE_READWRITE) ? 0 : ENOMEM;
}

/* ------------------------------------------------------------ protection */

/* One region: committed pages change protection; reserved pages of an
 * osmem_reserve reservation are committed with it (as mprotect makes
 * PROT_NONE pages accessible on POSIX); anything else is not mapped. */
static int protect_region(void *ctx, void *p, size_t size,
                          const MEMORY_BASIC_INFORMATION *mbi) {
  DWORD prot = *(const DWORD *)ctx;
  bool ok;
  if (mbi->State == MEM_COMMIT)
    ok = osmem__windows_protect(p, size, prot);
  else if (mbi->State == MEM_RESERVE &&
           osmem__windows_in_inaccessible((uintptr_t)p))
    ok = osmem__windows_commit(p, size, prot);
  else
    return EFAULT;
  if (ok) return 0;
  int err = osmem__windows_errno(GetLastError());
  return err == EINVAL ? EFAULT : err;
}

/* Called without the pool lock; the allocation table needs it. */
int osmem__os_set_executable(void *p, size_t size, bool exec) {
  DWORD prot = exec ? PAGE_EXECUTE_READWRITE : PAGE_READWRITE;
  osmem__os_lock();
  int err = osmem__windows_each_region(p, size, protect_region, &prot);
  osmem__os_unlock();
  return err;
}

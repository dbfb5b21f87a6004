/*
 * libosmem: megablocks of memory from the operating system, for language runtimes.
 *
 * A megablock is OSMEM_MBLOCK_SIZE bytes (1 MiB unless configured otherwise),
 * aligned to its own size. The library hands out runs of contiguous megablocks,
 * keeps freed ones in a pool for reuse, and returns pooled memory to the OS on
 * request. It never prints and never exits: every failure is reported through a
 * return value and errno.
 *
 * Conventions used in the documentation below:
 *   Thread safety  every call may be made from any thread at any time, and from
 *                  a child process after fork() (see "Fork" below).
 *   Init           every call initialises the library lazily on first use;
 *                  osmem_init() only lets a caller do it at a moment of its choice.
 *   Complexity     F = number of free ranges in the pool, n = megablocks in the
 *                  call. No call is ever linear in the size of the heap.
 *
 * Fork: the pool lock is held across fork() by pthread_atfork() handlers, so a
 * child never inherits it locked. The child inherits the library's state as it
 * was at the fork: megablocks handed out in the parent are handed out in the
 * child too (as copy-on-write copies) and may be freed there; statistics carry
 * over. The two processes' pools are independent from then on.
 */
#ifndef OSMEM_H
#define OSMEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "osmem-config.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define OSMEM_EXTERN __attribute__((visibility("default")))
#else
#define OSMEM_EXTERN
#endif

/* ---------------------------------------------------------------- version */

#define OSMEM_VERSION_MAJOR 0
#define OSMEM_VERSION_MINOR 2
#define OSMEM_VERSION_PATCH 0
/* 0xMMmmpp: compare with >= to test for a minimum version. */
#define OSMEM_VERSION_HEX                                                   \
  ((OSMEM_VERSION_MAJOR << 16) | (OSMEM_VERSION_MINOR << 8) | OSMEM_VERSION_PATCH)

/* The version of the library linked at run time, as "MAJOR.MINOR.PATCH". */
OSMEM_EXTERN const char *osmem_version(void);

/* ------------------------------------------------------------- megablocks */

/* log2 of the megablock size, fixed at configure time (--with-mblock-shift). */
#define OSMEM_MBLOCK_SHIFT OSMEM_CONFIG_MBLOCK_SHIFT
#define OSMEM_MBLOCK_SIZE ((size_t)1 << OSMEM_MBLOCK_SHIFT)
#define OSMEM_MBLOCK_MASK (OSMEM_MBLOCK_SIZE - 1)

/* OSMEM_MBLOCK_SHIFT as compiled into the library. A program built against a
 * header of another configuration can detect the mismatch with this. */
OSMEM_EXTERN unsigned osmem_mblock_shift(void);

/*
 * osmem_init: initialise the library (query page size, NUMA topology, register
 * fork handlers).
 * Returns 0. Idempotent and thread-safe: concurrent and repeated calls are
 * fine and all return the first result. Calling it is optional.
 * Complexity: O(1) after the first call.
 */
OSMEM_EXTERN int osmem_init(void);

/*
 * osmem_get_mblocks: n contiguous megablocks, aligned to OSMEM_MBLOCK_SIZE,
 * readable and writable.
 *
 * Memory is served from the calling thread's cache first (n up to
 * OSMEM_THREAD_CACHE_RUN: no lock, no system call), then from the pool of
 * freed megablocks (lowest address first fit), then from the current OS
 * reservation, and only then from a new OS mapping; a cache or pool hit
 * makes no system call. A get of one megablock that finds the thread's cache
 * empty moves a few more into it (from the pool, or the reservation's unused
 * part), so that the next ones take no lock.
 * Contents: megablocks never handed out before are zero-filled; megablocks
 * reused from the pool have unspecified contents (they may hold old data, or
 * read as zero after decommit).
 *
 * Returns the first megablock's address, or NULL with errno set to:
 *   EINVAL  n == 0.
 *   ENOMEM  n * OSMEM_MBLOCK_SIZE does not fit in a size_t (the product is
 *           never allowed to wrap) or in the address space (2^48 bytes on
 *           64-bit systems), the OS refused to map memory, or the library
 *           could not map its own bookkeeping (48 bytes of address space per
 *           megablock handed out, mapped once the OS has given the memory
 *           and touched only when used).
 * On ENOMEM the out-of-memory handler, if one is installed, is called first
 * (see osmem_set_oom_handler). On failure nothing is handed out, mapped or
 * unmapped; the one change a failed get may make is to move megablocks
 * held in thread caches into the pool, where they coalesce, before it gives
 * up (mblocks_cached falls by what mblocks_pooled gains).
 * Complexity: O(1) from the thread cache; else O(log F + n / 64) plus,
 * rarely, one mmap for a new reservation.
 */
OSMEM_EXTERN void *osmem_get_mblocks(size_t n);

/*
 * osmem_free_mblocks: give n megablocks starting at p back to the pool.
 *
 * Megablocks are tracked one by one: any run of megablocks that are all
 * currently handed out may be freed, including part of a larger run that was
 * got in one call. Freed memory stays mapped in the pool until reused, until
 * the pool's resident part passes the decommit threshold (then it is
 * decommitted with MADV_FREE, or MADV_DONTNEED where MADV_FREE is missing),
 * or until osmem_release_free_memory().
 *
 * Returns 0, or (with the state unchanged and errno untouched):
 *   EINVAL  n == 0; p is NULL or not aligned to OSMEM_MBLOCK_SIZE;
 *           p + n * OSMEM_MBLOCK_SIZE overflows; or any megablock of the range
 *           is not currently handed out by this library (foreign memory, a
 *           range only partly handed out, or a double free). Two frees that
 *           race for the same megablock from two threads are a double free:
 *           at most one succeeds, and if one of them is bad both may fail.
 * Never fails otherwise: the bookkeeping a free needs is set aside when the
 * megablocks are handed out.
 * Complexity: O(n / 64 + log F); a free the thread cache takes is O(1) and
 * takes no lock.
 */
OSMEM_EXTERN int osmem_free_mblocks(void *p, size_t n);

/*
 * osmem_release_free_memory: return every thread cache's megablocks to the
 * pool, then unmap every free range in the pool and the unused part of the
 * current OS reservation, returning their memory and address space to the
 * OS. Reservations made afterwards are sized from the heap as it is then
 * (what the library maps follows the heap, not how long it has run), and
 * the OS chooses where they go.
 * Returns the number of bytes unmapped (0 if nothing was free). A range the
 * OS refuses to unmap stays in the pool and is not counted. On wasm, where
 * linear memory never shrinks, it returns 0 and the pool keeps its memory
 * for later gets.
 * Complexity: O(F) system calls, plus O(T) for T thread caches.
 */
OSMEM_EXTERN size_t osmem_release_free_memory(void);

/*
 * osmem_is_heap: whether p lies in a megablock currently handed out by this
 * library (GHC's HEAP_ALLOCED). Any pointer value may be passed, including
 * NULL, stack or foreign pointers.
 * Lock-free and wait-free: two atomic loads, no system call, O(1). A reader
 * racing with a get or free of the same megablock sees either state.
 */
OSMEM_EXTERN bool osmem_is_heap(const void *p);

/*
 * osmem_set_decommit_threshold: pooled memory that may still be resident is
 * decommitted once it exceeds this many bytes. Default 64 MiB. 0 decommits
 * every free at once (and turns thread caches off); SIZE_MAX never
 * decommits. Lowering it decommits at once what now exceeds it.
 *
 * What is decommitted: once the pooled memory that may be resident passes
 * the threshold, resident pooled megablocks are decommitted, highest
 * addresses first (gets take the lowest), down to an eighth below the
 * threshold, so that decommits come in batches. Each byte is decommitted at
 * most once between being freed and being handed out again, so a free's
 * decommit work is paid for by what earlier frees returned. Getting
 * decommitted megablocks back makes no system call.
 * Returns the previous threshold. Complexity: O(F + pooled / 64) when
 * lowered, else O(1).
 */
OSMEM_EXTERN size_t osmem_set_decommit_threshold(size_t bytes);

/* How pooled memory over the threshold is given back to the OS. */
enum osmem_decommit_mode {
  /* MADV_FREE (MADV_DONTNEED where the kernel lacks it), once the excess
   * has waited out the decommit delay (osmem_set_decommit_delay): the
   * kernel takes the pages when it needs memory. Cheap to reuse, but the
   * pages count in the process's RSS (and in /proc's LazyFree) until the
   * kernel takes them. The default. */
  OSMEM_DECOMMIT_LAZY = 0,
  /* MADV_DONTNEED, at once, in the free that crosses the threshold: the
   * pages leave RSS at once; reusing them faults in zeroed pages. For
   * runtimes whose users read RSS. */
  OSMEM_DECOMMIT_EAGER = 1,
  /* Never decommit: pooled memory stays resident until
   * osmem_release_free_memory(). */
  OSMEM_DECOMMIT_NEVER = 2
};

/*
 * osmem_set_decommit_mode: choose how pooled memory over the threshold is
 * returned. The environment variable OSMEM_DECOMMIT=lazy|eager|never, read
 * once at initialisation, sets the initial mode for users who cannot change
 * the runtime (an unknown value is ignored); this call overrides it.
 * Memory already decommitted is not touched again. On wasm, where memory
 * cannot be decommitted, every mode is accepted and does nothing.
 * Returns 0, or EINVAL for an unknown mode (nothing changed).
 */
OSMEM_EXTERN int osmem_set_decommit_mode(enum osmem_decommit_mode mode);

/* The decommit mode in force. */
OSMEM_EXTERN enum osmem_decommit_mode osmem_decommit_mode(void);

/*
 * osmem_set_decommit_delay: in lazy mode, how long pooled memory over the
 * threshold waits before it is decommitted, in milliseconds (default 100).
 * A free that takes the pool over the threshold makes no system call; the
 * first call that reaches the pool (a get or free the thread cache cannot
 * serve, a release) once the delay is over decommits the excess, and memory
 * got back before then is never decommitted at all. 0 decommits at once, in
 * the free that crosses the threshold. Eager mode, and a threshold of 0,
 * always decommit at once.
 * A program that frees and then stops calling the library keeps the excess
 * until its next call; osmem_release_free_memory() gives everything back.
 * Lowering the delay to 0 decommits what waits now. Returns the previous
 * delay.
 */
OSMEM_EXTERN unsigned osmem_set_decommit_delay(unsigned ms);

/*
 * Thread caches. Each thread keeps a small cache of megablocks it freed, in
 * front of the pool: a get or free of at most OSMEM_THREAD_CACHE_RUN
 * megablocks that the cache can serve takes no lock and makes no system
 * call, so threads do not serialise. Cached megablocks are not handed out
 * (osmem_is_heap is false for them, and freeing one again is EINVAL); they
 * stay resident, outside the decommit threshold. A cache returns its
 * megablocks to the pool when it would hold more than its capacity (half of
 * them at a time), when its thread exits, on osmem_flush_thread_cache(), and
 * every cache on osmem_release_free_memory(). After fork() the child takes
 * back into its pool what the parent's other threads had cached (a
 * megablock another thread was taking out of its cache at the very instant
 * of the fork may be lost to the child, never handed out twice).
 */
#define OSMEM_THREAD_CACHE_RUN 8

/*
 * osmem_set_thread_cache: the most megablocks each thread's cache may hold,
 * from now on (caches over it shrink on their next free). Default 16; 0
 * turns caching off; values above 64 are taken as 64. A decommit threshold
 * of 0 also turns caching off (without changing the capacity asked for).
 * Returns the capacity asked for before this call (after the cap of 64),
 * even while a threshold of 0 keeps caching off.
 */
OSMEM_EXTERN size_t osmem_set_thread_cache(size_t mblocks);

/* Returns the calling thread's cached megablocks to the pool (a runtime
 * may call it when a worker thread goes idle). Returns how many. */
OSMEM_EXTERN size_t osmem_flush_thread_cache(void);

/* ----------------------------------------------------------- reservations */

/*
 * Reservations: address space first, memory later, at addresses the runtime
 * chooses (GHC's "two-step allocator" on 64-bit systems: one large
 * reservation, megablocks committed and decommitted inside it, and
 * HEAP_ALLOCED a range check on it).
 *
 * How they relate to the megablock pool: not at all. A reservation is
 * address space the caller manages itself; the pool never carves it, and
 * osmem_get_mblocks never returns memory inside one. A runtime may use
 * either or both. osmem_is_heap is false for every address of a reservation,
 * committed or not (a runtime that uses one checks its own range, one
 * comparison), and osmem_free_mblocks refuses such addresses (EINVAL).
 *
 * On wasm, where linear memory only grows and cannot leave gaps, there is
 * no way to hold address space without memory: osmem_reserve fails with
 * ENOSYS, and a runtime uses osmem_get_mblocks there (GHC's wasm and 32-bit
 * ports do).
 */

/* The smallest reservation osmem_reserve falls back to when min_len is 0. */
#define OSMEM_RESERVE_MIN OSMEM_MBLOCK_SIZE

/* The largest reservation osmem_reserve asks the OS for: 2^46 bytes (64 TiB,
 * a quarter of a 48-bit address space) on 64-bit systems, 2^30 (1 GiB) on
 * 32-bit ones; a larger len is lowered to it first. */
#if UINTPTR_MAX > 0xffffffffu
#define OSMEM_RESERVE_MAX ((size_t)1 << 46)
#else
#define OSMEM_RESERVE_MAX ((size_t)1 << 30)
#endif

/*
 * osmem_reserve: reserve up to len bytes of address space, aligned to
 * OSMEM_MBLOCK_SIZE, inaccessible and costing no memory (and no commit
 * charge, even under strict overcommit) until committed.
 *
 * len and min_len are rounded up to whole megablocks; min_len 0 means one
 * megablock. len is first lowered to OSMEM_RESERVE_MAX. When the OS refuses
 * (ulimit -v, RLIMIT_DATA, no room), the size is halved and tried again, down
 * to min_len, which is tried last; the size obtained is stored in *got (got
 * may be NULL). A reservation obtained after a refusal can take most of what
 * address space is left: under a limit, ask for less (osmem_memory_info
 * tells the RLIMIT_AS limit).
 *
 * hint, when not NULL, is where the caller wants it (rounded up to a
 * megablock boundary). If that range is free it is used; otherwise, or if
 * the kernel ignores the hint (older kernels, Android), the reservation is
 * placed where the OS chooses, aligned, and the caller can see it missed by
 * comparing the result with the hint. The hint is tried once per size, so
 * a call tries at most log2(len / min_len) + 2 sizes with at most 7 system
 * calls each (the hint, an exact mapping, an over-allocation and its trims,
 * each undone when it misses), whatever the kernel does with hints.
 *
 * Returns the reservation's base, or NULL with errno:
 *   EINVAL  len == 0, or min_len > len.
 *   ENOMEM  not even min_len bytes could be reserved (min_len above
 *           OSMEM_RESERVE_MAX is refused without a system call), or the
 *           library could not map the page of bookkeeping it keeps per 256
 *           reservations.
 *   ENOSYS  wasm (see above); bad arguments are EINVAL first there too.
 * The out-of-memory handler is not called: a refused reservation is an
 * answer, not an emergency. Counted in osmem_stats (user_reservations,
 * bytes_user_reserved, os_maps, os_unmaps). Complexity: the system calls
 * above plus O(R) for R live reservations.
 */
OSMEM_EXTERN void *osmem_reserve(size_t len, size_t min_len, void *hint,
                                 size_t *got);

/*
 * osmem_commit: make [p, p + size) readable and writable. p must be page
 * aligned and the range (size rounded up to pages) must lie inside one
 * reservation. Memory committed for the first time reads as zero; after
 * osmem_decommit its contents are undefined. Committing a committed range is
 * allowed and cheap. Committed memory can be bound to a node
 * (osmem_bind_to_node).
 * Returns 0, or:
 *   EINVAL  p is NULL or not page aligned, size is 0, or the range is not
 *           inside one reservation.
 *   ENOMEM  the OS refused (strict overcommit: vm.overcommit_memory=2 and
 *           the commit limit reached); the range is unchanged.
 * Complexity: one mprotect system call plus O(log R).
 */
OSMEM_EXTERN int osmem_commit(void *p, size_t size);

/*
 * osmem_decommit: give the memory of [p, p + size) back to the OS; contents
 * are undefined afterwards. The range stays committed (readable and
 * writable, and counted against the commit limit under strict overcommit):
 * touching it again is allowed, and osmem_commit on it is optional. How:
 * as the pool's decommit mode says (osmem_set_decommit_mode): eager
 * (MADV_DONTNEED: pages leave RSS now) or otherwise lazy (MADV_FREE: the
 * kernel takes the pages when it needs memory). The decommit threshold and
 * delay apply to the pool only: this call acts at once.
 * Returns 0, or EINVAL as for osmem_commit, or the OS's error.
 * Counted in os_madvise and bytes_decommitted. Complexity: one madvise plus
 * O(log R). On wasm: ENOSYS (there are no reservations).
 */
OSMEM_EXTERN int osmem_decommit(void *p, size_t size);

/*
 * osmem_unreserve: give a whole reservation back to the OS (committed memory
 * included). base must be what osmem_reserve returned.
 * Returns 0, or EINVAL (not the base of a live reservation: nothing
 * changed), or the OS's error (the reservation then stays, whole).
 * On wasm always EINVAL: there are no reservations.
 */
OSMEM_EXTERN int osmem_unreserve(void *base);

/*
 * osmem_set_executable: make [p, p + size) readable, writable and
 * executable (exec true) or readable and writable only (false), for code a
 * runtime generates (GHC's setExecutable). p must be page aligned; size is
 * rounded up to pages; the range may be any memory the process has mapped.
 * Returns 0, or EINVAL (p NULL or unaligned, size 0, p + size overflows),
 * EFAULT (part of the range is not mapped), EACCES (the system forbids
 * writable executable pages), ENOMEM (the OS had no memory for the change;
 * on Windows also a refused commit of reserved pages), ENOSYS on wasm.
 */
OSMEM_EXTERN int osmem_set_executable(void *p, size_t size, bool exec);

/* ---------------------------------------------------------------- teardown */

/*
 * osmem_teardown: give back everything the library has mapped: every
 * megablock (handed out, in thread caches, pooled, or never used), every
 * reservation, and the library's own bookkeeping; then put the library back
 * in its initial state (settings to their defaults, statistics to zero, no
 * out-of-memory handler). The library stays usable: the next call
 * initialises it again. For a runtime's exit path, so that it leaves no
 * mapping behind.
 *
 * Every pointer the library handed out is invalid afterwards. The caller
 * must make sure no other thread is inside the library, or uses memory from
 * it, during and after the call; threads that used it before may keep
 * running and use it again later (their thread caches are forgotten, not
 * touched).
 * Returns 0, or ENOMEM when the OS refused to unmap something (the library
 * is reset all the same; that mapping stays behind, untracked).
 * On wasm, where memory cannot be given back, every megablock becomes free
 * (pooled) again, the bookkeeping is kept, and the statistics and settings
 * are kept; it returns 0.
 * Complexity: O(M / 64 + F + R) plus one unmap per range, for M megablocks
 * ever mapped.
 */
OSMEM_EXTERN int osmem_teardown(void);

/* ------------------------------------------------------------------ NUMA */

/*
 * osmem_bind_to_node: bind the pages of [p, p + size) to NUMA node `node`
 * with the policy in force (osmem_set_numa_policy; by default mbind with
 * MPOL_BIND and MPOL_MF_MOVE): pages touched later are placed on that node,
 * and pages already present are migrated there where the kernel can (pages
 * shared with another process stay; OSMEM_NUMA_STRICT_NO_MOVE migrates
 * nothing). Bind before the first touch to avoid migration. p must be page aligned; size is rounded up to pages.
 * Returns 0, or:
 *   EINVAL  p is NULL or not page aligned, size is 0, p + size overflows, or
 *           node is not a node this process may allocate on (see
 *           osmem_numa_mask). Without NUMA support (no libnuma, or a kernel
 *           without NUMA) node 0 succeeds as a no-op and every other node is
 *           EINVAL.
 *   EFAULT  part of the range is not mapped.
 *   other   any error mbind(2) reports (for example EIO, ENOMEM).
 * Complexity: one mbind system call.
 * Windows cannot bind a range after the fact: there the committed pages of
 * the range are committed again with VirtualAllocExNuma naming the node as
 * preferred, so pages not yet touched go to the node when first touched
 * (while it has free memory; every policy acts as OSMEM_NUMA_PREFERRED) and
 * pages already present stay where they are; uncommitted pages are left
 * alone. Counted as os_mbind, one call per region of the range.
 */
OSMEM_EXTERN int osmem_bind_to_node(void *p, size_t size, unsigned node);

/*
 * osmem_get_mblocks_on_node: like osmem_get_mblocks, for `node`, bound with
 * the NUMA policy in force (osmem_set_numa_policy). Where the kernel has
 * NUMA, memory for each (node, policy) pair comes from reservations of its
 * own, each bound to the node as a whole (one mbind) when it is made and
 * before anything in it is touched: pages are placed on the node when first
 * touched, and a get makes no system call of its own, so that gets never
 * split the kernel's mappings (which would end at vm.max_map_count).
 * Megablocks freed go back to the pool of their (node, policy) and only
 * gets for the same pair reuse them; a plain osmem_get_mblocks may use any
 * pool. Without NUMA in the kernel (or without NUMA support) node 0 is
 * served like a plain get and nothing is bound.
 * Returns NULL with errno EINVAL for n == 0 or a node as in
 * osmem_bind_to_node (nothing is allocated then), ENOMEM as for
 * osmem_get_mblocks, or the error of binding a new reservation (it is given
 * back: nothing changes). A bind refused with ENOMEM calls the
 * out-of-memory handler first, as any ENOMEM.
 * Complexity: as osmem_get_mblocks, plus one mbind per new reservation.
 */
OSMEM_EXTERN void *osmem_get_mblocks_on_node(size_t n, unsigned node);

/* The number of NUMA nodes this process may allocate on (at least 1): nodes
 * that have memory, in the process's allowed set (cpusets, `numactl
 * --membind`). Node ids need not be contiguous. */
OSMEM_EXTERN unsigned osmem_numa_nodes(void);

/* The number of NUMA nodes the machine has, whether or not this process may
 * use them (libnuma's numa_num_configured_nodes): the nodes with memory.
 * At least 1; at least osmem_numa_nodes(). */
OSMEM_EXTERN unsigned osmem_numa_nodes_configured(void);

/* Whether the library was built with NUMA support (libnuma found at
 * configure time, POSIX backend). Without it every NUMA call acts as on a
 * one-node machine. */
OSMEM_EXTERN bool osmem_numa_supported(void);

/* Whether the kernel supports NUMA policies, in libnuma's sense
 * (numa_available): true on a one-node machine whose kernel has NUMA, false
 * without NUMA support or on a kernel without it. Binding then really sets
 * a policy; when false, binding to node 0 is a no-op. */
OSMEM_EXTERN bool osmem_numa_available(void);

/* The nodes osmem_numa_mask can show: 0 .. OSMEM_NUMA_MASK_NODES - 1. */
#define OSMEM_NUMA_MASK_NODES 64

/* Bit i set = node i may be allocated on, for i < OSMEM_NUMA_MASK_NODES.
 * Nodes 64 and above do not fit and are not shown: use osmem_numa_bitmap.
 * Without NUMA support: 1. */
OSMEM_EXTERN uint64_t osmem_numa_mask(void);

/* Fills bits [0, nbits) of `bitmap` (bit i of word i / 64 = node i may be
 * allocated on) and returns the number of bits the whole set needs (highest
 * allowed node + 1), like snprintf: call with nbits = 0 to size the buffer.
 * Bits past nbits are not written. bitmap may be NULL when nbits is 0. */
OSMEM_EXTERN size_t osmem_numa_bitmap(uint64_t *bitmap, size_t nbits);

/* Bytes of memory on `node` (its MemTotal), or 0 if unknown or no such node. */
OSMEM_EXTERN uint64_t osmem_numa_node_memory(unsigned node);

/* The distance from node `from` to node `to` as the firmware reports it (10
 * for a node to itself), or -1 if unknown. */
OSMEM_EXTERN int osmem_numa_distance(unsigned from, unsigned to);

/* How binding treats a full node. */
enum osmem_numa_policy {
  /* MPOL_BIND: pages come only from the node. When it is full the kernel
   * reclaims or swaps on that node; if that fails the process is killed by
   * the OOM killer when it touches the page (not at get time). */
  OSMEM_NUMA_STRICT = 0,
  /* MPOL_PREFERRED: the node first; when it is full, pages come from the
   * nearest node that has room. */
  OSMEM_NUMA_PREFERRED = 1,
  /* MPOL_BIND with MPOL_MF_STRICT and no move (GHC's binding): as
   * OSMEM_NUMA_STRICT for pages touched later, but pages already present
   * are not migrated; if any of them lies on another node the call fails
   * with EIO (the kernel has still set the policy for the range). Use it on
   * memory not touched yet, where it costs no page walk. */
  OSMEM_NUMA_STRICT_NO_MOVE = 2
};

/* Sets the policy osmem_bind_to_node and osmem_get_mblocks_on_node use from
 * now on (default OSMEM_NUMA_STRICT); megablocks got for a node before keep
 * the policy they were bound with. Returns 0, or EINVAL for an unknown
 * policy (nothing changed). Thread-safe. */
OSMEM_EXTERN int osmem_set_numa_policy(enum osmem_numa_policy policy);

/* When on, fresh megablocks of plain gets (osmem_get_mblocks) are interleaved
 * page by page across the allowed nodes (MPOL_INTERLEAVE) before first
 * touch; default off. Megablocks reused from the pool keep their pages.
 * Returns 0. Without NUMA support it records the wish and does nothing.
 * Interleaving is a wish: where the kernel refuses it (mbind fails), the
 * get still succeeds, with the default placement. */
OSMEM_EXTERN int osmem_set_numa_interleave(bool on);

/* ---------------------------------------------------------- machine facts */

/* Physical memory this process can expect to use, in bytes: the lowest of
 * the machine's RAM (in a 32-bit process, at most the 4 GiB its address
 * space holds), the memory limit of the process's cgroup (the lowest on
 * the path from its cgroup up to the root of the mounted hierarchy: cgroup v2
 * memory.max or v1 memory.limit_in_bytes; on a hybrid system, the lowest of
 * both) and the RLIMIT_AS soft limit; on wasm, 4 GiB. 0 if none is known.
 * Limit files that are missing, unreadable or unparsable count as no limit.
 * Read on first use
 * and cached (a child inherits the cached value across fork); see
 * osmem_refresh_physical_memory. The pieces: osmem_memory_info. */
OSMEM_EXTERN uint64_t osmem_physical_memory(void);

/* Re-reads the pieces (containers get resized, processes moved to other
 * cgroups, rlimits changed) and returns the new value of
 * osmem_physical_memory(). Thread-safe; reads a few small files and never
 * allocates. */
OSMEM_EXTERN uint64_t osmem_refresh_physical_memory(void);

#define OSMEM_UNLIMITED UINT64_MAX

/* Where osmem_physical_memory() came from. When two pieces are equal the
 * first of RAM, CGROUP, RLIMIT, JOB is named. RAM also names the 4 GiB of a
 * 32-bit process's address space, where the machine has more. */
enum osmem_memory_source {
  OSMEM_MEMORY_UNKNOWN = 0,
  OSMEM_MEMORY_RAM = 1,
  OSMEM_MEMORY_CGROUP = 2,
  OSMEM_MEMORY_RLIMIT = 3,
  /* Windows: the memory limit of the process's job object (job_max). */
  OSMEM_MEMORY_JOB = 4
};

struct osmem_memory_info {
  uint64_t physical;    /* what osmem_physical_memory() returns */
  uint64_t ram;         /* installed RAM, even where a 32-bit process can
                           address less; 0 if unknown */
  uint64_t cgroup_max;  /* lowest hard limit up the cgroup tree, or
                           OSMEM_UNLIMITED */
  uint64_t cgroup_high; /* lowest cgroup v2 memory.high (throttling, not a
                           limit: not used for `physical`), or
                           OSMEM_UNLIMITED */
  uint64_t rlimit_as;   /* RLIMIT_AS soft limit, or OSMEM_UNLIMITED */
  unsigned cgroup_version;            /* 0 (no memory controller found),
                                         1 or 2 (the one that gave
                                         cgroup_max) */
  enum osmem_memory_source source;    /* which piece `physical` is */
  uint64_t job_max;     /* Windows: the lower of the job object's process
                           and job memory limits (JOB_OBJECT_LIMIT_PROCESS_
                           MEMORY, _JOB_MEMORY; they cap committed memory),
                           or OSMEM_UNLIMITED (no job, no limit, other
                           systems) */
  uint64_t reserved_for_abi[3];
};

/* Fills *out with the pieces behind osmem_physical_memory() (cached; see
 * osmem_refresh_physical_memory). Does nothing when out is NULL. */
OSMEM_EXTERN void osmem_memory_info(struct osmem_memory_info *out);

/* Installed RAM in bytes (GHC's getPhysicalMemorySize; sysconf's
 * _SC_PHYS_PAGES times the page size, sysctl on the BSDs and macOS), 0 if
 * unknown; 4 GiB on wasm. Unlike osmem_physical_memory, not lowered by
 * cgroup or rlimit limits, nor to a 32-bit process's address space, and
 * read alone (one call) on first use, then cached
 * (osmem_refresh_physical_memory does not re-read it). */
OSMEM_EXTERN uint64_t osmem_physical_ram(void);

/* The OS page size in bytes (sysconf(_SC_PAGESIZE)). */
OSMEM_EXTERN size_t osmem_page_size(void);

/* The backend chosen at configure time: "posix", "wasm" or "windows". */
OSMEM_EXTERN const char *osmem_backend(void);

/* ------------------------------------------------------------ statistics */

struct osmem_stats {
  /* megablocks */
  uint64_t mblocks_in_use;      /* handed out now */
  uint64_t mblocks_peak;        /* most megablocks ever out of the pool at
                                   once (handed out or in thread caches) */
  uint64_t mblocks_pooled;      /* freed, kept in the pool for reuse */
  uint64_t mblocks_pooled_resident; /* of those, not decommitted since the
                                       last free (an upper bound) */
  uint64_t pool_ranges;         /* free ranges in the pool (F above) */
  /* address space */
  uint64_t bytes_mapped;        /* mapped from the OS now, all uses */
  uint64_t bytes_reserved_unused; /* mapped, never handed out yet */
  uint64_t reservations;        /* OS reservations made so far for
                                   megablocks (not osmem_reserve's) */
  /* OS calls made so far, successful or not */
  uint64_t os_maps;             /* mmap (or memory.grow) */
  uint64_t os_unmaps;           /* munmap */
  uint64_t os_madvise;          /* madvise (decommit) */
  uint64_t os_mbind;            /* mbind */
  /* how reservations were aligned (see docs/design.md) */
  uint64_t align_hint_hits;     /* placed at the hint address */
  uint64_t align_exact_hits;    /* an unhinted exact mapping was aligned */
  uint64_t align_trims;         /* over-allocated and trimmed */
  uint64_t reserve_retries;     /* a reservation retried at a smaller size */
  /* decommit and thread caches */
  uint64_t bytes_decommitted;   /* total bytes passed to decommit calls */
  uint64_t mblocks_cached;      /* in thread caches now (not handed out,
                                   not pooled) */
  uint64_t cache_gets;          /* gets served by a thread cache */
  uint64_t cache_frees;         /* frees taken by a thread cache */
  /* reservations (osmem_reserve) */
  uint64_t user_reservations;   /* live now */
  uint64_t bytes_user_reserved; /* their address space now (also in
                                   bytes_mapped) */
  uint64_t bytes_committed;     /* total bytes passed to successful
                                   osmem_commit calls */
  uint64_t os_mprotect;         /* mprotect (commit, set_executable) */
  uint64_t reserved_for_abi[4]; /* zero; room to grow without an ABI break */
};

/*
 * osmem_stats: a snapshot of the statistics. The fields are read under the
 * pool lock, so the megablock and byte counts are consistent with each other
 * while no other thread is getting or freeing through its thread cache
 * (those calls take no lock; the thread-cache counts are then a moment's
 * reading, and mblocks_in_use + mblocks_cached is exact).
 * Does nothing when out is NULL. Complexity: O(1).
 */
OSMEM_EXTERN void osmem_stats(struct osmem_stats *out);

/* --------------------------------------------------------- out of memory */

/* Called with the request's n and errno value when a get fails with ENOMEM,
 * before NULL is returned; it may exit (GHC's behaviour) or return, and then
 * the get returns NULL with errno ENOMEM. It runs without the pool lock held,
 * so it may call the library (for example osmem_release_free_memory). */
typedef void (*osmem_oom_handler)(size_t n, int err);

/* Installs h (NULL removes it) and returns the previous handler. Thread-safe. */
OSMEM_EXTERN osmem_oom_handler osmem_set_oom_handler(osmem_oom_handler h);

#ifdef __cplusplus
}
#endif

#endif /* OSMEM_H */

/*
 * The one interface between the common code (osmem/common) and a backend
 * (osmem/posix, osmem/wasm or osmem/windows). Exactly one backend is
 * linked, chosen at configure time. The backend knows nothing of the pool, the heap map or the
 * public API; the common code knows nothing of mmap, libnuma or memory.grow.
 *
 * What every function may assume, unless it says otherwise:
 *   - osmem__os_init() has run (the common code calls it once, first);
 *   - addresses and sizes are multiples of the page size and non-zero;
 *   - calls that change the address space are made with the pool lock held.
 * Functions that can fail return 0 or a positive errno value and hand results
 * back through out-pointers; they never set errno, print or abort.
 */
#ifndef OSMEM_BACKEND_H
#define OSMEM_BACKEND_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* PE (Windows) has no visibility: a DLL exports what its .def file lists. */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(_WIN32)
#define OSMEM_HIDDEN __attribute__((visibility("hidden")))
#else
#define OSMEM_HIDDEN
#endif

/* Node ids below this are supported (Linux allows at most 1024); both the
 * backend's node masks and the common code's pools by node are sized by it. */
#define OSMEM__MAX_NODES 1024

/* What the backend can do; the common code branches on these, never on the
 * name of the OS. */
struct osmem__os_caps {
  const char *name;       /* "posix", "wasm" or "windows" */
  size_t page_size;       /* power of two */
  bool can_unmap;         /* memory can be given back to the OS */
  bool can_decommit;      /* osmem__os_decommit really frees pages */
  bool cheap_reserve;     /* reserving address space ahead costs no memory */
};

/* A 64-bit atomic whose alignment is said by its type: i386 gcc before 11.1
 * gave _Atomic 64-bit fields 4 bytes, later ones 8, and notes the change
 * (-Wpsabi) in every file with such a field unless the type fixes it.
 * _Alignas on a field is not enough, but an array field needs it as well. */
#if defined(__GNUC__) || defined(__clang__)
typedef atomic_uint_least64_t __attribute__((aligned(8))) osmem__atomic_u64;
#else
typedef atomic_uint_least64_t osmem__atomic_u64;
#endif

/* OS calls made, counted by the backend where it makes them. Relaxed atomics:
 * some calls (bind) run without the pool lock. */
struct osmem__os_counters {
  osmem__atomic_u64 maps, unmaps, madvise, mbind, mprotect;
  osmem__atomic_u64 align_hint_hits, align_exact_hits, align_trims;
};
OSMEM_HIDDEN extern struct osmem__os_counters osmem__os_count;

/* Fills caps. Called under the pool lock, once, and again after each
 * teardown. Cannot fail: a backend that
 * lacks something reports it through caps or through later calls. */
OSMEM_HIDDEN void osmem__os_init(struct osmem__os_caps *caps);

/* Maps size bytes of fresh, zero-filled memory aligned to align (a power of
 * two >= page size): read-write, or, when inaccessible, address space only
 * (no access, no memory, no commit charge) until osmem__os_commit. hint, if
 * not NULL, is where the caller would like it; it is only a wish, tried
 * once. ENOMEM when the OS refuses; ENOSYS where address space cannot be
 * had without memory (caps.cheap_reserve false) and inaccessible is asked. */
OSMEM_HIDDEN int osmem__os_reserve(size_t size, size_t align, void *hint,
                                   bool inaccessible, void **out);

/* Makes [p, p + size), inside an inaccessible reservation, read-write.
 * ENOMEM when the OS refuses (strict overcommit). */
OSMEM_HIDDEN int osmem__os_commit(void *p, size_t size);

/* Makes [p, p + size) read-write-execute (exec) or read-write. EFAULT for
 * a range not wholly mapped; otherwise the OS's error; ENOSYS on wasm. */
OSMEM_HIDDEN int osmem__os_set_executable(void *p, size_t size, bool exec);

/* false when a reservation of size bytes aligned to align can certainly not
 * be made (it would pass the end of the address space); true otherwise,
 * which promises nothing. Changes nothing. */
OSMEM_HIDDEN bool osmem__os_may_reserve(size_t size, size_t align);

/* The most address space the OS lets the process map (RLIMIT_AS and
 * RLIMIT_DATA soft limits, the lower), SIZE_MAX when unlimited. */
OSMEM_HIDDEN size_t osmem__os_address_budget(void);

/* Gives [p, p + size) back to the OS. ENOSYS where caps.can_unmap is false. */
OSMEM_HIDDEN int osmem__os_unmap(void *p, size_t size);

/* Gives back a mapping nobody uses (a reservation undone); where the OS
 * refuses now, the backend keeps it and tries again on each
 * osmem__os_retry_discards, so that it is never lost. Lock held. */
OSMEM_HIDDEN void osmem__os_discard(void *p, size_t size);
/* Tries again to give back what discards could not; the bytes given back.
 * Lock held. */
OSMEM_HIDDEN size_t osmem__os_retry_discards(void);

/* Tells the OS the contents of [p, p + size) are no longer needed; the range
 * stays mapped and usable, and using it again needs no call. eager: the
 * pages must leave the process's resident set now (MADV_DONTNEED); else the
 * OS may take them when it likes (MADV_FREE, falling back to eager where
 * that is missing). A no-op returning 0 where that cannot be done. */
OSMEM_HIDDEN int osmem__os_decommit(void *p, size_t size, bool eager);

/* Maps size bytes of zero-filled memory for the library's own bookkeeping,
 * given back only by a teardown (osmem__os_unmap). ENOMEM when the OS
 * refuses. */
OSMEM_HIDDEN int osmem__os_meta_alloc(size_t size, void **out);

/* Binds [p, p + size) to NUMA node `node` as `policy` says (see enum
 * osmem_numa_policy in osmem.h). EINVAL for a node the process may not use;
 * otherwise the OS's error. May be called without the pool lock. */
OSMEM_HIDDEN int osmem__os_bind(void *p, size_t size, unsigned node,
                                int policy);

/* Interleaves the pages of [p, p + size) across the allowed nodes. 0 where
 * there is one node. May be called without the pool lock. */
OSMEM_HIDDEN int osmem__os_interleave(void *p, size_t size);

/* Whether node is one this process may allocate on (allowed, with memory). */
OSMEM_HIDDEN bool osmem__os_node_allowed(unsigned node);

/* One more than the highest allowed node id. */
OSMEM_HIDDEN size_t osmem__os_numa_limit(void);

/* Bytes of memory on a node, 0 if unknown; distance between two nodes, -1 if
 * unknown. */
OSMEM_HIDDEN uint64_t osmem__os_node_memory(unsigned node);
OSMEM_HIDDEN int osmem__os_node_distance(unsigned from, unsigned to);

/* The pieces of physical memory, read now (the common code caches them and
 * computes out->physical and out->source): out->ram (0 if unknown),
 * out->cgroup_max, out->cgroup_high, out->rlimit_as, out->job_max
 * (OSMEM_UNLIMITED when there is none) and out->cgroup_version. The caller has set every field to
 * "unknown" beforehand; the other fields are left alone. Called with the
 * pool lock held; never fails, may read files, preserves errno. */
struct osmem_memory_info;
OSMEM_HIDDEN void osmem__os_memory_info(struct osmem_memory_info *out);
/* Installed RAM alone (out->ram above), 0 if unknown; preserves errno. */
OSMEM_HIDDEN uint64_t osmem__os_ram(void);

/* Machine facts, fixed after init: nodes this process may use; nodes the
 * machine has; built with NUMA support; the kernel has NUMA policies. */
OSMEM_HIDDEN unsigned osmem__os_numa_nodes(void);
OSMEM_HIDDEN unsigned osmem__os_numa_nodes_configured(void);
OSMEM_HIDDEN bool osmem__os_numa_supported(void);
OSMEM_HIDDEN bool osmem__os_numa_available(void);

/* The pool lock: usable before osmem__os_init, and never left held in a
 * child after fork. */
OSMEM_HIDDEN void osmem__os_lock(void);
OSMEM_HIDDEN void osmem__os_unlock(void);

/* An asymmetric barrier, for the thread caches: once osmem__os_barrier_init
 * has returned true, osmem__os_barrier_all() makes every running thread of
 * the process execute a full memory barrier before it returns (Linux:
 * membarrier, private expedited), so that the other side of a Dekker-style
 * handshake needs only a compiler barrier. false: not available; the other
 * side must use a full fence (osmem__os_barrier_all is then a plain fence).
 * init is called once, under the pool lock. */
OSMEM_HIDDEN bool osmem__os_barrier_init(void);
OSMEM_HIDDEN void osmem__os_barrier_all(void);

/* Lets other threads run (while waiting for one to leave a short critical
 * section). */
OSMEM_HIDDEN void osmem__os_yield(void);

/* A monotonic clock, in nanoseconds from an arbitrary start. */
OSMEM_HIDDEN uint64_t osmem__os_clock_ns(void);

/* Arranges for osmem__thread_exit(arg) to run when the calling thread
 * exits, where the OS has threads (else 0 and it never runs). 0, or an errno
 * value when it cannot be arranged. */
OSMEM_HIDDEN int osmem__os_at_thread_exit(void *arg);

/* Implemented by the common code, called by the backend. */
/* When a thread that called osmem__os_at_thread_exit exits, without the
 * pool lock. */
OSMEM_HIDDEN void osmem__thread_exit(void *arg);
/* In the child of a fork, once, with the pool lock held, before anything
 * else runs there. */
OSMEM_HIDDEN void osmem__fork_child_locked(void);

#endif /* OSMEM_BACKEND_H */

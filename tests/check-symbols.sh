#!/bin/sh
# Every symbol the shared library exports must start with osmem_, and the
# public calls must all be there.
set -u
lib=$(ls "$top_builddir"/.libs/libosmem.so 2>/dev/null | head -n 1)
# Windows: a DLL, whose exports its import library lists (a T thunk each).
implib=$(ls "$top_builddir"/.libs/libosmem.dll.a 2>/dev/null | head -n 1)
if [ -z "$lib" ] && [ -z "$implib" ]; then
  echo "SKIP: no shared libosmem built"; exit 77
fi
# Symbols the toolchain itself adds, never ours: sanitizer instrumentation
# (gcc's ASan: __odr_asan.*, __asan_*, __ubsan_*, __tsan_*; clang: ___asan_*
# globals), and 32-bit x86 PIC thunks (__x86.get_pc_thunk.*).
# mingw-w64: .refptr.* (pseudo-relocation stubs for data references).
toolchain='^(__odr_asan|___?asan_|__ubsan_|__tsan_|__sanitizer_|__x86\.get_pc_thunk\.|\.refptr\.)'
if [ -n "$lib" ]; then
  exported=$($NM -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' |
    grep -Ev "$toolchain" || true)
else
  exported=$($NM "$implib" | awk '$2 == "T" {print $3}' | sort -u)
fi
bad=$(printf '%s\n' "$exported" | grep -v '^osmem_' || true)
if [ -n "$bad" ]; then
  echo "FAIL: symbols outside the osmem_ prefix:"; printf '%s\n' "$bad"; exit 1
fi
missing=0
for sym in osmem_init osmem_get_mblocks osmem_free_mblocks \
           osmem_release_free_memory osmem_is_heap osmem_bind_to_node \
           osmem_get_mblocks_on_node osmem_physical_memory osmem_numa_nodes \
           osmem_numa_mask osmem_page_size osmem_backend osmem_stats \
           osmem_set_oom_handler osmem_version osmem_mblock_shift \
           osmem_set_decommit_threshold osmem_refresh_physical_memory \
           osmem_memory_info osmem_reserve osmem_commit osmem_decommit \
           osmem_unreserve osmem_set_executable osmem_teardown \
           osmem_numa_nodes_configured osmem_numa_supported \
           osmem_numa_available osmem_physical_ram; do
  printf '%s\n' "$exported" | grep -qx "$sym" || { echo "FAIL: $sym not exported"; missing=1; }
done
[ "$missing" = 0 ] || exit 1
# The static archive: every global symbol it defines carries the prefix too
# (internal ones as osmem__, hidden when linked into a shared object).
archive="$top_builddir/.libs/libosmem.a"
if [ -f "$archive" ]; then
  bad=$($NM "$archive" | awk '$2 ~ /^[TDBRVWCG]$/ {print $3}' |
    grep -Ev "$toolchain" | grep -v '^osmem_' || true)
  if [ -n "$bad" ]; then
    echo "FAIL: libosmem.a defines symbols outside the osmem_ prefix:"; printf '%s\n' "$bad"; exit 1
  fi
fi
internal=$(printf '%s\n' "$exported" | grep -c '^osmem__' || true)
[ "$internal" = 0 ] || { echo "FAIL: internal osmem__ symbols exported"; exit 1; }
echo "PASS: $(printf '%s\n' "$exported" | wc -l) exported symbols, all osmem_*"

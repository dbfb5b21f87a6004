// The public header must compile as C++ and its calls link from C++.
#include <osmem.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>

int main() {
  if (osmem_init() != 0) return 1;
  void *p = osmem_get_mblocks(1);
  if (p == nullptr) return 2;
  if ((reinterpret_cast<std::uintptr_t>(p) & OSMEM_MBLOCK_MASK) != 0) return 3;
  if (!osmem_is_heap(p)) return 4;
  if (osmem_free_mblocks(p, 1) != 0) return 5;
  struct osmem_stats st;
  osmem_stats(&st);
  if (st.mblocks_in_use != 0) return 6;
  if (osmem_get_mblocks(0) != nullptr || errno != EINVAL) return 7;
  std::printf("C++: osmem %s, backend %s\n", osmem_version(), osmem_backend());
  return 0;
}

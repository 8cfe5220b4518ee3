// Internal: 64-bit FNV-1a, the one hash lumen uses for cache keys and per-image seeds. Not a security
// hash: nothing is trusted on its strength; it only has to be stable across runs and machines.
#pragma once

#include <cstdint>
#include <string_view>

namespace lumen::detail {

inline uint64_t fnv1a(std::string_view bytes) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ULL;
  return h;
}

}  // namespace lumen::detail

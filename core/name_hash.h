// A hash for the short names that key per-diagnosis lookups (service names, route paths, action
// targets): a few hundred are hashed on every diagnosis, and absl::Hash, built to resist
// adversarial keys, costs several times more than these names need. Names come from the
// stack's own manifest and observation, not from strangers, so a fast mix is enough. For
// absl::flat_hash_map/set<absl::string_view, ..., NameHash>.
#ifndef UPKEEP_CORE_NAME_HASH_H_
#define UPKEEP_CORE_NAME_HASH_H_

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "absl/strings/string_view.h"

namespace upkeep {

struct NameHash {
  size_t operator()(absl::string_view s) const {
    // The first and last 8 bytes (overlapping when shorter) and the length, mixed.
    const char* p = s.data();
    const size_t n = s.size();
    uint64_t a = 0, b = 0;
    if (n >= 8) {
      std::memcpy(&a, p, 8);
      std::memcpy(&b, p + n - 8, 8);
    } else if (n >= 4) {
      uint32_t lo, hi;
      std::memcpy(&lo, p, 4);
      std::memcpy(&hi, p + n - 4, 4);
      a = lo | (uint64_t{hi} << 32);
    } else if (n > 0) {
      a = static_cast<uint8_t>(p[0]) | (uint64_t{static_cast<uint8_t>(p[n / 2])} << 8) |
          (uint64_t{static_cast<uint8_t>(p[n - 1])} << 16);
    }
    uint64_t h = (a ^ (b * 0x9e3779b97f4a7c15ULL) ^ n) * 0xff51afd7ed558ccdULL;
    h ^= h >> 29;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return static_cast<size_t>(h ^ (h >> 32));
  }
};

}  // namespace upkeep

#endif  // UPKEEP_CORE_NAME_HASH_H_

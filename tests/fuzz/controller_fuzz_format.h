// The input format of controller_fuzz (see controller_fuzz.cc), shared with the seed writer.
#ifndef UPKEEP_TESTS_FUZZ_CONTROLLER_FUZZ_FORMAT_H_
#define UPKEEP_TESTS_FUZZ_CONTROLLER_FUZZ_FORMAT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace upkeep::fuzz {

// FleetService methods, selected by (selector % kSelectors) - 1.
inline const char* const kFleetMethods[] = {
    "Apply",      "GetStack",    "ListStacks",  "DeleteStack", "ListHosts", "DescribeStack", "Plan",
    "ListEvents", "WatchEvents", "ListActions", "Pause",       "Resume",    "RunAction"};
inline constexpr int kFleetMethodCount = sizeof(kFleetMethods) / sizeof(kFleetMethods[0]);
// 0: one agent stream; 1..13: FleetService; 14: two agent streams.
inline constexpr int kSelectors = kFleetMethodCount + 2;

// Frames: a little-endian u16 length, then that many bytes (fewer when the input ends first).
inline std::vector<std::string> SplitFrames(const uint8_t* data, size_t size) {
  std::vector<std::string> frames;
  size_t i = 0;
  while (i + 2 <= size) {
    size_t len = data[i] | (static_cast<size_t>(data[i + 1]) << 8);
    i += 2;
    if (len > size - i) len = size - i;
    frames.emplace_back(reinterpret_cast<const char*>(data + i), len);
    i += len;
  }
  return frames;
}

// The input that sends `frames` (each at most 65535 bytes) with `selector`.
inline std::string JoinFrames(uint8_t selector, const std::vector<std::string>& frames) {
  std::string out(1, static_cast<char>(selector));
  for (const auto& f : frames) {
    out.push_back(static_cast<char>(f.size() & 0xff));
    out.push_back(static_cast<char>((f.size() >> 8) & 0xff));
    out += f;
  }
  return out;
}

}  // namespace upkeep::fuzz

#endif  // UPKEEP_TESTS_FUZZ_CONTROLLER_FUZZ_FORMAT_H_

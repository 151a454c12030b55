// libFuzzer target for the manifest loader: any bytes in, a LoadResult out, never a crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/manifest/loader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const upkeep::manifest::LoadResult r = upkeep::manifest::LoadString(text, "fuzz.yaml");
  // Either stacks or errors, never both, never neither.
  if (r.ok() == r.stacks.empty()) __builtin_trap();
  return 0;
}

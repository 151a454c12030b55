// Placeholder: replaced by the manifest implementation.
#include "core/manifest/loader.h"

namespace upkeep::manifest {

std::string ManifestError::ToString() const {
  return file + ":" + std::to_string(line) + ": " + field + ": " + message;
}

LoadResult LoadString(absl::string_view, absl::string_view filename) {
  LoadResult r;
  r.errors.push_back({std::string(filename), 0, "", "not implemented"});
  return r;
}

LoadResult LoadPath(const std::string& path) { return LoadString("", path); }

}  // namespace upkeep::manifest

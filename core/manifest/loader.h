// Manifest loader: YAML (one or more documents) -> upkeep.v1.Stack, validated, with
// defaults filled in. Errors name FILE:LINE: field.path: message, all errors of a file at once.
// Pure functions; thread-compatible.
#ifndef UPKEEP_CORE_MANIFEST_LOADER_H_
#define UPKEEP_CORE_MANIFEST_LOADER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "upkeep/v1/notifier.pb.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::manifest {

struct ManifestError {
  std::string file;
  int line = 0;       // 1-based; 0 when unknown
  std::string field;  // e.g. "spec.services[0].port"
  std::string message;
  // "FILE:LINE: field: message"
  std::string ToString() const;
};

struct LoadResult {
  std::vector<upkeep::v1::Stack> stacks;  // empty when errors is non-empty
  // `kind: Notifier` documents (docs/operations.md, "Notifications"); empty on errors too.
  std::vector<upkeep::v1::Notifier> notifiers;
  std::vector<ManifestError> errors;
  bool ok() const { return errors.empty(); }
};

// Parses and validates `content`; `filename` is used in errors and ObjectMeta.source.
LoadResult LoadString(absl::string_view content, absl::string_view filename);

// A file, or a directory (every *.yaml / *.yml in it, sorted by name). Duplicate stack
// names across files are errors.
LoadResult LoadPath(const std::string& path);

// Fills every unset field with its documented default (docs/manifest.md). The loader calls it;
// code that builds a Stack by hand calls it too.
void ApplyDefaults(upkeep::v1::Stack* stack);

// The documented defaults of a Notifier (docs/operations.md); the loader calls it.
void ApplyNotifierDefaults(upkeep::v1::Notifier* notifier);

// "500ms", "2s", "10m", "1h", "1m30s".
absl::StatusOr<absl::Duration> ParseDuration(absl::string_view text);

}  // namespace upkeep::manifest

#endif  // UPKEEP_CORE_MANIFEST_LOADER_H_

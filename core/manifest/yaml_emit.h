// Writes a JSON value as block-style YAML: what `upkeepctl ... -o yaml` prints. Strings that
// could read as anything but the same string (numbers, booleans, null, punctuation) are written
// double-quoted, JSON style, which YAML reads the same; the output reads back through
// YamlStream::Parse to the same tree (tests/core/manifest/yaml_emit_test.cc).
// Pure; thread-compatible.
#ifndef UPKEEP_CORE_MANIFEST_YAML_EMIT_H_
#define UPKEEP_CORE_MANIFEST_YAML_EMIT_H_

#include <string>

#include "nlohmann/json.hpp"

namespace upkeep::manifest {

// One YAML document, ending in a newline.
std::string EmitYaml(const nlohmann::json& value);

}  // namespace upkeep::manifest

#endif  // UPKEEP_CORE_MANIFEST_YAML_EMIT_H_

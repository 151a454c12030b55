#include "core/manifest/yaml_emit.h"

#include "absl/strings/ascii.h"

namespace upkeep::manifest {
namespace {

// True when `s` can be written unquoted and still reads back as this very string.
bool IsPlainSafe(const std::string& s) {
  if (s.empty() || !(absl::ascii_isalpha(s[0]) || s[0] == '_' || s[0] == '/')) return false;
  for (char c : s) {
    if (!(absl::ascii_isalnum(c) || c == '_' || c == '.' || c == '/' || c == '-')) return false;
  }
  const std::string lower = absl::AsciiStrToLower(s);
  for (const char* word : {"true", "false", "yes", "no", "on", "off", "y", "n", "null"}) {
    if (lower == word) return false;
  }
  return true;
}

std::string Scalar(const nlohmann::json& j) {
  if (j.is_string() && IsPlainSafe(j.get<std::string>())) return j.get<std::string>();
  // JSON scalars are YAML flow scalars: "quoted \u00e9 strings", 12, 1.5, true, null.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool IsInline(const nlohmann::json& j) { return !(j.is_object() || j.is_array()) || j.empty(); }

std::string Inline(const nlohmann::json& j) {
  if (j.is_object()) return "{}";
  if (j.is_array()) return "[]";
  return Scalar(j);
}

// `j` (a non-empty collection) with every line indented by `indent` spaces.
void Block(const nlohmann::json& j, size_t indent, std::string* out) {
  const std::string pad(indent, ' ');
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      *out += pad + Scalar(nlohmann::json(it.key())) + ":";
      if (IsInline(it.value())) {
        *out += " " + Inline(it.value()) + "\n";
      } else {
        *out += "\n";
        Block(it.value(), indent + 2, out);
      }
    }
    return;
  }
  for (const auto& item : j) {
    if (IsInline(item)) {
      *out += pad + "- " + Inline(item) + "\n";
      continue;
    }
    // The item's first line goes on the dash's line: "- key: v" / "- - x".
    std::string nested;
    Block(item, indent + 2, &nested);
    *out += pad + "- " + nested.substr(indent + 2);
  }
}

}  // namespace

std::string EmitYaml(const nlohmann::json& value) {
  if (IsInline(value)) return Inline(value) + "\n";
  std::string out;
  Block(value, 0, &out);
  return out;
}

}  // namespace upkeep::manifest

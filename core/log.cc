#include "core/log.h"

#include <atomic>

#include "absl/strings/str_cat.h"
#include "spdlog/sinks/stdout_sinks.h"

namespace upkeep {
namespace {

std::atomic<bool> g_json{false};

bool NeedsQuotes(absl::string_view v) {
  if (v.empty()) return true;
  for (char c : v) {
    if (c == ' ' || c == '"' || c == '=' || c == '\n' || c == '\t') return true;
  }
  return false;
}

void AppendEscaped(std::string* out, absl::string_view v) {
  for (char c : v) {
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '\t': out->append("\\t"); break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppend(out, "\\u00", absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
        } else {
          out->push_back(c);
        }
    }
  }
}

}  // namespace

void InitLogging(absl::string_view component, bool json, spdlog::level::level_enum level) {
  g_json = json;
  auto logger = spdlog::stderr_logger_mt(std::string(component));
  if (json) {
    logger->set_pattern(absl::StrCat(R"({"ts":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","component":")",
                                     component, R"(",%v})"),
                        spdlog::pattern_time_type::utc);
  } else {
    logger->set_pattern(absl::StrCat("%Y-%m-%dT%H:%M:%S.%eZ level=%l component=", component, " %v"),
                        spdlog::pattern_time_type::utc);
  }
  logger->set_level(level);
  spdlog::set_default_logger(logger);
}

std::string FormatEvent(absl::string_view event, std::initializer_list<LogField> fields) {
  std::string out;
  if (g_json) {
    out = "\"event\":\"";
    AppendEscaped(&out, event);
    out.push_back('"');
    for (const auto& [k, v] : fields) {
      out.append(",\"");
      AppendEscaped(&out, k);
      out.append("\":\"");
      AppendEscaped(&out, v);
      out.push_back('"');
    }
    return out;
  }
  absl::StrAppend(&out, "event=", event);
  for (const auto& [k, v] : fields) {
    absl::StrAppend(&out, " ", k, "=");
    if (NeedsQuotes(v)) {
      out.push_back('"');
      AppendEscaped(&out, v);
      out.push_back('"');
    } else {
      out.append(v);
    }
  }
  return out;
}

}  // namespace upkeep

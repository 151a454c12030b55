// Structured logging for daemons: one event per line, key=value fields (or JSON), on stderr.
//   UPKEEP_LOG(info, "action_sent", {{"id", id}, {"host", host}});
#ifndef UPKEEP_CORE_LOG_H_
#define UPKEEP_CORE_LOG_H_

#include <initializer_list>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"
#include "spdlog/spdlog.h"

namespace upkeep {

using LogField = std::pair<absl::string_view, std::string>;

// Configures the default logger: `component` is added to every line; json selects JSON lines.
void InitLogging(absl::string_view component, bool json, spdlog::level::level_enum level);

// Formats `event` and fields as `event=NAME k=v k="v with spaces"` (or a JSON object).
std::string FormatEvent(absl::string_view event, std::initializer_list<LogField> fields);

}  // namespace upkeep

#define UPKEEP_LOG(level, event, ...) \
  ::spdlog::level("{}", ::upkeep::FormatEvent(event, __VA_ARGS__))

#endif  // UPKEEP_CORE_LOG_H_

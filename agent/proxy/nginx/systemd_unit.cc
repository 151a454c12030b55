#include "agent/proxy/nginx/systemd_unit.h"

#include "absl/strings/str_cat.h"
#include "agent/base/command.h"

namespace upkeep::agent {

std::vector<std::string> SystemctlCommand(const std::string& verb, const std::string& unit) {
  return {"systemctl", verb, unit};
}

absl::StatusOr<std::string> Systemctl(const std::string& verb, const std::string& unit,
                                      absl::Duration timeout) {
  auto r = RunCommand(SystemctlCommand(verb, unit), timeout);
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    return absl::InternalError(
        absl::StrCat("systemctl ", verb, " ", unit, " exited ", r->exit_code, ":\n", r->output));
  }
  return absl::StrCat("systemctl ", verb, " ", unit, "\n", r->output);
}

}  // namespace upkeep::agent

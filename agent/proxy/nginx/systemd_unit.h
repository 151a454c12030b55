// nginx under systemd (proxy.nginx.service: nginx.service): start, reload and restart go
// through `systemctl`, so that systemd's idea of the unit (its main pid, its state, its
// restart policy) stays true instead of being bypassed by signals. The nginx driver calls
// these when the spec names a unit. Thread-safe (each call runs its own process).
#ifndef UPKEEP_AGENT_PROXY_NGINX_SYSTEMD_UNIT_H_
#define UPKEEP_AGENT_PROXY_NGINX_SYSTEMD_UNIT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace upkeep::agent {

// {"systemctl", VERB, UNIT}: the command for `verb` (start, reload, restart).
std::vector<std::string> SystemctlCommand(const std::string& verb, const std::string& unit);

// Runs it; the output on success, an error carrying systemctl's output otherwise.
absl::StatusOr<std::string> Systemctl(const std::string& verb, const std::string& unit,
                                      absl::Duration timeout);

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_PROXY_NGINX_SYSTEMD_UNIT_H_

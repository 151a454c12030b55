// Runtime: how the services of a stack are seen and handled on this host — Docker containers
// (agent/runtime/docker, over the Engine API socket) or local processes the agent supervises
// (agent/runtime/process). One runtime may serve several stacks (one Docker daemon per host).
//
// Who calls: the observer (Inspect from its probe threads and assembler; Watch when it applies
// a desired state) and the executor (Start/Stop/Restart/Logs from the action thread).
// Implementations are thread-safe; every call may block on I/O up to its timeout, so callers
// never hold a lock across one. Runtimes live in the RuntimeRegistry (registry.h).
#ifndef UPKEEP_AGENT_RUNTIME_RUNTIME_H_
#define UPKEEP_AGENT_RUNTIME_RUNTIME_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "agent/base/subscription.h"
#include "upkeep/v1/observation.pb.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::agent {

class Runtime {
 public:
  virtual ~Runtime() = default;

  // The runtime's view of one service: exists, running, exit code, OOM, restart count, runtime
  // health, started/finished at, pid or container id. A service that does not exist is
  // exists=false, not an error; failing to reach the runtime sets `error`. Never throws.
  virtual upkeep::v1::ServiceObservation Inspect(const upkeep::v1::ServiceSpec& spec) = 0;

  virtual absl::Status Start(const upkeep::v1::ServiceSpec& spec) = 0;
  virtual absl::Status Stop(const upkeep::v1::ServiceSpec& spec, absl::Duration timeout) = 0;
  virtual absl::Status Restart(const upkeep::v1::ServiceSpec& spec, absl::Duration timeout) = 0;

  // Creates a service that does not exist from its definition (e.g. its compose file) and
  // starts it. Returns what was run and its output, for the audit log. Default: unsupported.
  virtual absl::StatusOr<std::string> Create(const upkeep::v1::ServiceSpec& spec,
                                             absl::Duration timeout) {
    return absl::UnimplementedError(
        absl::StrCat("this runtime cannot create ", spec.name(), "; create it by hand"));
  }

  // The last `tail` lines the service wrote (stdout and stderr).
  virtual absl::StatusOr<std::string> Logs(const upkeep::v1::ServiceSpec& spec, int tail) = 0;

  // Adds a watch on `services` (one per stack: watches are independent of each other).
  // `on_change(service_name)` is called from a runtime-owned thread as soon as one of them
  // changes state (exit/die, start, health status), so the observer can re-inspect at once
  // instead of waiting for the next period. The callback must not block. The watch ends when
  // the returned handle is destroyed (see agent/base/subscription.h).
  [[nodiscard]] virtual std::unique_ptr<Subscription> Watch(
      std::vector<upkeep::v1::ServiceSpec> services,
      std::function<void(const std::string& service)> on_change) = 0;
};

// The subscribers of a runtime: each with the services it watches.
using ServiceWatchers = Subscribers<std::vector<upkeep::v1::ServiceSpec>, const std::string&>;

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_RUNTIME_RUNTIME_H_

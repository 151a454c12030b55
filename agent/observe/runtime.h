// Runtime: how the services of a stack are seen and handled on this host: Docker containers
// (DockerRuntime, over the Engine API socket) or local processes the agent supervises
// (ProcessRuntime). Called by the observer and the executor, from any thread; implementations
// are thread-safe.
#ifndef UPKEEP_AGENT_OBSERVE_RUNTIME_H_
#define UPKEEP_AGENT_OBSERVE_RUNTIME_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
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

  // The last `tail` lines the service wrote (stdout and stderr).
  virtual absl::StatusOr<std::string> Logs(const upkeep::v1::ServiceSpec& spec, int tail) = 0;

  // Replaces the watched set. `on_change(service_name)` is called from a runtime-owned thread
  // as soon as a watched service changes state (exit/die, start, health status), so the
  // observer can re-inspect at once instead of waiting for the next period. Must not block.
  virtual void Watch(std::vector<upkeep::v1::ServiceSpec> services,
                     std::function<void(const std::string& service)> on_change) = 0;
};

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_OBSERVE_RUNTIME_H_

// ProxyDriver: the reverse proxy in front of a stack's services — nginx today
// (agent/proxy/nginx), Caddy or HAProxy next. The decision engine only ever speaks of "the
// proxy"; a driver knows its product.
//
// Job: observe the proxy (master running, workers, the last config test, upstream errors from
// its log), carry out the proxy actions (test the config, start, reload, restart), and say at
// once when the master starts or stops or a new upstream error is logged. While the last config
// test fails, a driver re-tests by itself when the config changes (and on a slow timer), so a
// proxy kept down by a broken config is started as soon as someone fixes the file.
// Who calls: the observer (Observe from its assembler thread, Watch when it applies a desired
// state) and the executor (TestConfig/Start/Reload/Restart from the action thread). Drivers
// are shared (ProxyDrivers hands them out as shared_ptr) and thread-safe. Observe reads files
// but never waits on the proxy; actions block up to their timeout.
#ifndef UPKEEP_AGENT_PROXY_PROXY_DRIVER_H_
#define UPKEEP_AGENT_PROXY_PROXY_DRIVER_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/base/subscription.h"
#include "upkeep/v1/observation.pb.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::agent {

class ProxyDriver {
 public:
  enum class Change {
    kMaster,         // the master process started, stopped or was replaced
    kUpstreamError,  // a new upstream error appeared in the proxy's error log
    kConfigTested,   // the config was tested (an action, or the driver itself on a change)
  };

  virtual ~ProxyDriver() = default;

  // The action target that names this proxy ("nginx").
  virtual std::string target() const = 0;
  // A new spec for the same stack (the desired state changed); keeps what was observed.
  virtual void SetSpec(const upkeep::v1::ProxySpec& spec) = 0;

  // Master and workers, last config test, upstream errors since the last reload/restart, the
  // error log's last lines.
  virtual void Observe(upkeep::v1::ProxyObservation* out) = 0;

  // Runs the proxy's own config check (`nginx -t`) and keeps its output for Observe.
  virtual upkeep::v1::ConfigTest TestConfig() = 0;
  // Each returns an output excerpt, or an error whose message says why. None acts on a config
  // that fails its test.
  virtual absl::StatusOr<std::string> Start(absl::Duration timeout) = 0;
  virtual absl::StatusOr<std::string> Reload(absl::Duration timeout) = 0;
  virtual absl::StatusOr<std::string> Restart(absl::Duration timeout) = 0;

  // `on_change` is called from a driver-owned thread on each Change; must not block. Ends when
  // the handle is destroyed (agent/base/subscription.h).
  [[nodiscard]] virtual std::unique_ptr<Subscription> Watch(
      std::function<void(Change)> on_change) = 0;
};

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_PROXY_PROXY_DRIVER_H_

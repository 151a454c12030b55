// StackObserver: produces StackObservation for each desired stack on this host, by combining
// the runtime (Docker or process), concurrent probes (services directly, routes through nginx),
// listening ports and the nginx driver (master, config test, error-log tail). Used by both
// `upkeep-agent observe` (ObserveOnce) and the daemon (Start: periodic + event-driven).
// Thread-safe. Owns its threads; Stop() (or the destructor) joins them.
#ifndef UPKEEP_AGENT_OBSERVE_OBSERVER_H_
#define UPKEEP_AGENT_OBSERVE_OBSERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "upkeep/v1/observation.pb.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::agent {

class Runtime;

struct ObserverOptions {
  std::string host_id;
  std::string data_dir;       // process runtime state and logs live here
  std::string docker_socket;  // default /var/run/docker.sock (or $DOCKER_HOST unix://...)
};

class StackObserver {
 public:
  using Callback =
      std::function<void(const upkeep::v1::StackObservation& observation, bool event_driven)>;

  static absl::StatusOr<std::unique_ptr<StackObserver>> Create(const ObserverOptions& options);
  virtual ~StackObserver() = default;

  // Replaces the desired stacks (the host's slice). Services of stacks no longer named are
  // no longer probed or watched.
  virtual void SetDesired(const std::vector<upkeep::v1::Stack>& stacks) = 0;

  // Observes `stack` now, synchronously (probes run concurrently, bounded by their timeouts).
  virtual upkeep::v1::StackObservation ObserveOnce(const upkeep::v1::Stack& stack) = 0;

  // Starts periodic probing (each probe on its own period) and event-driven updates;
  // `callback` is called from observer threads whenever an observation changes (and at least
  // every `resync`).
  virtual void Start(Callback callback) = 0;
  virtual void Stop() = 0;

  // The runtime for a stack (shared with the executor so both see one process table).
  virtual Runtime* RuntimeFor(const upkeep::v1::Stack& stack) = 0;
  // The nginx driver for a stack with a proxy (shared with the executor); null without one.
  virtual class NginxDriver* ProxyFor(const upkeep::v1::Stack& stack) = 0;

  // Probes every target now and reports the next observations even when unchanged (used
  // after an action, so the controller can verify its effect on fresh evidence).
  virtual void RefreshNow() = 0;
};

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_OBSERVE_OBSERVER_H_

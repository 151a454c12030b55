// StackObserver: produces a StackObservation for each desired stack on this host, by combining
// the stack's runtime (from the RuntimeRegistry), concurrent probes (services directly, routes
// through the proxy), listening ports and the stack's proxy driver (from ProxyDrivers). Used by
// `upkeep-agent observe` (ObserveOnce) and by the daemon (Start: periodic + event-driven).
//
// Threads: one probe thread per target (a hung upstream only delays its own probes) and one
// assembler thread that applies desired states, builds observations and calls the callback.
// The observer's lock is never held across a runtime call (Docker HTTP), a probe or a file read.
// Thread-safe; SetDesired and RefreshNow never block (safe on a gRPC thread). Stop() (or the
// destructor) joins every thread and ends every runtime/proxy watch before returning. The
// registry and the drivers must outlive the observer.
#ifndef UPKEEP_AGENT_OBSERVE_OBSERVER_H_
#define UPKEEP_AGENT_OBSERVE_OBSERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/clock.h"
#include "upkeep/v1/observation.pb.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::agent {

class RuntimeRegistry;
class ProxyDrivers;

struct ObserverOptions {
  std::string host_id;
  std::string data_dir;  // the agent's own data, watched for a full disk (may be empty)
  // What probe scheduling reads: each target's period, the upstream-error repoke window and
  // the time a probe is stamped with. Tests pass a SimulatedClock; not owned.
  Clock* clock = Clock::Real();
};

class StackObserver {
 public:
  using Callback =
      std::function<void(const upkeep::v1::StackObservation& observation, bool event_driven)>;

  // `runtimes` and `proxies` are not owned and must outlive the observer.
  static absl::StatusOr<std::unique_ptr<StackObserver>> Create(const ObserverOptions& options,
                                                               RuntimeRegistry* runtimes,
                                                               ProxyDrivers* proxies);
  virtual ~StackObserver() = default;

  // Replaces the desired stacks (the host's slice). Returns at once: the assembler thread
  // applies it (stops the probes and watches of stacks no longer named, starts the new ones).
  virtual void SetDesired(const std::vector<upkeep::v1::Stack>& stacks) = 0;

  // Observes `stack` now, synchronously (probes run concurrently, bounded by their timeouts).
  virtual upkeep::v1::StackObservation ObserveOnce(const upkeep::v1::Stack& stack) = 0;

  // Starts periodic probing (each probe on its own period) and event-driven updates;
  // `callback` is called from the assembler thread whenever an observation changes (and at
  // least every resync period).
  virtual void Start(Callback callback) = 0;
  virtual void Stop() = 0;

  // Probes every target now and reports the next observations even when unchanged (used
  // after an action, so the controller can verify its effect on fresh evidence).
  virtual void RefreshNow() = 0;
};

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_OBSERVE_OBSERVER_H_

// Probes: raw results only (observing apart from judging). HTTP through libcurl (status,
// latency, expected codes, optional Host header, https without verification for local
// probes) and TCP connect; ProbeAll runs a batch concurrently on one curl multi handle, each
// probe bounded by its own timeout, so one hung upstream never delays the others.
// HealthTracker turns a run of results into a HealthState (thresholds, start period).
// Thread-safe (no shared state; HealthTracker is thread-compatible).
#ifndef UPKEEP_AGENT_OBSERVE_PROBER_H_
#define UPKEEP_AGENT_OBSERVE_PROBER_H_

#include <atomic>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "upkeep/v1/observation.pb.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::agent {

struct ProbeRequest {
  bool tcp = false;
  std::string url;          // http(s)://host:port/path, or tcp host:port as http://host:port/
  std::string host_header;  // optional
  absl::Duration timeout = absl::Seconds(1);
  std::vector<int> expected_status;  // empty: any 2xx/3xx
  // When set and true, the probe gives up at once (error "cancelled"); not owned.
  const std::atomic<bool>* cancel = nullptr;
};

ProbeRequest ServiceProbe(const upkeep::v1::ServiceSpec& spec);
ProbeRequest RouteProbe(const upkeep::v1::RouteSpec& spec);

std::vector<upkeep::v1::ProbeResult> ProbeAll(const std::vector<ProbeRequest>& requests);
upkeep::v1::ProbeResult Probe(const ProbeRequest& request);

class HealthTracker {
 public:
  explicit HealthTracker(const upkeep::v1::ProbeSpec& spec) : spec_(spec) {}
  // Feeds one result for the process/container started at `started_at` (a new start resets
  // the run; a result whose probe was sent before `started_at` is not counted); returns the
  // judged state.
  upkeep::v1::HealthState Update(const upkeep::v1::ProbeResult& result, absl::Time started_at,
                                 absl::Time now);
  upkeep::v1::HealthState state() const { return state_; }
  int consecutive_failures() const { return failures_; }
  // The start the current run belongs to (InfinitePast before the first result).
  absl::Time started_at() const { return started_at_; }

 private:
  upkeep::v1::ProbeSpec spec_;
  absl::Time started_at_ = absl::InfinitePast();
  upkeep::v1::HealthState state_ = upkeep::v1::HEALTH_STATE_UNSPECIFIED;
  int failures_ = 0;
  int successes_ = 0;
  absl::Time last_failure_at_ = absl::InfinitePast();  // when the last counted failure was sent
};

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_OBSERVE_PROBER_H_

// LocalDecider: the controller's closed loop run inside the agent, for this host only — the
// same Diagnose, Verify and policy (core/decision, core/policy) behind the same reconciler,
// dispatcher and event log (controller/reconcile, controller/dispatch), on a SQLite store in
// the agent's data directory. Used twice:
//   - autonomy (AgentClient): while the controller is unreachable, from the last desired state
//     it sent (with pause and dry-run as last known), seeded with the agent's own action
//     history from its journal; actions get ids "auto-<host>-..." and are marked autonomous;
//     afterwards Handback() collects what it did for the controller;
//   - standalone (agent/standalone): the whole system on one host, from manifests.
// Actions leave through `send_action` (to the agent's action worker); their results come back
// through OnActionResult. Observations come in through OnObservation.
//
// On-disk layout: DATA/local/upkeep.db (controller/store's SQLite schema). Recovery: the store
// is the history; stacks and pause flags are rewritten from the desired state at every Create.
// Thread-safe; callbacks only enqueue (the reconciler's rules).
#ifndef UPKEEP_AGENT_AUTONOMY_LOCAL_DECIDER_H_
#define UPKEEP_AGENT_AUTONOMY_LOCAL_DECIDER_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/metrics/metrics.h"
#include "controller/reconcile/reconciler.h"
#include "controller/store/store.h"
#include "core/clock.h"
#include "upkeep/v1/agent_service.pb.h"

namespace upkeep::agent {

struct LocalDeciderOptions {
  std::string data_dir;  // the store lives in DATA/local
  std::string host_id;
  Clock* clock = Clock::Real();
  bool autonomous = true;  // ids "auto-<host>-" and marked autonomous; else "local-<host>-"
  // Where the decided actions go. Must not block.
  std::function<void(const upkeep::v1::Action&)> send_action;
  absl::Duration resync = absl::Seconds(1);
};

struct HandbackLimits {
  int max_actions = 200;
  int max_events = 500;
  size_t max_output = 2048;  // bytes of each action's output handed back
};

class LocalDecider {
 public:
  // Writes `desired` (stacks naming this host, pause flags) into the store, adds the journal's
  // finished results it does not know yet (`seed`, oldest first) to the history, and builds the
  // reconciler. Nothing runs until Start().
  static absl::StatusOr<std::unique_ptr<LocalDecider>> Create(
      LocalDeciderOptions options, const upkeep::v1::DesiredState& desired,
      const std::vector<upkeep::v1::ActionResult>& seed);
  ~LocalDecider();

  // Marks the host connected and starts deciding.
  void Start();
  // Stops deciding: no new decision is made and no new action leaves after it returns.
  // Results may still be recorded (RecordResult) afterwards.
  void Stop();

  void OnObservation(const upkeep::v1::StackObservation& observation);
  // Records the result at once (blocks on the store; call it from the action worker).
  void OnActionResult(const upkeep::v1::ActionResult& result);
  // After Stop(): records a result directly (an action that was in flight when it stopped).
  void RecordResult(const upkeep::v1::ActionResult& result);

  // What was decided since `since`: its autonomous actions (those never started are recorded
  // as not run, so nobody runs them later) and its events, newest kept within `limits`.
  upkeep::v1::Handback Handback(absl::Time since, const HandbackLimits& limits = {});

  controller::Reconciler* reconciler() { return reconciler_.get(); }
  controller::Store* store() { return store_.get(); }

 private:
  class Hub;
  explicit LocalDecider(LocalDeciderOptions options);

  const LocalDeciderOptions options_;
  std::unique_ptr<controller::Store> store_;
  controller::Metrics metrics_;
  std::unique_ptr<Hub> hub_;
  std::unique_ptr<controller::Reconciler> reconciler_;
  absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_AUTONOMY_LOCAL_DECIDER_H_

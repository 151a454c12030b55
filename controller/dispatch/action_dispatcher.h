// ActionDispatcher: the only writer of the action history. It turns the actions a diagnosis
// allows into sent actions, and nothing else sends or records one.
//   - Sequencing: the actions of one diagnosis go one at a time per (stack, host); the next is
//     recorded, under the same lock, in the moment the previous one's success is recorded, so a
//     reconcile in between sees it in flight and cannot plan the same repair again.
//   - Write-ahead: an action is durable in the store before it is sent. When the store write
//     fails the action is NOT sent (and not kept): an alert event (StoreUnavailable) says so,
//     and the caller retries later.
//   - At most one automatic action in flight per key (answered, or older than
//     kInFlightTimeout); a fleet-wide token bucket limits actions per second. A key the empty
//     bucket turns away reserves the next free token and is told when it is due: waiters go
//     in turn, each retried once.
//   - Resend on reconnect: actions sent and never answered go again with the same id (the agent
//     executes an id at most once and replays its result).
//   - Memory stays bounded: per key, only the records policy looks at — those younger than the
//     key's window (restart budget, rate limit), per target the ones back to its latest fix
//     (backoff streaks; at most `keep_per_target`), proxy repairs of the escalation window, and
//     every one still in flight — without outputs and `why` (those live only in the store).
//     The id index holds exactly those records.
// History snapshots are immutable and shared (copy-on-write): reading one per reconcile costs
// a reference count, not a copy.
// Thread-safe; never holds its lock across the store or the network.
#ifndef UPKEEP_CONTROLLER_DISPATCH_ACTION_DISPATCHER_H_
#define UPKEEP_CONTROLLER_DISPATCH_ACTION_DISPATCHER_H_

#include <deque>
#include <list>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/api/agent_hub.h"
#include "controller/events/event_bus.h"
#include "controller/metrics/metrics.h"
#include "controller/queue/work_queue.h"
#include "controller/store/store.h"
#include "core/clock.h"
#include "upkeep/v1/action.pb.h"
#include "upkeep/v1/diagnosis.pb.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::controller {

struct DispatcherOptions {
  int max_actions_per_second = 50;  // fleet-wide
  absl::Duration action_deadline = absl::Seconds(60);
  size_t keep_per_target = 16;
  // Records younger than this are kept too, unless Dispatch names the key's own window (the
  // longest window its policy looks back over).
  absl::Duration keep_for = absl::Minutes(15);
  size_t max_per_key = 256;  // hard cap, whatever keep_for says
  // An agent deciding on its own (agent/autonomy) runs a dispatcher too: its ids start with
  // this prefix ("auto-<host>-") and its actions are marked autonomous.
  std::string id_prefix;
  bool autonomous = false;
};

using History = std::shared_ptr<const std::vector<upkeep::v1::ActionRecord>>;

class ActionDispatcher {
 public:
  ActionDispatcher(Store* store, Clock* clock, Metrics* metrics, EventBus* events,
                   DispatcherOptions options = {});

  // Set once, before agents can connect.
  void SetHub(AgentHub* hub) { hub_ = hub; }
  // Loads the recent history of `keys` from the store.
  absl::Status Load(const std::vector<WorkKey>& keys);

  // The key's history, oldest first (never null).
  History HistoryOf(const WorkKey& key) const;

  enum class Outcome {
    kSent,         // recorded and handed to the agent's stream
    kPending,      // recorded; the agent is not connected: sent when it reconnects
    kBusy,         // an action or a sequence of this key is still running
    kRateLimited,  // the fleet-wide token bucket is empty: retry after `retry_after`
    kStoreFailed,  // not durable, so not sent: retry later
    kNothing,
  };
  struct DispatchResult {
    Outcome outcome = Outcome::kNothing;
    absl::Duration retry_after = absl::ZeroDuration();
    upkeep::v1::ActionRecord record;  // the first action, when recorded
  };
  // Starts the sequence `allowed` (in order) for `key`. `why` is the decision path;
  // `keep_for`, when set, is how far back the key's policy looks (its history is pruned to it).
  // `rate_limited_since`: when the token bucket first turned this key's repair away (the caller
  // keeps it across retries); the action records the wait (Action.rate_limited_for).
  DispatchResult Dispatch(const WorkKey& key, const std::vector<upkeep::v1::PlannedAction>& allowed,
                          const std::string& why, absl::Time problem_since,
                          absl::Duration keep_for = absl::ZeroDuration(),
                          absl::Time rate_limited_since = absl::InfinitePast());
  // Records "would do" entries for dry-run actions, once per distinct set.
  void RecordWouldDo(const WorkKey& key, const std::vector<upkeep::v1::PlannedAction>& would_do);
  // A person's action: recorded (with who asked) and sent at once (no in-flight or bucket
  // limit).
  absl::StatusOr<upkeep::v1::ActionRecord> SendManual(const WorkKey& key,
                                                      const upkeep::v1::Action& action,
                                                      const std::string& requested_by = "");
  // Waits up to `wait` for the result of manual action `id`; the record as it stands then.
  upkeep::v1::ActionRecord AwaitManual(const upkeep::v1::ActionRecord& sent, absl::Duration wait);

  // An agent's result. Returns the key it belongs to (nullopt-like empty stack when unknown).
  WorkKey OnResult(const std::string& host, const upkeep::v1::ActionResult& result);
  // Actions an agent decided on its own while partitioned (Hello.handback): recorded as they
  // are, once per id (already known ids are skipped), so policy counts them. Returns how many
  // were new.
  int RecordAutonomous(const WorkKey& key, const std::vector<upkeep::v1::ActionRecord>& records);
  // Re-sends every unanswered action of `host`'s keys.
  void ResendPending(const std::string& host, const std::vector<std::string>& stacks);

  // Verifies earlier repairs of `key` on a fresh observation (core/decision/verify.h).
  void Verify(const WorkKey& key, const upkeep::v1::Stack& stack,
              const upkeep::v1::StackObservation& observed, const upkeep::v1::Diagnosis& diagnosis);
  // A person resumed: crash-looping `targets` get their restart budget afresh.
  void ResetBudgets(const WorkKey& key, const std::vector<std::string>& targets,
                    const std::string& reason, const std::string& requested_by = "");

  // Whether a sequence is still queued for `key`.
  bool SequenceRunning(const WorkKey& key) const;
  // Drops every key of `stack` (deleted).
  void Forget(const std::string& stack);
  // Drops records the policy no longer needs (by age and count).
  void Prune();

  // For tests and metrics.
  size_t IndexedActions() const;
  size_t ManualWaiters() const;

 private:
  struct KeyActions {
    History history = std::make_shared<const std::vector<upkeep::v1::ActionRecord>>();
    // Rest of a running sequence (a list: an idle key's costs nothing, where a deque allocates).
    std::list<upkeep::v1::PlannedAction> queued;
    std::string why;  // of the running sequence
    std::string last_would_do;
    absl::Duration keep_for = absl::ZeroDuration();  // zero: options_.keep_for
    // Turned away by the token bucket: when the token it reserved is due (InfinitePast: none).
    absl::Time token_at = absl::InfinitePast();
  };
  upkeep::v1::ActionRecord NewRecordLocked(const WorkKey& key, const upkeep::v1::Action& action,
                                           bool manual, const std::string& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AppendLocked(const WorkKey& key, const upkeep::v1::ActionRecord& record)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveLocked(const WorkKey& key, const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PruneLocked(const WorkKey& key, KeyActions* ka, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool InFlightLocked(const KeyActions& ka, absl::Time now) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Write-ahead, then send. On a store failure the record is removed again.
  Outcome Deliver(const WorkKey& key, const upkeep::v1::ActionRecord& record,
                  absl::Time problem_since);

  Store* const store_;
  Clock* const clock_;
  Metrics* const metrics_;
  EventBus* const events_;
  const DispatcherOptions options_;
  AgentHub* hub_ = nullptr;

  mutable absl::Mutex mu_;
  std::map<WorkKey, KeyActions> keys_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, WorkKey> index_ ABSL_GUARDED_BY(mu_);  // action id -> key
  // The fleet-wide bucket; negative while keys hold reservations (KeyActions::token_at).
  double tokens_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time tokens_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // Manual actions someone waits for: id -> result (empty until it arrives).
  std::map<std::string, upkeep::v1::ActionResult> manual_waiters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace upkeep::controller

#endif  // UPKEEP_CONTROLLER_DISPATCH_ACTION_DISPATCHER_H_

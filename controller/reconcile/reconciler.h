// Reconciler: the closed loop. Level-triggered per (stack, host) key: on every observation
// that changes something, on apply/delete, on action results, on pause/resume and on a
// periodic resync, it runs Diagnose (core/decision), passes the planned actions through policy,
// writes each action to the store BEFORE sending it (write-ahead), sends it through the
// AgentHub, and afterwards verifies its effect on fresh observations (FIXED / NOT_FIXED), with
// events and stack conditions along the way.
//
// Threads: the AgentListener callbacks (gRPC reactor threads) and the FleetService calls only
// update memory and enqueue keys; a small fixed pool of workers reconciles keys. The work queue
// holds a key once however often it is enqueued and never hands one key to two workers at
// once. No lock is held while talking to the store or the network. Thread-safe.
#ifndef UPKEEP_CONTROLLER_RECONCILE_RECONCILER_H_
#define UPKEEP_CONTROLLER_RECONCILE_RECONCILER_H_

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/api/agent_hub.h"
#include "controller/metrics/metrics.h"
#include "controller/store/store.h"
#include "core/clock.h"
#include "upkeep/v1/fleet_service.pb.h"

namespace upkeep::controller {

struct ReconcilerOptions {
  int workers = 2;
  absl::Duration resync = absl::Seconds(1);
  // Fleet-wide limit on actions sent per second (all stacks and hosts).
  int max_actions_per_second = 50;
  absl::Duration action_deadline = absl::Seconds(60);
};

class Reconciler : public AgentListener {
 public:
  // `store`, `clock` and `metrics` must outlive the reconciler. Loads stacks and the action
  // history from the store (pending actions are re-sent when their agent reconnects).
  static absl::StatusOr<std::unique_ptr<Reconciler>> Create(Store* store, Clock* clock,
                                                            Metrics* metrics,
                                                            ReconcilerOptions options = {});
  ~Reconciler() override;

  // The hub is set once, before agents can connect.
  void SetHub(AgentHub* hub);
  void Start();
  void Stop();

  // AgentListener
  void OnConnected(const std::string& host_id, const upkeep::v1::Hello& hello) override;
  void OnObservation(const std::string& host_id, upkeep::v1::ObservationReport report) override;
  void OnActionResult(const std::string& host_id, upkeep::v1::ActionResult result) override;
  void OnDisconnected(const std::string& host_id) override;

  // FleetService
  absl::StatusOr<upkeep::v1::ApplyResponse> Apply(const std::vector<upkeep::v1::Stack>& stacks,
                                                  bool dry_run);
  absl::Status Delete(const std::string& name);
  std::vector<upkeep::v1::Stack> Stacks();
  absl::StatusOr<upkeep::v1::Stack> GetStack(const std::string& name);
  std::vector<upkeep::v1::Host> Hosts();
  absl::StatusOr<std::vector<upkeep::v1::Diagnosis>> Plan(const std::string& stack,
                                                          const std::string& host);
  absl::Status SetPaused(const std::string& stack, const std::string& host, bool paused);
  absl::StatusOr<upkeep::v1::ActionRecord> RunAction(const upkeep::v1::RunActionRequest& request,
                                                     absl::Duration wait);

  // Events: stored, then delivered to watchers. A watcher is called on the reconciler's
  // threads and must not block.
  using EventWatcher = std::function<void(const upkeep::v1::Event&)>;
  int AddWatcher(EventWatcher watcher);
  void RemoveWatcher(int id);

 private:
  struct Key {
    std::string stack;
    std::string host;
    bool operator<(const Key& o) const {
      return std::tie(stack, host) < std::tie(o.stack, o.host);
    }
  };
  struct KeyState {
    upkeep::v1::StackObservation observation;
    bool has_observation = false;
    std::string last_semantic;
    std::vector<upkeep::v1::ActionRecord> history;  // oldest first, bounded
    std::deque<upkeep::v1::PlannedAction> queued;   // rest of a sequence being sent
    upkeep::v1::Diagnosis diagnosis;
    std::set<std::string> active_alerts;  // "code/target"
    std::string last_would_do;
    absl::Time problem_since = absl::InfinitePast();
    upkeep::v1::Verdict verdict = upkeep::v1::VERDICT_UNSPECIFIED;
  };
  struct HostState {
    bool connected = false;
    absl::Time last_heard = absl::InfinitePast();
    std::string version;
    std::vector<std::string> capabilities;
  };

  explicit Reconciler(Store* store, Clock* clock, Metrics* metrics, ReconcilerOptions options)
      : store_(store), clock_(clock), metrics_(metrics), options_(options) {}
  absl::Status Load();
  void Enqueue(const Key& key);
  void EnqueueStackLocked(const std::string& stack) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EnqueueHostLocked(const std::string& host) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Worker();
  void ResyncLoop();
  void Reconcile(const Key& key);
  void SendDesired(const std::string& host);
  std::vector<std::string> StacksOf(const std::string& host);
  // Records (write-ahead) and sends `planned`; false when the hub could not take it.
  bool SendAction(const Key& key, upkeep::v1::PlannedAction planned, bool manual,
                  const std::string& why, upkeep::v1::ActionRecord* record_out);
  void Emit(upkeep::v1::Event event);
  void EmitSimple(const std::string& type, const std::string& reason, const std::string& stack,
                  const std::string& host, const std::string& target, const std::string& message,
                  const std::string& action_id = "");
  void UpdateStatusLocked(const std::string& stack) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool PausedLocked(const Key& key) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  upkeep::v1::StackObservation ObservationLocked(const Key& key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Store* const store_;
  Clock* const clock_;
  Metrics* const metrics_;
  const ReconcilerOptions options_;
  AgentHub* hub_ = nullptr;

  mutable absl::Mutex mu_;
  std::map<std::string, upkeep::v1::Stack> stacks_ ABSL_GUARDED_BY(mu_);
  // host -> the stacks naming it (so per-host work is not a scan of the fleet).
  std::map<std::string, std::set<std::string>> host_stacks_ ABSL_GUARDED_BY(mu_);
  void IndexLocked(const std::string& stack, const upkeep::v1::Stack* old,
                   const upkeep::v1::Stack* now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::map<std::string, HostState> hosts_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> paused_hosts_ ABSL_GUARDED_BY(mu_);
  std::map<Key, KeyState> keys_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Key> action_keys_ ABSL_GUARDED_BY(mu_);  // action id -> key
  std::map<int, EventWatcher> watchers_ ABSL_GUARDED_BY(mu_);
  int next_watcher_ ABSL_GUARDED_BY(mu_) = 0;
  // Work queue.
  std::deque<Key> queue_ ABSL_GUARDED_BY(mu_);
  std::set<Key> queued_ ABSL_GUARDED_BY(mu_);
  std::set<Key> processing_ ABSL_GUARDED_BY(mu_);
  std::set<Key> requeue_ ABSL_GUARDED_BY(mu_);
  // Fleet-wide token bucket.
  double tokens_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time tokens_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
  // Manual actions waiting for their result.
  std::map<std::string, upkeep::v1::ActionResult> manual_results_ ABSL_GUARDED_BY(mu_);
};

}  // namespace upkeep::controller

#endif  // UPKEEP_CONTROLLER_RECONCILE_RECONCILER_H_

// Reconciler: the closed loop, kept thin. Level-triggered per (stack, host) key: on every
// observation that changes something, on apply/delete, on action results, on pause/resume, and
// on a slow full resync, a worker runs Diagnose (core/decision), verifies earlier repairs
// (core/decision/verify.h), updates the stack's conditions (core/decision/conditions.h) and
// hands the allowed actions to the ActionDispatcher (controller/dispatch), which records them
// (write-ahead) and sends them. Keys that wait on time (starting, backoff, verification) are
// re-added for exactly when they are due.
//
// Threads: AgentListener callbacks run on gRPC reactor threads and only append to the host's
// inbox and add the host's key to the WorkQueue (controller/queue). Store writes, events and
// dispatch run on the reconciler's workers. FleetService calls read memory and write the store.
// A key is never reconciled on two workers at once. No lock is held across the store or the
// network. Thread-safe.
#ifndef UPKEEP_CONTROLLER_RECONCILE_RECONCILER_H_
#define UPKEEP_CONTROLLER_RECONCILE_RECONCILER_H_

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/api/agent_hub.h"
#include "controller/dispatch/action_dispatcher.h"
#include "controller/events/event_bus.h"
#include "controller/metrics/metrics.h"
#include "controller/queue/work_queue.h"
#include "controller/reconcile/inbox.h"
#include "controller/reconcile/key_diagnoser.h"
#include "controller/reconcile/status_writer.h"
#include "controller/store/store.h"
#include "core/clock.h"
#include "upkeep/v1/fleet_service.pb.h"

namespace upkeep::controller {

struct ReconcilerOptions {
  // Worker threads. 0: none, and no timer thread either; a test runs the work by hand, one key
  // at a time, with Reconciler::RunOnce (and the timed chores with Maintain).
  int workers = 2;
  // Keys that wait on something without a known time are looked at again after this.
  absl::Duration resync = absl::Seconds(1);
  // Every key is reconciled at least this often (the level-triggered safety net).
  absl::Duration full_resync = absl::Seconds(30);
  // How often store retention and in-memory pruning run.
  absl::Duration maintenance = absl::Minutes(1);
  Retention retention;
  DispatcherOptions dispatch;
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

  // AgentListener: enqueue only.
  void OnConnected(const std::string& host_id, const upkeep::v1::Hello& hello) override;
  void OnObservation(const std::string& host_id, upkeep::v1::ObservationReport report) override;
  void OnActionResult(const std::string& host_id, upkeep::v1::ActionResult result) override;
  void OnDisconnected(const std::string& host_id) override;

  // FleetService
  // `who`: the caller's identity, recorded on the events and actions it causes.
  absl::StatusOr<upkeep::v1::ApplyResponse> Apply(const std::vector<upkeep::v1::Stack>& stacks,
                                                  bool dry_run, const std::string& who = "");
  absl::Status Delete(const std::string& name, const std::string& who = "");
  std::vector<upkeep::v1::Stack> Stacks();
  absl::StatusOr<upkeep::v1::Stack> GetStack(const std::string& name);
  std::vector<upkeep::v1::Host> Hosts();
  absl::StatusOr<std::vector<upkeep::v1::Diagnosis>> Plan(const std::string& stack,
                                                          const std::string& host);
  // `for_duration` > 0 (pause only): the stack or host resumes by itself after that long.
  absl::Status SetPaused(const std::string& stack, const std::string& host, bool paused,
                         const std::string& who = "",
                         absl::Duration for_duration = absl::ZeroDuration());
  absl::StatusOr<upkeep::v1::ActionRecord> RunAction(const upkeep::v1::RunActionRequest& request,
                                                     absl::Duration wait,
                                                     const std::string& who = "");

  // Events: stored, then delivered to subscribers (see EventBus).
  EventBus* events() { return &events_; }
  ActionDispatcher* dispatcher() { return &dispatcher_; }
  // Runs retention and pruning now (also run every `maintenance`).
  void Maintain();
  // The test seam of `workers = 0`: hands out the next ready key (as WorkQueue::TryGet: delayed
  // keys whose time has come first) and runs it on the calling thread, as a worker would (a
  // host's inbox, or a reconcile). The key run, or nullopt when none was ready.
  std::optional<WorkKey> RunOnce();
  // Writes every status changed since the last write now (they are otherwise written in
  // batches by a thread of their own, StatusWriter).
  absl::Status FlushStatus() { return status_writer_.Flush(); }
  // Sizes of the in-memory state, for tests and the churn bench.
  struct Sizes {
    size_t stacks = 0, hosts = 0, keys = 0, indexed_actions = 0, manual_waiters = 0;
  };
  Sizes MemorySizes();

 private:
  struct KeyState {
    std::shared_ptr<const upkeep::v1::StackObservation> observation;
    // A hash of the observation's SemanticKey (what matters of it, without times): a report
    // that repeats it is not reconciled again while the key is healthy. (The key itself is as
    // long as the observation.)
    size_t last_semantic = 0;
    // The key's latest diagnosis: the only copy. The stack's status in `stacks_` holds its
    // conditions only; readers (GetStack, Stacks, the status written to the store) get the
    // diagnoses filled in from here (WithDiagnosesLocked). Null until the first reconcile;
    // shared with KeyDiagnoser, which keeps it to compare.
    std::shared_ptr<const upkeep::v1::Diagnosis> diagnosis;
    std::set<std::string> active_alerts;  // "code/target"
    absl::Time problem_since = absl::InfinitePast();
    upkeep::v1::Verdict verdict = upkeep::v1::VERDICT_UNSPECIFIED;
    // When the fleet-wide token bucket first turned this key's repair away (InfinitePast: it
    // did not); recorded on the action when it goes (Action.rate_limited_for).
    absl::Time rate_limited_since = absl::InfinitePast();
  };
  struct HostState {
    bool connected = false;
    absl::Time last_heard = absl::InfinitePast();
    std::string version;
    std::vector<std::string> capabilities;
    // The newest hand-back event recorded (its time, then the agent's seq): a hello that
    // repeats a hand-back (the stream broke before the agent heard it was recorded) adds
    // only what is newer. Actions need no mark: their ids make them idempotent.
    absl::Time handed_back_at = absl::InfinitePast();
    int64_t handed_back_seq = 0;
  };

  Reconciler(Store* store, Clock* clock, Metrics* metrics, ReconcilerOptions options);
  absl::Status Load();
  void EnqueueStackLocked(const std::string& stack) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `low`: behind every key queued normally (WorkQueue::AddLow).
  void EnqueueHostLocked(const std::string& host, bool low = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Worker();
  void Run(const WorkKey& key);
  void TimerLoop();
  void DrainInbox(const std::string& host);
  void Connected(const std::string& host, const upkeep::v1::Hello& hello);
  void RecordHandback(const std::string& host, const upkeep::v1::Handback& handback);
  void Observed(const std::string& host, upkeep::v1::ObservationReport report);
  void Disconnected(const std::string& host);
  void Reconcile(const WorkKey& key);
  void SendDesired(const std::string& host);
  std::vector<std::string> StacksOf(const std::string& host);
  void IndexLocked(const std::string& stack, const upkeep::v1::Stack* old,
                   const upkeep::v1::Stack* now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool PausedLocked(const WorkKey& key) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // When a timed pause of the key's stack or host ends (InfiniteFuture: none); `expired` when
  // it already has.
  absl::Time PauseEndsLocked(const WorkKey& key, bool* expired) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  upkeep::v1::StackObservation ObservationLocked(const WorkKey& key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CountConnectedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `stack` as readers see it: its status with each host's latest diagnosis, in host order.
  upkeep::v1::Stack WithDiagnosesLocked(const upkeep::v1::Stack& stack) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FillDiagnosesLocked(const upkeep::v1::Stack& stack, upkeep::v1::StackStatus* status) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // StatusWriter's snapshot: the named stacks' status, diagnoses filled in.
  std::vector<std::pair<std::string, upkeep::v1::StackStatus>> StatusSnapshot(
      const std::vector<std::string>& names);

  Store* const store_;
  Clock* const clock_;
  Metrics* const metrics_;
  const ReconcilerOptions options_;
  AgentHub* hub_ = nullptr;
  EventBus events_;
  ActionDispatcher dispatcher_;
  WorkQueue queue_;
  Inboxes inboxes_;
  KeyDiagnoser diagnoser_;  // Reconcile's Diagnose: the fast path, per key

  mutable absl::Mutex mu_;
  std::map<std::string, upkeep::v1::Stack> stacks_ ABSL_GUARDED_BY(mu_);
  // host -> the stacks naming it (so per-host work is not a scan of the fleet).
  std::map<std::string, std::set<std::string>> host_stacks_ ABSL_GUARDED_BY(mu_);
  // Hosts a stack names, and hosts connected now; nothing else (any hello must not grow it).
  std::map<std::string, HostState> hosts_ ABSL_GUARDED_BY(mu_);
  size_t connected_hosts_ ABSL_GUARDED_BY(mu_) = 0;  // hosts_ with `connected` (a gauge)
  std::set<std::string> paused_hosts_ ABSL_GUARDED_BY(mu_);
  // Host pauses with --for: when each ends (also in the store, Store::HostPauses, so a restarted
  // controller resumes the host on time). Stack pauses keep theirs in status.paused_until.
  std::map<std::string, absl::Time> paused_host_until_ ABSL_GUARDED_BY(mu_);
  std::map<WorkKey, KeyState> keys_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
  // Last: its snapshot reads the members above, so it is destroyed (and flushed) first.
  StatusWriter status_writer_;
};

}  // namespace upkeep::controller

#endif  // UPKEEP_CONTROLLER_RECONCILE_RECONCILER_H_

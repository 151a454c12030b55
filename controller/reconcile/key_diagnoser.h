// KeyDiagnoser: the reconciler's Diagnose (core/decision) per (stack, host) key, on the fast
// path. Most observations change nothing the decision reads, so per key it keeps
//   - the key's action history indexed (policy::History over the dispatcher's copy-on-write
//     snapshot), indexed again only when the snapshot changes (an action, a result, a
//     verification), not per observation;
//   - the last full diagnosis (with the explanation: every path node's evidence).
// Each call diagnoses without the explanation into the calling worker's reused message, its
// path left in the worker's decision::Trace (decision::DiagnoseInto: nothing allocated). Only when
// that decision differs from the last full one (verdict, summary, findings, actions, the path's
// steps, targets and decisions) or the last full one is older than kExplanationMaxAge does it
// diagnose again in full. What the reconciler stores and people see (`upkeepctl explain`, status,
// notifications) is therefore always a full diagnosis, made when its decision was made or since
// (`at` says when, and its evidence is of that moment).
//
// Thread-safe. The reconciler's WorkQueue never hands one key to two workers at once; a key's
// entry is used without a lock on that promise, and the map of entries under mu_.
#ifndef UPKEEP_CONTROLLER_RECONCILE_KEY_DIAGNOSER_H_
#define UPKEEP_CONTROLLER_RECONCILE_KEY_DIAGNOSER_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/dispatch/action_dispatcher.h"
#include "controller/queue/work_queue.h"
#include "core/policy/policy.h"
#include "upkeep/v1/diagnosis.pb.h"
#include "upkeep/v1/observation.pb.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::controller {

class KeyDiagnoser {
 public:
  // The stored explanation is made again at least this often while its decision holds, so the
  // evidence `upkeepctl explain` shows (latencies, ages, pids) is never older than this.
  static constexpr absl::Duration kExplanationMaxAge = absl::Seconds(5);

  struct Result {
    // Full (with the explanation); the same object as the last call's when `remade` is false.
    std::shared_ptr<const upkeep::v1::Diagnosis> diagnosis;
    bool remade = false;
  };
  // Diagnose(stack, observed, history, now, {paused}) for `key`.
  Result Diagnose(const WorkKey& key, const upkeep::v1::Stack& stack,
                  const upkeep::v1::StackObservation& observed, const History& history,
                  absl::Time now, bool paused);

  // Drops what is kept for a key, or for every key of a stack.
  void Forget(const WorkKey& key);
  void ForgetStack(const std::string& stack);
  size_t size() const;

  // Calls that made the full diagnosis, and all calls (for tests and the bench).
  struct Counts {
    int64_t full = 0, calls = 0, indexed = 0;
  };
  Counts counts() const;

 private:
  struct Entry {
    History snapshot;  // what `indexed` points into
    std::optional<policy::History> indexed;
    std::shared_ptr<const upkeep::v1::Diagnosis> last;
    std::string decided;  // last's findings and actions, serialized (for the comparison)
  };
  std::shared_ptr<Entry> EntryOf(const WorkKey& key);

  mutable absl::Mutex mu_;
  std::map<WorkKey, std::shared_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> full_{0}, calls_{0}, indexed_{0};
};

}  // namespace upkeep::controller

#endif  // UPKEEP_CONTROLLER_RECONCILE_KEY_DIAGNOSER_H_

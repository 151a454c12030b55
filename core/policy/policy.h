// Policy: may this action run now? Pure functions of (policy spec, action history, now):
//   - pause:        a paused stack or host plans but never acts;
//   - restart budget: at most `max` starts/restarts of one service per `window` (counted after
//                   the latest RESET_BUDGET of that target, and after the latest fix that then
//                   held for `healthyReset`); exhausted = crash-looping;
//   - backoff:      after k consecutive actions of one class on a target that did not fix it,
//                   the next waits initial * 2^(k-1), capped at max;
//   - rate limit:   at most max_actions_per_minute actions per stack and host;
//   - dry-run:      record "would do", do nothing.
// Records with dry_run=true never count. Every field of the spec is set: the manifest loader
// fills the defaults (manifest::ApplyDefaults), and nothing here falls back. Thread-safe.
#ifndef UPKEEP_CORE_POLICY_POLICY_H_
#define UPKEEP_CORE_POLICY_POLICY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/name_hash.h"
#include "upkeep/v1/action.pb.h"
#include "upkeep/v1/diagnosis.pb.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::policy {

// The action history of one stack on one host (oldest first), with each target's records found
// once. The questions below are about one target; Diagnose asks them for every service, so
// scanning the whole history each time made a diagnosis O(services x history). Holds pointers
// into `records`, which must outlive it. Immutable once built; thread-safe to read.
class History {
 public:
  explicit History(absl::Span<const upkeep::v1::ActionRecord> records);

  // Every record, oldest first.
  absl::Span<const upkeep::v1::ActionRecord> all() const { return all_; }
  // The records whose action targets `target`, oldest first (empty when there are none).
  absl::Span<const upkeep::v1::ActionRecord* const> Of(absl::string_view target) const;

 private:
  struct Range {
    uint32_t begin = 0, size = 0;
  };
  absl::Span<const upkeep::v1::ActionRecord> all_;
  absl::flat_hash_map<absl::string_view, uint32_t, NameHash> targets_;  // into ranges_
  std::vector<Range> ranges_;                                           // of by_target_
  std::vector<const upkeep::v1::ActionRecord*> by_target_;  // grouped by target, in order
};

// Each question below takes the history as a History (built once, for many questions) or as
// the records themselves (indexed for that one question).

// Starts and restarts of `target` that count against its budget at `now`.
int RestartsInWindow(const upkeep::v1::PolicySpec& spec, const History& history,
                     absl::string_view target, absl::Time now);
int RestartsInWindow(const upkeep::v1::PolicySpec& spec,
                     absl::Span<const upkeep::v1::ActionRecord> history, absl::string_view target,
                     absl::Time now);

// The number of consecutive actions of `kind`'s class on `target` since the last one that was
// verified FIXED (newest first), and the time of the newest. With `held_for` > 0 a fix counts
// only once the target then stayed healthy that long (until the next action of the class, or
// `now`): a fix that flapped back continues the streak, so backoff grows across flaps.
struct Streak {
  int count = 0;
  absl::Time last = absl::InfinitePast();
  int fixed = 0;  // of them, repairs that worked for a while, then did not hold (flaps)
};
Streak FailedStreak(const History& history, absl::string_view target, upkeep::v1::ActionKind kind,
                    absl::Duration held_for = absl::ZeroDuration(),
                    absl::Time now = absl::InfiniteFuture());
Streak FailedStreak(absl::Span<const upkeep::v1::ActionRecord> history, absl::string_view target,
                    upkeep::v1::ActionKind kind, absl::Duration held_for = absl::ZeroDuration(),
                    absl::Time now = absl::InfiniteFuture());

// How often `target` flapped at `now`: its start/restart repairs that worked and then did not
// hold for `healthy_reset`, since the last fix that held. 0 below two (one relapse is not a
// flap). Diagnose raises one Flapping alert for the whole episode from this, not one per flap.
// `holding`: the target is healthy now, so its newest fix has not failed (yet) and is no relapse.
int FlapsInEpisode(const upkeep::v1::PolicySpec& spec, const History& history,
                   absl::string_view target, absl::Time now, bool holding = false);
int FlapsInEpisode(const upkeep::v1::PolicySpec& spec,
                   absl::Span<const upkeep::v1::ActionRecord> history, absl::string_view target,
                   absl::Time now, bool holding = false);

// Same class: service start/restart form one class (a restart after a failed start backs
// off); nginx reload/restart/start form another; logs and config tests are never limited.
bool SameClass(upkeep::v1::ActionKind a, upkeep::v1::ActionKind b);

// Judges `action` and returns it as a PlannedAction with policy, reason and not_before.
upkeep::v1::PlannedAction Judge(const upkeep::v1::PolicySpec& spec, const History& history,
                                upkeep::v1::Action action, absl::Time now, bool paused);
upkeep::v1::PlannedAction Judge(const upkeep::v1::PolicySpec& spec,
                                absl::Span<const upkeep::v1::ActionRecord> history,
                                upkeep::v1::Action action, absl::Time now, bool paused);

}  // namespace upkeep::policy

#endif  // UPKEEP_CORE_POLICY_POLICY_H_

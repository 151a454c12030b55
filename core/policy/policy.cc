#include "core/policy/policy.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/proto_time.h"

namespace upkeep::policy {
namespace {

namespace v1 = upkeep::v1;

bool IsServiceStart(v1::ActionKind k) {
  return k == v1::ACTION_KIND_START_SERVICE || k == v1::ACTION_KIND_RESTART_SERVICE ||
         k == v1::ACTION_KIND_CREATE_SERVICE;
}
bool IsProxyChange(v1::ActionKind k) {
  return k == v1::ACTION_KIND_RELOAD_PROXY || k == v1::ACTION_KIND_RESTART_PROXY ||
         k == v1::ACTION_KIND_START_PROXY;
}

}  // namespace

bool SameClass(v1::ActionKind a, v1::ActionKind b) {
  return (IsServiceStart(a) && IsServiceStart(b)) || (IsProxyChange(a) && IsProxyChange(b));
}

int RestartsInWindow(const v1::PolicySpec& spec, absl::Span<const v1::ActionRecord> history,
                     const std::string& target, absl::Time now) {
  const absl::Duration window = FromProto(spec.restart_budget().window());
  const absl::Duration healthy_reset = FromProto(spec.healthy_reset());
  int count = 0;
  // The start of the quiet stretch that follows the newer records: a repair verified FIXED
  // followed by `healthy_reset` without another start or restart resets the budget.
  absl::Time quiet_until = now;
  for (auto it = history.rbegin(); it != history.rend(); ++it) {
    if (it->action().target() != target) continue;
    if (it->action().kind() == v1::ACTION_KIND_RESET_BUDGET) break;
    if (it->dry_run() || !IsServiceStart(it->action().kind())) continue;
    if (healthy_reset > absl::ZeroDuration() && it->verification() == v1::VERIFICATION_FIXED &&
        it->result().has_finished_at() &&
        quiet_until - FromProto(it->result().finished_at()) >= healthy_reset) {
      break;  // healthy long enough after this fix: what came before no longer counts
    }
    quiet_until = FromProto(it->requested_at());
    if (FromProto(it->requested_at()) <= now - window) continue;
    ++count;
  }
  return count;
}

Streak FailedStreak(absl::Span<const v1::ActionRecord> history, const std::string& target,
                    v1::ActionKind kind, absl::Duration held_for, absl::Time now) {
  Streak s;
  absl::Time next = now;  // when the target needed the next action of the class
  for (auto it = history.rbegin(); it != history.rend(); ++it) {
    if (it->action().target() != target || it->dry_run()) continue;
    if (it->action().kind() == v1::ACTION_KIND_RESET_BUDGET) break;
    if (!SameClass(it->action().kind(), kind)) continue;
    if (it->verification() == v1::VERIFICATION_FIXED) {
      if (held_for <= absl::ZeroDuration()) break;
      const absl::Time fixed_at = it->result().has_finished_at()
                                      ? FromProto(it->result().finished_at())
                                      : FromProto(it->requested_at());
      if (next - fixed_at >= held_for) break;  // the fix held: the streak ends here
      ++s.fixed;
    }
    if (s.count == 0) s.last = FromProto(it->requested_at());
    ++s.count;
    next = FromProto(it->requested_at());
  }
  return s;
}

int FlapsInEpisode(const v1::PolicySpec& spec, absl::Span<const v1::ActionRecord> history,
                   const std::string& target, absl::Time now, bool holding) {
  // A relapse: a start/restart that worked and was needed again within healthyReset. "Worked"
  // is verified FIXED, or succeeded and was followed by another (a service that crashes as soon
  // as it serves is judged NOT_FIXED or not judged at all before the next one). While the target is
  // healthy the newest one has not failed yet: it is no relapse, at most the start of the next one.
  const absl::Duration held_for = FromProto(spec.healthy_reset());
  if (held_for <= absl::ZeroDuration()) return 0;
  int flaps = 0;
  bool newest = true;
  absl::Time next = now;  // when the target needed the next action of the class
  for (auto it = history.rbegin(); it != history.rend(); ++it) {
    if (it->action().target() != target || it->dry_run()) continue;
    if (it->action().kind() == v1::ACTION_KIND_RESET_BUDGET) break;
    if (!SameClass(it->action().kind(), v1::ACTION_KIND_RESTART_SERVICE)) continue;
    const bool fixed = it->verification() == v1::VERIFICATION_FIXED;
    const bool succeeded = it->result().outcome() == v1::ACTION_OUTCOME_SUCCEEDED;
    const bool worked = fixed || (succeeded && !newest);
    const bool relapsed = worked && !(newest && holding);
    newest = false;
    if (worked) {
      const absl::Time fixed_at = it->result().has_finished_at()
                                      ? FromProto(it->result().finished_at())
                                      : FromProto(it->requested_at());
      if (next - fixed_at >= held_for) break;  // the fix held: the episode starts after it
      if (relapsed) ++flaps;
    }
    next = FromProto(it->requested_at());
  }
  return flaps >= 2 ? flaps : 0;
}

v1::PlannedAction Judge(const v1::PolicySpec& spec, absl::Span<const v1::ActionRecord> history,
                        const v1::Action& action, absl::Time now, bool paused) {
  v1::PlannedAction out;
  *out.mutable_action() = action;
  auto verdict = [&](v1::PolicyVerdict v, std::string reason) {
    out.set_policy(v);
    out.set_policy_reason(std::move(reason));
    return out;
  };
  if (paused) return verdict(v1::POLICY_VERDICT_PAUSED, "paused: planned, not acted on");

  const v1::ActionKind kind = action.kind();
  if (IsServiceStart(kind)) {
    const int max = spec.restart_budget().max();
    const int used = RestartsInWindow(spec, history, action.target(), now);
    if (used >= max) {
      return verdict(
          v1::POLICY_VERDICT_BUDGET_EXHAUSTED,
          absl::StrCat("restart budget exhausted: ", used, " starts/restarts in the last ",
                       absl::FormatDuration(FromProto(spec.restart_budget().window())), " (max ",
                       max, "); crash-looping, not acting until healthy or resumed"));
    }
  }
  if (SameClass(kind, kind)) {
    const Streak streak =
        FailedStreak(history, action.target(), kind, FromProto(spec.healthy_reset()), now);
    if (streak.count > 0) {
      const absl::Duration initial = FromProto(spec.backoff().initial());
      const absl::Duration max = FromProto(spec.backoff().max());
      absl::Duration delay = initial;
      for (int i = 1; i < streak.count && delay < max; ++i) delay *= 2;
      delay = std::min(delay, max);
      const absl::Time not_before = streak.last + delay;
      if (now < not_before) {
        *out.mutable_not_before() = ToProto(not_before);
        return verdict(v1::POLICY_VERDICT_BACKOFF,
                       absl::StrCat("backoff: ", streak.count, " earlier attempt(s) did not fix ",
                                    action.target(), "; next not before +",
                                    absl::FormatDuration(not_before - now)));
      }
    }
  }
  const int per_minute = spec.max_actions_per_minute();
  int recent = 0;
  for (const auto& r : history) {
    if (!r.dry_run() && r.action().kind() != v1::ACTION_KIND_RESET_BUDGET &&
        FromProto(r.requested_at()) > now - absl::Minutes(1)) {
      ++recent;
    }
  }
  if (recent >= per_minute) {
    return verdict(
        v1::POLICY_VERDICT_RATE_LIMITED,
        absl::StrCat("rate limit: ", recent, " actions in the last minute (max ", per_minute, ")"));
  }
  if (spec.mode() == v1::POLICY_MODE_DRY_RUN) {
    return verdict(v1::POLICY_VERDICT_DRY_RUN, "dry-run: would do, nothing done");
  }
  return verdict(v1::POLICY_VERDICT_ALLOWED, "allowed");
}

}  // namespace upkeep::policy

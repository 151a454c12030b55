#include "core/policy/policy.h"

#include <algorithm>
#include <utility>

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

History::History(absl::Span<const v1::ActionRecord> records) : all_(records) {
  if (records.empty()) return;
  // Find each record's target once, count each target's records, give each target its slice
  // of by_target_, then fill the slices in order.
  std::vector<uint32_t> target_of(records.size());
  targets_.reserve(std::min<size_t>(records.size(), 16));
  ranges_.reserve(std::min<size_t>(records.size(), 16));
  for (size_t i = 0; i < records.size(); ++i) {
    const auto [it, added] = targets_.try_emplace(records[i].action().target(), ranges_.size());
    if (added) ranges_.emplace_back();
    target_of[i] = it->second;
    ++ranges_[it->second].size;
  }
  uint32_t begin = 0;
  for (Range& range : ranges_) {
    range.begin = begin;
    begin += range.size;
    range.size = 0;
  }
  by_target_.resize(records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    Range& range = ranges_[target_of[i]];
    by_target_[range.begin + range.size++] = &records[i];
  }
}

absl::Span<const v1::ActionRecord* const> History::Of(absl::string_view target) const {
  if (targets_.empty()) return {};  // no history: not even a hash to compute
  const auto it = targets_.find(target);
  if (it == targets_.end()) return {};
  const Range& range = ranges_[it->second];
  return absl::MakeConstSpan(by_target_).subspan(range.begin, range.size);
}

bool SameClass(v1::ActionKind a, v1::ActionKind b) {
  return (IsServiceStart(a) && IsServiceStart(b)) || (IsProxyChange(a) && IsProxyChange(b));
}

int RestartsInWindow(const v1::PolicySpec& spec, const History& history, absl::string_view target,
                     absl::Time now) {
  const absl::Time window_start = now - FromProto(spec.restart_budget().window());
  const absl::Duration healthy_reset = FromProto(spec.healthy_reset());
  int count = 0;
  // The start of the quiet stretch that follows the newer records: a repair verified FIXED
  // followed by `healthy_reset` without another start or restart resets the budget.
  absl::Time quiet_until = now;
  const auto records = history.Of(target);
  for (auto it = records.rbegin(); it != records.rend(); ++it) {
    const v1::ActionRecord& r = **it;
    if (r.action().kind() == v1::ACTION_KIND_RESET_BUDGET) break;
    if (r.dry_run() || !IsServiceStart(r.action().kind())) continue;
    if (healthy_reset > absl::ZeroDuration() && r.verification() == v1::VERIFICATION_FIXED &&
        r.result().has_finished_at() &&
        quiet_until - FromProto(r.result().finished_at()) >= healthy_reset) {
      break;  // healthy long enough after this fix: what came before no longer counts
    }
    quiet_until = FromProto(r.requested_at());
    if (quiet_until <= window_start) continue;
    ++count;
  }
  return count;
}

Streak FailedStreak(const History& history, absl::string_view target, v1::ActionKind kind,
                    absl::Duration held_for, absl::Time now) {
  Streak s;
  absl::Time next = now;  // when the target needed the next action of the class
  const auto records = history.Of(target);
  for (auto it = records.rbegin(); it != records.rend(); ++it) {
    const v1::ActionRecord& r = **it;
    if (r.dry_run()) continue;
    if (r.action().kind() == v1::ACTION_KIND_RESET_BUDGET) break;
    if (!SameClass(r.action().kind(), kind)) continue;
    if (r.verification() == v1::VERIFICATION_FIXED) {
      if (held_for <= absl::ZeroDuration()) break;
      const absl::Time fixed_at = r.result().has_finished_at() ? FromProto(r.result().finished_at())
                                                               : FromProto(r.requested_at());
      if (next - fixed_at >= held_for) break;  // the fix held: the streak ends here
      ++s.fixed;
    }
    next = FromProto(r.requested_at());
    if (s.count == 0) s.last = next;
    ++s.count;
  }
  return s;
}

int FlapsInEpisode(const v1::PolicySpec& spec, const History& history, absl::string_view target,
                   absl::Time now, bool holding) {
  // A relapse: a start/restart that worked and was needed again within healthyReset. "Worked"
  // is verified FIXED, or succeeded and was followed by another (a service that crashes as soon
  // as it serves is judged NOT_FIXED or not judged at all before the next one). While the target is
  // healthy the newest one has not failed yet: it is no relapse, at most the start of the next one.
  const absl::Duration held_for = FromProto(spec.healthy_reset());
  if (held_for <= absl::ZeroDuration()) return 0;
  int flaps = 0;
  bool newest = true;
  absl::Time next = now;  // when the target needed the next action of the class
  const auto records = history.Of(target);
  for (auto it = records.rbegin(); it != records.rend(); ++it) {
    const v1::ActionRecord& r = **it;
    if (r.dry_run()) continue;
    if (r.action().kind() == v1::ACTION_KIND_RESET_BUDGET) break;
    if (!SameClass(r.action().kind(), v1::ACTION_KIND_RESTART_SERVICE)) continue;
    const bool fixed = r.verification() == v1::VERIFICATION_FIXED;
    const bool succeeded = r.result().outcome() == v1::ACTION_OUTCOME_SUCCEEDED;
    const bool worked = fixed || (succeeded && !newest);
    const bool relapsed = worked && !(newest && holding);
    newest = false;
    if (worked) {
      const absl::Time fixed_at = r.result().has_finished_at() ? FromProto(r.result().finished_at())
                                                               : FromProto(r.requested_at());
      if (next - fixed_at >= held_for) break;  // the fix held: the episode starts after it
      if (relapsed) ++flaps;
    }
    next = FromProto(r.requested_at());
  }
  return flaps >= 2 ? flaps : 0;
}

int RestartsInWindow(const v1::PolicySpec& spec, absl::Span<const v1::ActionRecord> history,
                     absl::string_view target, absl::Time now) {
  return RestartsInWindow(spec, History(history), target, now);
}

Streak FailedStreak(absl::Span<const v1::ActionRecord> history, absl::string_view target,
                    v1::ActionKind kind, absl::Duration held_for, absl::Time now) {
  return FailedStreak(History(history), target, kind, held_for, now);
}

int FlapsInEpisode(const v1::PolicySpec& spec, absl::Span<const v1::ActionRecord> history,
                   absl::string_view target, absl::Time now, bool holding) {
  return FlapsInEpisode(spec, History(history), target, now, holding);
}

v1::PlannedAction Judge(const v1::PolicySpec& spec, const History& history, v1::Action action,
                        absl::Time now, bool paused) {
  v1::PlannedAction out;
  *out.mutable_action() = std::move(action);
  const v1::Action& planned = out.action();
  auto verdict = [&](v1::PolicyVerdict v, std::string reason) {
    out.set_policy(v);
    out.set_policy_reason(std::move(reason));
    return out;
  };
  if (paused) return verdict(v1::POLICY_VERDICT_PAUSED, "paused: planned, not acted on");

  const v1::ActionKind kind = planned.kind();
  if (IsServiceStart(kind)) {
    const int max = spec.restart_budget().max();
    const int used = RestartsInWindow(spec, history, planned.target(), now);
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
        FailedStreak(history, planned.target(), kind, FromProto(spec.healthy_reset()), now);
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
                                    planned.target(), "; next not before +",
                                    absl::FormatDuration(not_before - now)));
      }
    }
  }
  const int per_minute = spec.max_actions_per_minute();
  const absl::Time minute_ago = now - absl::Minutes(1);
  int recent = 0;
  for (const auto& r : history.all()) {
    if (!r.dry_run() && r.action().kind() != v1::ACTION_KIND_RESET_BUDGET &&
        FromProto(r.requested_at()) > minute_ago) {
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

v1::PlannedAction Judge(const v1::PolicySpec& spec, absl::Span<const v1::ActionRecord> history,
                        v1::Action action, absl::Time now, bool paused) {
  return Judge(spec, History(history), std::move(action), now, paused);
}

}  // namespace upkeep::policy

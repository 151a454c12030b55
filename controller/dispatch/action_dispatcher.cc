#include "controller/dispatch/action_dispatcher.h"

#include <algorithm>
#include <map>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/decision/render.h"
#include "core/decision/verify.h"
#include "core/log.h"
#include "core/proto_time.h"

namespace upkeep::controller {
namespace {

namespace v1 = upkeep::v1;

std::string NewActionIdWithPrefix(const std::string& prefix, absl::Time now) {
  static absl::Mutex mu(absl::kConstInit);
  static std::mt19937_64* rng = new std::mt19937_64(std::random_device{}());
  absl::MutexLock lock(&mu);
  return absl::StrFormat("%s%x-%08x", prefix, absl::ToUnixNanos(now), (*rng)() & 0xffffffffu);
}

// What memory keeps of a result: a succeeded action's output lives only in the store; a
// failed one keeps its last 1 KiB, which the decision engine reads (`nginx -t`'s error, "No
// space left on device": the disk is blamed rather than the config or the service).
void SlimResult(v1::ActionResult* r) {
  constexpr size_t kKeep = 1 << 10;
  if (r->outcome() == v1::ACTION_OUTCOME_SUCCEEDED) {
    r->clear_output();
  } else if (r->output().size() > kKeep) {
    r->set_output(r->output().substr(r->output().size() - kKeep));
  }
}

// What memory keeps of a record: outputs (but a failure's tail) and the decision path live
// only in the store.
v1::ActionRecord Slim(v1::ActionRecord r) {
  SlimResult(r.mutable_result());
  r.clear_why();
  return r;
}

bool Unanswered(const v1::ActionRecord& r) {
  return !r.dry_run() && r.result().id().empty() &&
         r.action().kind() != v1::ACTION_KIND_RESET_BUDGET;
}

}  // namespace

ActionDispatcher::ActionDispatcher(Store* store, Clock* clock, Metrics* metrics, EventBus* events,
                                   DispatcherOptions options)
    : store_(store), clock_(clock), metrics_(metrics), events_(events), options_(options) {}

absl::Status ActionDispatcher::Load(const std::vector<WorkKey>& keys) {
  const absl::Time now = clock_->Now();
  for (const auto& key : keys) {
    auto records = store_->ListActions(key.stack, key.host, static_cast<int>(options_.max_per_key));
    if (!records.ok()) return records.status();
    absl::MutexLock lock(&mu_);
    KeyActions& ka = keys_[key];
    auto h = std::make_shared<std::vector<v1::ActionRecord>>();
    for (auto& r : *records) {
      index_[r.action().id()] = key;
      h->push_back(Slim(std::move(r)));
    }
    ka.history = std::move(h);
    PruneLocked(key, &ka, now);
  }
  return absl::OkStatus();
}

History ActionDispatcher::HistoryOf(const WorkKey& key) const {
  absl::MutexLock lock(&mu_);
  auto it = keys_.find(key);
  if (it == keys_.end()) return std::make_shared<const std::vector<v1::ActionRecord>>();
  return it->second.history;
}

v1::ActionRecord ActionDispatcher::NewRecordLocked(const WorkKey& key, const v1::Action& action,
                                                   bool manual, const std::string& why) {
  const absl::Time now = clock_->Now();
  v1::ActionRecord record;
  *record.mutable_action() = action;
  record.mutable_action()->set_id(NewActionIdWithPrefix(options_.id_prefix, now));
  record.mutable_action()->set_stack(key.stack);
  record.mutable_action()->set_host(key.host);
  *record.mutable_action()->mutable_deadline() = ToProto(now + options_.action_deadline);
  *record.mutable_requested_at() = ToProto(now);
  *record.mutable_action()->mutable_requested_at() = ToProto(now);
  record.set_verification(decision::IsRepair(action.kind()) ? v1::VERIFICATION_PENDING
                                                            : v1::VERIFICATION_UNSPECIFIED);
  record.set_manual(manual);
  record.set_why(why);
  if (options_.autonomous) record.mutable_action()->set_autonomous(true);
  return record;
}

void ActionDispatcher::AppendLocked(const WorkKey& key, const v1::ActionRecord& record) {
  KeyActions& ka = keys_[key];
  auto h = std::make_shared<std::vector<v1::ActionRecord>>(*ka.history);
  h->push_back(Slim(record));
  ka.history = std::move(h);
  index_[record.action().id()] = key;
  PruneLocked(key, &ka, clock_->Now());
}

void ActionDispatcher::RemoveLocked(const WorkKey& key, const std::string& id) {
  KeyActions& ka = keys_[key];
  auto h = std::make_shared<std::vector<v1::ActionRecord>>(*ka.history);
  h->erase(std::remove_if(h->begin(), h->end(),
                          [&](const v1::ActionRecord& r) { return r.action().id() == id; }),
           h->end());
  ka.history = std::move(h);
  index_.erase(id);
}

void ActionDispatcher::PruneLocked(const WorkKey& key, KeyActions* ka, absl::Time now) {
  const auto& h = *ka->history;
  const absl::Duration keep_for =
      ka->keep_for > absl::ZeroDuration() ? ka->keep_for : options_.keep_for;
  // Newest first: per target, records count toward its streak until its latest fix.
  std::vector<bool> keep(h.size(), false);
  std::map<std::string, std::pair<size_t, bool>> per_target;  // target -> (kept, fix seen)
  size_t kept = 0;
  for (size_t i = h.size(); i-- > 0;) {
    const v1::ActionRecord& r = h[i];
    const absl::Time at = FromProto(r.requested_at());
    auto& [count, fixed] = per_target[r.action().target()];
    const bool streak = !fixed && count < options_.keep_per_target;
    const bool proxy = r.action().target() == decision::kProxyTarget;
    const bool recent = at > now - keep_for || (proxy && at > now - decision::kEscalationWindow);
    const bool flying = Unanswered(r) && at > now - decision::kInFlightTimeout;
    if ((streak || recent || flying) && kept < options_.max_per_key) {
      keep[i] = true;
      ++kept;
      ++count;
    }
    if (r.verification() == v1::VERIFICATION_FIXED) fixed = true;
  }
  if (kept == h.size()) return;
  auto out = std::make_shared<std::vector<v1::ActionRecord>>();
  out->reserve(kept);
  for (size_t i = 0; i < h.size(); ++i) {
    if (keep[i]) {
      out->push_back(h[i]);
    } else {
      index_.erase(h[i].action().id());
    }
  }
  ka->history = std::move(out);
}

bool ActionDispatcher::InFlightLocked(const KeyActions& ka, absl::Time now) const {
  for (auto it = ka.history->rbegin(); it != ka.history->rend(); ++it) {
    if (FromProto(it->requested_at()) < now - decision::kInFlightTimeout) break;
    if (Unanswered(*it) && !it->manual()) return true;
  }
  return false;
}

ActionDispatcher::Outcome ActionDispatcher::Deliver(const WorkKey& key,
                                                    const v1::ActionRecord& record,
                                                    absl::Time problem_since) {
  // Write-ahead: no durable record, no action.
  if (absl::Status st = store_->PutAction(record); !st.ok()) {
    {
      absl::MutexLock lock(&mu_);
      RemoveLocked(key, record.action().id());
      keys_[key].queued.clear();
      manual_waiters_.erase(record.action().id());
    }
    UPKEEP_LOG(error, "action_not_recorded",
               {{"id", record.action().id()},
                {"stack", key.stack},
                {"host", key.host},
                {"error", std::string(st.message())},
                {"note", "not sent: no durable record"}});
    if (metrics_ != nullptr) metrics_->Inc("upkeep_store_errors_total", {{"what", "action"}});
    events_->Publish(
        "Warning", "StoreUnavailable", key.stack, key.host, record.action().target(),
        absl::StrCat("StoreUnavailable: ", decision::ActionKindName(record.action().kind()), " ",
                     record.action().target(), " not sent: the store could not record it (",
                     st.message(), ")"));
    return Outcome::kStoreFailed;
  }
  if (metrics_ != nullptr && problem_since != absl::InfinitePast()) {
    metrics_->Observe("upkeep_detect_to_action_seconds",
                      absl::ToDoubleSeconds(clock_->Now() - problem_since));
  }
  if (metrics_ != nullptr && record.action().has_rate_limited_for()) {
    metrics_->Observe("upkeep_rate_limit_wait_seconds",
                      absl::ToDoubleSeconds(FromProto(record.action().rate_limited_for())));
  }
  UPKEEP_LOG(info, "action_sent",
             {{"id", record.action().id()},
              {"stack", key.stack},
              {"host", key.host},
              {"kind", v1::ActionKind_Name(record.action().kind())},
              {"target", record.action().target()},
              {"why", record.why()}});
  events_->Publish(
      "Normal", "ActionSent", key.stack, key.host, record.action().target(),
      absl::StrCat(decision::ActionKindName(record.action().kind()), " ", record.action().target(),
                   record.manual() ? " (by hand)" : "", ": ", record.action().reason()),
      record.action().id(), record.requested_by());
  v1::ControllerMessage msg;
  *msg.mutable_action() = record.action();
  if (hub_ == nullptr || !hub_->Send(key.host, std::move(msg))) {
    UPKEEP_LOG(warn, "action_not_delivered",
               {{"id", record.action().id()},
                {"host", key.host},
                {"note", "kept pending; re-sent when the agent reconnects"}});
    return Outcome::kPending;
  }
  return Outcome::kSent;
}

ActionDispatcher::DispatchResult ActionDispatcher::Dispatch(
    const WorkKey& key, const std::vector<v1::PlannedAction>& allowed, const std::string& why,
    absl::Time problem_since, absl::Duration keep_for, absl::Time rate_limited_since) {
  DispatchResult out;
  if (allowed.empty()) return out;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_->Now();
    KeyActions& ka = keys_[key];
    if (keep_for > absl::ZeroDuration()) ka.keep_for = keep_for;
    if (!ka.queued.empty() || InFlightLocked(ka, now)) {
      out.outcome = Outcome::kBusy;
      return out;
    }
    const double rate = std::max(1, options_.max_actions_per_second);
    if (tokens_at_ == absl::InfinitePast()) {
      tokens_ = rate;
    } else {
      tokens_ = std::min(rate, tokens_ + absl::ToDoubleSeconds(now - tokens_at_) * rate);
    }
    tokens_at_ = now;
    // A reservation older than this was not claimed (the repair was no longer wanted): void.
    const absl::Duration kReservationGrace = absl::Seconds(1);
    if (ka.token_at != absl::InfinitePast() && now < ka.token_at + kReservationGrace) {
      if (now < ka.token_at) {  // turned away before: its token is not due yet
        out.outcome = Outcome::kRateLimited;
        out.retry_after = ka.token_at - now;
        return out;
      }
      ka.token_at = absl::InfinitePast();  // its token was taken when it was turned away
    } else if (tokens_ < 1) {
      // The bucket is empty: the key reserves the next free token (the bucket goes negative),
      // so waiters go in turn and each comes back once, when its token is due, instead of all
      // of them retrying every few milliseconds (a reconcile each) in a storm.
      ka.token_at = now + absl::Seconds((1 - tokens_) / rate);
      tokens_ -= 1;
      out.outcome = Outcome::kRateLimited;
      out.retry_after = ka.token_at - now;
      return out;
    } else {
      ka.token_at = absl::InfinitePast();
      tokens_ -= 1;
    }
    out.record = NewRecordLocked(key, allowed.front().action(), false, why);
    if (rate_limited_since != absl::InfinitePast() && rate_limited_since < now) {
      *out.record.mutable_action()->mutable_rate_limited_for() = ToProto(now - rate_limited_since);
    }
    AppendLocked(key, out.record);
    ka.queued.assign(allowed.begin() + 1, allowed.end());
    ka.why = why;
  }
  out.outcome = Deliver(key, out.record, problem_since);
  return out;
}

void ActionDispatcher::RecordWouldDo(const WorkKey& key,
                                     const std::vector<v1::PlannedAction>& would_do) {
  std::string sig;
  for (const auto& a : would_do) {
    absl::StrAppend(&sig, a.action().kind(), ":", a.action().target(), ";");
  }
  std::vector<v1::ActionRecord> records;
  {
    absl::MutexLock lock(&mu_);
    auto it = keys_.find(key);
    if (it == keys_.end() && sig.empty()) return;  // nothing to record: no state for the key
    KeyActions& ka = it != keys_.end() ? it->second : keys_[key];
    if (sig == ka.last_would_do) return;
    ka.last_would_do = sig;
    const absl::Time now = clock_->Now();
    for (const auto& a : would_do) {
      v1::ActionRecord rec;
      *rec.mutable_action() = a.action();
      rec.mutable_action()->set_id(NewActionIdWithPrefix(options_.id_prefix, now));
      rec.mutable_action()->set_stack(key.stack);
      rec.mutable_action()->set_host(key.host);
      *rec.mutable_requested_at() = ToProto(now);
      rec.set_dry_run(true);
      AppendLocked(key, rec);
      records.push_back(std::move(rec));
    }
  }
  for (const auto& rec : records) {
    if (absl::Status st = store_->PutAction(rec); !st.ok()) {
      UPKEEP_LOG(error, "store_failed",
                 {{"what", "would_do"}, {"error", std::string(st.message())}});
    }
    events_->Publish("Normal", "WouldDo", key.stack, key.host, rec.action().target(),
                     absl::StrCat("dry-run: would ", decision::ActionKindName(rec.action().kind()),
                                  " ", rec.action().target(), " (", rec.action().reason(), ")"),
                     rec.action().id());
  }
}

absl::StatusOr<v1::ActionRecord> ActionDispatcher::SendManual(const WorkKey& key,
                                                              const v1::Action& action,
                                                              const std::string& requested_by) {
  v1::ActionRecord record;
  {
    absl::MutexLock lock(&mu_);
    record = NewRecordLocked(key, action, true, "manual");
    record.set_requested_by(requested_by);
    AppendLocked(key, record);
    manual_waiters_[record.action().id()];  // registered before the agent can answer
  }
  if (Deliver(key, record, absl::InfinitePast()) == Outcome::kStoreFailed) {
    return absl::UnavailableError("the store could not record the action; nothing was sent");
  }
  return record;
}

v1::ActionRecord ActionDispatcher::AwaitManual(const v1::ActionRecord& sent, absl::Duration wait) {
  const std::string id = sent.action().id();
  v1::ActionRecord record = sent;
  absl::MutexLock lock(&mu_);
  struct Arg {
    std::map<std::string, v1::ActionResult>* waiters;
    const std::string* id;
  } arg{&manual_waiters_, &id};
  mu_.AwaitWithTimeout(absl::Condition(
                           +[](Arg* a) {
                             auto it = a->waiters->find(*a->id);
                             return it == a->waiters->end() || !it->second.id().empty();
                           },
                           &arg),
                       wait);
  auto it = manual_waiters_.find(id);
  if (it != manual_waiters_.end()) {
    if (!it->second.id().empty()) *record.mutable_result() = it->second;
    manual_waiters_.erase(it);  // answered or timed out: nobody waits any more
  }
  return record;
}

WorkKey ActionDispatcher::OnResult(const std::string& host, const v1::ActionResult& result) {
  WorkKey key;
  v1::ActionRecord record;
  v1::ActionRecord next;
  bool has_next = false;
  {
    absl::MutexLock lock(&mu_);
    auto kit = index_.find(result.id());
    if (kit == index_.end() || kit->second.host != host) {
      UPKEEP_LOG(warn, "unknown_action_result", {{"id", result.id()}, {"host", host}});
      return WorkKey{};
    }
    key = kit->second;
    KeyActions& ka = keys_[key];
    auto h = std::make_shared<std::vector<v1::ActionRecord>>(*ka.history);
    v1::ActionRecord* r = nullptr;
    for (auto& x : *h) {
      if (x.action().id() == result.id()) r = &x;
    }
    if (r == nullptr || !r->result().id().empty()) return key;  // already answered
    *r->mutable_result() = result;
    if (result.outcome() != v1::ACTION_OUTCOME_SUCCEEDED) {
      r->set_verification(v1::VERIFICATION_NOT_FIXED);
    } else if (!decision::IsRepair(r->action().kind())) {
      r->set_verification(v1::VERIFICATION_UNSPECIFIED);
    }
    record = *r;
    SlimResult(r->mutable_result());
    ka.history = std::move(h);
    if (auto w = manual_waiters_.find(result.id()); w != manual_waiters_.end()) {
      w->second = result;
    }
    // The next of the sequence is recorded now, under this lock: a reconcile of the key
    // between here and its delivery sees it in flight.
    if (result.outcome() == v1::ACTION_OUTCOME_SUCCEEDED && !ka.queued.empty()) {
      next = NewRecordLocked(key, ka.queued.front().action(), false, ka.why);
      ka.queued.pop_front();
      AppendLocked(key, next);
      has_next = true;
    } else {
      ka.queued.clear();
    }
  }
  // The agent's answer carries the output: stored in full, beside the record's `why` (which
  // only the store keeps).
  {
    auto stored = store_->GetAction(record.action().id());
    v1::ActionRecord full = stored.ok() ? *stored : record;
    *full.mutable_result() = result;
    full.set_verification(record.verification());
    if (absl::Status st = store_->PutAction(full); !st.ok()) {
      UPKEEP_LOG(error, "store_failed", {{"what", "result"}, {"error", std::string(st.message())}});
    }
  }
  if (metrics_ != nullptr) {
    metrics_->Inc("upkeep_actions_total", {{"kind", v1::ActionKind_Name(result.kind())},
                                           {"outcome", v1::ActionOutcome_Name(result.outcome())}});
  }
  const bool ok = result.outcome() == v1::ACTION_OUTCOME_SUCCEEDED;
  events_->Publish(ok ? "Normal" : "Warning", ok ? "ActionSucceeded" : "ActionFailed", key.stack,
                   key.host, result.target(),
                   absl::StrCat(decision::ActionKindName(result.kind()), " ", result.target(), ": ",
                                result.message(), result.replayed() ? " (replayed)" : ""),
                   result.id());
  if (has_next) Deliver(key, next, absl::InfinitePast());
  return key;
}

int ActionDispatcher::RecordAutonomous(const WorkKey& key,
                                       const std::vector<v1::ActionRecord>& records) {
  int recorded = 0;
  for (const auto& r : records) {
    if (r.action().id().empty() || !r.action().autonomous()) continue;
    {
      absl::MutexLock lock(&mu_);
      if (index_.count(r.action().id())) continue;  // handed back before
    }
    if (store_->GetAction(r.action().id()).ok()) continue;
    if (absl::Status st = store_->PutAction(r); !st.ok()) {
      UPKEEP_LOG(error, "store_failed",
                 {{"what", "autonomous"}, {"error", std::string(st.message())}});
      continue;
    }
    absl::MutexLock lock(&mu_);
    AppendLocked(key, r);
    ++recorded;
  }
  return recorded;
}

void ActionDispatcher::ResendPending(const std::string& host,
                                     const std::vector<std::string>& stacks) {
  std::vector<v1::Action> resend;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& stack : stacks) {
      auto it = keys_.find(WorkKey{stack, host});
      if (it == keys_.end()) continue;
      for (const auto& r : *it->second.history) {
        if (Unanswered(r)) resend.push_back(r.action());
      }
    }
  }
  for (auto& a : resend) {
    v1::ControllerMessage msg;
    *msg.mutable_action() = a;
    UPKEEP_LOG(info, "action_resent", {{"id", a.id()}, {"host", host}});
    if (hub_ != nullptr) hub_->Send(host, std::move(msg));
  }
}

void ActionDispatcher::Verify(const WorkKey& key, const v1::Stack& stack,
                              const v1::StackObservation& observed,
                              const v1::Diagnosis& diagnosis) {
  std::vector<v1::ActionRecord> changed;
  {
    absl::MutexLock lock(&mu_);
    auto it = keys_.find(key);
    if (it == keys_.end() || it->second.history->empty()) return;
    auto h = std::make_shared<std::vector<v1::ActionRecord>>(*it->second.history);
    const std::vector<size_t> idx =
        decision::Verify(stack, observed, diagnosis, absl::MakeSpan(*h));
    if (idx.empty()) return;
    for (size_t i : idx) changed.push_back((*h)[i]);
    it->second.history = std::move(h);
  }
  // Memory holds no outputs or `why`: update the stored record's verification only.
  for (const auto& r : changed) {
    auto stored = store_->GetAction(r.action().id());
    v1::ActionRecord full = stored.ok() ? *stored : r;
    full.set_verification(r.verification());
    if (absl::Status st = store_->PutAction(full); !st.ok()) {
      UPKEEP_LOG(error, "store_failed", {{"what", "verify"}, {"error", std::string(st.message())}});
    }
  }
}

void ActionDispatcher::ResetBudgets(const WorkKey& key, const std::vector<std::string>& targets,
                                    const std::string& reason, const std::string& requested_by) {
  std::vector<v1::ActionRecord> records;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_->Now();
    for (const auto& target : targets) {
      v1::ActionRecord r;
      r.mutable_action()->set_id(NewActionIdWithPrefix(options_.id_prefix, now));
      r.mutable_action()->set_kind(v1::ACTION_KIND_RESET_BUDGET);
      r.mutable_action()->set_target(target);
      r.mutable_action()->set_stack(key.stack);
      r.mutable_action()->set_host(key.host);
      r.mutable_action()->set_reason(reason);
      *r.mutable_requested_at() = ToProto(now);
      r.set_manual(true);
      r.set_requested_by(requested_by);
      AppendLocked(key, r);
      records.push_back(std::move(r));
    }
  }
  for (const auto& r : records) {
    if (absl::Status st = store_->PutAction(r); !st.ok()) {
      UPKEEP_LOG(error, "store_failed", {{"what", "reset"}, {"error", std::string(st.message())}});
    }
  }
}

bool ActionDispatcher::SequenceRunning(const WorkKey& key) const {
  absl::MutexLock lock(&mu_);
  auto it = keys_.find(key);
  return it != keys_.end() && !it->second.queued.empty();
}

void ActionDispatcher::Forget(const std::string& stack) {
  absl::MutexLock lock(&mu_);
  for (auto it = keys_.begin(); it != keys_.end();) {
    if (it->first.stack != stack) {
      ++it;
      continue;
    }
    for (const auto& r : *it->second.history) index_.erase(r.action().id());
    it = keys_.erase(it);
  }
}

void ActionDispatcher::Prune() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  for (auto& [key, ka] : keys_) PruneLocked(key, &ka, now);
}

size_t ActionDispatcher::IndexedActions() const {
  absl::MutexLock lock(&mu_);
  return index_.size();
}

size_t ActionDispatcher::ManualWaiters() const {
  absl::MutexLock lock(&mu_);
  return manual_waiters_.size();
}

}  // namespace upkeep::controller

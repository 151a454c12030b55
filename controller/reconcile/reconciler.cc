#include "controller/reconcile/reconciler.h"

#include <algorithm>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/decision/diagnose.h"
#include "core/decision/render.h"
#include "core/log.h"
#include "core/observation.h"
#include "core/proto_time.h"

namespace upkeep::controller {
namespace {

namespace v1 = upkeep::v1;

constexpr size_t kHistoryKeep = 300;
constexpr int kFullResyncEvery = 30;

std::string NewActionId(absl::Time now) {
  static absl::Mutex mu(absl::kConstInit);
  static std::mt19937_64* rng = new std::mt19937_64(std::random_device{}());
  absl::MutexLock lock(&mu);
  return absl::StrFormat("%x-%08x", absl::ToUnixNanos(now), (*rng)() & 0xffffffffu);
}


bool IsRepair(v1::ActionKind k) {
  return k == v1::ACTION_KIND_START_SERVICE || k == v1::ACTION_KIND_RESTART_SERVICE ||
         k == v1::ACTION_KIND_START_PROXY || k == v1::ACTION_KIND_RELOAD_PROXY ||
         k == v1::ACTION_KIND_RESTART_PROXY;
}

// Whether the observation shows `target` working again.
bool TargetFixed(const std::string& target, const v1::StackObservation& o) {
  if (target == "nginx") {
    if (!o.proxy().master_running()) return false;
    for (const auto& r : o.proxy().routes()) {
      if (!r.probe().ok()) return false;
    }
    return true;
  }
  for (const auto& s : o.services()) {
    if (s.name() == target) return s.running() && s.health() == v1::HEALTH_STATE_HEALTHY;
  }
  return false;
}

std::string PathText(const v1::Diagnosis& d) {
  std::vector<std::string> parts;
  for (const auto& n : d.path()) {
    parts.push_back(absl::StrCat(n.step(), n.target().empty() ? "" : "[" + n.target() + "]", "=",
                                 n.decision()));
  }
  return absl::StrJoin(parts, "; ");
}

bool Names(const v1::Stack& stack, const std::string& host) {
  for (const auto& h : stack.spec().hosts()) {
    if (h == host) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Reconciler>> Reconciler::Create(Store* store, Clock* clock,
                                                               Metrics* metrics,
                                                               ReconcilerOptions options) {
  std::unique_ptr<Reconciler> r(new Reconciler(store, clock, metrics, options));
  if (absl::Status st = r->Load(); !st.ok()) return st;
  return r;
}

Reconciler::~Reconciler() { Stop(); }

absl::Status Reconciler::Load() {
  auto stacks = store_->ListStacks();
  if (!stacks.ok()) return stacks.status();
  auto paused = store_->PausedHosts();
  if (!paused.ok()) return paused.status();
  absl::MutexLock lock(&mu_);
  paused_hosts_ = *paused;
  for (auto& s : *stacks) {
    const std::string name = s.metadata().name();
    for (const auto& host : s.spec().hosts()) {
      auto history = store_->ListActions(name, host, kHistoryKeep);
      if (!history.ok()) return history.status();
      KeyState& ks = keys_[Key{name, host}];
      ks.history = std::move(*history);
      for (const auto& r : ks.history) action_keys_[r.action().id()] = Key{name, host};
    }
    IndexLocked(name, nullptr, &s);
    stacks_[name] = std::move(s);
  }
  return absl::OkStatus();
}

void Reconciler::IndexLocked(const std::string& stack, const v1::Stack* old, const v1::Stack* now) {
  if (old != nullptr) {
    for (const auto& h : old->spec().hosts()) host_stacks_[h].erase(stack);
  }
  if (now != nullptr) {
    for (const auto& h : now->spec().hosts()) host_stacks_[h].insert(stack);
  }
}

void Reconciler::SetHub(AgentHub* hub) { hub_ = hub; }

void Reconciler::Start() {
  absl::MutexLock lock(&mu_);
  stop_ = false;
  for (int i = 0; i < options_.workers; ++i) threads_.emplace_back([this] { Worker(); });
  threads_.emplace_back([this] { ResyncLoop(); });
  for (const auto& [name, s] : stacks_) EnqueueStackLocked(name);
}

void Reconciler::Stop() {
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    threads.swap(threads_);
  }
  for (auto& t : threads) t.join();
}

// ---- work queue ---------------------------------------------------------------------------

void Reconciler::Enqueue(const Key& key) {
  absl::MutexLock lock(&mu_);
  if (queued_.insert(key).second) queue_.push_back(key);
}

void Reconciler::EnqueueStackLocked(const std::string& stack) {
  auto it = stacks_.find(stack);
  if (it == stacks_.end()) return;
  for (const auto& host : it->second.spec().hosts()) {
    Key key{stack, host};
    if (queued_.insert(key).second) queue_.push_back(key);
  }
}

void Reconciler::EnqueueHostLocked(const std::string& host) {
  auto it = host_stacks_.find(host);
  if (it == host_stacks_.end()) return;
  for (const auto& name : it->second) {
    Key key{name, host};
    if (queued_.insert(key).second) queue_.push_back(key);
  }
}

void Reconciler::Worker() {
  while (true) {
    Key key;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](Reconciler* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r->mu_) {
            return r->stop_ || !r->queue_.empty();
          },
          this));
      if (stop_) return;
      key = queue_.front();
      queue_.pop_front();
      queued_.erase(key);
      if (processing_.count(key)) {
        requeue_.insert(key);  // one key is never reconciled on two threads at once
        continue;
      }
      processing_.insert(key);
    }
    Reconcile(key);
    absl::MutexLock lock(&mu_);
    processing_.erase(key);
    if (requeue_.erase(key) && queued_.insert(key).second) queue_.push_back(key);
  }
}

void Reconciler::ResyncLoop() {
  int round = 0;
  while (true) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.resync);
    if (stop_) return;
    const bool full = ++round % kFullResyncEvery == 0;
    for (const auto& [name, s] : stacks_) {
      for (const auto& host : s.spec().hosts()) {
        Key key{name, host};
        auto it = keys_.find(key);
        // Only keys that wait on time (starting, backoff, verification) need a resync every
        // round; the rest change on events and get the full resync.
        const bool settled = it != keys_.end() && it->second.queued.empty() &&
                             it->second.verdict != v1::VERDICT_WAITING &&
                             it->second.verdict != v1::VERDICT_REPAIRING &&
                             it->second.verdict != v1::VERDICT_UNSPECIFIED;
        if ((full || !settled) && queued_.insert(key).second) queue_.push_back(key);
      }
    }
  }
}

// ---- agents -------------------------------------------------------------------------------

void Reconciler::OnConnected(const std::string& host_id, const v1::Hello& hello) {
  std::vector<v1::Action> resend;
  {
    absl::MutexLock lock(&mu_);
    HostState& h = hosts_[host_id];
    h.connected = true;
    h.last_heard = clock_->Now();
    h.version = hello.version();
    h.capabilities.assign(hello.capabilities().begin(), hello.capabilities().end());
    // Actions sent but never answered: the same id again (the agent replays, never redoes).
    for (const auto& stack : host_stacks_[host_id]) {
      auto kit = keys_.find(Key{stack, host_id});
      if (kit == keys_.end()) continue;
      for (const auto& r : kit->second.history) {
        if (!r.dry_run() && r.result().id().empty() &&
            r.action().kind() != v1::ACTION_KIND_RESET_BUDGET) {
          resend.push_back(r.action());
        }
      }
    }
    int connected = 0;
    for (const auto& [id, hs] : hosts_) connected += hs.connected ? 1 : 0;
    metrics_->Set("upkeep_connected_agents", {}, connected);
  }
  SendDesired(host_id);
  for (auto& a : resend) {
    v1::ControllerMessage msg;
    *msg.mutable_action() = a;
    UPKEEP_LOG(info, "action_resent", {{"id", a.id()}, {"host", host_id}});
    hub_->Send(host_id, std::move(msg));
  }
  for (const auto& stack : StacksOf(host_id)) {
    EmitSimple("Normal", "AgentConnected", stack, host_id, "",
               absl::StrCat("agent ", host_id, " connected (version ", hello.version(), ")"));
  }
  absl::MutexLock lock(&mu_);
  EnqueueHostLocked(host_id);
}

// The stacks that name `host` ({""} when none: the event is then fleet-wide).
std::vector<std::string> Reconciler::StacksOf(const std::string& host) {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> out;
  if (auto it = host_stacks_.find(host); it != host_stacks_.end()) {
    out.assign(it->second.begin(), it->second.end());
  }
  if (out.empty()) out.push_back("");
  return out;
}

void Reconciler::OnDisconnected(const std::string& host_id) {
  {
    absl::MutexLock lock(&mu_);
    hosts_[host_id].connected = false;
    int connected = 0;
    for (const auto& [id, hs] : hosts_) connected += hs.connected ? 1 : 0;
    metrics_->Set("upkeep_connected_agents", {}, connected);
    EnqueueHostLocked(host_id);
  }
  for (const auto& stack : StacksOf(host_id)) {
    EmitSimple("Warning", "AgentDisconnected", stack, host_id, "",
               absl::StrCat("agent ", host_id, " disconnected"));
  }
}

void Reconciler::OnObservation(const std::string& host_id, v1::ObservationReport report) {
  absl::MutexLock lock(&mu_);
  hosts_[host_id].last_heard = clock_->Now();
  for (auto& o : *report.mutable_stacks()) {
    Key key{o.stack(), host_id};
    auto sit = stacks_.find(o.stack());
    if (sit == stacks_.end() || !Names(sit->second, host_id)) continue;
    metrics_->Inc("upkeep_observations_total");
    KeyState& ks = keys_[key];
    std::string sem = SemanticKey(o);
    bool interested = sem != ks.last_semantic || ks.verdict != v1::VERDICT_HEALTHY ||
                      !ks.queued.empty();
    ks.last_semantic = std::move(sem);
    ks.observation = std::move(o);
    ks.has_observation = true;
    if (interested && queued_.insert(key).second) queue_.push_back(key);
  }
}

void Reconciler::OnActionResult(const std::string& host_id, v1::ActionResult result) {
  v1::ActionRecord record;
  std::optional<v1::PlannedAction> next;
  Key key;
  {
    absl::MutexLock lock(&mu_);
    auto kit = action_keys_.find(result.id());
    if (kit == action_keys_.end() || kit->second.host != host_id) {
      UPKEEP_LOG(warn, "unknown_action_result", {{"id", result.id()}, {"host", host_id}});
      return;
    }
    key = kit->second;
    KeyState& ks = keys_[key];
    v1::ActionRecord* r = nullptr;
    for (auto& h : ks.history) {
      if (h.action().id() == result.id()) r = &h;
    }
    if (r == nullptr || !r->result().id().empty()) return;  // unknown or already answered
    *r->mutable_result() = result;
    if (result.outcome() != v1::ACTION_OUTCOME_SUCCEEDED) {
      r->set_verification(v1::VERIFICATION_NOT_FIXED);
    } else if (!IsRepair(r->action().kind())) {
      r->set_verification(v1::VERIFICATION_UNSPECIFIED);
    }
    record = *r;
    if (result.outcome() == v1::ACTION_OUTCOME_SUCCEEDED && !ks.queued.empty()) {
      next = ks.queued.front();
      ks.queued.pop_front();
    } else {
      ks.queued.clear();
    }
    if (record.manual()) manual_results_[result.id()] = result;
    metrics_->Inc("upkeep_actions_total",
                  {{"kind", v1::ActionKind_Name(result.kind())},
                   {"outcome", v1::ActionOutcome_Name(result.outcome())}});
  }
  if (absl::Status st = store_->PutAction(record); !st.ok()) {
    UPKEEP_LOG(error, "store_failed", {{"error", std::string(st.message())}});
  }
  const bool ok = result.outcome() == v1::ACTION_OUTCOME_SUCCEEDED;
  EmitSimple(ok ? "Normal" : "Warning", ok ? "ActionSucceeded" : "ActionFailed", key.stack,
             key.host, result.target(),
             absl::StrCat(decision::ActionKindName(result.kind()), " ", result.target(), ": ",
                          result.message(), result.replayed() ? " (replayed)" : ""),
             result.id());
  if (next.has_value()) SendAction(key, *next, false, record.action().reason(), nullptr);
  Enqueue(key);
}

void Reconciler::SendDesired(const std::string& host) {
  v1::ControllerMessage msg;
  {
    absl::MutexLock lock(&mu_);
    int64_t revision = 0;
    for (const auto& name : host_stacks_[host]) {
      const v1::Stack& s = stacks_[name];
      v1::Stack* out = msg.mutable_desired()->add_stacks();
      *out = s;
      out->clear_status();
      revision = std::max(revision, s.metadata().revision());
    }
    msg.mutable_desired()->set_revision(revision);
  }
  if (hub_ != nullptr) hub_->Send(host, std::move(msg));
}

// ---- the loop -----------------------------------------------------------------------------

v1::StackObservation Reconciler::ObservationLocked(const Key& key) {
  v1::StackObservation o;
  auto it = keys_.find(key);
  if (it != keys_.end() && it->second.has_observation) o = it->second.observation;
  o.set_stack(key.stack);
  o.mutable_host()->set_host_id(key.host);
  auto h = hosts_.find(key.host);
  o.mutable_host()->set_agent_connected(h != hosts_.end() && h->second.connected);
  if (h != hosts_.end() && h->second.last_heard != absl::InfinitePast()) {
    *o.mutable_host()->mutable_last_heard() = ToProto(h->second.last_heard);
  }
  return o;
}

bool Reconciler::PausedLocked(const Key& key) const {
  auto it = stacks_.find(key.stack);
  return paused_hosts_.count(key.host) > 0 ||
         (it != stacks_.end() && it->second.status().paused());
}

void Reconciler::Reconcile(const Key& key) {
  v1::Stack stack;
  v1::StackObservation observed;
  std::vector<v1::ActionRecord> history;
  bool paused = false;
  bool sequence_running = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = stacks_.find(key.stack);
    if (it == stacks_.end() || !Names(it->second, key.host)) {
      keys_.erase(key);
      return;
    }
    stack = it->second;
    observed = ObservationLocked(key);
    KeyState& ks = keys_[key];
    history = ks.history;
    paused = PausedLocked(key);
    sequence_running = !ks.queued.empty();
  }
  const absl::Time now = clock_->Now();
  decision::DiagnoseOptions options;
  options.paused = paused;
  v1::Diagnosis d = decision::Diagnose(stack, observed, history, now, options);
  metrics_->Inc("upkeep_reconciles_total");

  std::vector<v1::ActionRecord> changed_records;
  std::vector<v1::Event> events;
  std::optional<v1::PlannedAction> to_send;
  std::vector<v1::PlannedAction> would_do;
  v1::StackStatus status_to_save;
  bool save_status = false;
  auto event = [&](const std::string& type, const std::string& reason, const std::string& target,
                   const std::string& message) {
    v1::Event e;
    e.set_type(type);
    e.set_reason(reason);
    e.set_stack(key.stack);
    e.set_host(key.host);
    e.set_target(target);
    e.set_message(message);
    *e.mutable_at() = ToProto(now);
    events.push_back(std::move(e));
  };
  {
    absl::MutexLock lock(&mu_);
    if (!stacks_.count(key.stack)) return;
    KeyState& ks = keys_[key];
    // Verify earlier repairs on evidence gathered after they finished.
    const absl::Time observed_at = FromProto(observed.observed_at());
    for (auto& r : ks.history) {
      if (r.dry_run() || r.result().id().empty() || !IsRepair(r.action().kind())) continue;
      if (r.verification() != v1::VERIFICATION_PENDING) continue;
      if (observed_at < FromProto(r.result().finished_at())) continue;
      if (TargetFixed(r.action().target(), observed)) {
        r.set_verification(v1::VERIFICATION_FIXED);
        changed_records.push_back(r);
      } else {
        for (const auto& a : d.actions()) {
          if (a.action().target() == r.action().target() &&
              a.policy() != v1::POLICY_VERDICT_PAUSED) {
            r.set_verification(v1::VERIFICATION_NOT_FIXED);
            changed_records.push_back(r);
            break;
          }
        }
      }
    }
    // A target that works again ends its escalation: its newest repair counts as the fix, so
    // backoff and the reload -> restart -> alert ladder start afresh next time.
    std::set<std::string> marked;
    for (auto it = ks.history.rbegin(); it != ks.history.rend(); ++it) {
      auto& r = *it;
      if (r.dry_run() || r.result().id().empty() || !IsRepair(r.action().kind())) continue;
      if (!marked.insert(r.action().target()).second) continue;
      if (r.verification() == v1::VERIFICATION_FIXED) continue;
      if (observed_at < FromProto(r.result().finished_at())) continue;
      if (TargetFixed(r.action().target(), observed)) {
        r.set_verification(v1::VERIFICATION_FIXED);
        changed_records.push_back(r);
      }
    }
    // Detection and healing of the key as a whole.
    const v1::Verdict prev = ks.verdict;
    if (d.verdict() != v1::VERDICT_HEALTHY && d.verdict() != v1::VERDICT_UNKNOWN &&
        ks.problem_since == absl::InfinitePast()) {
      ks.problem_since = observed.has_observed_at() ? std::min(now, observed_at) : now;
      event("Warning", "Detected", "", d.summary());
    }
    if (d.verdict() == v1::VERDICT_HEALTHY && ks.problem_since != absl::InfinitePast()) {
      const absl::Duration took = now - ks.problem_since;
      if (prev != v1::VERDICT_UNSPECIFIED) {
        event("Normal", "Healed", "",
              absl::StrCat("healthy again ", absl::ToInt64Milliseconds(took),
                           " ms after the problem was detected"));
        metrics_->Observe("upkeep_action_to_healed_seconds", absl::ToDoubleSeconds(took));
      }
      ks.problem_since = absl::InfinitePast();
    }
    // Alerts once per (code, target) until they clear.
    std::set<std::string> current;
    for (const auto& f : d.findings()) {
      if (f.severity() != v1::SEVERITY_ALERT) continue;
      const std::string id = absl::StrCat(f.code(), "/", f.target());
      current.insert(id);
      if (ks.active_alerts.count(id)) continue;
      event("Warning", f.code() == "CrashLooping" ? "CrashLooping" : "Alert", f.target(),
            absl::StrCat(f.code(), ": ", f.message()));
    }
    ks.active_alerts = std::move(current);
    // Actions: one at a time per key; the rest of a sequence waits for the result.
    if (!sequence_running && ks.queued.empty()) {
      std::vector<v1::PlannedAction> allowed;
      for (const auto& a : d.actions()) {
        if (a.policy() == v1::POLICY_VERDICT_ALLOWED) allowed.push_back(a);
        if (a.policy() == v1::POLICY_VERDICT_DRY_RUN) would_do.push_back(a);
      }
      if (!allowed.empty()) {
        // The fleet-wide token bucket.
        const double rate = std::max(1, options_.max_actions_per_second);
        if (tokens_at_ == absl::InfinitePast()) tokens_ = rate;
        tokens_ = std::min(rate, tokens_ + absl::ToDoubleSeconds(now - tokens_at_) * rate);
        tokens_at_ = now;
        if (tokens_ >= 1) {
          tokens_ -= 1;
          to_send = allowed.front();
          ks.queued.assign(allowed.begin() + 1, allowed.end());
        }
      }
      std::string sig;
      for (const auto& a : would_do) {
        absl::StrAppend(&sig, a.action().kind(), ":", a.action().target(), ";");
      }
      if (sig == ks.last_would_do) would_do.clear();
      ks.last_would_do = sig;
    }
    ks.diagnosis = d;
    ks.verdict = d.verdict();
    // Status of the stack across its hosts.
    const std::string before = [&] {
      v1::StackStatus s = stacks_[key.stack].status();
      s.clear_diagnoses();
      s.clear_last_reconcile();
      for (auto& c : *s.mutable_conditions()) c.clear_last_transition_time();
      return s.SerializeAsString();
    }();
    UpdateStatusLocked(key.stack);
    v1::StackStatus after = stacks_[key.stack].status();
    *after.mutable_last_reconcile() = ToProto(now);
    *stacks_[key.stack].mutable_status()->mutable_last_reconcile() = ToProto(now);
    v1::StackStatus cmp = after;
    cmp.clear_diagnoses();
    cmp.clear_last_reconcile();
    for (auto& c : *cmp.mutable_conditions()) c.clear_last_transition_time();
    if (cmp.SerializeAsString() != before) {
      save_status = true;
      status_to_save = after;
    }
  }
  for (const auto& r : changed_records) store_->PutAction(r).IgnoreError();
  if (save_status) store_->SaveStatus(key.stack, status_to_save).IgnoreError();
  for (auto& e : events) Emit(std::move(e));
  for (const auto& a : would_do) {
    v1::ActionRecord rec;
    *rec.mutable_action() = a.action();
    rec.mutable_action()->set_id(NewActionId(now));
    *rec.mutable_requested_at() = ToProto(now);
    rec.set_dry_run(true);
    {
      absl::MutexLock lock(&mu_);
      KeyState& ks = keys_[key];
      ks.history.push_back(rec);
      if (ks.history.size() > kHistoryKeep) ks.history.erase(ks.history.begin());
    }
    store_->PutAction(rec).IgnoreError();
    EmitSimple("Normal", "WouldDo", key.stack, key.host, a.action().target(),
               absl::StrCat("dry-run: would ", decision::ActionKindName(a.action().kind()), " ",
                            a.action().target(), " (", a.action().reason(), ")"),
               rec.action().id());
  }
  if (to_send.has_value()) SendAction(key, *to_send, false, PathText(d), nullptr);
}

bool Reconciler::SendAction(const Key& key, v1::PlannedAction planned, bool manual,
                            const std::string& why, v1::ActionRecord* record_out) {
  const absl::Time now = clock_->Now();
  v1::ActionRecord record;
  *record.mutable_action() = planned.action();
  record.mutable_action()->set_id(NewActionId(now));
  record.mutable_action()->set_stack(key.stack);
  record.mutable_action()->set_host(key.host);
  *record.mutable_action()->mutable_deadline() = ToProto(now + options_.action_deadline);
  *record.mutable_requested_at() = ToProto(now);
  record.set_verification(IsRepair(planned.action().kind()) ? v1::VERIFICATION_PENDING
                                                            : v1::VERIFICATION_UNSPECIFIED);
  record.set_manual(manual);
  record.set_why(why);
  absl::Time problem_since = absl::InfinitePast();
  {
    absl::MutexLock lock(&mu_);
    KeyState& ks = keys_[key];
    ks.history.push_back(record);
    if (ks.history.size() > kHistoryKeep) ks.history.erase(ks.history.begin());
    action_keys_[record.action().id()] = key;
    problem_since = ks.problem_since;
  }
  // Write-ahead: the record is durable before the agent can act on it.
  if (absl::Status st = store_->PutAction(record); !st.ok()) {
    UPKEEP_LOG(error, "store_failed", {{"error", std::string(st.message())}});
  }
  if (record_out != nullptr) *record_out = record;
  if (problem_since != absl::InfinitePast()) {
    metrics_->Observe("upkeep_detect_to_action_seconds",
                      absl::ToDoubleSeconds(now - problem_since));
  }
  UPKEEP_LOG(info, "action_sent",
             {{"id", record.action().id()}, {"stack", key.stack}, {"host", key.host},
              {"kind", v1::ActionKind_Name(record.action().kind())},
              {"target", record.action().target()}, {"why", why}});
  EmitSimple("Normal", "ActionSent", key.stack, key.host, record.action().target(),
             absl::StrCat(decision::ActionKindName(record.action().kind()), " ",
                          record.action().target(), manual ? " (by hand)" : "", ": ",
                          record.action().reason()),
             record.action().id());
  v1::ControllerMessage msg;
  *msg.mutable_action() = record.action();
  if (hub_ == nullptr || !hub_->Send(key.host, std::move(msg))) {
    UPKEEP_LOG(warn, "action_not_delivered",
               {{"id", record.action().id()}, {"host", key.host},
                {"note", "kept pending; re-sent when the agent reconnects"}});
    return false;
  }
  return true;
}

void Reconciler::UpdateStatusLocked(const std::string& stack) {
  v1::Stack& s = stacks_[stack];
  v1::StackStatus* status = s.mutable_status();
  status->clear_diagnoses();
  bool all_healthy = true, any_degraded = false, any_progress = false, any_unknown = false;
  std::string degraded_msg, progress_msg, unknown_msg;
  for (const auto& host : s.spec().hosts()) {
    auto it = keys_.find(Key{stack, host});
    if (it == keys_.end() || it->second.verdict == v1::VERDICT_UNSPECIFIED) {
      all_healthy = false;
      any_unknown = true;
      unknown_msg = absl::StrCat("no diagnosis yet for host ", host);
      continue;
    }
    *status->add_diagnoses() = it->second.diagnosis;
    switch (it->second.verdict) {
      case v1::VERDICT_HEALTHY: break;
      case v1::VERDICT_DEGRADED:
        all_healthy = false;
        any_degraded = true;
        degraded_msg = it->second.diagnosis.summary();
        break;
      case v1::VERDICT_UNKNOWN:
        all_healthy = false;
        any_unknown = true;
        unknown_msg = it->second.diagnosis.summary();
        break;
      default:
        all_healthy = false;
        any_progress = true;
        progress_msg = it->second.diagnosis.summary();
    }
  }
  const absl::Time now = clock_->Now();
  auto set = [&](const std::string& type, const std::string& value, const std::string& reason,
                 const std::string& message) {
    v1::Condition* c = nullptr;
    for (auto& existing : *status->mutable_conditions()) {
      if (existing.type() == type) c = &existing;
    }
    if (c == nullptr) {
      c = status->add_conditions();
      c->set_type(type);
    }
    if (c->status() != value) *c->mutable_last_transition_time() = ToProto(now);
    c->set_status(value);
    c->set_reason(reason);
    c->set_message(message);
  };
  if (all_healthy) {
    set("Ready", "True", "AllHealthy", "every service healthy and every route answers");
  } else if (any_unknown && !any_degraded && !any_progress) {
    set("Ready", "Unknown", "NoObservation", unknown_msg);
  } else {
    set("Ready", "False", any_degraded ? "NeedsAttention" : "Repairing",
        any_degraded ? degraded_msg : progress_msg);
  }
  set("Degraded", any_degraded ? "True" : "False", any_degraded ? "Alert" : "NoAlert",
      degraded_msg);
  set("Progressing", any_progress ? "True" : "False", any_progress ? "Repairing" : "Idle",
      progress_msg);
  status->set_observed_generation(s.metadata().generation());
}

// ---- events -------------------------------------------------------------------------------

void Reconciler::Emit(v1::Event event) {
  if (!event.has_at()) *event.mutable_at() = ToProto(clock_->Now());
  if (absl::Status st = store_->AppendEvent(&event); !st.ok()) {
    UPKEEP_LOG(error, "store_failed", {{"error", std::string(st.message())}});
  }
  UPKEEP_LOG(info, "event", {{"type", event.type()}, {"reason", event.reason()},
                             {"stack", event.stack()}, {"host", event.host()},
                             {"message", event.message()}});
  std::vector<EventWatcher> watchers;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, w] : watchers_) watchers.push_back(w);
  }
  for (const auto& w : watchers) w(event);
}

void Reconciler::EmitSimple(const std::string& type, const std::string& reason,
                            const std::string& stack, const std::string& host,
                            const std::string& target, const std::string& message,
                            const std::string& action_id) {
  v1::Event e;
  e.set_type(type);
  e.set_reason(reason);
  e.set_stack(stack);
  e.set_host(host);
  e.set_target(target);
  e.set_message(message);
  e.set_action_id(action_id);
  Emit(std::move(e));
}

int Reconciler::AddWatcher(EventWatcher watcher) {
  absl::MutexLock lock(&mu_);
  watchers_[++next_watcher_] = std::move(watcher);
  return next_watcher_;
}

void Reconciler::RemoveWatcher(int id) {
  absl::MutexLock lock(&mu_);
  watchers_.erase(id);
}

// ---- FleetService -------------------------------------------------------------------------

absl::StatusOr<v1::ApplyResponse> Reconciler::Apply(const std::vector<v1::Stack>& stacks,
                                                    bool dry_run) {
  v1::ApplyResponse resp;
  if (dry_run) {
    absl::MutexLock lock(&mu_);
    for (const auto& s : stacks) {
      v1::AppliedStack* a = resp.add_applied();
      a->set_name(s.metadata().name());
      auto it = stacks_.find(s.metadata().name());
      a->set_change(it == stacks_.end() ? "created (dry run)" : "configured (dry run)");
    }
    return resp;
  }
  auto applied = store_->ApplyStacks(stacks);
  if (!applied.ok()) return applied.status();
  std::set<std::string> hosts;
  {
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < stacks.size(); ++i) {
      const v1::AppliedStack& a = (*applied)[i];
      *resp.add_applied() = a;
      if (a.change() == "unchanged") continue;
      v1::Stack s = stacks[i];
      s.mutable_metadata()->set_generation(a.generation());
      s.mutable_metadata()->set_revision(a.revision());
      auto old = stacks_.find(a.name());
      if (old != stacks_.end()) {
        *s.mutable_status() = old->second.status();
        for (const auto& h : old->second.spec().hosts()) hosts.insert(h);
      }
      for (const auto& h : s.spec().hosts()) hosts.insert(h);
      IndexLocked(a.name(), old != stacks_.end() ? &old->second : nullptr, &s);
      stacks_[a.name()] = std::move(s);
      EnqueueStackLocked(a.name());
    }
  }
  for (const auto& a : *applied) {
    if (a.change() == "unchanged") continue;
    EmitSimple("Normal", "Applied", a.name(), "", "",
               absl::StrCat("stack ", a.name(), " ", a.change(), " (generation ", a.generation(),
                            ", revision ", a.revision(), ")"));
  }
  for (const auto& h : hosts) SendDesired(h);
  return resp;
}

absl::Status Reconciler::Delete(const std::string& name) {
  if (absl::Status st = store_->DeleteStack(name); !st.ok()) return st;
  std::vector<std::string> hosts;
  {
    absl::MutexLock lock(&mu_);
    auto it = stacks_.find(name);
    if (it != stacks_.end()) {
      hosts.assign(it->second.spec().hosts().begin(), it->second.spec().hosts().end());
      IndexLocked(name, &it->second, nullptr);
    }
    stacks_.erase(name);
    for (auto k = keys_.begin(); k != keys_.end();) {
      k = k->first.stack == name ? keys_.erase(k) : std::next(k);
    }
  }
  EmitSimple("Normal", "Deleted", name, "", "", absl::StrCat("stack ", name, " deleted"));
  for (const auto& h : hosts) SendDesired(h);
  return absl::OkStatus();
}

std::vector<v1::Stack> Reconciler::Stacks() {
  absl::MutexLock lock(&mu_);
  std::vector<v1::Stack> out;
  for (const auto& [name, s] : stacks_) out.push_back(s);
  return out;
}

absl::StatusOr<v1::Stack> Reconciler::GetStack(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = stacks_.find(name);
  if (it == stacks_.end()) return absl::NotFoundError(absl::StrCat("no stack named ", name));
  return it->second;
}

std::vector<v1::Host> Reconciler::Hosts() {
  absl::MutexLock lock(&mu_);
  std::map<std::string, v1::Host> out;
  for (const auto& [name, s] : stacks_) {
    for (const auto& h : s.spec().hosts()) {
      out[h].set_host_id(h);
      out[h].add_stacks(name);
    }
  }
  for (const auto& [id, hs] : hosts_) {
    v1::Host& h = out[id];
    h.set_host_id(id);
    h.set_connected(hs.connected);
    if (hs.last_heard != absl::InfinitePast()) *h.mutable_last_heard() = ToProto(hs.last_heard);
    h.set_version(hs.version);
    for (const auto& c : hs.capabilities) h.add_capabilities(c);
  }
  std::vector<v1::Host> list;
  for (auto& [id, h] : out) {
    h.set_paused(paused_hosts_.count(id) > 0);
    list.push_back(std::move(h));
  }
  return list;
}

absl::StatusOr<std::vector<v1::Diagnosis>> Reconciler::Plan(const std::string& stack,
                                                            const std::string& host) {
  std::vector<std::tuple<v1::Stack, v1::StackObservation, std::vector<v1::ActionRecord>, bool>>
      inputs;
  {
    absl::MutexLock lock(&mu_);
    auto it = stacks_.find(stack);
    if (it == stacks_.end()) return absl::NotFoundError(absl::StrCat("no stack named ", stack));
    for (const auto& h : it->second.spec().hosts()) {
      if (!host.empty() && h != host) continue;
      Key key{stack, h};
      auto ks = keys_.find(key);
      inputs.emplace_back(it->second, ObservationLocked(key),
                          ks == keys_.end() ? std::vector<v1::ActionRecord>() : ks->second.history,
                          PausedLocked(key));
    }
  }
  std::vector<v1::Diagnosis> out;
  for (const auto& [s, o, history, paused] : inputs) {
    decision::DiagnoseOptions options;
    options.paused = paused;
    out.push_back(decision::Diagnose(s, o, history, clock_->Now(), options));
  }
  return out;
}

absl::Status Reconciler::SetPaused(const std::string& stack, const std::string& host,
                                   bool paused) {
  if (!stack.empty()) {
    if (absl::Status st = store_->SetStackPaused(stack, paused); !st.ok()) return st;
  } else if (!host.empty()) {
    if (absl::Status st = store_->SetHostPaused(host, paused); !st.ok()) return st;
  } else {
    return absl::InvalidArgumentError("name a stack or a host");
  }
  std::vector<v1::ActionRecord> resets;
  {
    absl::MutexLock lock(&mu_);
    if (!stack.empty()) {
      auto it = stacks_.find(stack);
      if (it != stacks_.end()) it->second.mutable_status()->set_paused(paused);
    } else if (paused) {
      paused_hosts_.insert(host);
    } else {
      paused_hosts_.erase(host);
    }
    // Resuming also resumes crash-looping targets: their restart budget starts afresh.
    if (!paused) {
      const absl::Time now = clock_->Now();
      for (auto& [key, ks] : keys_) {
        if ((!stack.empty() && key.stack != stack) || (!host.empty() && key.host != host)) {
          continue;
        }
        for (const auto& alert : ks.active_alerts) {
          if (alert.rfind("CrashLooping/", 0) != 0) continue;
          v1::ActionRecord r;
          r.mutable_action()->set_id(NewActionId(now));
          r.mutable_action()->set_kind(v1::ACTION_KIND_RESET_BUDGET);
          r.mutable_action()->set_target(alert.substr(13));
          r.mutable_action()->set_stack(key.stack);
          r.mutable_action()->set_host(key.host);
          r.mutable_action()->set_reason("resumed by a person");
          *r.mutable_requested_at() = ToProto(now);
          r.set_manual(true);
          ks.history.push_back(r);
          resets.push_back(r);
        }
      }
    }
    if (!stack.empty()) EnqueueStackLocked(stack);
    if (!host.empty()) EnqueueHostLocked(host);
  }
  for (const auto& r : resets) store_->PutAction(r).IgnoreError();
  EmitSimple("Normal", paused ? "Paused" : "Resumed", stack, host, "",
             absl::StrCat(stack.empty() ? "host " + host : "stack " + stack,
                          paused ? " paused: upkeep plans but does not act"
                                 : " resumed: upkeep acts again"));
  return absl::OkStatus();
}

absl::StatusOr<v1::ActionRecord> Reconciler::RunAction(const v1::RunActionRequest& request,
                                                       absl::Duration wait) {
  Key key;
  v1::PlannedAction planned;
  {
    absl::MutexLock lock(&mu_);
    auto it = stacks_.find(request.stack());
    if (it == stacks_.end()) {
      return absl::NotFoundError(absl::StrCat("no stack named ", request.stack()));
    }
    const v1::Stack& s = it->second;
    std::string host = request.host();
    if (host.empty()) {
      if (s.spec().hosts_size() != 1) {
        return absl::InvalidArgumentError("the stack runs on several hosts: name one with --host");
      }
      host = s.spec().hosts(0);
    }
    if (!Names(s, host)) {
      return absl::InvalidArgumentError(absl::StrCat("stack ", s.metadata().name(),
                                                     " does not run on host ", host));
    }
    bool known = request.target() == "nginx" && s.spec().has_proxy();
    for (const auto& svc : s.spec().services()) known |= svc.name() == request.target();
    if (!known) {
      return absl::InvalidArgumentError(absl::StrCat("stack ", s.metadata().name(),
                                                     " names no target \"", request.target(),
                                                     "\""));
    }
    if (request.kind() == v1::ACTION_KIND_UNSPECIFIED ||
        request.kind() == v1::ACTION_KIND_RESET_BUDGET) {
      return absl::InvalidArgumentError("unknown action kind");
    }
    key = Key{s.metadata().name(), host};
    planned.mutable_action()->set_kind(request.kind());
    planned.mutable_action()->set_target(request.target());
    *planned.mutable_action()->mutable_params() = request.params();
    planned.mutable_action()->set_reason("run by hand (upkeepctl run)");
    planned.set_policy(v1::POLICY_VERDICT_ALLOWED);
  }
  v1::ActionRecord record;
  SendAction(key, planned, true, "manual", &record);
  absl::MutexLock lock(&mu_);
  const std::string id = record.action().id();
  struct Arg {
    std::map<std::string, v1::ActionResult>* results;
    const std::string* id;
  } arg{&manual_results_, &id};
  mu_.AwaitWithTimeout(absl::Condition(+[](Arg* a) { return a->results->count(*a->id) > 0; },
                                       &arg),
                       wait);
  auto it = manual_results_.find(id);
  if (it != manual_results_.end()) {
    *record.mutable_result() = it->second;
    manual_results_.erase(it);
  }
  return record;
}

}  // namespace upkeep::controller

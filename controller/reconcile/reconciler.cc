#include "controller/reconcile/reconciler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/decision/conditions.h"
#include "core/decision/diagnose.h"
#include "core/decision/render.h"
#include "core/decision/verify.h"
#include "core/log.h"
#include "core/observation.h"
#include "core/proto_time.h"

namespace upkeep::controller {
namespace {

// Who resumes a stack or host whose `pause --for` ran out.
constexpr char kPauseExpired[] = "upkeep (pause expired)";

namespace v1 = upkeep::v1;

std::string PathText(const v1::Diagnosis& d) {
  std::vector<std::string> parts;
  for (const auto& n : d.path()) {
    parts.push_back(absl::StrCat(n.step(), n.target().empty() ? "" : "[" + n.target() + "]", "=",
                                 n.decision()));
  }
  return absl::StrJoin(parts, "; ");
}

// Drops status.diagnoses and frees them (clear_diagnoses() keeps the cleared messages
// allocated for reuse: 10,000 stacks kept ~17 MB so).
void ReleaseDiagnoses(v1::StackStatus* status) {
  google::protobuf::RepeatedPtrField<v1::Diagnosis>().Swap(status->mutable_diagnoses());
}

bool Names(const v1::Stack& stack, const std::string& host) {
  for (const auto& h : stack.spec().hosts()) {
    if (h == host) return true;
  }
  return false;
}

}  // namespace

Reconciler::Reconciler(Store* store, Clock* clock, Metrics* metrics, ReconcilerOptions options)
    : store_(store),
      clock_(clock),
      metrics_(metrics),
      options_(options),
      events_(store, clock, metrics),
      dispatcher_(store, clock, metrics, &events_, options.dispatch),
      queue_(clock),
      status_writer_(
          store, [this](const std::vector<std::string>& names) { return StatusSnapshot(names); },
          metrics) {}

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
  auto paused = store_->HostPauses();
  if (!paused.ok()) return paused.status();
  std::vector<WorkKey> keys;
  {
    absl::MutexLock lock(&mu_);
    paused_hosts_.clear();
    paused_host_until_.clear();
    for (const auto& [host, until] : *paused) {
      paused_hosts_.insert(host);
      if (until != absl::InfiniteFuture()) paused_host_until_[host] = until;
    }
    for (auto& s : *stacks) {
      const std::string name = s.metadata().name();
      // Diagnoses live in the keys (KeyState), which start empty: the stored ones are out of
      // date and would be a second copy.
      ReleaseDiagnoses(s.mutable_status());
      for (const auto& host : s.spec().hosts()) keys.push_back(WorkKey{name, host});
      IndexLocked(name, nullptr, &s);
      stacks_[name] = std::move(s);
    }
  }
  return dispatcher_.Load(keys);
}

void Reconciler::IndexLocked(const std::string& stack, const v1::Stack* old, const v1::Stack* now) {
  if (old != nullptr) {
    for (const auto& h : old->spec().hosts()) {
      auto it = host_stacks_.find(h);
      if (it == host_stacks_.end()) continue;
      it->second.erase(stack);
      if (it->second.empty()) host_stacks_.erase(it);
    }
  }
  if (now != nullptr) {
    for (const auto& h : now->spec().hosts()) host_stacks_[h].insert(stack);
  }
}

void Reconciler::SetHub(AgentHub* hub) {
  hub_ = hub;
  dispatcher_.SetHub(hub);
}

void Reconciler::Start() {
  status_writer_.Start();
  absl::MutexLock lock(&mu_);
  stop_ = false;
  for (int i = 0; i < options_.workers; ++i) threads_.emplace_back([this] { Worker(); });
  if (options_.workers > 0) threads_.emplace_back([this] { TimerLoop(); });
  for (const auto& [name, s] : stacks_) EnqueueStackLocked(name);
}

void Reconciler::Stop() {
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    threads.swap(threads_);
  }
  queue_.ShutDown();
  for (auto& t : threads) t.join();
  status_writer_.Stop();  // writes what the workers left dirty
}

// ---- work ---------------------------------------------------------------------------------

void Reconciler::EnqueueStackLocked(const std::string& stack) {
  auto it = stacks_.find(stack);
  if (it == stacks_.end()) return;
  for (const auto& host : it->second.spec().hosts()) queue_.Add(WorkKey{stack, host});
}

void Reconciler::EnqueueHostLocked(const std::string& host, bool low) {
  auto it = host_stacks_.find(host);
  if (it == host_stacks_.end()) return;
  for (const auto& name : it->second) {
    if (low) {
      queue_.AddLow(WorkKey{name, host});
    } else {
      queue_.Add(WorkKey{name, host});
    }
  }
}

void Reconciler::Worker() {
  WorkKey key;
  while (queue_.Get(&key)) Run(key);
}

std::optional<WorkKey> Reconciler::RunOnce() {
  WorkKey key;
  if (!queue_.TryGet(&key)) return std::nullopt;
  Run(key);
  return key;
}

void Reconciler::Run(const WorkKey& key) {
  if (key.is_host()) {
    DrainInbox(key.host);
  } else {
    Reconcile(key);
  }
  queue_.Done(key);
}

void Reconciler::TimerLoop() {
  absl::Time next_full = clock_->Now() + options_.full_resync;
  absl::Time next_maintenance = clock_->Now() + options_.maintenance;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      const absl::Duration wait =
          std::max(std::min(next_full, next_maintenance) - clock_->Now(), absl::Milliseconds(1));
      mu_.AwaitWithTimeout(absl::Condition(&stop_), std::min(wait, absl::Seconds(1)));
      if (stop_) return;
      if (clock_->Now() >= next_full) {
        next_full = clock_->Now() + options_.full_resync;
        // Behind everything else: the safety net must not delay fresh observations.
        for (const auto& [name, s] : stacks_) {
          for (const auto& host : s.spec().hosts()) queue_.AddLow(WorkKey{name, host});
        }
      }
    }
    if (clock_->Now() >= next_maintenance) {
      next_maintenance = clock_->Now() + options_.maintenance;
      Maintain();
    }
  }
}

void Reconciler::Maintain() {
  auto pruned = store_->Prune(options_.retention, clock_->Now());
  if (!pruned.ok()) {
    UPKEEP_LOG(error, "store_prune_failed", {{"error", std::string(pruned.status().message())}});
  } else if (pruned->events + pruned->actions > 0) {
    UPKEEP_LOG(
        info, "store_pruned",
        {{"events", absl::StrCat(pruned->events)}, {"actions", absl::StrCat(pruned->actions)}});
  }
  dispatcher_.Prune();
}

Reconciler::Sizes Reconciler::MemorySizes() {
  Sizes s;
  {
    absl::MutexLock lock(&mu_);
    s.stacks = stacks_.size();
    s.hosts = hosts_.size();
    s.keys = keys_.size();
  }
  s.indexed_actions = dispatcher_.IndexedActions();
  s.manual_waiters = dispatcher_.ManualWaiters();
  return s;
}

// ---- agents: reactions only enqueue -------------------------------------------------------

void Reconciler::OnConnected(const std::string& host_id, const v1::Hello& hello) {
  InboxItem item(InboxItem::Kind::kConnected);
  item.hello = hello;
  inboxes_.Push(host_id, std::move(item));
  queue_.Add(WorkKey{"", host_id});
}

void Reconciler::OnObservation(const std::string& host_id, v1::ObservationReport report) {
  InboxItem item(InboxItem::Kind::kObservation);
  item.report = std::move(report);
  inboxes_.Push(host_id, std::move(item));
  queue_.Add(WorkKey{"", host_id});
}

void Reconciler::OnActionResult(const std::string& host_id, v1::ActionResult result) {
  InboxItem item(InboxItem::Kind::kResult);
  item.result = std::move(result);
  inboxes_.Push(host_id, std::move(item));
  queue_.Add(WorkKey{"", host_id});
}

void Reconciler::OnDisconnected(const std::string& host_id) {
  inboxes_.Push(host_id, InboxItem(InboxItem::Kind::kDisconnected));
  queue_.Add(WorkKey{"", host_id});
}

void Reconciler::DrainInbox(const std::string& host) {
  for (auto& item : inboxes_.Take(host)) {
    switch (item.kind) {
      case InboxItem::Kind::kConnected:
        Connected(host, item.hello);
        break;
      case InboxItem::Kind::kObservation:
        Observed(host, std::move(item.report));
        break;
      case InboxItem::Kind::kResult: {
        const WorkKey key = dispatcher_.OnResult(host, item.result);
        if (!key.stack.empty()) queue_.Add(key);
        break;
      }
      case InboxItem::Kind::kDisconnected:
        Disconnected(host);
        break;
    }
  }
}

void Reconciler::CountConnectedLocked() {
  metrics_->Set("upkeep_connected_agents", {}, static_cast<double>(connected_hosts_));
}

void Reconciler::Connected(const std::string& host, const v1::Hello& hello) {
  {
    absl::MutexLock lock(&mu_);
    HostState& h = hosts_[host];
    if (!h.connected) ++connected_hosts_;
    h.connected = true;
    h.last_heard = clock_->Now();
    h.version = hello.version();
    h.capabilities.assign(hello.capabilities().begin(), hello.capabilities().end());
    CountConnectedLocked();
  }
  // What the agent decided on its own while cut off: recorded before anyone decides for the
  // host again (the agent stopped deciding before its hello).
  if (hello.has_handback()) RecordHandback(host, hello.handback());
  SendDesired(host);
  std::vector<std::string> stacks = StacksOf(host);
  // Actions sent but never answered: the same id again (the agent replays, never redoes).
  dispatcher_.ResendPending(host, stacks);
  for (const auto& stack : stacks) {
    events_.Publish("Normal", "AgentConnected", stack, host, "",
                    absl::StrCat("agent ", host, " connected (version ", hello.version(), ")"));
  }
  // Queued low: a hello brings no evidence (its observation follows, queued normally, and moves
  // the key ahead), so a fleet reconnecting at once (10,000 hellos after a controller restart)
  // does not make the first observations, broken ones among them, wait behind 10,000
  // reconciles that have nothing new to look at.
  absl::MutexLock lock(&mu_);
  EnqueueHostLocked(host, /*low=*/true);
}

void Reconciler::RecordHandback(const std::string& host, const v1::Handback& handback) {
  std::map<WorkKey, std::vector<v1::ActionRecord>> by_key;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& r : handback.actions()) {
      auto it = stacks_.find(r.action().stack());
      // Only this host's own targets: an agent cannot write another host's history.
      if (it == stacks_.end() || !Names(it->second, host) || r.action().host() != host) continue;
      by_key[WorkKey{r.action().stack(), host}].push_back(r);
    }
  }
  int recorded = 0;
  for (const auto& [key, records] : by_key) recorded += dispatcher_.RecordAutonomous(key, records);
  const std::vector<std::string> stacks = StacksOf(host);
  const std::set<std::string> mine(stacks.begin(), stacks.end());
  std::vector<v1::Event> fresh;
  {
    absl::MutexLock lock(&mu_);
    HostState& h = hosts_[host];
    for (const v1::Event& e : handback.events()) {
      const absl::Time at = FromProto(e.at());
      if (at < h.handed_back_at || (at == h.handed_back_at && e.seq() <= h.handed_back_seq)) {
        continue;  // recorded from an earlier hello
      }
      h.handed_back_at = at;
      h.handed_back_seq = e.seq();
      if (!e.stack().empty() && !mine.count(e.stack())) continue;
      fresh.push_back(e);
    }
  }
  if (recorded == 0 && fresh.empty()) return;  // the same hand-back again: nothing new
  for (v1::Event& e : fresh) {
    e.set_seq(0);
    e.set_host(host);
    e.set_message(absl::StrCat("[autonomous] ", e.message()));
    events_.Publish(std::move(e));
  }
  std::string dropped;
  if (handback.dropped_actions() + handback.dropped_events() > 0) {
    dropped = absl::StrCat(" (", handback.dropped_actions(), " older actions and ",
                           handback.dropped_events(), " older events dropped by the agent)");
  }
  for (const auto& stack : stacks) {
    events_.Publish("Normal", "AutonomyHandedBack", stack, host, "",
                    absl::StrCat("agent ", host, " decided on its own from ",
                                 absl::FormatTime(FromProto(handback.autonomous_since())), " to ",
                                 absl::FormatTime(FromProto(handback.autonomous_until())), ": ",
                                 recorded, " actions recorded", dropped));
  }
}

void Reconciler::Observed(const std::string& host, v1::ObservationReport report) {
  absl::MutexLock lock(&mu_);
  auto hit = hosts_.find(host);
  if (hit == hosts_.end() || !hit->second.connected) return;  // a late report of a closed stream
  hit->second.last_heard = clock_->Now();
  for (auto& o : *report.mutable_stacks()) {
    auto sit = stacks_.find(o.stack());
    if (sit == stacks_.end() || !Names(sit->second, host)) continue;
    metrics_->Inc("upkeep_observations_total");
    WorkKey key{o.stack(), host};
    KeyState& ks = keys_[key];
    const size_t sem = std::hash<std::string>{}(SemanticKey(o));
    const bool interested = sem != ks.last_semantic || ks.verdict != v1::VERDICT_HEALTHY;
    ks.last_semantic = sem;
    ks.observation = std::make_shared<const v1::StackObservation>(std::move(o));
    if (interested) queue_.Add(key);
  }
}

void Reconciler::Disconnected(const std::string& host) {
  {
    absl::MutexLock lock(&mu_);
    auto it = hosts_.find(host);
    if (it != hosts_.end()) {
      if (it->second.connected) --connected_hosts_;
      it->second.connected = false;
      // A host no stack names is forgotten when its stream closes.
      if (!host_stacks_.count(host)) hosts_.erase(it);
    }
    CountConnectedLocked();
    EnqueueHostLocked(host);
  }
  for (const auto& stack : StacksOf(host)) {
    events_.Publish("Warning", "AgentDisconnected", stack, host, "",
                    absl::StrCat("agent ", host, " disconnected"));
  }
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

void Reconciler::SendDesired(const std::string& host) {
  v1::ControllerMessage msg;
  {
    absl::MutexLock lock(&mu_);
    int64_t revision = 0;
    msg.mutable_desired();
    if (auto it = host_stacks_.find(host); it != host_stacks_.end()) {
      for (const auto& name : it->second) {
        const v1::Stack& s = stacks_[name];
        v1::Stack* out = msg.mutable_desired()->add_stacks();
        *out = s;
        out->clear_status();
        out->mutable_status()->set_paused(s.status().paused());  // the agent honours it alone
        revision = std::max(revision, s.metadata().revision());
      }
    }
    msg.mutable_desired()->set_revision(revision);
    msg.mutable_desired()->set_host_paused(paused_hosts_.count(host) > 0);
  }
  if (hub_ != nullptr) hub_->Send(host, std::move(msg));
}

// ---- the loop -----------------------------------------------------------------------------

v1::StackObservation Reconciler::ObservationLocked(const WorkKey& key) {
  v1::StackObservation o;
  auto it = keys_.find(key);
  if (it != keys_.end() && it->second.observation != nullptr) o = *it->second.observation;
  o.set_stack(key.stack);
  o.mutable_host()->set_host_id(key.host);
  auto h = hosts_.find(key.host);
  o.mutable_host()->set_agent_connected(h != hosts_.end() && h->second.connected);
  if (h != hosts_.end() && h->second.last_heard != absl::InfinitePast()) {
    *o.mutable_host()->mutable_last_heard() = ToProto(h->second.last_heard);
  }
  return o;
}

bool Reconciler::PausedLocked(const WorkKey& key) const {
  const absl::Time now = clock_->Now();
  auto it = stacks_.find(key.stack);
  const bool host_paused =
      paused_hosts_.count(key.host) > 0 &&
      (!paused_host_until_.count(key.host) || now < paused_host_until_.at(key.host));
  const bool stack_paused = it != stacks_.end() && it->second.status().paused() &&
                            (!it->second.status().has_paused_until() ||
                             now < FromProto(it->second.status().paused_until()));
  return host_paused || stack_paused;
}

absl::Time Reconciler::PauseEndsLocked(const WorkKey& key, bool* expired) const {
  absl::Time ends = absl::InfiniteFuture();
  *expired = false;
  const absl::Time now = clock_->Now();
  if (auto h = paused_host_until_.find(key.host);
      h != paused_host_until_.end() && paused_hosts_.count(key.host)) {
    ends = std::min(ends, h->second);
    *expired |= h->second <= now;
  }
  auto it = stacks_.find(key.stack);
  if (it != stacks_.end() && it->second.status().paused() &&
      it->second.status().has_paused_until()) {
    const absl::Time until = FromProto(it->second.status().paused_until());
    ends = std::min(ends, until);
    *expired |= until <= now;
  }
  return ends;
}

void Reconciler::Reconcile(const WorkKey& key) {
  v1::Stack stack;
  v1::StackObservation observed;
  bool paused = false;
  absl::Time pause_ends = absl::InfiniteFuture();
  bool pause_expired = false, stack_pause_expired = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = stacks_.find(key.stack);
    if (it == stacks_.end() || !Names(it->second, key.host)) {
      keys_.erase(key);
      diagnoser_.Forget(key);
      return;
    }
    stack = it->second;
    observed = ObservationLocked(key);
    paused = PausedLocked(key);
    pause_ends = PauseEndsLocked(key, &pause_expired);
    stack_pause_expired = pause_expired && it->second.status().has_paused_until() &&
                          FromProto(it->second.status().paused_until()) <= clock_->Now();
  }
  // `upkeepctl pause ... --for D` has run out: resume, as a person would (events, budgets).
  if (pause_expired) {
    absl::Status st = stack_pause_expired ? SetPaused(key.stack, "", false, kPauseExpired)
                                          : SetPaused("", key.host, false, kPauseExpired);
    if (!st.ok()) {
      UPKEEP_LOG(error, "auto_resume_failed", {{"error", std::string(st.message())}});
    }
  }
  const History history = dispatcher_.HistoryOf(key);
  const absl::Time now = clock_->Now();
  // The full diagnosis (with its explanation) of the decision made now; made again only when
  // the decision changed (KeyDiagnoser), so most observations cost the fast path.
  const KeyDiagnoser::Result diagnosed =
      diagnoser_.Diagnose(key, stack, observed, history, now, paused);
  const v1::Diagnosis& d = *diagnosed.diagnosis;
  metrics_->Inc("upkeep_reconciles_total");
  // Verify earlier repairs on evidence gathered after they finished.
  dispatcher_.Verify(key, stack, observed, d);

  std::vector<v1::Event> events;
  std::vector<v1::PlannedAction> allowed, would_do;
  absl::Time next_due = absl::InfiniteFuture();
  for (const auto& a : d.actions()) {
    if (a.policy() == v1::POLICY_VERDICT_ALLOWED) allowed.push_back(a);
    if (a.policy() == v1::POLICY_VERDICT_DRY_RUN) would_do.push_back(a);
    if (a.policy() == v1::POLICY_VERDICT_BACKOFF && a.has_not_before()) {
      next_due = std::min(next_due, FromProto(a.not_before()));
    }
  }
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
  absl::Time problem_since;
  absl::Time rate_limited_since;
  {
    absl::MutexLock lock(&mu_);
    auto sit = stacks_.find(key.stack);
    if (sit == stacks_.end()) return;
    KeyState& ks = keys_[key];
    // Detection and healing of the key as a whole.
    const v1::Verdict prev = ks.verdict;
    const absl::Time observed_at = FromProto(observed.observed_at());
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
    problem_since = ks.problem_since;
    rate_limited_since = ks.rate_limited_since;
    // Alerts once per (code, target) until they clear. A verdict that judged nothing (a repair
    // in flight, no fresh observation) clears nothing: the alerts stand until a diagnosis that
    // looked again says they are gone.
    std::set<std::string> current =
        decision::Judged(d) ? std::set<std::string>() : ks.active_alerts;
    for (const auto& f : d.findings()) {
      if (f.severity() != v1::SEVERITY_ALERT) continue;
      const std::string id = absl::StrCat(f.code(), "/", f.target());
      current.insert(id);
      if (ks.active_alerts.count(id)) continue;
      event("Warning", f.code() == "CrashLooping" ? "CrashLooping" : "Alert", f.target(),
            absl::StrCat(f.code(), ": ", f.message()));
    }
    // An alert that cleared gets its follow-up (notifiers send it as "resolved").
    for (const std::string& id : ks.active_alerts) {
      if (current.count(id)) continue;
      const size_t slash = id.find('/');
      event("Normal", "Resolved", id.substr(slash + 1),
            absl::StrCat(id.substr(0, slash), ": cleared (", v1::Verdict_Name(d.verdict()), ")"));
    }
    ks.active_alerts = std::move(current);
    ks.diagnosis = diagnosed.diagnosis;  // shared, not copied
    ks.verdict = d.verdict();
    // Status of the stack across its hosts.
    v1::Stack& s = sit->second;
    const v1::StackStatus before = s.status();
    decision::HostDiagnoses by_host;
    for (const auto& host : s.spec().hosts()) {
      auto it = keys_.find(WorkKey{key.stack, host});
      by_host.emplace_back(host, it == keys_.end() ? nullptr : it->second.diagnosis.get());
    }
    decision::UpdateConditions(s, by_host, now, s.mutable_status());
    ReleaseDiagnoses(s.mutable_status());  // one copy: in keys_ (FillDiagnosesLocked)
    *s.mutable_status()->mutable_last_reconcile() = ToProto(now);
    // Written by the status writer's thread, in a batch with others (a fleet reconnecting at
    // once changes every stack's status within a second).
    if (decision::StatusChanged(before, s.status())) status_writer_.MarkDirty(key.stack);
  }
  for (auto& e : events) events_.Publish(std::move(e));
  if (!dispatcher_.SequenceRunning(key)) dispatcher_.RecordWouldDo(key, would_do);

  // Act, and decide when to look at this key again.
  if (!allowed.empty()) {
    // How far back policy looks for this stack's services: its restart budget window and the
    // one-minute rate limit (the dispatcher keeps proxy repairs for the escalation window);
    // older records live only in the store.
    const absl::Duration keep_for =
        std::max(FromProto(stack.spec().policy().restart_budget().window()), absl::Minutes(1));
    const auto r = dispatcher_.Dispatch(key, allowed, PathText(d), problem_since, keep_for,
                                        rate_limited_since);
    const bool limited = r.outcome == ActionDispatcher::Outcome::kRateLimited;
    if (limited != (rate_limited_since != absl::InfinitePast())) {
      absl::MutexLock lock(&mu_);
      if (auto it = keys_.find(key); it != keys_.end()) {
        it->second.rate_limited_since = limited ? now : absl::InfinitePast();
      }
    }
    switch (r.outcome) {
      case ActionDispatcher::Outcome::kRateLimited:
        next_due = std::min(next_due, now + r.retry_after);
        break;
      case ActionDispatcher::Outcome::kStoreFailed:
        queue_.AddRateLimited(key);  // retried with backoff while the store is down
        break;
      case ActionDispatcher::Outcome::kSent:
      case ActionDispatcher::Outcome::kPending:
        queue_.Forget(key);
        break;
      default:
        break;
    }
  }
  if (allowed.empty() && rate_limited_since != absl::InfinitePast()) {
    absl::MutexLock lock(&mu_);  // the repair is no longer wanted: its wait is over
    if (auto it = keys_.find(key); it != keys_.end()) {
      it->second.rate_limited_since = absl::InfinitePast();
    }
  }
  bool verifying = false;
  for (const auto& r : *history) {
    verifying |= r.verification() == v1::VERIFICATION_PENDING && !r.dry_run();
  }
  const bool waits_on_time =
      d.verdict() == v1::VERDICT_WAITING ||
      (d.verdict() == v1::VERDICT_REPAIRING && !allowed.empty()) ||
      (d.verdict() == v1::VERDICT_REPAIRING && next_due == absl::InfiniteFuture()) || verifying;
  if (waits_on_time) next_due = std::min(next_due, now + options_.resync);
  if (pause_ends != absl::InfiniteFuture() && pause_ends > now) {
    next_due = std::min(next_due, pause_ends);
  }
  if (next_due != absl::InfiniteFuture()) queue_.AddAfter(key, next_due - now);
}

// ---- FleetService -------------------------------------------------------------------------

absl::StatusOr<v1::ApplyResponse> Reconciler::Apply(const std::vector<v1::Stack>& stacks,
                                                    bool dry_run, const std::string& who) {
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
    events_.Publish(
        "Normal", "Applied", a.name(), "", "",
        absl::StrCat("stack ", a.name(), " ", a.change(), " (generation ", a.generation(),
                     ", revision ", a.revision(), ")", who.empty() ? "" : " by " + who),
        "", who);
  }
  for (const auto& h : hosts) SendDesired(h);
  return resp;
}

absl::Status Reconciler::Delete(const std::string& name, const std::string& who) {
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
    diagnoser_.ForgetStack(name);
    for (const auto& h : hosts) {
      auto hs = hosts_.find(h);
      if (hs != hosts_.end() && !hs->second.connected && !host_stacks_.count(h)) hosts_.erase(hs);
    }
  }
  dispatcher_.Forget(name);
  events_.Publish("Normal", "Deleted", name, "", "",
                  absl::StrCat("stack ", name, " deleted", who.empty() ? "" : " by " + who), "",
                  who);
  for (const auto& h : hosts) SendDesired(h);
  return absl::OkStatus();
}

std::vector<v1::Stack> Reconciler::Stacks() {
  absl::MutexLock lock(&mu_);
  std::vector<v1::Stack> out;
  out.reserve(stacks_.size());
  for (const auto& [name, s] : stacks_) out.push_back(WithDiagnosesLocked(s));
  return out;
}

absl::StatusOr<v1::Stack> Reconciler::GetStack(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = stacks_.find(name);
  if (it == stacks_.end()) return absl::NotFoundError(absl::StrCat("no stack named ", name));
  return WithDiagnosesLocked(it->second);
}

v1::Stack Reconciler::WithDiagnosesLocked(const v1::Stack& stack) const {
  v1::Stack out = stack;
  FillDiagnosesLocked(stack, out.mutable_status());
  return out;
}

// As decision::UpdateConditions lists them: each host's latest diagnosis, in the stack's host
// order, hosts without one left out.
void Reconciler::FillDiagnosesLocked(const v1::Stack& stack, v1::StackStatus* status) const {
  status->clear_diagnoses();
  for (const auto& host : stack.spec().hosts()) {
    auto it = keys_.find(WorkKey{stack.metadata().name(), host});
    if (it == keys_.end() || it->second.diagnosis == nullptr ||
        it->second.diagnosis->verdict() == v1::VERDICT_UNSPECIFIED) {
      continue;
    }
    *status->add_diagnoses() = *it->second.diagnosis;
  }
}

std::vector<std::pair<std::string, v1::StackStatus>> Reconciler::StatusSnapshot(
    const std::vector<std::string>& names) {
  std::vector<std::pair<std::string, v1::StackStatus>> out;
  out.reserve(names.size());
  absl::MutexLock lock(&mu_);
  for (const auto& name : names) {
    auto it = stacks_.find(name);
    if (it == stacks_.end()) continue;  // deleted meanwhile
    out.emplace_back(name, it->second.status());
    FillDiagnosesLocked(it->second, &out.back().second);
  }
  return out;
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
  std::vector<std::tuple<v1::Stack, v1::StackObservation, WorkKey, bool>> inputs;
  {
    absl::MutexLock lock(&mu_);
    auto it = stacks_.find(stack);
    if (it == stacks_.end()) return absl::NotFoundError(absl::StrCat("no stack named ", stack));
    for (const auto& h : it->second.spec().hosts()) {
      if (!host.empty() && h != host) continue;
      WorkKey key{stack, h};
      inputs.emplace_back(it->second, ObservationLocked(key), key, PausedLocked(key));
    }
  }
  std::vector<v1::Diagnosis> out;
  for (const auto& [s, o, key, paused] : inputs) {
    decision::DiagnoseOptions options;
    options.paused = paused;
    out.push_back(decision::Diagnose(s, o, *dispatcher_.HistoryOf(key), clock_->Now(), options));
  }
  return out;
}

absl::Status Reconciler::SetPaused(const std::string& stack, const std::string& host, bool paused,
                                   const std::string& who, absl::Duration for_duration) {
  const absl::Time until = paused && for_duration > absl::ZeroDuration()
                               ? clock_->Now() + for_duration
                               : absl::InfinitePast();
  if (!stack.empty()) {
    if (absl::Status st = store_->SetStackPaused(stack, paused); !st.ok()) return st;
  } else if (!host.empty()) {
    absl::Status st = paused && until != absl::InfinitePast() ? store_->PauseHostUntil(host, until)
                                                              : store_->SetHostPaused(host, paused);
    if (!st.ok()) return st;
  } else {
    return absl::InvalidArgumentError("name a stack or a host");
  }
  std::vector<std::pair<WorkKey, std::vector<std::string>>> resets;
  bool stack_known = false;
  {
    absl::MutexLock lock(&mu_);
    if (!stack.empty()) {
      auto it = stacks_.find(stack);
      if (it != stacks_.end()) {
        it->second.mutable_status()->set_paused(paused);
        if (until != absl::InfinitePast()) {
          *it->second.mutable_status()->mutable_paused_until() = ToProto(until);
        } else {
          it->second.mutable_status()->clear_paused_until();
        }
        stack_known = true;
      }
    } else if (paused) {
      paused_hosts_.insert(host);
      if (until != absl::InfinitePast()) {
        paused_host_until_[host] = until;
      } else {
        paused_host_until_.erase(host);
      }
    } else {
      paused_hosts_.erase(host);
      paused_host_until_.erase(host);
    }
    // Resuming also resumes crash-looping targets: their restart budget starts afresh.
    if (!paused) {
      for (const auto& [key, ks] : keys_) {
        if ((!stack.empty() && key.stack != stack) || (!host.empty() && key.host != host)) {
          continue;
        }
        std::vector<std::string> targets;
        for (const auto& alert : ks.active_alerts) {
          if (alert.rfind("CrashLooping/", 0) == 0) targets.push_back(alert.substr(13));
        }
        // ... and services a person stopped: resuming means "run it all again".
        // (Not when a timed pause ran out: nobody asked for those to run again.)
        for (const auto& f : ks.diagnosis != nullptr
                                 ? ks.diagnosis->findings()
                                 : v1::Diagnosis::default_instance().findings()) {
          if (f.code() == "ManuallyStopped" && for_duration == absl::ZeroDuration() &&
              who != kPauseExpired) {
            targets.push_back(f.target());
          }
        }
        if (!targets.empty()) resets.emplace_back(key, std::move(targets));
      }
    }
  }
  if (stack_known) {
    if (absl::Status st = status_writer_.SaveNow(stack); !st.ok()) return st;
  }
  for (const auto& [key, targets] : resets) {
    dispatcher_.ResetBudgets(key, targets, "resumed by a person", who);
  }
  std::vector<std::string> tell;  // hosts whose agents keep pause as last known
  {
    absl::MutexLock lock(&mu_);
    if (!stack.empty()) EnqueueStackLocked(stack);
    if (!host.empty()) EnqueueHostLocked(host);
    if (!host.empty()) tell.push_back(host);
    if (auto it = stacks_.find(stack); !stack.empty() && it != stacks_.end()) {
      tell.assign(it->second.spec().hosts().begin(), it->second.spec().hosts().end());
    }
  }
  for (const auto& h : tell) SendDesired(h);
  events_.Publish("Normal", paused ? "Paused" : "Resumed", stack, host, "",
                  absl::StrCat(stack.empty() ? "host " + host : "stack " + stack,
                               paused ? " paused" : " resumed", who.empty() ? "" : " by " + who,
                               paused ? ": upkeep plans but does not act" : ": upkeep acts again"),
                  "", who);
  return absl::OkStatus();
}

absl::StatusOr<v1::ActionRecord> Reconciler::RunAction(const v1::RunActionRequest& request,
                                                       absl::Duration wait,
                                                       const std::string& who) {
  WorkKey key;
  v1::Action action;
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
      return absl::InvalidArgumentError(
          absl::StrCat("stack ", s.metadata().name(), " does not run on host ", host));
    }
    bool known = request.target() == decision::kProxyTarget && s.spec().has_proxy();
    for (const auto& svc : s.spec().services()) known |= svc.name() == request.target();
    if (!known) {
      return absl::InvalidArgumentError(absl::StrCat(
          "stack ", s.metadata().name(), " names no target \"", request.target(), "\""));
    }
    // proto3 enums are open: a kind this controller does not know arrives as its number.
    if (!v1::ActionKind_IsValid(request.kind()) || request.kind() == v1::ACTION_KIND_UNSPECIFIED ||
        request.kind() == v1::ACTION_KIND_RESET_BUDGET) {
      return absl::InvalidArgumentError("unknown action kind");
    }
    key = WorkKey{s.metadata().name(), host};
    action.set_kind(request.kind());
    action.set_target(request.target());
    *action.mutable_params() = request.params();
    action.set_reason("run by hand (upkeepctl run)");
  }
  auto sent = dispatcher_.SendManual(key, action, who);
  if (!sent.ok()) return sent.status();
  return dispatcher_.AwaitManual(*sent, wait);
}

}  // namespace upkeep::controller

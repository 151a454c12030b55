#include "agent/autonomy/local_decider.h"

#include <algorithm>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "controller/api/agent_hub.h"
#include "core/decision/verify.h"
#include "core/log.h"
#include "core/proto_time.h"

namespace upkeep::agent {

namespace v1 = upkeep::v1;

// The reconciler's view of "the agent": actions go to the agent's own worker, until closed.
class LocalDecider::Hub : public controller::AgentHub {
 public:
  Hub(std::string host, std::function<void(const v1::Action&)> send)
      : host_(std::move(host)), send_(std::move(send)) {}
  bool Send(const std::string& host_id, v1::ControllerMessage message) override {
    if (host_id != host_ || !message.has_action()) return host_id == host_;
    absl::MutexLock lock(&mu_);
    if (closed_) return false;  // recorded, never sent: Handback says it did not run
    send_(message.action());
    return true;
  }
  std::vector<std::string> ConnectedHosts() const override { return {host_}; }
  void Close() {
    absl::MutexLock lock(&mu_);
    closed_ = true;
  }

 private:
  const std::string host_;
  const std::function<void(const v1::Action&)> send_;
  absl::Mutex mu_;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

LocalDecider::LocalDecider(LocalDeciderOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<LocalDecider>> LocalDecider::Create(
    LocalDeciderOptions options, const v1::DesiredState& desired,
    const std::vector<v1::ActionResult>& seed) {
  std::unique_ptr<LocalDecider> d(new LocalDecider(options));
  auto store = controller::OpenSqliteStore(options.data_dir + "/local");
  if (!store.ok()) return store.status();
  d->store_ = std::move(*store);
  controller::Store* s = d->store_.get();
  // The desired state as last known: its stacks (only those naming this host), their pause
  // flags and the host's; stacks it no longer names are dropped.
  std::vector<v1::Stack> stacks;
  std::set<std::string> names;
  for (const auto& st : desired.stacks()) {
    if (std::find(st.spec().hosts().begin(), st.spec().hosts().end(), options.host_id) ==
        st.spec().hosts().end()) {
      continue;
    }
    v1::Stack copy = st;
    copy.clear_status();
    stacks.push_back(std::move(copy));
    names.insert(st.metadata().name());
  }
  auto existing = s->ListStacks();
  if (!existing.ok()) return existing.status();
  for (const auto& st : *existing) {
    if (!names.count(st.metadata().name())) {
      if (absl::Status e = s->DeleteStack(st.metadata().name()); !e.ok()) return e;
    }
  }
  if (!stacks.empty()) {
    auto applied = s->ApplyStacks(stacks);
    if (!applied.ok()) return applied.status();
  }
  for (const auto& st : desired.stacks()) {
    if (!names.count(st.metadata().name())) continue;
    if (absl::Status e = s->SetStackPaused(st.metadata().name(), st.status().paused()); !e.ok()) {
      return e;
    }
  }
  if (absl::Status e = s->SetHostPaused(options.host_id, desired.host_paused()); !e.ok()) return e;
  // The journal's history (the controller's actions too), so budgets and backoff hold across
  // the hand-over. A repair that succeeded counts as the fix the controller saw.
  for (const auto& r : seed) {
    if (r.id().empty() || !names.count(r.stack()) || s->GetAction(r.id()).ok()) continue;
    v1::ActionRecord rec;
    rec.mutable_action()->set_id(r.id());
    rec.mutable_action()->set_kind(r.kind());
    rec.mutable_action()->set_target(r.target());
    rec.mutable_action()->set_stack(r.stack());
    rec.mutable_action()->set_host(options.host_id);
    rec.mutable_action()->set_autonomous(absl::StartsWith(r.id(), "auto-"));
    *rec.mutable_result() = r;
    rec.mutable_result()->clear_output();
    *rec.mutable_requested_at() = r.started_at();
    if (r.outcome() != v1::ACTION_OUTCOME_SUCCEEDED) {
      rec.set_verification(v1::VERIFICATION_NOT_FIXED);
    } else if (decision::IsRepair(r.kind())) {
      rec.set_verification(v1::VERIFICATION_FIXED);
    }
    rec.set_why("from the agent's journal");
    if (absl::Status e = s->PutAction(rec); !e.ok()) return e;
  }
  d->hub_ = std::make_unique<Hub>(options.host_id, options.send_action);
  controller::ReconcilerOptions ro;
  ro.workers = 1;
  ro.resync = options.resync;
  ro.dispatch.id_prefix =
      absl::StrCat(options.autonomous ? "auto-" : "local-", options.host_id, "-");
  ro.dispatch.autonomous = options.autonomous;
  auto r = controller::Reconciler::Create(s, options.clock, &d->metrics_, ro);
  if (!r.ok()) return r.status();
  d->reconciler_ = std::move(*r);
  d->reconciler_->SetHub(d->hub_.get());
  return d;
}

LocalDecider::~LocalDecider() { Stop(); }

void LocalDecider::Start() {
  {
    absl::MutexLock lock(&mu_);
    if (started_) return;
    started_ = true;
  }
  v1::Hello hello;
  hello.set_host_id(options_.host_id);
  hello.set_version("local");
  reconciler_->OnConnected(options_.host_id, hello);
  reconciler_->Start();
}

void LocalDecider::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  if (hub_ != nullptr) hub_->Close();
  if (reconciler_ != nullptr) reconciler_->Stop();
}

void LocalDecider::OnObservation(const v1::StackObservation& observation) {
  v1::ObservationReport report;
  *report.add_stacks() = observation;
  reconciler_->OnObservation(options_.host_id, std::move(report));
}

void LocalDecider::OnActionResult(const v1::ActionResult& result) {
  // Recorded now, not queued: a hand-back right after must see it (the fresh observation the
  // executor asks for re-queues the key).
  reconciler_->dispatcher()->OnResult(options_.host_id, result);
}

void LocalDecider::RecordResult(const v1::ActionResult& result) {
  reconciler_->dispatcher()->OnResult(options_.host_id, result);
}

v1::Handback LocalDecider::Handback(absl::Time since, const HandbackLimits& limits) {
  v1::Handback out;
  *out.mutable_autonomous_since() = ToProto(since);
  *out.mutable_autonomous_until() = ToProto(options_.clock->Now());
  auto actions = store_->ListActions("", options_.host_id, 100000);
  std::vector<v1::ActionRecord> mine;
  if (actions.ok()) {
    for (auto& r : *actions) {
      if (!r.action().autonomous() || r.action().kind() == v1::ACTION_KIND_RESET_BUDGET) continue;
      if (!r.dry_run() && r.result().id().empty()) {
        // Decided, never started: say so (the controller must not run it later).
        r.mutable_result()->set_id(r.action().id());
        r.mutable_result()->set_kind(r.action().kind());
        r.mutable_result()->set_target(r.action().target());
        r.mutable_result()->set_stack(r.action().stack());
        r.mutable_result()->set_outcome(v1::ACTION_OUTCOME_FAILED);
        r.mutable_result()->set_message("not run: the controller took over before it started");
        *r.mutable_result()->mutable_finished_at() = ToProto(options_.clock->Now());
        r.set_verification(v1::VERIFICATION_NOT_FIXED);
        (void)store_->PutAction(r);
      }
      if (r.result().output().size() > limits.max_output) {
        r.mutable_result()->mutable_output()->resize(limits.max_output);
      }
      mine.push_back(std::move(r));
    }
  } else {
    UPKEEP_LOG(error, "handback_actions", {{"error", std::string(actions.status().message())}});
  }
  const size_t keep_a = static_cast<size_t>(std::max(limits.max_actions, 0));
  const size_t drop_a = mine.size() > keep_a ? mine.size() - keep_a : 0;
  out.set_dropped_actions(static_cast<int64_t>(drop_a));
  for (size_t i = drop_a; i < mine.size(); ++i) *out.add_actions() = mine[i];

  std::vector<v1::Event> events;
  int64_t after = 0;
  while (true) {
    auto page = store_->ListEvents("", after, 1000);
    if (!page.ok() || page->empty()) break;
    for (auto& e : *page) {
      after = std::max(after, e.seq());
      if (FromProto(e.at()) < since || e.host() != options_.host_id) continue;
      // The local loop's own bookkeeping is no news to the controller.
      if (e.reason() == "AgentConnected" || e.reason() == "Applied" || e.reason() == "Paused" ||
          e.reason() == "Resumed") {
        continue;
      }
      events.push_back(std::move(e));
    }
  }
  const size_t keep_e = static_cast<size_t>(std::max(limits.max_events, 0));
  const size_t drop_e = events.size() > keep_e ? events.size() - keep_e : 0;
  out.set_dropped_events(static_cast<int64_t>(drop_e));
  for (size_t i = drop_e; i < events.size(); ++i) *out.add_events() = events[i];
  return out;
}

}  // namespace upkeep::agent

#include "agent/daemon/agent_client.h"

#include <algorithm>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "core/log.h"
#include "core/proto_time.h"
#include "core/tls/tls.h"

namespace upkeep::agent {

namespace v1 = upkeep::v1;

bool QueueOutbound(std::deque<v1::AgentMessage>* queue, size_t in_flight, size_t max,
                   v1::AgentMessage msg) {
  if (msg.has_observation()) {
    std::set<std::string> stacks;
    for (const auto& o : msg.observation().stacks()) stacks.insert(o.stack());
    bool event_driven = msg.observation().event_driven();
    for (auto it = queue->begin() + std::min(in_flight, queue->size()); it != queue->end();) {
      bool superseded = it->has_observation();
      if (superseded) {
        for (const auto& o : it->observation().stacks()) superseded &= stacks.count(o.stack()) > 0;
      }
      if (!superseded) {
        ++it;
        continue;
      }
      event_driven |= it->observation().event_driven();
      it = queue->erase(it);
    }
    msg.mutable_observation()->set_event_driven(event_driven);
    if (queue->size() >= max) return false;
  }
  queue->push_back(std::move(msg));
  return true;
}

// Shared by the client and one stream's reactor; outlives the reactor, which clears `reactor`
// in OnDone before deleting itself.
struct AgentClient::Link {
  absl::Mutex mu;
  Stream* reactor ABSL_GUARDED_BY(mu) = nullptr;
  std::deque<v1::AgentMessage> outbound ABSL_GUARDED_BY(mu);
  bool writing ABSL_GUARDED_BY(mu) = false;
  bool closing ABSL_GUARDED_BY(mu) = false;  // no more writes start
  bool hello_sent ABSL_GUARDED_BY(mu) = false;
  bool got_any ABSL_GUARDED_BY(mu) = false;
  grpc::Status status ABSL_GUARDED_BY(mu);
};

// One reactor per stream. Writes may start from other threads (observations, action results),
// so the reactor holds the call open (AddHold) until its read side ends or it is cancelled.
class AgentClient::Stream
    : public grpc::ClientBidiReactor<v1::AgentMessage, v1::ControllerMessage> {
 public:
  Stream(AgentClient* client, std::shared_ptr<Link> link, std::vector<v1::AgentMessage> first)
      : client_(client), link_(std::move(link)) {
    client_->CurrentStub()->async()->Connect(&ctx_, this);
    AddHold();
    {
      absl::MutexLock lock(&link_->mu);
      link_->reactor = this;
      for (auto& m : first) link_->outbound.push_back(std::move(m));
      WriteLocked();
    }
    StartRead(&in_);
    StartCall();
  }

  // With link->mu held.
  void WriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu) {
    if (link_->writing || link_->closing || link_->outbound.empty()) return;
    link_->writing = true;
    StartWrite(&link_->outbound.front());
  }

  // With link->mu held: ends the stream from our side (OnDone follows).
  void CancelLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu) { ctx_.TryCancel(); }

  void OnWriteDone(bool ok) override {
    bool release = false;
    {
      absl::MutexLock lock(&link_->mu);
      link_->writing = false;
      if (!ok) {
        release = CloseLocked();
        ctx_.TryCancel();  // the read side ends too
      } else {
        if (!link_->hello_sent && link_->outbound.front().has_hello()) {
          link_->hello_sent = true;
          UPKEEP_LOG(
              info, "connected",
              {{"controller", client_->CurrentController()}, {"host", client_->options_.host_id}});
        }
        link_->outbound.pop_front();
        WriteLocked();
      }
    }
    if (release) RemoveHold();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      bool release;
      {
        absl::MutexLock lock(&link_->mu);
        release = CloseLocked();
      }
      if (release) RemoveHold();
      return;
    }
    {
      absl::MutexLock lock(&link_->mu);
      link_->got_any = true;
    }
    client_->Inbox(in_);
    StartRead(&in_);
  }

  void OnDone(const grpc::Status& status) override {
    {
      absl::MutexLock lock(&link_->mu);
      link_->reactor = nullptr;
      link_->closing = true;
      link_->status = status;
    }
    AgentClient* client = client_;
    std::shared_ptr<Link> link = link_;
    delete this;
    client->StreamDone(link);  // last: the client may go away once it knows
  }

 private:
  // True when this call released the hold (exactly once).
  bool CloseLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(link_->mu) {
    if (link_->closing) return false;
    link_->closing = true;
    return true;
  }

  AgentClient* const client_;
  const std::shared_ptr<Link> link_;
  grpc::ClientContext ctx_;
  v1::ControllerMessage in_;
};

absl::Status AgentClient::Start() {
  {
    absl::MutexLock lock(&mu_);
    if (started_) return absl::FailedPreconditionError("agent client already started");
    started_ = true;
  }
  grpc::ChannelArguments args;
  // A partition (no RST, just silence) must end the stream well within `autonomous_after`.
  const bool autonomy = options_.autonomous_after > absl::ZeroDuration();
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS,
              autonomy ? static_cast<int>(std::max<int64_t>(
                             1000, absl::ToInt64Milliseconds(options_.autonomous_after) / 2))
                       : 20000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
              autonomy ? static_cast<int>(std::max<int64_t>(
                             1000, absl::ToInt64Milliseconds(options_.autonomous_after) / 2))
                       : 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  args.SetMaxReceiveMessageSize(16 << 20);
  // Created once and kept by the channel across reconnects (TLS credentials watch their files).
  if (options_.controller.find(',') != std::string::npos) {
    for (absl::string_view e : absl::StrSplit(options_.controller, ',', absl::SkipWhitespace())) {
      const std::string endpoint(absl::StripAsciiWhitespace(e));
      auto creds = tls::ClientCredentials(endpoint, options_.tls_ca, options_.tls_cert,
                                          options_.tls_key, {}, options_.insecure);
      if (!creds.ok()) return creds.status();
      endpoints_.push_back(endpoint);
      channels_.push_back(grpc::CreateCustomChannel(endpoint, *creds, args));
      stubs_.push_back(v1::AgentService::NewStub(channels_.back()));
    }
  } else {
    auto creds = tls::ClientCredentials(options_.controller, options_.tls_ca, options_.tls_cert,
                                        options_.tls_key, {}, options_.insecure);
    if (!creds.ok()) return creds.status();
    channel_ = grpc::CreateCustomChannel(options_.controller, *creds, args);
    stub_ = v1::AgentService::NewStub(channel_);
  }
  // The last desired state the controller sent: what to watch (and, cut off, to keep healthy)
  // before the controller answers. A torn or corrupt copy is reported and never acted on.
  cache_ = std::make_unique<DesiredCache>(options_.data_dir);
  auto cached = cache_->Load();
  if (!cached.ok()) {
    UPKEEP_LOG(error, "desired_cache_corrupt", {{"error", std::string(cached.status().message())}});
  } else if (cached->has_value()) {
    UPKEEP_LOG(info, "desired_cache_loaded",
               {{"revision", absl::StrCat((*cached)->revision())},
                {"stacks", absl::StrCat((*cached)->stacks_size())}});
    ApplyDesired(**cached, false);
  }
  {
    absl::MutexLock lock(&mu_);
    down_since_ = options_.clock->Now();
  }
  observer_->Start([this](const v1::StackObservation& o, bool event) { OnObservation(o, event); });
  supervisor_ = std::thread([this] { SuperviseLoop(); });
  action_thread_ = std::thread([this] { ActionLoop(); });
  if (autonomy) autonomy_thread_ = std::thread([this] { AutonomyLoop(); });
  return absl::OkStatus();
}

void AgentClient::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    stop_ = true;
  }
  if (autonomy_thread_.joinable()) autonomy_thread_.join();
  if (supervisor_.joinable()) supervisor_.join();  // cancels the stream, waits for OnDone
  if (action_thread_.joinable()) action_thread_.join();
  std::shared_ptr<LocalDecider> decider;
  {
    absl::MutexLock lock(&mu_);
    decider.swap(decider_);
  }
  if (decider != nullptr) decider->Stop();  // its history stays in its store
  observer_->Stop();
}

bool AgentClient::autonomous() const {
  absl::MutexLock lock(&mu_);
  return autonomous_;
}

std::shared_ptr<LocalDecider> AgentClient::decider() const {
  absl::MutexLock lock(&mu_);
  return decider_;
}

void AgentClient::ApplyDesired(const v1::DesiredState& desired, bool save) {
  std::vector<v1::Stack> stacks(desired.stacks().begin(), desired.stacks().end());
  executor_->SetDesired(stacks);
  observer_->SetDesired(stacks);
  observer_->RefreshNow();
  {
    absl::MutexLock lock(&mu_);
    last_desired_ = desired;
  }
  if (save && cache_ != nullptr) {
    if (absl::Status st = cache_->Save(desired); !st.ok()) {
      UPKEEP_LOG(error, "desired_cache_write_failed", {{"error", std::string(st.message())}});
    }
  }
}

bool AgentClient::connected() const {
  std::shared_ptr<Link> link;
  {
    absl::MutexLock lock(&mu_);
    link = link_;
  }
  if (link == nullptr) return false;
  absl::MutexLock lock(&link->mu);
  return link->hello_sent && !link->closing;
}

bool AgentClient::Send(v1::AgentMessage msg) {
  std::shared_ptr<Link> link;
  {
    absl::MutexLock lock(&mu_);
    link = link_;
  }
  if (link == nullptr) return false;
  absl::MutexLock lock(&link->mu);
  if (link->reactor == nullptr || link->closing) return false;
  if (!QueueOutbound(&link->outbound, link->writing ? 1 : 0, options_.max_outbound_queue,
                     std::move(msg))) {
    return false;  // the next observation replaces it
  }
  link->reactor->WriteLocked();
  return true;
}

void AgentClient::OnObservation(const v1::StackObservation& o, bool event_driven) {
  v1::AgentMessage msg;
  *msg.mutable_observation()->add_stacks() = o;
  msg.mutable_observation()->set_event_driven(event_driven);
  Send(std::move(msg));  // when disconnected, the next observation after reconnecting replaces it
  std::shared_ptr<LocalDecider> decider;
  {
    absl::MutexLock lock(&mu_);
    decider = decider_;
  }
  if (decider != nullptr) decider->OnObservation(o);
}

void AgentClient::Inbox(const v1::ControllerMessage& msg) {
  absl::MutexLock lock(&mu_);
  if (msg.has_desired()) {
    desired_ = msg.desired();
    // A desired state follows the hello's processing: the handback in it is recorded.
    handback_.reset();
    UPKEEP_LOG(info, "desired_state",
               {{"revision", absl::StrCat(msg.desired().revision())},
                {"stacks", absl::StrCat(msg.desired().stacks_size())}});
  } else if (msg.has_action()) {
    // Deciding on its own, the agent takes no controller action (the controller re-sends
    // unanswered ones after the next hello).
    if (autonomous_) return;
    actions_.push_back(msg.action());
  }
}

void AgentClient::StreamDone(const std::shared_ptr<Link>& link) {
  std::deque<v1::ActionResult> undelivered;
  {
    absl::MutexLock lock(&link->mu);
    for (auto& m : link->outbound) {
      if (m.has_action_result()) undelivered.push_back(std::move(*m.mutable_action_result()));
    }
    link->outbound.clear();
  }
  absl::MutexLock lock(&mu_);
  unsent_.insert(unsent_.begin(), undelivered.begin(), undelivered.end());
  if (link_ == link) link_done_ = true;
}

void AgentClient::SuperviseLoop() {
  std::mt19937 rng(std::random_device{}());
  absl::Duration backoff = absl::Milliseconds(100);
  while (true) {
    // Deciding alone: stop only once the controller can be reached, and before saying hello.
    bool reachable = false;
    if (autonomous()) {
      if (!AwaitChannelReady()) return;
      reachable = true;
    }
    absl::ReleasableMutexLock transition(&transition_mu_);
    if (autonomous()) {
      // Autonomy may have begun after the check above (between two streams): then the
      // controller was not found reachable, and handing back now would end local decisions
      // while it is still away (an action decided and dropped, and a second decided later).
      if (!reachable) continue;
      LeaveAutonomy();
    }
    std::vector<v1::AgentMessage> first(1);
    first[0].mutable_hello()->set_host_id(options_.host_id);
    first[0].mutable_hello()->set_version(options_.version);
    for (const char* c : {"runtime.process", "runtime.docker", "proxy.nginx"}) {
      first[0].mutable_hello()->add_capabilities(c);
    }
    auto link = std::make_shared<Link>();
    {
      absl::MutexLock lock(&mu_);
      if (stop_) return;
      if (handback_.has_value()) *first[0].mutable_hello()->mutable_handback() = *handback_;
      // Results that finished while we were away go right after the hello.
      for (auto& r : unsent_) *first.emplace_back().mutable_action_result() = std::move(r);
      unsent_.clear();
      link_ = link;
      link_done_ = false;
    }
    new Stream(this, link, std::move(first));  // deletes itself in OnDone
    transition.Release();
    // Until the stream ends: apply desired states as they come (never on a gRPC thread).
    struct Wake {
      AgentClient* c;
      bool cancelled;
    } wake{this, false};
    while (true) {
      std::optional<v1::DesiredState> desired;
      bool cancel = false;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](Wake* w) ABSL_NO_THREAD_SAFETY_ANALYSIS {
              return w->c->link_done_ || w->c->desired_.has_value() ||
                     (w->c->stop_ && !w->cancelled);
            },
            &wake));
        if (link_done_) break;
        if (desired_.has_value()) {
          desired.swap(desired_);
        } else {
          cancel = wake.cancelled = true;
        }
      }
      if (desired.has_value()) ApplyDesired(*desired, true);
      if (cancel) {
        absl::MutexLock lock(&link->mu);
        if (link->reactor != nullptr) link->reactor->CancelLocked();
      }
    }
    bool got_any;
    grpc::Status status;
    {
      absl::MutexLock lock(&link->mu);
      got_any = link->got_any;
      status = link->status;
    }
    {
      absl::MutexLock lock(&mu_);
      link_ = nullptr;
      if (stop_) return;
    }
    if (got_any) backoff = absl::Milliseconds(100);
    UPKEEP_LOG(warn, "disconnected",
               {{"controller", CurrentController()}, {"status", status.error_message()}});
    if (!stubs_.empty()) {
      // Several controllers: try the next one (the leader may have moved); a whole round
      // without a stream backs off as one controller would.
      ++current_;
      if (current_ % stubs_.size() != 0) backoff = std::max(backoff / 2, absl::Milliseconds(50));
    }
    // Jittered exponential backoff, interruptible by Shutdown.
    std::uniform_real_distribution<double> jitter(0.5, 1.0);
    const absl::Duration wait = backoff * jitter(rng);
    backoff = std::min(backoff * 2, absl::Seconds(10));
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stop_), wait);
    if (stop_) return;
  }
}

void AgentClient::ActionLoop() {
  while (true) {
    v1::Action action;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](AgentClient* c)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu_) { return c->stop_ || !c->actions_.empty(); },
          this));
      if (stop_) return;
      action = actions_.front();
      actions_.pop_front();
      executing_ = true;
      executing_autonomous_ = action.autonomous();
    }
    v1::AgentMessage msg;
    if (!action.autonomous() && Superseded(action)) {
      msg.mutable_action_result()->set_id(action.id());
      msg.mutable_action_result()->set_kind(action.kind());
      msg.mutable_action_result()->set_target(action.target());
      msg.mutable_action_result()->set_stack(action.stack());
      msg.mutable_action_result()->set_outcome(v1::ACTION_OUTCOME_REFUSED);
      msg.mutable_action_result()->set_message(
          "superseded: decided before this agent decided on its own; not run");
    } else {
      *msg.mutable_action_result() = executor_->Execute(action);
    }
    if (action.autonomous()) {
      std::shared_ptr<LocalDecider> decider;
      {
        absl::MutexLock lock(&mu_);
        decider = decider_;
        // Local decisions stopped meanwhile: recorded by the hand-back.
        if (decider == nullptr) late_.push_back(msg.action_result());
      }
      // Recorded before the action counts as finished: a hand-back waits for this.
      if (decider != nullptr) decider->OnActionResult(msg.action_result());
      absl::MutexLock lock(&mu_);
      executing_ = executing_autonomous_ = false;
      continue;
    }
    {
      absl::MutexLock lock(&mu_);
      executing_ = executing_autonomous_ = false;
    }
    if (!Send(msg)) {
      absl::MutexLock lock(&mu_);
      unsent_.push_back(msg.action_result());
    }
  }
}

bool AgentClient::Superseded(const v1::Action& action) {
  absl::Time handed_back;
  {
    absl::MutexLock lock(&mu_);
    handed_back = handed_back_at_;
  }
  if (handed_back == absl::InfinitePast() || !action.has_requested_at() ||
      FromProto(action.requested_at()) >= handed_back) {
    return false;
  }
  for (const auto& r : executor_->Finished()) {
    if (r.id() == action.id()) return false;  // ran before: the executor replays its result
  }
  return true;
}

// ---- autonomy -----------------------------------------------------------------------------

void AgentClient::AutonomyLoop() {
  while (true) {
    bool enter = false;
    const bool up = connected();
    {
      absl::MutexLock lock(&mu_);
      if (up) {
        // Connected: nothing to decide until this stream ends or another replaces it, so wait
        // for that instead of looking every 50 ms (an idle agent woke 20 times a second here).
        // The 1 s bound is only a backstop.
        struct Seen {
          const AgentClient* c;
          const Link* link;
        } seen{this, link_.get()};
        mu_.AwaitWithTimeout(absl::Condition(
                                 +[](Seen* s) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                                   return s->c->stop_ || s->c->link_done_ ||
                                          s->c->link_.get() != s->link;
                                 },
                                 &seen),
                             absl::Seconds(1));
      } else {
        // Down: the grace period runs on options_.clock (simulated in tests), so look often.
        mu_.AwaitWithTimeout(absl::Condition(&stop_), absl::Milliseconds(50));
      }
      if (stop_) return;
      const absl::Time now = options_.clock->Now();
      if (up) {
        down_since_ = absl::InfinitePast();
      } else if (down_since_ == absl::InfinitePast()) {
        down_since_ = now;
      }
      enter = !up && !autonomous_ && last_desired_.has_value() &&
              now - down_since_ >= options_.autonomous_after && actions_.empty() && !executing_;
    }
    if (enter) EnterAutonomy();
  }
}

void AgentClient::EnterAutonomy() {
  absl::MutexLock transition(&transition_mu_);
  if (connected()) return;
  v1::DesiredState desired;
  std::shared_ptr<Link> link;
  {
    absl::MutexLock lock(&mu_);
    if (stop_ || autonomous_ || !last_desired_.has_value() || !actions_.empty() || executing_) {
      return;
    }
    desired = *last_desired_;
    link = link_;
  }
  // A stream still trying must not say hello while we decide: it is ended, and the next one
  // starts only after LeaveAutonomy.
  if (link != nullptr) {
    absl::MutexLock lock(&link->mu);
    if (link->reactor != nullptr) link->reactor->CancelLocked();
  }
  LocalDeciderOptions o;
  o.data_dir = options_.data_dir;
  o.host_id = options_.host_id;
  o.clock = options_.clock;
  o.autonomous = true;
  o.send_action = [this](const v1::Action& a) {
    absl::MutexLock lock(&mu_);
    actions_.push_back(a);
  };
  auto decider = LocalDecider::Create(o, desired, executor_->Finished());
  if (!decider.ok()) {
    UPKEEP_LOG(error, "autonomy_failed", {{"error", std::string(decider.status().message())}});
    return;
  }
  std::shared_ptr<LocalDecider> d(std::move(*decider));
  {
    absl::MutexLock lock(&mu_);
    autonomous_ = true;
    autonomous_since_ = options_.clock->Now();
    decider_ = d;
  }
  d->Start();
  observer_->RefreshNow();  // fresh evidence for the first local decision
  UPKEEP_LOG(warn, "autonomous",
             {{"host", options_.host_id},
              {"controller", options_.controller},
              {"revision", absl::StrCat(desired.revision())},
              {"note", "controller unreachable: deciding for this host locally"}});
}

bool AgentClient::AwaitChannelReady() {
  // A READY seen before the channel has been anything else may be the stale state of the very
  // connection that just broke (its GOAWAY not processed yet): it counts only after a change,
  // or once it has lasted 10 s. With several controllers (replicas), any one that is reachable
  // will do: the hello goes to it, and a follower sends the agent on to the leader.
  std::vector<grpc::Channel*> channels;
  if (channels_.empty()) {
    channels.push_back(channel_.get());
  } else {
    for (const auto& c : channels_) channels.push_back(c.get());
  }
  std::vector<bool> seen_down(channels.size(), false);
  std::vector<absl::Time> ready_since(channels.size(), absl::InfinitePast());
  const auto wait = std::chrono::milliseconds(200 / static_cast<int>(channels.size()) + 1);
  while (true) {
    for (size_t i = 0; i < channels.size(); ++i) {
      {
        absl::MutexLock lock(&mu_);
        if (stop_) return false;
      }
      const grpc_connectivity_state state = channels[i]->GetState(true);
      bool ready = false;
      if (state != GRPC_CHANNEL_READY) {
        seen_down[i] = true;
        ready_since[i] = absl::InfinitePast();
      } else if (seen_down[i]) {
        ready = true;
      } else if (ready_since[i] == absl::InfinitePast()) {
        ready_since[i] = absl::Now();
      } else if (absl::Now() - ready_since[i] > absl::Seconds(10)) {
        ready = true;
      }
      if (ready) {
        if (!channels_.empty()) current_ = i;  // only the supervisor thread moves it
        return true;
      }
      channels[i]->WaitForStateChange(state, std::chrono::system_clock::now() + wait);
    }
  }
}

void AgentClient::LeaveAutonomy() {
  std::shared_ptr<LocalDecider> d;
  absl::Time since;
  {
    absl::MutexLock lock(&mu_);
    d = decider_;
    decider_ = nullptr;  // results from now on are late_
    since = autonomous_since_;
    // Local actions decided but not started never run: the hand-back says so.
    for (auto it = actions_.begin(); it != actions_.end();) {
      it = it->autonomous() ? actions_.erase(it) : std::next(it);
    }
  }
  if (d == nullptr) return;
  d->Stop();  // no new local decision from here on
  std::vector<v1::ActionResult> late;
  {
    absl::MutexLock lock(&mu_);
    // The local action in flight finishes and is reported.
    mu_.Await(absl::Condition(
        +[](AgentClient* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu_) {
          return !c->executing_autonomous_ || c->stop_;
        },
        this));
    late.swap(late_);
  }
  for (const auto& r : late) d->RecordResult(r);
  v1::Handback handback = d->Handback(since, options_.handback);
  UPKEEP_LOG(info, "autonomy_handed_back",
             {{"host", options_.host_id},
              {"actions", absl::StrCat(handback.actions_size())},
              {"events", absl::StrCat(handback.events_size())},
              {"dropped_actions", absl::StrCat(handback.dropped_actions())},
              {"dropped_events", absl::StrCat(handback.dropped_events())}});
  absl::MutexLock lock(&mu_);
  handback_ = std::move(handback);
  autonomous_ = false;
  handed_back_at_ = options_.clock->Now();
  down_since_ = options_.clock->Now();  // a fresh grace period for the new stream
}

}  // namespace upkeep::agent

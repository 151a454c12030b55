#include "agent/daemon/agent_client.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "core/log.h"
#include "core/tls/tls.h"

namespace upkeep::agent {

namespace v1 = upkeep::v1;

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
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
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
  observer_->Start([this](const v1::StackObservation& o, bool event) { OnObservation(o, event); });
  supervisor_ = std::thread([this] { SuperviseLoop(); });
  action_thread_ = std::thread([this] { ActionLoop(); });
  return absl::OkStatus();
}

void AgentClient::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    stop_ = true;
  }
  if (supervisor_.joinable()) supervisor_.join();  // cancels the stream, waits for OnDone
  if (action_thread_.joinable()) action_thread_.join();
  observer_->Stop();
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
  if (link->outbound.size() >= options_.max_outbound_queue && msg.has_observation()) {
    return false;  // the next observation replaces it
  }
  link->outbound.push_back(std::move(msg));
  link->reactor->WriteLocked();
  return true;
}

void AgentClient::OnObservation(const v1::StackObservation& o, bool event_driven) {
  v1::AgentMessage msg;
  *msg.mutable_observation()->add_stacks() = o;
  msg.mutable_observation()->set_event_driven(event_driven);
  Send(std::move(msg));  // when disconnected, the next observation after reconnecting replaces it
}

void AgentClient::Inbox(const v1::ControllerMessage& msg) {
  absl::MutexLock lock(&mu_);
  if (msg.has_desired()) {
    desired_.emplace(msg.desired().stacks().begin(), msg.desired().stacks().end());
    UPKEEP_LOG(info, "desired_state",
               {{"revision", absl::StrCat(msg.desired().revision())},
                {"stacks", absl::StrCat(msg.desired().stacks_size())}});
  } else if (msg.has_action()) {
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
      // Results that finished while we were away go right after the hello.
      for (auto& r : unsent_) *first.emplace_back().mutable_action_result() = std::move(r);
      unsent_.clear();
      link_ = link;
      link_done_ = false;
    }
    new Stream(this, link, std::move(first));  // deletes itself in OnDone
    // Until the stream ends: apply desired states as they come (never on a gRPC thread).
    struct Wake {
      AgentClient* c;
      bool cancelled;
    } wake{this, false};
    while (true) {
      std::optional<std::vector<v1::Stack>> desired;
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
      if (desired.has_value()) {
        executor_->SetDesired(*desired);
        observer_->SetDesired(*desired);
        observer_->RefreshNow();
      }
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
    }
    v1::AgentMessage msg;
    *msg.mutable_action_result() = executor_->Execute(action);
    if (!Send(msg)) {
      absl::MutexLock lock(&mu_);
      unsent_.push_back(msg.action_result());
    }
  }
}

}  // namespace upkeep::agent

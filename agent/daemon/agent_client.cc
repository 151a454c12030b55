#include "agent/daemon/agent_client.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/log.h"

namespace upkeep::agent {
namespace {

namespace v1 = upkeep::v1;

}  // namespace

absl::Status AgentClient::Start() {
  ObserverOptions o;
  o.host_id = options_.host_id;
  o.data_dir = options_.data_dir;
  o.docker_socket = options_.docker_socket;
  auto observer = StackObserver::Create(o);
  if (!observer.ok()) return observer.status();
  observer_ = std::move(*observer);
  auto executor = Executor::Create(options_.data_dir, observer_.get());
  if (!executor.ok()) return executor.status();
  executor_ = std::move(*executor);
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  args.SetMaxReceiveMessageSize(16 << 20);
  channel_ = grpc::CreateCustomChannel(options_.controller, grpc::InsecureChannelCredentials(),
                                       args);
  connect_thread_ = std::thread([this] { ConnectLoop(); });
  action_thread_ = std::thread([this] { ActionLoop(); });
  return absl::OkStatus();
}

void AgentClient::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    stop_ = true;
    if (ctx_ != nullptr) ctx_->TryCancel();
  }
  if (connect_thread_.joinable()) connect_thread_.join();
  if (action_thread_.joinable()) action_thread_.join();
  if (observer_ != nullptr) observer_->Stop();
}

bool AgentClient::connected() const {
  absl::MutexLock lock(&mu_);
  return stream_ != nullptr;
}

bool AgentClient::Write(const v1::AgentMessage& msg) {
  absl::MutexLock wlock(&write_mu_);
  grpc::ClientReaderWriter<v1::AgentMessage, v1::ControllerMessage>* stream;
  {
    absl::MutexLock lock(&mu_);
    stream = stream_;
  }
  return stream != nullptr && stream->Write(msg);
}

void AgentClient::OnObservation(const v1::StackObservation& o, bool event_driven) {
  v1::AgentMessage msg;
  *msg.mutable_observation()->add_stacks() = o;
  msg.mutable_observation()->set_event_driven(event_driven);
  Write(msg);  // when disconnected, the next observation after reconnecting replaces it
}

void AgentClient::ConnectLoop() {
  std::mt19937 rng(std::random_device{}());
  absl::Duration backoff = absl::Milliseconds(100);
  while (true) {
    auto stub = v1::AgentService::NewStub(channel_);
    grpc::ClientContext ctx;
    {
      absl::MutexLock lock(&mu_);
      if (stop_) return;
      ctx_ = &ctx;
    }
    std::unique_ptr<grpc::ClientReaderWriter<v1::AgentMessage, v1::ControllerMessage>> stream =
        stub->Connect(&ctx);
    v1::AgentMessage hello;
    hello.mutable_hello()->set_host_id(options_.host_id);
    hello.mutable_hello()->set_version(options_.version);
    for (const char* c : {"runtime.process", "runtime.docker", "proxy.nginx"}) {
      hello.mutable_hello()->add_capabilities(c);
    }
    bool ok = stream->Write(hello);
    if (ok) {
      {
        absl::MutexLock lock(&mu_);
        stream_ = stream.get();
      }
      UPKEEP_LOG(info, "connected", {{"controller", options_.controller},
                                     {"host", options_.host_id}});
      // Results that finished while we were away.
      std::deque<v1::ActionResult> unsent;
      {
        absl::MutexLock lock(&mu_);
        unsent.swap(unsent_);
      }
      for (auto& r : unsent) {
        v1::AgentMessage m;
        *m.mutable_action_result() = r;
        if (!Write(m)) {
          absl::MutexLock lock(&mu_);
          unsent_.push_back(r);
        }
      }
      v1::ControllerMessage in;
      bool got_any = false;
      while (stream->Read(&in)) {
        got_any = true;
        if (in.has_desired()) {
          std::vector<v1::Stack> stacks(in.desired().stacks().begin(),
                                        in.desired().stacks().end());
          UPKEEP_LOG(info, "desired_state", {{"revision", absl::StrCat(in.desired().revision())},
                                             {"stacks", absl::StrCat(stacks.size())}});
          executor_->SetDesired(stacks);
          observer_->SetDesired(stacks);
          bool start = false;
          {
            absl::MutexLock lock(&mu_);
            start = !observing_;
            observing_ = true;
          }
          if (start) {
            observer_->Start([this](const v1::StackObservation& o, bool event) {
              OnObservation(o, event);
            });
          }
          observer_->RefreshNow();
        } else if (in.has_action()) {
          absl::MutexLock lock(&mu_);
          actions_.push_back(in.action());
        }
      }
      if (got_any) backoff = absl::Milliseconds(100);
    }
    {
      absl::MutexLock wlock(&write_mu_);
      absl::MutexLock lock(&mu_);
      stream_ = nullptr;
    }
    const grpc::Status st = stream->Finish();
    {
      absl::MutexLock lock(&mu_);
      ctx_ = nullptr;
      if (stop_) return;
    }
    UPKEEP_LOG(warn, "disconnected", {{"controller", options_.controller},
                                      {"status", st.error_message()}});
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
          +[](AgentClient* c) { return c->stop_ || !c->actions_.empty(); }, this));
      if (stop_) return;
      action = actions_.front();
      actions_.pop_front();
    }
    v1::AgentMessage msg;
    *msg.mutable_action_result() = executor_->Execute(action);
    if (!Write(msg)) {
      absl::MutexLock lock(&mu_);
      unsent_.push_back(msg.action_result());
    }
  }
}

}  // namespace upkeep::agent

// FollowingAgent: a raw AgentService peer for host h1 of a stack "shop" with services backend
// and frontend, driven by the test or bench. It keeps one stream to whichever controller of a
// list accepts it (trying them in turn, as upkeep-agent does), says hello and its current
// observation on every new stream, and records each action received with the time. It answers
// an action only when told to.
#ifndef UPKEEP_TESTS_SUPPORT_ETCD_FOLLOWING_AGENT_H_
#define UPKEEP_TESTS_SUPPORT_ETCD_FOLLOWING_AGENT_H_

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "core/proto_time.h"
#include "grpcpp/grpcpp.h"
#include "upkeep/v1/agent_service.grpc.pb.h"

namespace upkeep::testing {

namespace v1 = upkeep::v1;

class FollowingAgent {
 public:
  explicit FollowingAgent(std::vector<std::string> controllers) {
    for (const auto& c : controllers) {
      stubs_.push_back(
          v1::AgentService::NewStub(grpc::CreateChannel(c, grpc::InsecureChannelCredentials())));
    }
    thread_ = std::thread([this] { Loop(); });
  }
  ~FollowingAgent() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
      if (ctx_ != nullptr) ctx_->TryCancel();
    }
    thread_.join();
  }
  void Observe(bool backend, bool frontend) {
    absl::MutexLock lock(&mu_);
    backend_ = backend;
    frontend_ = frontend;
    if (stream_ != nullptr) stream_->Write(ObservationLocked());
  }
  // Answers action `id` with `outcome` (success by default) on the current stream.
  bool Answer(const v1::Action& a, v1::ActionOutcome outcome = v1::ACTION_OUTCOME_SUCCEEDED) {
    v1::AgentMessage m;
    v1::ActionResult* r = m.mutable_action_result();
    r->set_id(a.id());
    r->set_kind(a.kind());
    r->set_target(a.target());
    r->set_outcome(outcome);
    if (outcome != v1::ACTION_OUTCOME_SUCCEEDED) r->set_message("failing on purpose");
    *r->mutable_started_at() = ToProto(absl::Now());
    *r->mutable_finished_at() = ToProto(absl::Now());
    absl::MutexLock lock(&mu_);
    return stream_ != nullptr && stream_->Write(m);
  }
  // Actions received, in order (a re-sent id appears again).
  std::vector<v1::Action> actions() {
    absl::MutexLock lock(&mu_);
    return actions_;
  }
  int connected_to() {
    absl::MutexLock lock(&mu_);
    return desired_from_;
  }
  // When each action of actions() arrived.
  std::vector<absl::Time> action_times() {
    absl::MutexLock lock(&mu_);
    return action_times_;
  }

 private:
  v1::AgentMessage ObservationLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    v1::AgentMessage m;
    v1::StackObservation* o = m.mutable_observation()->add_stacks();
    o->set_stack("shop");
    o->mutable_host()->set_host_id("h1");
    o->mutable_host()->set_agent_connected(true);
    *o->mutable_observed_at() = ToProto(absl::Now());
    for (auto [name, up] : {std::pair{"backend", backend_}, std::pair{"frontend", frontend_}}) {
      v1::ServiceObservation* s = o->add_services();
      s->set_name(name);
      s->set_exists(up);
      s->set_running(up);
      if (up) {
        s->set_health(v1::HEALTH_STATE_HEALTHY);
        s->mutable_probe()->set_ok(true);
      }
    }
    return m;
  }

  void Loop() {
    for (size_t i = 0;; ++i) {
      const int which = static_cast<int>(i % stubs_.size());
      grpc::ClientContext ctx;
      std::unique_ptr<grpc::ClientReaderWriter<v1::AgentMessage, v1::ControllerMessage>> stream;
      {
        absl::MutexLock lock(&mu_);
        if (stop_) return;
        ctx_ = &ctx;
      }
      stream = stubs_[which]->Connect(&ctx);
      v1::AgentMessage hello;
      hello.mutable_hello()->set_host_id("h1");
      hello.mutable_hello()->set_version("test");
      stream->Write(hello);
      v1::ControllerMessage m;
      bool first = true;
      while (stream->Read(&m)) {
        absl::MutexLock lock(&mu_);
        if (first) {
          stream_ = stream.get();
          stream_->Write(ObservationLocked());
          first = false;
        }
        if (m.has_desired()) desired_from_ = which;
        if (m.has_action()) {
          actions_.push_back(m.action());
          action_times_.push_back(absl::Now());
        }
      }
      {
        absl::MutexLock lock(&mu_);
        stream_ = nullptr;
        ctx_ = nullptr;
        if (desired_from_ == which) desired_from_ = -1;
        if (stop_) return;
      }
      stream->Finish();
      absl::SleepFor(absl::Milliseconds(50));  // reconnect backoff, as the agent's
    }
  }

  std::vector<std::unique_ptr<v1::AgentService::Stub>> stubs_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  grpc::ClientReaderWriter<v1::AgentMessage, v1::ControllerMessage>* stream_ ABSL_GUARDED_BY(mu_) =
      nullptr;
  bool backend_ ABSL_GUARDED_BY(mu_) = true;
  bool frontend_ ABSL_GUARDED_BY(mu_) = true;
  int desired_from_ ABSL_GUARDED_BY(mu_) = -1;
  std::vector<v1::Action> actions_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::Time> action_times_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace upkeep::testing

#endif  // UPKEEP_TESTS_SUPPORT_ETCD_FOLLOWING_AGENT_H_

// The agent's gRPC client (callback API) against the controller's real AgentService on
// loopback, with a real observer and executor driving real processes.
#include "agent/daemon/agent_client.h"

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "agent/daemon/host.h"
#include "controller/api/agent_service.h"
#include "core/manifest/loader.h"
#include "core/proto_time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/support/net.h"
#include "tests/support/sample_spec.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace upkeep::agent {
namespace {

namespace v1 = upkeep::v1;
using upkeep::testing::FreePort;
using upkeep::testing::WaitFor;

// Records what the controller's AgentService reports.
class Recorder : public controller::AgentListener {
 public:
  void OnConnected(const std::string& host, const v1::Hello&) override {
    absl::MutexLock lock(&mu_);
    ++connects_;
  }
  void OnObservation(const std::string& host, v1::ObservationReport report) override {
    absl::MutexLock lock(&mu_);
    for (const auto& s : report.stacks()) last_[s.stack()] = s;
  }
  void OnActionResult(const std::string& host, v1::ActionResult result) override {
    absl::MutexLock lock(&mu_);
    results_.push_back(std::move(result));
  }
  void OnDisconnected(const std::string& host) override {
    absl::MutexLock lock(&mu_);
    ++disconnects_;
  }
  int connects() {
    absl::MutexLock lock(&mu_);
    return connects_;
  }
  std::optional<v1::StackObservation> Last(const std::string& stack) {
    absl::MutexLock lock(&mu_);
    auto it = last_.find(stack);
    if (it == last_.end()) return std::nullopt;
    return it->second;
  }
  std::vector<v1::ActionResult> Results() {
    absl::MutexLock lock(&mu_);
    return results_;
  }

 private:
  absl::Mutex mu_;
  int connects_ ABSL_GUARDED_BY(mu_) = 0;
  int disconnects_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, v1::StackObservation> last_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::ActionResult> results_ ABSL_GUARDED_BY(mu_);
};

// A controller-side AgentService on a fixed loopback port, restartable.
class Controller {
 public:
  explicit Controller(int port) : port_(port) { Start(); }
  ~Controller() { Stop(); }
  void Start() {
    service_ = std::make_unique<controller::AgentServiceImpl>(&recorder);
    grpc::ServerBuilder b;
    b.AddListeningPort(address(), grpc::InsecureServerCredentials());
    b.RegisterService(service_.get());
    server_ = b.BuildAndStart();
  }
  void Stop() {
    if (server_ == nullptr) return;
    service_->Shutdown();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_.reset();
    service_.reset();
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  bool Send(v1::ControllerMessage m) { return service_->Send("h1", std::move(m)); }

  Recorder recorder;

 private:
  const int port_;
  std::unique_ptr<controller::AgentServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
};

v1::Stack ShopStack(int port) {
  v1::Stack s;
  s.mutable_metadata()->set_name("shop");
  s.mutable_spec()->add_hosts("h1");
  s.mutable_spec()->set_runtime(v1::RUNTIME_KIND_PROCESS);
  *s.mutable_spec()->add_services() = upkeep::testing::SampleProcessSpec("api", port);
  manifest::ApplyDefaults(&s);
  return s;
}

// What the daemon wires, in the daemon's order.
struct Agent {
  Agent(const std::string& dir, const std::string& controller) {
    host = MakeHost({dir, "", ExecPolicy{}});
    observer =
        std::move(*StackObserver::Create({"h1", /*data_dir=*/""}, &host->runtimes, &host->proxies));
    StackObserver* obs = observer.get();
    executor = std::move(
        *Executor::Create(dir, &host->runtimes, &host->proxies, [obs] { obs->RefreshNow(); }));
    AgentClientOptions o;
    o.controller = controller;
    o.host_id = "h1";
    o.data_dir = dir;
    client = std::make_unique<AgentClient>(o, observer.get(), executor.get());
  }
  std::unique_ptr<Host> host;
  std::unique_ptr<StackObserver> observer;
  std::unique_ptr<Executor> executor;
  std::unique_ptr<AgentClient> client;
};

v1::ControllerMessage Desired(const v1::Stack& s) {
  v1::ControllerMessage m;
  m.mutable_desired()->set_revision(1);
  *m.mutable_desired()->add_stacks() = s;
  return m;
}

v1::ControllerMessage ActionMsg(const std::string& id, v1::ActionKind kind) {
  v1::ControllerMessage m;
  m.mutable_action()->set_id(id);
  m.mutable_action()->set_stack("shop");
  m.mutable_action()->set_kind(kind);
  m.mutable_action()->set_target("api");
  return m;
}

TEST(AgentClient, AppliesTheDesiredStateRunsActionsOnceAndReportsTheirResults) {
  upkeep::testing::TempDir dir;
  Controller controller(FreePort());
  Agent agent(dir.path(), controller.address());
  ASSERT_TRUE(agent.client->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return controller.recorder.connects() == 1; }));
  EXPECT_TRUE(WaitFor([&] { return agent.client->connected(); }));
  const int port = FreePort();
  ASSERT_TRUE(controller.Send(Desired(ShopStack(port))));
  // The observer picks the stack up: "api" is not running yet.
  ASSERT_TRUE(WaitFor([&] {
    auto o = controller.recorder.Last("shop");
    return o.has_value() && o->services_size() == 1 && !o->services(0).running();
  }));
  ASSERT_TRUE(controller.Send(ActionMsg("start-1", v1::ACTION_KIND_START_SERVICE)));
  ASSERT_TRUE(WaitFor([&] { return controller.recorder.Results().size() == 1; }));
  EXPECT_EQ(controller.recorder.Results()[0].outcome(), v1::ACTION_OUTCOME_SUCCEEDED)
      << controller.recorder.Results()[0].message();
  // Fresh evidence follows the action.
  EXPECT_TRUE(WaitFor([&] {
    auto o = controller.recorder.Last("shop");
    return o.has_value() && o->services(0).running() &&
           o->services(0).health() == v1::HEALTH_STATE_HEALTHY;
  }));
  // The same id again: replayed, not run twice.
  ASSERT_TRUE(controller.Send(ActionMsg("start-1", v1::ACTION_KIND_START_SERVICE)));
  ASSERT_TRUE(WaitFor([&] { return controller.recorder.Results().size() == 2; }));
  EXPECT_TRUE(controller.recorder.Results()[1].replayed());
  ASSERT_TRUE(controller.Send(ActionMsg("stop-1", v1::ACTION_KIND_STOP_SERVICE)));
  ASSERT_TRUE(WaitFor([&] { return controller.recorder.Results().size() == 3; }));
  agent.client->Shutdown();
}

TEST(AgentClient, ReconnectsWhenTheControllerComesBack) {
  upkeep::testing::TempDir dir;
  Controller controller(FreePort());
  Agent agent(dir.path(), controller.address());
  ASSERT_TRUE(agent.client->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return controller.recorder.connects() == 1; }));
  controller.Stop();
  EXPECT_TRUE(WaitFor([&] { return !agent.client->connected(); }));
  controller.Start();
  EXPECT_TRUE(WaitFor([&] { return controller.recorder.connects() == 2; }, absl::Seconds(15)))
      << "the agent reconnects with backoff";
  EXPECT_TRUE(WaitFor([&] { return agent.client->connected(); }));
  ASSERT_TRUE(controller.Send(Desired(ShopStack(FreePort()))));
  EXPECT_TRUE(WaitFor([&] { return controller.recorder.Last("shop").has_value(); }));
}

TEST(AgentClient, ShutsDownPromptlyWhileNoControllerAnswers) {
  upkeep::testing::TempDir dir;
  Agent agent(dir.path(), absl::StrCat("127.0.0.1:", FreePort()));
  ASSERT_TRUE(agent.client->Start().ok());
  EXPECT_FALSE(agent.client->connected());
  const absl::Time t0 = absl::Now();
  agent.client->Shutdown();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(3));
}

v1::AgentMessage ObservationMsg(const std::string& stack, int seq, bool event_driven = false) {
  v1::AgentMessage m;
  auto* o = m.mutable_observation()->add_stacks();
  o->set_stack(stack);
  *o->mutable_observed_at() = ToProto(absl::FromUnixSeconds(seq));
  m.mutable_observation()->set_event_driven(event_driven);
  return m;
}

// The controller judges on the latest evidence, never on a backlog: a new observation of a
// stack replaces the unwritten ones queued before it (a burst once queued up to 1024 and had
// the controller act on observations 12 s old), never the one being written nor other
// messages, and goes after everything queued before it.
TEST(QueueOutbound, AnObservationReplacesTheUnwrittenOnesOfItsStack) {
  std::deque<v1::AgentMessage> q;
  ASSERT_TRUE(QueueOutbound(&q, 0, 100, ObservationMsg("shop", 1)));
  ASSERT_TRUE(QueueOutbound(&q, 1, 100, ObservationMsg("shop", 2, true)));  // 1 is in flight
  v1::AgentMessage result;
  result.mutable_action_result()->set_id("a1");
  ASSERT_TRUE(QueueOutbound(&q, 1, 100, result));
  ASSERT_TRUE(QueueOutbound(&q, 1, 100, ObservationMsg("blog", 3)));
  ASSERT_TRUE(QueueOutbound(&q, 1, 100, ObservationMsg("shop", 4)));
  ASSERT_EQ(q.size(), 4u);
  EXPECT_EQ(q[0].observation().stacks(0).observed_at().seconds(), 1) << "being written";
  EXPECT_EQ(q[1].action_result().id(), "a1");
  EXPECT_EQ(q[2].observation().stacks(0).stack(), "blog");
  EXPECT_EQ(q[3].observation().stacks(0).observed_at().seconds(), 4);
  EXPECT_TRUE(q[3].observation().event_driven()) << "it replaced an event-driven one";

  // Full: other stacks' observations wait for the next one; results are always queued.
  std::deque<v1::AgentMessage> full;
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(QueueOutbound(&full, 0, 3, ObservationMsg("s" + std::to_string(i), i)));
  EXPECT_FALSE(QueueOutbound(&full, 0, 3, ObservationMsg("other", 9)));
  EXPECT_TRUE(QueueOutbound(&full, 0, 3, ObservationMsg("s1", 10))) << "replaces s1's";
  EXPECT_TRUE(QueueOutbound(&full, 0, 3, result));
  EXPECT_EQ(full.size(), 4u);
}

}  // namespace
}  // namespace upkeep::agent

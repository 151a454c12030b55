// Autonomy over real gRPC on loopback: a real controller (SQLite store, reconciler, AgentService)
// that the test stops and starts, and the agent as the daemon wires it, healing real processes.
//   - partition (controller stopped): a crash is healed by the agent alone; after the controller
//     is back it shows the autonomous action, once, and nothing ran twice;
//   - a reconnect while an autonomous action runs: it finishes, is reported once, not re-run;
//   - the controller gone for good: a restart budget still stops a crash loop locally;
//   - a restarted agent that cannot reach the controller keeps healing from its disk copy.
#include <signal.h>

#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "agent/act/executor.h"
#include "agent/daemon/agent_client.h"
#include "agent/daemon/host.h"
#include "controller/api/agent_service.h"
#include "controller/metrics/metrics.h"
#include "controller/reconcile/reconciler.h"
#include "controller/store/store.h"
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

// The real controller on a fixed loopback port; its data directory outlives restarts.
class Controller {
 public:
  Controller(std::string dir, int port) : dir_(std::move(dir)), port_(port) { Start(); }
  ~Controller() { Stop(); }
  void Start() {
    store_ = std::move(*controller::OpenSqliteStore(dir_));
    controller::ReconcilerOptions o;
    o.resync = absl::Milliseconds(100);
    reconciler_ =
        std::move(*controller::Reconciler::Create(store_.get(), Clock::Real(), &metrics_, o));
    service_ = std::make_unique<controller::AgentServiceImpl>(reconciler_.get());
    reconciler_->SetHub(service_.get());
    grpc::ServerBuilder b;
    b.AddListeningPort(address(), grpc::InsecureServerCredentials());
    b.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
    b.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
    b.RegisterService(service_.get());
    server_ = b.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    reconciler_->Start();
  }
  void Stop() {
    if (server_ == nullptr) return;
    service_->Shutdown();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    reconciler_->Stop();
    server_.reset();
    service_.reset();
    reconciler_.reset();
    store_.reset();
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  controller::Reconciler* reconciler() { return reconciler_.get(); }
  controller::Store* store() { return store_.get(); }
  bool Connected(const std::string& host) {
    for (const auto& h : reconciler_->Hosts()) {
      if (h.host_id() == host) return h.connected();
    }
    return false;
  }
  std::vector<v1::ActionRecord> Actions() {
    auto a = store_->ListActions("shop", "h1", 1000);
    return a.ok() ? *a : std::vector<v1::ActionRecord>{};
  }
  std::vector<v1::Event> Events() {
    auto e = store_->ListEvents("shop", 0, 10000);
    return e.ok() ? *e : std::vector<v1::Event>{};
  }

 private:
  const std::string dir_;
  const int port_;
  controller::Metrics metrics_;
  std::unique_ptr<controller::Store> store_;
  std::unique_ptr<controller::Reconciler> reconciler_;
  std::unique_ptr<controller::AgentServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
};

v1::Stack Shop(int port, int budget = 5) {
  v1::Stack s;
  s.mutable_metadata()->set_name("shop");
  s.mutable_spec()->add_hosts("h1");
  s.mutable_spec()->set_runtime(v1::RUNTIME_KIND_PROCESS);
  *s.mutable_spec()->add_services() = upkeep::testing::SampleProcessSpec("api", port);
  s.mutable_spec()->mutable_policy()->mutable_restart_budget()->set_max(budget);
  manifest::ApplyDefaults(&s);
  *s.mutable_spec()->mutable_policy()->mutable_backoff()->mutable_initial() =
      ToProto(absl::Milliseconds(50));
  *s.mutable_spec()->mutable_policy()->mutable_backoff()->mutable_max() =
      ToProto(absl::Milliseconds(100));
  return s;
}

// A fault injector around the real executor: while `hold` is set, an autonomous action waits
// inside Execute (it is "in flight") until released.
class GatedExecutor : public Executor {
 public:
  explicit GatedExecutor(std::unique_ptr<Executor> real) : real_(std::move(real)) {}
  void SetDesired(const std::vector<v1::Stack>& stacks) override { real_->SetDesired(stacks); }
  std::vector<v1::ActionResult> Finished() override { return real_->Finished(); }
  v1::ActionResult Execute(const v1::Action& action) override {
    {
      absl::MutexLock lock(&mu_);
      if (hold_ && action.autonomous()) {
        ++held_;
        mu_.Await(absl::Condition(
            +[](bool* h) { return !*h; }, &hold_));
      }
      executed_[action.id()]++;
    }
    return real_->Execute(action);
  }
  void Hold(bool h) {
    absl::MutexLock lock(&mu_);
    hold_ = h;
  }
  int held() {
    absl::MutexLock lock(&mu_);
    return held_;
  }
  std::map<std::string, int> executed() {
    absl::MutexLock lock(&mu_);
    return executed_;
  }

 private:
  std::unique_ptr<Executor> real_;
  absl::Mutex mu_;
  bool hold_ ABSL_GUARDED_BY(mu_) = false;
  int held_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, int> executed_ ABSL_GUARDED_BY(mu_);
};

// What the daemon wires, in the daemon's order.
struct Agent {
  Agent(const std::string& dir, const std::string& controller) : dir(dir) {
    host = MakeHost({dir, "", ExecPolicy{}});
    observer =
        std::move(*StackObserver::Create({"h1", /*data_dir=*/""}, &host->runtimes, &host->proxies));
    StackObserver* obs = observer.get();
    executor = std::make_unique<GatedExecutor>(std::move(
        *Executor::Create(dir, &host->runtimes, &host->proxies, [obs] { obs->RefreshNow(); })));
    AgentClientOptions o;
    o.controller = controller;
    o.host_id = "h1";
    o.data_dir = dir;
    o.autonomous_after = absl::Seconds(1);
    client = std::make_unique<AgentClient>(o, observer.get(), executor.get());
  }
  ~Agent() { client->Shutdown(); }
  // The pid of the running "api" from the process runtime's state file (0: not running).
  int ApiPid() {
    std::ifstream in(dir + "/services/shop/api/state");
    int pid = 0;
    in >> pid;
    return pid;
  }
  bool Serving() { return ApiPid() > 0 && ::kill(ApiPid(), 0) == 0; }
  void Crash() {
    const int pid = ApiPid();
    ASSERT_GT(pid, 0);
    // A crash is SIGABRT: a SIGKILL upkeep did not send is a person's stop (left stopped).
    ASSERT_EQ(::kill(pid, SIGABRT), 0);
  }
  // Actions the agent's journal finished, by id.
  std::map<std::string, v1::ActionResult> Journal() {
    std::map<std::string, v1::ActionResult> out;
    for (auto& r : executor->Finished()) out[r.id()] = r;
    return out;
  }
  std::string dir;
  std::unique_ptr<Host> host;
  std::unique_ptr<StackObserver> observer;
  std::unique_ptr<GatedExecutor> executor;
  std::unique_ptr<AgentClient> client;
};

bool Healthy(Controller& c) {
  auto s = c.reconciler()->GetStack("shop");
  if (!s.ok()) return false;
  for (const auto& cond : s->status().conditions()) {
    if (cond.type() == "Ready") return cond.status() == "True";
  }
  return false;
}

int Count(const std::vector<v1::ActionRecord>& records, bool autonomous) {
  int n = 0;
  for (const auto& r : records) n += r.action().autonomous() == autonomous && !r.dry_run();
  return n;
}

struct World {
  World() : controller(cdir.path(), FreePort()), agent(adir.path(), controller.address()) {
    port = FreePort();
    EXPECT_TRUE(controller.reconciler()->Apply({Shop(port)}, false).ok());
    EXPECT_TRUE(agent.client->Start().ok());
    // The controller starts "api" (not running yet) and sees it healthy.
    EXPECT_TRUE(WaitFor([&] { return Healthy(controller); }, absl::Seconds(20)));
  }
  upkeep::testing::TempDir cdir, adir;
  Controller controller;
  Agent agent;
  int port = 0;
};

TEST(Autonomy, APartitionedHostHealsACrashAloneAndHandsItBackOnce) {
  World w;
  const int controller_actions_before = Count(w.controller.Actions(), false);
  w.controller.Stop();
  ASSERT_TRUE(WaitFor([&] { return w.agent.client->autonomous(); }, absl::Seconds(10)));
  w.agent.Crash();
  // Healed by the agent alone.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto d = w.agent.client->decider();
        if (d == nullptr) return false;
        auto recs = d->store()->ListActions("shop", "h1", 100);
        if (!recs.ok()) return false;
        for (const auto& r : *recs) {
          if (r.action().autonomous() && r.result().outcome() == v1::ACTION_OUTCOME_SUCCEEDED) {
            return true;
          }
        }
        return false;
      },
      absl::Seconds(15)));
  EXPECT_TRUE(WaitFor([&] { return w.agent.Serving(); }));
  w.controller.Start();
  ASSERT_TRUE(WaitFor([&] { return w.controller.Connected("h1"); }, absl::Seconds(15)));
  EXPECT_FALSE(w.agent.client->autonomous());
  // The controller shows the autonomous action and the agent's events, and converges.
  ASSERT_TRUE(WaitFor([&] { return Count(w.controller.Actions(), true) >= 1; }));
  EXPECT_TRUE(WaitFor([&] { return Healthy(w.controller); }, absl::Seconds(20)));
  const auto records = w.controller.Actions();
  std::set<std::string> ids;
  for (const auto& r : records) {
    EXPECT_TRUE(ids.insert(r.action().id()).second) << "recorded twice: " << r.action().id();
    if (r.action().autonomous()) {
      EXPECT_TRUE(absl::StartsWith(r.action().id(), "auto-h1-")) << r.action().id();
      EXPECT_EQ(r.result().outcome(), v1::ACTION_OUTCOME_SUCCEEDED);
    }
  }
  EXPECT_EQ(Count(records, false), controller_actions_before)
      << "the controller did not act again on what the agent healed";
  bool autonomous_event = false, handed_back = false;
  for (const auto& e : w.controller.Events()) {
    autonomous_event |= absl::StrContains(e.message(), "[autonomous]");
    handed_back |= e.reason() == "AutonomyHandedBack";
  }
  EXPECT_TRUE(autonomous_event);
  EXPECT_TRUE(handed_back);
  // Every action the controller knows ran exactly once on the agent.
  const auto journal = w.agent.Journal();
  for (const auto& [id, n] : w.agent.executor->executed()) {
    EXPECT_EQ(n, 1) << id;
    EXPECT_TRUE(journal.count(id)) << id;
  }
  for (const auto& r : records) {
    if (r.dry_run() || r.action().kind() == v1::ACTION_KIND_RESET_BUDGET) continue;
    EXPECT_TRUE(journal.count(r.action().id())) << "controller log names an action the agent "
                                                   "never ran: "
                                                << r.action().id();
  }
}

TEST(Autonomy, AReconnectDuringAnAutonomousActionReportsItOnceAndDoesNotRerunIt) {
  World w;
  w.controller.Stop();
  ASSERT_TRUE(WaitFor([&] { return w.agent.client->autonomous(); }, absl::Seconds(10)));
  w.agent.executor->Hold(true);
  w.agent.Crash();
  ASSERT_TRUE(WaitFor([&] { return w.agent.executor->held() == 1; }, absl::Seconds(15)));
  // The controller comes back while the local start is in flight.
  w.controller.Start();
  // The agent stops deciding but does not say hello before its action finished.
  ASSERT_FALSE(WaitFor([&] { return w.controller.Connected("h1"); }, absl::Seconds(1)));
  w.agent.executor->Hold(false);
  ASSERT_TRUE(WaitFor([&] { return w.controller.Connected("h1"); }, absl::Seconds(15)));
  ASSERT_TRUE(WaitFor([&] { return Count(w.controller.Actions(), true) == 1; }));
  EXPECT_TRUE(WaitFor([&] { return Healthy(w.controller); }, absl::Seconds(20)));
  const auto records = w.controller.Actions();
  EXPECT_EQ(Count(records, true), 1);
  for (const auto& [id, n] : w.agent.executor->executed()) EXPECT_EQ(n, 1) << id;
  int starts = 0;
  for (const auto& [id, n] : w.agent.executor->executed()) starts += absl::StartsWith(id, "auto-");
  EXPECT_EQ(starts, 1);
}

TEST(Autonomy, WithTheControllerGoneForGoodABudgetStillStopsACrashLoop) {
  upkeep::testing::TempDir cdir, adir;
  Controller controller(cdir.path(), FreePort());
  Agent agent(adir.path(), controller.address());
  ASSERT_TRUE(controller.reconciler()->Apply({Shop(FreePort(), /*budget=*/2)}, false).ok());
  ASSERT_TRUE(agent.client->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return Healthy(controller); }, absl::Seconds(20)));
  controller.Stop();  // for good
  ASSERT_TRUE(WaitFor([&] { return agent.client->autonomous(); }, absl::Seconds(10)));
  // The agent stays autonomous: the controller never comes back.
  const std::shared_ptr<LocalDecider> decider = agent.client->decider();
  ASSERT_NE(decider, nullptr);
  auto autonomous_starts = [&] {
    EXPECT_TRUE(agent.client->autonomous());
    auto recs = decider->store()->ListActions("shop", "h1", 100);
    if (!recs.ok()) return 0;
    int n = 0;
    for (const auto& r : *recs) {
      n += r.action().autonomous() && r.result().outcome() == v1::ACTION_OUTCOME_SUCCEEDED;
    }
    return n;
  };
  auto crash_looping = [&] {
    auto ev = decider->store()->ListEvents("shop", 0, 1000);
    if (!ev.ok()) return false;
    for (const auto& e : *ev) {
      if (e.reason() == "CrashLooping") return true;
    }
    return false;
  };
  // Crash it again each time it comes back, until the agent stops.
  for (int i = 0; i < 6 && !crash_looping(); ++i) {
    ASSERT_TRUE(WaitFor([&] { return agent.Serving(); }, absl::Seconds(20)));
    const int before = autonomous_starts();
    agent.Crash();
    ASSERT_TRUE(WaitFor([&] { return autonomous_starts() > before || crash_looping(); },
                        absl::Seconds(20)));
  }
  EXPECT_TRUE(crash_looping());
  // The alert may come with the start that spent the budget (the service healthy again, its
  // episode going on: CrashLooping while healthy); the next crash must then be left alone.
  if (agent.Serving()) {
    agent.Crash();
    ASSERT_TRUE(WaitFor([&] { return !agent.Serving(); }, absl::Seconds(10)));
  }
  // The budget (2, counting the controller's first start from the journal) held: no start
  // since, and the service stays down (the decider acts within milliseconds of a crash it
  // would repair; give it several observation rounds to prove it does not).
  const int spent = autonomous_starts();
  EXPECT_LE(spent, 2);
  EXPECT_FALSE(
      WaitFor([&] { return agent.Serving() || autonomous_starts() > spent; }, absl::Seconds(3)));
}

TEST(Autonomy, ARestartedAgentThatCannotReachTheControllerHealsFromItsDiskCopy) {
  upkeep::testing::TempDir cdir, adir;
  auto controller = std::make_unique<Controller>(cdir.path(), FreePort());
  const std::string address = controller->address();
  {
    Agent agent(adir.path(), address);
    ASSERT_TRUE(controller->reconciler()->Apply({Shop(FreePort())}, false).ok());
    ASSERT_TRUE(agent.client->Start().ok());
    ASSERT_TRUE(WaitFor([&] { return Healthy(*controller); }, absl::Seconds(20)));
  }
  controller.reset();
  Agent agent(adir.path(), address);
  ASSERT_TRUE(agent.client->Start().ok());
  ASSERT_TRUE(WaitFor([&] { return agent.client->autonomous(); }, absl::Seconds(10)));
  // The restarted agent adopted the running process; crash it.
  ASSERT_TRUE(WaitFor([&] { return agent.Serving(); }));
  const int pid = agent.ApiPid();
  agent.Crash();
  EXPECT_TRUE(WaitFor([&] { return agent.Serving() && agent.ApiPid() != pid; }, absl::Seconds(15)));
}

TEST(Autonomy, ACorruptDiskCopyIsReportedAndNeverActedOn) {
  upkeep::testing::TempDir cdir, adir;
  std::ofstream(adir.path() + "/desired.pb") << "upkeep-desired v1 3 10 abc\ntorn";
  Agent agent(adir.path(), absl::StrCat("127.0.0.1:", FreePort()));
  ASSERT_TRUE(agent.client->Start().ok());
  // No desired state known: the agent waits for a controller instead of deciding.
  EXPECT_FALSE(WaitFor([&] { return agent.client->autonomous(); }, absl::Seconds(2)));
}

}  // namespace
}  // namespace upkeep::agent

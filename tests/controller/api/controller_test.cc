// The controller in-process over real gRPC on loopback, with a real SQLite store: agents are
// raw AgentService streams driven by the test, so every message is the test's choice.
#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "controller/api/agent_service.h"
#include "controller/api/fleet_service.h"
#include "controller/metrics/metrics.h"
#include "controller/reconcile/reconciler.h"
#include "controller/store/store.h"
#include "core/clock.h"
#include "core/proto_time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/support/controller/doubles.h"
#include "tests/support/net.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace upkeep::controller {
namespace {

namespace v1 = upkeep::v1;
using upkeep::testing::WaitFor;

std::string StackYaml(const std::string& hosts, const std::string& port = "8002") {
  return absl::StrCat(R"(apiVersion: upkeep/v1
kind: Stack
metadata: {name: shop}
spec:
  hosts: [)",
                      hosts, R"(]
  runtime: process
  services:
    - name: backend
      process: {command: [backend]}
      port: )",
                      port, R"(
  policy: {backoff: {initial: 10ms}}
)");
}

class Controller {
 public:
  explicit Controller(const std::string& dir, bool faulty = false, Clock* clock = Clock::Real()) {
    store_ = std::move(*OpenSqliteStore(dir));
    if (faulty) {
      auto f = std::make_unique<upkeep::testing::FaultyStore>(std::move(store_));
      faulty_ = f.get();
      store_ = std::move(f);
    }
    reconciler_ = std::move(*Reconciler::Create(store_.get(), clock, &metrics_));
    agents_ = std::make_unique<AgentServiceImpl>(reconciler_.get());
    reconciler_->SetHub(agents_.get());
    fleet_ = std::make_unique<FleetServiceImpl>(reconciler_.get(), store_.get());
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    b.SetMaxReceiveMessageSize(64 << 10);
    b.RegisterService(agents_.get());
    b.RegisterService(fleet_.get());
    server_ = b.BuildAndStart();
    reconciler_->Start();
    channel_ =
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials());
    stub_ = v1::FleetService::NewStub(channel_);
  }
  ~Controller() {
    agents_->Shutdown();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    reconciler_->Stop();
  }
  v1::FleetService::Stub& fleet() { return *stub_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }
  Store& store() { return *store_; }
  Reconciler& reconciler() { return *reconciler_; }
  upkeep::testing::FaultyStore* faulty() { return faulty_; }

  grpc::Status Apply(const std::string& yaml, v1::ApplyResponse* resp) {
    v1::ApplyRequest req;
    req.add_manifests()->set_filename("shop.yaml");
    req.mutable_manifests(0)->set_content(yaml);
    grpc::ClientContext ctx;
    return stub_->Apply(&ctx, req, resp);
  }

 private:
  Metrics metrics_;
  std::unique_ptr<Store> store_;
  upkeep::testing::FaultyStore* faulty_ = nullptr;
  std::unique_ptr<Reconciler> reconciler_;
  std::unique_ptr<AgentServiceImpl> agents_;
  std::unique_ptr<FleetServiceImpl> fleet_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::FleetService::Stub> stub_;
};

// A raw agent stream; a reader thread collects what the controller sends.
class RawAgent {
 public:
  explicit RawAgent(std::shared_ptr<grpc::Channel> channel)
      : stub_(v1::AgentService::NewStub(channel)) {
    stream_ = stub_->Connect(&ctx_);
    reader_ = std::thread([this] {
      v1::ControllerMessage m;
      while (stream_->Read(&m)) {
        absl::MutexLock lock(&mu_);
        received_.push_back(m);
      }
      absl::MutexLock lock(&mu_);
      done_ = true;
    });
  }
  ~RawAgent() {
    ctx_.TryCancel();
    reader_.join();
  }
  bool Send(const v1::AgentMessage& m) { return stream_->Write(m); }
  bool Hello(const std::string& host) {
    v1::AgentMessage m;
    m.mutable_hello()->set_host_id(host);
    m.mutable_hello()->set_version("test");
    return Send(m);
  }
  grpc::Status Finish() {
    reader_.join();
    reader_ = std::thread([] {});
    return stream_->Finish();
  }
  bool done() {
    absl::MutexLock lock(&mu_);
    return done_;
  }
  std::vector<v1::ControllerMessage> received() {
    absl::MutexLock lock(&mu_);
    return received_;
  }
  std::vector<v1::Action> actions() {
    std::vector<v1::Action> out;
    for (const auto& m : received()) {
      if (m.has_action()) out.push_back(m.action());
    }
    return out;
  }
  bool has_desired() {
    for (const auto& m : received()) {
      if (m.has_desired()) return true;
    }
    return false;
  }

 private:
  std::unique_ptr<v1::AgentService::Stub> stub_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::AgentMessage, v1::ControllerMessage>> stream_;
  std::thread reader_;
  absl::Mutex mu_;
  std::vector<v1::ControllerMessage> received_;
  bool done_ = false;
};

v1::AgentMessage Observation(const std::string& host, bool backend_running) {
  v1::AgentMessage m;
  v1::StackObservation* o = m.mutable_observation()->add_stacks();
  o->set_stack("shop");
  o->mutable_host()->set_host_id(host);
  o->mutable_host()->set_agent_connected(true);
  *o->mutable_observed_at() = ToProto(absl::Now());
  v1::ServiceObservation* s = o->add_services();
  s->set_name("backend");
  s->set_exists(backend_running);
  s->set_running(backend_running);
  if (backend_running) {
    s->set_health(v1::HEALTH_STATE_HEALTHY);
    s->mutable_probe()->set_ok(true);
  }
  return m;
}

// The agent's answer that `a` succeeded, finished now.
v1::AgentMessage Succeeded(const v1::Action& a) {
  v1::AgentMessage m;
  v1::ActionResult* r = m.mutable_action_result();
  r->set_id(a.id());
  r->set_kind(a.kind());
  r->set_target(a.target());
  r->set_outcome(v1::ACTION_OUTCOME_SUCCEEDED);
  *r->mutable_finished_at() = ToProto(absl::Now());
  return m;
}

class ControllerTest : public ::testing::Test {
 protected:
  upkeep::testing::TempDir dir_;
};

TEST_F(ControllerTest, RoutesActionsToTheRightAgentOfAFleet) {
  Controller c(dir_.path());
  v1::ApplyResponse resp;
  ASSERT_TRUE(c.Apply(StackYaml("h1, h2"), &resp).ok());
  RawAgent a1(c.channel()), a2(c.channel());
  ASSERT_TRUE(a1.Hello("h1"));
  ASSERT_TRUE(a2.Hello("h2"));
  ASSERT_TRUE(WaitFor([&] { return a1.has_desired() && a2.has_desired(); }));
  ASSERT_TRUE(a1.Send(Observation("h1", false)));
  ASSERT_TRUE(a2.Send(Observation("h2", true)));
  ASSERT_TRUE(WaitFor([&] { return !a1.actions().empty(); }));
  const v1::Action act = a1.actions()[0];
  EXPECT_EQ(act.kind(), v1::ACTION_KIND_START_SERVICE);
  EXPECT_EQ(act.target(), "backend");
  EXPECT_EQ(act.host(), "h1");
  EXPECT_TRUE(a2.actions().empty());
  // The result is recorded and the action audited with its reason.
  ASSERT_TRUE(a1.Send(Succeeded(act)));
  ASSERT_TRUE(a1.Send(Observation("h1", true)));
  ASSERT_TRUE(WaitFor([&] {
    auto actions = c.store().ListActions("shop", "h1", 10);
    return actions.ok() && actions->size() == 1 &&
           (*actions)[0].verification() == v1::VERIFICATION_FIXED;
  })) << "the start should be verified as FIXED on the next observation";
}

TEST_F(ControllerTest, ResendsAnUnansweredActionWithTheSameIdOnReconnect) {
  Controller c(dir_.path());
  v1::ApplyResponse resp;
  ASSERT_TRUE(c.Apply(StackYaml("h1"), &resp).ok());
  std::string id;
  {
    RawAgent a(c.channel());
    ASSERT_TRUE(a.Hello("h1"));
    ASSERT_TRUE(a.Send(Observation("h1", false)));
    ASSERT_TRUE(WaitFor([&] { return !a.actions().empty(); }));
    id = a.actions()[0].id();
  }  // disconnects without answering
  RawAgent again(c.channel());
  ASSERT_TRUE(again.Hello("h1"));
  ASSERT_TRUE(WaitFor([&] { return !again.actions().empty(); }));
  EXPECT_EQ(again.actions()[0].id(), id);
  auto actions = c.store().ListActions("shop", "h1", 10);
  ASSERT_TRUE(actions.ok());
  EXPECT_EQ(actions->size(), 1u) << "re-sent, not a new action";
}

TEST_F(ControllerTest, PendingActionsSurviveAControllerRestart) {
  std::string id;
  {
    Controller c(dir_.path());
    v1::ApplyResponse resp;
    ASSERT_TRUE(c.Apply(StackYaml("h1"), &resp).ok());
    RawAgent a(c.channel());
    ASSERT_TRUE(a.Hello("h1"));
    ASSERT_TRUE(a.Send(Observation("h1", false)));
    ASSERT_TRUE(WaitFor([&] { return !a.actions().empty(); }));
    id = a.actions()[0].id();
  }
  Controller restarted(dir_.path());
  RawAgent a(restarted.channel());
  ASSERT_TRUE(a.Hello("h1"));
  ASSERT_TRUE(WaitFor([&] { return !a.actions().empty(); }));
  EXPECT_EQ(a.actions()[0].id(), id);
}

TEST_F(ControllerTest, PausedStackPlansButSendsNothing) {
  Controller c(dir_.path());
  v1::ApplyResponse resp;
  ASSERT_TRUE(c.Apply(StackYaml("h1"), &resp).ok());
  {
    grpc::ClientContext ctx;
    v1::PauseRequest req;
    req.set_stack("shop");
    v1::PauseResponse r;
    ASSERT_TRUE(c.fleet().Pause(&ctx, req, &r).ok());
  }
  RawAgent a(c.channel());
  ASSERT_TRUE(a.Hello("h1"));
  ASSERT_TRUE(a.Send(Observation("h1", false)));
  v1::PlanResponse plan;
  ASSERT_TRUE(WaitFor([&] {
    grpc::ClientContext ctx;
    v1::PlanRequest req;
    req.set_name("shop");
    plan.Clear();
    return c.fleet().Plan(&ctx, req, &plan).ok() && plan.diagnoses_size() == 1 &&
           plan.diagnoses(0).actions_size() == 1;
  }));
  EXPECT_EQ(plan.diagnoses(0).actions(0).policy(), v1::POLICY_VERDICT_PAUSED);
  EXPECT_TRUE(a.actions().empty()) << "nothing was sent while paused";
  // Resume: now it acts.
  {
    grpc::ClientContext ctx;
    v1::PauseRequest req;
    req.set_stack("shop");
    v1::PauseResponse r;
    ASSERT_TRUE(c.fleet().Resume(&ctx, req, &r).ok());
  }
  ASSERT_TRUE(WaitFor([&] { return !a.actions().empty(); }));
}

// `upkeepctl pause stack shop --for D`: planned, not acted on, until D is up; then the
// controller resumes by itself (event "Resumed ... pause expired") and acts.
TEST_F(ControllerTest, PauseForResumesByItself) {
  Controller c(dir_.path());
  v1::ApplyResponse resp;
  ASSERT_TRUE(c.Apply(StackYaml("h1"), &resp).ok());
  {
    grpc::ClientContext ctx;
    v1::PauseRequest req;
    req.set_stack("shop");
    req.mutable_duration()->set_seconds(1);
    v1::PauseResponse r;
    ASSERT_TRUE(c.fleet().Pause(&ctx, req, &r).ok());
  }
  auto stack = c.reconciler().GetStack("shop");
  ASSERT_TRUE(stack.ok());
  EXPECT_TRUE(stack->status().paused());
  EXPECT_TRUE(stack->status().has_paused_until());
  RawAgent a(c.channel());
  ASSERT_TRUE(a.Hello("h1"));
  ASSERT_TRUE(a.Send(Observation("h1", false)));
  // Nobody resumes it: the start goes out once the pause has run out.
  ASSERT_TRUE(WaitFor([&] { return !a.actions().empty(); }, absl::Seconds(20)));
  EXPECT_EQ(a.actions()[0].kind(), v1::ACTION_KIND_START_SERVICE);
  EXPECT_TRUE(WaitFor([&] {
    auto events = c.store().ListEvents("shop", 0, 100);
    if (!events.ok()) return false;
    for (const auto& e : *events) {
      if (e.reason() == "Resumed" && absl::StrContains(e.message(), "pause expired")) return true;
    }
    return false;
  }));
  stack = c.reconciler().GetStack("shop");
  ASSERT_TRUE(stack.ok());
  EXPECT_FALSE(stack->status().paused());
  EXPECT_FALSE(stack->status().has_paused_until());
}

// `upkeepctl pause host h1 --for 30m` (or `pause stack shop --for 30m`), then the controller
// restarts: the host (stack) stays paused until the 30 minutes are up and then resumes by itself
// (the end of the pause is in the store).
void PauseForSurvivesAControllerRestart(const std::string& dir, bool host) {
  SimulatedClock clock(absl::Now());
  absl::Time until;
  {
    Controller c(dir, false, &clock);
    v1::ApplyResponse resp;
    ASSERT_TRUE(c.Apply(StackYaml("h1"), &resp).ok());
    grpc::ClientContext ctx;
    v1::PauseRequest req;
    if (host) {
      req.set_host("h1");
    } else {
      req.set_stack("shop");
    }
    req.mutable_duration()->set_seconds(30 * 60);
    v1::PauseResponse r;
    until = clock.Now() + absl::Minutes(30);
    ASSERT_TRUE(c.fleet().Pause(&ctx, req, &r).ok());
  }  // the controller stops
  clock.Advance(absl::Minutes(29));
  Controller c(dir, false, &clock);
  RawAgent a(c.channel());
  ASSERT_TRUE(a.Hello("h1"));
  auto observe = [&] {
    v1::AgentMessage m = Observation("h1", false);
    *m.mutable_observation()->mutable_stacks(0)->mutable_observed_at() = ToProto(clock.Now());
    return a.Send(m);
  };
  ASSERT_TRUE(observe());
  // A minute before the end: still paused, the start is planned and not acted on.
  v1::PlannedAction planned;
  ASSERT_TRUE(WaitFor([&] {
    auto plan = c.reconciler().Plan("shop", "h1");
    if (!plan.ok() || plan->empty() || (*plan)[0].actions_size() == 0) return false;
    planned = (*plan)[0].actions(0);
    return true;
  }));
  EXPECT_EQ(planned.action().kind(), v1::ACTION_KIND_START_SERVICE) << planned.DebugString();
  EXPECT_EQ(planned.policy(), v1::POLICY_VERDICT_PAUSED) << planned.DebugString();
  // The end: the controller resumes the host by itself and acts.
  clock.Advance(absl::Minutes(2));
  ASSERT_TRUE(observe());
  ASSERT_TRUE(WaitFor([&] { return !a.actions().empty(); }, absl::Seconds(20)));
  EXPECT_EQ(a.actions()[0].kind(), v1::ACTION_KIND_START_SERVICE);
  std::vector<v1::Event> resumed;
  ASSERT_TRUE(WaitFor([&] {
    auto events = c.store().ListEvents("", 0, 100);
    if (!events.ok()) return false;
    resumed.clear();
    for (const auto& e : *events) {
      if (e.reason() == "Resumed" && absl::StrContains(e.message(), "pause expired")) {
        resumed.push_back(e);
      }
    }
    return !resumed.empty();
  }));
  EXPECT_EQ(resumed.size(), 1u);
  EXPECT_GE(FromProto(resumed[0].at()), until) << resumed[0].DebugString();
  auto pauses = c.store().HostPauses();
  ASSERT_TRUE(pauses.ok());
  EXPECT_TRUE(pauses->empty()) << "resumed in the store too";
  auto stack = c.reconciler().GetStack("shop");
  ASSERT_TRUE(stack.ok());
  EXPECT_FALSE(stack->status().paused());
}

TEST_F(ControllerTest, HostPauseForSurvivesAControllerRestart) {
  PauseForSurvivesAControllerRestart(dir_.path(), /*host=*/true);
}

TEST_F(ControllerTest, StackPauseForSurvivesAControllerRestart) {
  PauseForSurvivesAControllerRestart(dir_.path(), /*host=*/false);
}

TEST_F(ControllerTest, BrokenManifestIsRejectedWithStructuredErrorsAndStoredStackStays) {
  Controller c(dir_.path());
  v1::ApplyResponse ok;
  ASSERT_TRUE(c.Apply(StackYaml("h1"), &ok).ok());
  ASSERT_EQ(ok.applied(0).change(), "created");
  v1::ApplyResponse resp;
  const grpc::Status st = c.Apply(StackYaml("h1", "99999"), &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::ApplyResponse details;
  ASSERT_TRUE(details.ParseFromString(st.error_details()));
  ASSERT_EQ(details.errors_size(), 1);
  EXPECT_EQ(details.errors(0).file(), "shop.yaml");
  EXPECT_EQ(details.errors(0).line(), 10);
  EXPECT_EQ(details.errors(0).field(), "spec.services[0].port");
  grpc::ClientContext ctx;
  v1::GetStackRequest req;
  req.set_name("shop");
  v1::Stack stored;
  ASSERT_TRUE(c.fleet().GetStack(&ctx, req, &stored).ok());
  EXPECT_EQ(stored.spec().services(0).port(), 8002);
  EXPECT_EQ(stored.metadata().generation(), 1);
  // The same spec again is "unchanged"; a change bumps the generation.
  v1::ApplyResponse same, changed;
  ASSERT_TRUE(c.Apply(StackYaml("h1"), &same).ok());
  EXPECT_EQ(same.applied(0).change(), "unchanged");
  ASSERT_TRUE(c.Apply(StackYaml("h1", "8003"), &changed).ok());
  EXPECT_EQ(changed.applied(0).generation(), 2);
}

TEST_F(ControllerTest, MalformedAgentStreamsAreRejectedAndTheServerKeepsServing) {
  Controller c(dir_.path());
  {
    RawAgent a(c.channel());
    ASSERT_TRUE(a.Send(Observation("h1", true)));  // before hello
    EXPECT_EQ(a.Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    RawAgent a(c.channel());
    ASSERT_TRUE(a.Hello("../../etc/passwd"));
    EXPECT_EQ(a.Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    RawAgent a(c.channel());
    ASSERT_TRUE(a.Hello("h1"));
    v1::AgentMessage big = Observation("h1", true);
    big.mutable_observation()->mutable_stacks(0)->mutable_proxy()->set_error_log_excerpt(
        std::string(200 << 10, 'x'));
    a.Send(big);
    EXPECT_EQ(a.Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  {
    RawAgent a(c.channel());
    ASSERT_TRUE(a.Hello("h1"));
    v1::AgentMessage r;
    r.mutable_action_result();  // no id
    ASSERT_TRUE(a.Send(r));
    EXPECT_EQ(a.Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  v1::ApplyResponse resp;
  ASSERT_TRUE(c.Apply(StackYaml("h1"), &resp).ok());
  RawAgent good(c.channel());
  ASSERT_TRUE(good.Hello("h1"));
  EXPECT_TRUE(WaitFor([&] { return good.has_desired(); }));
}

TEST_F(ControllerTest, WatchEventsStreamsStoredThenLiveEvents) {
  Controller c(dir_.path());
  v1::ApplyResponse resp;
  ASSERT_TRUE(c.Apply(StackYaml("h1"), &resp).ok());
  grpc::ClientContext ctx;
  v1::WatchEventsRequest req;
  auto reader = c.fleet().WatchEvents(&ctx, req);
  v1::Event e;
  ASSERT_TRUE(reader->Read(&e));
  EXPECT_EQ(e.reason(), "Applied");
  RawAgent a(c.channel());
  ASSERT_TRUE(a.Hello("h1"));
  bool connected = false;
  while (!connected && reader->Read(&e)) connected = e.reason() == "AgentConnected";
  EXPECT_TRUE(connected);
  ctx.TryCancel();
}

TEST_F(ControllerTest, StoreKeepsEverythingAcrossReopen) {
  {
    auto store = OpenSqliteStore(dir_.path());
    ASSERT_TRUE(store.ok());
    v1::Stack s;
    s.mutable_metadata()->set_name("a");
    ASSERT_TRUE((*store)->ApplyStacks({s}).ok());
    v1::Event e;
    e.set_reason("X");
    ASSERT_TRUE((*store)->AppendEvent(&e).ok());
    EXPECT_EQ(e.seq(), 1);
    v1::ActionRecord r;
    r.mutable_action()->set_id("id1");
    r.mutable_action()->set_stack("a");
    r.mutable_action()->set_host("h");
    ASSERT_TRUE((*store)->PutAction(r).ok());
    ASSERT_TRUE((*store)->SetStackPaused("a", true).ok());
  }
  auto store = OpenSqliteStore(dir_.path());
  ASSERT_TRUE(store.ok());
  auto stacks = (*store)->ListStacks();
  ASSERT_TRUE(stacks.ok());
  ASSERT_EQ(stacks->size(), 1u);
  EXPECT_TRUE((*stacks)[0].status().paused());
  EXPECT_EQ((*stacks)[0].metadata().generation(), 1);
  EXPECT_EQ((*store)->ListEvents("", 0, 10)->size(), 1u);
  EXPECT_EQ((*store)->ListActions("a", "h", 10)->at(0).action().id(), "id1");
}

TEST_F(ControllerTest, MetricsAreServedInPrometheusFormat) {
  Metrics m;
  m.Inc("upkeep_actions_total", {{"kind", "START_SERVICE"}, {"outcome", "SUCCEEDED"}});
  m.Observe("upkeep_detect_to_action_seconds", 0.003);
  auto server = MetricsServer::Start("127.0.0.1:0", &m);
  ASSERT_TRUE(server.ok());
  std::string body;
  ASSERT_EQ(upkeep::testing::HttpGetStatus("127.0.0.1", (*server)->port(), "/metrics",
                                           absl::Seconds(5), &body),
            200);
  EXPECT_TRUE(absl::StrContains(
      body, "upkeep_actions_total{kind=\"START_SERVICE\",outcome=\"SUCCEEDED\"} 1"))
      << body;
  EXPECT_TRUE(absl::StrContains(body, "upkeep_detect_to_action_seconds_bucket{le=\"0.005\"} 1"))
      << body;
}

// Defect: any hello created a host entry that stayed forever.
TEST_F(ControllerTest, HellosFromHostsNoStackNamesLeaveNothingBehind) {
  Controller c(dir_.path());
  v1::ApplyResponse resp;
  ASSERT_TRUE(c.Apply(StackYaml("h1"), &resp).ok());
  for (int i = 0; i < 30; ++i) {
    RawAgent stranger(c.channel());
    ASSERT_TRUE(stranger.Hello(absl::StrCat("stranger-", i)));
    ASSERT_TRUE(WaitFor([&] { return stranger.has_desired(); }));
  }  // each stream is closed here
  ASSERT_TRUE(WaitFor([&] { return c.reconciler().MemorySizes().hosts == 0; }))
      << c.reconciler().MemorySizes().hosts << " host entries left";
  std::vector<v1::Host> hosts = c.reconciler().Hosts();
  ASSERT_EQ(hosts.size(), 1u);
  EXPECT_EQ(hosts[0].host_id(), "h1");
}

// Defect: when the store could not record an action, the action was sent anyway.
TEST_F(ControllerTest, NoActionIsSentWhileTheStoreCannotRecordIt) {
  Controller c(dir_.path(), /*faulty=*/true);
  v1::ApplyResponse resp;
  ASSERT_TRUE(c.Apply(StackYaml("h1"), &resp).ok());
  RawAgent a(c.channel());
  ASSERT_TRUE(a.Hello("h1"));
  ASSERT_TRUE(WaitFor([&] { return a.has_desired(); }));
  c.faulty()->fail_put_action = true;
  ASSERT_TRUE(a.Send(Observation("h1", false)));
  auto store_alert = [&] {
    auto events = c.store().ListEvents("shop", 0, 1000);
    for (const auto& e : *events) {
      if (e.reason() == "StoreUnavailable") return true;
    }
    return false;
  };
  ASSERT_TRUE(WaitFor(store_alert));
  EXPECT_TRUE(a.actions().empty()) << "an action without a durable record reached the agent";
  // The store recovers: the retry (with backoff) sends it, recorded.
  c.faulty()->fail_put_action = false;
  ASSERT_TRUE(WaitFor([&] { return !a.actions().empty(); }));
  EXPECT_TRUE(c.store().GetAction(a.actions()[0].id()).ok());
}

// An alert stands while a repair is in flight: a diagnosis that waits for a result looked at
// nothing, so it clears nothing (the e2e saw "Flapping" resolved and raised again mid-repair).
TEST_F(ControllerTest, AnAlertIsNotResolvedWhileARepairIsInFlight) {
  Controller c(dir_.path());
  v1::ApplyResponse resp;
  ASSERT_TRUE(c.Apply(StackYaml("h1"), &resp).ok());
  RawAgent a(c.channel());
  ASSERT_TRUE(a.Hello("h1"));
  ASSERT_TRUE(WaitFor([&] { return a.has_desired(); }));
  auto with_full_disk = [](v1::AgentMessage m) {
    v1::FilesystemUsage* fs =
        m.mutable_observation()->mutable_stacks(0)->mutable_host()->add_filesystems();
    fs->set_mount("/var/log");
    fs->set_used_percent(99);
    fs->add_holds("nginx logs");
    return m;
  };
  auto count = [&](const std::string& reason) {
    size_t n = 0;
    auto events = c.store().ListEvents("shop", 0, 1000);
    for (const auto& e : *events) {
      n += e.reason() == reason && absl::StrContains(e.message(), "DiskFull");
    }
    return n;
  };
  ASSERT_TRUE(a.Send(with_full_disk(Observation("h1", false))));
  ASSERT_TRUE(WaitFor([&] { return !a.actions().empty() && count("Alert") == 1; }));
  // The start is not answered; the next observation is diagnosed as waiting for its result.
  ASSERT_TRUE(a.Send(with_full_disk(Observation("h1", false))));
  ASSERT_TRUE(WaitFor([&] {
    auto stack = c.reconciler().GetStack("shop");
    if (!stack.ok() || stack->status().diagnoses_size() != 1) return false;
    for (const auto& n : stack->status().diagnoses(0).path()) {
      if (n.step() == "action.in_flight" && absl::StartsWith(n.decision(), "yes")) return true;
    }
    return false;
  }));
  EXPECT_EQ(count("Resolved"), 0u) << "the alert cleared on a diagnosis that judged nothing";
  // The disk is freed and the start answered: the next diagnosis looks again and clears it.
  const v1::Action act = a.actions()[0];
  ASSERT_TRUE(a.Send(Succeeded(act)));
  ASSERT_TRUE(a.Send(Observation("h1", true)));
  EXPECT_TRUE(WaitFor([&] { return count("Resolved") == 1; })) << [&] {
    std::string out;
    auto events = c.store().ListEvents("shop", 0, 1000);
    for (const auto& e : *events) {
      absl::StrAppend(&out, "\n", e.reason(), ": ", e.message());
    }
    return out;
  }();
  EXPECT_EQ(count("Alert"), 1u);
}

// A hello repeats its hand-back when the stream broke before the agent heard it was recorded:
// the second one records nothing twice.
TEST_F(ControllerTest, ARepeatedHandbackIsRecordedOnce) {
  Controller c(dir_.path());
  v1::ApplyResponse resp;
  ASSERT_TRUE(c.Apply(StackYaml("h1"), &resp).ok());
  v1::AgentMessage hello;
  hello.mutable_hello()->set_host_id("h1");
  hello.mutable_hello()->set_version("test");
  v1::Handback* hb = hello.mutable_hello()->mutable_handback();
  const absl::Time t0 = absl::Now() - absl::Minutes(1);
  *hb->mutable_autonomous_since() = ToProto(t0);
  *hb->mutable_autonomous_until() = ToProto(t0 + absl::Seconds(30));
  v1::ActionRecord* r = hb->add_actions();
  r->mutable_action()->set_id("local-1");
  r->mutable_action()->set_stack("shop");
  r->mutable_action()->set_host("h1");
  r->mutable_action()->set_kind(v1::ACTION_KIND_START_SERVICE);
  r->mutable_action()->set_target("backend");
  r->mutable_action()->set_autonomous(true);
  *r->mutable_requested_at() = ToProto(t0 + absl::Seconds(1));
  r->mutable_result()->set_id("local-1");
  r->mutable_result()->set_outcome(v1::ACTION_OUTCOME_SUCCEEDED);
  for (int i = 1; i <= 2; ++i) {
    v1::Event* e = hb->add_events();
    e->set_seq(i);
    *e->mutable_at() = ToProto(t0 + absl::Seconds(i));
    e->set_type("Normal");
    e->set_reason("ActionSucceeded");
    e->set_stack("shop");
    e->set_message(absl::StrCat("local event ", i));
  }
  auto count = [&](const std::string& text) {
    size_t n = 0;
    auto events = c.store().ListEvents("shop", 0, 1000);
    for (const auto& e : *events) n += absl::StrContains(e.message(), text);
    return n;
  };
  for (int attempt = 0; attempt < 2; ++attempt) {
    RawAgent a(c.channel());
    ASSERT_TRUE(a.Send(hello));
    ASSERT_TRUE(WaitFor([&] { return a.has_desired(); }));
  }  // each stream breaks after the hello was processed
  // One more event decided since: only it is new.
  v1::Event* e = hb->add_events();
  e->set_seq(3);
  *e->mutable_at() = ToProto(t0 + absl::Seconds(3));
  e->set_stack("shop");
  e->set_message("local event 3");
  RawAgent a(c.channel());
  ASSERT_TRUE(a.Send(hello));
  ASSERT_TRUE(WaitFor([&] { return a.has_desired() && count("local event 3") == 1; }));
  EXPECT_EQ(count("local event 1"), 1u);
  EXPECT_EQ(count("local event 2"), 1u);
  EXPECT_EQ(count("decided on its own"), 2u) << "once for the first hand-back, once for event 3";
  auto actions = c.store().ListActions("shop", "h1", 10);
  ASSERT_TRUE(actions.ok());
  EXPECT_EQ(actions->size(), 1u);
}

// Defect: a WatchEvents handler's subscriber could run after the handler returned.
TEST_F(ControllerTest, WatchersComeAndGoWhileEventsFlow) {
  Controller c(dir_.path());
  v1::ApplyResponse resp;
  std::atomic<bool> stop{false};
  std::thread churn([&] {
    for (int i = 0; !stop; ++i) {
      v1::PauseRequest req;
      req.set_stack("shop");
      v1::PauseResponse r;
      grpc::ClientContext ctx;
      if (i % 2) {
        c.fleet().Pause(&ctx, req, &r);
      } else {
        c.fleet().Resume(&ctx, req, &r);
      }
    }
  });
  ASSERT_TRUE(c.Apply(StackYaml("h1"), &resp).ok());
  for (int i = 0; i < 40; ++i) {
    grpc::ClientContext ctx;
    v1::WatchEventsRequest req;
    req.set_stack("shop");
    auto reader = c.fleet().WatchEvents(&ctx, req);
    v1::Event e;
    ASSERT_TRUE(reader->Read(&e));
    ctx.TryCancel();
    while (reader->Read(&e)) {
    }
    reader->Finish();
  }
  stop = true;
  churn.join();
  EXPECT_TRUE(WaitFor([&] { return c.reconciler().events()->Subscribers() == 0; }));
}

}  // namespace
}  // namespace upkeep::controller

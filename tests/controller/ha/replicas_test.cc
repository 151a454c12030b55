// Controller replicas as real processes (upkeep-controller --store etcd) on a real 3-member
// etcd cluster. Most cases drive a raw AgentService stream (FollowingAgent: the test decides
// when an action is "in flight"), following the leader over the list of controllers as
// upkeep-agent does; RealAgentFollowsTheLeader... runs the real upkeep-agent with real
// processes (upkeep-sample-service) and checks its journal against the action log.
#include <httplib.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "controller/store/etcd_client.h"
#include "controller/store/etcd_store.h"
#include "core/proto_time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/etcd/etcd_cluster.h"
#include "tests/support/etcd/following_agent.h"
#include "tests/support/etcd/tcp_proxy.h"
#include "tests/support/net.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"
#include "upkeep/v1/agent_service.grpc.pb.h"
#include "upkeep/v1/controller_service.grpc.pb.h"
#include "upkeep/v1/fleet_service.grpc.pb.h"

namespace upkeep::controller {
namespace {

using upkeep::testing::FollowingAgent;

namespace v1 = upkeep::v1;
using upkeep::testing::WaitFor;

constexpr char kStack[] = R"(apiVersion: upkeep/v1
kind: Stack
metadata: {name: shop}
spec:
  hosts: [h1]
  runtime: process
  services:
    - name: backend
      process: {command: [backend]}
      port: 8002
    - name: frontend
      process: {command: [frontend]}
      port: 8003
  policy: {backoff: {initial: 10ms}}
)";

// A webhook receiver on 127.0.0.1: records the body of every POST to /hook.
class HookReceiver {
 public:
  HookReceiver() {
    server_.Post("/hook", [this](const httplib::Request& req, httplib::Response& res) {
      {
        absl::MutexLock lock(&mu_);
        bodies_.push_back(req.body);
      }
      res.set_content("ok", "text/plain");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~HookReceiver() {
    server_.stop();
    thread_.join();
  }
  std::string url() const { return absl::StrCat("http://127.0.0.1:", port_, "/hook"); }
  std::vector<std::string> bodies() {
    absl::MutexLock lock(&mu_);
    return bodies_;
  }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  absl::Mutex mu_;
  std::vector<std::string> bodies_ ABSL_GUARDED_BY(mu_);
};

// One upkeep-controller replica.
struct Replica {
  std::string address;
  std::unique_ptr<upkeep::testing::Subprocess> process;
  std::string log;
};

class ReplicasTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = upkeep::testing::EtcdCluster::Start(3);
    ASSERT_TRUE(c.ok()) << c.status();
    etcd_ = std::move(*c);
    EtcdOptions o;
    o.endpoints = etcd_->endpoints();
    client_ = std::move(*EtcdClient::Connect(o));
    store_ = std::make_unique<EtcdStore>(client_.get(), EtcdStoreOptions{});
  }

  // `lease`: 2 s makes takeovers quick; a test where leadership must stay put gives the
  // leader's etcd client time to move off a dead member first (over 2 s under ASan in CI).
  Replica StartReplica(const std::string& name, const std::string& endpoints = "",
                       const std::string& lease = "2s") {
    Replica r;
    r.address = absl::StrCat("127.0.0.1:", upkeep::testing::FreePort());
    r.log = dir_.Join(name + ".log");
    auto p = upkeep::testing::Subprocess::Start(
        {upkeep::testing::BinPath("upkeep-controller"), "--data", dir_.Join(name), "--listen",
         r.address, "--store", "etcd", "--etcd-endpoints",
         endpoints.empty() ? etcd_->EndpointList() : endpoints, "--leader-lease", lease,
         "--log-json"},
        r.log);
    EXPECT_TRUE(p.ok()) << p.status();
    if (p.ok()) r.process = std::move(*p);
    return r;
  }

  absl::StatusOr<v1::ListControllersResponse> Controllers(const std::string& address) {
    auto stub = v1::ControllerService::NewStub(
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
    v1::ListControllersResponse resp;
    grpc::Status st = stub->ListControllers(&ctx, v1::ListControllersRequest(), &resp);
    if (!st.ok()) return absl::UnavailableError(st.error_message());
    return resp;
  }

  bool Leads(const std::string& address) {
    auto l = Controllers(address);
    return l.ok() && l->leader() == address;
  }

  grpc::Status Apply(const std::string& address, const std::string& yaml) {
    auto stub =
        v1::FleetService::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    v1::ApplyRequest req;
    req.add_manifests()->set_filename("shop.yaml");
    req.mutable_manifests(0)->set_content(yaml);
    v1::ApplyResponse resp;
    grpc::ClientContext ctx;
    // Generous: the first writes of a fresh leader through the test's TCP proxies took over 5 s
    // under TSan.
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    return stub->Apply(&ctx, req, &resp);
  }

  absl::StatusOr<std::vector<v1::Notifier>> Notifiers(const std::string& address) {
    auto stub =
        v1::FleetService::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::ListNotifiersResponse resp;
    grpc::Status st = stub->ListNotifiers(&ctx, v1::ListNotifiersRequest(), &resp);
    if (!st.ok()) return absl::UnavailableError(st.error_message());
    return std::vector<v1::Notifier>(resp.notifiers().begin(), resp.notifiers().end());
  }

  // The delivery status of notifier `name` as replica `address` reports it (empty if none).
  std::optional<v1::NotifierStatus> NotifierStatus(const std::string& address,
                                                   const std::string& name) {
    auto list = Notifiers(address);
    if (!list.ok()) return std::nullopt;
    for (const auto& n : *list) {
      if (n.metadata().name() == name) return n.status();
    }
    return std::nullopt;
  }

  // Apply to the replica that was just seen to lead, as a client should: UNAVAILABLE is
  // retried. A replica is the leader (the election key names it) before it serves as one: it
  // drops its follower port and opens its leader port only once its reconciler has loaded the
  // store, and in between a call is refused (seen under TSan: "connection refused").
  grpc::Status ApplyToLeader(const std::string& address, const std::string& yaml) {
    grpc::Status status;
    WaitFor(
        [&] {
          status = Apply(address, yaml);
          return status.error_code() != grpc::StatusCode::UNAVAILABLE;
        },
        absl::Seconds(20));
    return status;
  }

  // Every action record, by id.
  std::map<std::string, v1::ActionRecord> Records() {
    std::map<std::string, v1::ActionRecord> out;
    auto all = store_->ListActions("", "", 10000);
    if (all.ok()) {
      for (auto& r : *all) out[r.action().id()] = r;
    } else if (all.status().message() != last_records_error_) {
      last_records_error_ = std::string(all.status().message());
      std::fprintf(stderr, "reading the action log: %s\n", last_records_error_.c_str());
    }
    return out;
  }

  std::string last_records_error_;
  upkeep::testing::TempDir dir_;
  std::unique_ptr<upkeep::testing::EtcdCluster> etcd_;
  std::unique_ptr<EtcdClient> client_;
  std::unique_ptr<EtcdStore> store_;
};

std::vector<v1::Action> For(const std::vector<v1::Action>& actions, const std::string& target) {
  std::vector<v1::Action> out;
  for (const auto& a : actions) {
    if (a.target() == target) out.push_back(a);
  }
  return out;
}

std::string Describe(const std::vector<v1::Action>& actions) {
  std::string out = absl::StrCat(actions.size(), " actions received:");
  for (const auto& a : actions) absl::StrAppend(&out, " ", a.id(), "/", a.target());
  return out;
}

std::string Tail(const std::string& path) {
  std::ifstream in(path);
  std::string line, out;
  std::vector<std::string> lines;
  while (std::getline(in, line)) lines.push_back(line);
  for (size_t i = lines.size() > 40 ? lines.size() - 40 : 0; i < lines.size(); ++i) {
    out += lines[i] + "\n";
  }
  return out;
}

TEST_F(ReplicasTest, FollowerTakesOverAfterSigkillWithoutLosingOrDoublingTheRepair) {
  Replica a = StartReplica("a");
  ASSERT_TRUE(WaitFor([&] { return Leads(a.address); }, absl::Seconds(20)));
  Replica b = StartReplica("b");
  ASSERT_TRUE(WaitFor(
      [&] {
        auto l = Controllers(b.address);
        return l.ok() && l->replicas_size() == 2 && l->leader() == a.address;
      },
      absl::Seconds(20)));
  // The follower refuses writes and names the leader.
  grpc::Status refused = Apply(b.address, kStack);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(refused.error_message().find(a.address), std::string::npos) << refused.error_message();
  ASSERT_TRUE(ApplyToLeader(a.address, kStack).ok()) << Tail(a.log);

  // The agent lists the follower first: it must end up on the leader.
  FollowingAgent agent({b.address, a.address});
  agent.Observe(/*backend=*/false, /*frontend=*/true);
  ASSERT_TRUE(WaitFor([&] { return !For(agent.actions(), "backend").empty(); }, absl::Seconds(20)));
  const v1::Action repair = For(agent.actions(), "backend").front();
  // In flight: recorded, unanswered. The leader dies.
  ASSERT_TRUE(WaitFor([&] { return Records().count(repair.id()) == 1; }));
  a.process->Signal(SIGKILL);
  a.process->Wait(absl::Seconds(10));
  // A fault during the takeover: the frontend goes down too.
  agent.Observe(/*backend=*/false, /*frontend=*/false);

  ASSERT_TRUE(WaitFor([&] { return Leads(b.address); }, absl::Seconds(30)))
      << "follower never took over";
  // The new leader re-sends the same repair (not a second one)...
  ASSERT_TRUE(
      WaitFor([&] { return For(agent.actions(), "backend").size() >= 2; }, absl::Seconds(30)))
      << Describe(agent.actions()) << "\nnew leader's log:\n"
      << Tail(b.log);
  std::set<std::string> backend_ids;
  for (const auto& x : For(agent.actions(), "backend")) backend_ids.insert(x.id());
  EXPECT_EQ(backend_ids, std::set<std::string>{repair.id()}) << "the repair was issued twice";
  ASSERT_TRUE(agent.Answer(repair));
  agent.Observe(/*backend=*/true, /*frontend=*/false);
  // ... and then heals the fault injected during the takeover.
  ASSERT_TRUE(WaitFor([&] { return !For(agent.actions(), "frontend").empty(); }, absl::Seconds(30)))
      << Describe(agent.actions()) << "\nnew leader's log:\n"
      << Tail(b.log);
  ASSERT_TRUE(agent.Answer(For(agent.actions(), "frontend").front()));
  agent.Observe(true, true);
  ASSERT_TRUE(WaitFor([&] {
    auto r = Records();
    auto it = r.find(repair.id());
    return it != r.end() && it->second.has_result();
  }));
  // Exactly one record per target, each answered once.
  std::map<std::string, int> per_target;
  for (const auto& [id, rec] : Records()) ++per_target[rec.action().target()];
  EXPECT_EQ(per_target["backend"], 1);
  EXPECT_EQ(per_target["frontend"], 1);
}

TEST_F(ReplicasTest, NewLeaderDeliversToANotifierAppliedThroughTheOldOne) {
  HookReceiver hook;
  const std::string url_file = dir_.Join("hook.url");
  {
    std::ofstream out(url_file);
    out << hook.url() << "\n";
  }
  const std::string notifier = absl::StrCat(R"(apiVersion: upkeep/v1
kind: Notifier
metadata: {name: ops}
spec:
  type: webhook
  url: {file: )",
                                            url_file, R"(}
  events: [actionsFailed, alerts]
)");
  Replica a = StartReplica("a");
  ASSERT_TRUE(WaitFor([&] { return Leads(a.address); }, absl::Seconds(20))) << Tail(a.log);
  Replica b = StartReplica("b");
  ASSERT_TRUE(WaitFor([&] { return Controllers(b.address).ok(); }, absl::Seconds(30)))
      << Tail(b.log);
  // The notifier is applied through the leader (only the leader writes) and used once there.
  grpc::Status applied = ApplyToLeader(a.address, std::string(kStack) + "---\n" + notifier);
  ASSERT_TRUE(applied.ok()) << applied.error_message() << Tail(a.log);
  {
    auto stub = v1::FleetService::NewStub(
        grpc::CreateChannel(a.address, grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::TestNotifierRequest req;
    req.set_name("ops");
    v1::TestNotifierResponse resp;
    ASSERT_TRUE(stub->TestNotifier(&ctx, req, &resp).ok());
    ASSERT_TRUE(resp.delivered()) << resp.error();
  }
  ASSERT_EQ(hook.bodies().size(), 1u);
  // The follower reads the notifier and its delivery status from etcd.
  ASSERT_TRUE(WaitFor([&] {
    auto st = NotifierStatus(b.address, "ops");
    return st.has_value() && st->sent() == 1;
  })) << "the follower does not see the leader's notifier";

  a.process->Signal(SIGKILL);
  a.process->Wait(absl::Seconds(10));
  ASSERT_TRUE(WaitFor([&] { return Leads(b.address); }, absl::Seconds(30)))
      << "follower never took over";
  // The new leader knows the notifier and carries on its counters (its leader port opens once
  // it has loaded the store: until then a call may be refused).
  std::optional<v1::NotifierStatus> carried;
  ASSERT_TRUE(WaitFor([&] {
    carried = NotifierStatus(b.address, "ops");
    return carried.has_value();
  })) << "the new leader lost the notifier\n"
      << Tail(b.log);
  EXPECT_EQ(carried->sent(), 1);

  // ... and delivers the next alert to it: a repair the agent reports failed.
  FollowingAgent agent({b.address, a.address});
  agent.Observe(/*backend=*/false, /*frontend=*/true);
  ASSERT_TRUE(WaitFor([&] { return !For(agent.actions(), "backend").empty(); }, absl::Seconds(30)))
      << Describe(agent.actions()) << Tail(b.log);
  ASSERT_TRUE(agent.Answer(For(agent.actions(), "backend").front(), v1::ACTION_OUTCOME_FAILED));
  ASSERT_TRUE(WaitFor([&] { return hook.bodies().size() >= 2; }, absl::Seconds(20)))
      << "no alert reached the webhook after the takeover\n"
      << Tail(b.log);
  const nlohmann::json alert = nlohmann::json::parse(hook.bodies()[1], nullptr, false);
  ASSERT_FALSE(alert.is_discarded()) << hook.bodies()[1];
  EXPECT_EQ(alert.value("notifier", ""), "ops");
  EXPECT_EQ(alert.value("event", ""), "actionsFailed");
  EXPECT_EQ(alert.value("stack", ""), "shop");
  EXPECT_EQ(alert.value("target", ""), "backend");
  ASSERT_TRUE(WaitFor([&] {
    auto st = NotifierStatus(b.address, "ops");
    return st.has_value() && st->sent() >= 2;
  })) << "the new leader's delivery was not counted";
}

// The processes a real agent started (in sessions of their own, so they outlive it): SIGKILLed
// by the pid in each service's state file (DATA/services/STACK/SERVICE/state) at the end.
class ServiceReaper {
 public:
  explicit ServiceReaper(std::string agent_data) : data_(std::move(agent_data)) {}
  ~ServiceReaper() {
    std::error_code ec;
    for (const auto& stack : std::filesystem::directory_iterator(data_ + "/services", ec)) {
      for (const auto& svc : std::filesystem::directory_iterator(stack.path(), ec)) {
        std::ifstream in(svc.path() / "state");
        int pid = 0;
        if (in >> pid && pid > 1) {
          ::kill(-pid, SIGKILL);
          ::kill(pid, SIGKILL);
        }
      }
    }
  }

 private:
  std::string data_;
};

// What the agent's journal (agent/act/journal.h) says: how often each action id was started
// ("S ID") and which finished ("F ID ...").
struct JournalCounts {
  std::map<std::string, int> started;
  std::set<std::string> finished;
};

JournalCounts ReadJournal(const std::string& path) {
  JournalCounts out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() < 3 || line[1] != ' ') continue;
    const std::string rest = line.substr(2);
    const std::string id = rest.substr(0, rest.find(' '));
    if (line[0] == 'S') ++out.started[id];
    if (line[0] == 'F') out.finished.insert(id);
  }
  return out;
}

// How many times the agent's process runtime started `service` (its `process_started` log
// lines).
int Starts(const std::string& agent_log, const std::string& service) {
  std::ifstream in(agent_log);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    if (line.find("\"process_started\"") != std::string::npos &&
        line.find(absl::StrCat("\"service\":\"", service, "\"")) != std::string::npos) {
      ++n;
    }
  }
  return n;
}

// The controller's "action_sent" log lines on `target` (each with the decision path that chose
// it): what a failing count is read from.
std::string ActionsSent(const std::string& log, const std::string& target) {
  std::ifstream in(log);
  std::string line, out;
  while (std::getline(in, line)) {
    if (line.find("\"action_sent\"") != std::string::npos &&
        line.find(absl::StrCat("\"target\":\"", target, "\"")) != std::string::npos) {
      out += line + "\n";
    }
  }
  return out;
}

bool HttpOk(int port, const std::string& path) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(1, 0);
  c.set_read_timeout(1, 0);
  auto r = c.Get(path.c_str());
  return r && r->status == 200;
}

TEST_F(ReplicasTest, RealAgentFollowsTheLeaderAcrossSigkillWithARepairInFlight) {
  // The backend's stop takes ~3 s (its wrapper ignores SIGTERM and lingers after the service
  // exits), so a restart is in the agent's hands for seconds: long enough to kill the leader
  // in the middle of it.
  // The backend's probe has a start period: the agent probes a service the moment it (re)starts
  // and again when the action that started it finishes, so under load two "connection refused"
  // probes fired within milliseconds of the start, before the process listens, met
  // failureThreshold 2 and the new leader rightly restarted a process the agent judged
  // unhealthy (seen under a loaded ctest -j2: 2 restarts, 3 starts). That judgement is the
  // agent's, not the takeover's; the start period keeps this case about the takeover.
  const std::string bin = dir_.Join("bin");
  std::filesystem::create_directories(bin);
  const std::string wrapper = bin + "/slow-stop";
  {
    std::ofstream out(wrapper);
    out << "#!/bin/sh\ntrap '' TERM\n\"$@\"\nsleep 3\n";
  }
  std::filesystem::permissions(wrapper, std::filesystem::perms::owner_all |
                                            std::filesystem::perms::group_read |
                                            std::filesystem::perms::others_read);
  const std::string sample = upkeep::testing::BinPath("upkeep-sample-service");
  const int backend_port = upkeep::testing::FreePort();
  const int frontend_port = upkeep::testing::FreePort();
  const std::string stack =
      absl::StrCat(R"(apiVersion: upkeep/v1
kind: Stack
metadata: {name: shop}
spec:
  hosts: [h1]
  runtime: process
  services:
    - name: backend
      process: {command: [)",
                   wrapper, ", ", sample, ", --name, backend, --port, \"", backend_port, R"("]}
      port: )",
                   backend_port, R"(
      probe: {http: {path: /health}, period: 200ms, timeout: 500ms, failureThreshold: 2, startPeriod: 2s}
      stopTimeout: 10s
    - name: frontend
      process: {command: [)",
                   sample, ", --name, frontend, --port, \"", frontend_port,
                   R"("]}
      port: )",
                   frontend_port, R"(
      probe: {http: {path: /health}, period: 200ms, timeout: 500ms, failureThreshold: 2}
  policy: {backoff: {initial: 10ms}}
)");
  Replica a = StartReplica("a");
  ASSERT_TRUE(WaitFor([&] { return Leads(a.address); }, absl::Seconds(20))) << Tail(a.log);
  Replica b = StartReplica("b");
  ASSERT_TRUE(WaitFor([&] { return Controllers(b.address).ok(); }, absl::Seconds(30)))
      << Tail(b.log);
  ASSERT_TRUE(ApplyToLeader(a.address, stack).ok()) << Tail(a.log);

  // The real agent, the follower first in its list. It stays with the controllers through the
  // takeover (--autonomous-after beyond it: this case is about the controllers' handover).
  const std::string agent_data = dir_.Join("agent");
  ServiceReaper reaper(agent_data);
  const std::string agent_log = dir_.Join("agent.log");
  auto agent = upkeep::testing::Subprocess::Start(
      {upkeep::testing::BinPath("upkeep-agent"), "--controller",
       absl::StrCat(b.address, ",", a.address), "--host-id", "h1", "--data", agent_data,
       "--allow-exec", bin, "--allow-exec", upkeep::testing::BinPath(""), "--autonomous-after",
       "60s", "--log-json"},
      agent_log);
  ASSERT_TRUE(agent.ok()) << agent.status();
  ASSERT_TRUE(
      WaitFor([&] { return HttpOk(backend_port, "/health") && HttpOk(frontend_port, "/health"); },
              absl::Seconds(30)))
      << "the stack never came up\n"
      << Tail(agent_log) << Tail(a.log);

  // The backend turns unhealthy: the leader collects its logs, then restarts it.
  ASSERT_TRUE(HttpOk(backend_port, "/fault/unhealthy"));
  std::string restart_id;
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const auto& [id, rec] : Records()) {
          if (rec.action().target() == "backend" &&
              rec.action().kind() == v1::ACTION_KIND_RESTART_SERVICE) {
            restart_id = id;
          }
        }
        return !restart_id.empty();
      },
      absl::Seconds(30)))
      << Tail(a.log);
  // In flight: started on the agent, not finished. The leader dies.
  const std::string journal = agent_data + "/journal";
  ASSERT_TRUE(WaitFor([&] { return ReadJournal(journal).started.count(restart_id) == 1; }))
      << Tail(agent_log);
  ASSERT_EQ(ReadJournal(journal).finished.count(restart_id), 0u)
      << "the restart finished before the leader could be killed";
  a.process->Signal(SIGKILL);
  a.process->Wait(absl::Seconds(10));

  ASSERT_TRUE(WaitFor([&] { return Leads(b.address); }, absl::Seconds(30)))
      << "follower never took over\n"
      << Tail(b.log);
  // The new leader learns the restart's result (replayed by the agent, not run again).
  ASSERT_TRUE(WaitFor(
      [&] {
        auto r = Records();
        auto it = r.find(restart_id);
        return it != r.end() && it->second.has_result();
      },
      absl::Seconds(30)))
      << "the in-flight restart was never answered to the new leader\n"
      << Tail(b.log) << Tail(agent_log);
  ASSERT_TRUE(WaitFor([&] { return HttpOk(backend_port, "/health"); }, absl::Seconds(20)));

  // A fault after the takeover: the frontend crashes. The new leader heals it.
  const int64_t records_before = static_cast<int64_t>(Records().size());
  HttpOk(frontend_port, "/fault/crash");  // no answer: it exits
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const auto& [id, rec] : Records()) {
          if (rec.action().target() == "frontend" &&
              rec.action().kind() == v1::ACTION_KIND_START_SERVICE && rec.has_result() &&
              rec.result().outcome() == v1::ACTION_OUTCOME_SUCCEEDED &&
              FromProto(rec.requested_at()) > absl::Now() - absl::Minutes(1) &&
              ReadJournal(journal).started.count(id) == 1) {
            return HttpOk(frontend_port, "/health");
          }
        }
        return false;
      },
      absl::Seconds(30)))
      << "the fault injected after the takeover was not healed (" << records_before
      << " records before)\n"
      << Tail(b.log) << Tail(agent_log);

  // The repair ran once: one start in the agent's journal, one record in the action log, one
  // restart of the process; and every id the agent started is in the action log once.
  const JournalCounts j = ReadJournal(journal);
  EXPECT_EQ(j.started.at(restart_id), 1) << "the agent started the restart twice";
  EXPECT_EQ(j.finished.count(restart_id), 1u);
  const auto records = Records();
  int backend_restarts = 0;
  for (const auto& [id, rec] : records) {
    backend_restarts += rec.action().target() == "backend" &&
                        rec.action().kind() == v1::ACTION_KIND_RESTART_SERVICE;
  }
  EXPECT_EQ(backend_restarts, 1) << "the action log holds more than one restart of the backend\n"
                                 << ActionsSent(b.log, "backend") << Tail(agent_log);
  EXPECT_EQ(records.at(restart_id).result().outcome(), v1::ACTION_OUTCOME_SUCCEEDED);
  for (const auto& [id, n] : j.started) {
    EXPECT_EQ(n, 1) << "action " << id << " started " << n << " times on the agent";
    EXPECT_EQ(records.count(id), 1u) << "action " << id << " ran but is not in the action log";
  }
  EXPECT_EQ(Starts(agent_log, "backend"), 2)
      << "the backend process was not started exactly twice (first start, one restart)\n"
      << ActionsSent(b.log, "backend") << Tail(b.log) << Tail(agent_log);
}

TEST_F(ReplicasTest, LeaderCutOffFromEtcdStopsAndRecordsNothingMore) {
  std::vector<std::unique_ptr<upkeep::testing::TcpProxy>> proxies;
  std::string via;
  for (const auto& e : etcd_->endpoints()) {
    auto p = upkeep::testing::TcpProxy::Start(e);
    ASSERT_TRUE(p.ok());
    via += (via.empty() ? "" : ",") + (*p)->address();
    proxies.push_back(std::move(*p));
  }
  Replica a = StartReplica("a", via);
  ASSERT_TRUE(WaitFor([&] { return Leads(a.address); }, absl::Seconds(20)));
  Replica b = StartReplica("b");
  const grpc::Status applied = ApplyToLeader(a.address, kStack);
  ASSERT_TRUE(applied.ok()) << applied.error_code() << " " << applied.error_message()
                            << Tail(a.log);
  FollowingAgent agent({a.address, b.address});
  agent.Observe(false, true);
  ASSERT_TRUE(WaitFor([&] { return !For(agent.actions(), "backend").empty(); }, absl::Seconds(20)));
  for (auto& p : proxies) p->Cut();
  // The cut-off leader steps down and exits (3: leadership lost) on its own.
  std::optional<int> status = a.process->Wait(absl::Seconds(20));
  ASSERT_TRUE(status.has_value()) << "the cut-off leader kept running";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 3) << *status;
  ASSERT_TRUE(WaitFor([&] { return Leads(b.address); }, absl::Seconds(30)));
  // The new leader re-sends the one repair; nothing was recorded twice.
  ASSERT_TRUE(
      WaitFor([&] { return For(agent.actions(), "backend").size() >= 2; }, absl::Seconds(30)));
  std::set<std::string> ids;
  for (const auto& x : For(agent.actions(), "backend")) ids.insert(x.id());
  EXPECT_EQ(ids.size(), 1u);
  int backend_records = 0;
  for (const auto& [id, rec] : Records()) backend_records += rec.action().target() == "backend";
  EXPECT_EQ(backend_records, 1);
}

TEST_F(ReplicasTest, FleetKeepsWorkingWithOneEtcdMemberKilled) {
  Replica a = StartReplica("a", "", "10s");
  ASSERT_TRUE(WaitFor([&] { return Leads(a.address); }, absl::Seconds(20)));
  Replica b = StartReplica("b", "", "10s");
  // Both replicas up (b a follower) before the member dies: a fleet that kept working.
  ASSERT_TRUE(WaitFor([&] { return Controllers(b.address).ok(); }, absl::Seconds(30)))
      << Tail(b.log);
  ASSERT_TRUE(ApplyToLeader(a.address, kStack).ok()) << Tail(a.log);
  FollowingAgent agent({a.address, b.address});
  agent.Observe(true, true);
  ASSERT_TRUE(WaitFor([&] { return agent.connected_to() == 0; }, absl::Seconds(20)));
  etcd_->Kill(0);  // the member both controllers talk to first
  agent.Observe(false, true);
  ASSERT_TRUE(WaitFor([&] { return !For(agent.actions(), "backend").empty(); }, absl::Seconds(30)));
  const v1::Action repair = For(agent.actions(), "backend").front();
  ASSERT_TRUE(agent.Answer(repair));
  agent.Observe(true, true);
  ASSERT_TRUE(WaitFor([&] {
    auto r = Records();
    auto it = r.find(repair.id());
    return it != r.end() && it->second.has_result();
  }));
  EXPECT_TRUE(Leads(a.address)) << "leadership moved although only one etcd member died";
  auto list = Controllers(b.address);
  ASSERT_TRUE(list.ok()) << list.status() << Tail(b.log);
  EXPECT_EQ(list->replicas_size(), 2);
  // upkeepctl get controllers, against the follower: one line per replica with its role.
  const std::string out = dir_.Join("get.out");
  auto ctl = upkeep::testing::Subprocess::Start(
      {upkeep::testing::BinPath("upkeepctl"), "get", "controllers", "--controller", b.address},
      out);
  ASSERT_TRUE(ctl.ok());
  std::optional<int> st = (*ctl)->Wait(absl::Seconds(10));
  std::ifstream in(out);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_TRUE(st.has_value() && WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << text;
  EXPECT_NE(text.find("ADDRESS"), std::string::npos) << text;
  EXPECT_NE(text.find(a.address + " "), std::string::npos) << text;
  EXPECT_NE(text.find("leader"), std::string::npos) << text;
  EXPECT_NE(text.find(b.address + " "), std::string::npos) << text;
  EXPECT_NE(text.find("follower"), std::string::npos) << text;
}

}  // namespace
}  // namespace upkeep::controller

// nginx dialling a container's old address, live (issue 11, "Evidence first" and "More of
// nginx's error log"). Everything runs in a network namespace the test creates: a private
// dockerd (--bridge=none --iptables=false) whose user-defined network `shopnet`
// (10.213.7.0/24) exists only there, the backend container on it, real nginx started by a real
// upkeep-agent, and a real upkeep-controller (plaintext on the namespace's own loopback), asked
// through the real upkeepctl inside the namespace.
//
// The stack is the seed runbook's: the backend publishes its port on 127.0.0.1 (upkeep probes
// it there, as the runbook's `curl http://localhost:8002/health` does), and nginx, on the host,
// proxies /api/ to the container itself on its network. Two ways an operator writes that:
//   - by name, `proxy_pass http://shop-backend:8002/` with a hosts entry the deploy hook keeps
//     current (here the namespace's own /etc/hosts, /etc/netns/NAME/hosts): nginx resolves the
//     name once, when it loads its config;
//   - by the literal address copied from `docker inspect`.
// The container is then recreated as a person or Compose does (rm, then run); meanwhile a
// one-off job (`docker compose run migrate`) joins the network and takes the address it freed,
// so nginx's connections to the old address are refused, and the backend comes back at another.
// Skipped when not root or when ip, nsenter or dockerd are missing; failed instead under CI=true.
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/support/docker/netns_dockerd.h"
#include "tests/support/files.h"
#include "tests/support/netns/netns.h"
#include "tests/support/nginx_conf.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"
#include "upkeep/v1/fleet_service.pb.h"

namespace upkeep {
namespace {

namespace v1 = upkeep::v1;
using testing::NetnsDockerd;
using testing::PrivateNetns;
using testing::RunCommand;
using testing::Subprocess;
using testing::WaitFor;

constexpr char kController[] = "127.0.0.1:7400";  // the namespace's own loopback
constexpr int kNginxPort = 18080;
constexpr int kBackendPort = 8002;
constexpr char kSubnet[] = "10.213.7.0/24";
constexpr char kContainer[] = "shop-backend";

using ::upkeep::testing::ReadFile;

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

class StaleAddressTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = PrivateNetns::Unavailable();
    if (why.empty()) why = NetnsDockerd::Unavailable();
    if (!why.empty()) {
      if (const char* ci = std::getenv("CI"); ci != nullptr && std::string(ci) == "true") {
        FAIL() << why << " (CI=true: the stale-address case must run)";
      }
      GTEST_SKIP() << why;
    }
    bin_ = testing::BinPath("");
    auto ns = PrivateNetns::Create("stale");
    ASSERT_TRUE(ns.ok()) << ns.status();
    ns_ = std::move(*ns);
    auto docker = NetnsDockerd::Start(ns_->NetOnly({}), dir_.Join("docker"));
    ASSERT_TRUE(docker.ok()) << docker.status();
    docker_ = std::move(*docker);
    ASSERT_TRUE(Docker({"network", "create", "--subnet", kSubnet, "shopnet"}).ok());
  }

  void TearDown() override {
    if (agent_ != nullptr) agent_->Stop();
    if (controller_ != nullptr) controller_->Stop();
    // nginx outlives the agent by design: stop it by its pid.
    const int nginx = ReadPid(dir_.Join("nginx/nginx.pid"));
    if (nginx > 0) {
      ::kill(nginx, SIGQUIT);
      if (!WaitFor([&] { return ::kill(nginx, 0) != 0; }, absl::Seconds(5))) ::kill(nginx, SIGKILL);
    }
    docker_.reset();  // the containers, then dockerd
    ns_.reset();      // the namespace, its hosts file
  }

  absl::StatusOr<std::string> Docker(const std::vector<std::string>& args) {
    return docker_->Docker(args);
  }

  // docker run of the sample service on shopnet (`ip` pins an address when given).
  absl::Status Run(const std::string& name, int port, bool publish, const std::string& ip = "") {
    std::vector<std::string> args = {"run", "-d", "--name", name, "--network", "shopnet"};
    if (!ip.empty()) args.insert(args.end(), {"--ip", ip});
    if (publish) args.insert(args.end(), {"-p", absl::StrCat("127.0.0.1:", port, ":", port)});
    args.insert(args.end(), {docker_->image(), "/upkeep-sample-service", "--name", name, "--port",
                             absl::StrCat(port), "--address", "0.0.0.0"});
    return Docker(args).status();
  }

  // The hosts file of the namespace, naming the backend container at `address`.
  absl::Status Hosts(const std::string& address) {
    return ns_->SetHosts(
        absl::StrCat("127.0.0.1 localhost\n::1 localhost\n", address, " ", kContainer, "\n"));
  }

  // nginx proxying /api/ to `upstream` (a name or an address, with the port).
  void WriteNginx(const std::string& upstream) {
    const std::string ng = dir_.Join("nginx");
    std::filesystem::create_directories(ng + "/logs");
    WriteFile(ng + "/nginx.conf",
              upkeep::testing::TestNginxConf(
                  ng, absl::StrCat("  server {\n    listen 127.0.0.1:", kNginxPort,
                                   ";\n    location /api/ { proxy_pass http://", upstream,
                                   "/; }\n  }\n")));
  }

  void WriteManifest() {
    const std::string ng = dir_.Join("nginx");
    WriteFile(dir_.Join("shop.yaml"),
              absl::StrCat("apiVersion: upkeep/v1\nkind: Stack\nmetadata: {name: shop}\nspec:\n"
                           "  hosts: [web1]\n  runtime: docker\n  services:\n"
                           "    - name: backend\n      container: {name: ",
                           kContainer, "}\n      port: ", kBackendPort,
                           "\n      probe: {http: {path: /health}, period: 1s, timeout: 500ms, "
                           "failureThreshold: 3}\n      stopTimeout: 2s\n"
                           "  proxy:\n    nginx:\n      config: ",
                           ng, "/nginx.conf\n      prefix: ", ng, "\n      pidFile: ", ng,
                           "/nginx.pid\n      errorLog: ", ng,
                           "/error.log\n    routes:\n      - {path: /api/, upstream: backend, "
                           "probe: {url: \"http://127.0.0.1:",
                           kNginxPort,
                           "/api/health\", timeout: 1s}}\n  policy:\n"
                           "    restartBudget: {max: 5, window: 10m}\n"
                           "    backoff: {initial: 200ms, max: 5s}\n"));
  }

  // Controller and agent inside the namespace (the agent through `ip netns exec`, so nginx, its
  // child, reads the namespace's hosts file); the manifest applied; the route serving.
  void StartUpkeep() {
    std::filesystem::create_directories(dir_.Join("controller"));
    auto c =
        Subprocess::Start(ns_->Exec({bin_ + "/upkeep-controller", "--data", dir_.Join("controller"),
                                     "--listen", kController, "--http", "127.0.0.1:9400"}),
                          dir_.Join("controller.log"));
    ASSERT_TRUE(c.ok()) << c.status();
    controller_ = std::move(*c);
    auto a =
        Subprocess::Start(ns_->Exec({bin_ + "/upkeep-agent", "--controller", kController,
                                     "--host-id", "web1", "--data", dir_.Join("agent"),
                                     "--allow-exec", bin_, "--docker-socket", docker_->socket()}),
                          dir_.Join("agent.log"));
    ASSERT_TRUE(a.ok()) << a.status();
    agent_ = std::move(*a);
    ASSERT_TRUE(WaitFor(
        [&] {
          return Ctl({"apply", "-f", dir_.Join("shop.yaml")}).ok();
        },
        absl::Seconds(30)))
        << ReadFile(dir_.Join("controller.log"));
    ASSERT_TRUE(WaitFor([&] { return Ready() && ProxyStatus() == 200; }, absl::Seconds(60)))
        << Summary();
  }

  // upkeepctl inside the namespace.
  absl::StatusOr<std::string> Ctl(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {bin_ + "/upkeepctl", "--controller", kController};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(ns_->Exec(argv));
  }
  template <typename M>
  bool CtlJson(const std::vector<std::string>& args, M* out) {
    std::vector<std::string> a = args;
    a.insert(a.end(), {"-o", "json"});
    auto text = Ctl(a);
    google::protobuf::util::JsonParseOptions lenient;
    lenient.ignore_unknown_fields = true;
    return text.ok() && google::protobuf::util::JsonStringToMessage(*text, out, lenient).ok();
  }
  bool Ready() {
    v1::ListStacksResponse r;
    if (!CtlJson({"get", "stacks"}, &r)) return false;
    for (const auto& s : r.stacks()) {
      for (const auto& c : s.status().conditions()) {
        if (c.type() == "Ready") return c.status() == "True";
      }
    }
    return false;
  }
  std::vector<v1::ActionRecord> Actions() {
    v1::ListActionsResponse r;
    if (!CtlJson({"actions", "--stack", "shop", "--limit", "500"}, &r)) return {};
    return {r.actions().begin(), r.actions().end()};
  }
  int Count(v1::ActionKind kind, const std::string& target, bool succeeded_only = false) {
    int n = 0;
    for (const auto& r : Actions()) {
      n += r.action().kind() == kind && r.action().target() == target && !r.dry_run() &&
           (!succeeded_only || r.result().outcome() == v1::ACTION_OUTCOME_SUCCEEDED);
    }
    return n;
  }
  // Reloads that did their work. (On a loaded machine a reload can time out waiting for the
  // old workers to go; upkeep then reloads again, which is not a second repair.)
  int Reloads() { return Count(v1::ACTION_KIND_RELOAD_PROXY, "nginx", true); }
  // The finding `code` on `target` in the stack's last diagnosis.
  bool FindingOf(const std::string& code, const std::string& target, v1::Finding* out) {
    v1::DescribeStackResponse d;
    if (!CtlJson({"describe", "stack", "shop"}, &d)) return false;
    for (const auto& diagnosis : d.stack().status().diagnoses()) {
      for (const auto& f : diagnosis.findings()) {
        if (f.code() == code && f.target() == target) {
          *out = f;
          return true;
        }
      }
    }
    return false;
  }
  // GET /api/health through nginx, from inside the namespace; -1 when nothing answered.
  int ProxyStatus() {
    auto out =
        RunCommand(ns_->NetOnly({"curl", "-s", "-o", "/dev/null", "-m", "3", "-w", "%{http_code}",
                                 absl::StrCat("http://127.0.0.1:", kNginxPort, "/api/health")}));
    int code = -1;
    if (out.ok() && absl::SimpleAtoi(absl::StripAsciiWhitespace(*out), &code) && code > 0) {
      return code;
    }
    return -1;
  }
  absl::Time LastReconcile() {
    v1::DescribeStackResponse d;
    if (!CtlJson({"describe", "stack", "shop"}, &d) || !d.stack().status().has_last_reconcile()) {
      return absl::InfinitePast();
    }
    const auto& t = d.stack().status().last_reconcile();
    return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
  }
  // Waits until the controller has judged the stack again, twice, a second apart: what it
  // would do at once (a restart of nginx right after its verified reload), it has done by then.
  void WaitTwoReconciles() {
    const absl::Time from = LastReconcile();
    ASSERT_TRUE(WaitFor(
        [&] {
          (void)ProxyStatus();  // a fresh failure to react to
          return LastReconcile() > from + absl::Seconds(2);
        },
        absl::Seconds(30)))
        << Summary();
  }
  // The controller's Alert events for `code` (what notifiers send people).
  std::vector<std::string> Alerts(const std::string& code) {
    v1::ListEventsResponse r;
    std::vector<std::string> out;
    if (!CtlJson({"events", "--stack", "shop"}, &r)) return out;
    for (const auto& e : r.events()) {
      if (e.reason() == "Alert" && absl::StartsWith(e.message(), code + ":")) {
        out.push_back(e.message());
      }
    }
    return out;
  }
  std::string StartedAt(const std::string& container) {
    auto out =
        Docker({"inspect", "-f", "{{.Id}} {{.State.StartedAt}} {{.RestartCount}}", container});
    return out.ok() ? std::string(absl::StripAsciiWhitespace(*out)) : out.status().ToString();
  }
  static int ReadPid(const std::string& path) {
    std::ifstream in(path);
    int pid = 0;
    in >> pid;
    return pid;
  }
  std::string Summary() {
    std::string s = "\n--- upkeepctl explain stack shop:\n";
    auto explain = Ctl({"explain", "stack", "shop"});
    s += explain.ok() ? *explain : explain.status().ToString();
    s += "\n--- actions:";
    for (const auto& r : Actions()) {
      absl::StrAppend(&s, "\n  ", v1::ActionKind_Name(r.action().kind()), " ", r.action().target(),
                      " -> ", v1::ActionOutcome_Name(r.result().outcome()));
    }
    s += "\n--- nginx error.log:\n" + ReadFile(dir_.Join("nginx/error.log"));
    return s;
  }

  // The recreation: rm; a one-off job takes the freed address; run again. Returns the
  // backend's new address.
  std::string Recreate(const std::string& old_address) {
    EXPECT_TRUE(Docker({"rm", "-f", kContainer}).ok());
    // (--ip pins what Docker's allocator does anyway, lowest free first, so that the case does
    // not hang on its allocation order.)
    EXPECT_TRUE(Run("shop-migrate", 9000, false, old_address).ok());
    EXPECT_TRUE(Run(kContainer, kBackendPort, true).ok());
    auto now = docker_->AddressOf(kContainer);
    EXPECT_TRUE(now.ok()) << now.status();
    return now.ok() ? *now : "";
  }

  testing::TempDir dir_;
  std::string bin_;
  std::unique_ptr<PrivateNetns> ns_;
  std::unique_ptr<NetnsDockerd> docker_;
  std::unique_ptr<Subprocess> controller_;
  std::unique_ptr<Subprocess> agent_;
};

// By name: after the recreation the hosts entry names the new address, but nginx still dials
// the one it resolved at load. upkeep names both (StaleUpstreamAddress: nginx_dials from
// nginx's error log, upstream_now_at from Docker), reloads nginx (a reload resolves again) and
// the route serves; the healthy backend container is never restarted.
TEST_F(StaleAddressTest, ANameResolvedAtLoadIsNamedAndOneReloadFollowsTheContainer) {
  ASSERT_TRUE(Run(kContainer, kBackendPort, true).ok());
  auto a = docker_->AddressOf(kContainer);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(Hosts(*a).ok());
  WriteNginx(absl::StrCat(kContainer, ":", kBackendPort));
  WriteManifest();
  StartUpkeep();
  if (HasFatalFailure()) return;

  const std::string b = Recreate(*a);
  ASSERT_FALSE(b.empty());
  ASSERT_NE(b, *a);
  ASSERT_TRUE(Hosts(b).ok());  // the deploy hook
  const std::string backend = StartedAt(kContainer);

  // The route fails: nginx dials the old address, where the job refuses it.
  const std::string dialled = absl::StrCat(*a, ":", kBackendPort);
  (void)ProxyStatus();
  ASSERT_TRUE(WaitFor(
      [&] {
        return absl::StrContains(ReadFile(dir_.Join("nginx/error.log")),
                                 absl::StrCat("upstream: \"http://", dialled, "/health\""));
      },
      absl::Seconds(10)))
      << Summary();
  // upkeep says so, with both addresses, and reloads: the finding lives in the diagnosis only
  // until the reload heals the route (often before a poll), and is kept on the reload's record.
  v1::ActionRecord reload;
  ASSERT_TRUE(WaitFor(
      [&] {
        for (const auto& r : Actions()) {
          if (r.action().kind() == v1::ACTION_KIND_RELOAD_PROXY) reload = r;
        }
        return reload.action().params().count("evidence_code") > 0;
      },
      absl::Seconds(30)))
      << Summary();
  const auto& params = reload.action().params();
  EXPECT_EQ(params.at("evidence_code"), "StaleUpstreamAddress") << reload.DebugString();
  EXPECT_EQ(params.at("evidence_target"), "backend") << reload.DebugString();
  EXPECT_EQ(params.at("evidence.nginx_dials"), dialled) << reload.DebugString();
  EXPECT_EQ(params.at("evidence.upstream_now_at"), b) << reload.DebugString();
  EXPECT_TRUE(absl::StrContains(params.at("evidence_message"), "resolver")) << reload.DebugString();
  // The reload resolved the name again: serving, nginx neither restarted nor reloaded twice.
  ASSERT_TRUE(WaitFor([&] { return ProxyStatus() == 200 && Ready(); }, absl::Seconds(30)))
      << Summary();
  EXPECT_LE(Reloads(), 1) << Summary();
  EXPECT_EQ(Count(v1::ACTION_KIND_RESTART_PROXY, "nginx"), 0) << Summary();
  EXPECT_EQ(Count(v1::ACTION_KIND_RESTART_SERVICE, "backend"), 0) << Summary();
  // (upkeep may start the new container in the moment between `docker run`'s create and its
  // start, seen as a created, never started container: harmless, it starts once.)
  EXPECT_LE(Count(v1::ACTION_KIND_START_SERVICE, "backend"), 1) << Summary();
  EXPECT_EQ(StartedAt(kContainer), backend) << "the backend container was restarted";
  // A warning that the reload it explained made good: nobody is paged for it.
  EXPECT_TRUE(Alerts("StaleUpstreamAddress").empty()) << Summary();
}

// By literal address: nothing nginx can do follows the container (a reload or a restart reads
// the same address from the file). upkeep names both addresses and does not thrash: the one
// reload that re-reads the file (it cannot tell a literal from a name that a reload would
// re-resolve), then an alert, never a restart of nginx or of the backend.
TEST_F(StaleAddressTest, ALiteralAddressIsNamedAndNginxIsNotThrashed) {
  ASSERT_TRUE(Run(kContainer, kBackendPort, true).ok());
  auto a = docker_->AddressOf(kContainer);
  ASSERT_TRUE(a.ok()) << a.status();
  WriteNginx(absl::StrCat(*a, ":", kBackendPort));
  WriteManifest();
  StartUpkeep();
  if (HasFatalFailure()) return;

  const std::string b = Recreate(*a);
  ASSERT_FALSE(b.empty());
  ASSERT_NE(b, *a);
  const std::string backend = StartedAt(kContainer);
  const std::string dialled = absl::StrCat(*a, ":", kBackendPort);
  EXPECT_EQ(ProxyStatus(), 502);

  // Said at once, with both addresses; then, after the one reload that re-reads the file, an
  // alert that the config itself names the old address.
  v1::Finding f;
  ASSERT_TRUE(
      WaitFor([&] { return FindingOf("StaleUpstreamAddress", "backend", &f); }, absl::Seconds(30)))
      << Summary();
  EXPECT_EQ(f.evidence().at("nginx_dials"), dialled) << f.DebugString();
  EXPECT_EQ(f.evidence().at("upstream_now_at"), b) << f.DebugString();
  ASSERT_TRUE(WaitFor(
      [&] {
        return FindingOf("StaleUpstreamAddress", "backend", &f) &&
               f.evidence().count("after_reload") > 0;
      },
      absl::Seconds(30)))
      << Summary();
  EXPECT_EQ(f.severity(), v1::SEVERITY_ALERT) << f.DebugString();
  EXPECT_TRUE(absl::StrContains(f.message(), "a reload did not change it")) << f.DebugString();
  // And no more: the controller judges fresh observations twice more and does nothing.
  const int reloads = Count(v1::ACTION_KIND_RELOAD_PROXY, "nginx");
  WaitTwoReconciles();
  EXPECT_EQ(ProxyStatus(), 502);
  EXPECT_TRUE(FindingOf("StaleUpstreamAddress", "backend", &f)) << Summary();
  EXPECT_EQ(Reloads(), 1) << Summary();
  EXPECT_EQ(Count(v1::ACTION_KIND_RELOAD_PROXY, "nginx"), reloads) << Summary();
  EXPECT_EQ(Count(v1::ACTION_KIND_RESTART_PROXY, "nginx"), 0) << Summary();
  EXPECT_EQ(Count(v1::ACTION_KIND_RESTART_SERVICE, "backend"), 0) << Summary();
  EXPECT_LE(Count(v1::ACTION_KIND_START_SERVICE, "backend"), 1) << Summary();
  EXPECT_EQ(StartedAt(kContainer), backend) << "the backend container was restarted";
  // One alert, with what to change.
  const std::vector<std::string> alerts = Alerts("StaleUpstreamAddress");
  ASSERT_EQ(alerts.size(), 1u) << Summary();
  EXPECT_TRUE(absl::StrContains(alerts[0], "a reload did not change it")) << alerts[0];
}

}  // namespace
}  // namespace upkeep

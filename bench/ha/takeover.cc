// takeover: how long controller replicas on etcd take to replace a SIGKILLed leader, measured
// from the kill to the first action the new leader sends (its re-send of the repair the old
// leader had in flight). A real 3-member etcd cluster and two upkeep-controller processes on
// loopback; the agent is the tests' FollowingAgent. Each run kills the current leader and
// starts it again as a follower for the next run.
//   takeover [--runs 20] [--lease 2s]      (run from the build directory; prints a summary)
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "tests/support/etcd/etcd_cluster.h"
#include "tests/support/etcd/following_agent.h"
#include "tests/support/net.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"
#include "upkeep/v1/controller_service.grpc.pb.h"
#include "upkeep/v1/fleet_service.grpc.pb.h"

ABSL_FLAG(int, runs, 20, "takeovers to measure");
ABSL_FLAG(std::string, lease, "2s", "--leader-lease of the controllers");

namespace v1 = upkeep::v1;
using upkeep::testing::WaitFor;

namespace {

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

std::string Leader(const std::string& address) {
  auto stub = v1::ControllerService::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  v1::ListControllersResponse resp;
  return stub->ListControllers(&ctx, v1::ListControllersRequest(), &resp).ok() ? resp.leader() : "";
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (std::getenv("UPKEEP_BIN_DIR") == nullptr) setenv("UPKEEP_BIN_DIR", "bin", 1);
  auto etcd = upkeep::testing::EtcdCluster::Start(3);
  if (!etcd.ok()) {
    std::fprintf(stderr, "etcd: %s\n", std::string(etcd.status().message()).c_str());
    return 1;
  }
  upkeep::testing::TempDir dir;
  std::string addr[2];
  std::unique_ptr<upkeep::testing::Subprocess> proc[2];
  auto start = [&](int i) {
    proc[i] = std::move(*upkeep::testing::Subprocess::Start(
        {upkeep::testing::BinPath("upkeep-controller"), "--data", dir.Join(absl::StrCat("c", i)),
         "--listen", addr[i], "--store", "etcd", "--etcd-endpoints", (*etcd)->EndpointList(),
         "--leader-lease", absl::GetFlag(FLAGS_lease), "--log-json"},
        dir.Join(absl::StrCat("c", i, ".log"))));
  };
  for (int i = 0; i < 2; ++i) addr[i] = absl::StrCat("127.0.0.1:", upkeep::testing::FreePort());
  start(0);
  if (!WaitFor([&] { return Leader(addr[0]) == addr[0]; }, absl::Seconds(20))) return 1;
  start(1);
  {
    auto stub =
        v1::FleetService::NewStub(grpc::CreateChannel(addr[0], grpc::InsecureChannelCredentials()));
    v1::ApplyRequest req;
    req.add_manifests()->set_filename("shop.yaml");
    req.mutable_manifests(0)->set_content(kStack);
    v1::ApplyResponse resp;
    grpc::ClientContext ctx;
    if (!stub->Apply(&ctx, req, &resp).ok()) return 1;
  }
  upkeep::testing::FollowingAgent agent({addr[0], addr[1]});
  agent.Observe(false, true);  // backend down: the leader sends a repair; nobody answers
  if (!WaitFor([&] { return !agent.actions().empty(); }, absl::Seconds(20))) return 1;
  std::vector<double> ms;
  int leader = 0;
  for (int run = 0; run < absl::GetFlag(FLAGS_runs); ++run) {
    const int follower = 1 - leader;
    if (!WaitFor([&] { return Leader(addr[follower]) == addr[leader]; }, absl::Seconds(20))) {
      std::fprintf(stderr, "run %d: follower never saw the leader\n", run);
      return 1;
    }
    const size_t before = agent.actions().size();
    const absl::Time killed = absl::Now();
    proc[leader]->Signal(SIGKILL);
    proc[leader]->Wait(absl::Seconds(10));
    if (!WaitFor([&] { return agent.actions().size() > before; }, absl::Seconds(60),
                 absl::Milliseconds(1))) {
      std::fprintf(stderr, "run %d: no action after the kill\n", run);
      return 1;
    }
    const absl::Time first = agent.action_times()[before];
    ms.push_back(absl::ToDoubleMilliseconds(first - killed));
    std::fprintf(stderr, "run %d: %.0f ms\n", run, ms.back());
    start(leader);  // back as a follower
    leader = follower;
  }
  std::sort(ms.begin(), ms.end());
  auto pct = [&](double p) {
    size_t i = static_cast<size_t>(p * (ms.size() - 1) + 0.5);
    return ms[std::min(i, ms.size() - 1)];
  };
  std::printf("runs=%zu lease=%s takeover_ms: min=%.0f median=%.0f p95=%.0f max=%.0f\n", ms.size(),
              absl::GetFlag(FLAGS_lease).c_str(), ms.front(), pct(0.5), pct(0.95), ms.back());
  return 0;
}

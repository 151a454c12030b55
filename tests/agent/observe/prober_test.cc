// Probes and listening ports against real sample-service processes.
#include "agent/observe/prober.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/observe/ports.h"
#include "core/proto_time.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"
#include "tests/support/net.h"
#include "tests/support/subprocess.h"
#include "tests/support/wait.h"

namespace upkeep::agent {
namespace {

namespace v1 = upkeep::v1;
using upkeep::testing::FreePort;

TEST(Prober, AHungUpstreamDoesNotDelayTheOthers) {
  const int hung = FreePort(), healthy = FreePort();
  auto a = upkeep::testing::Subprocess::Start(
      {upkeep::testing::BinPath("upkeep-sample-service"), "--port", absl::StrCat(hung)},
      "/dev/null");
  auto b = upkeep::testing::Subprocess::Start(
      {upkeep::testing::BinPath("upkeep-sample-service"), "--port", absl::StrCat(healthy)},
      "/dev/null");
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", hung));
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", healthy));
  upkeep::testing::HttpGetStatus("127.0.0.1", hung, "/fault/hang");
  ProbeRequest slow{
      false, absl::StrCat("http://127.0.0.1:", hung, "/health"), "", absl::Seconds(1), {}};
  ProbeRequest fast{
      false, absl::StrCat("http://127.0.0.1:", healthy, "/health"), "", absl::Seconds(1), {}};
  ProbeRequest tcp{true, absl::StrCat("http://127.0.0.1:", healthy, "/"), "", absl::Seconds(1), {}};
  const auto results = ProbeAll({slow, fast, tcp});
  EXPECT_FALSE(results[0].ok());
  EXPECT_EQ(results[0].error(), "timeout");
  EXPECT_TRUE(results[1].ok());
  EXPECT_EQ(results[1].status_code(), 200);
  EXPECT_TRUE(results[2].ok());
  EXPECT_LT(upkeep::FromProto(results[1].latency()), upkeep::FromProto(results[0].latency()) / 2)
      << "the healthy probe must not wait for the hung one";
  // Judging: three failures make it unhealthy; a new start resets the run.
  v1::ProbeSpec spec;
  spec.set_failure_threshold(3);
  HealthTracker t(spec);
  const absl::Time start = FromProto(results[0].at()) - absl::Seconds(1);  // started, then probed
  v1::ProbeResult failed = results[0];
  EXPECT_EQ(t.Update(failed, start, absl::Now()), v1::HEALTH_STATE_STARTING);
  *failed.mutable_at() = upkeep::ToProto(FromProto(failed.at()) + absl::Seconds(1));  // a period on
  t.Update(failed, start, absl::Now());
  *failed.mutable_at() = upkeep::ToProto(FromProto(failed.at()) + absl::Seconds(1));
  EXPECT_EQ(t.Update(failed, start, absl::Now()), v1::HEALTH_STATE_UNHEALTHY);
  EXPECT_EQ(t.Update(results[1], start + absl::Milliseconds(500), absl::Now()),
            v1::HEALTH_STATE_HEALTHY);
}

// A start, an action's refresh and the periodic probe can each fire a probe within milliseconds;
// a slow starter refusing all of them has failed one look, not failureThreshold of them.
TEST(HealthTracker, ProbesFiredTogetherCountAsOneFailure) {
  v1::ProbeSpec spec;
  spec.set_failure_threshold(2);
  *spec.mutable_period() = upkeep::ToProto(absl::Milliseconds(200));
  HealthTracker t(spec);
  const absl::Time start = absl::FromUnixSeconds(1000);
  v1::ProbeResult refused;
  refused.set_ok(false);
  refused.set_error("connection refused");
  auto at = [&](absl::Duration d) {
    *refused.mutable_at() = upkeep::ToProto(start + d);
    return refused;
  };
  EXPECT_EQ(t.Update(at(absl::Milliseconds(1)), start, start), v1::HEALTH_STATE_STARTING);
  EXPECT_EQ(t.Update(at(absl::Milliseconds(3)), start, start), v1::HEALTH_STATE_STARTING)
      << "two probes 2 ms apart were judged as two failed periods";
  EXPECT_EQ(t.consecutive_failures(), 1);
  // A period later, the next failure counts.
  EXPECT_EQ(t.Update(at(absl::Milliseconds(201)), start, start), v1::HEALTH_STATE_UNHEALTHY);
}

TEST(Ports, FindsWhatAProcessListensOn) {
  const int port = FreePort();
  auto p = upkeep::testing::Subprocess::Start(
      {upkeep::testing::BinPath("upkeep-sample-service"), "--port", absl::StrCat(port)},
      "/dev/null");
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", port));
  const auto mine = ListenersOf((*p)->pid(), ListListeners());
  ASSERT_EQ(mine.size(), 1u);
  EXPECT_EQ(mine[0].address(), "127.0.0.1");
  EXPECT_EQ(mine[0].port(), port);
  EXPECT_FALSE(mine[0].ipv6());
  const auto parsed = ParseProcNetTcp(
      "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout "
      "inode\n"
      "   0: 0100007F:1F42 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 "
      "4242 1\n"
      "   1: 0100007F:1F43 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 "
      "4243 1\n",
      false);
  ASSERT_EQ(parsed.size(), 1u);
  EXPECT_EQ(parsed[0].socket.port(), 8002);
  EXPECT_EQ(parsed[0].inode, 4242u);
}

// A probe is stamped when it is sent, so evidence that straddles a restart is seen as older
// than the restart.
TEST(Prober, StampsAProbeWhenItIsSent) {
  const int port = FreePort();
  auto p = upkeep::testing::Subprocess::Start(
      {upkeep::testing::BinPath("upkeep-sample-service"), "--port", absl::StrCat(port)},
      "/dev/null");
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", port));
  upkeep::testing::HttpGetStatus("127.0.0.1", port, "/fault/slow?ms=300");
  ProbeRequest r{
      false, absl::StrCat("http://127.0.0.1:", port, "/health"), "", absl::Seconds(5), {}};
  const absl::Time before = absl::Now();
  const v1::ProbeResult result = Probe(r);
  const absl::Time after = absl::Now();
  ASSERT_TRUE(result.ok()) << result.error();
  EXPECT_GE(FromProto(result.at()), before);
  EXPECT_LE(FromProto(result.at()) + FromProto(result.latency()), after)
      << "stamped when the answer came, not when the probe was sent";
}

// The tracker judges only the current process: a new start resets the run, and a probe sent
// before that start (answered by, or timing out on, the old process) is not counted.
TEST(HealthTracker, JudgesOnlyProbesOfTheCurrentProcess) {
  v1::ProbeSpec spec;
  spec.set_failure_threshold(2);
  HealthTracker t(spec);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  v1::ProbeResult failed;
  failed.set_error("timeout");
  *failed.mutable_at() = ToProto(t0);
  t.Update(failed, t0 - absl::Seconds(10), t0);
  *failed.mutable_at() = ToProto(t0 + absl::Seconds(1));  // the next period's probe
  EXPECT_EQ(t.Update(failed, t0 - absl::Seconds(10), t0 + absl::Seconds(1)),
            v1::HEALTH_STATE_UNHEALTHY);
  // Restarted at t0 + 2 s; two failed probes sent before that arrive afterwards.
  const absl::Time restarted = t0 + absl::Seconds(2);
  *failed.mutable_at() = ToProto(restarted - absl::Milliseconds(50));
  EXPECT_EQ(t.Update(failed, restarted, restarted + absl::Milliseconds(60)),
            v1::HEALTH_STATE_STARTING);
  EXPECT_EQ(t.Update(failed, restarted, restarted + absl::Milliseconds(90)),
            v1::HEALTH_STATE_STARTING);
  EXPECT_EQ(t.consecutive_failures(), 0);
  EXPECT_EQ(t.started_at(), restarted);
  // The first probe of the new process counts.
  v1::ProbeResult ok;
  ok.set_ok(true);
  *ok.mutable_at() = ToProto(restarted + absl::Milliseconds(100));
  EXPECT_EQ(t.Update(ok, restarted, restarted + absl::Milliseconds(101)), v1::HEALTH_STATE_HEALTHY);
}

// The kernel's sock_diag answer (LISTEN sockets only) says what /proc/net/tcp{,6} says of the
// same sockets: address text, port, family and inode, for IPv4 and IPv6; and it leaves out a
// socket that is bound but not listening.
TEST(Ports, NetlinkListsTheListenersProcNetTcpShows) {
  const int v4 = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int v6 = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int bound = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(v4, 0);
  ASSERT_GE(v6, 0);
  ASSERT_GE(bound, 0);
  sockaddr_in a4{};
  a4.sin_family = AF_INET;
  a4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sockaddr_in6 a6{};
  a6.sin6_family = AF_INET6;
  a6.sin6_addr = in6addr_loopback;
  ASSERT_EQ(::bind(v4, reinterpret_cast<sockaddr*>(&a4), sizeof(a4)), 0);
  ASSERT_EQ(::bind(v6, reinterpret_cast<sockaddr*>(&a6), sizeof(a6)), 0);
  ASSERT_EQ(::bind(bound, reinterpret_cast<sockaddr*>(&a4), sizeof(a4)), 0);
  ASSERT_EQ(::listen(v4, 1), 0);
  ASSERT_EQ(::listen(v6, 1), 0);
  auto port_of = [](int fd) {
    sockaddr_in6 a{};
    socklen_t len = sizeof(a);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    return static_cast<int>(ntohs(a.sin6_port));  // sin_port sits at the same offset
  };
  const auto netlink = ListListenersNetlink();
  ASSERT_TRUE(netlink.has_value()) << "sock_diag unavailable";
  std::vector<Listener> proc = ParseProcNetTcp(upkeep::testing::ReadFile("/proc/net/tcp"), false);
  for (auto& l : ParseProcNetTcp(upkeep::testing::ReadFile("/proc/net/tcp6"), true))
    proc.push_back(l);
  auto find = [](const std::vector<Listener>& all, int port, bool ipv6) -> const Listener* {
    for (const auto& l : all) {
      if (l.socket.port() == port && l.socket.ipv6() == ipv6) return &l;
    }
    return nullptr;
  };
  for (const auto& [fd, ipv6, address] :
       {std::tuple<int, bool, std::string>{v4, false, "127.0.0.1"},
        std::tuple<int, bool, std::string>{v6, true, "::1"}}) {
    const Listener* n = find(*netlink, port_of(fd), ipv6);
    const Listener* p = find(proc, port_of(fd), ipv6);
    ASSERT_NE(n, nullptr) << address << " not seen through netlink";
    ASSERT_NE(p, nullptr) << address << " not in /proc/net";
    EXPECT_EQ(n->socket.address(), address);
    EXPECT_EQ(n->socket.address(), p->socket.address());
    EXPECT_EQ(n->inode, p->inode);
    EXPECT_NE(n->inode, 0u);
  }
  EXPECT_EQ(find(*netlink, port_of(bound), false), nullptr) << "bound, not listening";
  ::close(v4);
  ::close(v6);
  ::close(bound);
}

// A service in its own network namespace (like a container on a bridge network) whose socket
// is held by a child of its main process: seen only through /proc/PID/net of that process.
TEST(Ports, ReadsAServicesOwnNetworkNamespaceAndItsChildren) {
  const int port = FreePort();
  auto p = upkeep::testing::Subprocess::Start(
      {"unshare", "-n", "sh", "-c",
       absl::StrCat(upkeep::testing::BinPath("upkeep-sample-service"), " --port ", port, "; true")},
      "/dev/null");
  ASSERT_TRUE(p.ok()) << p.status();
  const pid_t pid = (*p)->pid();
  std::vector<v1::ListenSocket> mine;
  ASSERT_TRUE(upkeep::testing::WaitFor([&] {
    mine = ServiceListeners(pid);
    return !mine.empty();
  })) << "the child's socket in the service's namespace";
  ASSERT_EQ(mine.size(), 1u);
  EXPECT_EQ(mine[0].port(), port);
  EXPECT_EQ(mine[0].address(), "127.0.0.1");
  EXPECT_TRUE(ListenersOf(pid, ListListeners()).empty())
      << "not in the agent's namespace, and not held by the main process itself";
  EXPECT_GE(ProcessTree(pid).size(), 2u);
}

}  // namespace
}  // namespace upkeep::agent

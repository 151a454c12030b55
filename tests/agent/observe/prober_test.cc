// Probes and listening ports against real sample-service processes.
#include "agent/observe/prober.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "agent/observe/ports.h"
#include "core/proto_time.h"
#include "gtest/gtest.h"
#include "tests/support/net.h"
#include "tests/support/subprocess.h"

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
  const absl::Time start = absl::Now();
  EXPECT_EQ(t.Update(results[0], start, absl::Now()), v1::HEALTH_STATE_STARTING);
  t.Update(results[0], start, absl::Now());
  EXPECT_EQ(t.Update(results[0], start, absl::Now()), v1::HEALTH_STATE_UNHEALTHY);
  EXPECT_EQ(t.Update(results[1], start + absl::Seconds(1), absl::Now()), v1::HEALTH_STATE_HEALTHY);
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

}  // namespace
}  // namespace upkeep::agent

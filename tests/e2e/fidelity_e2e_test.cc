// Diagnosis fidelity end to end (issue 11, the agent's evidence): a real controller, agent,
// nginx and sample services on the process runtime. Each case injects the real fault and
// asserts what upkeep did and did not do, never how fast.
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "demo/harness.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_env.h"
#include "tests/support/net.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace upkeep::demo {
namespace {

namespace v1 = upkeep::v1;
using upkeep::testing::WaitFor;

class FidelityTest : public ::testing::Test {
 protected:
  std::unique_ptr<StackHarness> StartStack() {
    HarnessOptions options;
    options.work_dir = dir_.path();
    options.source_dir = upkeep::testing::SourcePath("");
    options.bin_dir = upkeep::testing::BinPath("");
    options.backoff_initial = "200ms";
    auto h = StackHarness::Start(options);
    EXPECT_TRUE(h.ok()) << h.status();
    if (!h.ok()) return nullptr;
    absl::Status serving = (*h)->WaitServing(absl::Seconds(60));
    EXPECT_TRUE(serving.ok()) << serving << Summary(**h);
    if (!serving.ok()) return nullptr;
    auto actions = (*h)->Actions();
    baseline_ = actions.ok() ? actions->size() : 0;
    baseline_seq_ = (*h)->LastEventSeq();
    return std::move(*h);
  }

  std::vector<v1::ActionRecord> ActionsOf(StackHarness& h, v1::ActionKind kind,
                                          const std::string& target) {
    std::vector<v1::ActionRecord> out;
    auto actions = h.Actions();
    if (!actions.ok()) return out;
    for (size_t i = baseline_; i < actions->size(); ++i) {
      const auto& a = (*actions)[i];
      if (a.action().kind() == kind && a.action().target() == target) out.push_back(a);
    }
    return out;
  }

  // Alert events since the bring-up whose message starts with `code`.
  int Alerts(StackHarness& h, const std::string& code) {
    auto events = h.Events(baseline_seq_);
    int n = 0;
    if (!events.ok()) return n;
    for (const auto& e : *events) {
      if (e.reason() == "Alert" && absl::StartsWith(e.message(), code + ":")) ++n;
    }
    return n;
  }

  std::string NginxConfig() const { return dir_.Join("nginx/nginx.conf"); }

  upkeep::testing::TempDir dir_;
  size_t baseline_ = 0;
  int64_t baseline_seq_ = 0;
};

// "Evidence must be fresh, and no outage may become permanent": nginx is down and its config
// fails `nginx -t`, so upkeep alerts and does not start it; once the operator fixes the file,
// the agent re-tests it by itself and nginx is started again.
TEST_F(FidelityTest, NginxKeptDownByABrokenConfigIsStartedOnceTheFileIsFixed) {
  auto h = StartStack();
  ASSERT_NE(h, nullptr);
  std::stringstream good;
  good << std::ifstream(NginxConfig()).rdbuf();
  ASSERT_FALSE(good.str().empty());
  // Break the file while nginx runs (nothing reloads a healthy nginx), then stop nginx.
  std::ofstream(NginxConfig()) << "this_is_not_a_directive;\n" << good.str();
  ASSERT_TRUE(h->StopNginx().ok());
  ASSERT_TRUE(WaitFor([&] { return Alerts(*h, "ConfigInvalid") > 0; }, absl::Seconds(30)))
      << Summary(*h);
  EXPECT_EQ(h->ProxyStatus("/api/health"), -1) << "a broken config is not started";
  const size_t tests_while_broken =
      ActionsOf(*h, v1::ACTION_KIND_TEST_PROXY_CONFIG, "nginx").size();
  // The operator fixes the file; nobody tells upkeep.
  std::ofstream(NginxConfig()) << good.str();
  ASSERT_TRUE(h->WaitServing(absl::Seconds(60)).ok()) << Summary(*h);
  EXPECT_FALSE(ActionsOf(*h, v1::ACTION_KIND_START_PROXY, "nginx").empty()) << Summary(*h);
  std::printf("config test actions while the config was broken: %zu\n", tests_while_broken);
}

// "Slow is not dead": a backend slower than its probe timeout answers a request allowed to run
// on; upkeep alerts with the measured latency and restarts neither the backend nor nginx.
TEST_F(FidelityTest, ASlowBackendIsAnAlertWithItsLatencyNotARestart) {
  auto h = StartStack();
  ASSERT_NE(h, nullptr);
  // The demo probes the backend with a 500 ms timeout; make it answer in 1.5 s.
  upkeep::testing::HttpGetStatus("127.0.0.1", h->backend_port(), "/fault/slow?ms=1500",
                                 absl::Seconds(5));
  ASSERT_TRUE(WaitFor([&] { return Alerts(*h, "SlowUpstream") > 0; }, absl::Seconds(40)))
      << Summary(*h);
  EXPECT_TRUE(ActionsOf(*h, v1::ACTION_KIND_RESTART_SERVICE, "backend").empty()) << Summary(*h);
  EXPECT_TRUE(ActionsOf(*h, v1::ACTION_KIND_RESTART_PROXY, "nginx").empty()) << Summary(*h);
  auto describe = h->Describe();
  ASSERT_TRUE(describe.ok());
  bool measured = false;
  for (const auto& d : describe->stack().status().diagnoses()) {
    for (const auto& f : d.findings()) {
      if (f.code() == "SlowUpstream") measured = f.evidence().count("measured_latency") > 0;
    }
  }
  EXPECT_TRUE(measured) << "the alert carries the measured latency";
  // Fast again: serving with no restart at all.
  upkeep::testing::HttpGetStatus("127.0.0.1", h->backend_port(), "/fault/healthy",
                                 absl::Seconds(5));
  ASSERT_TRUE(h->WaitServing(absl::Seconds(30)).ok()) << Summary(*h);
  EXPECT_TRUE(ActionsOf(*h, v1::ACTION_KIND_RESTART_SERVICE, "backend").empty()) << Summary(*h);
}

// A reload is confirmed only when the old workers are gone, and judged on probes sent after
// it: a stale nginx config is healed by one reload each time, never followed by a restart.
TEST_F(FidelityTest, AReloadThatHealsIsNeverFollowedByARestart) {
  auto h = StartStack();
  ASSERT_NE(h, nullptr);
  for (int round = 1; round <= 3; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    const size_t reloads = ActionsOf(*h, v1::ACTION_KIND_RELOAD_PROXY, "nginx").size();
    ASSERT_TRUE(h->PoisonNginxUpstream().ok());
    ASSERT_TRUE(WaitFor(
        [&] { return ActionsOf(*h, v1::ACTION_KIND_RELOAD_PROXY, "nginx").size() > reloads; },
        absl::Seconds(20)))
        << Summary(*h);
    ASSERT_TRUE(h->WaitServing(absl::Seconds(30)).ok()) << Summary(*h);
  }
  EXPECT_TRUE(ActionsOf(*h, v1::ACTION_KIND_RESTART_PROXY, "nginx").empty()) << Summary(*h);
  EXPECT_TRUE(ActionsOf(*h, v1::ACTION_KIND_RESTART_SERVICE, "backend").empty()) << Summary(*h);
}

// A restarted service is judged only on probes of the new process: a hung backend is restarted
// once, and not again on the old process's failed probes.
TEST_F(FidelityTest, AHungBackendIsRestartedOnceAndJudgedAfresh) {
  auto h = StartStack();
  ASSERT_NE(h, nullptr);
  for (int round = 1; round <= 2; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    ASSERT_TRUE(h->HangBackend().ok());
    ASSERT_TRUE(WaitFor(
        [&] {
          return ActionsOf(*h, v1::ACTION_KIND_RESTART_SERVICE, "backend").size() >=
                 static_cast<size_t>(round);
        },
        absl::Seconds(30)))
        << Summary(*h);
    ASSERT_TRUE(h->WaitServing(absl::Seconds(30)).ok()) << Summary(*h);
    EXPECT_EQ(ActionsOf(*h, v1::ACTION_KIND_RESTART_SERVICE, "backend").size(),
              static_cast<size_t>(round))
        << Summary(*h);
  }
}

}  // namespace
}  // namespace upkeep::demo

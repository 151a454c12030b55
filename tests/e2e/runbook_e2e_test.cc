// The seed runbook end to end: a real controller, a real agent, real nginx and the sample
// services, one scenario per runbook branch. Each asserts the actions, the events and the
// final state, never the timing. Runs on the process runtime, and on the Docker runtime
// against a private dockerd (tests/support/docker).
#include <algorithm>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/proto_time.h"
#include "demo/harness.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_env.h"
#include "tests/support/net.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace upkeep::demo {
namespace {

using upkeep::testing::WaitFor;
using upkeep::v1::ActionKind;
using upkeep::v1::ActionRecord;
using upkeep::v1::Event;

// Actions of `kind` on `target` requested after the first `skip` records (the bring-up).
std::vector<ActionRecord> ActionsOf(StackHarness& h, ActionKind kind, const std::string& target,
                                    size_t skip = 0) {
  std::vector<ActionRecord> out;
  auto actions = h.Actions();
  if (!actions.ok()) return out;
  for (size_t i = skip; i < actions->size(); ++i) {
    const auto& a = (*actions)[i];
    if (a.action().kind() == kind && a.action().target() == target) out.push_back(a);
  }
  return out;
}

std::vector<Event> EventsWithReason(StackHarness& h, const std::string& reason, int64_t after = 0) {
  std::vector<Event> out;
  auto events = h.Events(after);
  if (!events.ok()) return out;
  for (const auto& e : *events) {
    if (e.reason() == reason) out.push_back(e);
  }
  return out;
}

class RunbookTest : public ::testing::TestWithParam<Runtime> {
 protected:
  std::unique_ptr<StackHarness> StartStack(HarnessOptions options = {}) {
    options.work_dir = dir_.path();
    options.source_dir = upkeep::testing::SourcePath("");
    options.bin_dir = upkeep::testing::BinPath("");
    options.runtime = GetParam();
    if (GetParam() == Runtime::kDocker) {
      DockerEnv* docker = DockerEnv::Get();
      if (!docker->ok()) {
        if (docker->required()) {
          ADD_FAILURE() << "dockerd is required (CI=true) but: " << docker->error();
        } else {
          skip_reason_ = docker->error();
        }
        return nullptr;
      }
      options.docker_socket = docker->socket();
      options.docker_image = docker->image();
    }
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

  upkeep::testing::TempDir dir_;
  std::string skip_reason_;
  size_t baseline_ = 0;       // actions recorded by the time the stack first served
  int64_t baseline_seq_ = 0;  // events by then
};

#define START_OR_RETURN(var, ...)                            \
  auto var = StartStack(__VA_ARGS__);                        \
  if (var == nullptr) {                                      \
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_; \
    return;                                                  \
  }

// (1) "Backend container not running? → docker compose up -d backend"
TEST_P(RunbookTest, StartsBackendThatDied) {
  START_OR_RETURN(h);
  ASSERT_TRUE(h->CrashBackend().ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        return !ActionsOf(*h, upkeep::v1::ACTION_KIND_START_SERVICE, "backend", baseline_)
                    .empty() ||
               !ActionsOf(*h, upkeep::v1::ACTION_KIND_RESTART_SERVICE, "backend", baseline_)
                    .empty();
      },
      absl::Seconds(20)))
      << Summary(*h);
  ASSERT_TRUE(h->WaitServing(absl::Seconds(30)).ok()) << Summary(*h);
  EXPECT_TRUE(WaitFor([&] { return !EventsWithReason(*h, "Healed", baseline_seq_).empty(); },
                      absl::Seconds(15)))
      << Summary(*h);
  EXPECT_TRUE(ActionsOf(*h, upkeep::v1::ACTION_KIND_RESTART_PROXY, "nginx", baseline_).empty())
      << Summary(*h);
}

// (2) "Backend unhealthy? → check logs → restart"
TEST_P(RunbookTest, CollectsLogsThenRestartsHungBackend) {
  START_OR_RETURN(h);
  ASSERT_TRUE(h->HangBackend().ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        return !ActionsOf(*h, upkeep::v1::ACTION_KIND_RESTART_SERVICE, "backend", baseline_)
                    .empty();
      },
      absl::Seconds(30)))
      << Summary(*h);
  ASSERT_TRUE(h->WaitServing(absl::Seconds(30)).ok()) << Summary(*h);
  auto logs = ActionsOf(*h, upkeep::v1::ACTION_KIND_COLLECT_LOGS, "backend", baseline_);
  auto restarts = ActionsOf(*h, upkeep::v1::ACTION_KIND_RESTART_SERVICE, "backend", baseline_);
  ASSERT_FALSE(logs.empty()) << Summary(*h);
  EXPECT_LE(upkeep::FromProto(logs.front().requested_at()),
            upkeep::FromProto(restarts.front().requested_at()));
  EXPECT_EQ(logs.front().result().outcome(), upkeep::v1::ACTION_OUTCOME_SUCCEEDED);
  EXPECT_NE(logs.front().result().output().find("GET"), std::string::npos)
      << "collected logs should hold the sample service's request lines: "
      << logs.front().result().output();
  EXPECT_EQ(restarts.size(), 1u) << Summary(*h);
}

// (3) "Frontend container not running? → docker compose up -d frontend"
TEST_P(RunbookTest, StartsStoppedFrontend) {
  START_OR_RETURN(h);
  ASSERT_TRUE(h->StopFrontend().ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        return !ActionsOf(*h, upkeep::v1::ACTION_KIND_START_SERVICE, "frontend", baseline_).empty();
      },
      absl::Seconds(20)))
      << Summary(*h);
  ASSERT_TRUE(h->WaitServing(absl::Seconds(30)).ok()) << Summary(*h);
  EXPECT_TRUE(ActionsOf(*h, upkeep::v1::ACTION_KIND_RESTART_SERVICE, "backend", baseline_).empty());
}

// (4) "Backend healthy but nginx can't connect? → restart nginx" (reload first)
TEST_P(RunbookTest, ReloadsNginxWhenUpstreamsHealthyButRouteFails) {
  START_OR_RETURN(h);
  ASSERT_TRUE(h->PoisonNginxUpstream().ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        return !ActionsOf(*h, upkeep::v1::ACTION_KIND_RELOAD_PROXY, "nginx", baseline_).empty();
      },
      absl::Seconds(20)))
      << Summary(*h);
  ASSERT_TRUE(h->WaitServing(absl::Seconds(30)).ok()) << Summary(*h);
  EXPECT_TRUE(ActionsOf(*h, upkeep::v1::ACTION_KIND_RESTART_SERVICE, "backend", baseline_).empty())
      << "the backend was healthy; it must not be restarted" << Summary(*h);
  EXPECT_LE(ActionsOf(*h, upkeep::v1::ACTION_KIND_RESTART_PROXY, "nginx", baseline_).size(), 1u);
}

// (5) "All containers healthy but still 502? → nginx -t, error log, ports" — an alert.
TEST_P(RunbookTest, AlertsWithFindingsWhenNothingAutomaticCanFixIt) {
  START_OR_RETURN(h);
  ASSERT_TRUE(h->MisconfigureNginxPort().ok());
  // Evidence first: PortMismatch is alerted at once, with one reload (nginx may run an older
  // config than the file); then nothing automatic is left.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto d = h->Describe();
        return !EventsWithReason(*h, "Alert", baseline_seq_).empty() && d.ok() &&
               d->stack().status().diagnoses_size() > 0 &&
               d->stack().status().diagnoses(0).verdict() == upkeep::v1::VERDICT_DEGRADED;
      },
      absl::Seconds(40)))
      << Summary(*h);
  auto describe = h->Describe();
  ASSERT_TRUE(describe.ok());
  ASSERT_GT(describe->stack().status().diagnoses_size(), 0);
  const auto& diagnosis = describe->stack().status().diagnoses(0);
  EXPECT_EQ(diagnosis.verdict(), upkeep::v1::VERDICT_DEGRADED) << diagnosis.DebugString();
  bool has_alert = false;
  for (const auto& f : diagnosis.findings()) {
    has_alert = has_alert || f.severity() == upkeep::v1::SEVERITY_ALERT;
  }
  EXPECT_TRUE(has_alert) << diagnosis.DebugString();
  // No more than the allowed escalation: one reload, no restart of nginx, no service restarts.
  EXPECT_LE(ActionsOf(*h, upkeep::v1::ACTION_KIND_RELOAD_PROXY, "nginx", baseline_).size(), 1u)
      << Summary(*h);
  EXPECT_TRUE(ActionsOf(*h, upkeep::v1::ACTION_KIND_RESTART_PROXY, "nginx", baseline_).empty())
      << "a restart cannot change the port nginx dials" << Summary(*h);
  EXPECT_TRUE(ActionsOf(*h, upkeep::v1::ACTION_KIND_RESTART_SERVICE, "backend", baseline_).empty())
      << Summary(*h);
  // Each finding is alerted once, not on every reconcile.
  std::set<std::string> seen;
  for (const auto& e : EventsWithReason(*h, "Alert", baseline_seq_)) {
    EXPECT_TRUE(seen.insert(e.message()).second) << "alerted twice: " << e.message();
  }
}

// (6) Crash loop: backoff and the restart budget hold; one alert.
TEST_P(RunbookTest, CrashLoopRespectsBudgetAndAlertsOnce) {
  HarnessOptions options;
  options.crash_loop = true;
  options.restart_budget = 3;
  options.backoff_initial = "100ms";
  // The stack never becomes Ready, so start it without WaitServing.
  options.work_dir = dir_.path();
  options.source_dir = upkeep::testing::SourcePath("");
  options.bin_dir = upkeep::testing::BinPath("");
  options.runtime = GetParam();
  if (GetParam() == Runtime::kDocker) {
    DockerEnv* docker = DockerEnv::Get();
    if (!docker->ok()) {
      if (docker->required()) FAIL() << docker->error();
      GTEST_SKIP() << docker->error();
    }
    options.docker_socket = docker->socket();
    options.docker_image = docker->image();
  }
  auto started = StackHarness::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  StackHarness& h = **started;
  ASSERT_TRUE(
      WaitFor([&] { return !EventsWithReason(h, "CrashLooping").empty(); }, absl::Seconds(60)))
      << Summary(h);
  const size_t starts = ActionsOf(h, upkeep::v1::ACTION_KIND_START_SERVICE, "backend").size() +
                        ActionsOf(h, upkeep::v1::ACTION_KIND_RESTART_SERVICE, "backend").size();
  // The first start is the initial bring-up; the budget bounds the repairs after it.
  EXPECT_LE(starts, 3u + 1u) << Summary(h);
  // Later reconciles add no action on the crash-looping target and no second alert.
  const int64_t seq = h.LastEventSeq();
  auto describe = h.Describe();
  ASSERT_TRUE(describe.ok());
  const int64_t reconcile_before = describe->stack().status().last_reconcile().seconds();
  ASSERT_TRUE(WaitFor(
      [&] {
        auto d = h.Describe();
        return d.ok() && d->stack().status().last_reconcile().seconds() >= reconcile_before + 2;
      },
      absl::Seconds(30)));
  EXPECT_EQ(ActionsOf(h, upkeep::v1::ACTION_KIND_START_SERVICE, "backend").size() +
                ActionsOf(h, upkeep::v1::ACTION_KIND_RESTART_SERVICE, "backend").size(),
            starts)
      << Summary(h);
  EXPECT_TRUE(EventsWithReason(h, "CrashLooping", seq).empty()) << Summary(h);
}

// (7) Dry-run: the plan is reported ("would do"), nothing is changed.
TEST_P(RunbookTest, DryRunReportsPlanAndChangesNothing) {
  START_OR_RETURN(h);
  ASSERT_TRUE(h->SetDryRun(true).ok());
  auto before = h->Actions();
  ASSERT_TRUE(before.ok());
  size_t executed_before = 0;
  for (const auto& a : *before) executed_before += a.dry_run() ? 0 : 1;
  ASSERT_TRUE(h->CrashBackend().ok());
  ASSERT_TRUE(WaitFor([&] { return !EventsWithReason(*h, "WouldDo", baseline_seq_).empty(); },
                      absl::Seconds(20)))
      << Summary(*h);
  auto after = h->Actions();
  ASSERT_TRUE(after.ok());
  size_t executed_after = 0;
  for (const auto& a : *after) executed_after += a.dry_run() ? 0 : 1;
  EXPECT_EQ(executed_after, executed_before) << Summary(*h);
  EXPECT_NE(h->ProxyStatus("/api/health"), 200) << "dry-run must leave the backend down";
}

// (8) A dependency down: the database is fixed first; the backend is not restarted in a loop.
TEST_P(RunbookTest, FixesDependencyFirstAndLeavesDependentAlone) {
  HarnessOptions options;
  options.with_db = true;
  START_OR_RETURN(h, options);
  ASSERT_TRUE(h->CrashDb().ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        return !ActionsOf(*h, upkeep::v1::ACTION_KIND_START_SERVICE, "db", baseline_).empty();
      },
      absl::Seconds(20)))
      << Summary(*h);
  ASSERT_TRUE(h->WaitServing(absl::Seconds(30)).ok()) << Summary(*h);
  EXPECT_TRUE(ActionsOf(*h, upkeep::v1::ACTION_KIND_RESTART_SERVICE, "backend", baseline_).empty())
      << Summary(*h);
}

// The controller killed right after sending an action and restarted: no action lost, none
// executed twice (issue 4).
TEST_P(RunbookTest, ControllerKilledMidActionLosesAndDoublesNothing) {
  START_OR_RETURN(h);
  ASSERT_TRUE(h->CrashBackend().ok());
  ASSERT_TRUE(WaitFor([&] { return !EventsWithReason(*h, "ActionSent", baseline_seq_).empty(); },
                      absl::Seconds(20)))
      << Summary(*h);
  ASSERT_TRUE(h->KillController().ok());
  ASSERT_TRUE(h->StartController().ok());
  ASSERT_TRUE(h->WaitServing(absl::Seconds(30)).ok()) << Summary(*h);
  auto actions = h->Actions();
  ASSERT_TRUE(actions.ok());
  std::vector<std::string> ids;
  for (const auto& a : *actions) ids.push_back(a.action().id());
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(std::adjacent_find(ids.begin(), ids.end()), ids.end()) << Summary(*h);
  for (const auto& a : *actions) {
    EXPECT_FALSE(a.result().replayed() &&
                 a.result().outcome() == upkeep::v1::ACTION_OUTCOME_UNSPECIFIED);
  }
}

// The agent killed and restarted: it adopts its services (no twins) and resumes.
TEST_P(RunbookTest, AgentRestartResumesWithoutDuplicates) {
  START_OR_RETURN(h);
  auto before = h->Actions();
  ASSERT_TRUE(before.ok());
  ASSERT_TRUE(h->KillAgent().ok());
  ASSERT_TRUE(h->StartAgent().ok());
  ASSERT_TRUE(
      WaitFor([&] { return !EventsWithReason(*h, "AgentConnected", baseline_seq_).empty(); },
              absl::Seconds(20)))
      << Summary(*h);
  ASSERT_TRUE(h->WaitServing(absl::Seconds(30)).ok());
  ASSERT_TRUE(h->CrashBackend().ok());
  ASSERT_TRUE(h->WaitServing(absl::Seconds(30)).ok()) << Summary(*h);
  // No service was restarted just because the agent restarted.
  EXPECT_TRUE(ActionsOf(*h, upkeep::v1::ACTION_KIND_RESTART_SERVICE, "frontend", baseline_).empty())
      << Summary(*h);
}

INSTANTIATE_TEST_SUITE_P(Runtimes, RunbookTest,
                         ::testing::Values(Runtime::kProcess, Runtime::kDocker),
                         [](const ::testing::TestParamInfo<Runtime>& info) {
                           return info.param == Runtime::kProcess ? "Process" : "Docker";
                         });

}  // namespace
}  // namespace upkeep::demo

namespace upkeep::demo {
namespace {

// Issue 4: one controller, two real agents with different host ids, each healing its own
// host's stack; nothing crosses over.
TEST(Fleet, TwoRealAgentsEachRepairTheirOwnHost) {
  upkeep::testing::TempDir dir;
  HarnessOptions options;
  options.work_dir = dir.path();
  options.source_dir = upkeep::testing::SourcePath("");
  options.bin_dir = upkeep::testing::BinPath("");
  auto h = StackHarness::Start(options);
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_TRUE((*h)->WaitServing(absl::Seconds(60)).ok());
  // A second host: its own agent and its own stack (one service, no proxy).
  const int port = upkeep::testing::FreePort();
  std::vector<std::string> argv = {upkeep::testing::BinPath("upkeep-agent"),
                                   "--controller",
                                   (*h)->controller_address(),
                                   "--host-id",
                                   "second",
                                   "--data",
                                   dir.Join("agent2"),
                                   "--allow-exec",
                                   upkeep::testing::BinPath("")};
  auto tls_flags = (*h)->AgentTlsFlags("second");
  ASSERT_TRUE(tls_flags.ok()) << tls_flags.status();
  argv.insert(argv.end(), tls_flags->begin(), tls_flags->end());
  auto agent = upkeep::testing::Subprocess::Start(argv, dir.Join("agent2.log"));
  ASSERT_TRUE(agent.ok());
  upkeep::v1::ApplyRequest req;
  req.add_manifests()->set_filename("second.yaml");
  req.mutable_manifests(0)->set_content(absl::StrCat(
      "apiVersion: upkeep/v1\nkind: Stack\nmetadata: {name: second}\nspec:\n  hosts: [second]\n"
      "  runtime: process\n  services:\n    - name: api\n      process: {command: [",
      upkeep::testing::BinPath("upkeep-sample-service"), ", --port, \"", port,
      "\"]}\n      port: ", port, "\n      probe: {http: {path: /health}}\n"));
  {
    grpc::ClientContext ctx;
    upkeep::v1::ApplyResponse resp;
    ASSERT_TRUE((*h)->fleet().Apply(&ctx, req, &resp).ok());
  }
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", port, absl::Seconds(30)))
      << "the second agent should start its service";
  upkeep::testing::HttpGetStatus("127.0.0.1", port, "/fault/crash");  // answers, then aborts
  upkeep::v1::ListActionsResponse actions;
  auto second_starts_so_far = [&] {
    grpc::ClientContext ctx;
    upkeep::v1::ListActionsRequest lr;
    lr.set_limit(1000);
    actions.Clear();
    if (!(*h)->fleet().ListActions(&ctx, lr, &actions).ok()) return 0;
    int n = 0;
    for (const auto& a : actions.actions()) {
      n += a.action().stack() == "second" &&
           a.action().kind() == upkeep::v1::ACTION_KIND_START_SERVICE && a.has_result();
    }
    return n;
  };
  ASSERT_TRUE(WaitFor([&] { return second_starts_so_far() >= 2; }, absl::Seconds(30)));
  ASSERT_TRUE(WaitFor(
      [&] {
        return upkeep::testing::HttpGetStatus("127.0.0.1", port, "/health", absl::Seconds(1)) ==
               200;
      },
      absl::Seconds(30)));
  int second_starts = 0;
  for (const auto& a : actions.actions()) {
    EXPECT_EQ(a.action().host() == "second", a.action().stack() == "second") << a.DebugString();
    if (a.action().stack() == "second" &&
        a.action().kind() == upkeep::v1::ACTION_KIND_START_SERVICE) {
      ++second_starts;
      EXPECT_EQ(a.result().outcome(), upkeep::v1::ACTION_OUTCOME_SUCCEEDED);
    }
  }
  EXPECT_GE(second_starts, 2) << "the bring-up and the repair after the crash";
  EXPECT_TRUE((*h)->WaitServing(absl::Seconds(10)).ok()) << "the first host is untouched";
  // The second agent's service outlives it; stop it through the agent's own act command.
  (*agent)->Stop();
  std::ofstream(dir.Join("second.yaml")) << req.manifests(0).content();
  auto stop = upkeep::testing::Subprocess::Start(
      {upkeep::testing::BinPath("upkeep-agent"), "act", "-f", dir.Join("second.yaml"), "--data",
       dir.Join("agent2"), "stop-service", "api"},
      dir.Join("stop.log"));
  ASSERT_TRUE(stop.ok());
  (*stop)->Wait(absl::Seconds(20));
}

}  // namespace
}  // namespace upkeep::demo

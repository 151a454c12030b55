// Issue 11 end to end, on a real controller, agent, nginx and sample services (and a private
// dockerd for the Docker cases): people are respected (a stop by hand holds until a resume;
// `pause --for` resumes by itself), a flapping backend raises one alert per episode, and a
// missing container is recreated with Debian's docker-compose. Each test asserts actions,
// events and final state, never timing.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/manifest/loader.h"
#include "core/proto_time.h"
#include "demo/harness.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_env.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace upkeep::demo {
namespace {

namespace v1 = upkeep::v1;
using upkeep::testing::WaitFor;

std::vector<v1::ActionRecord> ActionsOf(StackHarness& h, v1::ActionKind kind,
                                        const std::string& target, size_t skip = 0) {
  std::vector<v1::ActionRecord> out;
  auto actions = h.Actions();
  if (!actions.ok()) return out;
  for (size_t i = skip; i < actions->size(); ++i) {
    const auto& a = (*actions)[i];
    if (a.action().kind() == kind && a.action().target() == target) out.push_back(a);
  }
  return out;
}

// Events whose reason is `reason` and whose message holds `text`, after `after`.
std::vector<v1::Event> Events(StackHarness& h, const std::string& reason,
                              const std::string& text = "", int64_t after = 0) {
  std::vector<v1::Event> out;
  auto events = h.Events(after);
  if (!events.ok()) return out;
  for (const auto& e : *events) {
    if (e.reason() == reason && absl::StrContains(e.message(), text)) out.push_back(e);
  }
  return out;
}

bool HasFinding(StackHarness& h, const std::string& code, const std::string& target) {
  auto d = h.Describe();
  if (!d.ok() || d->stack().status().diagnoses_size() == 0) return false;
  for (const auto& f : d->stack().status().diagnoses(0).findings()) {
    if (f.code() == code && f.target() == target) return true;
  }
  return false;
}

absl::Time LastReconcile(StackHarness& h) {
  auto d = h.Describe();
  if (!d.ok() || !d->stack().status().has_last_reconcile()) return absl::InfinitePast();
  return FromProto(d->stack().status().last_reconcile());
}

class CausesTest : public ::testing::TestWithParam<Runtime> {
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

  // Waits until the controller has judged the stack twice more after now: enough to show
  // that something it would do at once, it did not do.
  void WaitTwoReconciles(StackHarness& h) {
    const absl::Time from = LastReconcile(h);
    ASSERT_TRUE(WaitFor(
        [&] {
          (void)h.ProxyStatus("/api/health", absl::Milliseconds(200));  // a change to react to
          return LastReconcile(h) > from + absl::Seconds(1);
        },
        absl::Seconds(30)));
  }

  upkeep::testing::TempDir dir_;
  std::string skip_reason_;
  size_t baseline_ = 0;
  int64_t baseline_seq_ = 0;
};

#define START_OR_RETURN(var, ...)                            \
  auto var = StartStack(__VA_ARGS__);                        \
  if (var == nullptr) {                                      \
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_; \
    return;                                                  \
  }

// "Respect people": `upkeepctl run stop-service backend` holds, like Docker's unless-stopped,
// until someone resumes the stack.
TEST_P(CausesTest, LeavesAServiceAPersonStoppedUntilResumed) {
  START_OR_RETURN(h);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  v1::RunActionRequest req;
  req.set_stack(h->stack_name());
  req.set_kind(v1::ACTION_KIND_STOP_SERVICE);
  req.set_target("backend");
  v1::RunActionResponse resp;
  ASSERT_TRUE(h->fleet().RunAction(&ctx, req, &resp).ok()) << Summary(*h);
  ASSERT_EQ(resp.record().result().outcome(), v1::ACTION_OUTCOME_SUCCEEDED) << Summary(*h);
  ASSERT_TRUE(
      WaitFor([&] { return HasFinding(*h, "ManuallyStopped", "backend"); }, absl::Seconds(20)))
      << Summary(*h);
  WaitTwoReconciles(*h);
  EXPECT_TRUE(HasFinding(*h, "ManuallyStopped", "backend")) << Summary(*h);
  EXPECT_TRUE(ActionsOf(*h, v1::ACTION_KIND_START_SERVICE, "backend", baseline_).empty())
      << Summary(*h);
  EXPECT_TRUE(ActionsOf(*h, v1::ACTION_KIND_RESTART_SERVICE, "backend", baseline_).empty())
      << Summary(*h);
  EXPECT_TRUE(ActionsOf(*h, v1::ACTION_KIND_RESTART_PROXY, "nginx", baseline_).empty())
      << Summary(*h);
  // A resume means "run it all again".
  ASSERT_TRUE(h->SetPaused(false).ok());
  EXPECT_TRUE(h->WaitServing(absl::Seconds(40)).ok()) << Summary(*h);
  EXPECT_EQ(ActionsOf(*h, v1::ACTION_KIND_START_SERVICE, "backend", baseline_).size(), 1u)
      << Summary(*h);
}

// "Respect people" in the process runtime: a SIGKILL that upkeep did not send (a person's
// `kill -9`) holds like `stop-service`, until someone resumes the stack. (`docker kill` is
// DockerRuntimeTest.DockerKillByAPersonIsStoppedByPerson.)
TEST_P(CausesTest, AKillAPersonSentHoldsUntilResumed) {
  if (GetParam() == Runtime::kDocker) GTEST_SKIP() << "process runtime only";
  START_OR_RETURN(h);
  std::ifstream state(
      absl::StrCat(dir_.path(), "/agent/services/", h->stack_name(), "/backend/state"));
  int pid = 0;
  ASSERT_TRUE(state >> pid) << "no pid in the backend's state file";
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  ASSERT_TRUE(
      WaitFor([&] { return HasFinding(*h, "ManuallyStopped", "backend"); }, absl::Seconds(20)))
      << Summary(*h);
  WaitTwoReconciles(*h);
  EXPECT_TRUE(HasFinding(*h, "ManuallyStopped", "backend")) << Summary(*h);
  EXPECT_TRUE(ActionsOf(*h, v1::ACTION_KIND_START_SERVICE, "backend", baseline_).empty())
      << Summary(*h);
  EXPECT_TRUE(ActionsOf(*h, v1::ACTION_KIND_RESTART_SERVICE, "backend", baseline_).empty())
      << Summary(*h);
  ASSERT_TRUE(h->SetPaused(false).ok());
  EXPECT_TRUE(h->WaitServing(absl::Seconds(40)).ok()) << Summary(*h);
  EXPECT_EQ(ActionsOf(*h, v1::ACTION_KIND_START_SERVICE, "backend", baseline_).size(), 1u)
      << Summary(*h);
}

// `upkeepctl pause stack X --for D` resumes by itself, then repairs what broke meanwhile.
TEST_P(CausesTest, PauseForResumesByItself) {
  START_OR_RETURN(h);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  v1::PauseRequest req;
  req.set_stack(h->stack_name());
  req.mutable_duration()->set_seconds(3);
  v1::PauseResponse resp;
  ASSERT_TRUE(h->fleet().Pause(&ctx, req, &resp).ok());
  ASSERT_TRUE(h->CrashBackend().ok());
  ASSERT_TRUE(
      WaitFor([&] { return !Events(*h, "Resumed", "pause expired").empty(); }, absl::Seconds(30)))
      << Summary(*h);
  const absl::Time resumed_at = FromProto(Events(*h, "Resumed", "pause expired")[0].at());
  EXPECT_TRUE(h->WaitServing(absl::Seconds(40)).ok()) << Summary(*h);
  const auto starts = ActionsOf(*h, v1::ACTION_KIND_START_SERVICE, "backend", baseline_);
  ASSERT_FALSE(starts.empty()) << Summary(*h);
  for (const auto& s : starts) {
    EXPECT_GE(FromProto(s.requested_at()), resumed_at) << "acted while paused" << Summary(*h);
  }
}

// "Flapping": a backend that keeps relapsing after each repair raises one alert for the
// whole episode, not one per flap, and is still repaired within its budget.
TEST_P(CausesTest, FlappingBackendRaisesOneAlertPerEpisode) {
  START_OR_RETURN(h);
  for (int flap = 0; flap < 3; ++flap) {
    ASSERT_TRUE(h->CrashBackend().ok());
    // Repaired and answering again before the next relapse.
    ASSERT_TRUE(WaitFor(
        [&] {
          return ActionsOf(*h, v1::ACTION_KIND_START_SERVICE, "backend", baseline_).size() >=
                     static_cast<size_t>(flap + 1) &&
                 h->ProxyStatus("/api/health") == 200;
        },
        absl::Seconds(60)))
        << "flap " << flap << Summary(*h);
  }
  ASSERT_TRUE(WaitFor([&] { return !Events(*h, "Alert", "Flapping", baseline_seq_).empty(); },
                      absl::Seconds(20)))
      << Summary(*h);
  WaitTwoReconciles(*h);
  EXPECT_EQ(Events(*h, "Alert", "Flapping", baseline_seq_).size(), 1u) << Summary(*h);
  EXPECT_TRUE(HasFinding(*h, "Flapping", "backend")) << Summary(*h);
  EXPECT_LE(ActionsOf(*h, v1::ACTION_KIND_START_SERVICE, "backend", baseline_).size(), 3u)
      << Summary(*h);
  EXPECT_TRUE(ActionsOf(*h, v1::ACTION_KIND_RESTART_PROXY, "nginx", baseline_).empty())
      << Summary(*h);
}

INSTANTIATE_TEST_SUITE_P(Runtimes, CausesTest,
                         ::testing::Values(Runtime::kProcess, Runtime::kDocker),
                         [](const auto& info) {
                           return info.param == Runtime::kProcess ? "Process" : "Docker";
                         });

// "The runbook's first branch, whole": the backend's container is removed; upkeep recreates
// it with Debian's docker-compose (`up -d --no-deps`) against the test's dockerd, and the
// exact command and its output are kept with the action.
class ComposeTest : public CausesTest {};

TEST_P(ComposeTest, RecreatesAMissingContainerWithCompose) {
  if (::access("/usr/bin/docker-compose", X_OK) != 0) {
    GTEST_SKIP() << "docker-compose is not installed (scripts/deps.sh installs it)";
  }
  START_OR_RETURN(h);
  DockerEnv* docker = DockerEnv::Get();
  // The compose file a person would have: the same service, with its profile.
  const std::string compose = dir_.Join("docker-compose.yml");
  std::ofstream(compose) << "services:\n"
                         << "  backend:\n"
                         << "    image: " << docker->image() << "\n"
                         << "    network_mode: host\n"
                         << "    profiles: [e2e]\n"
                         << "    command: [/upkeep-sample-service, --name, backend, --port, \""
                         << h->backend_port() << "\"]\n";
  // The stack names it (re-applied: the same manifest plus compose.file and .profile).
  std::ifstream in(h->manifest_path());
  std::string manifest((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string from = "service: backend}";
  const auto at = manifest.find(from);
  ASSERT_NE(at, std::string::npos) << manifest;
  manifest.replace(at, from.size(),
                   absl::StrCat("service: backend, file: ", compose, ", profile: e2e}"));
  const manifest::LoadResult loaded = manifest::LoadString(manifest, "compose.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.errors[0].ToString();
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::ApplyRequest req;
    req.add_manifests()->set_filename("compose.yaml");
    req.mutable_manifests(0)->set_content(manifest);
    v1::ApplyResponse resp;
    ASSERT_TRUE(h->fleet().Apply(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.applied_size(), 1) << resp.DebugString();
  }
  // The container goes away entirely (`docker rm -f`), as after a `docker compose down`.
  auto rm = upkeep::testing::Subprocess::Start(
      {"docker", "-H", absl::StrCat("unix://", docker->socket()), "rm", "-f",
       absl::StrCat(h->stack_name(), "-backend-", h->backend_port())},
      dir_.Join("rm.log"));
  ASSERT_TRUE(rm.ok());
  ASSERT_TRUE((*rm)->Wait(absl::Seconds(30)).has_value());
  ASSERT_TRUE(WaitFor(
      [&] {
        const auto creates = ActionsOf(*h, v1::ACTION_KIND_CREATE_SERVICE, "backend", baseline_);
        return !creates.empty() && creates[0].result().outcome() != v1::ACTION_OUTCOME_UNSPECIFIED;
      },
      absl::Seconds(60)))
      << Summary(*h);
  const auto create = ActionsOf(*h, v1::ACTION_KIND_CREATE_SERVICE, "backend", baseline_)[0];
  EXPECT_EQ(create.result().outcome(), v1::ACTION_OUTCOME_SUCCEEDED) << Summary(*h);
  EXPECT_TRUE(absl::StrContains(create.result().output(), "--no-deps")) << create.DebugString();
  EXPECT_TRUE(absl::StrContains(create.result().output(), "--profile e2e")) << create.DebugString();
  EXPECT_TRUE(absl::StrContains(create.result().output(), compose)) << create.DebugString();
  EXPECT_TRUE(h->WaitServing(absl::Seconds(60)).ok()) << Summary(*h);
  // Clean up what compose made (the harness removes only its own containers).
  auto down = upkeep::testing::Subprocess::Start(
      {"/usr/bin/docker-compose", "-H", absl::StrCat("unix://", docker->socket()), "-p",
       h->stack_name(), "-f", compose, "--profile", "e2e", "rm", "-s", "-f", "backend"},
      dir_.Join("down.log"));
  if (down.ok()) (void)(*down)->Wait(absl::Seconds(60));
}

INSTANTIATE_TEST_SUITE_P(Docker, ComposeTest, ::testing::Values(Runtime::kDocker),
                         [](const auto&) { return std::string("Docker"); });

}  // namespace
}  // namespace upkeep::demo

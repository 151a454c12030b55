// `upkeep-agent --standalone`: the whole system on one host, no controller. The real agent
// binary heals every fault of the demo tour (real nginx, real processes) from the manifest
// file alone, and `upkeepctl --agent DATA/upkeep.sock` shows it as it would a controller.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/proto_time.h"
#include "demo/harness.h"
#include "gtest/gtest.h"
#include "tests/support/net.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace upkeep::agent {
namespace {

namespace v1 = upkeep::v1;
using upkeep::testing::WaitFor;

bool HaveNginx() {
  for (const char* p : {"/usr/sbin/nginx", "/usr/bin/nginx"}) {
    if (std::filesystem::exists(p)) return true;
  }
  return false;
}

// Runs upkeepctl (the real binary) and returns its stdout; `code` gets its exit status.
std::string Upkeepctl(const std::vector<std::string>& args, int* code = nullptr) {
  std::vector<std::string> quoted = {upkeep::testing::BinPath("upkeepctl")};
  for (const auto& a : args) quoted.push_back("'" + a + "'");
  const std::string cmd = absl::StrCat(absl::StrJoin(quoted, " "), " 2>&1");
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int st = ::pclose(p);
  if (code != nullptr) *code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

class StandaloneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveNginx()) {
      if (std::getenv("CI") != nullptr) FAIL() << "nginx is required in CI";
      GTEST_SKIP() << "nginx not installed";
    }
    demo::HarnessOptions o;
    o.work_dir = dir_.path();
    o.source_dir = upkeep::testing::SourcePath("");
    o.bin_dir = std::getenv("UPKEEP_BIN_DIR");
    o.standalone = true;
    o.tls = false;
    o.backoff_initial = "200ms";
    auto h = demo::StackHarness::Start(o);
    ASSERT_TRUE(h.ok()) << h.status();
    h_ = std::move(*h);
    ASSERT_TRUE(h_->WaitServing(absl::Seconds(60)).ok()) << Log();
  }
  std::string Log() {
    std::ifstream in(dir_.path() + "/agent.log");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return text.size() > 6000 ? text.substr(text.size() - 6000) : text;
  }
  // Actions of `kind` on `target` the agent recorded.
  int ActionsOf(v1::ActionKind kind, const std::string& target) {
    auto a = h_->Actions();
    if (!a.ok()) return 0;
    int n = 0;
    for (const auto& r : *a) n += r.action().kind() == kind && r.action().target() == target;
    return n;
  }
  std::string sock() { return h_->agent_socket(); }

  upkeep::testing::TempDir dir_;
  std::unique_ptr<demo::StackHarness> h_;
};

TEST_F(StandaloneTest, TheSocketIsPrivateToItsUser) {
  struct stat st {};
  ASSERT_EQ(::stat(sock().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(StandaloneTest, HealsEveryFaultOfTheDemoTourAlone) {
  // 1. The backend crashes: started again.
  ASSERT_TRUE(h_->CrashBackend().ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        return ActionsOf(v1::ACTION_KIND_START_SERVICE, "backend") +
                   ActionsOf(v1::ACTION_KIND_RESTART_SERVICE, "backend") >
               0;
      },
      absl::Seconds(30)))
      << Log();
  ASSERT_TRUE(h_->WaitServing(absl::Seconds(30)).ok()) << Log();
  // 2. The backend hangs: logs collected, then restarted.
  const int restarts = ActionsOf(v1::ACTION_KIND_RESTART_SERVICE, "backend");
  ASSERT_TRUE(h_->HangBackend().ok());
  ASSERT_TRUE(
      WaitFor([&] { return ActionsOf(v1::ACTION_KIND_RESTART_SERVICE, "backend") > restarts; },
              absl::Seconds(40)))
      << Log();
  EXPECT_GT(ActionsOf(v1::ACTION_KIND_COLLECT_LOGS, "backend"), 0);
  ASSERT_TRUE(h_->WaitServing(absl::Seconds(30)).ok()) << Log();
  // 3. The frontend stops.
  ASSERT_TRUE(h_->StopFrontend().ok());
  ASSERT_TRUE(WaitFor([&] { return ActionsOf(v1::ACTION_KIND_START_SERVICE, "frontend") > 0; },
                      absl::Seconds(30)))
      << Log();
  ASSERT_TRUE(h_->WaitServing(absl::Seconds(30)).ok()) << Log();
  // 4. nginx runs a stale config (healthy backend, 502): reloaded.
  ASSERT_TRUE(h_->PoisonNginxUpstream().ok());
  ASSERT_TRUE(WaitFor([&] { return ActionsOf(v1::ACTION_KIND_RELOAD_PROXY, "nginx") > 0; },
                      absl::Seconds(30)))
      << Log();
  ASSERT_TRUE(h_->WaitServing(absl::Seconds(30)).ok()) << Log();
  // 5. nginx stops: its config tested, then started.
  ASSERT_TRUE(h_->StopNginx().ok());
  ASSERT_TRUE(WaitFor([&] { return ActionsOf(v1::ACTION_KIND_START_PROXY, "nginx") > 0; },
                      absl::Seconds(30)))
      << Log();
  ASSERT_TRUE(h_->WaitServing(absl::Seconds(30)).ok()) << Log();

  // upkeepctl --agent shows it, as against a controller.
  int code = 0;
  std::string out = Upkeepctl({"--agent", sock(), "get", "stacks"}, &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "demo")) << out;
  out = Upkeepctl({"--agent", sock(), "get", "hosts"}, &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "demo")) << out;
  out = Upkeepctl({"--agent", sock(), "describe", "stack", "demo"}, &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "Healed")) << out;
  out = Upkeepctl({"--agent", sock(), "explain", "stack", "demo"}, &code);
  EXPECT_EQ(code, 0) << out;
  out = Upkeepctl({"--agent", sock(), "events", "--stack", "demo"}, &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "Detected")) << out;
  out = Upkeepctl({"--agent", sock(), "actions", "--stack", "demo"}, &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "frontend")) << out;
  // Changing desired state goes through the manifests, not the socket.
  out = Upkeepctl({"--agent", sock(), "apply", "-f", h_->manifest_path()}, &code);
  EXPECT_NE(code, 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "manifests")) << out;
}

TEST_F(StandaloneTest, PauseThroughTheSocketStopsActingAndResumeActsAgain) {
  int code = 0;
  const int starts = ActionsOf(v1::ACTION_KIND_START_SERVICE, "frontend");  // bringing it up
  std::string out = Upkeepctl({"--agent", sock(), "pause", "stack", "demo"}, &code);
  ASSERT_EQ(code, 0) << out;
  ASSERT_TRUE(h_->StopFrontend().ok());
  // Planned, not done: the stack is degraded and nobody starts the frontend.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto d = h_->Describe();
        if (!d.ok()) return false;
        for (const auto& diag : d->stack().status().diagnoses()) {
          for (const auto& a : diag.actions()) {
            if (a.policy() == v1::POLICY_VERDICT_PAUSED) return true;
          }
        }
        return false;
      },
      absl::Seconds(30)));
  EXPECT_EQ(ActionsOf(v1::ACTION_KIND_START_SERVICE, "frontend"), starts);
  out = Upkeepctl({"--agent", sock(), "resume", "stack", "demo"}, &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(WaitFor([&] { return ActionsOf(v1::ACTION_KIND_START_SERVICE, "frontend") > starts; },
                      absl::Seconds(30)));
  EXPECT_TRUE(h_->WaitServing(absl::Seconds(30)).ok()) << Log();
}

TEST_F(StandaloneTest, AChangedManifestIsReReadAndABrokenOneChangesNothing) {
  // Dry-run written to the file: the agent re-reads it and only records what it would do.
  const absl::Time t0 = absl::Now();
  ASSERT_TRUE(h_->SetDryRun(true).ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        auto s = h_->Describe();
        return s.ok() && s->stack().spec().policy().mode() == v1::POLICY_MODE_DRY_RUN;
      },
      absl::Seconds(20)))
      << Log();
  ASSERT_TRUE(h_->StopFrontend().ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        auto a = h_->Actions();
        if (!a.ok()) return false;
        for (const auto& r : *a) {
          if (r.dry_run() && r.action().target() == "frontend" &&
              upkeep::FromProto(r.requested_at()) > t0) {
            return true;
          }
        }
        return false;
      },
      absl::Seconds(30)))
      << Log();
  auto records = h_->Actions();
  ASSERT_TRUE(records.ok());
  for (const auto& r : *records) {
    if (r.action().target() == "frontend" && upkeep::FromProto(r.requested_at()) > t0) {
      EXPECT_TRUE(r.dry_run()) << "dry-run does nothing: " << r.ShortDebugString();
    }
  }
  // A broken manifest: reported, nothing applied, the last good one stays.
  { std::ofstream(h_->manifest_path(), std::ios::app) << "\n  - : [broken\n"; }
  EXPECT_TRUE(WaitFor([&] { return absl::StrContains(Log(), "manifests_not_applied"); },
                      absl::Seconds(10)));
  auto s = h_->Describe();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->stack().spec().policy().mode(), v1::POLICY_MODE_DRY_RUN);
}

// The real binary with no nginx: a minimal manifest (dry-run, one process service), rewritten
// as an editor saves (a new file renamed over the old), is re-read; SIGTERM stops the agent,
// which exits 0 and removes its socket. Nothing here waits on a timer: the agent sleeps on
// inotify and on its signal pipe, and the test on conditions with deadlines.
std::string MinimalManifest(const std::vector<std::string>& stacks, int port) {
  std::string out;
  for (const auto& name : stacks) {
    absl::StrAppend(&out, "---\napiVersion: upkeep/v1\nkind: Stack\nmetadata: {name: ", name,
                    "}\nspec:\n  hosts: [solo]\n  runtime: process\n  services:\n    - name: web\n",
                    "      process: {command: [", upkeep::testing::BinPath("upkeep-sample-service"),
                    ", --name, web, --port, \"", port, "\"]}\n      port: ", port,
                    "\n  policy: {mode: dry-run}\n");
  }
  return out;
}

TEST(StandaloneAgent, ReReadsAManifestSavedByAnEditorAndStopsOnSigterm) {
  upkeep::testing::TempDir dir;
  const std::string manifests = dir.Join("manifests");
  std::filesystem::create_directory(manifests);
  const int port = upkeep::testing::FreePort();
  { std::ofstream(manifests + "/stacks.yaml") << MinimalManifest({"one"}, port); }
  const std::string data = dir.Join("data");
  auto agent = upkeep::testing::Subprocess::Start(
      {upkeep::testing::BinPath("upkeep-agent"), "--standalone", "-f", manifests, "--data", data},
      dir.Join("agent.log"));
  ASSERT_TRUE(agent.ok()) << agent.status();
  const std::string sock = data + "/upkeep.sock";
  auto log = [&] {
    std::ifstream in(dir.Join("agent.log"));
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  auto stacks = [&] { return Upkeepctl({"--agent", sock, "get", "stacks"}); };
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(stacks(), "one"); }, absl::Seconds(30)))
      << stacks() << log();
  EXPECT_FALSE(absl::StrContains(stacks(), "two"));

  { std::ofstream(manifests + "/.stacks.yaml.swp") << MinimalManifest({"one", "two"}, port); }
  ASSERT_EQ(
      std::rename((manifests + "/.stacks.yaml.swp").c_str(), (manifests + "/stacks.yaml").c_str()),
      0);
  EXPECT_TRUE(WaitFor([&] { return absl::StrContains(stacks(), "two"); }, absl::Seconds(30)))
      << stacks() << log();

  (*agent)->Signal(SIGTERM);
  const std::optional<int> status = (*agent)->Wait(absl::Seconds(30));
  ASSERT_TRUE(status.has_value()) << "SIGTERM did not stop the agent\n" << log();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status << "\n" << log();
  EXPECT_FALSE(std::filesystem::exists(sock)) << "the socket is removed on the way out";
  EXPECT_TRUE(absl::StrContains(log(), "agent_stopping")) << log();
}

}  // namespace
}  // namespace upkeep::agent

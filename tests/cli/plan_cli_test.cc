// `upkeepctl plan` offline, on the documented snapshots (docs/examples) and on broken input.
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace upkeep {
namespace {

struct CliRun {
  int code;
  std::string out;
};

// The documented snapshots were taken at this time.
constexpr char kExamplesAt[] = "2026-11-24T21:00:00Z";

CliRun Plan(const std::string& snapshot, const std::string& manifest = "",
            std::vector<std::string> extra = {"--now", kExamplesAt}) {
  testing::TempDir dir;
  std::vector<std::string> argv = {
      testing::BinPath("upkeepctl"),
      "plan",
      "-f",
      manifest.empty() ? testing::SourcePath("manifests/demo.yaml") : manifest,
      "--observed",
      snapshot};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto p = testing::Subprocess::Start(argv, dir.Join("out"));
  EXPECT_TRUE(p.ok());
  auto st = (*p)->Wait(absl::Seconds(20));
  return {st.has_value() ? WEXITSTATUS(*st) : -1, testing::ReadFile(dir.Join("out"))};
}

struct Example {
  std::string file;
  std::string verdict;
  std::string must_contain;
};

class PlanExamples : public ::testing::TestWithParam<Example> {};

TEST_P(PlanExamples, GivesTheDocumentedDiagnosis) {
  const CliRun r = Plan(testing::SourcePath("docs/examples/" + GetParam().file));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, GetParam().verdict)) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, GetParam().must_contain)) << r.out;
}

INSTANTIATE_TEST_SUITE_P(
    Docs, PlanExamples,
    ::testing::Values(
        Example{"healthy.json", "HEALTHY", "route.ok [/api/]: yes"},
        Example{"backend-down.json", "REPAIRING", "1. start-service backend"},
        Example{"backend-hung.json", "REPAIRING", "2. restart-service backend"},
        Example{"nginx-502-upstreams-healthy.json", "REPAIRING", "1. reload-proxy nginx"},
        Example{"nginx-down.json", "REPAIRING", "2. start-proxy nginx"},
        Example{"still-502-after-restart.json", "DEGRADED", "PortMismatch"},
        Example{"backend-slow.json", "DEGRADED", "SlowUpstream"},
        Example{"upstream-keepalive-reset.json", "REPAIRING", "UpstreamConnectionClosed"}));

TEST(PlanCli, TakesNowFromTheClockNotFromTheSnapshot) {
  // Without --now the plan is made now: a snapshot from 2026-11-24 is stale.
  const CliRun r = Plan(testing::SourcePath("docs/examples/backend-down.json"), "", {});
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "UNKNOWN")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "observation.fresh: no")) << r.out;
}

TEST(PlanCli, PausedPlansButDoesNotAct) {
  const CliRun r = Plan(testing::SourcePath("docs/examples/backend-down.json"), "",
                        {"--now", kExamplesAt, "--paused"});
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "start-service backend  [paused]")) << r.out;
  EXPECT_FALSE(absl::StrContains(r.out, "REPAIRING")) << r.out;
}

TEST(PlanCli, RejectsGarbageSnapshotsWithAClearError) {
  testing::TempDir dir;
  std::ofstream(dir.Join("bad.json")) << "{\"services\": 12";
  const CliRun r = Plan(dir.Join("bad.json"));
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(absl::StrContains(r.out, "not a StackObservation")) << r.out;
}

TEST(PlanCli, RejectsABrokenManifest) {
  testing::TempDir dir;
  std::ofstream(dir.Join("m.yaml")) << "apiVersion: upkeep/v1\nkind: Stack\n";
  const CliRun r = Plan(testing::SourcePath("docs/examples/healthy.json"), dir.Join("m.yaml"));
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(absl::StrContains(r.out, "m.yaml:")) << r.out;
}

}  // namespace
}  // namespace upkeep

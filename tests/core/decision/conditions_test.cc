// Conditions from diagnoses: Ready says whether the stack serves now, Degraded whether an alert
// stands. Judged on scenario snapshots (tests/scenarios/) run through Diagnose, as the
// controller does.
#include "core/decision/conditions.h"

#include <cstdlib>
#include <filesystem>
#include <string>

#include "absl/strings/match.h"
#include "core/decision/diagnose.h"
#include "core/manifest/loader.h"
#include "core/proto_time.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"

namespace upkeep::decision {
namespace {

namespace v1 = upkeep::v1;
namespace fs = std::filesystem;

fs::path Scenario(const std::string& name) {
  const char* root = std::getenv("UPKEEP_SOURCE_DIR");
  return fs::path(root != nullptr ? root : ".") / "tests" / "scenarios" / name;
}

using ::upkeep::testing::ReadFile;

// The stack's status after the controller judged snapshot `file` of scenario `name`.
v1::StackStatus StatusAfter(const std::string& name, const std::string& file,
                            v1::Diagnosis* out = nullptr) {
  const manifest::LoadResult loaded = manifest::LoadPath((Scenario(name) / "stack.yaml").string());
  EXPECT_TRUE(loaded.ok() && loaded.stacks.size() == 1u) << name;
  if (!loaded.ok() || loaded.stacks.empty()) return {};
  const v1::Stack& stack = loaded.stacks[0];
  v1::StackObservation snapshot;
  EXPECT_TRUE(
      google::protobuf::util::JsonStringToMessage(ReadFile(Scenario(name) / file), &snapshot).ok());
  const std::vector<v1::ActionRecord> history(snapshot.history().begin(), snapshot.history().end());
  const absl::Time now = FromProto(snapshot.observed_at());
  const v1::Diagnosis d = Diagnose(stack, snapshot, history, now);
  if (out != nullptr) *out = d;
  v1::StackStatus status;
  UpdateConditions(stack, {{snapshot.host().host_id(), &d}}, now, &status);
  return status;
}

const v1::Condition& Get(const v1::StackStatus& s, const std::string& type) {
  for (const auto& c : s.conditions()) {
    if (c.type() == type) return c;
  }
  static const v1::Condition none;
  ADD_FAILURE() << "no condition " << type;
  return none;
}

// Everything serves, but the filesystem holding nginx's logs is 97% full: the alert stands
// (Degraded, with the finding), and the stack is Ready, because it serves.
TEST(Conditions, AFullDiskWhileEverythingServesIsDegradedButReady) {
  v1::Diagnosis d;
  const v1::StackStatus s = StatusAfter("disk-full-logs-while-healthy", "01-full.json", &d);
  EXPECT_EQ(d.verdict(), v1::VERDICT_HEALTHY);
  EXPECT_TRUE(absl::StrContains(d.summary(), "but /var is 97.0% full")) << d.summary();
  EXPECT_EQ(Get(s, "Ready").status(), "True");
  EXPECT_EQ(Get(s, "Ready").reason(), "AllHealthy");
  EXPECT_EQ(Get(s, "Degraded").status(), "True");
  EXPECT_EQ(Get(s, "Degraded").reason(), "Alert");
  EXPECT_TRUE(absl::StartsWith(Get(s, "Degraded").message(), "DiskFull [/var]: /var is 97.0%"))
      << Get(s, "Degraded").message();
  EXPECT_EQ(Get(s, "Progressing").status(), "False");
}

// What the full disk breaks is unreadiness: a backend down with its data on a full disk.
TEST(Conditions, AServiceDownForAFullDiskIsNotReady) {
  const v1::StackStatus s = StatusAfter("disk-full-backend-crashed", "01-crashed.json");
  EXPECT_EQ(Get(s, "Ready").status(), "False");
  EXPECT_EQ(Get(s, "Ready").reason(), "NeedsAttention");
  EXPECT_EQ(Get(s, "Degraded").status(), "True");
}

// Nothing to say: Ready, not Degraded.
TEST(Conditions, AHealthyStackIsReadyAndNotDegraded) {
  const v1::StackStatus s = StatusAfter("healthy", "01-healthy.json");
  EXPECT_EQ(Get(s, "Ready").status(), "True");
  EXPECT_EQ(Get(s, "Degraded").status(), "False");
  EXPECT_EQ(Get(s, "Degraded").reason(), "NoAlert");
}

}  // namespace
}  // namespace upkeep::decision

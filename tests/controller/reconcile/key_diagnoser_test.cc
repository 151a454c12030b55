// KeyDiagnoser: the reconciler's Diagnose on the fast path gives what Diagnose gives, and
// makes the full diagnosis only when the decision changes (or its explanation grows old).
#include "controller/reconcile/key_diagnoser.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/decision/diagnose.h"
#include "core/manifest/loader.h"
#include "core/proto_time.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"

namespace upkeep::controller {
namespace {

namespace v1 = upkeep::v1;
namespace fs = std::filesystem;
using google::protobuf::util::MessageDifferencer;

const absl::Time kT0 = absl::FromUnixSeconds(1800000000);
const WorkKey kKey{"demo", "h"};

v1::Stack DemoStack() {
  return manifest::LoadString(
             "apiVersion: upkeep/v1\nkind: Stack\nmetadata: {name: demo}\nspec:\n"
             "  hosts: [h]\n  runtime: process\n  services:\n"
             "    - {name: api, port: 9001, process: {command: [x]}, probe: {http: {path: /h}}}\n"
             "  proxy:\n    nginx: {config: /etc/nginx/nginx.conf}\n    routes:\n"
             "      - {path: /api/, upstream: api, probe: {url: \"http://127.0.0.1/api/\"}}\n",
             "demo.yaml")
      .stacks.at(0);
}

v1::StackObservation Healthy(absl::Time at, int latency_ms) {
  v1::StackObservation o;
  o.set_stack("demo");
  o.mutable_host()->set_host_id("h");
  o.mutable_host()->set_agent_connected(true);
  *o.mutable_observed_at() = ToProto(at);
  auto* s = o.add_services();
  s->set_name("api");
  s->set_exists(true);
  s->set_running(true);
  s->set_health(v1::HEALTH_STATE_HEALTHY);
  s->mutable_probe()->set_ok(true);
  *s->mutable_probe()->mutable_latency() = ToProto(absl::Milliseconds(latency_ms));
  o.mutable_proxy()->set_master_running(true);
  auto* r = o.mutable_proxy()->add_routes();
  r->set_path("/api/");
  r->mutable_probe()->set_ok(true);
  r->mutable_probe()->set_status_code(200);
  *r->mutable_probe()->mutable_latency() = ToProto(absl::Milliseconds(latency_ms));
  return o;
}

History NoHistory() { return std::make_shared<const std::vector<v1::ActionRecord>>(); }

// Everything but the time and the path's evidence.
v1::Diagnosis Decision(v1::Diagnosis d) {
  d.clear_at();
  for (auto& n : *d.mutable_path()) n.clear_evidence();
  return d;
}

TEST(KeyDiagnoser, KeepsTheFullDiagnosisWhileTheDecisionHolds) {
  KeyDiagnoser k;
  const v1::Stack stack = DemoStack();
  const History history = NoHistory();
  const auto first = k.Diagnose(kKey, stack, Healthy(kT0, 3), history, kT0, false);
  EXPECT_TRUE(first.remade);
  EXPECT_TRUE(MessageDifferencer::Equals(
      *first.diagnosis, decision::Diagnose(stack, Healthy(kT0, 3), *history, kT0)));
  // Another latency: the evidence differs, the decision does not.
  const absl::Time t1 = kT0 + absl::Seconds(1);
  const auto second = k.Diagnose(kKey, stack, Healthy(t1, 7), history, t1, false);
  EXPECT_FALSE(second.remade);
  EXPECT_EQ(second.diagnosis, first.diagnosis);
  EXPECT_TRUE(MessageDifferencer::Equals(
      Decision(*second.diagnosis),
      Decision(decision::Diagnose(stack, Healthy(t1, 7), *history, t1))));
  EXPECT_EQ(k.counts().full, 1);
  EXPECT_EQ(k.counts().calls, 2);
}

TEST(KeyDiagnoser, MakesItAgainWhenTheDecisionChanges) {
  KeyDiagnoser k;
  const v1::Stack stack = DemoStack();
  const History history = NoHistory();
  k.Diagnose(kKey, stack, Healthy(kT0, 3), history, kT0, false);
  const absl::Time t1 = kT0 + absl::Seconds(1);
  v1::StackObservation broken = Healthy(t1, 3);
  broken.mutable_services(0)->set_health(v1::HEALTH_STATE_UNHEALTHY);
  broken.mutable_services(0)->mutable_probe()->set_ok(false);
  const auto r = k.Diagnose(kKey, stack, broken, history, t1, false);
  EXPECT_TRUE(r.remade);
  EXPECT_EQ(r.diagnosis->verdict(), v1::VERDICT_REPAIRING);
  EXPECT_TRUE(
      MessageDifferencer::Equals(*r.diagnosis, decision::Diagnose(stack, broken, *history, t1)));
  // Paused: the same observation, another decision (every action paused).
  const auto paused = k.Diagnose(kKey, stack, broken, history, t1, true);
  EXPECT_TRUE(paused.remade);
  decision::DiagnoseOptions options;
  options.paused = true;
  EXPECT_TRUE(MessageDifferencer::Equals(*paused.diagnosis,
                                         decision::Diagnose(stack, broken, *history, t1, options)));
}

TEST(KeyDiagnoser, MakesTheExplanationAgainOnceItIsOld) {
  KeyDiagnoser k;
  const v1::Stack stack = DemoStack();
  const History history = NoHistory();
  k.Diagnose(kKey, stack, Healthy(kT0, 3), history, kT0, false);
  const absl::Time later = kT0 + KeyDiagnoser::kExplanationMaxAge;
  const auto r = k.Diagnose(kKey, stack, Healthy(later, 9), history, later, false);
  EXPECT_TRUE(r.remade);
  EXPECT_TRUE(MessageDifferencer::Equals(
      *r.diagnosis, decision::Diagnose(stack, Healthy(later, 9), *history, later)));
}

TEST(KeyDiagnoser, IndexesTheHistoryOncePerSnapshot) {
  KeyDiagnoser k;
  const v1::Stack stack = DemoStack();
  auto records = std::make_shared<std::vector<v1::ActionRecord>>();
  v1::ActionRecord r;
  r.mutable_action()->set_id("a1");
  r.mutable_action()->set_kind(v1::ACTION_KIND_RESTART_SERVICE);
  r.mutable_action()->set_target("api");
  *r.mutable_requested_at() = ToProto(kT0 - absl::Minutes(5));
  r.mutable_result()->set_id("a1");
  r.mutable_result()->set_outcome(v1::ACTION_OUTCOME_SUCCEEDED);
  records->push_back(r);
  const History one = records;
  for (int i = 0; i < 3; ++i) {
    const absl::Time t = kT0 + absl::Milliseconds(100 * i);
    k.Diagnose(kKey, stack, Healthy(t, 3 + i), one, t, false);
  }
  EXPECT_EQ(k.counts().indexed, 1);
  // A new snapshot (the dispatcher copies on write): indexed again, and judged on it.
  auto more = std::make_shared<std::vector<v1::ActionRecord>>(*one);
  r.mutable_action()->set_id("a2");
  r.mutable_result()->set_id("");  // in flight
  *r.mutable_requested_at() = ToProto(kT0);
  more->push_back(r);
  const History two = more;
  const absl::Time t = kT0 + absl::Seconds(1);
  const auto d = k.Diagnose(kKey, stack, Healthy(t, 3), two, t, false);
  EXPECT_EQ(k.counts().indexed, 2);
  EXPECT_TRUE(d.remade);
  EXPECT_EQ(d.diagnosis->verdict(), v1::VERDICT_WAITING);
  EXPECT_TRUE(
      MessageDifferencer::Equals(*d.diagnosis, decision::Diagnose(stack, Healthy(t, 3), *two, t)));
}

TEST(KeyDiagnoser, ForgetsKeysAndStacks) {
  KeyDiagnoser k;
  const v1::Stack stack = DemoStack();
  k.Diagnose(kKey, stack, Healthy(kT0, 3), NoHistory(), kT0, false);
  k.Diagnose(WorkKey{"demo", "h2"}, stack, Healthy(kT0, 3), NoHistory(), kT0, false);
  k.Diagnose(WorkKey{"other", "h"}, stack, Healthy(kT0, 3), NoHistory(), kT0, false);
  EXPECT_EQ(k.size(), 3u);
  k.Forget(WorkKey{"other", "h"});
  EXPECT_EQ(k.size(), 2u);
  k.ForgetStack("demo");
  EXPECT_EQ(k.size(), 0u);
}

using ::upkeep::testing::ReadFile;

// Every snapshot of the scenario corpus in turn, each at its own time and again a moment
// later, through one KeyDiagnoser per scenario: the decision is always Diagnose's, and a
// diagnosis made again is Diagnose's exactly.
TEST(KeyDiagnoser, DecidesAsDiagnoseOnTheScenarioCorpus) {
  const char* root = std::getenv("UPKEEP_SOURCE_DIR");
  const fs::path corpus = fs::path(root != nullptr ? root : ".") / "tests" / "scenarios";
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(corpus)) {
    if (e.is_directory()) dirs.push_back(e.path());
  }
  std::sort(dirs.begin(), dirs.end());
  ASSERT_GT(dirs.size(), 40u);
  int64_t calls = 0, kept = 0;
  for (const fs::path& dir : dirs) {
    const manifest::LoadResult loaded = manifest::LoadPath((dir / "stack.yaml").string());
    ASSERT_TRUE(loaded.ok() && loaded.stacks.size() == 1u) << dir;
    const v1::Stack& stack = loaded.stacks[0];
    std::vector<fs::path> snapshots;
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().extension() == ".json") snapshots.push_back(e.path());
    }
    std::sort(snapshots.begin(), snapshots.end());
    KeyDiagnoser k;
    for (const fs::path& p : snapshots) {
      v1::StackObservation snapshot;
      ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(ReadFile(p), &snapshot).ok()) << p;
      const History history = std::make_shared<const std::vector<v1::ActionRecord>>(
          snapshot.history().begin(), snapshot.history().end());
      for (const absl::Duration later :
           {absl::ZeroDuration(), absl::Milliseconds(200), absl::Seconds(1), absl::Seconds(3)}) {
        for (const bool paused : {false, true}) {
          SCOPED_TRACE(absl::StrCat(p.string(), " later ", absl::FormatDuration(later),
                                    paused ? " paused" : ""));
          const absl::Time now = FromProto(snapshot.observed_at()) + later;
          decision::DiagnoseOptions options;
          options.paused = paused;
          const v1::Diagnosis want = decision::Diagnose(stack, snapshot, *history, now, options);
          const auto got = k.Diagnose(WorkKey{stack.metadata().name(), "h"}, stack, snapshot,
                                      history, now, paused);
          ++calls;
          kept += !got.remade;
          if (got.remade) {
            EXPECT_TRUE(MessageDifferencer::Equals(*got.diagnosis, want));
          } else {
            EXPECT_TRUE(MessageDifferencer::Equals(Decision(*got.diagnosis), Decision(want)));
          }
        }
      }
    }
  }
  EXPECT_GT(kept, calls / 4);  // the fast path did serve (and so was checked)
}

}  // namespace
}  // namespace upkeep::controller

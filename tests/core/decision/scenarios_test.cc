// The scenario corpus (tests/scenarios/NAME/): every runbook branch, every fault of issue 11
// and combinations, each a stack.yaml, one or more observation snapshots (the JSON that
// `upkeepctl plan --observed` reads) and expect.yaml. Each snapshot goes through Diagnose and the
// policy at its own observedAt (or `now`), and must give what expect.yaml says:
//   verdict         HEALTHY | REPAIRING | WAITING | DEGRADED | UNKNOWN
//   first_action    "kind target" of the first action policy allows, or "none"
//   actions         every allowed action, in order
//   planned         actions that must be planned, whatever policy says
//   policies        {"kind target": policy verdict}, e.g. paused, backoff, dry_run
//   forbidden       "kind" or "kind target" that must not be allowed
//   findings        "Code" or "Code/target" that must appear; no_findings: must not
//   max_actions     at most this many allowed actions
//   params          parameters of the first allowed action
//   message_contains  text one finding's message must hold
//   now             RFC3339 time to judge at (default: the snapshot's observedAt)
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/decision/diagnose.h"
#include "core/decision/render.h"
#include "core/manifest/loader.h"
#include "core/manifest/yaml_tree.h"
#include "core/proto_time.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"

namespace upkeep::decision {
namespace {

namespace v1 = upkeep::v1;
namespace fs = std::filesystem;

using manifest::YamlNode;

fs::path CorpusDir() {
  const char* root = std::getenv("UPKEEP_SOURCE_DIR");
  return fs::path(root != nullptr ? root : ".") / "tests" / "scenarios";
}

std::vector<std::string> ScenarioNames() {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(CorpusDir())) {
    if (e.is_directory()) names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

using ::upkeep::testing::ReadFile;

std::string Lower(const std::string& s, const std::string& prefix) {
  std::string out = s.rfind(prefix, 0) == 0 ? s.substr(prefix.size()) : s;
  out = absl::AsciiStrToLower(out);
  std::replace(out.begin(), out.end(), '_', '-');
  return out;
}

std::string Name(const v1::Action& a) {
  return absl::StrCat(Lower(v1::ActionKind_Name(a.kind()), "ACTION_KIND_"), " ", a.target());
}

// "kind" matches any target; "kind target" one.
bool Matches(const v1::Action& a, const std::string& pattern) {
  const std::string name = Name(a);
  return name == pattern || name.rfind(pattern + " ", 0) == 0;
}

std::vector<std::string> List(const YamlNode* n) {
  std::vector<std::string> out;
  if (n != nullptr) {
    for (const YamlNode* x : n->items()) out.push_back(x->scalar());
  }
  return out;
}

class Scenario : public ::testing::TestWithParam<std::string> {};

TEST_P(Scenario, DiagnosesAsTheRunbookSays) {
  const fs::path dir = CorpusDir() / GetParam();
  const manifest::LoadResult loaded = manifest::LoadPath((dir / "stack.yaml").string());
  ASSERT_TRUE(loaded.ok()) << (loaded.errors.empty() ? "" : loaded.errors[0].ToString());
  ASSERT_EQ(loaded.stacks.size(), 1u);
  const v1::Stack& stack = loaded.stacks[0];
  const manifest::YamlStream yaml = manifest::YamlStream::Parse(ReadFile(dir / "expect.yaml"));
  ASSERT_TRUE(yaml.ok()) << dir << "/expect.yaml:" << yaml.error().line << ": "
                         << yaml.error().message;
  ASSERT_EQ(yaml.documents().size(), 1u);
  const YamlNode* steps_node = yaml.documents()[0].root->Get("steps");
  ASSERT_TRUE(steps_node != nullptr && steps_node->IsMap()) << dir << "/expect.yaml: no steps";
  int steps = 0;
  for (const auto& [key, e] : steps_node->entries()) {
    ++steps;
    const std::string file = key->scalar();
    auto str = [&](const char* k) { return e->Get(k)->scalar(); };
    SCOPED_TRACE(absl::StrCat(GetParam(), "/", file));
    ASSERT_TRUE(fs::exists(dir / file)) << "expect.yaml names a missing snapshot";
    v1::StackObservation snapshot;
    const auto st = google::protobuf::util::JsonStringToMessage(ReadFile(dir / file), &snapshot);
    ASSERT_TRUE(st.ok()) << st.ToString();
    absl::Time now = FromProto(snapshot.observed_at());
    if (e->Get("now")) {
      std::string err;
      ASSERT_TRUE(absl::ParseTime(absl::RFC3339_full, str("now"), &now, &err)) << err;
    }
    const std::vector<v1::ActionRecord> history(snapshot.history().begin(),
                                                snapshot.history().end());
    DiagnoseOptions options;
    options.paused = snapshot.paused();
    const v1::Diagnosis d = Diagnose(stack, snapshot, history, now, options);
    const std::string text = RenderDiagnosisText(d);
    SCOPED_TRACE(text);

    std::vector<const v1::Action*> allowed;
    for (const auto& a : d.actions()) {
      if (a.policy() == v1::POLICY_VERDICT_ALLOWED) allowed.push_back(&a.action());
    }
    if (e->Get("verdict")) {
      EXPECT_EQ(Lower(v1::Verdict_Name(d.verdict()), "VERDICT_"),
                absl::AsciiStrToLower(str("verdict")));
    }
    if (e->Get("first_action")) {
      const std::string want = str("first_action");
      EXPECT_EQ(allowed.empty() ? "none" : Name(*allowed[0]), want);
    }
    if (e->Get("actions")) {
      std::vector<std::string> got;
      for (const auto* a : allowed) got.push_back(Name(*a));
      EXPECT_EQ(absl::StrJoin(got, "; "), absl::StrJoin(List(e->Get("actions")), "; "));
    }
    for (const auto& want : List(e->Get("planned"))) {
      EXPECT_TRUE(std::any_of(d.actions().begin(), d.actions().end(),
                              [&](const auto& a) { return Matches(a.action(), want); }))
          << "not planned: " << want;
    }
    if (const YamlNode* policies = e->Get("policies")) {
      for (const auto& [k, v] : policies->entries()) {
        const std::string action = k->scalar();
        const std::string want = v->scalar();
        std::string got = "not judged";
        for (const auto& a : d.actions()) {
          if (Matches(a.action(), action)) {
            got = Lower(v1::PolicyVerdict_Name(a.policy()), "POLICY_VERDICT_");
          }
        }
        // Actions held back (backoff, budget) are not listed; their policy node is.
        const std::string target = action.substr(action.find(' ') + 1);
        for (const auto& n : d.path()) {
          if (got == "not judged" && n.step() == "policy" && n.target() == target) {
            got = Lower(n.decision(), "POLICY_VERDICT_");
          }
        }
        std::replace(got.begin(), got.end(), '-', '_');
        EXPECT_EQ(got, want) << "policy of " << action;
      }
    }
    for (const auto& bad : List(e->Get("forbidden"))) {
      for (const auto* a : allowed) EXPECT_FALSE(Matches(*a, bad)) << "forbidden: " << Name(*a);
    }
    auto has_finding = [&](const std::string& want) {
      const auto slash = want.find('/');
      const std::string code = want.substr(0, slash);
      for (const auto& f : d.findings()) {
        if (f.code() == code &&
            (slash == std::string::npos || f.target() == want.substr(slash + 1)))
          return true;
      }
      return false;
    };
    for (const auto& want : List(e->Get("findings"))) {
      EXPECT_TRUE(has_finding(want)) << "missing finding " << want;
    }
    for (const auto& bad : List(e->Get("no_findings"))) {
      EXPECT_FALSE(has_finding(bad)) << "unexpected finding " << bad;
    }
    if (e->Get("max_actions")) {
      EXPECT_LE(static_cast<int>(allowed.size()), std::stoi(str("max_actions")));
    }
    if (const YamlNode* params_node = e->Get("params")) {
      ASSERT_FALSE(allowed.empty());
      for (const auto& [k, v] : params_node->entries()) {
        const auto& params = allowed[0]->params();
        auto it = params.find(k->scalar());
        EXPECT_TRUE(it != params.end() && it->second == v->scalar()) << "param " << k->scalar();
      }
    }
    if (e->Get("message_contains")) {
      const std::string want = str("message_contains");
      EXPECT_TRUE(std::any_of(d.findings().begin(), d.findings().end(),
                              [&](const auto& f) { return absl::StrContains(f.message(), want); }))
          << "no finding says " << want;
    }
  }
  EXPECT_GT(steps, 0);
}

INSTANTIATE_TEST_SUITE_P(Corpus, Scenario, ::testing::ValuesIn(ScenarioNames()),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

TEST(ScenarioCorpus, CoversTheRunbookAndIssue11) {
  // Thirty at least, and the branches issue 11 names are all there.
  const auto names = ScenarioNames();
  EXPECT_GE(names.size(), 30u);
  for (const char* must :
       {"evidence-wrong-port", "evidence-localhost-family",
        "evidence-config-test-fails-while-running", "evidence-stale-container-address",
        "flapping-backend", "manually-stopped-upkeepctl", "manually-stopped-docker-stop",
        "backend-container-missing-compose", "certificate-expiring", "disk-full-backend-crashed",
        "disk-full-nginx-t-no-space", "db-down-while-nginx-down", "two-services-crashed",
        "fault-while-paused"}) {
    EXPECT_TRUE(std::count(names.begin(), names.end(), must)) << must;
  }
}

// Every cheaper way to call Diagnose gives the full diagnosis: on an arena, with the history
// indexed by the caller, and without the path's evidence (DiagnoseOptions::explain = false),
// which must differ from the full one in nothing but that evidence. Over every snapshot of the
// corpus, judged at its own time and later (with the observation kept fresh, and left stale),
// paused or not, with its whole history, half of it, and none.
TEST(ScenarioCorpus, EveryFastPathGivesTheFullDiagnosis) {
  using google::protobuf::util::MessageDifferencer;
  google::protobuf::Arena arena;
  // Reused across the corpus, as a controller's worker reuses its own.
  Trace trace;
  v1::Diagnosis reused;
  int diagnoses = 0, nodes_with_evidence = 0;
  for (const std::string& name : ScenarioNames()) {
    const fs::path dir = CorpusDir() / name;
    const manifest::LoadResult loaded = manifest::LoadPath((dir / "stack.yaml").string());
    ASSERT_TRUE(loaded.ok() && loaded.stacks.size() == 1u) << dir;
    const v1::Stack& stack = loaded.stacks[0];
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().extension() != ".json") continue;
      v1::StackObservation snapshot;
      ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(ReadFile(e.path()), &snapshot).ok())
          << e.path();
      const std::vector<v1::ActionRecord> all(snapshot.history().begin(), snapshot.history().end());
      for (size_t kept : {all.size(), all.size() / 2, size_t{0}}) {
        const std::vector<v1::ActionRecord> history(all.begin(), all.begin() + kept);
        const policy::History indexed(history);
        for (const absl::Duration later :
             {absl::ZeroDuration(), absl::Seconds(1), absl::Seconds(30), absl::Minutes(10)}) {
          for (const bool fresh : {false, true}) {
            v1::StackObservation observed = snapshot;
            const absl::Time now = FromProto(snapshot.observed_at()) + later;
            if (fresh) *observed.mutable_observed_at() = ToProto(now - absl::Milliseconds(5));
            for (const bool paused : {false, true}) {
              SCOPED_TRACE(absl::StrCat(e.path().string(), " history ", kept, "/", all.size(),
                                        " later ", absl::FormatDuration(later),
                                        fresh ? " fresh" : "", paused ? " paused" : ""));
              DiagnoseOptions options;
              options.paused = paused;
              const v1::Diagnosis full = Diagnose(stack, observed, history, now, options);
              v1::Diagnosis lean_expected = full;
              for (auto& node : *lean_expected.mutable_path()) {
                nodes_with_evidence += node.evidence_size() > 0;
                node.clear_evidence();
              }
              EXPECT_TRUE(MessageDifferencer::Equals(
                  *Diagnose(stack, observed, history, now, &arena, options), full));
              EXPECT_TRUE(MessageDifferencer::Equals(
                  Diagnose(stack, observed, indexed, now, options), full));
              // The path left in a Trace, built into the message afterwards.
              v1::Diagnosis* traced =
                  Diagnose(stack, observed, indexed, now, &arena, options, &trace);
              EXPECT_EQ(traced->path_size(), 0);
              EXPECT_EQ(Judged(*traced, trace), Judged(full));
              EXPECT_TRUE(trace.SamePath(full));
              if (full.path_size() > 0) {
                v1::Diagnosis other = full;
                other.mutable_path(full.path_size() - 1)->set_decision("something else");
                EXPECT_FALSE(trace.SamePath(other));
              }
              trace.AppendTo(traced);
              EXPECT_TRUE(MessageDifferencer::Equals(*traced, full));
              DiagnoseInto(stack, observed, indexed, now, options, &trace, &reused);
              EXPECT_EQ(reused.path_size(), 0);
              trace.AppendTo(&reused);
              EXPECT_TRUE(MessageDifferencer::Equals(reused, full));
              options.explain = false;
              EXPECT_TRUE(MessageDifferencer::Equals(
                  Diagnose(stack, observed, history, now, options), lean_expected));
              EXPECT_TRUE(MessageDifferencer::Equals(
                  *Diagnose(stack, observed, indexed, now, &arena, options), lean_expected));
              traced = Diagnose(stack, observed, indexed, now, &arena, options, &trace);
              EXPECT_TRUE(trace.SamePath(full));
              trace.AppendTo(traced);
              EXPECT_TRUE(MessageDifferencer::Equals(*traced, lean_expected));
              DiagnoseInto(stack, observed, indexed, now, options, &trace, &reused);
              trace.AppendTo(&reused);
              EXPECT_TRUE(MessageDifferencer::Equals(reused, lean_expected));
              arena.Reset();
              ++diagnoses;
            }
          }
        }
      }
    }
  }
  EXPECT_GT(diagnoses, 1000);
  EXPECT_GT(nodes_with_evidence, 1000);  // the lean diagnosis did leave something out
}

}  // namespace
}  // namespace upkeep::decision

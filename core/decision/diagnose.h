// The decision engine: the runbook as a pure, deterministic function.
//   Diagnose(desired stack, observation of it on one host, action history, now) -> Diagnosis
// The Diagnosis holds the verdict, the path (every node visited with its evidence), findings
// (alerts), and the planned actions each already judged by policy (core/policy).
// Thread-safe (no state).
#ifndef UPKEEP_CORE_DECISION_DIAGNOSE_H_
#define UPKEEP_CORE_DECISION_DIAGNOSE_H_

#include "absl/time/time.h"
#include "absl/types/span.h"
#include "core/policy/policy.h"
#include "google/protobuf/arena.h"
#include "upkeep/v1/action.pb.h"
#include "upkeep/v1/diagnosis.pb.h"
#include "upkeep/v1/observation.pb.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::decision {

struct DiagnoseOptions {
  bool paused = false;  // stack or host paused: plan, but every action is POLICY_VERDICT_PAUSED
  // The evidence under each path node (what `upkeepctl explain` prints beneath each step).
  // Most of a diagnosis's cost is building it. With false, the diagnosis is the same in every
  // other field (verdict, summary, every path node's step/target/decision/depth, findings with
  // their evidence, actions), and every path node's evidence is empty; a caller that reads only
  // those (a reconcile whose explanation nobody asked for) runs Diagnose again with true, on
  // the same inputs, when someone does. scenarios_test holds the two equal on the corpus.
  bool explain = true;
};

upkeep::v1::Diagnosis Diagnose(const upkeep::v1::Stack& desired,
                               const upkeep::v1::StackObservation& observed,
                               absl::Span<const upkeep::v1::ActionRecord> history, absl::Time now,
                               const DiagnoseOptions& options = {});

// The same, built on `arena`: the diagnosis and everything in it live there until the arena is
// reset or destroyed. Most of what a diagnosis costs is allocating and freeing its strings and
// maps one at a time; a caller that diagnoses often can reuse one arena (with an initial block
// of its own, Reset() between diagnoses) and pay for neither. With a null arena the message is
// on the heap and the caller owns it.
upkeep::v1::Diagnosis* Diagnose(const upkeep::v1::Stack& desired,
                                const upkeep::v1::StackObservation& observed,
                                absl::Span<const upkeep::v1::ActionRecord> history, absl::Time now,
                                google::protobuf::Arena* arena,
                                const DiagnoseOptions& options = {});

// The same two, with the history already indexed (policy::History). Indexing is a hash per
// record: with 200 records it is a third of a 20-service diagnosis. A caller that diagnoses a
// stack on every observation while its history changes only with actions can index it once
// per change and pass it here.
upkeep::v1::Diagnosis Diagnose(const upkeep::v1::Stack& desired,
                               const upkeep::v1::StackObservation& observed,
                               const policy::History& history, absl::Time now,
                               const DiagnoseOptions& options = {});
upkeep::v1::Diagnosis* Diagnose(const upkeep::v1::Stack& desired,
                                const upkeep::v1::StackObservation& observed,
                                const policy::History& history, absl::Time now,
                                google::protobuf::Arena* arena,
                                const DiagnoseOptions& options = {});

// Whether `d` looked at the stack at all: false when it stopped before the checks (agent not
// connected, observation stale, a repair's result not back yet). Such a diagnosis says nothing
// about alerts, so none of them clears on it.
bool Judged(const upkeep::v1::Diagnosis& d);

}  // namespace upkeep::decision

#endif  // UPKEEP_CORE_DECISION_DIAGNOSE_H_

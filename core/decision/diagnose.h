// The decision engine: the runbook as a pure, deterministic function.
//   Diagnose(desired stack, observation of it on one host, action history, now) -> Diagnosis
// The Diagnosis holds the verdict, the path (every node visited with its evidence), findings
// (alerts), and the planned actions each already judged by policy (core/policy).
// Thread-safe (no state).
#ifndef UPKEEP_CORE_DECISION_DIAGNOSE_H_
#define UPKEEP_CORE_DECISION_DIAGNOSE_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
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

namespace internal {
class TraceWriter;
}  // namespace internal

// The path of one diagnosis as the engine walked it, kept flat: per node its step, target,
// decision and depth as views (into the inputs, string literals, or strings the trace keeps),
// and, with DiagnoseOptions::explain, the evidence. No message and no string is built for a
// node: that is most of what a diagnosis cost (a PathNode is a message and three strings).
// A caller that passes a Trace to Diagnose gets a diagnosis without `path` and the path here;
// AppendTo turns it into the path Diagnose would have built, byte for byte, if and when
// somebody needs it. Views point into the diagnosed stack, observation and history: use the
// trace while they live, before the next Diagnose into it. Reused, it allocates nothing once
// it has grown to the stack's size. Not thread-safe (one per worker).
class Trace {
 public:
  Trace() = default;
  Trace(const Trace&) = delete;
  Trace& operator=(const Trace&) = delete;

  // Forgets the path, keeping the memory (Diagnose clears the trace it is given).
  void Clear();
  int size() const { return static_cast<int>(nodes_.size()); }
  absl::string_view step(int i) const { return nodes_[i].step; }
  absl::string_view target(int i) const { return Text(nodes_[i].target); }
  absl::string_view decision(int i) const { return Text(nodes_[i].decision); }
  int depth(int i) const { return nodes_[i].depth; }
  // Appends the path to `d` as Diagnose builds it (with evidence when it was recorded).
  void AppendTo(upkeep::v1::Diagnosis* d) const;
  // Whether `d`'s path has these nodes (step, target, decision, depth), evidence aside.
  bool SamePath(const upkeep::v1::Diagnosis& d) const;

 private:
  friend class internal::TraceWriter;
  // A view, or (owned >= 0) one of strings_.
  struct Ref {
    absl::string_view view;
    int owned = -1;
  };
  struct Node {
    absl::string_view step;
    Ref target, decision;
    int depth = 0;
  };
  struct Evidence {
    int node = 0;
    absl::string_view key;
    int value = 0;  // into strings_
  };
  absl::string_view Text(const Ref& r) const {
    return r.owned < 0 ? r.view : absl::string_view(strings_[r.owned]);
  }

  std::vector<Node> nodes_;  // (clear() keeps a vector's memory, an InlinedVector's not)
  std::vector<Evidence> evidence_;
  // Strings built during the walk; slots are reused (their capacity kept) across Clear().
  std::vector<std::string> strings_;
  size_t strings_used_ = 0;
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

// The same with the path recorded in `trace` (cleared first) instead of `d`'s path: the
// diagnosis is Diagnose's but for an empty path; trace->AppendTo(d) completes it.
upkeep::v1::Diagnosis* Diagnose(const upkeep::v1::Stack& desired,
                                const upkeep::v1::StackObservation& observed,
                                const policy::History& history, absl::Time now,
                                google::protobuf::Arena* arena, const DiagnoseOptions& options,
                                Trace* trace);

// The same into `out` (cleared first), with the path in `trace`. A caller that keeps one message
// and one trace per thread and diagnoses into them again and again reuses their strings and
// nodes: once they have grown to the stack, a diagnosis allocates nothing, and there is no arena
// to reset. The fastest call; what the controller's reconciler makes per observation.
void DiagnoseInto(const upkeep::v1::Stack& desired, const upkeep::v1::StackObservation& observed,
                  const policy::History& history, absl::Time now, const DiagnoseOptions& options,
                  Trace* trace, upkeep::v1::Diagnosis* out);

// Whether `d` looked at the stack at all: false when it stopped before the checks (agent not
// connected, observation stale, a repair's result not back yet). Such a diagnosis says nothing
// about alerts, so none of them clears on it.
bool Judged(const upkeep::v1::Diagnosis& d);
// The same for a diagnosis whose path is in `trace`.
bool Judged(const upkeep::v1::Diagnosis& d, const Trace& trace);

}  // namespace upkeep::decision

#endif  // UPKEEP_CORE_DECISION_DIAGNOSE_H_

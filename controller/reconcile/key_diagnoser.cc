#include "controller/reconcile/key_diagnoser.h"

#include <vector>

#include "core/decision/diagnose.h"
#include "core/proto_time.h"
#include "google/protobuf/arena.h"
#include "google/protobuf/util/message_differencer.h"

namespace upkeep::controller {
namespace {

namespace v1 = upkeep::v1;

// A worker's scratch: the arena its fast diagnoses live on (an initial block of its own, reset
// after each) and the trace their paths go to. One per reconciler worker thread.
struct Scratch {
  Scratch() : block(64 << 10), arena(Options(&block)) {}
  static google::protobuf::ArenaOptions Options(std::vector<char>* block) {
    google::protobuf::ArenaOptions options;
    options.initial_block = block->data();
    options.initial_block_size = block->size();
    return options;
  }
  std::vector<char> block;
  google::protobuf::Arena arena;
  decision::Trace trace;
};

Scratch& WorkerScratch() {
  thread_local Scratch scratch;
  return scratch;
}

template <typename T>
bool SameMessages(const google::protobuf::RepeatedPtrField<T>& a,
                  const google::protobuf::RepeatedPtrField<T>& b) {
  if (a.size() != b.size()) return false;
  for (int i = 0; i < a.size(); ++i) {
    if (!google::protobuf::util::MessageDifferencer::Equals(a.Get(i), b.Get(i))) return false;
  }
  return true;
}

// Whether the fast diagnosis (its path in `trace`) decides what `full` decided: everything but
// the time and the path's evidence.
bool SameDecision(const v1::Diagnosis& fast, const decision::Trace& trace,
                  const v1::Diagnosis& full) {
  return fast.verdict() == full.verdict() && fast.summary() == full.summary() &&
         fast.stack() == full.stack() && fast.host() == full.host() && trace.SamePath(full) &&
         SameMessages(fast.findings(), full.findings()) &&
         SameMessages(fast.actions(), full.actions());
}

}  // namespace

std::shared_ptr<KeyDiagnoser::Entry> KeyDiagnoser::EntryOf(const WorkKey& key) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<Entry>& e = entries_[key];
  if (e == nullptr) e = std::make_shared<Entry>();
  return e;
}

KeyDiagnoser::Result KeyDiagnoser::Diagnose(const WorkKey& key, const v1::Stack& stack,
                                            const v1::StackObservation& observed,
                                            const History& history, absl::Time now, bool paused) {
  const std::shared_ptr<Entry> e = EntryOf(key);
  calls_.fetch_add(1, std::memory_order_relaxed);
  if (e->snapshot != history || !e->indexed.has_value()) {
    // Points into *history, which the entry keeps alive (and so never sees its address reused).
    e->indexed.emplace(*history);
    e->snapshot = history;
    indexed_.fetch_add(1, std::memory_order_relaxed);
  }
  decision::DiagnoseOptions options;
  options.paused = paused;
  if (e->last != nullptr && now - FromProto(e->last->at()) < kExplanationMaxAge) {
    Scratch& s = WorkerScratch();
    options.explain = false;
    const v1::Diagnosis* fast =
        decision::Diagnose(stack, observed, *e->indexed, now, &s.arena, options, &s.trace);
    const bool same = SameDecision(*fast, s.trace, *e->last);
    s.arena.Reset();
    if (same) return Result{e->last, false};
    options.explain = true;
  }
  full_.fetch_add(1, std::memory_order_relaxed);
  e->last = std::make_shared<const v1::Diagnosis>(
      decision::Diagnose(stack, observed, *e->indexed, now, options));
  return Result{e->last, true};
}

void KeyDiagnoser::Forget(const WorkKey& key) {
  absl::MutexLock lock(&mu_);
  entries_.erase(key);
}

void KeyDiagnoser::ForgetStack(const std::string& stack) {
  absl::MutexLock lock(&mu_);
  for (auto it = entries_.lower_bound(WorkKey{stack, ""});
       it != entries_.end() && it->first.stack == stack;) {
    it = entries_.erase(it);
  }
}

size_t KeyDiagnoser::size() const {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}

KeyDiagnoser::Counts KeyDiagnoser::counts() const {
  return Counts{full_.load(), calls_.load(), indexed_.load()};
}

}  // namespace upkeep::controller

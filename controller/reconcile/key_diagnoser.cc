#include "controller/reconcile/key_diagnoser.h"

#include <string>
#include <utility>
#include <vector>

#include "core/decision/diagnose.h"
#include "core/proto_time.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace upkeep::controller {
namespace {

namespace v1 = upkeep::v1;

// A worker's scratch: the message its fast diagnoses are made into and the trace their paths
// go to, both reused (nothing is allocated once they have grown to the stack). One per
// reconciler worker thread.
struct Scratch {
  v1::Diagnosis fast;
  decision::Trace trace;
  std::string decided;  // the fast diagnosis's findings and actions, serialized
};

Scratch& WorkerScratch() {
  thread_local Scratch scratch;
  return scratch;
}

// The findings and actions of `d`, serialized deterministically (maps in key order) into `out`:
// two diagnoses decide alike only if these bytes are equal (compared so, not by reflection,
// which costs more than the fast diagnosis itself).
void Decided(const v1::Diagnosis& d, std::string* out) {
  out->clear();
  google::protobuf::io::StringOutputStream stream(out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  for (const auto& f : d.findings()) {
    coded.WriteVarint32(static_cast<uint32_t>(f.ByteSizeLong()));
    f.SerializeWithCachedSizes(&coded);
  }
  for (const auto& a : d.actions()) {
    coded.WriteVarint32(static_cast<uint32_t>(a.ByteSizeLong()));
    a.SerializeWithCachedSizes(&coded);
  }
}

// Whether the fast diagnosis (its path in `trace`) decides what the full one did (`full`, its
// findings and actions as `full_decided`): everything but the time and the path's evidence.
bool SameDecision(const v1::Diagnosis& fast, const decision::Trace& trace,
                  const v1::Diagnosis& full, const std::string& full_decided,
                  std::string* scratch) {
  if (fast.verdict() != full.verdict() || fast.summary() != full.summary() ||
      fast.stack() != full.stack() || fast.host() != full.host() ||
      fast.findings_size() != full.findings_size() || fast.actions_size() != full.actions_size() ||
      !trace.SamePath(full)) {
    return false;
  }
  Decided(fast, scratch);
  return *scratch == full_decided;
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
    decision::DiagnoseInto(stack, observed, *e->indexed, now, options, &s.trace, &s.fast);
    if (SameDecision(s.fast, s.trace, *e->last, e->decided, &s.decided)) {
      return Result{e->last, false};
    }
    options.explain = true;
  }
  full_.fetch_add(1, std::memory_order_relaxed);
  auto full = std::make_shared<const v1::Diagnosis>(
      decision::Diagnose(stack, observed, *e->indexed, now, options));
  Decided(*full, &e->decided);
  e->last = std::move(full);
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

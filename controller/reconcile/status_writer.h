// StatusWriter: saves stacks' status to the store in batches, off the reconciler's workers.
// A worker only marks a stack dirty (MarkDirty: a set insert); the writer's thread then saves
// every stack marked since its last write in one Store::SaveStatuses call (one SQLite
// transaction, at most kMaxBatch stacks). A fleet reconnecting after a controller restart changes
// 10,000 statuses within a second: saved one transaction each, that kept both workers busy for ~1.4
// s while fresh observations waited (bench/results/load.md, "Cold start").
//
// What is written is read when it is written: `snapshot` is called (on the writing thread,
// holding only write_mu_, never the lock MarkDirty takes) with the dirty names and returns their
// status as it is then, so a write never puts back an older status than one already written (writes
// are one at a time, each snapshot taken inside its write). A failed write keeps its names dirty
// and is retried after `retry`. Stop() writes what is still dirty before it returns.
//
// Tests and callers that must know the outcome use SaveNow (one stack, synchronously) or Flush
// (everything dirty, on the calling thread; the writer's thread need not run).
// Thread-safe.
#ifndef UPKEEP_CONTROLLER_RECONCILE_STATUS_WRITER_H_
#define UPKEEP_CONTROLLER_RECONCILE_STATUS_WRITER_H_

#include <functional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/metrics/metrics.h"
#include "controller/store/store.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::controller {

class StatusWriter {
 public:
  // The current status of each named stack that still exists (a deleted one is left out).
  using Snapshot = std::function<std::vector<std::pair<std::string, upkeep::v1::StackStatus>>(
      const std::vector<std::string>& names)>;

  // `store` and `metrics` (may be null) must outlive the writer.
  StatusWriter(Store* store, Snapshot snapshot, Metrics* metrics,
               absl::Duration retry = absl::Seconds(1));
  ~StatusWriter();

  void Start();
  // Writes what is dirty, then joins the thread.
  void Stop();

  // Never blocks on the store: the name waits for the writer's next batch.
  void MarkDirty(const std::string& name);
  // Writes `name`'s status now, on the calling thread, and returns the store's answer.
  absl::Status SaveNow(const std::string& name);
  // Writes everything dirty now, on the calling thread.
  absl::Status Flush();
  size_t Dirty() const;

 private:
  // At most this many stacks per write: a batch's snapshot (a copy of each status) is memory
  // that malloc keeps once freed, so 10,000 at once would stay in RSS.
  static constexpr size_t kMaxBatch = 200;
  // Writes up to kMaxBatch dirty stacks; `more`: whether some were left.
  absl::Status WriteBatch(bool* more);
  absl::Status Write(std::vector<std::string> names) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  void Loop();
  bool HasWork() const ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_ || !dirty_.empty(); }

  Store* const store_;
  const Snapshot snapshot_;
  Metrics* const metrics_;
  const absl::Duration retry_;
  // One write at a time, each with its own snapshot (so the newest write is the newest status).
  // Taken before mu_, never the other way round.
  absl::Mutex write_mu_;
  mutable absl::Mutex mu_;
  std::set<std::string> dirty_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace upkeep::controller

#endif  // UPKEEP_CONTROLLER_RECONCILE_STATUS_WRITER_H_

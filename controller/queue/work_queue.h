// WorkQueue: the controller's rate-limited work queue, in the manner of controller-runtime.
//   - A key is held once however often it is added (dedup).
//   - A key handed out by Get() is not handed out again until Done(key); an Add() meanwhile
//     marks it dirty and it is handed out once more after Done (never on two workers at once).
//   - AddAfter(key, d) adds it when `d` has passed on the queue's Clock; the earliest pending
//     time wins. AddRateLimited(key) waits per-key exponential backoff (base * 2^n, capped),
//     and Forget(key) resets it — so a key in a 5-minute backoff is not re-diagnosed every
//     second.
//   - AddLow(key) queues a key behind every key added otherwise: the periodic full resync uses it,
//     so that re-checking 10,000 quiet keys never delays a fresh observation. A key queued low
//     that is then added normally moves ahead; it is still handed out once.
//   - Get() blocks until a key is ready or the queue is shut down. Delayed keys become ready
//     when the clock passes their time: on a real clock Get() wakes by itself; tests on a
//     SimulatedClock advance it and call TryGet() (or Wake()).
// Keys are (stack, host); a host's inbox is the key with an empty stack.
// Thread-safe. Its mutex is held only for queue bookkeeping, never across work.
#ifndef UPKEEP_CONTROLLER_QUEUE_WORK_QUEUE_H_
#define UPKEEP_CONTROLLER_QUEUE_WORK_QUEUE_H_

#include <deque>
#include <map>
#include <set>
#include <string>
#include <tuple>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/clock.h"

namespace upkeep::controller {

struct WorkKey {
  std::string stack;  // empty: the host's inbox
  std::string host;
  bool operator<(const WorkKey& o) const {
    return std::tie(stack, host) < std::tie(o.stack, o.host);
  }
  bool operator==(const WorkKey& o) const { return stack == o.stack && host == o.host; }
  bool is_host() const { return stack.empty(); }
};

struct WorkQueueOptions {
  absl::Duration backoff_base = absl::Milliseconds(5);
  absl::Duration backoff_max = absl::Seconds(60);
};

class WorkQueue {
 public:
  explicit WorkQueue(Clock* clock, WorkQueueOptions options = {})
      : clock_(clock), options_(options) {}

  void Add(const WorkKey& key);
  void AddLow(const WorkKey& key);
  void AddAfter(const WorkKey& key, absl::Duration delay);
  void AddRateLimited(const WorkKey& key);
  void Forget(const WorkKey& key);
  // How many times `key` was rate-limited since the last Forget.
  int Requeues(const WorkKey& key) const;

  // Blocks until a key is ready (true) or the queue is shut down and drained (false).
  bool Get(WorkKey* key);
  // Non-blocking: promotes delayed keys whose time has come, then hands out one if ready.
  bool TryGet(WorkKey* key);
  void Done(const WorkKey& key);
  // Wakes blocked Get() callers to look at the clock again (after a SimulatedClock moved).
  void Wake();
  void ShutDown();

  size_t Len() const;         // ready keys (either priority)
  size_t DelayedLen() const;  // keys waiting on time
  // When `key` is due (InfiniteFuture when not delayed).
  absl::Time DueAt(const WorkKey& key) const;

 private:
  void AddLocked(const WorkKey& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddLowLocked(const WorkKey& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PromoteLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool PopLocked(WorkKey* key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Clock* const clock_;
  const WorkQueueOptions options_;
  mutable absl::Mutex mu_;
  std::deque<WorkKey> ready_ ABSL_GUARDED_BY(mu_);
  // Keys queued low, oldest first. An entry whose key is no longer in low_ (moved ahead, or
  // handed out) is stale and skipped.
  std::deque<WorkKey> low_ready_ ABSL_GUARDED_BY(mu_);
  std::set<WorkKey> dirty_ ABSL_GUARDED_BY(mu_);  // queued (either way) or waiting for Done
  std::set<WorkKey> low_ ABSL_GUARDED_BY(mu_);    // dirty, and queued low only
  std::set<WorkKey> processing_ ABSL_GUARDED_BY(mu_);
  std::map<WorkKey, absl::Time> due_ ABSL_GUARDED_BY(mu_);           // key -> when
  std::multimap<absl::Time, WorkKey> by_time_ ABSL_GUARDED_BY(mu_);  // when -> key
  std::map<WorkKey, int> failures_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t wakes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace upkeep::controller

#endif  // UPKEEP_CONTROLLER_QUEUE_WORK_QUEUE_H_

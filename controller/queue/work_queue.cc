#include "controller/queue/work_queue.h"

#include <algorithm>

namespace upkeep::controller {

void WorkQueue::AddLocked(const WorkKey& key) {
  if (shut_down_) return;
  if (low_.erase(key) > 0) {
    // Queued low: it moves ahead (its low entry goes stale), or, while a worker has it, goes
    // ahead when Done.
    if (!processing_.count(key)) ready_.push_back(key);
    return;
  }
  if (!dirty_.insert(key).second) return;
  if (processing_.count(key)) return;  // handed out again after Done
  ready_.push_back(key);
}

void WorkQueue::AddLowLocked(const WorkKey& key) {
  if (shut_down_) return;
  if (!dirty_.insert(key).second) return;  // already queued, at either priority
  low_.insert(key);
  if (processing_.count(key)) return;  // handed out again (low) after Done
  low_ready_.push_back(key);
}

void WorkQueue::Add(const WorkKey& key) {
  absl::MutexLock lock(&mu_);
  AddLocked(key);
}

void WorkQueue::AddLow(const WorkKey& key) {
  absl::MutexLock lock(&mu_);
  AddLowLocked(key);
}

void WorkQueue::AddAfter(const WorkKey& key, absl::Duration delay) {
  if (delay <= absl::ZeroDuration()) {
    Add(key);
    return;
  }
  absl::MutexLock lock(&mu_);
  if (shut_down_) return;
  const absl::Time when = clock_->Now() + delay;
  auto it = due_.find(key);
  if (it != due_.end()) {
    if (it->second <= when) return;  // the earlier time wins
    for (auto [b, e] = by_time_.equal_range(it->second); b != e; ++b) {
      if (b->second == key) {
        by_time_.erase(b);
        break;
      }
    }
    it->second = when;
  } else {
    due_.emplace(key, when);
  }
  by_time_.emplace(when, key);
  ++wakes_;  // a blocked Get may need to wake earlier than it planned
}

void WorkQueue::AddRateLimited(const WorkKey& key) {
  absl::Duration delay;
  {
    absl::MutexLock lock(&mu_);
    const int n = failures_[key]++;
    delay = options_.backoff_base;
    for (int i = 0; i < n && delay < options_.backoff_max; ++i) delay *= 2;
    delay = std::min(delay, options_.backoff_max);
  }
  AddAfter(key, delay);
}

void WorkQueue::Forget(const WorkKey& key) {
  absl::MutexLock lock(&mu_);
  failures_.erase(key);
}

int WorkQueue::Requeues(const WorkKey& key) const {
  absl::MutexLock lock(&mu_);
  auto it = failures_.find(key);
  return it == failures_.end() ? 0 : it->second;
}

void WorkQueue::PromoteLocked(absl::Time now) {
  while (!by_time_.empty() && by_time_.begin()->first <= now) {
    const WorkKey key = by_time_.begin()->second;
    by_time_.erase(by_time_.begin());
    due_.erase(key);
    AddLocked(key);
  }
}

bool WorkQueue::PopLocked(WorkKey* key) {
  if (!ready_.empty()) {
    *key = std::move(ready_.front());
    ready_.pop_front();
  } else {
    bool found = false;
    while (!found && !low_ready_.empty()) {
      WorkKey k = std::move(low_ready_.front());
      low_ready_.pop_front();
      // Stale: moved ahead, handed out since, or with a worker now (re-queued at Done).
      if (processing_.count(k) || !low_.count(k)) continue;
      low_.erase(k);
      *key = std::move(k);
      found = true;
    }
    if (!found) return false;
  }
  dirty_.erase(*key);
  processing_.insert(*key);
  return true;
}

bool WorkQueue::Get(WorkKey* key) {
  absl::MutexLock lock(&mu_);
  while (true) {
    PromoteLocked(clock_->Now());
    if (PopLocked(key)) return true;
    if (shut_down_) return false;
    // Sleep until a key is added, the earliest delayed key is due, or someone wakes us.
    const uint64_t wakes = wakes_;
    absl::Duration wait = absl::InfiniteDuration();
    if (!by_time_.empty())
      wait = std::max(by_time_.begin()->first - clock_->Now(), absl::ZeroDuration());
    struct Arg {
      WorkQueue* q;
      uint64_t wakes;
    } arg{this, wakes};
    mu_.AwaitWithTimeout(absl::Condition(
                             +[](Arg* a) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                               return !a->q->ready_.empty() || !a->q->low_ready_.empty() ||
                                      a->q->shut_down_ || a->q->wakes_ != a->wakes;
                             },
                             &arg),
                         wait);
  }
}

bool WorkQueue::TryGet(WorkKey* key) {
  absl::MutexLock lock(&mu_);
  PromoteLocked(clock_->Now());
  return PopLocked(key);
}

void WorkQueue::Done(const WorkKey& key) {
  absl::MutexLock lock(&mu_);
  processing_.erase(key);
  if (!dirty_.count(key) || shut_down_) return;
  if (low_.count(key)) {
    low_ready_.push_back(key);
  } else {
    ready_.push_back(key);
  }
}

void WorkQueue::Wake() {
  absl::MutexLock lock(&mu_);
  ++wakes_;
}

void WorkQueue::ShutDown() {
  absl::MutexLock lock(&mu_);
  shut_down_ = true;
  ready_.clear();
  low_ready_.clear();
  low_.clear();
  dirty_.clear();
  due_.clear();
  by_time_.clear();
}

size_t WorkQueue::Len() const {
  absl::MutexLock lock(&mu_);
  size_t low = 0;  // queued low and not with a worker
  for (const auto& k : low_) low += processing_.count(k) ? 0 : 1;
  return ready_.size() + low;
}

size_t WorkQueue::DelayedLen() const {
  absl::MutexLock lock(&mu_);
  return due_.size();
}

absl::Time WorkQueue::DueAt(const WorkKey& key) const {
  absl::MutexLock lock(&mu_);
  auto it = due_.find(key);
  return it == due_.end() ? absl::InfiniteFuture() : it->second;
}

}  // namespace upkeep::controller

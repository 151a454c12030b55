// Under TSan (build-tsan) these pass only if scripts/sanitizers/absl_tsan.cc makes Debian's
// uninstrumented absl::Mutex visible: every shared field here is guarded, so any report is the
// shim missing an entry point (e.g. after an abseil upgrade) and halts the test. In other builds
// they are plain correctness checks.
#include <thread>
#include <vector>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace {

struct Shared {
  absl::Mutex mu;
  std::vector<int> items ABSL_GUARDED_BY(mu);
  bool done ABSL_GUARDED_BY(mu) = false;
};

TEST(AbslTsan, LockAndReaderLockOrderAccesses) {
  Shared s;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&s, t] {
      for (int i = 0; i < 200; ++i) {
        if (i % 2 == 0) {
          absl::MutexLock lock(&s.mu);
          s.items.push_back(t);
        } else {
          absl::ReaderMutexLock lock(&s.mu);
          (void)s.items.size();
        }
        if (s.mu.TryLock()) {
          s.items.push_back(t);
          s.mu.Unlock();
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  absl::MutexLock lock(&s.mu);
  EXPECT_GE(s.items.size(), 400u);
}

TEST(AbslTsan, LockWhenAndAwaitSeeWritesOfOtherHolders) {
  Shared s;
  std::thread consumer([&s] {
    // The condition reads guarded fields, possibly on the producer's thread.
    s.mu.LockWhen(absl::Condition(
        +[](Shared* sh) { return sh->items.size() >= 100; }, &s));
    s.items.clear();
    s.mu.Unlock();
    absl::MutexLock lock(&s.mu);
    s.mu.AwaitWithTimeout(absl::Condition(&s.done), absl::Seconds(30));
    s.items.push_back(-1);
  });
  for (int i = 0; i < 200; ++i) {
    absl::MutexLock lock(&s.mu);
    s.items.push_back(i);
  }
  {
    absl::MutexLock lock(&s.mu);
    s.done = true;
  }
  consumer.join();
  absl::MutexLock lock(&s.mu);
  EXPECT_EQ(s.items.back(), -1);
}

TEST(AbslTsan, CondVarNotificationAndBlockingCounterOrderAccesses) {
  Shared s;
  absl::CondVar cv;
  absl::Notification ready;
  absl::BlockingCounter finished(2);
  int plain = 0;  // unguarded: ordered by the Notification and the BlockingCounter only
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      ready.WaitForNotification();
      EXPECT_EQ(plain, 1);
      {
        absl::MutexLock lock(&s.mu);
        while (!s.done) cv.Wait(&s.mu);
        s.items.push_back(t);
      }
      finished.DecrementCount();
    });
  }
  plain = 1;
  ready.Notify();
  {
    absl::MutexLock lock(&s.mu);
    s.done = true;
    cv.SignalAll();
  }
  finished.Wait();
  plain = 2;
  for (auto& t : threads) t.join();
  EXPECT_EQ(plain, 2);
}

}  // namespace

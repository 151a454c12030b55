// WorkQueue alone, on a simulated clock: dedup, one worker per key, delays and backoff.
#include "controller/queue/work_queue.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/support/wait.h"

namespace upkeep::controller {
namespace {

const WorkKey kA{"shop", "h1"};
const WorkKey kB{"shop", "h2"};

TEST(WorkQueue, HoldsAKeyOnceHoweverOftenItIsAdded) {
  SimulatedClock clock;
  WorkQueue q(&clock);
  for (int i = 0; i < 5; ++i) q.Add(kA);
  q.Add(kB);
  EXPECT_EQ(q.Len(), 2u);
  WorkKey k;
  ASSERT_TRUE(q.TryGet(&k));
  EXPECT_EQ(k, kA);
  ASSERT_TRUE(q.TryGet(&k));
  EXPECT_EQ(k, kB);
  EXPECT_FALSE(q.TryGet(&k));
}

TEST(WorkQueue, NeverHandsOneKeyToTwoWorkersAndRedoesItAfterDoneWhenAddedMeanwhile) {
  SimulatedClock clock;
  WorkQueue q(&clock);
  q.Add(kA);
  WorkKey k;
  ASSERT_TRUE(q.TryGet(&k));
  q.Add(kA);  // changed while being processed
  WorkKey other;
  EXPECT_FALSE(q.TryGet(&other)) << "the key is still being processed";
  q.Done(kA);
  ASSERT_TRUE(q.TryGet(&other));
  EXPECT_EQ(other, kA);
  q.Done(kA);
  EXPECT_FALSE(q.TryGet(&other));
}

TEST(WorkQueue, ConcurrentWorkersNeverOverlapOnAKey) {
  WorkQueue q(Clock::Real());
  std::atomic<int> inside{0}, overlaps{0}, processed{0};
  std::vector<std::thread> workers;
  for (int i = 0; i < 4; ++i) {
    workers.emplace_back([&] {
      WorkKey k;
      while (q.Get(&k)) {
        if (inside.fetch_add(1) != 0) overlaps++;
        inside.fetch_sub(1);
        processed++;
        q.Done(k);
      }
    });
  }
  for (int i = 0; i < 2000; ++i) q.Add(kA);
  ASSERT_TRUE(testing::WaitFor([&] { return q.Len() == 0 && processed > 0; }));
  q.ShutDown();
  for (auto& t : workers) t.join();
  EXPECT_EQ(overlaps, 0);
  EXPECT_LE(processed, 2000);
}

TEST(WorkQueue, AddAfterWaitsForTheClockAndTheEarlierTimeWins) {
  SimulatedClock clock;
  WorkQueue q(&clock);
  q.AddAfter(kA, absl::Minutes(5));
  q.AddAfter(kA, absl::Minutes(1));
  q.AddAfter(kA, absl::Minutes(3));
  WorkKey k;
  EXPECT_FALSE(q.TryGet(&k));
  EXPECT_EQ(q.DelayedLen(), 1u);
  clock.Advance(absl::Seconds(59));
  EXPECT_FALSE(q.TryGet(&k));
  clock.Advance(absl::Seconds(1));
  ASSERT_TRUE(q.TryGet(&k));
  EXPECT_EQ(k, kA);
  EXPECT_EQ(q.DelayedLen(), 0u);
}

TEST(WorkQueue, AKeyInAFiveMinuteBackoffIsNotHandedOutEverySecond) {
  SimulatedClock clock;
  WorkQueue q(&clock);
  q.AddAfter(kA, absl::Minutes(5));
  int handed = 0;
  for (int s = 0; s < 299; ++s) {
    clock.Advance(absl::Seconds(1));
    WorkKey k;
    while (q.TryGet(&k)) {
      ++handed;
      q.Done(k);
    }
  }
  EXPECT_EQ(handed, 0);
  clock.Advance(absl::Seconds(1));
  WorkKey k;
  EXPECT_TRUE(q.TryGet(&k));
}

TEST(WorkQueue, RateLimitedBacksOffExponentiallyUntilForgotten) {
  SimulatedClock clock;
  WorkQueueOptions options;
  options.backoff_base = absl::Milliseconds(10);
  options.backoff_max = absl::Milliseconds(50);
  WorkQueue q(&clock, options);
  const absl::Time t0 = clock.Now();
  q.AddRateLimited(kA);
  EXPECT_EQ(q.DueAt(kA), t0 + absl::Milliseconds(10));
  clock.Advance(absl::Milliseconds(10));
  WorkKey k;
  ASSERT_TRUE(q.TryGet(&k));
  q.Done(k);
  q.AddRateLimited(kA);
  EXPECT_EQ(q.DueAt(kA), clock.Now() + absl::Milliseconds(20));
  clock.Advance(absl::Milliseconds(20));
  ASSERT_TRUE(q.TryGet(&k));
  q.Done(k);
  q.AddRateLimited(kA);
  q.AddRateLimited(kB);
  EXPECT_EQ(q.DueAt(kA), clock.Now() + absl::Milliseconds(40));
  EXPECT_EQ(q.DueAt(kB), clock.Now() + absl::Milliseconds(10)) << "backoff is per key";
  EXPECT_EQ(q.Requeues(kA), 3);
  q.Forget(kA);
  EXPECT_EQ(q.Requeues(kA), 0);
}

TEST(WorkQueue, GetWakesForADelayedKeyOnTheRealClock) {
  WorkQueue q(Clock::Real());
  std::atomic<bool> got{false};
  std::thread worker([&] {
    WorkKey k;
    if (q.Get(&k)) got = true;
  });
  q.AddAfter(kA, absl::Milliseconds(30));
  EXPECT_TRUE(testing::WaitFor([&] { return got.load(); }, absl::Seconds(5)));
  q.ShutDown();
  worker.join();
}

TEST(WorkQueue, ShutDownReleasesBlockedWorkers) {
  WorkQueue q(Clock::Real());
  std::thread worker([&] {
    WorkKey k;
    EXPECT_FALSE(q.Get(&k));
  });
  q.ShutDown();
  worker.join();
}

TEST(WorkQueue, LowKeysWaitBehindEveryOtherKey) {
  SimulatedClock clock;
  WorkQueue q(&clock);
  const WorkKey kC{"shop", "h3"};
  q.AddLow(kA);
  q.AddLow(kB);
  q.Add(kC);
  EXPECT_EQ(q.Len(), 3u);
  WorkKey k;
  ASSERT_TRUE(q.TryGet(&k));
  EXPECT_EQ(k, kC) << "a fresh key goes before the resync";
  ASSERT_TRUE(q.TryGet(&k));
  EXPECT_EQ(k, kA);
  ASSERT_TRUE(q.TryGet(&k));
  EXPECT_EQ(k, kB);
  EXPECT_FALSE(q.TryGet(&k));
}

TEST(WorkQueue, ALowKeyAddedNormallyMovesAheadAndIsHandedOutOnce) {
  SimulatedClock clock;
  WorkQueue q(&clock);
  q.AddLow(kA);
  q.AddLow(kB);
  q.Add(kB);  // an observation for a key the resync already queued
  q.AddLow(kB);
  EXPECT_EQ(q.Len(), 2u);
  WorkKey k;
  ASSERT_TRUE(q.TryGet(&k));
  EXPECT_EQ(k, kB);
  q.Done(kB);
  ASSERT_TRUE(q.TryGet(&k));
  EXPECT_EQ(k, kA);
  q.Done(kA);
  EXPECT_FALSE(q.TryGet(&k)) << "kB's low entry went stale when it moved ahead";
}

TEST(WorkQueue, ALowKeyIsNeverHandedToTwoWorkers) {
  SimulatedClock clock;
  WorkQueue q(&clock);
  q.AddLow(kA);
  q.Add(kA);  // moved ahead; its low entry is stale
  WorkKey k;
  ASSERT_TRUE(q.TryGet(&k));
  EXPECT_EQ(k, kA);
  q.AddLow(kA);  // queued low again while a worker has it
  WorkKey other;
  EXPECT_FALSE(q.TryGet(&other)) << "the stale entry must not hand out a key in progress";
  q.Done(kA);
  ASSERT_TRUE(q.TryGet(&k)) << "re-queued (low) at Done";
  EXPECT_EQ(k, kA);
  q.Done(kA);
  EXPECT_FALSE(q.TryGet(&k));
}

// The reconciler's reconnect storm (issue #15): each hello queues its host's stack keys low, so
// the first observations (host inbox keys, queued normally) do not wait behind every hello's
// reconcile; the stack key an observation then adds moves ahead of the hellos still queued.
TEST(WorkQueue, AnObservationAfterAReconnectStormGoesBeforeTheHellosReconciles) {
  SimulatedClock clock;
  WorkQueue q(&clock);
  constexpr int kHosts = 1000;
  for (int i = 0; i < kHosts; ++i) {
    const std::string host = "h" + std::to_string(i);
    q.AddLow(WorkKey{host, host});  // Connected(): the host's stacks, low
  }
  const WorkKey inbox{"", "h999"};
  const WorkKey stack{"h999", "h999"};
  q.Add(inbox);  // h999 reports (its service is down)
  WorkKey k;
  ASSERT_TRUE(q.TryGet(&k));
  EXPECT_EQ(k, inbox) << "the observation waited behind " << kHosts << " hello reconciles";
  q.Add(stack);  // DrainInbox -> Observed(): the stack key, normally
  q.Done(inbox);
  ASSERT_TRUE(q.TryGet(&k));
  EXPECT_EQ(k, stack) << "the observed key must move ahead of the hellos still queued";
  q.Done(stack);
  int rest = 0;
  while (q.TryGet(&k)) {
    EXPECT_FALSE(k == stack) << "handed out twice";
    q.Done(k);
    ++rest;
  }
  EXPECT_EQ(rest, kHosts - 1) << "every other hello is still reconciled, once";
}

TEST(WorkQueue, GetWakesForALowKey) {
  WorkQueue q(Clock::Real());
  std::thread worker([&] {
    WorkKey k;
    ASSERT_TRUE(q.Get(&k));
    EXPECT_EQ(k, kA);
  });
  q.AddLow(kA);
  worker.join();
}

}  // namespace
}  // namespace upkeep::controller

// Policy: restart budget with healthyReset, on records built like the dispatcher's.
#include "core/policy/policy.h"

#include <vector>

#include "core/manifest/loader.h"
#include "core/proto_time.h"
#include "gtest/gtest.h"

namespace upkeep::policy {
namespace {

namespace v1 = upkeep::v1;

const absl::Time kT0 = absl::FromUnixSeconds(1800000000);

v1::PolicySpec Spec(absl::Duration window, absl::Duration healthy_reset, int max) {
  v1::Stack s;
  manifest::ApplyDefaults(&s);
  v1::PolicySpec p = s.spec().policy();
  p.mutable_restart_budget()->set_max(max);
  *p.mutable_restart_budget()->mutable_window() = ToProto(window);
  *p.mutable_healthy_reset() = ToProto(healthy_reset);
  return p;
}

v1::ActionRecord Restart(absl::Time at, v1::Verification v) {
  v1::ActionRecord r;
  r.mutable_action()->set_id(absl::FormatTime(at));
  r.mutable_action()->set_kind(v1::ACTION_KIND_RESTART_SERVICE);
  r.mutable_action()->set_target("backend");
  *r.mutable_requested_at() = ToProto(at);
  r.mutable_result()->set_id(r.action().id());
  *r.mutable_result()->mutable_finished_at() = ToProto(at + absl::Milliseconds(100));
  r.set_verification(v);
  return r;
}

TEST(History, GroupsRecordsByTargetOldestFirst) {
  std::vector<v1::ActionRecord> h = {Restart(kT0, v1::VERIFICATION_NOT_FIXED),
                                     Restart(kT0 + absl::Minutes(1), v1::VERIFICATION_NOT_FIXED),
                                     Restart(kT0 + absl::Minutes(2), v1::VERIFICATION_FIXED)};
  h[1].mutable_action()->set_target("nginx");
  const History history(h);
  ASSERT_EQ(history.Of("backend").size(), 2u);
  EXPECT_EQ(history.Of("backend")[0], &h[0]);
  EXPECT_EQ(history.Of("backend")[1], &h[2]);
  ASSERT_EQ(history.Of("nginx").size(), 1u);
  EXPECT_EQ(history.Of("nginx")[0], &h[1]);
  EXPECT_TRUE(history.Of("frontend").empty());
  EXPECT_EQ(history.all().size(), 3u);
  EXPECT_TRUE(History({}).Of("backend").empty());
}

TEST(History, QuestionsReadOnlyTheirTargetsRecords) {
  // backend and frontend restarts interleaved: each budget counts its own.
  const auto spec = Spec(absl::Hours(1), absl::Minutes(10), 3);
  std::vector<v1::ActionRecord> h;
  for (int i = 0; i < 6; ++i) {
    h.push_back(Restart(kT0 + absl::Minutes(i),
                        i % 2 ? v1::VERIFICATION_FIXED : v1::VERIFICATION_NOT_FIXED));
    if (i % 3 == 0) h.back().mutable_action()->set_target("frontend");
  }
  const History history(h);
  const absl::Time now = kT0 + absl::Minutes(7);
  EXPECT_EQ(RestartsInWindow(spec, history, "backend", now), 4);
  EXPECT_EQ(RestartsInWindow(spec, history, "frontend", now), 2);
  EXPECT_EQ(RestartsInWindow(spec, history, "nginx", now), 0);
  EXPECT_EQ(RestartsInWindow(spec, h, "backend", now), 4);
}

TEST(Policy, DefaultsComeFromTheLoaderOnly) {
  v1::Stack s;
  manifest::ApplyDefaults(&s);
  EXPECT_EQ(s.spec().policy().restart_budget().max(), 5);
  EXPECT_EQ(FromProto(s.spec().policy().healthy_reset()), absl::Minutes(10));
}

TEST(Policy, RestartsInsideTheWindowCount) {
  const auto spec = Spec(absl::Hours(1), absl::Minutes(10), 3);
  std::vector<v1::ActionRecord> h = {Restart(kT0, v1::VERIFICATION_NOT_FIXED),
                                     Restart(kT0 + absl::Minutes(1), v1::VERIFICATION_NOT_FIXED),
                                     Restart(kT0 + absl::Minutes(2), v1::VERIFICATION_FIXED)};
  EXPECT_EQ(RestartsInWindow(spec, h, "backend", kT0 + absl::Minutes(3)), 3);
  v1::Action a = h.back().action();
  EXPECT_EQ(Judge(spec, h, a, kT0 + absl::Minutes(3), false).policy(),
            v1::POLICY_VERDICT_BUDGET_EXHAUSTED);
}

TEST(Policy, HealthyResetClearsTheBudgetAfterAFixThatHeld) {
  // A one-hour window, but the service was healthy for 10 minutes after its last fix: the
  // crash loop is over and the old restarts no longer count.
  const auto spec = Spec(absl::Hours(1), absl::Minutes(10), 3);
  std::vector<v1::ActionRecord> h = {Restart(kT0, v1::VERIFICATION_NOT_FIXED),
                                     Restart(kT0 + absl::Minutes(1), v1::VERIFICATION_NOT_FIXED),
                                     Restart(kT0 + absl::Minutes(2), v1::VERIFICATION_FIXED)};
  EXPECT_EQ(RestartsInWindow(spec, h, "backend", kT0 + absl::Minutes(13)), 0);
  // It crashes again: only the new restart counts.
  h.push_back(Restart(kT0 + absl::Minutes(13), v1::VERIFICATION_PENDING));
  EXPECT_EQ(RestartsInWindow(spec, h, "backend", kT0 + absl::Minutes(14)), 1);
  // A fix that did not hold for healthyReset does not reset anything.
  std::vector<v1::ActionRecord> flapping = {
      Restart(kT0, v1::VERIFICATION_FIXED), Restart(kT0 + absl::Minutes(2), v1::VERIFICATION_FIXED),
      Restart(kT0 + absl::Minutes(4), v1::VERIFICATION_FIXED)};
  EXPECT_EQ(RestartsInWindow(spec, flapping, "backend", kT0 + absl::Minutes(5)), 3);
}

TEST(Policy, BackoffGrowsAcrossFlapsUntilAFixHoldsForHealthyReset) {
  auto spec = Spec(absl::Hours(1), absl::Minutes(5), 10);
  *spec.mutable_backoff()->mutable_initial() = ToProto(absl::Seconds(10));
  *spec.mutable_backoff()->mutable_max() = ToProto(absl::Minutes(10));
  // Three restarts, each verified FIXED, each relapsing within a minute: a flapping service.
  std::vector<v1::ActionRecord> h = {Restart(kT0, v1::VERIFICATION_FIXED),
                                     Restart(kT0 + absl::Minutes(1), v1::VERIFICATION_FIXED),
                                     Restart(kT0 + absl::Minutes(2), v1::VERIFICATION_FIXED)};
  const absl::Time now = kT0 + absl::Minutes(2) + absl::Seconds(30);
  const Streak s =
      FailedStreak(h, "backend", v1::ACTION_KIND_RESTART_SERVICE, absl::Minutes(5), now);
  EXPECT_EQ(s.count, 3);
  EXPECT_EQ(s.fixed, 3);
  // Without healthyReset every FIXED ended the streak: backoff never grew.
  EXPECT_EQ(FailedStreak(h, "backend", v1::ACTION_KIND_RESTART_SERVICE).count, 0);
  // 10s * 2^2 = 40s after the last restart.
  const v1::PlannedAction p = Judge(spec, h, h.back().action(), now, false);
  EXPECT_EQ(p.policy(), v1::POLICY_VERDICT_BACKOFF) << p.policy_reason();
  EXPECT_EQ(FromProto(p.not_before()), kT0 + absl::Minutes(2) + absl::Seconds(40));
  EXPECT_EQ(FlapsInEpisode(spec, h, "backend", now), 3);
  // Healthy for healthyReset after the last fix: the episode is over.
  const absl::Time later = kT0 + absl::Minutes(8);
  EXPECT_EQ(FlapsInEpisode(spec, h, "backend", later), 0);
  EXPECT_EQ(Judge(spec, h, h.back().action(), later, false).policy(), v1::POLICY_VERDICT_ALLOWED);
}

TEST(Policy, TheNewestFixIsNoRelapseWhileItHolds) {
  const auto spec = Spec(absl::Hours(1), absl::Minutes(5), 10);
  // Started, crashed once, started again and healthy since: one relapse, not a flap.
  std::vector<v1::ActionRecord> h = {Restart(kT0, v1::VERIFICATION_FIXED),
                                     Restart(kT0 + absl::Seconds(5), v1::VERIFICATION_FIXED)};
  const absl::Time now = kT0 + absl::Seconds(6);
  EXPECT_EQ(FlapsInEpisode(spec, h, "backend", now, /*holding=*/true), 0);
  // Unhealthy again: the newest fix failed too; two relapses are a flap.
  EXPECT_EQ(FlapsInEpisode(spec, h, "backend", now, /*holding=*/false), 2);
  // Repaired a third time and healthy: the two relapses still make the episode.
  h.push_back(Restart(kT0 + absl::Seconds(7), v1::VERIFICATION_FIXED));
  EXPECT_EQ(FlapsInEpisode(spec, h, "backend", kT0 + absl::Seconds(8), /*holding=*/true), 2);
}

TEST(Policy, ARunOfFailedRepairsIsNotAFlap) {
  const auto spec = Spec(absl::Hours(1), absl::Minutes(5), 10);
  std::vector<v1::ActionRecord> h = {Restart(kT0, v1::VERIFICATION_NOT_FIXED),
                                     Restart(kT0 + absl::Minutes(1), v1::VERIFICATION_NOT_FIXED),
                                     Restart(kT0 + absl::Minutes(2), v1::VERIFICATION_FIXED)};
  EXPECT_EQ(FlapsInEpisode(spec, h, "backend", kT0 + absl::Minutes(3)), 0);
}

}  // namespace
}  // namespace upkeep::policy

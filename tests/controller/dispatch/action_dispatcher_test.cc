// ActionDispatcher over a real SQLite store; the agent side is a recording hub, and faults are
// injected into the store (tests/support/controller/doubles.h).
#include "controller/dispatch/action_dispatcher.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "core/proto_time.h"
#include "gtest/gtest.h"
#include "tests/support/controller/doubles.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace upkeep::controller {
namespace {

namespace v1 = upkeep::v1;
using testing::FaultyStore;
using testing::RecordingHub;

const WorkKey kKey{"shop", "h1"};

v1::PlannedAction Planned(v1::ActionKind kind, const std::string& target) {
  v1::PlannedAction p;
  p.mutable_action()->set_kind(kind);
  p.mutable_action()->set_target(target);
  p.mutable_action()->set_reason("test");
  p.set_policy(v1::POLICY_VERDICT_ALLOWED);
  return p;
}

v1::ActionResult Succeeded(const v1::Action& a, absl::Time at, const std::string& output = "") {
  v1::ActionResult r;
  r.set_id(a.id());
  r.set_kind(a.kind());
  r.set_target(a.target());
  r.set_outcome(v1::ACTION_OUTCOME_SUCCEEDED);
  r.set_output(output);
  *r.mutable_started_at() = ToProto(at);
  *r.mutable_finished_at() = ToProto(at);
  return r;
}

class DispatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = std::make_unique<FaultyStore>(std::move(*OpenSqliteStore(dir_.path())));
    bus_ = std::make_unique<EventBus>(store_.get(), &clock_, nullptr);
    events_sub_ = bus_->Subscribe("", [this](const v1::Event& e) {
      absl::MutexLock lock(&mu_);
      reasons_.push_back(e.reason());
    });
  }
  std::unique_ptr<ActionDispatcher> Make(DispatcherOptions options = {}) {
    auto d =
        std::make_unique<ActionDispatcher>(store_.get(), &clock_, nullptr, bus_.get(), options);
    d->SetHub(&hub_);
    return d;
  }
  int CountReason(const std::string& reason) {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(std::count(reasons_.begin(), reasons_.end(), reason));
  }

  testing::TempDir dir_;
  SimulatedClock clock_;
  std::unique_ptr<FaultyStore> store_;
  std::unique_ptr<EventBus> bus_;
  std::unique_ptr<EventBus::Subscription> events_sub_;
  RecordingHub hub_;
  absl::Mutex mu_;
  std::vector<std::string> reasons_ ABSL_GUARDED_BY(mu_);
};

TEST_F(DispatcherTest, SendsASequenceOneActionAtATime) {
  auto d = Make();
  auto r = d->Dispatch(kKey,
                       {Planned(v1::ACTION_KIND_TEST_PROXY_CONFIG, "nginx"),
                        Planned(v1::ACTION_KIND_START_PROXY, "nginx")},
                       "proxy.running[nginx]=no", absl::InfinitePast());
  ASSERT_EQ(r.outcome, ActionDispatcher::Outcome::kSent);
  ASSERT_EQ(hub_.actions().size(), 1u);
  EXPECT_EQ(hub_.actions()[0].kind(), v1::ACTION_KIND_TEST_PROXY_CONFIG);
  EXPECT_TRUE(d->SequenceRunning(kKey));
  EXPECT_EQ(d->OnResult("h1", Succeeded(hub_.actions()[0], clock_.Now())), kKey);
  ASSERT_EQ(hub_.actions().size(), 2u);
  EXPECT_EQ(hub_.actions()[1].kind(), v1::ACTION_KIND_START_PROXY);
  EXPECT_FALSE(d->SequenceRunning(kKey));
  // The stored record keeps the decision path.
  EXPECT_EQ(store_->GetAction(hub_.actions()[1].id())->why(), "proxy.running[nginx]=no");
}

// Defect: OnActionResult popped the next action of a sequence before recording it, so a
// reconcile in that gap saw nothing in flight and planned the same repair again.
TEST_F(DispatcherTest, TheNextActionOfASequenceIsInFlightBeforeItIsSent) {
  auto d = Make();
  d->Dispatch(kKey,
              {Planned(v1::ACTION_KIND_TEST_PROXY_CONFIG, "nginx"),
               Planned(v1::ACTION_KIND_START_PROXY, "nginx")},
              "why", absl::InfinitePast());
  const v1::Action first = hub_.actions().at(0);
  hub_.SetBlocked(true);  // hold the result's thread in the moment of sending the next
  std::thread result([&] { d->OnResult("h1", Succeeded(first, clock_.Now())); });
  ASSERT_TRUE(testing::WaitFor([&] { return hub_.entered() == 2; }));
  // A reconcile now: the history shows the start in flight, and a second dispatch is refused.
  const History h = d->HistoryOf(kKey);
  ASSERT_EQ(h->size(), 2u);
  EXPECT_EQ(h->back().action().kind(), v1::ACTION_KIND_START_PROXY);
  EXPECT_TRUE(h->back().result().id().empty());
  auto again = d->Dispatch(kKey, {Planned(v1::ACTION_KIND_START_PROXY, "nginx")}, "why",
                           absl::InfinitePast());
  EXPECT_EQ(again.outcome, ActionDispatcher::Outcome::kBusy);
  hub_.SetBlocked(false);
  result.join();
  int starts = 0;
  for (const auto& a : hub_.actions()) starts += a.kind() == v1::ACTION_KIND_START_PROXY;
  EXPECT_EQ(starts, 1);
}

// Defect: when the store write of an action failed, the action was sent anyway.
TEST_F(DispatcherTest, NoDurableRecordMeansNoActionAndAnAlert) {
  auto d = Make();
  store_->fail_put_action = true;
  auto r = d->Dispatch(kKey, {Planned(v1::ACTION_KIND_RESTART_SERVICE, "backend")}, "why",
                       absl::InfinitePast());
  EXPECT_EQ(r.outcome, ActionDispatcher::Outcome::kStoreFailed);
  EXPECT_TRUE(hub_.actions().empty()) << "an action without a durable record was sent";
  EXPECT_TRUE(d->HistoryOf(kKey)->empty());
  EXPECT_EQ(CountReason("StoreUnavailable"), 1);
  // Manual actions too.
  v1::Action manual;
  manual.set_kind(v1::ACTION_KIND_RESTART_SERVICE);
  manual.set_target("backend");
  EXPECT_FALSE(d->SendManual(kKey, manual).ok());
  EXPECT_TRUE(hub_.actions().empty());
  EXPECT_EQ(d->ManualWaiters(), 0u);
  // The store is back: the same decision goes through.
  store_->fail_put_action = false;
  r = d->Dispatch(kKey, {Planned(v1::ACTION_KIND_RESTART_SERVICE, "backend")}, "why",
                  absl::InfinitePast());
  EXPECT_EQ(r.outcome, ActionDispatcher::Outcome::kSent);
  EXPECT_EQ(hub_.actions().size(), 1u);
  EXPECT_TRUE(store_->GetAction(hub_.actions()[0].id()).ok());
}

TEST_F(DispatcherTest, OneAutomaticActionInFlightPerKey) {
  auto d = Make();
  EXPECT_EQ(d->Dispatch(kKey, {Planned(v1::ACTION_KIND_RESTART_SERVICE, "backend")}, "w",
                        absl::InfinitePast())
                .outcome,
            ActionDispatcher::Outcome::kSent);
  EXPECT_EQ(d->Dispatch(kKey, {Planned(v1::ACTION_KIND_RESTART_SERVICE, "frontend")}, "w",
                        absl::InfinitePast())
                .outcome,
            ActionDispatcher::Outcome::kBusy);
  // Another host's key is independent.
  EXPECT_EQ(
      d->Dispatch(WorkKey{"shop", "h2"}, {Planned(v1::ACTION_KIND_RESTART_SERVICE, "backend")}, "w",
                  absl::InfinitePast())
          .outcome,
      ActionDispatcher::Outcome::kSent);
  // An agent that never answers stops counting as in flight after the timeout.
  clock_.Advance(absl::Minutes(3));
  EXPECT_EQ(d->Dispatch(kKey, {Planned(v1::ACTION_KIND_RESTART_SERVICE, "frontend")}, "w",
                        absl::InfinitePast())
                .outcome,
            ActionDispatcher::Outcome::kSent);
}

TEST_F(DispatcherTest, FleetWideTokenBucket) {
  DispatcherOptions options;
  options.max_actions_per_second = 2;
  auto d = Make(options);
  int sent = 0, limited = 0;
  for (int i = 0; i < 5; ++i) {
    auto r = d->Dispatch(WorkKey{"shop", absl::StrCat("h", i)},
                         {Planned(v1::ACTION_KIND_RESTART_SERVICE, "backend")}, "w",
                         absl::InfinitePast());
    sent += r.outcome == ActionDispatcher::Outcome::kSent;
    if (r.outcome == ActionDispatcher::Outcome::kRateLimited) {
      ++limited;
      EXPECT_GT(r.retry_after, absl::ZeroDuration());
    }
  }
  EXPECT_EQ(sent, 2);
  EXPECT_EQ(limited, 3);
  // The three turned away hold the next three tokens (2/s): a newcomer waits behind them.
  clock_.Advance(absl::Seconds(1));
  const auto late =
      d->Dispatch(WorkKey{"shop", "h9"}, {Planned(v1::ACTION_KIND_RESTART_SERVICE, "b")}, "w",
                  absl::InfinitePast());
  EXPECT_EQ(late.outcome, ActionDispatcher::Outcome::kRateLimited);
  clock_.Advance(absl::Seconds(2));
  EXPECT_EQ(d->Dispatch(WorkKey{"shop", "h9"}, {Planned(v1::ACTION_KIND_RESTART_SERVICE, "b")}, "w",
                        absl::InfinitePast())
                .outcome,
            ActionDispatcher::Outcome::kSent);
}

TEST_F(DispatcherTest, KeysTurnedAwayByTheBucketGoInTurnWhenTheirTokenIsDue) {
  DispatcherOptions options;
  options.max_actions_per_second = 1;
  auto d = Make(options);
  const WorkKey a{"shop", "h1"}, b{"shop", "h2"}, c{"shop", "h3"};
  auto go = [&](const WorkKey& k) {
    return d->Dispatch(k, {Planned(v1::ACTION_KIND_RESTART_SERVICE, "backend")}, "w",
                       absl::InfinitePast());
  };
  EXPECT_EQ(go(a).outcome, ActionDispatcher::Outcome::kSent);
  const auto rb = go(b);
  const auto rc = go(c);
  ASSERT_EQ(rb.outcome, ActionDispatcher::Outcome::kRateLimited);
  ASSERT_EQ(rc.outcome, ActionDispatcher::Outcome::kRateLimited);
  EXPECT_LT(rb.retry_after, rc.retry_after) << "the first turned away is the first served";
  // Retrying early changes nothing: still limited, told the same time.
  const auto again = go(c);
  EXPECT_EQ(again.outcome, ActionDispatcher::Outcome::kRateLimited);
  EXPECT_EQ(again.retry_after, rc.retry_after);
  clock_.Advance(rb.retry_after);
  EXPECT_EQ(go(b).outcome, ActionDispatcher::Outcome::kSent);
  clock_.Advance(rc.retry_after - rb.retry_after);
  EXPECT_EQ(go(c).outcome, ActionDispatcher::Outcome::kSent);
}

TEST_F(DispatcherTest, ResendsUnansweredActionsWithTheSameId) {
  auto d = Make();
  hub_.SetConnected(false);
  EXPECT_EQ(d->Dispatch(kKey, {Planned(v1::ACTION_KIND_RESTART_SERVICE, "backend")}, "w",
                        absl::InfinitePast())
                .outcome,
            ActionDispatcher::Outcome::kPending);
  hub_.SetConnected(true);
  d->ResendPending("h1", {"shop"});
  ASSERT_EQ(hub_.actions().size(), 2u);
  EXPECT_EQ(hub_.actions()[0].id(), hub_.actions()[1].id());
  // Answered: not resent again. A restarted dispatcher loads the same from the store.
  d->OnResult("h1", Succeeded(hub_.actions()[0], clock_.Now()));
  d->ResendPending("h1", {"shop"});
  EXPECT_EQ(hub_.actions().size(), 2u);
  auto reloaded = Make();
  ASSERT_TRUE(reloaded->Load({kKey}).ok());
  ASSERT_EQ(reloaded->HistoryOf(kKey)->size(), 1u);
  EXPECT_FALSE(reloaded->HistoryOf(kKey)->at(0).result().id().empty());
}

// Defect: per-key history kept 300 records with their 8 KiB outputs, the id index was never
// pruned, and a manual action whose result never came leaked its waiter.
TEST_F(DispatcherTest, MemoryStaysBoundedAndOutputsLiveOnlyInTheStore) {
  DispatcherOptions options;
  options.keep_per_target = 8;
  options.keep_for = absl::Minutes(1);
  auto d = Make(options);
  const std::string big(8 << 10, 'x');
  for (int i = 0; i < 500; ++i) {
    clock_.Advance(absl::Seconds(10));
    auto r = d->Dispatch(kKey, {Planned(v1::ACTION_KIND_COLLECT_LOGS, "backend")}, "w",
                         absl::InfinitePast());
    ASSERT_EQ(r.outcome, ActionDispatcher::Outcome::kSent) << i;
    d->OnResult("h1", Succeeded(r.record.action(), clock_.Now(), big));
  }
  const History h = d->HistoryOf(kKey);
  EXPECT_LE(h->size(), 8u);
  EXPECT_EQ(d->IndexedActions(), h->size());
  for (const auto& r : *h) {
    EXPECT_TRUE(r.result().output().empty());
    EXPECT_TRUE(r.why().empty());
  }
  EXPECT_EQ(store_->GetAction(h->back().action().id())->result().output(), big);
  // A repair that worked ends the streak: older records of that target are not needed.
  for (int i = 0; i < 20; ++i) {
    clock_.Advance(absl::Seconds(10));
    auto r = d->Dispatch(kKey, {Planned(v1::ACTION_KIND_RESTART_SERVICE, "frontend")}, "w",
                         absl::InfinitePast());
    ASSERT_EQ(r.outcome, ActionDispatcher::Outcome::kSent) << i;
    d->OnResult("h1", Succeeded(r.record.action(), clock_.Now()));
  }
  v1::Stack stack;
  stack.mutable_spec()->add_services()->set_name("frontend");
  v1::StackObservation healthy;
  *healthy.mutable_observed_at() = ToProto(clock_.Now() + absl::Seconds(1));
  v1::ServiceObservation* svc = healthy.add_services();
  svc->set_name("frontend");
  svc->set_exists(true);
  svc->set_running(true);
  svc->set_health(v1::HEALTH_STATE_HEALTHY);
  d->Verify(kKey, stack, healthy, v1::Diagnosis());
  clock_.Advance(absl::Minutes(5));
  d->Prune();
  int frontend = 0;
  for (const auto& r : *d->HistoryOf(kKey)) frontend += r.action().target() == "frontend";
  EXPECT_EQ(frontend, 1) << "only the fix is needed once it held";
  // A manual action nobody answers: the waiter is gone after the wait.
  v1::Action manual;
  manual.set_kind(v1::ACTION_KIND_COLLECT_LOGS);
  manual.set_target("backend");
  auto sent = d->SendManual(kKey, manual);
  ASSERT_TRUE(sent.ok());
  EXPECT_EQ(d->ManualWaiters(), 1u);
  const v1::ActionRecord rec = d->AwaitManual(*sent, absl::Milliseconds(5));
  EXPECT_TRUE(rec.result().id().empty());
  EXPECT_EQ(d->ManualWaiters(), 0u);
  // A late answer finds no waiter and leaks nothing.
  d->OnResult("h1", Succeeded(sent->action(), clock_.Now()));
  EXPECT_EQ(d->ManualWaiters(), 0u);
}

TEST_F(DispatcherTest, ManualActionGetsItsResult) {
  auto d = Make();
  v1::Action manual;
  manual.set_kind(v1::ACTION_KIND_RESTART_SERVICE);
  manual.set_target("backend");
  auto sent = d->SendManual(kKey, manual);
  ASSERT_TRUE(sent.ok());
  std::thread agent([&] { d->OnResult("h1", Succeeded(sent->action(), clock_.Now(), "ok")); });
  const v1::ActionRecord rec = d->AwaitManual(*sent, absl::Seconds(10));
  agent.join();
  EXPECT_EQ(rec.result().outcome(), v1::ACTION_OUTCOME_SUCCEEDED);
  EXPECT_TRUE(rec.manual());
}

TEST_F(DispatcherTest, ResultFromAnotherHostIsIgnored) {
  auto d = Make();
  d->Dispatch(kKey, {Planned(v1::ACTION_KIND_RESTART_SERVICE, "backend")}, "w",
              absl::InfinitePast());
  EXPECT_TRUE(d->OnResult("h2", Succeeded(hub_.actions()[0], clock_.Now())).stack.empty());
  EXPECT_TRUE(d->HistoryOf(kKey)->at(0).result().id().empty());
}

}  // namespace
}  // namespace upkeep::controller

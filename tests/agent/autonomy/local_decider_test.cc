// The agent's own closed loop (autonomy, standalone) in simulated time: the same Diagnose and
// policy as the controller, on this host's targets only, ids that cannot collide with the
// controller's, budgets counted across the controller's history from the journal, pause and
// dry-run as last known, and a bounded hand-back.
#include "agent/autonomy/local_decider.h"

#include <deque>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "core/clock.h"
#include "core/manifest/loader.h"
#include "core/proto_time.h"
#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace upkeep::agent {
namespace {

namespace v1 = upkeep::v1;
using upkeep::testing::WaitFor;

v1::Stack Shop(int budget = 5) {
  v1::Stack s;
  s.mutable_metadata()->set_name("shop");
  s.mutable_spec()->add_hosts("h1");
  s.mutable_spec()->set_runtime(v1::RUNTIME_KIND_PROCESS);
  v1::ServiceSpec* api = s.mutable_spec()->add_services();
  api->set_name("api");
  api->set_port(8080);
  api->mutable_process()->add_command("/bin/true");
  api->mutable_probe()->mutable_http()->set_path("/health");
  s.mutable_spec()->mutable_policy()->mutable_restart_budget()->set_max(budget);
  manifest::ApplyDefaults(&s);
  // No backoff between attempts: the test steps time itself.
  *s.mutable_spec()->mutable_policy()->mutable_backoff()->mutable_initial() =
      ToProto(absl::ZeroDuration());
  *s.mutable_spec()->mutable_policy()->mutable_backoff()->mutable_max() =
      ToProto(absl::ZeroDuration());
  return s;
}

v1::Stack Elsewhere() {
  v1::Stack s = Shop();
  s.mutable_metadata()->set_name("other");
  s.mutable_spec()->set_hosts(0, "h2");
  return s;
}

v1::DesiredState Desired(std::vector<v1::Stack> stacks, bool host_paused = false) {
  v1::DesiredState d;
  d.set_revision(7);
  d.set_host_paused(host_paused);
  for (auto& s : stacks) *d.add_stacks() = s;
  return d;
}

// A test's view of the agent's action worker.
struct Actions {
  absl::Mutex mu;
  std::deque<v1::Action> sent;
  void Push(const v1::Action& a) {
    absl::MutexLock lock(&mu);
    sent.push_back(a);
  }
  size_t size() {
    absl::MutexLock lock(&mu);
    return sent.size();
  }
  v1::Action at(size_t i) {
    absl::MutexLock lock(&mu);
    return sent.at(i);
  }
};

v1::StackObservation Observed(const std::string& stack, bool running, absl::Time now) {
  v1::StackObservation o;
  o.set_stack(stack);
  o.mutable_host()->set_host_id("h1");
  o.mutable_host()->set_agent_connected(true);
  *o.mutable_observed_at() = ToProto(now);
  v1::ServiceObservation* s = o.add_services();
  s->set_name("api");
  s->set_exists(true);
  s->set_running(running);
  if (running) {
    s->set_health(v1::HEALTH_STATE_HEALTHY);
    s->mutable_probe()->set_ok(true);
    s->mutable_probe()->set_status_code(200);
  } else {
    s->set_exit_code(137);
  }
  return o;
}

v1::ActionResult Succeeded(const v1::Action& a, absl::Time now) {
  v1::ActionResult r;
  r.set_id(a.id());
  r.set_kind(a.kind());
  r.set_target(a.target());
  r.set_stack(a.stack());
  r.set_outcome(v1::ACTION_OUTCOME_SUCCEEDED);
  r.set_message("done");
  *r.mutable_started_at() = ToProto(now);
  *r.mutable_finished_at() = ToProto(now);
  return r;
}

struct Fixture {
  explicit Fixture(const v1::DesiredState& desired, std::vector<v1::ActionResult> seed = {}) {
    LocalDeciderOptions o;
    o.data_dir = dir.path();
    o.host_id = "h1";
    o.clock = &clock;
    o.resync = absl::Milliseconds(20);
    o.send_action = [this](const v1::Action& a) { actions.Push(a); };
    auto d = LocalDecider::Create(o, desired, seed);
    EXPECT_TRUE(d.ok()) << d.status();
    decider = std::move(*d);
    decider->Start();
  }
  // One crash, answered: returns whether an action was decided for it.
  bool CrashAndHeal() {
    const size_t before = actions.size();
    decider->OnObservation(Observed("shop", false, clock.Now()));
    if (!WaitFor([&] { return actions.size() > before; }, absl::Seconds(2))) return false;
    const v1::Action a = actions.at(before);
    clock.Advance(absl::Milliseconds(10));
    decider->OnActionResult(Succeeded(a, clock.Now()));
    clock.Advance(absl::Milliseconds(10));
    decider->OnObservation(Observed("shop", true, clock.Now()));
    clock.Advance(absl::Seconds(1));
    return true;
  }
  upkeep::testing::TempDir dir;
  SimulatedClock clock;
  Actions actions;
  std::unique_ptr<LocalDecider> decider;
};

TEST(LocalDecider, StartsACrashedServiceWithAnAutonomousIdOfItsOwn) {
  Fixture f(Desired({Shop()}));
  const absl::Time since = f.clock.Now();
  f.decider->OnObservation(Observed("shop", false, f.clock.Now()));
  ASSERT_TRUE(WaitFor([&] { return f.actions.size() == 1; }));
  const v1::Action a = f.actions.at(0);
  EXPECT_EQ(a.kind(), v1::ACTION_KIND_START_SERVICE);
  EXPECT_EQ(a.target(), "api");
  EXPECT_TRUE(a.autonomous());
  EXPECT_TRUE(absl::StartsWith(a.id(), "auto-h1-")) << a.id();
  f.decider->OnActionResult(Succeeded(a, f.clock.Now()));
  f.decider->OnObservation(Observed("shop", true, f.clock.Now()));
  f.decider->Stop();
  const v1::Handback hb = f.decider->Handback(since);
  ASSERT_EQ(hb.actions_size(), 1);
  EXPECT_EQ(hb.actions(0).action().id(), a.id());
  EXPECT_EQ(hb.actions(0).result().outcome(), v1::ACTION_OUTCOME_SUCCEEDED);
  bool detected = false;
  for (const auto& e : hb.events()) detected |= e.reason() == "Detected";
  EXPECT_TRUE(detected);
}

TEST(LocalDecider, DecidesOnlyForItsOwnHost) {
  Fixture f(Desired({Elsewhere()}));
  f.decider->OnObservation(Observed("other", false, f.clock.Now()));
  f.decider->OnObservation(Observed("shop", false, f.clock.Now()));
  // Nothing to wait on that would come: the store holds no stack of another host.
  auto stacks = f.decider->store()->ListStacks();
  ASSERT_TRUE(stacks.ok());
  EXPECT_TRUE(stacks->empty());
  EXPECT_EQ(f.actions.size(), 0u);
}

TEST(LocalDecider, ARestartBudgetStopsACrashLoop) {
  Fixture f(Desired({Shop(/*budget=*/3)}));
  int healed = 0;
  for (int i = 0; i < 6 && f.CrashAndHeal(); ++i) ++healed;
  EXPECT_EQ(healed, 3) << "three starts, then crash-looping: no more";
  auto events = f.decider->store()->ListEvents("shop", 0, 1000);
  ASSERT_TRUE(events.ok());
  bool looping = false;
  for (const auto& e : *events) looping |= e.reason() == "CrashLooping";
  EXPECT_TRUE(looping);
}

TEST(LocalDecider, CountsTheControllersActionsFromTheJournalAgainstTheBudget) {
  // The controller restarted api twice just before the partition; the budget is 3.
  SimulatedClock seed_clock;
  std::vector<v1::ActionResult> seed;
  for (int i = 0; i < 2; ++i) {
    v1::Action a;
    a.set_id("ctrl-" + std::to_string(i));
    a.set_kind(v1::ACTION_KIND_START_SERVICE);
    a.set_target("api");
    a.set_stack("shop");
    seed.push_back(Succeeded(a, seed_clock.Now() - absl::Seconds(30 - i)));
  }
  Fixture f(Desired({Shop(/*budget=*/3)}), seed);
  int healed = 0;
  for (int i = 0; i < 4 && f.CrashAndHeal(); ++i) ++healed;
  EXPECT_EQ(healed, 1);
}

TEST(LocalDecider, HonoursPauseAsLastKnown) {
  v1::Stack s = Shop();
  s.mutable_status()->set_paused(true);
  Fixture f(Desired({s}));
  f.decider->OnObservation(Observed("shop", false, f.clock.Now()));
  // The decision is recorded (plan, not act): wait for the key's diagnosis to be stored.
  ASSERT_TRUE(WaitFor([&] {
    auto st = f.decider->reconciler()->GetStack("shop");
    return st.ok() && st->status().diagnoses_size() > 0;
  }));
  EXPECT_EQ(f.actions.size(), 0u);
}

TEST(LocalDecider, HonoursDryRunAsLastKnown) {
  v1::Stack s = Shop();
  s.mutable_spec()->mutable_policy()->set_mode(v1::POLICY_MODE_DRY_RUN);
  Fixture f(Desired({s}));
  f.decider->OnObservation(Observed("shop", false, f.clock.Now()));
  ASSERT_TRUE(WaitFor([&] {
    auto recs = f.decider->store()->ListActions("shop", "h1", 10);
    return recs.ok() && !recs->empty() && (*recs)[0].dry_run();
  }));
  EXPECT_EQ(f.actions.size(), 0u);
}

TEST(LocalDecider, AnActionDecidedButNeverStartedIsHandedBackAsNotRun) {
  Fixture f(Desired({Shop()}));
  const absl::Time since = f.clock.Now();
  f.decider->OnObservation(Observed("shop", false, f.clock.Now()));
  ASSERT_TRUE(WaitFor([&] { return f.actions.size() == 1; }));
  f.decider->Stop();
  const v1::Handback hb = f.decider->Handback(since);
  ASSERT_EQ(hb.actions_size(), 1);
  EXPECT_EQ(hb.actions(0).result().outcome(), v1::ACTION_OUTCOME_FAILED);
  EXPECT_NE(hb.actions(0).result().message().find("not run"), std::string::npos);
}

TEST(LocalDecider, TheHandbackIsBoundedAndCountsWhatItDropped) {
  Fixture f(Desired({Shop(/*budget=*/10)}));
  const absl::Time since = f.clock.Now();
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(f.CrashAndHeal());
  f.decider->Stop();
  HandbackLimits limits;
  limits.max_actions = 2;
  limits.max_events = 3;
  const v1::Handback hb = f.decider->Handback(since, limits);
  EXPECT_EQ(hb.actions_size(), 2);
  EXPECT_EQ(hb.dropped_actions(), 2);
  EXPECT_EQ(hb.events_size(), 3);
  EXPECT_GT(hb.dropped_events(), 0);
  // The newest are kept.
  EXPECT_EQ(hb.actions(1).action().id(), f.actions.at(3).id());
}

}  // namespace
}  // namespace upkeep::agent

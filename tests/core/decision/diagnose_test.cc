// The decision tree, branch by branch: each case is an observation (and history) of the demo
// stack and the path step and actions the runbook says it should lead to.
#include "core/decision/diagnose.h"

#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "core/clock.h"
#include "core/manifest/loader.h"
#include "core/policy/policy.h"
#include "core/proto_time.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace upkeep::decision {
namespace {

namespace v1 = upkeep::v1;

constexpr char kStack[] = R"(
apiVersion: upkeep/v1
kind: Stack
metadata: {name: demo}
spec:
  hosts: [h1]
  runtime: process
  services:
    - name: db
      process: {command: [db]}
      port: 5432
    - name: backend
      process: {command: [backend]}
      port: 8002
      probe: {http: {path: /health}}
      dependsOn: [db]
    - name: frontend
      process: {command: [frontend]}
      port: 3000
      probe: {http: {path: /}}
  proxy:
    nginx: {config: /etc/nginx/nginx.conf, proxyReadTimeout: 5s}
    routes:
      - {path: /api/, upstream: backend, probe: {url: "http://127.0.0.1/api/health"}}
      - {path: /, upstream: frontend, probe: {url: "http://127.0.0.1/"}}
  policy: {restartBudget: {max: 3, window: 10m}, backoff: {initial: 1s, max: 1m}}
)";

const absl::Time kNow = absl::FromUnixSeconds(1800000000);

v1::Stack Stack(const std::string& patch = "") {
  auto r = manifest::LoadString(kStack, "test.yaml");
  EXPECT_TRUE(r.ok()) << (r.errors.empty() ? "" : r.errors[0].ToString());
  v1::Stack s = r.stacks.at(0);
  if (patch == "dry-run") s.mutable_spec()->mutable_policy()->set_mode(v1::POLICY_MODE_DRY_RUN);
  return s;
}

v1::ProbeResult Ok(int status = 200) {
  v1::ProbeResult p;
  p.set_ok(true);
  p.set_status_code(status);
  *p.mutable_at() = ToProto(kNow);
  *p.mutable_latency() = ToProto(absl::Milliseconds(2));
  return p;
}

v1::ProbeResult Fail(int status, const std::string& error) {
  v1::ProbeResult p;
  p.set_ok(false);
  p.set_status_code(status);
  p.set_error(error);
  *p.mutable_at() = ToProto(kNow);
  *p.mutable_latency() = ToProto(absl::Milliseconds(3));
  return p;
}

// Everything healthy.
v1::StackObservation Healthy() {
  v1::StackObservation o;
  o.set_stack("demo");
  o.mutable_host()->set_host_id("h1");
  o.mutable_host()->set_agent_connected(true);
  *o.mutable_observed_at() = ToProto(kNow);
  for (const auto& [name, port] : std::vector<std::pair<std::string, int>>{
           {"db", 5432}, {"backend", 8002}, {"frontend", 3000}}) {
    v1::ServiceObservation* s = o.add_services();
    s->set_name(name);
    s->set_exists(true);
    s->set_running(true);
    s->set_pid(100);
    s->set_health(v1::HEALTH_STATE_HEALTHY);
    *s->mutable_probe() = Ok();
    *s->mutable_started_at() = ToProto(kNow - absl::Hours(1));
    v1::ListenSocket* l = s->add_listening();
    l->set_address("127.0.0.1");
    l->set_port(port);
  }
  o.mutable_proxy()->set_master_running(true);
  o.mutable_proxy()->set_master_pid(10);
  for (const char* path : {"/api/", "/"}) {
    v1::RouteObservation* r = o.mutable_proxy()->add_routes();
    r->set_path(path);
    *r->mutable_probe() = Ok();
  }
  return o;
}

v1::ServiceObservation* Svc(v1::StackObservation* o, const std::string& name) {
  for (auto& s : *o->mutable_services()) {
    if (s.name() == name) return &s;
  }
  return nullptr;
}

v1::RouteObservation* Route(v1::StackObservation* o, const std::string& path) {
  for (auto& r : *o->mutable_proxy()->mutable_routes()) {
    if (r.path() == path) return &r;
  }
  return nullptr;
}

v1::ActionRecord Record(v1::ActionKind kind, const std::string& target, absl::Time at,
                        v1::Verification verification = v1::VERIFICATION_NOT_FIXED) {
  v1::ActionRecord r;
  r.mutable_action()->set_id(absl::StrCat(target, absl::ToUnixNanos(at)));
  r.mutable_action()->set_kind(kind);
  r.mutable_action()->set_target(target);
  *r.mutable_requested_at() = ToProto(at);
  r.mutable_result()->set_id(r.action().id());
  r.mutable_result()->set_outcome(v1::ACTION_OUTCOME_SUCCEEDED);
  *r.mutable_result()->mutable_finished_at() = ToProto(at + absl::Milliseconds(10));
  r.set_verification(verification);
  return r;
}

std::string Actions(const v1::Diagnosis& d) {
  std::vector<std::string> out;
  for (const auto& a : d.actions()) {
    out.push_back(absl::StrCat(v1::ActionKind_Name(a.action().kind()).substr(12), ":",
                               a.action().target(), ":",
                               v1::PolicyVerdict_Name(a.policy()).substr(15)));
  }
  return absl::StrJoin(out, ",");
}

bool HasStep(const v1::Diagnosis& d, const std::string& step, const std::string& target = "") {
  for (const auto& n : d.path()) {
    if (n.step() == step && (target.empty() || n.target() == target)) return true;
  }
  return false;
}

bool HasFinding(const v1::Diagnosis& d, const std::string& code) {
  for (const auto& f : d.findings()) {
    if (f.code() == code) return true;
  }
  return false;
}

struct Case {
  std::string name;
  std::function<void(v1::StackObservation*)> observe;
  std::vector<v1::ActionRecord> history;
  v1::Verdict verdict;
  std::string step;     // a path step that must be present
  std::string actions;  // KIND:target:POLICY,...
  std::string finding;  // a finding code that must be present, if any
};

class DiagnoseBranches : public ::testing::TestWithParam<Case> {};

TEST_P(DiagnoseBranches, FollowsTheRunbook) {
  const Case& c = GetParam();
  v1::StackObservation o = Healthy();
  c.observe(&o);
  const v1::Diagnosis d = Diagnose(Stack(), o, c.history, kNow);
  EXPECT_EQ(d.verdict(), c.verdict) << d.DebugString();
  EXPECT_TRUE(HasStep(d, c.step)) << "missing step " << c.step << "\n" << d.DebugString();
  EXPECT_EQ(Actions(d), c.actions) << d.DebugString();
  if (!c.finding.empty()) {
    EXPECT_TRUE(HasFinding(d, c.finding)) << d.DebugString();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Runbook, DiagnoseBranches,
    ::testing::Values(
        Case{"AllHealthy",
             [](v1::StackObservation*) {},
             {},
             v1::VERDICT_HEALTHY,
             "route.ok",
             "",
             ""},
        Case{"AgentDisconnectedIsUnknown",
             [](v1::StackObservation* o) { o->mutable_host()->set_agent_connected(false); },
             {},
             v1::VERDICT_UNKNOWN,
             "agent.connected",
             "",
             ""},
        Case{"StaleObservationIsUnknown",
             [](v1::StackObservation* o) {
               *o->mutable_observed_at() = ToProto(kNow - absl::Minutes(5));
               Svc(o, "backend")->set_running(false);
             },
             {},
             v1::VERDICT_UNKNOWN,
             "observation.fresh",
             "",
             ""},
        Case{"ProxyDownTestsThenStarts",
             [](v1::StackObservation* o) { o->mutable_proxy()->set_master_running(false); },
             {},
             v1::VERDICT_REPAIRING,
             "proxy.config_valid",
             "TEST_PROXY_CONFIG:nginx:ALLOWED,START_PROXY:nginx:ALLOWED",
             ""},
        Case{"ProxyDownWithInvalidConfigAlerts",
             [](v1::StackObservation* o) {
               o->mutable_proxy()->set_master_running(false);
               auto* t = o->mutable_proxy()->mutable_last_config_test();
               t->set_ran(true);
               t->set_ok(false);
               t->set_output("nginx: [emerg] unknown directive");
               *t->mutable_at() = ToProto(kNow);
             },
             {},
             v1::VERDICT_DEGRADED,
             "proxy.config_valid",
             "",
             "ConfigInvalid"},
        Case{"StoppedBackendIsStarted",
             [](v1::StackObservation* o) {
               Svc(o, "backend")->set_running(false);
               Svc(o, "backend")->set_exit_code(137);
               Route(o, "/api/")->mutable_probe()->CopyFrom(Fail(502, "http 502"));
             },
             {},
             v1::VERDICT_REPAIRING,
             "service.running",
             "START_SERVICE:backend:ALLOWED",
             ""},
        Case{"UnhealthyBackendLogsThenRestart",
             [](v1::StackObservation* o) {
               auto* s = Svc(o, "backend");
               s->set_health(v1::HEALTH_STATE_UNHEALTHY);
               *s->mutable_probe() = Fail(0, "timeout");
             },
             {},
             v1::VERDICT_REPAIRING,
             "service.healthy",
             "COLLECT_LOGS:backend:ALLOWED,RESTART_SERVICE:backend:ALLOWED",
             ""},
        Case{"StartingServiceIsWaitedFor",
             [](v1::StackObservation* o) {
               Svc(o, "frontend")->set_health(v1::HEALTH_STATE_STARTING);
             },
             {},
             v1::VERDICT_WAITING,
             "service.healthy",
             "",
             ""},
        Case{"DependentOfDownServiceIsNotRestarted",
             [](v1::StackObservation* o) {
               Svc(o, "db")->set_running(false);
               Svc(o, "backend")->set_health(v1::HEALTH_STATE_UNHEALTHY);
             },
             {},
             v1::VERDICT_REPAIRING,
             "service.dependency_down",
             "START_SERVICE:db:ALLOWED",
             ""},
        Case{"UpstreamHealthyRouteFailingReloads",
             [](v1::StackObservation* o) {
               Route(o, "/api/")->mutable_probe()->CopyFrom(Fail(502, "http 502"));
             },
             {},
             v1::VERDICT_REPAIRING,
             "proxy.reaches_upstreams",
             "RELOAD_PROXY:nginx:ALLOWED",
             ""},
        Case{"StillFailingAfterReloadRestartsNginx",
             [](v1::StackObservation* o) {
               Route(o, "/api/")->mutable_probe()->CopyFrom(Fail(502, "http 502"));
             },
             {Record(v1::ACTION_KIND_RELOAD_PROXY, "nginx", kNow - absl::Seconds(5))},
             v1::VERDICT_REPAIRING,
             "proxy.reaches_upstreams",
             "RESTART_PROXY:nginx:ALLOWED",
             ""},
        Case{"StillFailingAfterRestartAlertsWithPortMismatch",
             [](v1::StackObservation* o) {
               Route(o, "/api/")->mutable_probe()->CopyFrom(Fail(502, "http 502"));
               auto* e = o->mutable_proxy()->add_upstream_errors();
               e->set_kind(v1::UPSTREAM_ERROR_KIND_CONNECTION_REFUSED);
               e->set_upstream("http://127.0.0.1:8003/health");
               e->set_count(4);
             },
             {Record(v1::ACTION_KIND_RELOAD_PROXY, "nginx", kNow - absl::Seconds(9)),
              Record(v1::ACTION_KIND_RESTART_PROXY, "nginx", kNow - absl::Seconds(5))},
             v1::VERDICT_DEGRADED,
             "proxy.findings",
             "",
             "PortMismatch"},
        Case{"IPv6LocalhostMismatchIsNamed",
             [](v1::StackObservation* o) {
               Route(o, "/api/")->mutable_probe()->CopyFrom(Fail(502, "http 502"));
               auto* e = o->mutable_proxy()->add_upstream_errors();
               e->set_kind(v1::UPSTREAM_ERROR_KIND_CONNECTION_REFUSED);
               e->set_upstream("http://[::1]:8002/health");
             },
             // Evidence first: named at once, with no reload or restart of nginx before.
             {},
             v1::VERDICT_DEGRADED,
             "proxy.evidence",
             "",
             "LocalhostFamilyMismatch"},
        Case{"GatewayTimeoutAlertsWithLatency",
             [](v1::StackObservation* o) {
               Route(o, "/api/")->mutable_probe()->CopyFrom(Fail(504, "http 504"));
             },
             {},
             v1::VERDICT_DEGRADED,
             "route.ok",
             "",
             "UpstreamTimeout"},
        Case{"ServiceOnWrongPortAlertsInsteadOfRestarting",
             [](v1::StackObservation* o) {
               auto* s = Svc(o, "backend");
               s->set_health(v1::HEALTH_STATE_UNHEALTHY);
               s->mutable_listening(0)->set_port(8003);
             },
             {},
             v1::VERDICT_DEGRADED,
             "service.port",
             "",
             "PortMismatch"},
        Case{"ActionInFlightIsWaitedFor",
             [](v1::StackObservation* o) { Svc(o, "backend")->set_running(false); },
             {[] {
               v1::ActionRecord r;
               r.mutable_action()->set_id("a1");
               r.mutable_action()->set_kind(v1::ACTION_KIND_START_SERVICE);
               r.mutable_action()->set_target("backend");
               *r.mutable_requested_at() = ToProto(kNow - absl::Seconds(1));
               return r;
             }()},
             v1::VERDICT_WAITING,
             "action.in_flight",
             "",
             ""},
        Case{"BackoffAfterAFailedRestart",
             [](v1::StackObservation* o) { Svc(o, "backend")->set_running(false); },
             {Record(v1::ACTION_KIND_START_SERVICE, "backend", kNow - absl::Milliseconds(500))},
             v1::VERDICT_WAITING,
             "policy",
             "",
             ""},
        Case{"BudgetExhaustedIsCrashLooping",
             [](v1::StackObservation* o) { Svc(o, "backend")->set_running(false); },
             {Record(v1::ACTION_KIND_START_SERVICE, "backend", kNow - absl::Minutes(5)),
              Record(v1::ACTION_KIND_START_SERVICE, "backend", kNow - absl::Minutes(4)),
              Record(v1::ACTION_KIND_START_SERVICE, "backend", kNow - absl::Minutes(2))},
             v1::VERDICT_DEGRADED,
             "policy",
             "",
             "CrashLooping"}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

TEST(Diagnose, DryRunPlansButMarksWouldDo) {
  v1::StackObservation o = Healthy();
  Svc(&o, "backend")->set_running(false);
  const v1::Diagnosis d = Diagnose(Stack("dry-run"), o, {}, kNow);
  EXPECT_EQ(Actions(d), "START_SERVICE:backend:DRY_RUN");
  EXPECT_NE(d.verdict(), v1::VERDICT_REPAIRING);
}

TEST(Diagnose, PausedPlansButActsOnNothing) {
  v1::StackObservation o = Healthy();
  Svc(&o, "backend")->set_running(false);
  DiagnoseOptions options;
  options.paused = true;
  const v1::Diagnosis d = Diagnose(Stack(), o, {}, kNow, options);
  EXPECT_EQ(Actions(d), "START_SERVICE:backend:PAUSED");
}

TEST(Diagnose, IsDeterministic) {
  v1::StackObservation o = Healthy();
  Svc(&o, "backend")->set_health(v1::HEALTH_STATE_UNHEALTHY);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(Diagnose(Stack(), o, {}, kNow),
                                                                 Diagnose(Stack(), o, {}, kNow)));
}

TEST(Diagnose, ResetBudgetLetsAPersonResumeACrashLoopingTarget) {
  v1::StackObservation o = Healthy();
  Svc(&o, "backend")->set_running(false);
  std::vector<v1::ActionRecord> history = {
      Record(v1::ACTION_KIND_START_SERVICE, "backend", kNow - absl::Minutes(5)),
      Record(v1::ACTION_KIND_START_SERVICE, "backend", kNow - absl::Minutes(4)),
      Record(v1::ACTION_KIND_START_SERVICE, "backend", kNow - absl::Minutes(3))};
  EXPECT_TRUE(HasFinding(Diagnose(Stack(), o, history, kNow), "CrashLooping"));
  v1::ActionRecord reset;
  reset.mutable_action()->set_kind(v1::ACTION_KIND_RESET_BUDGET);
  reset.mutable_action()->set_target("backend");
  *reset.mutable_requested_at() = ToProto(kNow - absl::Minutes(1));
  history.push_back(reset);
  EXPECT_EQ(Actions(Diagnose(Stack(), o, history, kNow)), "START_SERVICE:backend:ALLOWED");
}

TEST(Policy, RateLimitHoldsActionsPerMinute) {
  v1::Stack s = Stack();
  s.mutable_spec()->mutable_policy()->set_max_actions_per_minute(2);
  std::vector<v1::ActionRecord> history = {
      Record(v1::ACTION_KIND_RELOAD_PROXY, "nginx", kNow - absl::Seconds(20),
             v1::VERIFICATION_FIXED),
      Record(v1::ACTION_KIND_START_SERVICE, "db", kNow - absl::Seconds(10),
             v1::VERIFICATION_FIXED)};
  v1::Action a;
  a.set_kind(v1::ACTION_KIND_START_SERVICE);
  a.set_target("backend");
  EXPECT_EQ(policy::Judge(s.spec().policy(), history, a, kNow, false).policy(),
            v1::POLICY_VERDICT_RATE_LIMITED);
}

TEST(Policy, BackoffDoublesUpToItsMax) {
  v1::Stack s = Stack();
  v1::Action a;
  a.set_kind(v1::ACTION_KIND_RESTART_SERVICE);
  a.set_target("backend");
  std::vector<v1::ActionRecord> history;
  absl::Time t = kNow;
  // After k failed attempts the next waits 1s * 2^(k-1), capped at 1m.
  for (int k = 1; k <= 8; ++k) {
    history.push_back(Record(v1::ACTION_KIND_RESTART_SERVICE, "backend", t));
    history.back().mutable_action()->set_target("backend");
    const v1::PlannedAction p = policy::Judge(s.spec().policy(), history, a, t, false);
    ASSERT_EQ(p.policy(), v1::POLICY_VERDICT_BACKOFF);
    const absl::Duration wait = FromProto(p.not_before()) - t;
    EXPECT_EQ(wait, std::min(absl::Seconds(1) * (1 << (k - 1)), absl::Minutes(1))) << k;
    t += absl::Hours(1);  // outside the budget window, so only backoff speaks
    history.back().clear_requested_at();
  }
}

// A service that crashes every time it starts, for a simulated day: the restarts in any
// window never exceed the budget, and once crash-looping it stays so (one alert state).
TEST(Policy, CrashLoopForASimulatedDayNeverExceedsTheBudget) {
  const v1::Stack stack = Stack();
  SimulatedClock clock(kNow);
  std::vector<v1::ActionRecord> history;
  std::vector<absl::Time> starts;
  int crash_looping_diagnoses = 0;
  const absl::Time end = kNow + absl::Hours(24);
  while (clock.Now() < end) {
    v1::StackObservation o = Healthy();
    *o.mutable_observed_at() = ToProto(clock.Now());
    Svc(&o, "backend")->set_running(false);  // it died again
    const v1::Diagnosis d = Diagnose(stack, o, history, clock.Now());
    if (HasFinding(d, "CrashLooping")) ++crash_looping_diagnoses;
    for (const auto& a : d.actions()) {
      if (a.policy() != v1::POLICY_VERDICT_ALLOWED) continue;
      history.push_back(Record(a.action().kind(), a.action().target(), clock.Now()));
      starts.push_back(clock.Now());
    }
    clock.Advance(absl::Seconds(1));
  }
  const absl::Duration window = absl::Minutes(10);
  for (size_t i = 0; i < starts.size(); ++i) {
    int in_window = 0;
    for (size_t j = i; j < starts.size() && starts[j] < starts[i] + window; ++j) ++in_window;
    ASSERT_LE(in_window, 3) << "budget exceeded at start " << i;
  }
  // At most 3 per 10 minutes over a day.
  EXPECT_LE(starts.size(), 3u * 6 * 24);
  EXPECT_GT(crash_looping_diagnoses, 0);
}

}  // namespace
}  // namespace upkeep::decision

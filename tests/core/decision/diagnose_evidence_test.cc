// The branches that weigh the freshness and kind of the agent's evidence (issue 11): health
// judged on an earlier process, slow versus hung, timeouts logged by nginx, connections the
// upstream closed, and an address nginx dialled that is no longer the container's.
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/decision/diagnose.h"
#include "core/manifest/loader.h"
#include "core/proto_time.h"
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

const v1::Finding* FindingOf(const v1::Diagnosis& d, const std::string& code) {
  for (const auto& f : d.findings()) {
    if (f.code() == code) return &f;
  }
  return nullptr;
}

// Every node's evidence, "step[target] key=value ..." one node a line: what `upkeepctl explain`
// prints beneath each step (made lazily and kept in a Trace before it becomes the message).
std::string PathEvidence(const v1::Diagnosis& d) {
  std::string out;
  for (const auto& n : d.path()) {
    absl::StrAppend(&out, n.step(), "[", n.target(), "] ", n.decision(), ":");
    const std::map<std::string, std::string> ev(n.evidence().begin(), n.evidence().end());
    for (const auto& [k, v] : ev) absl::StrAppend(&out, " ", k, "=", v);
    out += "\n";
  }
  return out;
}

TEST(DiagnoseEvidence, EveryStepOfAHealthyStackCarriesItsEvidence) {
  v1::StackObservation o = Healthy();
  *o.mutable_observed_at() = ToProto(kNow - absl::Milliseconds(40));
  *Svc(&o, "backend")->mutable_probe()->mutable_latency() = ToProto(absl::Milliseconds(3));
  Route(&o, "/")->mutable_probe()->set_status_code(200);
  *Route(&o, "/")->mutable_probe()->mutable_latency() = ToProto(absl::Milliseconds(12));
  *Route(&o, "/api/")->mutable_probe()->mutable_latency() = ToProto(absl::Milliseconds(7));
  const v1::Diagnosis d = Diagnose(Stack(), o, {}, kNow);
  EXPECT_EQ(PathEvidence(d),
            "agent.connected[h1] yes:\n"
            "observation.fresh[] yes: age=40ms stale_after=15000ms\n"
            "action.in_flight[] no:\n"
            "proxy.running[nginx] yes: master_pid=10\n"
            "service.healthy[db] yes: latency=2ms\n"
            "service.healthy[backend] yes: latency=3ms\n"
            "service.healthy[frontend] yes: latency=2ms\n"
            "route.ok[/api/] yes: latency=7ms status=200\n"
            "route.ok[/] yes: latency=12ms status=200\n");
}

TEST(DiagnoseEvidence, AnUnhealthyServiceAndItsPlanCarryTheirEvidence) {
  v1::StackObservation o = Healthy();
  auto* s = Svc(&o, "backend");
  s->set_health(v1::HEALTH_STATE_UNHEALTHY);
  s->set_consecutive_failures(3);
  *s->mutable_probe() = Fail(500, "status 500");
  const v1::Diagnosis d = Diagnose(Stack(), o, {}, kNow);
  const std::string text = PathEvidence(d);
  EXPECT_NE(text.find("service.healthy[backend] no: unhealthy: consecutive_failures=3 "
                      "probe=status 500 status=500\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("policy[backend] POLICY_VERDICT_ALLOWED: reason="), std::string::npos)
      << text;
}

TEST(DiagnoseEvidence, AnUnhealthyVerdictFromBeforeTheRestartIsNotActedOn) {
  v1::StackObservation o = Healthy();
  auto* s = Svc(&o, "backend");
  *s->mutable_started_at() = ToProto(kNow - absl::Milliseconds(80));
  s->set_health(v1::HEALTH_STATE_UNHEALTHY);
  *s->mutable_probe() = Fail(0, "timeout");
  *s->mutable_probe()->mutable_at() = ToProto(kNow - absl::Milliseconds(900));
  const v1::Diagnosis d = Diagnose(Stack(), o, {}, kNow);
  EXPECT_EQ(d.verdict(), v1::VERDICT_WAITING) << d.DebugString();
  EXPECT_EQ(Actions(d), "") << d.DebugString();
  // An observation from before our own restart finished (old start, old probe) waits too.
  v1::StackObservation old = Healthy();
  auto* b = Svc(&old, "backend");
  b->set_health(v1::HEALTH_STATE_UNHEALTHY);
  *b->mutable_probe() = Fail(0, "timeout");
  *b->mutable_probe()->mutable_at() = ToProto(kNow - absl::Milliseconds(300));
  const v1::ActionRecord restart =
      Record(v1::ACTION_KIND_RESTART_SERVICE, "backend", kNow - absl::Milliseconds(200));
  EXPECT_EQ(Actions(Diagnose(Stack(), old, {restart}, kNow)), "");
  // The same failure seen on a probe of the current process is acted on.
  *s->mutable_probe()->mutable_at() = ToProto(kNow - absl::Milliseconds(10));
  EXPECT_EQ(Actions(Diagnose(Stack(), o, {}, kNow)),
            "COLLECT_LOGS:backend:ALLOWED,RESTART_SERVICE:backend:ALLOWED");
}

TEST(DiagnoseEvidence, ASlowBackendIsAnAlertWithItsMeasuredLatencyNotARestart) {
  v1::StackObservation o = Healthy();
  auto* s = Svc(&o, "backend");
  s->set_health(v1::HEALTH_STATE_UNHEALTHY);
  *s->mutable_probe() = Fail(0, "timeout");
  *s->mutable_probe()->mutable_late_latency() = ToProto(absl::Milliseconds(2500));
  s->mutable_probe()->set_late_status_code(200);
  *s->mutable_probe()->mutable_late_at() = ToProto(kNow - absl::Seconds(3));
  const v1::Diagnosis d = Diagnose(Stack(), o, {}, kNow);
  EXPECT_EQ(d.verdict(), v1::VERDICT_DEGRADED) << d.DebugString();
  EXPECT_EQ(Actions(d), "") << d.DebugString();
  EXPECT_TRUE(HasStep(d, "service.slow"));
  const v1::Finding* f = FindingOf(d, "SlowUpstream");
  ASSERT_NE(f, nullptr) << d.DebugString();
  EXPECT_EQ(f->evidence().at("measured_latency"), "2500ms");
  EXPECT_EQ(f->evidence().at("probe_timeout"), "1000ms");
  EXPECT_EQ(f->evidence().at("proxy_read_timeout"), "5000ms");
  // Measured on the process before the last start: says nothing about this one.
  *s->mutable_started_at() = ToProto(kNow - absl::Seconds(2));
  *s->mutable_probe()->mutable_at() = ToProto(kNow - absl::Milliseconds(10));
  EXPECT_EQ(Actions(Diagnose(Stack(), o, {}, kNow)),
            "COLLECT_LOGS:backend:ALLOWED,RESTART_SERVICE:backend:ALLOWED");
}

TEST(DiagnoseEvidence, ARouteTimingOutWhileNginxLogsUpstreamTimeoutsIsNotReloaded) {
  v1::StackObservation o = Healthy();
  Route(&o, "/api/")->mutable_probe()->CopyFrom(Fail(0, "timeout"));
  auto* e = o.mutable_proxy()->add_upstream_errors();
  e->set_kind(v1::UPSTREAM_ERROR_KIND_TIMED_OUT);
  e->set_upstream("http://127.0.0.1:8002/api/health");
  e->set_count(3);
  const v1::Diagnosis d = Diagnose(Stack(), o, {}, kNow);
  EXPECT_EQ(d.verdict(), v1::VERDICT_DEGRADED) << d.DebugString();
  EXPECT_EQ(Actions(d), "") << d.DebugString();
  const v1::Finding* f = FindingOf(d, "UpstreamTimeout");
  ASSERT_NE(f, nullptr) << d.DebugString();
  EXPECT_EQ(f->evidence().at("nginx_upstream_timeouts"), "3");
  // Without nginx's word or a measurement, a timed-out route is a failing route: reload.
  o.mutable_proxy()->clear_upstream_errors();
  EXPECT_EQ(Actions(Diagnose(Stack(), o, {}, kNow)), "RELOAD_PROXY:nginx:ALLOWED");
}

TEST(DiagnoseEvidence, AnUpstreamThatResetKeepaliveConnectionsIsExplainedAndReloaded) {
  for (const auto kind :
       {v1::UPSTREAM_ERROR_KIND_CONNECTION_RESET, v1::UPSTREAM_ERROR_KIND_PREMATURELY_CLOSED}) {
    v1::StackObservation o = Healthy();
    Route(&o, "/api/")->mutable_probe()->CopyFrom(Fail(502, "http 502"));
    auto* e = o.mutable_proxy()->add_upstream_errors();
    e->set_kind(kind);
    e->set_upstream("http://127.0.0.1:8002/api/health");
    e->set_count(2);
    const v1::Diagnosis d = Diagnose(Stack(), o, {}, kNow);
    EXPECT_EQ(Actions(d), "RELOAD_PROXY:nginx:ALLOWED") << d.DebugString();
    EXPECT_NE(FindingOf(d, "UpstreamConnectionClosed"), nullptr) << d.DebugString();
    EXPECT_EQ(d.verdict(), v1::VERDICT_REPAIRING);
  }
}

TEST(DiagnoseEvidence, AnAddressThatIsNoLongerTheContainersIsNamedWithAResolverAdvice) {
  v1::StackObservation o = Healthy();
  Route(&o, "/api/")->mutable_probe()->CopyFrom(Fail(502, "http 502"));
  Svc(&o, "backend")->add_addresses("172.18.0.5");
  auto* e = o.mutable_proxy()->add_upstream_errors();
  e->set_kind(v1::UPSTREAM_ERROR_KIND_CONNECTION_REFUSED);
  e->set_upstream("http://172.18.0.3:8002/api/health");
  const v1::Diagnosis d = Diagnose(Stack(), o, {}, kNow);
  EXPECT_EQ(Actions(d), "RELOAD_PROXY:nginx:ALLOWED") << d.DebugString();
  const v1::Finding* f = FindingOf(d, "StaleUpstreamAddress");
  ASSERT_NE(f, nullptr) << d.DebugString();
  EXPECT_EQ(f->evidence().at("nginx_dials"), "172.18.0.3:8002");
  EXPECT_EQ(f->evidence().at("upstream_now_at"), "172.18.0.5");
  EXPECT_NE(f->message().find("resolver"), std::string::npos);
  // nginx dialling the container's current address is no such finding.
  e->set_upstream("http://172.18.0.5:8002/api/health");
  EXPECT_EQ(FindingOf(Diagnose(Stack(), o, {}, kNow), "StaleUpstreamAddress"), nullptr);
}

// A failed test-proxy-config whose result is back but whose observation is not yet is not sent
// again: the result itself is the evidence (it was sent 5 times in 170 ms before).
TEST(DiagnoseEvidence, AFailedConfigTestResultIsNotRetestedBeforeItsObservationArrives) {
  v1::StackObservation o = Healthy();
  o.mutable_proxy()->set_master_running(false);
  v1::ActionRecord test =
      Record(v1::ACTION_KIND_TEST_PROXY_CONFIG, "nginx", kNow - absl::Milliseconds(30));
  test.mutable_result()->set_outcome(v1::ACTION_OUTCOME_FAILED);
  test.mutable_result()->set_output("nginx: [emerg] unknown directive \"x\" in /etc/nginx/a:1");
  const v1::Diagnosis d = Diagnose(Stack(), o, {test}, kNow);
  EXPECT_EQ(Actions(d), "") << d.DebugString();
  EXPECT_EQ(d.verdict(), v1::VERDICT_DEGRADED) << d.DebugString();
  EXPECT_NE(FindingOf(d, "ConfigInvalid"), nullptr) << d.DebugString();
  // The agent re-tests once the file is fixed: a newer passing test starts nginx.
  auto* t = o.mutable_proxy()->mutable_last_config_test();
  t->set_ran(true);
  t->set_ok(true);
  *t->mutable_at() = ToProto(kNow - absl::Milliseconds(5));
  EXPECT_EQ(Actions(Diagnose(Stack(), o, {test}, kNow)),
            "TEST_PROXY_CONFIG:nginx:ALLOWED,START_PROXY:nginx:ALLOWED");
}

}  // namespace
}  // namespace upkeep::decision

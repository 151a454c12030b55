// Writes the seed corpus of controller_fuzz into DIR: valid messages of every kind, and the
// hostile ones an attacker would try first. Run by hand when the input format changes:
//   build/tests/fuzz/make_controller_seeds tests/fuzz/corpus/controller
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "tests/fuzz/controller_fuzz_format.h"
#include "upkeep/v1/agent_service.pb.h"
#include "upkeep/v1/fleet_service.pb.h"

namespace {

namespace v1 = upkeep::v1;
using upkeep::fuzz::JoinFrames;

std::string g_dir;
int g_written = 0;

void Write(const std::string& name, const std::string& input) {
  std::ofstream out(g_dir + "/" + name, std::ios::binary);
  out << input;
  ++g_written;
}

int Fleet(const std::string& method) {
  for (int i = 0; i < upkeep::fuzz::kFleetMethodCount; ++i) {
    if (method == upkeep::fuzz::kFleetMethods[i]) return i + 1;
  }
  std::abort();
}
constexpr int kAgent = 0;
constexpr int kTwoAgents = upkeep::fuzz::kSelectors - 1;

std::string Hello(const std::string& host) {
  v1::AgentMessage m;
  m.mutable_hello()->set_host_id(host);
  m.mutable_hello()->set_version("fuzz");
  m.mutable_hello()->add_capabilities("runtime.process");
  return m.SerializeAsString();
}

std::string Observation(const std::string& host, const std::string& stack, int services = 1) {
  v1::AgentMessage m;
  auto* s = m.mutable_observation()->add_stacks();
  s->set_stack(stack);
  s->mutable_host()->set_host_id(host);
  for (int i = 0; i < services; ++i) {
    auto* svc = s->add_services();
    svc->set_name(i == 0 ? "backend" : "svc-" + std::to_string(i));
    svc->set_exists(true);
    svc->set_running(i % 2 == 0);
    svc->set_exit_code(i % 2 == 0 ? 0 : 137);
    svc->set_restart_count(i);
  }
  m.mutable_observation()->set_event_driven(true);
  return m.SerializeAsString();
}

std::string Result(const std::string& id, v1::ActionOutcome outcome) {
  v1::AgentMessage m;
  auto* r = m.mutable_action_result();
  r->set_id(id);
  r->set_kind(v1::ACTION_KIND_RESTART_SERVICE);
  r->set_target("backend");
  r->set_outcome(outcome);
  r->set_message("done");
  return m.SerializeAsString();
}

const char kManifest[] = R"(apiVersion: upkeep/v1
kind: Stack
metadata: {name: shop}
spec:
  hosts: [fz-1]
  runtime: process
  services:
    - {name: backend, process: {command: [backend]}, port: 8002}
)";

std::string Apply(const std::string& content, bool dry_run = false) {
  v1::ApplyRequest r;
  r.set_dry_run(dry_run);
  auto* m = r.add_manifests();
  m->set_filename("shop.yaml");
  m->set_content(content);
  return r.SerializeAsString();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  g_dir = argv[1];
  // The stack the agent seeds talk about, so that they reach the reconciler's diagnosis.
  Write("00-fleet-apply-shop", JoinFrames(Fleet("Apply"), {Apply(kManifest)}));
  Write("fleet-apply-dry-run", JoinFrames(Fleet("Apply"), {Apply(kManifest, true)}));
  Write("fleet-apply-broken-yaml", JoinFrames(Fleet("Apply"), {Apply("spec: [\n  - {")}));
  Write("fleet-apply-no-manifests", JoinFrames(Fleet("Apply"), {std::string()}));

  // Every oneof kind on a well-behaved stream.
  Write("agent-hello", JoinFrames(kAgent, {Hello("fz-1")}));
  Write("agent-hello-observation-result",
        JoinFrames(kAgent, {Hello("fz-1"), Observation("fz-1", "shop"),
                            Result("act-unknown", v1::ACTION_OUTCOME_SUCCEEDED)}));
  Write("agent-crashed-service", JoinFrames(kAgent, {Hello("fz-1"), Observation("fz-1", "shop", 2),
                                                     Observation("fz-1", "shop", 3)}));
  // Hostile streams.
  Write("agent-no-hello", JoinFrames(kAgent, {Observation("fz-1", "shop")}));
  Write("agent-hello-twice", JoinFrames(kAgent, {Hello("fz-1"), Hello("fz-2")}));
  Write("agent-observation-for-another-host",
        JoinFrames(kAgent, {Hello("fz-1"), Observation("fz-2", "shop")}));
  Write("agent-observation-unknown-stack",
        JoinFrames(kAgent, {Hello("fz-9"), Observation("fz-9", "no-such-stack")}));
  Write("agent-observation-nameless-stack",
        JoinFrames(kAgent, {Hello("fz-1"), Observation("fz-1", "")}));
  Write("agent-result-unknown-id",
        JoinFrames(kAgent, {Hello("fz-1"), Result("no-such-action", v1::ACTION_OUTCOME_FAILED)}));
  Write("agent-result-without-id",
        JoinFrames(kAgent, {Hello("fz-1"), Result("", v1::ACTION_OUTCOME_FAILED)}));
  Write("agent-empty-message", JoinFrames(kAgent, {Hello("fz-1"), std::string()}));
  Write("agent-bad-host-id", JoinFrames(kAgent, {Hello("../etc/passwd")}));
  Write("agent-long-host-id", JoinFrames(kAgent, {Hello(std::string(300, 'h'))}));
  {
    const std::string full = Observation("fz-1", "shop", 4);
    Write("agent-truncated-observation",
          JoinFrames(kAgent, {Hello("fz-1"), full.substr(0, full.size() / 2)}));
    Write("agent-truncated-hello", JoinFrames(kAgent, {Hello("fz-1").substr(0, 5)}));
  }
  {
    v1::AgentMessage m;
    m.mutable_hello()->set_host_id("fz-1");
    m.mutable_hello()->set_version(std::string(60000, 'v'));
    Write("agent-oversized-version", JoinFrames(kAgent, {m.SerializeAsString()}));
  }
  {
    v1::AgentMessage m;
    m.mutable_hello()->set_host_id("fz-1");
    for (int i = 0; i < 6000; ++i) m.mutable_hello()->add_capabilities("c");
    Write("agent-huge-repeated-capabilities", JoinFrames(kAgent, {m.SerializeAsString()}));
  }
  {
    // ~60 KB of near-empty services: many repeated entries in one report.
    v1::AgentMessage m;
    auto* s = m.mutable_observation()->add_stacks();
    s->set_stack("shop");
    s->mutable_host()->set_host_id("fz-1");
    for (int i = 0; i < 15000; ++i) s->add_services()->set_running(true);
    Write("agent-huge-repeated-services",
          JoinFrames(kAgent, {Hello("fz-1"), m.SerializeAsString()}));
  }
  {
    v1::AgentMessage m;
    for (int i = 0; i < 3000; ++i) {
      auto* s = m.mutable_observation()->add_stacks();
      s->set_stack("s" + std::to_string(i % 7));
      s->mutable_host()->set_host_id("fz-1");
    }
    Write("agent-huge-repeated-stacks", JoinFrames(kAgent, {Hello("fz-1"), m.SerializeAsString()}));
  }
  // Two streams for one host: the second replaces the first, which goes on writing.
  Write("two-agents-same-host",
        JoinFrames(kTwoAgents, {Hello("fz-1"), Hello("fz-1"), Observation("fz-1", "shop"),
                                Observation("fz-1", "shop")}));
  Write("two-agents-hello-for-the-other",
        JoinFrames(kTwoAgents, {Hello("fz-1"), Hello("fz-2"), Observation("fz-2", "shop"),
                                Observation("fz-1", "shop")}));

  // Every FleetService method, well-formed.
  {
    v1::GetStackRequest r;
    r.set_name("shop");
    Write("fleet-get-stack", JoinFrames(Fleet("GetStack"), {r.SerializeAsString()}));
  }
  Write("fleet-list-stacks", JoinFrames(Fleet("ListStacks"), {std::string()}));
  Write("fleet-list-hosts", JoinFrames(Fleet("ListHosts"), {std::string()}));
  {
    v1::DescribeStackRequest r;
    r.set_name("shop");
    r.set_max_events(2000000000);
    r.set_max_actions(-5);
    Write("fleet-describe-extreme-limits",
          JoinFrames(Fleet("DescribeStack"), {r.SerializeAsString()}));
  }
  {
    v1::PlanRequest r;
    r.set_name("shop");
    r.set_host("fz-1");
    Write("fleet-plan", JoinFrames(Fleet("Plan"), {r.SerializeAsString()}));
    r.set_host("not-a-host-of-shop");
    Write("fleet-plan-unknown-host", JoinFrames(Fleet("Plan"), {r.SerializeAsString()}));
  }
  {
    v1::ListEventsRequest r;
    r.set_after_seq(-1);
    r.set_limit(-1);
    Write("fleet-list-events-negative", JoinFrames(Fleet("ListEvents"), {r.SerializeAsString()}));
  }
  {
    v1::WatchEventsRequest r;
    r.set_stack("shop");
    Write("fleet-watch-events", JoinFrames(Fleet("WatchEvents"), {r.SerializeAsString()}));
  }
  {
    v1::ListActionsRequest r;
    r.set_limit(2147483647);
    Write("fleet-list-actions-max", JoinFrames(Fleet("ListActions"), {r.SerializeAsString()}));
  }
  {
    v1::PauseRequest r;
    r.set_stack("shop");
    Write("fleet-pause", JoinFrames(Fleet("Pause"), {r.SerializeAsString()}));
    Write("fleet-resume", JoinFrames(Fleet("Resume"), {r.SerializeAsString()}));
    r.set_host("fz-1");
    Write("fleet-pause-stack-and-host", JoinFrames(Fleet("Pause"), {r.SerializeAsString()}));
    v1::PauseRequest none;
    Write("fleet-pause-nothing", JoinFrames(Fleet("Pause"), {none.SerializeAsString()}));
  }
  {
    v1::RunActionRequest r;
    r.set_stack("shop");
    r.set_kind(v1::ACTION_KIND_COLLECT_LOGS);
    r.set_target("backend");
    (*r.mutable_params())["tail"] = "-99999999999999999999";
    Write("fleet-run-action", JoinFrames(Fleet("RunAction"), {r.SerializeAsString()}));
    r.set_kind(static_cast<v1::ActionKind>(999));
    Write("fleet-run-action-unknown-kind", JoinFrames(Fleet("RunAction"), {r.SerializeAsString()}));
  }
  {
    v1::DeleteStackRequest r;
    r.set_name("no-such-stack");
    Write("fleet-delete-unknown", JoinFrames(Fleet("DeleteStack"), {r.SerializeAsString()}));
  }
  // A unary method half-closed with no request, and one sent garbage.
  Write("fleet-no-request", JoinFrames(Fleet("ListStacks"), {}));
  Write("fleet-garbage", JoinFrames(Fleet("GetStack"), {std::string("\xff\xff\xff\xff\x0f", 5)}));
  std::printf("%d seeds written to %s\n", g_written, g_dir.c_str());
  return 0;
}

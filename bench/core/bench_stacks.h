// The stacks the Diagnose benchmarks run on: the demo's size (2 services, 2 routes) and a big
// one (20 services in a dependency chain, 10 routes), healthy or with one service unhealthy,
// with `history` restart records (verified fixed, two hours old).
#ifndef UPKEEP_BENCH_CORE_BENCH_STACKS_H_
#define UPKEEP_BENCH_CORE_BENCH_STACKS_H_

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/manifest/loader.h"
#include "core/proto_time.h"
#include "upkeep/v1/action.pb.h"
#include "upkeep/v1/observation.pb.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::bench {

namespace v1 = upkeep::v1;

inline const absl::Time kNow = absl::FromUnixSeconds(1800000000);

struct Input {
  v1::Stack stack;
  v1::StackObservation observed;
  std::vector<v1::ActionRecord> history;
};

inline Input Make(int services, int routes, int history, bool broken) {
  std::string yaml =
      "apiVersion: upkeep/v1\nkind: Stack\nmetadata: {name: s}\nspec:\n"
      "  hosts: [h]\n  runtime: process\n  services:\n";
  for (int i = 0; i < services; ++i) {
    yaml += absl::StrCat("    - {name: s", i, ", port: ", 9000 + i,
                         ", process: {command: [x]}, probe: {http: {path: /health}}",
                         i > 0 ? absl::StrCat(", dependsOn: [s", i - 1, "]") : "", "}\n");
  }
  yaml += "  proxy:\n    nginx: {config: /etc/nginx/nginx.conf}\n    routes:\n";
  for (int i = 0; i < routes; ++i) {
    yaml += absl::StrCat("      - {path: /r", i, "/, upstream: s", i % services,
                         ", probe: {url: \"http://127.0.0.1/r", i, "/\"}}\n");
  }
  Input in;
  in.stack = upkeep::manifest::LoadString(yaml, "bench.yaml").stacks.at(0);
  v1::StackObservation& o = in.observed;
  o.set_stack("s");
  o.mutable_host()->set_host_id("h");
  o.mutable_host()->set_agent_connected(true);
  *o.mutable_observed_at() = upkeep::ToProto(kNow);
  for (int i = 0; i < services; ++i) {
    auto* s = o.add_services();
    s->set_name(absl::StrCat("s", i));
    s->set_exists(true);
    s->set_running(true);
    s->set_health(v1::HEALTH_STATE_HEALTHY);
    s->mutable_probe()->set_ok(true);
  }
  o.mutable_proxy()->set_master_running(true);
  for (int i = 0; i < routes; ++i) {
    auto* r = o.mutable_proxy()->add_routes();
    r->set_path(absl::StrCat("/r", i, "/"));
    r->mutable_probe()->set_ok(true);
    r->mutable_probe()->set_status_code(200);
  }
  if (broken) {
    o.mutable_services(services / 2)->set_health(v1::HEALTH_STATE_UNHEALTHY);
    o.mutable_services(services / 2)->mutable_probe()->set_ok(false);
  }
  for (int i = 0; i < history; ++i) {
    v1::ActionRecord r;
    r.mutable_action()->set_id(absl::StrCat("a", i));
    r.mutable_action()->set_kind(v1::ACTION_KIND_RESTART_SERVICE);
    r.mutable_action()->set_target(absl::StrCat("s", i % services));
    *r.mutable_requested_at() = upkeep::ToProto(kNow - absl::Hours(2) + absl::Seconds(i));
    r.mutable_result()->set_id(r.action().id());
    r.set_verification(v1::VERIFICATION_FIXED);
    in.history.push_back(r);
  }
  return in;
}

}  // namespace upkeep::bench

#endif  // UPKEEP_BENCH_CORE_BENCH_STACKS_H_

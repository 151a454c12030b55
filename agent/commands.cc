#include "agent/commands.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "agent/act/executor.h"
#include "agent/daemon/host.h"
#include "agent/observe/observer.h"
#include "core/decision/render.h"
#include "core/log.h"
#include "core/manifest/loader.h"
#include "core/proto_time.h"
#include "google/protobuf/util/json_util.h"

namespace upkeep::agent {
namespace {

namespace v1 = upkeep::v1;

struct Flags {
  std::string file;
  std::string stack;
  std::string data = "/var/lib/upkeep-agent";
  std::string docker_socket;
  std::string output = "json";
  std::string host_id = "local";
  std::vector<std::string> positional;
  std::vector<std::pair<std::string, std::string>> params;
};

bool ParseFlags(int argc, char** argv, Flags* f) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "upkeep-agent %s: %s needs a value\n", argv[0], a.c_str());
        return false;
      }
      *out = argv[++i];
      return true;
    };
    if (a == "-f" || a == "--file") {
      if (!value(&f->file)) return false;
    } else if (a == "--stack") {
      if (!value(&f->stack)) return false;
    } else if (a == "--data") {
      if (!value(&f->data)) return false;
    } else if (a == "--docker-socket") {
      if (!value(&f->docker_socket)) return false;
    } else if (a == "-o" || a == "--output") {
      if (!value(&f->output)) return false;
    } else if (a == "--host-id") {
      if (!value(&f->host_id)) return false;
    } else if (a == "--param") {
      std::string kv;
      if (!value(&kv)) return false;
      const size_t eq = kv.find('=');
      if (eq == std::string::npos) {
        std::fprintf(stderr, "upkeep-agent: --param wants KEY=VALUE\n");
        return false;
      }
      f->params.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "upkeep-agent %s: unknown flag %s\n", argv[0], a.c_str());
      return false;
    } else {
      f->positional.push_back(a);
    }
  }
  if (f->file.empty()) {
    std::fprintf(stderr, "upkeep-agent %s: -f STACK.yaml is required\n", argv[0]);
    return false;
  }
  return true;
}

// Loads the manifest and picks the stack (--stack, or the only one).
bool LoadStack(const Flags& f, v1::Stack* out) {
  const manifest::LoadResult r = manifest::LoadPath(f.file);
  if (!r.ok()) {
    for (const auto& e : r.errors) std::fprintf(stderr, "%s\n", e.ToString().c_str());
    return false;
  }
  for (const auto& s : r.stacks) {
    if (f.stack.empty() || s.metadata().name() == f.stack) {
      if (!f.stack.empty() || r.stacks.size() == 1) {
        *out = s;
        return true;
      }
    }
  }
  std::fprintf(stderr, "upkeep-agent: %s; use --stack NAME\n",
               f.stack.empty() ? "the manifest holds several stacks" : "no such stack");
  return false;
}

// A person's own command, not the daemon's: no --allow-exec restriction.
std::unique_ptr<Host> HostFor(const Flags& f) {
  return MakeHost({f.data, f.docker_socket, ExecPolicy{}});
}

std::string Text(const v1::StackObservation& o) {
  std::string out = absl::StrCat("stack ", o.stack(), " on host ", o.host().host_id(), " at ",
                                 absl::FormatTime(FromProto(o.observed_at())), "\n\n");
  absl::StrAppend(
      &out, absl::StrFormat("%-12s %-8s %-8s %-10s %-8s %-24s %s\n", "SERVICE", "RUNNING", "PID",
                            "HEALTH", "STATUS", "PROBE", "LISTENING"));
  for (const auto& s : o.services()) {
    std::string listening;
    for (const auto& l : s.listening())
      absl::StrAppend(&listening, l.address(), ":", l.port(), " ");
    std::string health = v1::HealthState_Name(s.health()).substr(13);
    absl::StrAppend(
        &out, absl::StrFormat(
                  "%-12s %-8s %-8d %-10s %-8d %-24s %s\n", s.name(),
                  s.running() ? "yes" : (s.exists() ? "stopped" : "missing"), s.pid(), health,
                  s.probe().status_code(),
                  s.probe().ok()
                      ? absl::StrCat(
                            "ok ", absl::ToInt64Milliseconds(FromProto(s.probe().latency())), "ms")
                      : (s.error().empty() ? s.probe().error() : s.error()),
                  listening));
  }
  const auto& p = o.proxy();
  absl::StrAppend(
      &out, "\nnginx: ",
      p.master_running() ? absl::StrCat("running (master ", p.master_pid(), ")") : "not running",
      "\n");
  for (const auto& r : p.routes()) {
    absl::StrAppend(&out, "  route ", r.path(), " -> ", r.probe().status_code(), " ",
                    r.probe().ok() ? "ok" : r.probe().error(), "\n");
  }
  for (const auto& e : p.upstream_errors()) {
    absl::StrAppend(&out, "  upstream error ", v1::UpstreamErrorKind_Name(e.kind()), " ",
                    e.upstream(), " x", e.count(), "\n");
  }
  return out;
}

}  // namespace

int RunObserveCommand(int argc, char** argv) {
  InitLogging("agent", false, spdlog::level::warn);  // stdout carries the observation
  Flags f;
  if (!ParseFlags(argc, argv, &f)) return 2;
  v1::Stack stack;
  if (!LoadStack(f, &stack)) return 1;
  std::unique_ptr<Host> host = HostFor(f);
  auto observer = StackObserver::Create({f.host_id, f.data}, &host->runtimes, &host->proxies);
  if (!observer.ok()) {
    std::fprintf(stderr, "upkeep-agent observe: %s\n",
                 std::string(observer.status().message()).c_str());
    return 1;
  }
  const v1::StackObservation o = (*observer)->ObserveOnce(stack);
  if (f.output == "text") {
    std::fputs(Text(o).c_str(), stdout);
    return 0;
  }
  std::string json;
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  (void)google::protobuf::util::MessageToJsonString(o, &json, opts);
  std::fputs(json.c_str(), stdout);
  return 0;
}

int RunActCommand(int argc, char** argv) {
  InitLogging("agent", false, spdlog::level::warn);
  Flags f;
  if (!ParseFlags(argc, argv, &f)) return 2;
  if (f.positional.size() != 2) {
    std::fprintf(stderr,
                 "usage: upkeep-agent act -f STACK.yaml [--data DIR] ACTION TARGET\n"
                 "  ACTION: start-service restart-service stop-service collect-logs\n"
                 "          test-proxy-config reload-proxy start-proxy restart-proxy\n");
    return 2;
  }
  v1::Stack stack;
  if (!LoadStack(f, &stack)) return 1;
  const v1::ActionKind kind = decision::ParseActionKind(f.positional[0]);
  if (kind == v1::ACTION_KIND_UNSPECIFIED || kind == v1::ACTION_KIND_RESET_BUDGET) {
    std::fprintf(stderr, "upkeep-agent act: unknown action %s\n", f.positional[0].c_str());
    return 2;
  }
  std::unique_ptr<Host> host = HostFor(f);
  auto executor = Executor::Create(f.data, &host->runtimes, &host->proxies);
  if (!executor.ok()) {
    std::fprintf(stderr, "upkeep-agent act: %s\n",
                 std::string(executor.status().message()).c_str());
    return 1;
  }
  (*executor)->SetDesired({stack});
  v1::Action action;
  action.set_id(absl::StrCat("manual-", absl::ToUnixNanos(absl::Now()), "-", ::getpid()));
  action.set_kind(kind);
  action.set_target(f.positional[1]);
  action.set_stack(stack.metadata().name());
  action.set_reason("upkeep-agent act (by hand)");
  for (const auto& [k, v] : f.params) (*action.mutable_params())[k] = v;
  const v1::ActionResult r = (*executor)->Execute(action);
  std::printf("%s %s: %s (%s)\n", f.positional[0].c_str(), f.positional[1].c_str(),
              v1::ActionOutcome_Name(r.outcome()).substr(15).c_str(), r.message().c_str());
  if (!r.output().empty())
    std::printf("%s%s", r.output().c_str(), r.output().back() == '\n' ? "" : "\n");
  return r.outcome() == v1::ACTION_OUTCOME_SUCCEEDED ? 0 : 1;
}

}  // namespace upkeep::agent

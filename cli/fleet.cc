// upkeepctl commands that talk to a controller's FleetService.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "cli/commands.h"
#include "core/decision/render.h"
#include "core/manifest/loader.h"
#include "core/manifest/yaml_emit.h"
#include "core/proto_time.h"
#include "core/tls/tls.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "upkeep/v1/controller_service.grpc.pb.h"
#include "upkeep/v1/fleet_service.grpc.pb.h"

namespace upkeep::cli {
namespace {

namespace v1 = upkeep::v1;

struct Args {
  std::string controller;
  std::string output = "table";
  std::string file;
  std::string stack;
  std::string host;
  std::string target;
  // Mutual TLS (core/tls) and a bearer token; from flags, else $UPKEEP_TLS_DIR (ca.crt,
  // client.crt, client.key) and $UPKEEP_TOKEN.
  std::string tls_ca, tls_cert, tls_key, token;
  bool insecure = false;  // allow plaintext to a non-loopback controller
  // A standalone agent's unix socket (upkeep-agent --standalone): no controller, no TLS (the
  // socket's 0600 permission is the access control).
  std::string agent;
  bool watch = false;
  int limit = 50;
  std::string pause_for;  // pause --for 30m
  std::vector<std::string> positional;
  std::vector<std::pair<std::string, std::string>> params;
};

[[noreturn]] void Fail(const std::string& message, int code = 1) {
  std::fprintf(stderr, "upkeepctl: %s\n", message.c_str());
  std::exit(code);
}

Args Parse(int argc, char** argv) {
  Args a;
  const char* env = std::getenv("UPKEEP_CONTROLLER");
  a.controller = env != nullptr && *env ? env : "localhost:7400";
  if (const char* dir = std::getenv("UPKEEP_TLS_DIR"); dir != nullptr && *dir) {
    a.tls_ca = absl::StrCat(dir, "/ca.crt");
    if (std::ifstream(absl::StrCat(dir, "/client.crt")).good()) {
      a.tls_cert = absl::StrCat(dir, "/client.crt");
      a.tls_key = absl::StrCat(dir, "/client.key");
    }
  }
  if (const char* t = std::getenv("UPKEEP_TOKEN"); t != nullptr && *t) a.token = t;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Fail(absl::StrCat(s, " needs a value"), 2);
      return argv[++i];
    };
    if (s == "--controller")
      a.controller = value();
    else if (s == "--agent")
      a.agent = value();
    else if (s == "-o" || s == "--output")
      a.output = value();
    else if (s == "-f" || s == "--filename")
      a.file = value();
    else if (s == "--stack")
      a.stack = value();
    else if (s == "--host")
      a.host = value();
    else if (s == "--target")
      a.target = value();
    else if (s == "--watch" || s == "-w")
      a.watch = true;
    else if (s == "--tls-ca")
      a.tls_ca = value();
    else if (s == "--tls-cert")
      a.tls_cert = value();
    else if (s == "--tls-key")
      a.tls_key = value();
    else if (s == "--token")
      a.token = value();
    else if (s == "--insecure")
      a.insecure = true;
    else if (s == "--for")
      a.pause_for = value();
    else if (s == "--limit")
      a.limit = std::atoi(value().c_str());
    else if (s == "--param") {
      const std::string kv = value();
      const size_t eq = kv.find('=');
      if (eq == std::string::npos) Fail("--param wants KEY=VALUE", 2);
      a.params.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
    } else if (!s.empty() && s[0] == '-') {
      Fail(absl::StrCat("unknown flag ", s), 2);
    } else {
      a.positional.push_back(s);
    }
  }
  if (a.output != "table" && a.output != "json" && a.output != "yaml" && a.output != "text") {
    Fail("-o must be table, json or yaml", 2);
  }
  return a;
}

std::unique_ptr<v1::FleetService::Stub> Connect(const Args& a) {
  if (!a.agent.empty()) {
    if (::access(a.agent.c_str(), F_OK) != 0) {
      Fail(absl::StrCat("--agent ", a.agent,
                        ": no such socket (is `upkeep-agent --standalone` running there?)"),
           2);
    }
    return v1::FleetService::NewStub(
        grpc::CreateChannel(absl::StrCat("unix:", a.agent), grpc::InsecureChannelCredentials()));
  }
  tls::ChannelTlsOptions options;
  options.bearer_token = a.token;
  auto creds =
      tls::ClientCredentials(a.controller, a.tls_ca, a.tls_cert, a.tls_key, options, a.insecure);
  if (!creds.ok()) Fail(std::string(creds.status().message()), 2);
  return v1::FleetService::NewStub(grpc::CreateChannel(a.controller, *creds));
}

std::unique_ptr<v1::ControllerService::Stub> ConnectControllers(const Args& a) {
  tls::ChannelTlsOptions options;
  options.bearer_token = a.token;
  auto creds =
      tls::ClientCredentials(a.controller, a.tls_ca, a.tls_cert, a.tls_key, options, a.insecure);
  if (!creds.ok()) Fail(std::string(creds.status().message()), 2);
  return v1::ControllerService::NewStub(grpc::CreateChannel(a.controller, *creds));
}

std::unique_ptr<grpc::ClientContext> Ctx(absl::Duration timeout = absl::Seconds(10)) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return ctx;
}

void Check(const grpc::Status& st, const Args& a) {
  if (st.ok()) return;
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE ||
      st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    Fail(absl::StrCat("cannot reach controller at ", a.controller, ": ", st.error_message()));
  }
  Fail(st.error_message());
}

std::string ToJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

// Prints `m` as JSON or YAML when asked; false when the caller should print a table.
bool PrintStructured(const google::protobuf::Message& m, const Args& a) {
  if (a.output == "json") {
    std::printf("%s", ToJson(m).c_str());
    return true;
  }
  if (a.output == "yaml") {
    std::printf("%s", manifest::EmitYaml(nlohmann::json::parse(ToJson(m))).c_str());
    return true;
  }
  return false;
}

std::string Age(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0) return "-";
  const absl::Duration d = absl::Now() - FromProto(t);
  if (d < absl::Seconds(120)) return absl::StrCat(absl::ToInt64Seconds(d), "s");
  if (d < absl::Hours(2)) return absl::StrCat(absl::ToInt64Minutes(d), "m");
  if (d < absl::Hours(48)) return absl::StrCat(absl::ToInt64Hours(d), "h");
  return absl::StrCat(absl::ToInt64Hours(d) / 24, "d");
}

const v1::Condition* Cond(const v1::Stack& s, const std::string& type) {
  for (const auto& c : s.status().conditions()) {
    if (c.type() == type) return &c;
  }
  return nullptr;
}

std::vector<v1::ManifestSource> ReadManifests(const std::string& path) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    for (const auto& e : fs::directory_iterator(path, ec)) {
      const auto ext = e.path().extension();
      if (ext == ".yaml" || ext == ".yml") files.push_back(e.path().string());
    }
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(path);
  }
  std::vector<v1::ManifestSource> out;
  for (const auto& f : files) {
    std::ifstream in(f);
    if (!in) Fail(absl::StrCat("cannot read ", f));
    std::stringstream ss;
    ss << in.rdbuf();
    v1::ManifestSource m;
    m.set_filename(f);
    m.set_content(ss.str());
    out.push_back(std::move(m));
  }
  if (out.empty()) Fail(absl::StrCat("no *.yaml files in ", path));
  return out;
}

void PrintEventLine(const v1::Event& e) {
  std::printf("%-8s %-8s %-18s %-10s %-10s %s\n",
              absl::FormatTime("%H:%M:%S", FromProto(e.at()), absl::LocalTimeZone()).c_str(),
              e.type().c_str(), e.reason().c_str(), e.stack().empty() ? "-" : e.stack().c_str(),
              e.target().empty() ? "-" : e.target().c_str(), e.message().c_str());
}

int Apply(const Args& a) {
  if (a.file.empty()) Fail("apply needs -f FILE|DIR", 2);
  auto stub = Connect(a);
  v1::ApplyRequest req;
  for (auto& m : ReadManifests(a.file)) *req.add_manifests() = std::move(m);
  v1::ApplyResponse resp;
  auto ctx = Ctx();
  grpc::Status st = stub->Apply(ctx.get(), req, &resp);
  if (st.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
    v1::ApplyResponse details;
    if (details.ParseFromString(st.error_details()) && details.errors_size() > 0) {
      for (const auto& e : details.errors()) {
        std::fprintf(stderr, "%s:%d: %s: %s\n", e.file().c_str(), e.line(), e.field().c_str(),
                     e.message().c_str());
      }
      std::fprintf(stderr, "upkeepctl: %d error(s); nothing was applied\n", details.errors_size());
      return 1;
    }
  }
  Check(st, a);
  if (PrintStructured(resp, a)) return 0;
  for (const auto& s : resp.applied())
    std::printf("stack/%s %s\n", s.name().c_str(), s.change().c_str());
  for (const auto& n : resp.notifiers())
    std::printf("notifier/%s %s\n", n.name().c_str(), n.change().c_str());
  return 0;
}

std::string SecretText(const v1::SecretRef& r) {
  if (r.source_case() == v1::SecretRef::kEnv) return "env:" + r.env();
  if (r.source_case() == v1::SecretRef::kFile) return "file:" + r.file();
  return "-";
}

// Notifiers with their delivery state. Secrets show as their reference (env:VAR, file:PATH).
int GetNotifiers(const Args& a, v1::FleetService::Stub* stub) {
  v1::ListNotifiersResponse resp;
  auto ctx = Ctx();
  Check(stub->ListNotifiers(ctx.get(), v1::ListNotifiersRequest(), &resp), a);
  if (PrintStructured(resp, a)) return 0;
  std::printf("%-14s %-8s %-26s %-6s %-6s %-7s %-7s %-9s %s\n", "NAME", "TYPE", "URL", "SENT",
              "FAILED", "DROPPED", "PENDING", "LAST-OK", "LAST-ERROR");
  for (const auto& n : resp.notifiers()) {
    const auto& st = n.status();
    std::printf("%-14s %-8s %-26s %-6lld %-6lld %-7lld %-7lld %-9s %s\n",
                n.metadata().name().c_str(),
                n.spec().type() == v1::NOTIFIER_TYPE_SLACK ? "slack" : "webhook",
                SecretText(n.spec().url()).c_str(), static_cast<long long>(st.sent()),
                static_cast<long long>(st.failed()), static_cast<long long>(st.dropped()),
                static_cast<long long>(st.pending()), Age(st.last_success()).c_str(),
                st.last_error().empty() ? "-" : st.last_error().c_str());
  }
  return 0;
}

// notify test NAME: a test message now; prints what the receiver answered.
int NotifyTest(const Args& a) {
  if (a.positional.size() < 3 || a.positional[1] != "test") Fail("notify test NAME", 2);
  auto stub = Connect(a);
  v1::TestNotifierRequest req;
  req.set_name(a.positional[2]);
  v1::TestNotifierResponse resp;
  auto ctx = Ctx(absl::Seconds(60));
  Check(stub->TestNotifier(ctx.get(), req, &resp), a);
  if (PrintStructured(resp, a)) return resp.delivered() ? 0 : 1;
  if (!resp.error().empty()) {
    std::printf("notifier/%s: not delivered to %s: %s\n", req.name().c_str(),
                resp.url_host().empty() ? "?" : resp.url_host().c_str(), resp.error().c_str());
    return 1;
  }
  std::printf("notifier/%s: %s answered HTTP %d\n%s%s", req.name().c_str(), resp.url_host().c_str(),
              resp.http_status(), resp.body().c_str(),
              resp.body().empty() || resp.body().back() == '\n' ? "" : "\n");
  return resp.delivered() ? 0 : 1;
}

// The lines of `a` and `b` as a unified-style diff ("-" old, "+" new, " " both); LCS.
std::string LineDiff(const std::string& a, const std::string& b) {
  const std::vector<std::string> x = absl::StrSplit(a, '\n');
  const std::vector<std::string> y = absl::StrSplit(b, '\n');
  std::vector<std::vector<int>> l(x.size() + 1, std::vector<int>(y.size() + 1, 0));
  for (int i = static_cast<int>(x.size()) - 1; i >= 0; --i) {
    for (int j = static_cast<int>(y.size()) - 1; j >= 0; --j) {
      l[i][j] = x[i] == y[j] ? l[i + 1][j + 1] + 1 : std::max(l[i + 1][j], l[i][j + 1]);
    }
  }
  std::string out;
  size_t i = 0, j = 0;
  while (i < x.size() || j < y.size()) {
    if (i < x.size() && j < y.size() && x[i] == y[j]) {
      absl::StrAppend(&out, "  ", x[i], "\n");
      ++i;
      ++j;
    } else if (i < x.size() && (j == y.size() || l[i + 1][j] >= l[i][j + 1])) {
      absl::StrAppend(&out, "- ", x[i++], "\n");
    } else {
      absl::StrAppend(&out, "+ ", y[j++], "\n");
    }
  }
  return out;
}

std::string SpecYaml(const v1::StackSpec& spec) {
  return manifest::EmitYaml(nlohmann::json::parse(ToJson(spec)));
}

// diff -f FILE: what an apply would change. The controller validates and classifies (a dry-run
// apply); for a stack it would reconfigure, the spec as stored and as written are compared.
int Diff(const Args& a) {
  if (a.file.empty()) Fail("diff needs -f FILE|DIR", 2);
  auto stub = Connect(a);
  v1::ApplyRequest req;
  req.set_dry_run(true);
  for (auto& m : ReadManifests(a.file)) *req.add_manifests() = std::move(m);
  v1::ApplyResponse resp;
  auto ctx = Ctx();
  grpc::Status st = stub->Apply(ctx.get(), req, &resp);
  if (st.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
    v1::ApplyResponse details;
    if (details.ParseFromString(st.error_details()) && details.errors_size() > 0) {
      for (const auto& e : details.errors()) {
        std::fprintf(stderr, "%s:%d: %s: %s\n", e.file().c_str(), e.line(), e.field().c_str(),
                     e.message().c_str());
      }
      return 1;
    }
  }
  Check(st, a);
  if (PrintStructured(resp, a)) return 0;
  bool changes = false;
  for (const auto& s : resp.applied()) {
    // The controller says created or configured (" (dry run)"); which fields differ is
    // worked out here, from the spec it holds and the one the same loader makes of the file.
    if (absl::StartsWith(s.change(), "created")) {
      std::printf("stack/%s would be created\n", s.name().c_str());
      changes = true;
      continue;
    }
    // The new spec as the controller would store it (defaults filled by the same loader).
    v1::StackSpec want;
    for (const auto& m : req.manifests()) {
      const manifest::LoadResult r = manifest::LoadString(m.content(), m.filename());
      for (const auto& st2 : r.stacks) {
        if (st2.metadata().name() == s.name()) want = st2.spec();
      }
    }
    v1::GetStackRequest get;
    get.set_name(s.name());
    v1::Stack have;
    auto gctx = Ctx();
    Check(stub->GetStack(gctx.get(), get, &have), a);
    const std::string before = SpecYaml(have.spec()), after = SpecYaml(want);
    if (before == after) {
      std::printf("stack/%s unchanged\n", s.name().c_str());
      continue;
    }
    changes = true;
    std::printf("stack/%s would be configured\n", s.name().c_str());
    const std::string d = LineDiff(before, after);
    for (const auto& line : absl::StrSplit(d, '\n')) {
      if (!line.empty() && line[0] != ' ') std::printf("    %s\n", std::string(line).c_str());
    }
  }
  for (const auto& n : resp.notifiers()) {
    std::printf("notifier/%s %s\n", n.name().c_str(),
                n.change() == "created"      ? "would be created"
                : n.change() == "configured" ? "would be configured"
                                             : "unchanged");
    if (n.change() != "unchanged") changes = true;
  }
  return changes ? 3 : 0;  // like diff(1): non-zero when something would change
}

int Get(const Args& a) {
  if (a.positional.size() < 2) Fail("get stacks|hosts|controllers|notifiers", 2);
  auto stub = Connect(a);
  const std::string what = a.positional[1];
  if (what == "stacks" || what == "stack") {
    v1::ListStacksResponse resp;
    auto ctx = Ctx();
    Check(stub->ListStacks(ctx.get(), v1::ListStacksRequest(), &resp), a);
    if (PrintStructured(resp, a)) return 0;
    std::printf("%-16s %-16s %-8s %-10s %-6s %s\n", "NAME", "HOSTS", "READY", "PAUSED", "GEN",
                "REASON");
    for (const auto& s : resp.stacks()) {
      const v1::Condition* ready = Cond(s, "Ready");
      std::printf(
          "%-16s %-16s %-8s %-10s %-6lld %s\n", s.metadata().name().c_str(),
          absl::StrJoin(s.spec().hosts(), ",").c_str(),
          ready != nullptr ? ready->status().c_str() : "Unknown",
          s.status().paused() ? "yes" : "no", static_cast<long long>(s.metadata().generation()),
          ready != nullptr ? absl::StrCat(ready->reason(), ready->message().empty() ? "" : ": ",
                                          ready->message())
                                 .c_str()
                           : "");
    }
    return 0;
  }
  if (what == "hosts" || what == "host") {
    v1::ListHostsResponse resp;
    auto ctx = Ctx();
    Check(stub->ListHosts(ctx.get(), v1::ListHostsRequest(), &resp), a);
    if (PrintStructured(resp, a)) return 0;
    std::printf("%-20s %-10s %-10s %-8s %-8s %s\n", "HOST", "CONNECTED", "LAST-HEARD", "PAUSED",
                "VERSION", "STACKS");
    for (const auto& h : resp.hosts()) {
      std::printf("%-20s %-10s %-10s %-8s %-8s %s\n", h.host_id().c_str(),
                  h.connected() ? "yes" : "no", Age(h.last_heard()).c_str(),
                  h.paused() ? "yes" : "no", h.version().empty() ? "-" : h.version().c_str(),
                  absl::StrJoin(h.stacks(), ",").c_str());
    }
    return 0;
  }
  if (what == "controllers" || what == "controller") {
    // Any replica answers: every controller replica on etcd, with its role and lag.
    v1::ListControllersResponse resp;
    auto ctx = Ctx();
    Check(ConnectControllers(a)->ListControllers(ctx.get(), v1::ListControllersRequest(), &resp),
          a);
    if (PrintStructured(resp, a)) return 0;
    std::printf("%-28s %-10s %-10s %-6s %s\n", "ADDRESS", "ROLE", "REVISION", "LAG", "HEARD");
    for (const auto& r : resp.replicas()) {
      std::printf("%-28s %-10s %-10lld %-6lld %s\n", r.address().c_str(), r.role().c_str(),
                  static_cast<long long>(r.revision()), static_cast<long long>(r.lag()),
                  r.has_heard_at() ? Age(r.heard_at()).c_str() : "-");
    }
    if (resp.leader().empty()) std::printf("(no leader elected)\n");
    return 0;
  }
  if (what == "notifiers" || what == "notifier") return GetNotifiers(a, stub.get());
  Fail(absl::StrCat("get: unknown kind ", what, " (stacks, hosts, controllers, notifiers)"), 2);
}

std::string StackName(const Args& a, const char* verb) {
  if (a.positional.size() < 3 || a.positional[1] != "stack") {
    Fail(absl::StrCat(verb, " stack NAME"), 2);
  }
  return a.positional[2];
}

int Describe(const Args& a) {
  const std::string name = StackName(a, "describe");
  auto stub = Connect(a);
  v1::DescribeStackRequest req;
  req.set_name(name);
  v1::DescribeStackResponse resp;
  auto ctx = Ctx();
  Check(stub->DescribeStack(ctx.get(), req, &resp), a);
  if (PrintStructured(resp, a)) return 0;
  const v1::Stack& s = resp.stack();
  std::printf(
      "Name:        %s\nHosts:       %s\nRuntime:     %s\nGeneration:  %lld (observed %lld)\n"
      "Paused:      %s\nSource:      %s\n",
      s.metadata().name().c_str(), absl::StrJoin(s.spec().hosts(), ", ").c_str(),
      v1::RuntimeKind_Name(s.spec().runtime()).substr(13).c_str(),
      static_cast<long long>(s.metadata().generation()),
      static_cast<long long>(s.status().observed_generation()), s.status().paused() ? "yes" : "no",
      s.metadata().source().c_str());
  std::printf("Services:\n");
  for (const auto& svc : s.spec().services()) {
    std::printf(
        "  %-12s port %-6d %s%s\n", svc.name().c_str(), svc.port(),
        svc.probe().has_http() ? absl::StrCat("http ", svc.probe().http().path()).c_str() : "tcp",
        svc.depends_on().empty()
            ? ""
            : absl::StrCat("  dependsOn ", absl::StrJoin(svc.depends_on(), ",")).c_str());
  }
  std::printf("Routes:\n");
  for (const auto& r : s.spec().proxy().routes()) {
    std::printf("  %-12s -> %-12s %s\n", r.path().c_str(), r.upstream().c_str(),
                r.probe().url().c_str());
  }
  std::printf("Conditions:\n");
  for (const auto& c : s.status().conditions()) {
    std::printf("  %-12s %-8s %-16s %s\n", c.type().c_str(), c.status().c_str(), c.reason().c_str(),
                c.message().c_str());
  }
  for (const auto& d : s.status().diagnoses()) {
    std::printf("Last diagnosis (host %s): %s — %s\n", d.host().c_str(),
                v1::Verdict_Name(d.verdict()).substr(8).c_str(), d.summary().c_str());
  }
  std::printf("Recent actions:\n");
  for (const auto& r : resp.actions()) {
    std::printf(
        "  %-8s %-18s %-10s %-10s %s%s\n", Age(r.requested_at()).c_str(),
        decision::ActionKindName(r.action().kind()).c_str(), r.action().target().c_str(),
        r.dry_run() ? "dry-run"
                    : (r.result().id().empty()
                           ? "pending"
                           : v1::ActionOutcome_Name(r.result().outcome()).substr(15).c_str()),
        r.action().reason().c_str(),
        r.manual()
            ? (r.requested_by().empty() ? " (by hand)" : (" (by " + r.requested_by() + ")").c_str())
            : "");
  }
  std::printf("Events:\n");
  for (const auto& e : resp.events()) {
    std::printf("  ");
    PrintEventLine(e);
  }
  return 0;
}

int PlanOrExplain(const Args& a, bool explain) {
  const std::string name = StackName(a, explain ? "explain" : "plan");
  auto stub = Connect(a);
  std::vector<v1::Diagnosis> diagnoses;
  if (explain) {
    // The decision the controller last acted on.
    v1::GetStackRequest req;
    req.set_name(name);
    v1::Stack s;
    auto ctx = Ctx();
    Check(stub->GetStack(ctx.get(), req, &s), a);
    diagnoses.assign(s.status().diagnoses().begin(), s.status().diagnoses().end());
  } else {
    v1::PlanRequest req;
    req.set_name(name);
    req.set_host(a.host);
    v1::PlanResponse resp;
    auto ctx = Ctx();
    Check(stub->Plan(ctx.get(), req, &resp), a);
    diagnoses.assign(resp.diagnoses().begin(), resp.diagnoses().end());
  }
  if (a.output == "json" || a.output == "yaml") {
    v1::PlanResponse wrapper;
    for (const auto& d : diagnoses) *wrapper.add_diagnoses() = d;
    PrintStructured(wrapper, a);
    return 0;
  }
  if (diagnoses.empty()) std::printf("no diagnosis yet for stack %s\n", name.c_str());
  for (const auto& d : diagnoses) std::printf("%s\n", decision::RenderDiagnosisText(d).c_str());
  return 0;
}

int Events(const Args& a) {
  auto stub = Connect(a);
  if (!a.watch) {
    v1::ListEventsRequest req;
    req.set_stack(a.stack);
    req.set_limit(100000);
    v1::ListEventsResponse resp;
    auto ctx = Ctx();
    Check(stub->ListEvents(ctx.get(), req, &resp), a);
    if (a.limit > 0 && resp.events_size() > a.limit) {
      resp.mutable_events()->DeleteSubrange(0, resp.events_size() - a.limit);
    }
    if (PrintStructured(resp, a)) return 0;
    std::printf("%-8s %-8s %-18s %-10s %-10s %s\n", "TIME", "TYPE", "REASON", "STACK", "TARGET",
                "MESSAGE");
    for (const auto& e : resp.events()) PrintEventLine(e);
    return 0;
  }
  grpc::ClientContext ctx;
  v1::WatchEventsRequest req;
  req.set_stack(a.stack);
  auto reader = stub->WatchEvents(&ctx, req);
  v1::Event e;
  while (reader->Read(&e)) {
    if (a.output == "json") {
      std::string line;
      (void)google::protobuf::util::MessageToJsonString(e, &line);
      std::printf("%s\n", line.c_str());
    } else {
      PrintEventLine(e);
    }
    std::fflush(stdout);
  }
  Check(reader->Finish(), a);
  return 0;
}

int Actions(const Args& a) {
  auto stub = Connect(a);
  v1::ListActionsRequest req;
  req.set_stack(a.stack);
  req.set_limit(a.limit);
  v1::ListActionsResponse resp;
  auto ctx = Ctx();
  Check(stub->ListActions(ctx.get(), req, &resp), a);
  if (PrintStructured(resp, a)) return 0;
  std::printf("%-26s %-8s %-10s %-8s %-18s %-10s %-10s %s\n", "ID", "AGE", "STACK", "HOST",
              "ACTION", "TARGET", "OUTCOME", "WHY");
  for (const auto& r : resp.actions()) {
    std::string outcome = r.dry_run() ? "dry-run"
                          : r.result().id().empty()
                              ? "pending"
                              : v1::ActionOutcome_Name(r.result().outcome()).substr(15);
    if (r.verification() == v1::VERIFICATION_FIXED) outcome += "/fixed";
    std::printf("%-26s %-8s %-10s %-8s %-18s %-10s %-10s %s\n", r.action().id().c_str(),
                Age(r.requested_at()).c_str(), r.action().stack().c_str(),
                r.action().host().c_str(), decision::ActionKindName(r.action().kind()).c_str(),
                r.action().target().c_str(), outcome.c_str(),
                r.requested_by().empty()
                    ? r.action().reason().c_str()
                    : absl::StrCat(r.action().reason(), " (by ", r.requested_by(), ")").c_str());
  }
  return 0;
}

int PauseResume(const Args& a, bool pause) {
  if (a.positional.size() < 3 || (a.positional[1] != "stack" && a.positional[1] != "host")) {
    Fail(absl::StrCat(pause ? "pause" : "resume", " stack NAME | host ID",
                      pause ? " [--for DURATION]" : ""),
         2);
  }
  v1::PauseRequest req;
  if (!a.pause_for.empty()) {
    if (!pause) Fail("--for goes with pause", 2);
    auto d = manifest::ParseDuration(a.pause_for);
    if (!d.ok() || *d <= absl::ZeroDuration()) {
      Fail(absl::StrCat("--for ", a.pause_for, ": not a duration (e.g. 30m, 2h)"), 2);
    }
    req.mutable_duration()->set_seconds(absl::ToInt64Seconds(*d));
  }
  auto stub = Connect(a);
  if (a.positional[1] == "stack")
    req.set_stack(a.positional[2]);
  else
    req.set_host(a.positional[2]);
  v1::PauseResponse resp;
  auto ctx = Ctx();
  Check(pause ? stub->Pause(ctx.get(), req, &resp) : stub->Resume(ctx.get(), req, &resp), a);
  std::printf("%s/%s %s%s\n", a.positional[1].c_str(), a.positional[2].c_str(),
              pause ? "paused" : "resumed",
              a.pause_for.empty() ? "" : absl::StrCat(" for ", a.pause_for).c_str());
  return 0;
}

int Run(const Args& a) {
  if (a.positional.size() < 2 || a.stack.empty() || a.target.empty()) {
    Fail("run ACTION --stack NAME --target T [--host H]", 2);
  }
  const v1::ActionKind kind = decision::ParseActionKind(a.positional[1]);
  if (kind == v1::ACTION_KIND_UNSPECIFIED || kind == v1::ACTION_KIND_RESET_BUDGET) {
    Fail(absl::StrCat("unknown action ", a.positional[1],
                      " (start-service, restart-service, stop-service, collect-logs, "
                      "test-proxy-config, reload-proxy, start-proxy, restart-proxy)"),
         2);
  }
  auto stub = Connect(a);
  v1::RunActionRequest req;
  req.set_stack(a.stack);
  req.set_host(a.host);
  req.set_kind(kind);
  req.set_target(a.target);
  for (const auto& [k, v] : a.params) (*req.mutable_params())[k] = v;
  v1::RunActionResponse resp;
  auto ctx = Ctx(absl::Seconds(40));
  Check(stub->RunAction(ctx.get(), req, &resp), a);
  if (PrintStructured(resp, a)) return 0;
  const auto& r = resp.record();
  if (r.result().id().empty()) {
    std::printf("%s %s: sent (id %s), no result yet; see upkeepctl actions\n",
                a.positional[1].c_str(), a.target.c_str(), r.action().id().c_str());
    return 0;
  }
  std::printf("%s %s: %s (%s)\n", a.positional[1].c_str(), a.target.c_str(),
              v1::ActionOutcome_Name(r.result().outcome()).substr(15).c_str(),
              r.result().message().c_str());
  if (!r.result().output().empty()) std::printf("%s\n", r.result().output().c_str());
  return r.result().outcome() == v1::ACTION_OUTCOME_SUCCEEDED ? 0 : 1;
}

int Delete(const Args& a) {
  if (a.positional.size() >= 3 && a.positional[1] == "notifier") {
    auto stub = Connect(a);
    v1::DeleteNotifierRequest req;
    req.set_name(a.positional[2]);
    v1::DeleteNotifierResponse resp;
    auto ctx = Ctx();
    Check(stub->DeleteNotifier(ctx.get(), req, &resp), a);
    std::printf("notifier/%s deleted\n", req.name().c_str());
    return 0;
  }
  const std::string name = StackName(a, "delete");
  auto stub = Connect(a);
  v1::DeleteStackRequest req;
  req.set_name(name);
  v1::DeleteStackResponse resp;
  auto ctx = Ctx();
  Check(stub->DeleteStack(ctx.get(), req, &resp), a);
  std::printf("stack/%s deleted\n", name.c_str());
  return 0;
}

}  // namespace

int RunFleetCommand(int argc, char** argv) {
  const Args a = Parse(argc, argv);
  // argv[0] is the command; Parse collected it as positional[0].
  Args args = a;
  args.positional.insert(args.positional.begin(), argv[0]);
  const std::string cmd = argv[0];
  if (cmd == "apply") return Apply(args);
  if (cmd == "get") return Get(args);
  if (cmd == "describe") return Describe(args);
  if (cmd == "explain") return PlanOrExplain(args, true);
  if (cmd == "plan") return PlanOrExplain(args, false);
  if (cmd == "events") return Events(args);
  if (cmd == "actions") return Actions(args);
  if (cmd == "pause") return PauseResume(args, true);
  if (cmd == "resume") return PauseResume(args, false);
  if (cmd == "run") return Run(args);
  if (cmd == "delete") return Delete(args);
  if (cmd == "notify") return NotifyTest(args);
  if (cmd == "diff") return Diff(args);
  Fail(absl::StrCat("unknown command ", cmd, "; see upkeepctl --help"), 2);
}

}  // namespace upkeep::cli

// upkeep-controller --data DIR --listen ADDR [--manifests DIR] [--metrics ADDR] [--log-json]
//                   [--store etcd --etcd-endpoints A,B,C [--etcd-ca F --etcd-cert F --etcd-key F]]
// Wires the store, the reconciler, the gRPC services (AgentService, FleetService, health) and
// the metrics endpoint together; applies a manifests directory at start and when it changes.
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "controller/api/agent_service.h"
#include "controller/api/fleet_service.h"
#include "controller/auth/authenticator.h"
#include "controller/auth/principal.h"
#include "controller/auth/token_command.h"
#include "controller/auth/token_store.h"
#include "controller/ha/elector.h"
#include "controller/ha/replica.h"
#include "controller/http/state_json.h"
#include "controller/http/status_server.h"
#include "controller/metrics/metrics.h"
#include "controller/notify/notify_service.h"
#include "controller/reconcile/reconciler.h"
#include "controller/store/etcd_store.h"
#include "controller/store/store.h"
#include "core/flags.h"
#include "core/log.h"
#include "core/manifest/loader.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"

ABSL_FLAG(std::string, data, "/var/lib/upkeep", "data directory (SQLite store)");
ABSL_FLAG(std::string, listen, "127.0.0.1:7400", "gRPC address (AgentService, FleetService)");
ABSL_FLAG(std::string, manifests, "", "directory of manifests applied at start and on change");
ABSL_FLAG(std::string, http, "127.0.0.1:9400",
          "HTTP address of the status page, /api/state, /api/events and /metrics (\"off\": none)");
ABSL_FLAG(std::string, metrics, "", "alias of --http (kept for old unit files)");
ABSL_FLAG(bool, log_json, false, "log JSON lines");
ABSL_FLAG(std::string, tls_cert, "",
          "the controller's certificate (upkeepctl tls issue --controller)");
ABSL_FLAG(std::string, tls_key, "", "its key");
ABSL_FLAG(std::string, tls_ca, "", "the fleet CA that client certificates are verified against");
ABSL_FLAG(bool, insecure, false,
          "allow plaintext gRPC on a non-loopback address (anyone who reaches it is admin)");
ABSL_FLAG(int, max_message_bytes, 4 << 20, "largest gRPC message accepted");
ABSL_FLAG(std::vector<std::string>, grpc_args, {},
          "extra gRPC server channel arguments, NAME=VALUE,... (integers as integers; tuning, "
          "see docs/operations.md)");
ABSL_FLAG(absl::Duration, retain_events_for, absl::Hours(24 * 7),
          "events older than this are deleted from the store");
ABSL_FLAG(int64_t, retain_events, 100000, "the store keeps at most this many events");
ABSL_FLAG(absl::Duration, retain_actions_for, absl::Hours(24 * 30),
          "action records older than this are deleted from the store");
ABSL_FLAG(int64_t, retain_actions, 100000, "the store keeps at most this many action records");
ABSL_FLAG(int, max_actions_per_second, 50,
          "fleet-wide limit on automatic actions (a token bucket): a storm of failures is repaired "
          "at this pace, never all at once");
// Replicas on etcd (docs/operations.md, "High availability").
ABSL_FLAG(std::string, store, "sqlite", "sqlite (one controller, --data) or etcd (replicas)");
ABSL_FLAG(std::string, etcd_endpoints, "",
          "etcd members, comma-separated (host:port, https://...)");
ABSL_FLAG(std::string, etcd_ca, "", "CA that etcd's server certificates are verified against");
ABSL_FLAG(std::string, etcd_cert, "", "this controller's client certificate for etcd");
ABSL_FLAG(std::string, etcd_key, "", "its key");
ABSL_FLAG(std::string, etcd_prefix, "/upkeep/", "key prefix of this fleet in etcd");
ABSL_FLAG(absl::Duration, leader_lease, absl::Seconds(5),
          "leader lease TTL: a dead leader is replaced after about this long");
ABSL_FLAG(std::string, advertise, "",
          "address agents and tools reach this replica at (default: --listen)");

namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }
// etcd store: set when this replica is elected, and when it loses leadership (final).
std::atomic<bool> g_elected{false};
std::atomic<bool> g_lost{false};

// One --grpc-args pair: a VALUE that parses as an integer is an integer argument.
struct GrpcArg {
  std::string name;
  std::string text;
  std::optional<int> number;
};

// --grpc-args, read before anything starts (a replica must not campaign with a flag it cannot
// serve with). Nothing, with the bad pair named, on a pair without '='.
std::optional<std::vector<GrpcArg>> ParseGrpcArgs() {
  std::vector<GrpcArg> out;
  for (const std::string& pair : absl::GetFlag(FLAGS_grpc_args)) {
    const size_t eq = pair.find('=');
    if (eq == std::string::npos || eq == 0) {
      UPKEEP_LOG(critical, "bad_flag",
                 {{"error", absl::StrCat("--grpc-args: \"", pair, "\" is not NAME=VALUE")}});
      return std::nullopt;
    }
    GrpcArg a{pair.substr(0, eq), pair.substr(eq + 1), std::nullopt};
    if (int n = 0; absl::SimpleAtoi(a.text, &n)) a.number = n;
    out.push_back(std::move(a));
  }
  return out;
}

// mtime+size of every manifest, to notice changes.
std::map<std::string, std::pair<int64_t, int64_t>> Scan(const std::string& dir) {
  std::map<std::string, std::pair<int64_t, int64_t>> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const auto ext = e.path().extension();
    if (ext != ".yaml" && ext != ".yml") continue;
    out[e.path().string()] = {e.last_write_time(ec).time_since_epoch().count(),
                              static_cast<int64_t>(e.file_size(ec))};
  }
  return out;
}

void ApplyDir(const std::string& dir, upkeep::controller::Reconciler* r) {
  const auto result = upkeep::manifest::LoadPath(dir);
  if (!result.ok()) {
    for (const auto& e : result.errors) {
      UPKEEP_LOG(error, "manifest_invalid", {{"error", e.ToString()}});
    }
    UPKEEP_LOG(error, "manifests_not_applied",
               {{"dir", dir}, {"note", "nothing applied; what is stored stays"}});
    return;
  }
  auto applied = r->Apply(result.stacks, false, "manifests:" + dir);
  if (!applied.ok()) {
    UPKEEP_LOG(error, "apply_failed", {{"error", std::string(applied.status().message())}});
  }
}

}  // namespace

int main(int argc, char** argv) {
  // `upkeep-controller token ...` manages bearer tokens; it has flags of its own.
  if (argc > 1 && std::string(argv[1]) == "token") {
    return upkeep::controller_auth::RunTokenCommand(argc - 1, argv + 1);
  }
  absl::SetProgramUsageMessage("upkeep-controller --data DIR --listen ADDR [--manifests DIR]");
  upkeep::NormalizeFlagDashes(argc, argv);
  absl::ParseCommandLine(argc, argv);
  // Debian's abseil is built in debug mode, where every Mutex acquisition while another is held
  // updates a process-wide lock graph under a global lock (and aborts on a cycle). Tests keep
  // that check; the daemon does not pay for it on every lock of every stream (measured: 6x per
  // nested lock pair, and ~6 % of the controller's CPU at 10,000 agents; bench/results/load.md).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  upkeep::InitLogging("controller", absl::GetFlag(FLAGS_log_json), spdlog::level::info);
  ::signal(SIGINT, OnSignal);
  ::signal(SIGTERM, OnSignal);
  ::signal(SIGPIPE, SIG_IGN);

  // --store etcd: one replica among several. It campaigns for leadership and, until elected,
  // serves reads from etcd as a follower (agents are turned away: they move on to the next
  // controller in their list). Once elected it runs as a single controller would, every store
  // write fenced on its election key; if it loses leadership it stops and exits 3, to be
  // started again (as a follower) by its supervisor.
  const bool on_etcd = absl::GetFlag(FLAGS_store) == "etcd";
  if (!on_etcd && absl::GetFlag(FLAGS_store) != "sqlite") {
    UPKEEP_LOG(critical, "bad_flag", {{"error", "--store: sqlite or etcd"}});
    return 1;
  }
  const std::optional<std::vector<GrpcArg>> grpc_args = ParseGrpcArgs();
  if (!grpc_args.has_value()) return 1;
  const std::string advertise = absl::GetFlag(FLAGS_advertise).empty()
                                    ? absl::GetFlag(FLAGS_listen)
                                    : absl::GetFlag(FLAGS_advertise);
  std::unique_ptr<upkeep::controller::EtcdClient> etcd;
  std::unique_ptr<upkeep::controller::EtcdStore> etcd_store;
  std::unique_ptr<upkeep::controller::Elector> elector;
  std::unique_ptr<upkeep::controller::ReplicaRegistry> registry;
  absl::StatusOr<std::unique_ptr<upkeep::controller::Store>> store =
      on_etcd ? absl::StatusOr<std::unique_ptr<upkeep::controller::Store>>(nullptr)
              : upkeep::controller::OpenSqliteStore(absl::GetFlag(FLAGS_data));
  if (!store.ok()) {
    UPKEEP_LOG(critical, "store_open_failed", {{"error", std::string(store.status().message())}});
    return 1;
  }
  if (on_etcd) {
    upkeep::controller::EtcdOptions eo;
    auto endpoints = upkeep::controller::ParseEtcdEndpoints(absl::GetFlag(FLAGS_etcd_endpoints));
    if (!endpoints.ok()) {
      UPKEEP_LOG(critical, "bad_flag", {{"error", std::string(endpoints.status().message())}});
      return 1;
    }
    eo.endpoints = *endpoints;
    eo.ca = absl::GetFlag(FLAGS_etcd_ca);
    eo.cert = absl::GetFlag(FLAGS_etcd_cert);
    eo.key = absl::GetFlag(FLAGS_etcd_key);
    auto client = upkeep::controller::EtcdClient::Connect(eo);
    if (!client.ok()) {
      UPKEEP_LOG(critical, "etcd_failed", {{"error", std::string(client.status().message())}});
      return 1;
    }
    etcd = std::move(*client);
    upkeep::controller::EtcdStoreOptions so;
    so.prefix = absl::GetFlag(FLAGS_etcd_prefix);
    so.require_fence = true;
    auto opened = upkeep::controller::OpenEtcdStore(etcd.get(), so);
    if (!opened.ok()) {
      UPKEEP_LOG(critical, "store_open_failed",
                 {{"error", std::string(opened.status().message())}});
      return 1;
    }
    etcd_store = std::move(*opened);
    upkeep::controller::ElectorOptions el;
    el.name = so.prefix + "leader";
    el.value = advertise;
    el.ttl = absl::GetFlag(FLAGS_leader_lease);
    el.safety = std::max(el.ttl / 5, absl::Milliseconds(500));
    elector = std::make_unique<upkeep::controller::Elector>(etcd.get(), el);
    upkeep::controller::EtcdStore* fenced = etcd_store.get();
    if (absl::Status st = elector->Start(
            [fenced](const upkeep::controller::Fence& f) {
              fenced->SetFence(f);
              g_elected = true;
            },
            [fenced] {
              fenced->SetFence(std::nullopt);  // no write from here on
              g_lost = true;
            });
        !st.ok()) {
      UPKEEP_LOG(critical, "etcd_failed", {{"error", std::string(st.message())}});
      return 1;
    }
    registry = std::make_unique<upkeep::controller::ReplicaRegistry>(etcd_store.get(),
                                                                     elector.get(), advertise);
    registry->Start();
    UPKEEP_LOG(info, "follower_started",
               {{"listen", absl::GetFlag(FLAGS_listen)},
                {"advertise", advertise},
                {"etcd", absl::GetFlag(FLAGS_etcd_endpoints)}});
  }
  upkeep::controller::Store* const store_ptr = on_etcd ? etcd_store.get() : store->get();
  upkeep::controller::ControllerServiceImpl controllers(
      [&registry, &advertise]() -> absl::StatusOr<upkeep::v1::ListControllersResponse> {
        if (registry != nullptr) return registry->List();
        upkeep::v1::ListControllersResponse r;
        r.set_store("sqlite");
        r.set_leader(advertise);
        auto* me = r.add_replicas();
        me->set_address(advertise);
        me->set_role("leader");
        return r;
      });
  upkeep::controller::Metrics metrics;
  upkeep::controller::ReconcilerOptions options;
  options.retention.events_max_age = absl::GetFlag(FLAGS_retain_events_for);
  options.retention.events_max_count = absl::GetFlag(FLAGS_retain_events);
  options.retention.actions_max_age = absl::GetFlag(FLAGS_retain_actions_for);
  options.retention.actions_max_count = absl::GetFlag(FLAGS_retain_actions);
  if (absl::GetFlag(FLAGS_max_actions_per_second) < 1) {
    UPKEEP_LOG(critical, "bad_flag", {{"error", "--max-actions-per-second must be at least 1"}});
    return 1;
  }
  options.dispatch.max_actions_per_second = absl::GetFlag(FLAGS_max_actions_per_second);
  // Nothing listens off loopback without mutual TLS, unless the operator insists.
  const std::string listen = absl::GetFlag(FLAGS_listen);
  const bool tls = !absl::GetFlag(FLAGS_tls_cert).empty();
  if (tls && (absl::GetFlag(FLAGS_tls_key).empty() || absl::GetFlag(FLAGS_tls_ca).empty())) {
    UPKEEP_LOG(critical, "tls_flags",
               {{"error", "--tls-cert, --tls-key and --tls-ca go together"}});
    return 1;
  }
  if (!tls && !upkeep::IsLoopbackAddress(listen)) {
    if (!absl::GetFlag(FLAGS_insecure)) {
      UPKEEP_LOG(critical, "refusing_plaintext",
                 {{"listen", listen},
                  {"error",
                   "not loopback and no TLS: give --tls-cert/--tls-key/--tls-ca "
                   "(upkeepctl tls), or --insecure to accept the risk"}});
      return 1;
    }
    UPKEEP_LOG(warn, "insecure_listen",
               {{"listen", listen},
                {"note", "plaintext gRPC off loopback: anyone who reaches it can run commands"}});
  }
  std::unique_ptr<upkeep::controller_auth::TokenStore> tokens;
  // Plaintext only where the check above allowed it (loopback, or --insecure).
  std::shared_ptr<grpc::ServerCredentials> credentials;
  if (!tls) {
    credentials = grpc::InsecureServerCredentials();
  } else {
    auto opened = upkeep::controller_auth::TokenStore::Open(absl::GetFlag(FLAGS_data));
    if (!opened.ok()) {
      UPKEEP_LOG(critical, "tokens_open_failed",
                 {{"error", std::string(opened.status().message())}});
      return 1;
    }
    tokens = std::move(*opened);
    auto creds = upkeep::controller_auth::SecureServerCredentials(
        absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_tls_ca),
        tokens.get());
    if (!creds.ok()) {
      UPKEEP_LOG(critical, "tls_failed", {{"error", std::string(creds.status().message())}});
      return 1;
    }
    credentials = *creds;
  }
  // (etcd: the follower phase first; the reconciler loads the store once this replica leads.)
  std::unique_ptr<grpc::Server> follower_server;
  int follower_port = 0;
  // The follower's server and the leader's: the same port, limits, keepalive and --grpc-args.
  auto serve = [&](grpc::ServerBuilder* builder, int* port) {
    builder->AddListeningPort(listen, credentials, port);
    builder->SetMaxReceiveMessageSize(absl::GetFlag(FLAGS_max_message_bytes));
    builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
    builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
    builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
    builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
    for (const GrpcArg& a : *grpc_args) {
      if (a.number.has_value()) {
        builder->AddChannelArgument(a.name, *a.number);
      } else {
        builder->AddChannelArgument(a.name, a.text);
      }
    }
  };
  std::unique_ptr<upkeep::controller::FollowerFleetService> follower_fleet;
  if (on_etcd) {
    follower_fleet = std::make_unique<upkeep::controller::FollowerFleetService>(etcd_store.get(),
                                                                                registry.get());
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder fb;
    serve(&fb, &follower_port);
    fb.RegisterService(follower_fleet.get());
    fb.RegisterService(&controllers);
    follower_server = fb.BuildAndStart();
    if (follower_server == nullptr || follower_port == 0) {
      UPKEEP_LOG(critical, "listen_failed", {{"address", absl::GetFlag(FLAGS_listen)}});
      return 1;
    }
    while (!g_elected && !g_lost && !g_stop) {
      absl::SleepFor(absl::Milliseconds(20));  // signal and election polling
    }
    follower_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    follower_server.reset();
    if (!g_elected) {
      registry->Stop();
      elector->Stop();
      UPKEEP_LOG(info, "controller_stopped", {{"role", "follower"}});
      return g_lost ? 3 : 0;
    }
    UPKEEP_LOG(info, "leading", {{"advertise", advertise}});
  }
  auto reconciler =
      upkeep::controller::Reconciler::Create(store_ptr, upkeep::Clock::Real(), &metrics, options);
  if (!reconciler.ok()) {
    UPKEEP_LOG(critical, "reconciler_failed",
               {{"error", std::string(reconciler.status().message())}});
    return 1;
  }
  upkeep::controller::AgentServiceOptions agent_options;
  agent_options.authorize_hello = [tls](grpc::CallbackServerContext* ctx, const std::string& host) {
    absl::Status st = upkeep::controller_auth::AuthorizeHello(
        upkeep::controller_auth::PrincipalOf(*ctx), host, tls);
    if (st.ok()) return grpc::Status::OK;
    return grpc::Status(absl::IsUnauthenticated(st) ? grpc::StatusCode::UNAUTHENTICATED
                                                    : grpc::StatusCode::PERMISSION_DENIED,
                        std::string(st.message()));
  };
  upkeep::controller::AgentServiceImpl agents(reconciler->get(), agent_options);
  (*reconciler)->SetHub(&agents);
  upkeep::controller::FleetServiceImpl fleet(reconciler->get(), store_ptr);
  // Notifiers deliver on threads of their own; the bus only hands them copies.
  upkeep::controller::Reconciler* rec = reconciler->get();
  // In the store (shared by the replicas on etcd); a single controller imports an old
  // DATA/notifiers.pb once.
  auto notifiers = upkeep::notify::NotifyService::Open(
      store_ptr,
      [rec](const std::string& name) -> std::optional<upkeep::v1::Stack> {
        auto s = rec->GetStack(name);
        if (!s.ok()) return std::nullopt;
        return *std::move(s);
      },
      &metrics, on_etcd ? "" : absl::GetFlag(FLAGS_data));
  if (!notifiers.ok()) {
    UPKEEP_LOG(critical, "notifiers_open_failed",
               {{"error", std::string(notifiers.status().message())}});
    return 1;
  }
  (*notifiers)->Attach(rec->events());
  fleet.SetNotifiers(notifiers->get());

  grpc::EnableDefaultHealthCheckService(true);
  // Server reflection: generic tools (grpcurl, grpc_cli) list and call FleetService. On a TLS
  // port it needs the viewer role like any read.
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  serve(&builder, &port);
  builder.RegisterService(&agents);
  builder.RegisterService(&fleet);
  builder.RegisterService(&controllers);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    UPKEEP_LOG(critical, "listen_failed", {{"address", absl::GetFlag(FLAGS_listen)}});
    return 1;
  }
  // The status page and /metrics. Plaintext only where gRPC may be plaintext; with TLS it is
  // HTTPS and wants a viewer (controller/http/status_server.h).
  std::string http = absl::GetFlag(FLAGS_http);
  if (!absl::GetFlag(FLAGS_metrics).empty()) http = absl::GetFlag(FLAGS_metrics);
  std::unique_ptr<upkeep::controller::StatusServer> status_server;
  if (http != "off" && !http.empty()) {
    if (!tls && !upkeep::IsLoopbackAddress(http) && !absl::GetFlag(FLAGS_insecure)) {
      UPKEEP_LOG(
          critical, "refusing_plaintext",
          {{"http", http}, {"error", "not loopback and no TLS: give --tls-* or --insecure"}});
      return 1;
    }
    upkeep::controller::StatusServerOptions http_options;
    http_options.address = http;
    http_options.metrics = &metrics;
    http_options.events = rec->events();
    upkeep::controller::Store* st = store_ptr;
    http_options.state = [rec, st] { return upkeep::controller::StateJson(rec, st); };
    if (tls) {
      http_options.tls_cert = absl::GetFlag(FLAGS_tls_cert);
      http_options.tls_key = absl::GetFlag(FLAGS_tls_key);
      http_options.tls_ca = absl::GetFlag(FLAGS_tls_ca);
      http_options.tokens = tokens.get();
    }
    auto m = upkeep::controller::StatusServer::Start(std::move(http_options));
    if (!m.ok()) {
      // Not fatal: the controller heals without its page (another process may hold the port).
      UPKEEP_LOG(error, "http_failed", {{"error", std::string(m.status().message())}});
    } else {
      status_server = std::move(*m);
      const size_t colon = http.rfind(':');
      UPKEEP_LOG(info, "status_page",
                 {{"url", absl::StrCat(tls ? "https://" : "http://", http.substr(0, colon), ":",
                                       status_server->port(), "/")}});
    }
  }
  (*reconciler)->Start();
  UPKEEP_LOG(info, "controller_started",
             {{"listen", absl::GetFlag(FLAGS_listen)},
              {"port", absl::StrCat(port)},
              {"data", absl::GetFlag(FLAGS_data)}});

  const std::string dir = absl::GetFlag(FLAGS_manifests);
  std::map<std::string, std::pair<int64_t, int64_t>> seen;
  while (!g_stop && !g_lost) {
    if (!dir.empty()) {
      auto now = Scan(dir);
      if (now != seen) {
        seen = std::move(now);
        ApplyDir(dir, reconciler->get());
      }
    }
    absl::SleepFor(absl::Milliseconds(200));  // signal and manifest-change polling
  }
  UPKEEP_LOG(info, "controller_stopping", {});
  agents.Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  status_server.reset();
  (*notifiers)->Stop();
  (*reconciler)->Stop();
  if (registry != nullptr) registry->Stop();
  if (elector != nullptr) elector->Stop();  // resigns: a follower takes over at once
  UPKEEP_LOG(info, "controller_stopped", {});
  return g_lost ? 3 : 0;
}

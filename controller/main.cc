// upkeep-controller --data DIR --listen ADDR [--manifests DIR] [--metrics ADDR] [--log-json]
// Wires the store, the reconciler, the gRPC services (AgentService, FleetService, health) and
// the metrics endpoint together; applies a manifests directory at start and when it changes.
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <map>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "controller/api/agent_service.h"
#include "controller/api/fleet_service.h"
#include "controller/auth/authenticator.h"
#include "controller/auth/principal.h"
#include "controller/auth/token_command.h"
#include "controller/auth/token_store.h"
#include "controller/http/state_json.h"
#include "controller/http/status_server.h"
#include "controller/metrics/metrics.h"
#include "controller/notify/notify_service.h"
#include "controller/reconcile/reconciler.h"
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
ABSL_FLAG(absl::Duration, retain_events_for, absl::Hours(24 * 7),
          "events older than this are deleted from the store");
ABSL_FLAG(int64_t, retain_events, 100000, "the store keeps at most this many events");
ABSL_FLAG(absl::Duration, retain_actions_for, absl::Hours(24 * 30),
          "action records older than this are deleted from the store");
ABSL_FLAG(int64_t, retain_actions, 100000, "the store keeps at most this many action records");

namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

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
  upkeep::InitLogging("controller", absl::GetFlag(FLAGS_log_json), spdlog::level::info);
  ::signal(SIGINT, OnSignal);
  ::signal(SIGTERM, OnSignal);
  ::signal(SIGPIPE, SIG_IGN);

  auto store = upkeep::controller::OpenSqliteStore(absl::GetFlag(FLAGS_data));
  if (!store.ok()) {
    UPKEEP_LOG(critical, "store_open_failed", {{"error", std::string(store.status().message())}});
    return 1;
  }
  upkeep::controller::Metrics metrics;
  upkeep::controller::ReconcilerOptions options;
  options.retention.events_max_age = absl::GetFlag(FLAGS_retain_events_for);
  options.retention.events_max_count = absl::GetFlag(FLAGS_retain_events);
  options.retention.actions_max_age = absl::GetFlag(FLAGS_retain_actions_for);
  options.retention.actions_max_count = absl::GetFlag(FLAGS_retain_actions);
  auto reconciler = upkeep::controller::Reconciler::Create(store->get(), upkeep::Clock::Real(),
                                                           &metrics, options);
  if (!reconciler.ok()) {
    UPKEEP_LOG(critical, "reconciler_failed",
               {{"error", std::string(reconciler.status().message())}});
    return 1;
  }
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
  upkeep::controller::FleetServiceImpl fleet(reconciler->get(), store->get());
  // Notifiers deliver on threads of their own; the bus only hands them copies.
  upkeep::controller::Reconciler* rec = reconciler->get();
  auto notifiers = upkeep::notify::NotifyService::Open(
      absl::GetFlag(FLAGS_data),
      [rec](const std::string& name) -> std::optional<upkeep::v1::Stack> {
        auto s = rec->GetStack(name);
        if (!s.ok()) return std::nullopt;
        return *std::move(s);
      },
      &metrics);
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
  builder.AddListeningPort(listen, credentials, &port);
  builder.SetMaxReceiveMessageSize(absl::GetFlag(FLAGS_max_message_bytes));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.RegisterService(&agents);
  builder.RegisterService(&fleet);
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
    upkeep::controller::Store* st = store->get();
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
  while (!g_stop) {
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
  UPKEEP_LOG(info, "controller_stopped", {});
  return 0;
}

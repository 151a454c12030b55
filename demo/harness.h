// StackHarness: a whole upkeep installation on loopback, for `make demo` and the e2e suite.
// It writes an nginx config and the demo stack's manifest (manifests/demo.yaml or
// manifests/demo-docker.yaml, with ports and paths rewritten for this run), starts a real
// upkeep-controller and one upkeep-agent as child processes, applies the manifest through
// FleetService and lets upkeep bring the stack up (the agent starts the services and nginx).
// Faults are injected for real (HTTP fault endpoints of the sample service, signals to nginx,
// a bad nginx config). Everything it started is stopped by Stop() / the destructor.
// Not thread-safe: one owner drives it.
#ifndef UPKEEP_DEMO_HARNESS_H_
#define UPKEEP_DEMO_HARNESS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "tests/support/subprocess.h"
#include "upkeep/v1/fleet_service.grpc.pb.h"

namespace upkeep::demo {

enum class Runtime { kProcess, kDocker };

struct HarnessOptions {
  std::string work_dir;    // data dirs, nginx prefix, logs (must exist)
  std::string source_dir;  // repository root (manifests/)
  std::string bin_dir;     // upkeep binaries
  Runtime runtime = Runtime::kProcess;
  std::string docker_socket;  // docker runtime: the private dockerd's socket
  std::string docker_image;   // docker runtime: image holding /upkeep-sample-service
  bool fixed_ports = false;   // keep the manifest's ports (the demo) instead of ephemeral ones
  bool dry_run = false;
  bool with_db = false;            // add a `db` service the backend depends on
  bool crash_loop = false;         // the backend exits shortly after every start
  int restart_budget = 0;          // 0: the manifest's
  std::string backoff_initial;     // e.g. "200ms"; empty: the manifest's
  std::string backoff_max;         // e.g. "1ms" (no backoff: heal_bench); empty: 30s
  int max_actions_per_minute = 0;  // 0: the manifest's (30)
  std::string host_id = "demo";
  // Mutual TLS between every piece, with a CA made in work_dir/pki (the secure path is the
  // tested one). `pki/` is also an UPKEEP_TLS_DIR for upkeepctl (an admin certificate).
  bool tls = true;
  // Extra environment for the controller ("NAME=VALUE"), e.g. a notifier's webhook URL.
  std::vector<std::string> controller_env;
  // No controller: one `upkeep-agent --standalone -f MANIFEST --data DIR` is the whole system,
  // and fleet() speaks to its unix socket DIR/upkeep.sock (reads and pause only; the manifest
  // file is the desired state, re-read when it changes).
  bool standalone = false;
  // When set (PEM files): nginx also serves /tls/ (proxied to the backend) over https on
  // https_port() with this certificate, and the stack has an https route `/tls/` probed there.
  std::string https_cert;
  std::string https_key;
  // Process runtime: the backend's command is run under this prefix (e.g. `ip netns exec NS`)
  // and listens on backend_listen_port (0: the port the stack and nginx expect).
  std::vector<std::string> backend_command_prefix;
  int backend_listen_port = 0;
  // More --allow-exec directories for the agent (the prefix's executable).
  std::vector<std::string> allow_exec;
  // nginx's error_log level: "error" logs every failed upstream connection (upkeep's error-log
  // path); "crit" logs none of them, leaving upkeep only its route probes.
  std::string nginx_error_log_level = "error";
  // The routes' probe.period (e.g. "200ms"); empty: the default (1 s).
  std::string route_probe_period;
  // When set: the backend keeps its state there (sample service --data-dir; a failed save
  // ends it) and the stack names it in the backend's dataPaths.
  std::string backend_data_dir;
};

// One line of what happened, for the demo's timeline.
struct Step {
  absl::Time at;
  std::string what;
};

class StackHarness {
 public:
  static absl::StatusOr<std::unique_ptr<StackHarness>> Start(const HarnessOptions& options);
  ~StackHarness();

  upkeep::v1::FleetService::Stub& fleet() { return *fleet_; }
  const std::string& stack_name() const { return stack_name_; }
  const std::string& controller_address() const { return controller_address_; }
  // The UPKEEP_TLS_DIR for upkeepctl (empty without TLS).
  std::string tls_dir() const { return options_.tls ? options_.work_dir + "/pki" : ""; }
  // The standalone agent's socket (empty unless options.standalone).
  std::string agent_socket() const {
    return options_.standalone ? options_.work_dir + "/agent/upkeep.sock" : "";
  }
  // Flags for an upkeep-agent of `host` (its certificate is issued on first use).
  absl::StatusOr<std::vector<std::string>> AgentTlsFlags(const std::string& host);
  const std::string& manifest_path() const { return manifest_path_; }
  int nginx_port() const { return nginx_port_; }
  int https_port() const { return https_port_; }  // 0 unless options.https_cert
  int backend_port() const { return backend_port_; }
  int frontend_port() const { return frontend_port_; }
  int db_port() const { return db_port_; }
  // The controller's status page (HTTPS when tls).
  int http_port() const { return http_port_; }
  std::string status_url() const {
    return absl::StrCat(options_.tls ? "https" : "http", "://127.0.0.1:", http_port_, "/");
  }
  const std::string& controller_data_dir() const { return controller_data_; }

  // Waits until the stack's Ready condition is True and both routes answer 200 via nginx.
  absl::Status WaitServing(absl::Duration timeout);
  // GET through nginx; -1 on a transport error.
  int ProxyStatus(const std::string& path, absl::Duration timeout = absl::Seconds(2));

  // Faults, each the real thing.
  absl::Status CrashBackend();         // the backend aborts (SIGABRT)
  absl::Status HangBackend();          // the backend stops answering (hung)
  absl::Status StopFrontend();         // the frontend exits 0
  absl::Status CrashDb();              // the db aborts
  absl::Status PoisonNginxUpstream();  // nginx runs a stale config: a healthy backend, 502
  absl::Status SetPaused(bool paused);
  absl::Status StopNginx();              // nginx master quits
  absl::Status MisconfigureNginxPort();  // nginx reloaded with the backend on a wrong port
  absl::Status RestoreNginxConfig();     // the good config back (and reloaded by hand)
  // The upstream moved under a running nginx, in two steps, with upkeep enforcing throughout
  // (nothing is paused). Prepare: an old instance of the backend answers on another port, the
  // running nginx is reloaded to use it (200s through it), and the file on disk is then put
  // back to the backend's real port without a reload, as a deploy that moved the backend and
  // rewrote the config but forgot the reload leaves it. Retire: the old instance is SIGKILLed;
  // from that instant nginx answers 502 for /api/ while the backend is healthy and the file on
  // disk is right (a reload heals it). Retire returns the instant of the kill.
  absl::Status PrepareMovedUpstream();
  absl::StatusOr<absl::Time> RetireMovedUpstream();
  // Docker runtime: SIGKILLs the backend container's main process from the host (what a
  // crash looks like to Docker: a `die` event, no `kill`); returns the instant of the kill.
  absl::StatusOr<absl::Time> KillBackendContainer();

  // Re-applies the manifest in dry-run (or enforce) mode.
  absl::Status SetDryRun(bool dry_run);

  // Controller and agent as processes (fault-tolerance tests).
  absl::Status KillController();
  absl::Status MakePki();
  absl::Status StartController();
  absl::Status KillAgent();
  absl::Status StartAgent();  // the standalone agent too

  absl::StatusOr<std::vector<upkeep::v1::Event>> Events(int64_t after_seq = 0);
  absl::StatusOr<std::vector<upkeep::v1::ActionRecord>> Actions();
  absl::StatusOr<upkeep::v1::DescribeStackResponse> Describe();
  // Highest event seq so far (0 when none).
  int64_t LastEventSeq();

  // Stops agent, controller, services and nginx. Idempotent.
  void Stop();

 private:
  explicit StackHarness(HarnessOptions options) : options_(std::move(options)) {}
  absl::Status Setup();
  absl::Status WriteNginxConfig(int backend_port_in_config);
  absl::Status WriteManifest();
  absl::Status ApplyManifest();
  absl::Status StartStandalone();
  absl::Status NginxSignal(int sig);
  void StopNginxAndWait();
  absl::Status SampleFault(int port, const std::string& path);
  std::vector<std::string> ExtraArgs(const std::string& service) const;
  std::vector<std::pair<std::string, int>> Services() const;
  absl::Status DockerSetup();
  void DockerCleanup();

  HarnessOptions options_;
  std::string stack_name_ = "demo";
  std::string controller_address_;
  std::string manifest_path_;
  std::string nginx_prefix_;
  int controller_port_ = 0;
  int http_port_ = 0;
  std::string controller_data_;
  int nginx_port_ = 0;
  int https_port_ = 0;
  int backend_port_ = 0;
  int frontend_port_ = 0;
  int db_port_ = 0;
  std::unique_ptr<upkeep::testing::Subprocess> controller_;
  std::unique_ptr<upkeep::testing::Subprocess> agent_;
  std::unique_ptr<upkeep::testing::Subprocess> old_upstream_;  // PrepareMovedUpstream's
  std::unique_ptr<upkeep::v1::FleetService::Stub> fleet_;
  bool stopped_ = false;
};

}  // namespace upkeep::demo

#endif  // UPKEEP_DEMO_HARNESS_H_

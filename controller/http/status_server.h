// StatusServer: the controller's HTTP address (--http, default 127.0.0.1:9400). Serves
//   /            the status page (static HTML/CSS/JS embedded in the binary: assets.cc)
//   /api/state   JSON: every host and stack, conditions, last diagnosis (path, findings),
//                recent actions and events
//   /api/events  server-sent events: every controller event as it is published
//   /metrics     Prometheus text (the former MetricsServer); /healthz
// Read-only: nothing here changes the fleet.
//
// Roles: with TLS (cert/key/ca given) it serves HTTPS with the controller's certificate and
// every path but /healthz needs a viewer (or higher): a client certificate from the fleet CA
// with a user identity, or a bearer token (Authorization header, or ?token= once, which sets an
// HttpOnly cookie for the browser). Without TLS it binds only where main allows plaintext
// (loopback) and asks nobody, like the gRPC port.
//
// Threads: cpp-httplib's listener and pool, owned and joined by Stop()/the destructor. Each
// open event stream holds a pool thread; streams are capped (kMaxStreams) and are woken and
// closed by Stop(). The bus callback only copies the event into each stream's queue.
// Thread-safe.
#ifndef UPKEEP_CONTROLLER_HTTP_STATUS_SERVER_H_
#define UPKEEP_CONTROLLER_HTTP_STATUS_SERVER_H_

#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "controller/auth/token_store.h"
#include "controller/events/event_bus.h"
#include "controller/metrics/metrics.h"

namespace httplib {
class Server;
}

namespace upkeep::controller {

struct StatusServerOptions {
  std::string address = "127.0.0.1:9400";
  Metrics* metrics = nullptr;
  EventBus* events = nullptr;  // may be null: no live updates
  // The JSON document of /api/state; called on an HTTP thread.
  std::function<std::string()> state;
  // TLS: all three, or none.
  std::string tls_cert, tls_key, tls_ca;
  controller_auth::TokenStore* tokens = nullptr;  // may be null (certificates only)
};

class StatusServer {
 public:
  static constexpr int kMaxStreams = 64;

  static absl::StatusOr<std::unique_ptr<StatusServer>> Start(StatusServerOptions options);
  ~StatusServer();
  void Stop();
  int port() const { return port_; }
  bool tls() const { return !options_.tls_cert.empty(); }

 private:
  struct Stream {
    absl::Mutex mu;
    absl::CondVar cv;
    std::deque<std::string> queue ABSL_GUARDED_BY(mu);
    bool closed ABSL_GUARDED_BY(mu) = false;
  };
  explicit StatusServer(StatusServerOptions options);
  void Publish(const std::string& data);

  StatusServerOptions options_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  std::unique_ptr<EventBus::Subscription> subscription_;
  absl::Mutex mu_;
  std::list<std::shared_ptr<Stream>> streams_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace upkeep::controller

#endif  // UPKEEP_CONTROLLER_HTTP_STATUS_SERVER_H_

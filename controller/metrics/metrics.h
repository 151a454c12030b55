// Metrics: the controller's Prometheus registry (counters, gauges, histograms with labels) and
// its text exposition; MetricsServer serves it at /metrics (and /healthz) with cpp-httplib.
// Thread-safe.
#ifndef UPKEEP_CONTROLLER_METRICS_METRICS_H_
#define UPKEEP_CONTROLLER_METRICS_METRICS_H_

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace httplib {
class Server;
}

namespace upkeep::controller {

class Metrics {
 public:
  Metrics();
  // `labels` like {{"kind","RESTART_SERVICE"},{"outcome","SUCCEEDED"}}.
  using Labels = std::vector<std::pair<std::string, std::string>>;
  void Inc(const std::string& name, const Labels& labels = {}, double v = 1);
  void Set(const std::string& name, const Labels& labels, double v);
  void Observe(const std::string& name, double seconds);
  std::string Render() const;

 private:
  struct Histogram {
    std::vector<double> bounds;
    std::vector<uint64_t> counts;
    double sum = 0;
    uint64_t count = 0;
  };
  static std::string Key(const std::string& name, const Labels& labels);
  mutable absl::Mutex mu_;
  std::map<std::string, std::string> help_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> types_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, double> values_ ABSL_GUARDED_BY(mu_);  // "name{labels}" -> value
  std::map<std::string, Histogram> histograms_ ABSL_GUARDED_BY(mu_);
};

class MetricsServer {
 public:
  // Listens on "HOST:PORT" in a thread of its own; Stop() (or the destructor) joins it.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& address,
                                                              Metrics* metrics);
  ~MetricsServer();
  int port() const { return port_; }

 private:
  MetricsServer() = default;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace upkeep::controller

#endif  // UPKEEP_CONTROLLER_METRICS_METRICS_H_

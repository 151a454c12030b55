#include "controller/metrics/metrics.h"

#include <httplib.h>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace upkeep::controller {

Metrics::Metrics() {
  absl::MutexLock lock(&mu_);
  const std::vector<std::tuple<std::string, std::string, std::string>> defs = {
      {"upkeep_connected_agents", "gauge", "Agents with an open AgentService stream."},
      {"upkeep_reconciles_total", "counter", "Reconciles of a (stack, host) key."},
      {"upkeep_actions_total", "counter", "Actions by kind and outcome."},
      {"upkeep_observations_total", "counter", "Observations received from agents."},
      {"upkeep_stacks", "gauge", "Stacks by condition."},
      {"upkeep_status_writes_total", "counter",
       "Writes of changed stack statuses to the store (each a batch: one transaction)."},
      {"upkeep_status_saved_total", "counter", "Stack statuses written to the store."},
      {"upkeep_detect_to_action_seconds", "histogram",
       "From the observation that showed a problem to the action being sent."},
      {"upkeep_action_to_healed_seconds", "histogram",
       "From an action being sent to the stack being healthy again."},
      {"upkeep_rate_limit_wait_seconds", "histogram",
       "How long the fleet-wide action rate limit held an action back (only actions it held)."},
  };
  for (const auto& [name, type, help] : defs) {
    types_[name] = type;
    help_[name] = help;
    if (type == "histogram") {
      Histogram h;
      h.bounds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
      h.counts.assign(h.bounds.size(), 0);
      histograms_[name] = h;
    }
  }
  values_["upkeep_connected_agents"] = 0;
  values_["upkeep_reconciles_total"] = 0;
}

std::string Metrics::Key(const std::string& name, const Labels& labels) {
  if (labels.empty()) return name;
  std::string out = name + "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    absl::StrAppend(&out, i ? "," : "", labels[i].first, "=\"", labels[i].second, "\"");
  }
  return out + "}";
}

void Metrics::Inc(const std::string& name, const Labels& labels, double v) {
  absl::MutexLock lock(&mu_);
  values_[Key(name, labels)] += v;
}

void Metrics::Set(const std::string& name, const Labels& labels, double v) {
  absl::MutexLock lock(&mu_);
  values_[Key(name, labels)] = v;
}

void Metrics::Observe(const std::string& name, double seconds) {
  absl::MutexLock lock(&mu_);
  auto it = histograms_.find(name);
  if (it == histograms_.end()) return;
  Histogram& h = it->second;
  for (size_t i = 0; i < h.bounds.size(); ++i) {
    if (seconds <= h.bounds[i]) ++h.counts[i];
  }
  h.sum += seconds;
  ++h.count;
}

std::string Metrics::Render() const {
  absl::MutexLock lock(&mu_);
  std::string out;
  std::string last_name;
  for (const auto& [key, v] : values_) {
    const std::string name = key.substr(0, key.find('{'));
    if (name != last_name) {
      if (help_.count(name)) absl::StrAppend(&out, "# HELP ", name, " ", help_.at(name), "\n");
      absl::StrAppend(&out, "# TYPE ", name, " ", types_.count(name) ? types_.at(name) : "untyped",
                      "\n");
      last_name = name;
    }
    absl::StrAppend(&out, key, " ", absl::StrFormat("%.17g", v), "\n");
  }
  for (const auto& [name, h] : histograms_) {
    absl::StrAppend(&out, "# HELP ", name, " ", help_.at(name), "\n# TYPE ", name, " histogram\n");
    for (size_t i = 0; i < h.bounds.size(); ++i) {
      absl::StrAppend(&out, name, "_bucket{le=\"", absl::StrFormat("%g", h.bounds[i]), "\"} ",
                      h.counts[i], "\n");
    }
    absl::StrAppend(&out, name, "_bucket{le=\"+Inf\"} ", h.count, "\n", name, "_sum ",
                    absl::StrFormat("%.9g", h.sum), "\n", name, "_count ", h.count, "\n");
  }
  return out;
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& address,
                                                                    Metrics* metrics) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(absl::StrCat("bad metrics address ", address));
  }
  std::string host = address.substr(0, colon);
  if (host.size() > 1 && host.front() == '[') host = host.substr(1, host.size() - 2);
  std::unique_ptr<MetricsServer> s(new MetricsServer());
  s->server_ = std::make_unique<httplib::Server>();
  s->server_->Get("/metrics", [metrics](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics->Render(), "text/plain; version=0.0.4");
  });
  s->server_->Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain");
  });
  if (port == 0) {
    s->port_ = s->server_->bind_to_any_port(host);
  } else if (s->server_->bind_to_port(host, port)) {
    s->port_ = port;
  } else {
    s->port_ = -1;
  }
  if (s->port_ <= 0) return absl::UnavailableError(absl::StrCat("cannot listen on ", address));
  httplib::Server* raw = s->server_.get();
  s->thread_ = std::thread([raw] { raw->listen_after_bind(); });
  return s;
}

MetricsServer::~MetricsServer() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace upkeep::controller

#include "core/observation.h"

namespace upkeep {

std::string SemanticKey(upkeep::v1::StackObservation o) {
  o.clear_observed_at();
  o.clear_history();
  o.mutable_host()->clear_last_heard();
  for (auto& s : *o.mutable_services()) {
    s.mutable_probe()->clear_at();
    s.mutable_probe()->clear_latency();
  }
  for (auto& r : *o.mutable_proxy()->mutable_routes()) {
    r.mutable_probe()->clear_at();
    r.mutable_probe()->clear_latency();
  }
  for (auto& e : *o.mutable_proxy()->mutable_upstream_errors()) {
    e.clear_last_seen();
    e.clear_sample();
    e.clear_count();
  }
  o.mutable_proxy()->clear_error_log_excerpt();
  o.mutable_proxy()->mutable_last_config_test()->clear_at();
  return o.SerializeAsString();
}

}  // namespace upkeep

#include "core/decision/conditions.h"

#include "absl/strings/str_cat.h"
#include "core/proto_time.h"

namespace upkeep::decision {

namespace v1 = upkeep::v1;

void UpdateConditions(const v1::Stack& stack, const HostDiagnoses& diagnoses, absl::Time now,
                      v1::StackStatus* status) {
  status->clear_diagnoses();
  bool all_healthy = true, any_degraded = false, any_progress = false, any_unknown = false;
  bool any_degraded_verdict = false;  // an alert with nothing left to do, as opposed to serving
  std::string degraded_msg, progress_msg, unknown_msg;
  for (const auto& [host, d] : diagnoses) {
    if (d == nullptr || d->verdict() == v1::VERDICT_UNSPECIFIED) {
      all_healthy = false;
      any_unknown = true;
      unknown_msg = absl::StrCat("no diagnosis yet for host ", host);
      continue;
    }
    *status->add_diagnoses() = *d;
    switch (d->verdict()) {
      case v1::VERDICT_HEALTHY:
        // Serving, but an alert may stand (a full disk, a service that flapped): Ready stays
        // True (it says whether the stack serves now) and Degraded says the alert.
        for (const auto& f : d->findings()) {
          if (f.severity() != v1::SEVERITY_ALERT) continue;
          any_degraded = true;
          if (!any_degraded_verdict) {
            degraded_msg = absl::StrCat(f.code(), " [", f.target(), "]: ", f.message());
          }
          break;
        }
        break;
      case v1::VERDICT_DEGRADED:
        all_healthy = false;
        any_degraded = true;
        any_degraded_verdict = true;
        degraded_msg = d->summary();
        break;
      case v1::VERDICT_UNKNOWN:
        all_healthy = false;
        any_unknown = true;
        unknown_msg = d->summary();
        break;
      default:
        all_healthy = false;
        any_progress = true;
        progress_msg = d->summary();
    }
  }
  auto set = [&](const std::string& type, const std::string& value, const std::string& reason,
                 const std::string& message) {
    v1::Condition* c = nullptr;
    for (auto& existing : *status->mutable_conditions()) {
      if (existing.type() == type) c = &existing;
    }
    if (c == nullptr) {
      c = status->add_conditions();
      c->set_type(type);
    }
    if (c->status() != value) *c->mutable_last_transition_time() = ToProto(now);
    c->set_status(value);
    c->set_reason(reason);
    c->set_message(message);
  };
  if (all_healthy) {
    set("Ready", "True", "AllHealthy", "every service healthy and every route answers");
  } else if (any_unknown && !any_degraded_verdict && !any_progress) {
    set("Ready", "Unknown", "NoObservation", unknown_msg);
  } else {
    set("Ready", "False", any_degraded_verdict ? "NeedsAttention" : "Repairing",
        any_degraded_verdict ? degraded_msg : progress_msg);
  }
  set("Degraded", any_degraded ? "True" : "False", any_degraded ? "Alert" : "NoAlert",
      degraded_msg);
  set("Progressing", any_progress ? "True" : "False", any_progress ? "Repairing" : "Idle",
      progress_msg);
  status->set_observed_generation(stack.metadata().generation());
}

bool StatusChanged(const v1::StackStatus& a, const v1::StackStatus& b) {
  auto strip = [](v1::StackStatus s) {
    s.clear_diagnoses();
    s.clear_last_reconcile();
    for (auto& c : *s.mutable_conditions()) c.clear_last_transition_time();
    return s.SerializeAsString();
  };
  return strip(a) != strip(b);
}

}  // namespace upkeep::decision

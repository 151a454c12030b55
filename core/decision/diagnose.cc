// Placeholder: replaced by the decision engine implementation.
#include "core/decision/diagnose.h"

namespace upkeep::decision {

upkeep::v1::Diagnosis Diagnose(const upkeep::v1::Stack& desired,
                               const upkeep::v1::StackObservation& observed,
                               absl::Span<const upkeep::v1::ActionRecord>, absl::Time,
                               const DiagnoseOptions&) {
  upkeep::v1::Diagnosis d;
  d.set_stack(desired.metadata().name());
  d.set_host(observed.host().host_id());
  d.set_verdict(upkeep::v1::VERDICT_UNKNOWN);
  return d;
}

}  // namespace upkeep::decision

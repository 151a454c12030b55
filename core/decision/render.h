// Text rendering of a Diagnosis for people: `upkeepctl plan` and `upkeepctl explain`.
#ifndef UPKEEP_CORE_DECISION_RENDER_H_
#define UPKEEP_CORE_DECISION_RENDER_H_

#include <string>

#include "upkeep/v1/diagnosis.pb.h"

namespace upkeep::decision {

// The verdict and summary, the decision path as a tree with its evidence, the findings and
// the planned actions with their policy verdicts.
std::string RenderDiagnosisText(const upkeep::v1::Diagnosis& diagnosis);

// "restart-service" for ACTION_KIND_RESTART_SERVICE, and back.
std::string ActionKindName(upkeep::v1::ActionKind kind);
upkeep::v1::ActionKind ParseActionKind(const std::string& name);

}  // namespace upkeep::decision

#endif  // UPKEEP_CORE_DECISION_RENDER_H_

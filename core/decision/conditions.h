// Conditions: a stack's status across its hosts, Kubernetes-style — Ready, Degraded and
// Progressing with reason, message and last transition time — from each host's latest
// diagnosis. Pure; thread-safe.
#ifndef UPKEEP_CORE_DECISION_CONDITIONS_H_
#define UPKEEP_CORE_DECISION_CONDITIONS_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "upkeep/v1/diagnosis.pb.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::decision {

// One entry per host the stack names, in its order; a null diagnosis: none yet.
using HostDiagnoses = std::vector<std::pair<std::string, const upkeep::v1::Diagnosis*>>;

// Rewrites status.diagnoses and the three conditions (a condition's transition time moves only
// when its status changes) and sets observed_generation.
void UpdateConditions(const upkeep::v1::Stack& stack, const HostDiagnoses& diagnoses,
                      absl::Time now, upkeep::v1::StackStatus* status);

// Whether two statuses differ in anything but diagnoses, last reconcile and transition times
// (i.e. whether the change is worth storing).
bool StatusChanged(const upkeep::v1::StackStatus& a, const upkeep::v1::StackStatus& b);

}  // namespace upkeep::decision

#endif  // UPKEEP_CORE_DECISION_CONDITIONS_H_

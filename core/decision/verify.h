// Verify: the one definition of "healthy" and "fixed", shared by Diagnose (which judges),
// the controller (which verifies its repairs) and the agent. Pure functions; thread-safe.
#ifndef UPKEEP_CORE_DECISION_VERIFY_H_
#define UPKEEP_CORE_DECISION_VERIFY_H_

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "absl/types/span.h"
#include "upkeep/v1/action.pb.h"
#include "upkeep/v1/diagnosis.pb.h"
#include "upkeep/v1/observation.pb.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::decision {

// The target name the decision engine uses for the stack's proxy.
inline constexpr char kProxyTarget[] = "nginx";
// An action unanswered for this long no longer counts as in flight (its agent went away).
inline constexpr absl::Duration kInFlightTimeout = absl::Minutes(2);
// Consecutive proxy repairs count as one escalation while they are this close together.
inline constexpr absl::Duration kEscalationWindow = absl::Minutes(10);

// A service is healthy when it exists, runs, passes its own probe (health tracker) and its
// runtime does not call it unhealthy.
bool ServiceHealthy(const upkeep::v1::ServiceObservation& o);
// A route answers when its probe through the proxy succeeded with an expected status.
bool RouteOk(const upkeep::v1::RouteSpec& spec, const upkeep::v1::RouteObservation& o);
// Whether `target` works again in `observed`: a service healthy; the proxy's master running
// and every route answering.
bool TargetFixed(const upkeep::v1::Stack& desired, const std::string& target,
                 const upkeep::v1::StackObservation& observed);

// Whether a record is a repair whose effect is verified (start, restart, reload...).
bool IsRepair(upkeep::v1::ActionKind kind);

// Verifies earlier repairs in `history` (oldest first) on `observed`, which must be evidence
// gathered after they finished:
//   - a PENDING repair whose target works again is FIXED; one whose target still needs an
//     action (the diagnosis plans one, not merely paused) is NOT_FIXED;
//   - a target that works again ends its escalation: its newest repair counts as the fix, so
//     backoff and the reload -> restart -> alert ladder start afresh next time.
// Returns the indices of the records it changed.
std::vector<size_t> Verify(const upkeep::v1::Stack& desired,
                           const upkeep::v1::StackObservation& observed,
                           const upkeep::v1::Diagnosis& diagnosis,
                           absl::Span<upkeep::v1::ActionRecord> history);

}  // namespace upkeep::decision

#endif  // UPKEEP_CORE_DECISION_VERIFY_H_

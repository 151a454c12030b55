// Policy: may this action run now? Per-target exponential backoff, restart budget per window,
// per-stack rate limit, dry-run, pause. Pure functions of (spec, history, now).
#ifndef UPKEEP_CORE_POLICY_POLICY_H_
#define UPKEEP_CORE_POLICY_POLICY_H_

#include "absl/time/time.h"
#include "absl/types/span.h"
#include "upkeep/v1/action.pb.h"
#include "upkeep/v1/diagnosis.pb.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::policy {

}  // namespace upkeep::policy

#endif  // UPKEEP_CORE_POLICY_POLICY_H_

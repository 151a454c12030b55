// What an observation says, without what changes on every probe (times, latencies, counts):
// two observations with the same key need no new decision. Used by the agent (send only on
// change) and the controller (reconcile only on change).
#ifndef UPKEEP_CORE_OBSERVATION_H_
#define UPKEEP_CORE_OBSERVATION_H_

#include <string>

#include "upkeep/v1/observation.pb.h"

namespace upkeep {

std::string SemanticKey(upkeep::v1::StackObservation o);

}  // namespace upkeep

#endif  // UPKEEP_CORE_OBSERVATION_H_

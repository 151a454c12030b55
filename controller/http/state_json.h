// The status page's document (/api/state): hosts, stacks with conditions and last diagnoses,
// recent actions and events, as JSON (protobuf field names in lowerCamel, as proto3 JSON).
// Reads the reconciler and the store; called on an HTTP thread. Thread-safe.
#ifndef UPKEEP_CONTROLLER_HTTP_STATE_JSON_H_
#define UPKEEP_CONTROLLER_HTTP_STATE_JSON_H_

#include <string>

#include "controller/reconcile/reconciler.h"
#include "controller/store/store.h"

namespace upkeep::controller {

// {"now", "hosts": [Host], "stacks": [Stack], "actions": [ActionRecord], "events": [Event]}
std::string StateJson(Reconciler* reconciler, Store* store, int max_actions = 30,
                      int max_events = 60);

}  // namespace upkeep::controller

#endif  // UPKEEP_CONTROLLER_HTTP_STATE_JSON_H_

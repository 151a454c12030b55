// The seam between the AgentService (gRPC reactors, one bidi stream per host) and the
// reconciler.
//   AgentListener: what the service reports; implemented by the reconciler. Called on gRPC
//     reactor threads: implementations must not block or take contended locks (hand the work
//     to a queue).
//   AgentHub: how the reconciler talks to connected agents; implemented by the service.
//     Thread-safe and never blocks (messages wait in the stream's outbound queue).
#ifndef UPKEEP_CONTROLLER_API_AGENT_HUB_H_
#define UPKEEP_CONTROLLER_API_AGENT_HUB_H_

#include <string>
#include <vector>

#include "upkeep/v1/agent_service.pb.h"

namespace upkeep::controller {

class AgentListener {
 public:
  virtual ~AgentListener() = default;
  // A stream said hello. A second stream for the same host replaces the first (the old one
  // is finished with ABORTED, and OnDisconnected is not called for it).
  virtual void OnConnected(const std::string& host_id, const upkeep::v1::Hello& hello) = 0;
  virtual void OnObservation(const std::string& host_id,
                             upkeep::v1::ObservationReport report) = 0;
  virtual void OnActionResult(const std::string& host_id, upkeep::v1::ActionResult result) = 0;
  virtual void OnDisconnected(const std::string& host_id) = 0;
};

class AgentHub {
 public:
  virtual ~AgentHub() = default;
  // Queues `message` on the host's stream. False when the host is not connected.
  virtual bool Send(const std::string& host_id, upkeep::v1::ControllerMessage message) = 0;
  virtual std::vector<std::string> ConnectedHosts() const = 0;
};

}  // namespace upkeep::controller

#endif  // UPKEEP_CONTROLLER_API_AGENT_HUB_H_

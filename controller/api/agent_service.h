// AgentServiceImpl: serves upkeep.v1.AgentService.Connect with the gRPC callback API, one
// ServerBidiReactor per stream (no thread per agent). It is also the AgentHub the reconciler
// sends through. Reactor rules: at most one read and one write in flight, an outbound queue
// per stream, Finish exactly once, never block inside a reaction; the reactor deletes itself
// in OnDone. Thread-safe.
#ifndef UPKEEP_CONTROLLER_API_AGENT_SERVICE_H_
#define UPKEEP_CONTROLLER_API_AGENT_SERVICE_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "controller/api/agent_hub.h"
#include "upkeep/v1/agent_service.grpc.pb.h"

namespace upkeep::controller {

struct AgentServiceOptions {
  // Streams whose first message is not a valid Hello within this time are finished.
  int hello_timeout_ms = 10000;
  // Outbound messages queued per stream before the stream is considered stuck and finished.
  size_t max_outbound_queue = 1024;
  // Called with each stream's hello before it is accepted (e.g. "an agent certificate says
  // hello only as its own host"). A non-OK status finishes that stream only; the host's
  // current stream is not touched. Unset: every well-formed hello is accepted.
  std::function<grpc::Status(grpc::CallbackServerContext* context, const std::string& host_id)>
      authorize_hello;
};

class AgentServiceImpl : public upkeep::v1::AgentService::CallbackService, public AgentHub {
 public:
  // `listener` must outlive the service.
  AgentServiceImpl(AgentListener* listener, AgentServiceOptions options = {});
  ~AgentServiceImpl() override;

  grpc::ServerBidiReactor<upkeep::v1::AgentMessage, upkeep::v1::ControllerMessage>* Connect(
      grpc::CallbackServerContext* context) override;

  bool Send(const std::string& host_id, upkeep::v1::ControllerMessage message) override;
  std::vector<std::string> ConnectedHosts() const override;

  // Finishes every open stream (UNAVAILABLE) so that server Shutdown completes promptly.
  void Shutdown();

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace upkeep::controller

#endif  // UPKEEP_CONTROLLER_API_AGENT_SERVICE_H_

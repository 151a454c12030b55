// DockerRuntime: the Runtime (agent/runtime/runtime.h) for Docker containers, over the Docker
// Engine API on its unix socket (libcurl), with an /events subscription for instant change
// notification.
#ifndef UPKEEP_AGENT_RUNTIME_DOCKER_DOCKER_RUNTIME_H_
#define UPKEEP_AGENT_RUNTIME_DOCKER_DOCKER_RUNTIME_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "agent/runtime/runtime.h"

namespace upkeep::agent {

// Containers are found by compose labels (ServiceSpec.container.compose: project/service, the
// running one or else the newest) or by name (container.name, else the service name). The API
// version is min(server ApiVersion, 1.41). One runtime serves every Docker stack on the host:
// each Watch is its own subscription. The first Watch starts one thread on GET /events
// (container events, matched to each subscription's services client-side) that reconnects with
// backoff (100ms..2s) and, after a reconnect, reports every watched service as changed.
//
// `socket_path` e.g. /var/run/docker.sock. Fails only on unusable arguments; an unreachable
// daemon shows up as ServiceObservation.error (and the events stream keeps reconnecting).
absl::StatusOr<std::unique_ptr<Runtime>> CreateDockerRuntime(const std::string& socket_path);

// Decodes Docker's multiplexed log stream (8-byte headers: stream, 0, 0, 0, big-endian size)
// into the concatenated payload; input that is not multiplexed is returned as is.
std::string DemuxDockerStream(const std::string& raw);

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_RUNTIME_DOCKER_DOCKER_RUNTIME_H_

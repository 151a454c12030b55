// DockerRuntime: the Runtime (agent/observe/runtime.h) for Docker containers, over the Docker
// Engine API on its unix socket (libcurl), with an /events subscription for instant change
// notification.
#ifndef UPKEEP_AGENT_DOCKER_DOCKER_RUNTIME_H_
#define UPKEEP_AGENT_DOCKER_DOCKER_RUNTIME_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "agent/observe/runtime.h"

namespace upkeep::agent {

// `socket_path` e.g. /var/run/docker.sock. Fails only on unusable arguments; an unreachable
// daemon shows up as ServiceObservation.error (and the events stream keeps reconnecting).
absl::StatusOr<std::unique_ptr<Runtime>> CreateDockerRuntime(const std::string& socket_path);

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_DOCKER_DOCKER_RUNTIME_H_

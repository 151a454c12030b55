// Placeholder: replaced by the Docker runtime implementation.
#include "agent/docker/docker_runtime.h"

namespace upkeep::agent {

absl::StatusOr<std::unique_ptr<Runtime>> CreateDockerRuntime(const std::string&) {
  return absl::UnimplementedError("docker runtime not implemented yet");
}

}  // namespace upkeep::agent

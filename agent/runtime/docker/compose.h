// Recreates a missing Compose service the way the runbook does by hand:
//   docker compose -p PROJECT -f FILE [--profile PROFILE] up -d --no-deps SERVICE
// with whichever Compose the host has: the `docker compose` plugin, else Debian's
// `docker-compose` (v1). `--no-deps`: only the named service, never its dependencies (upkeep
// judges those itself). The Docker endpoint is passed with -H so Compose talks to the same
// daemon the runtime watches. Runs argv directly (no shell); thread-safe.
#ifndef UPKEEP_AGENT_RUNTIME_DOCKER_COMPOSE_H_
#define UPKEEP_AGENT_RUNTIME_DOCKER_COMPOSE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::agent {

// The command, given the Compose front end found on PATH (`{"docker", "compose"}` or
// `{"docker-compose"}`), for the service `ref` names, against the daemon at `docker_socket`.
std::vector<std::string> ComposeUpArgv(const std::vector<std::string>& compose,
                                       const upkeep::v1::ComposeRef& ref,
                                       const std::string& docker_socket);

// Which Compose this host has; NotFound when neither.
absl::StatusOr<std::vector<std::string>> FindCompose(absl::Duration timeout);

// Runs it. Returns (and on failure, puts in the error) "$ COMMAND\nOUTPUT", for the audit log.
absl::StatusOr<std::string> ComposeUp(const upkeep::v1::ComposeRef& ref,
                                      const std::string& docker_socket, absl::Duration timeout);

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_RUNTIME_DOCKER_COMPOSE_H_

// Runs a command (argv, no shell) with a deadline and returns its exit code and output
// (stdout+stderr, bounded). Output goes through a memfd, so a command that daemonizes (nginx)
// returns as soon as the launcher exits.
#ifndef UPKEEP_AGENT_BASE_COMMAND_H_
#define UPKEEP_AGENT_BASE_COMMAND_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace upkeep::agent {

struct CommandResult {
  int exit_code = -1;  // 128+signal when killed
  std::string output;
};

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         absl::Duration timeout, size_t max_output = 16 << 10);

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_BASE_COMMAND_H_

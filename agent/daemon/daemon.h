// The agent daemon: `upkeep-agent --controller ADDR --host-id ID --data DIR`. Connects to the
// controller's AgentService, reports observations, executes actions; cut off from the
// controller for --autonomous-after it decides for its host alone (agent/autonomy).
#ifndef UPKEEP_AGENT_DAEMON_DAEMON_H_
#define UPKEEP_AGENT_DAEMON_DAEMON_H_

namespace upkeep::agent {

// Parses daemon flags from argv and runs until SIGINT/SIGTERM. Returns the exit code.
int RunDaemon(int argc, char** argv);

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_DAEMON_DAEMON_H_

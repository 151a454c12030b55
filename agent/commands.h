// `upkeep-agent observe` and `upkeep-agent act`: one-shot commands for operators.
// argv[0] is the subcommand name. Return the process exit code.
#ifndef UPKEEP_AGENT_COMMANDS_H_
#define UPKEEP_AGENT_COMMANDS_H_

namespace upkeep::agent {

int RunObserveCommand(int argc, char** argv);
int RunActCommand(int argc, char** argv);

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_COMMANDS_H_

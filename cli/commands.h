// upkeepctl subcommands. argv[0] is the subcommand name; each returns the exit code.
// Output for people goes to stdout; errors are one line on stderr.
#ifndef UPKEEP_CLI_COMMANDS_H_
#define UPKEEP_CLI_COMMANDS_H_

namespace upkeep::cli {

// validate -f PATH
int RunValidate(int argc, char** argv);
// plan -f STACK.yaml --observed SNAPSHOT.json [-o json|text]   (offline)
int RunPlanOffline(int argc, char** argv);
// Everything that talks to a controller (apply, get, describe, explain, plan stack NAME,
// events, actions, pause, resume, run).
int RunFleetCommand(int argc, char** argv);
// completion bash
int RunCompletion(int argc, char** argv);

}  // namespace upkeep::cli

#endif  // UPKEEP_CLI_COMMANDS_H_

// upkeepctl: dispatch only.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/tls.h"

namespace {

constexpr char kUsage[] =
    "usage: upkeepctl COMMAND [flags]\n"
    "offline:\n"
    "  validate -f FILE|DIR                       check manifests\n"
    "  plan -f STACK.yaml --observed SNAP.json    diagnose a snapshot [-o json|text]\n"
    "       [--now RFC3339] [--paused]            (now: --now or the clock, not the snapshot)\n"
    "  tls init|issue --dir DIR ...               the fleet's CA and certificates\n"
    "  completion bash                            shell completions\n"
    "against a controller (--controller ADDR, default $UPKEEP_CONTROLLER or localhost:7400):\n"
    "  apply -f FILE|DIR       get stacks|hosts      describe stack NAME\n"
    "  explain stack NAME      plan stack NAME       events [--watch] [--stack NAME]\n"
    "  actions [--stack NAME]  pause|resume stack NAME|host ID  (pause ... --for 30m)\n"
    "  run ACTION --stack NAME --target T          get controllers (replicas on etcd)\n"
    "  diff -f FILE|DIR        get notifiers         notify test NAME\n"
    "  delete stack NAME|notifier NAME\n"
    "against a standalone agent (--agent DATA/upkeep.sock): get, describe, explain, events,\n"
    "  actions, pause, resume\n"
    "output: -o table|json|yaml\n";

bool HasFlag(int argc, char** argv, const char* flag) {
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], flag) == 0) return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  // Connection flags may come before the command: `upkeepctl --agent DIR/upkeep.sock get stacks`.
  std::vector<char*> args(argv, argv + argc);
  size_t first = 1;
  while (first < args.size() && args[first][0] == '-' && std::strcmp(args[first], "-h") != 0 &&
         std::strcmp(args[first], "--help") != 0) {
    const bool boolean = std::strcmp(args[first], "--insecure") == 0;
    first += boolean ? 1 : 2;
  }
  if (first > 1 && first < args.size()) {
    std::rotate(args.begin() + 1, args.begin() + first, args.begin() + first + 1);
    argv = args.data();
  }
  if (argc < 2 || std::strcmp(argv[1], "-h") == 0 || std::strcmp(argv[1], "--help") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  if (cmd == "validate") return upkeep::cli::RunValidate(argc - 1, argv + 1);
  if (cmd == "tls") return upkeep::cli::RunTls(argc - 1, argv + 1);
  if (cmd == "completion") return upkeep::cli::RunCompletion(argc - 1, argv + 1);
  if (cmd == "plan" && HasFlag(argc, argv, "--observed")) {
    return upkeep::cli::RunPlanOffline(argc - 1, argv + 1);
  }
  return upkeep::cli::RunFleetCommand(argc - 1, argv + 1);
}

// upkeep-agent: `observe` / `act` run once against a manifest; with no subcommand it is the
// daemon that connects to the controller; with --standalone it is the whole system alone. This file
// only dispatches.
#include <cstring>
#include <string>

#include "absl/synchronization/mutex.h"
#include "agent/commands.h"
#include "agent/daemon/daemon.h"
#include "agent/standalone/standalone.h"

int main(int argc, char** argv) {
  // As in the controller (controller/main.cc): Debian's abseil is a debug build whose Mutex
  // keeps a process-wide lock graph on every nested acquisition; the daemon does not pay for it
  // (unit tests keep the check).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  if (argc >= 2 && std::strcmp(argv[1], "observe") == 0) {
    return upkeep::agent::RunObserveCommand(argc - 1, argv + 1);
  }
  if (argc >= 2 && std::strcmp(argv[1], "act") == 0) {
    return upkeep::agent::RunActCommand(argc - 1, argv + 1);
  }
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--standalone") == 0) {
      return upkeep::agent::RunStandalone(argc, argv);
    }
  }
  return upkeep::agent::RunDaemon(argc, argv);
}

// ProcessRuntime: the Runtime for hosts without Docker (and the demo). The agent starts each
// service's command in its own session and process group, sends its stdout/stderr to a
// size-bounded log file, notices its exit at once through a pidfd, and after an agent
// restart adopts the processes it started (pid + start time guard against pid reuse) instead
// of starting twins.
//
// On-disk layout, under DATA/services/<stack>/<service>/:
//   state     "pid starttime_ticks started_at_unix_ms\n" of the running process (absent when
//             stopped by us); "exit CODE finished_at_unix_ms\n" lines appended on exit
//   output.log, output.log.1   the service's stdout+stderr, rotated at 1 MiB
// One runtime per stack (RuntimeRegistry::Scope::kStack). Thread-safe. Owns one monitor thread,
// joined in the destructor.
#ifndef UPKEEP_AGENT_RUNTIME_PROCESS_PROCESS_RUNTIME_H_
#define UPKEEP_AGENT_RUNTIME_PROCESS_PROCESS_RUNTIME_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/runtime/runtime.h"

namespace upkeep::agent {

// Which executables the process runtime may start: those that resolve (PATH searched, symlinks
// followed) under one of `prefixes`. The agent daemon builds it from its own --allow-exec, never
// from anything a controller sends. `unrestricted` is for one-shot commands a person runs.
struct ExecPolicy {
  bool unrestricted = true;
  std::vector<std::string> prefixes;  // directories; empty and restricted: nothing runs
};

// `state_dir` is DATA/services/<stack>. Start refuses (PermissionDenied) a command `exec` does
// not allow.
absl::StatusOr<std::unique_ptr<Runtime>> CreateProcessRuntime(const std::string& state_dir,
                                                              ExecPolicy exec = {});

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_RUNTIME_PROCESS_PROCESS_RUNTIME_H_

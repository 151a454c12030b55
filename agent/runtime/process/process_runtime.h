// ProcessRuntime: the Runtime for hosts without Docker (and the demo). The agent starts each
// service's command in its own session and process group, sends its stdout/stderr to a
// size-bounded log file, notices its exit at once through a pidfd, and after an agent
// restart adopts the processes it started (pid + start time guard against pid reuse) instead
// of starting twins.
//
// On-disk layout, under DATA/services/<stack>/<service>/:
//   state     "pid starttime_ticks started_at_unix_ms\n" of the running process (absent when
//             stopped by us); "exit CODE finished_at_unix_ms\n" of the last exit; "person CAUSE
//             BOOT_ID\n" when a person stopped that run (see below); "restarts N\n"
//   output.log, output.log.1   the service's stdout+stderr, rotated at 1 MiB
// One runtime per stack (RuntimeRegistry::Scope::kStack). Thread-safe. Owns one monitor thread,
// joined in the destructor.
//
// A person's stop (`ServiceObservation.stopped_by_person`, set while the service is not running):
// the kernel does not tell a parent who sent a signal, so the runtime judges from how the run
// ended (its wait status) — see process_internal::PersonStopCause for the rule. Exits inside the
// runtime's own Stop/Restart are never a person's. The verdict is kept in the state file with the
// host's boot id, so it survives an agent restart but not a reboot (a shutdown signals every
// process as a person would). A Start clears it. Processes adopted after an agent restart are not
// this agent's children: their exit status is unknown and their exit is never a person's.
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

namespace process_internal {

// Why a run that ended with wait status `status` (waitpid's) was ended by a person; "" when it
// was not. A person's stop: death by SIGTERM, SIGINT, SIGHUP or SIGQUIT (signals only people and
// service managers send: the service has no terminal, it runs in its own session); death by
// SIGKILL unless the OOM killer may have sent it (`oom_recent`: the host's OOM kill count grew in
// the seconds before the exit, or cannot be read); an exit with 128+N for one of those
// catchable signals (a handler or wrapper reporting it, as the JVM and shells do). Never a
// person's: `own` (the runtime's own Stop/Restart signalled this run), a clean exit or any other
// code (a service that catches SIGTERM and exits 0 cannot be told apart from one that ended by
// itself: use `upkeepctl run stop-service`), crash signals (SIGSEGV, SIGABRT, SIGBUS, ...), and
// any other signal (SIGUSR1, SIGPIPE, SIGXCPU, ...). A false "stopped by a person" would leave
// the service down, so the rule leans to "crash".
std::string PersonStopCause(int status, bool own, bool oom_recent);

}  // namespace process_internal

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_RUNTIME_PROCESS_PROCESS_RUNTIME_H_

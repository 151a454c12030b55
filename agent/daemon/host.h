// Host: the drivers of what the agent manages on this host — the RuntimeRegistry (docker:
// one for the host; process: one per stack under DATA/services/<stack>) and the ProxyDrivers
// (nginx). Created by the daemon or a one-shot command before the observer and the executor,
// destroyed after them.
#ifndef UPKEEP_AGENT_DAEMON_HOST_H_
#define UPKEEP_AGENT_DAEMON_HOST_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "agent/act/executor.h"
#include "agent/observe/observer.h"
#include "agent/proxy/proxy_drivers.h"
#include "agent/runtime/process/process_runtime.h"
#include "agent/runtime/registry.h"

namespace upkeep::agent {

struct HostOptions {
  std::string data_dir;
  std::string docker_socket;  // default /var/run/docker.sock
  ExecPolicy exec;            // what the process runtime may start (the daemon's --allow-exec)
};

struct Host {
  Host();
  RuntimeRegistry runtimes;
  ProxyDrivers proxies;
};

std::unique_ptr<Host> MakeHost(const HostOptions& options);

// What an agent process (the daemon, the standalone agent) observes and acts with: the host's
// drivers, the observer on them and the executor that refreshes it after an action. Declared
// in creation order, so destroyed in reverse: executor, observer (its probes and watches),
// last the runtimes and proxy drivers.
struct AgentHost {
  std::unique_ptr<Host> host;
  std::unique_ptr<StackObserver> observer;
  std::unique_ptr<Executor> executor;
};

// Builds an AgentHost for `host_id`; warns when no process command may run (no --allow-exec).
absl::StatusOr<AgentHost> MakeAgentHost(const HostOptions& options, const std::string& host_id);

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_DAEMON_HOST_H_

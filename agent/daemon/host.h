// Host: the drivers of what the agent manages on this host — the RuntimeRegistry (docker:
// one for the host; process: one per stack under DATA/services/<stack>) and the ProxyDrivers
// (nginx). Created by the daemon or a one-shot command before the observer and the executor,
// destroyed after them.
#ifndef UPKEEP_AGENT_DAEMON_HOST_H_
#define UPKEEP_AGENT_DAEMON_HOST_H_

#include <memory>
#include <string>

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

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_DAEMON_HOST_H_

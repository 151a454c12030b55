#include "agent/daemon/host.h"

#include "absl/strings/str_cat.h"
#include "agent/proxy/nginx/nginx_driver.h"
#include "agent/runtime/docker/docker_runtime.h"
#include "agent/runtime/process/process_runtime.h"
#include "core/log.h"

namespace upkeep::agent {

Host::Host() : proxies(CreateNginxDriver) {}

std::unique_ptr<Host> MakeHost(const HostOptions& options) {
  auto host = std::make_unique<Host>();
  const std::string socket =
      options.docker_socket.empty() ? "/var/run/docker.sock" : options.docker_socket;
  host->runtimes.Register(upkeep::v1::RUNTIME_KIND_DOCKER, RuntimeRegistry::Scope::kHost,
                          [socket](const std::string&) { return CreateDockerRuntime(socket); });
  // A stack that names no runtime is a process stack (as before the registry).
  for (upkeep::v1::RuntimeKind kind :
       {upkeep::v1::RUNTIME_KIND_PROCESS, upkeep::v1::RUNTIME_KIND_UNSPECIFIED}) {
    host->runtimes.Register(
        kind, RuntimeRegistry::Scope::kStack,
        [dir = options.data_dir, exec = options.exec](const std::string& stack) {
          return CreateProcessRuntime(absl::StrCat(dir, "/services/", stack), exec);
        });
  }
  return host;
}

absl::StatusOr<AgentHost> MakeAgentHost(const HostOptions& options, const std::string& host_id) {
  if (!options.exec.unrestricted && options.exec.prefixes.empty()) {
    UPKEEP_LOG(warn, "no_allow_exec",
               {{"note", "no --allow-exec: process-runtime services will be refused"}});
  }
  AgentHost a;
  a.host = MakeHost(options);
  ObserverOptions observer;
  observer.host_id = host_id;
  observer.data_dir = options.data_dir;
  auto obs = StackObserver::Create(observer, &a.host->runtimes, &a.host->proxies);
  if (!obs.ok()) return obs.status();
  a.observer = std::move(*obs);
  StackObserver* o = a.observer.get();
  auto executor = Executor::Create(options.data_dir, &a.host->runtimes, &a.host->proxies,
                                   [o] { o->RefreshNow(); });
  if (!executor.ok()) return executor.status();
  a.executor = std::move(*executor);
  return a;
}

}  // namespace upkeep::agent

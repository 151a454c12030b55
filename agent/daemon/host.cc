#include "agent/daemon/host.h"

#include "absl/strings/str_cat.h"
#include "agent/proxy/nginx/nginx_driver.h"
#include "agent/runtime/docker/docker_runtime.h"
#include "agent/runtime/process/process_runtime.h"

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

}  // namespace upkeep::agent

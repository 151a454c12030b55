#include "agent/daemon/daemon.h"

#include <cstdio>
#include <memory>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/act/executor.h"
#include "agent/base/stop_signal.h"
#include "agent/daemon/agent_client.h"
#include "agent/daemon/host.h"
#include "agent/observe/observer.h"
#include "core/log.h"

namespace upkeep::agent {

int RunDaemon(int argc, char** argv) {
  AgentClientOptions options;
  ExecPolicy exec;
  exec.unrestricted = false;  // a controller's process commands run only under --allow-exec
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= argc) return false;
      *out = argv[++i];
      return true;
    };
    bool ok = true;
    if (a == "--controller")
      ok = value(&options.controller);
    else if (a == "--host-id")
      ok = value(&options.host_id);
    else if (a == "--data")
      ok = value(&options.data_dir);
    else if (a == "--docker-socket")
      ok = value(&options.docker_socket);
    else if (a == "--allow-exec") {
      std::string dir;
      ok = value(&dir);
      exec.prefixes.push_back(dir);
    } else if (a == "--tls-ca")
      ok = value(&options.tls_ca);
    else if (a == "--tls-cert")
      ok = value(&options.tls_cert);
    else if (a == "--tls-key")
      ok = value(&options.tls_key);
    else if (a == "--autonomous-after") {
      std::string d;
      ok = value(&d) && absl::ParseDuration(d, &options.autonomous_after);
    } else if (a == "--log-json")
      json = true;
    else if (a == "--insecure")
      options.insecure = true;
    else
      ok = false;
    if (!ok) {
      std::fprintf(
          stderr,
          "usage: upkeep-agent --controller ADDR[,ADDR...] --host-id ID --data DIR "
          "[--docker-socket PATH] [--allow-exec DIR ...] [--tls-ca F --tls-cert F --tls-key F] "
          "[--insecure] [--autonomous-after DURATION (default 3s; 0: never)] "
          "[--log-json]\n"
          "       upkeep-agent --standalone -f MANIFESTS --data DIR [--host-id ID] "
          "[--allow-exec DIR ...]\n"
          "       upkeep-agent observe -f STACK.yaml [-o json|text]\n"
          "       upkeep-agent act -f STACK.yaml ACTION TARGET\n");
      return 2;
    }
  }
  if (options.controller.empty() || options.host_id.empty() || options.data_dir.empty()) {
    std::fprintf(stderr, "upkeep-agent: --controller, --host-id and --data are required\n");
    return 2;
  }
  const int tls_set =
      !options.tls_ca.empty() + !options.tls_cert.empty() + !options.tls_key.empty();
  if (tls_set != 0 && tls_set != 3) {
    std::fprintf(stderr, "upkeep-agent: --tls-ca, --tls-cert and --tls-key go together\n");
    return 2;
  }
  InitLogging("agent", json, spdlog::level::info);
  if (absl::Status st = InstallStopSignals(); !st.ok()) {
    UPKEEP_LOG(critical, "agent_start_failed", {{"error", std::string(st.message())}});
    return 1;
  }
  // Owned here, destroyed in reverse: the client (its stream and threads), then the agent host.
  auto agent = MakeAgentHost({options.data_dir, options.docker_socket, exec}, options.host_id);
  if (!agent.ok()) {
    UPKEEP_LOG(critical, "agent_start_failed", {{"error", std::string(agent.status().message())}});
    return 1;
  }
  AgentClient client(options, agent->observer.get(), agent->executor.get());
  if (absl::Status st = client.Start(); !st.ok()) {
    UPKEEP_LOG(critical, "agent_start_failed", {{"error", std::string(st.message())}});
    return 1;
  }
  UPKEEP_LOG(info, "agent_started",
             {{"host", options.host_id}, {"controller", options.controller}});
  WaitForStopSignal();
  UPKEEP_LOG(info, "agent_stopping", {});
  client.Shutdown();
  return 0;
}

}  // namespace upkeep::agent

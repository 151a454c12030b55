// crash_latency: how fast the Docker runtime notices a crashed container.
//
// Starts a private dockerd (scripts/dockerd.sh), runs one upkeep-sample container (host
// network), watches it with DockerRuntime::Watch, then N times:
//   SIGKILL the container's process (kill(2) on State.Pid)   -> on_change callback  [detect]
//   Runtime::Start                                            -> /health answers 200 [recover]
// and prints median / p95 / max of both. Needs root (kill of the container's pid) and dockerd.
//
//   crash_latency [--iterations N]
// Environment: UPKEEP_SOURCE_DIR (for scripts/dockerd.sh), UPKEEP_BIN_DIR (sample binary).
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "agent/runtime/docker/docker_runtime.h"
#include "tests/support/docker/docker_fixture.h"
#include "tests/support/net.h"
#include "tests/support/wait.h"

ABSL_FLAG(int, iterations, 20, "kills to measure");

namespace {

using upkeep::testing::DockerDaemon;

struct Stats {
  std::string name;
  std::vector<double> ms;
  void Print() const {
    if (ms.empty()) {
      std::printf("%-34s no samples\n", name.c_str());
      return;
    }
    std::vector<double> v = ms;
    std::sort(v.begin(), v.end());
    auto at = [&](double q) {
      return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))];
    };
    std::printf("%-34s n=%zu median=%.1fms p95=%.1fms max=%.1fms\n", name.c_str(), v.size(),
                at(0.5), at(0.95), v.back());
  }
};

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int n = absl::GetFlag(FLAGS_iterations);
  DockerDaemon* d = DockerDaemon::Get();
  if (!d->ok()) {
    std::fprintf(stderr, "crash_latency: %s\n", d->error().c_str());
    return 1;
  }
  const int port = upkeep::testing::FreePort();
  const std::string name = absl::StrCat("crash-latency-", getpid());
  auto run = d->Docker({"run", "-d", "--network", "host", "--name", name,
                        "--label=com.docker.compose.project=bench",
                        "--label=com.docker.compose.service=web", DockerDaemon::kImage,
                        "/upkeep-sample-service", "--port", std::to_string(port)});
  if (!run.ok()) {
    std::fprintf(stderr, "crash_latency: %s\n", std::string(run.status().message()).c_str());
    return 1;
  }
  upkeep::v1::ServiceSpec spec;
  spec.set_name("web");
  spec.mutable_container()->mutable_compose()->set_project("bench");
  spec.mutable_container()->mutable_compose()->set_service("web");

  auto rt_or = upkeep::agent::CreateDockerRuntime(d->socket());
  if (!rt_or.ok()) return 1;
  auto rt = std::move(*rt_or);
  absl::Mutex mu;
  absl::Time last_change = absl::InfinitePast();
  int changes = 0;
  auto watch = rt->Watch({spec}, [&](const std::string&) {
    absl::MutexLock lock(&mu);
    last_change = absl::Now();
    ++changes;
  });
  auto changed_since = [&](absl::Time t) {
    absl::MutexLock lock(&mu);
    return last_change >= t;
  };
  // Wait until the events stream is live: restart once and see it.
  const absl::Time warm = absl::Now();
  if (!rt->Restart(spec, absl::Seconds(1)).ok() ||
      !upkeep::testing::WaitFor([&] { return changed_since(warm); }, absl::Seconds(10))) {
    std::fprintf(stderr, "crash_latency: events stream not live\n");
    return 1;
  }

  Stats detect{"SIGKILL -> Watch callback", {}};
  Stats recover{"Start -> /health 200", {}};
  Stats inspect{"Inspect (after callback)", {}};
  Stats inspect_running{"Inspect (running, idle)", {}};
  for (int i = 0; i < n; ++i) {
    if (!upkeep::testing::WaitForPort("127.0.0.1", port)) {
      std::fprintf(stderr, "crash_latency: container not serving\n");
      break;
    }
    const absl::Time inspect_at = absl::Now();
    const auto obs = rt->Inspect(spec);
    inspect_running.ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - inspect_at));
    if (!obs.running() || obs.pid() <= 0) break;
    const absl::Time kill_at = absl::Now();
    ::kill(obs.pid(), SIGKILL);
    if (!upkeep::testing::WaitFor([&] { return changed_since(kill_at); }, absl::Seconds(10),
                                  absl::Microseconds(200))) {
      std::fprintf(stderr, "iteration %d: no callback within 10s\n", i);
      continue;
    }
    {
      absl::MutexLock lock(&mu);
      detect.ms.push_back(absl::ToDoubleMilliseconds(last_change - kill_at));
    }
    const absl::Time t0 = absl::Now();
    const auto after = rt->Inspect(spec);
    inspect.ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
    if (after.running()) std::fprintf(stderr, "iteration %d: still running at callback\n", i);
    const absl::Time start_at = absl::Now();
    if (!rt->Start(spec).ok()) break;
    if (upkeep::testing::WaitFor(
            [&] {
              return upkeep::testing::HttpGetStatus("127.0.0.1", port, "/health",
                                                    absl::Milliseconds(200)) == 200;
            },
            absl::Seconds(10), absl::Microseconds(500))) {
      recover.ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start_at));
    }
  }
  detect.Print();
  inspect_running.Print();
  inspect.Print();
  recover.Print();
  (void)d->Docker({"rm", "-f", name});
  return detect.ms.empty() ? 1 : 0;
}

// agent_footprint: the agent's idle cost. Starts three sample services under the process
// runtime, observes them with StackObserver (each probed every second, routes none) for
// --seconds, and reports this process's RSS and CPU share (the services themselves are not
// counted).
//   build/bench/agent_footprint [SECONDS] [BIN_DIR]
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/daemon/host.h"
#include "agent/observe/observer.h"
#include "agent/runtime/runtime.h"
#include "core/manifest/loader.h"

namespace {

long RssKb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

double CpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

int FreePort() {
  static int next = 24000 + (getpid() % 2000) * 3;
  return next++;
}

}  // namespace

int main(int argc, char** argv) {
  const int seconds = argc > 1 ? std::atoi(argv[1]) : 30;
  const std::string bin = argc > 2 ? argv[2] : "build/bin";
  char tmpl[] = "/tmp/upkeep-footprint-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  std::string yaml =
      "apiVersion: upkeep/v1\nkind: Stack\nmetadata: {name: fp}\nspec:\n"
      "  hosts: [h]\n  runtime: process\n  services:\n";
  for (const char* name : {"a", "b", "c"}) {
    const int port = FreePort();
    yaml += absl::StrCat("    - {name: ", name, ", port: ", port, ", process: {command: [", bin,
                         "/upkeep-sample-service, --port, \"", port,
                         "\"]}, probe: {http: {path: /health}, period: 1s}}\n");
  }
  const auto loaded = upkeep::manifest::LoadString(yaml, "footprint.yaml");
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", loaded.errors[0].ToString().c_str());
    return 1;
  }
  const upkeep::v1::Stack& stack = loaded.stacks[0];
  std::unique_ptr<upkeep::agent::Host> host = upkeep::agent::MakeHost({dir, ""});
  auto observer = upkeep::agent::StackObserver::Create({"h"}, &host->runtimes, &host->proxies);
  (*observer)->SetDesired({stack});
  upkeep::agent::Runtime* rt = *host->runtimes.Get(stack);
  for (const auto& s : stack.spec().services()) (void)rt->Start(s);
  int reports = 0;
  (*observer)->Start([&](const upkeep::v1::StackObservation&, bool) { ++reports; });
  absl::SleepFor(absl::Seconds(3));  // warm-up: services up, first probes judged
  const double cpu0 = CpuSeconds();
  const absl::Time t0 = absl::Now();
  absl::SleepFor(absl::Seconds(seconds));
  const double cpu = CpuSeconds() - cpu0;
  const double wall = absl::ToDoubleSeconds(absl::Now() - t0);
  const long rss = RssKb();
  (*observer)->Stop();
  for (const auto& s : stack.spec().services()) (void)rt->Stop(s, absl::Seconds(2));
  std::printf(
      "| services probed/s | seconds | agent RSS MB | CPU share of one core | reports |\n"
      "|---|---|---|---|---|\n| 3 | %.0f | %.1f | %.3f %% | %d |\n",
      wall, rss / 1024.0, 100.0 * cpu / wall, reports);
  return 0;
}

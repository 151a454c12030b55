// process_crash: how fast the agent sees a crashed process and serves again, on the process
// runtime, without the controller (its share is measured by bench/e2e/heal_bench).
//
// One sample service under the process runtime, observed by a StackObserver as the daemon runs
// it (probed every second); N times:
//   SIGKILL the service's pid   -> the runtime's Watch callback                  [runtime]
//                               -> the observer reports it not running          [observation]
//   Runtime::Start              -> /health answers 200                          [restart]
// and, for comparison, the process's own start: the same command started by fork/exec outside
// the agent -> /health answers 200.                                             [own start]
//
//   build/bench/agent_process_crash [ITERATIONS] [BIN_DIR]
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "agent/daemon/host.h"
#include "agent/observe/observer.h"
#include "agent/runtime/runtime.h"
#include "core/log.h"
#include "core/manifest/loader.h"
#include "tests/support/net.h"
#include "tests/support/subprocess.h"
#include "tests/support/wait.h"

namespace {

namespace v1 = upkeep::v1;
using upkeep::testing::HttpGetStatus;
using upkeep::testing::WaitFor;

struct Stats {
  std::string name;
  std::vector<double> ms;
  void Print() const {
    if (ms.empty()) {
      std::printf("| %s | 0 | - | - | - |\n", name.c_str());
      return;
    }
    std::vector<double> v = ms;
    std::sort(v.begin(), v.end());
    auto at = [&](double q) {
      return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))];
    };
    std::printf("| %s | %zu | %.2f | %.2f | %.2f |\n", name.c_str(), v.size(), at(0.5), at(0.95),
                v.back());
  }
};

bool Serving(int port) {
  return HttpGetStatus("127.0.0.1", port, "/health", absl::Seconds(1)) == 200;
}

// Polls /health every 200 us until 200; the time it answered, or InfiniteFuture.
absl::Time WaitServing(int port) {
  absl::Time at = absl::InfiniteFuture();
  WaitFor(
      [&] {
        if (!Serving(port)) return false;
        at = absl::Now();
        return true;
      },
      absl::Seconds(10), absl::Microseconds(200));
  return at;
}

}  // namespace

int main(int argc, char** argv) {
  // The runtimes' own log lines (process started/exited) are not part of the table.
  upkeep::InitLogging("bench", false, spdlog::level::warn);
  const int n = argc > 1 ? std::atoi(argv[1]) : 20;
  const std::string bin = std::filesystem::absolute(argc > 2 ? argv[2] : "build/bin").string();
  char tmpl[] = "/tmp/upkeep-process-crash-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  const int port = upkeep::testing::FreePort();
  const std::string sample = bin + "/upkeep-sample-service";
  const auto loaded = upkeep::manifest::LoadString(
      absl::StrCat("apiVersion: upkeep/v1\nkind: Stack\nmetadata: {name: pc}\nspec:\n"
                   "  hosts: [h]\n  runtime: process\n  services:\n"
                   "    - {name: web, port: ",
                   port, ", process: {command: [", sample, ", --port, \"", port,
                   "\"]}, probe: {http: {path: /health}, period: 1s}}\n"),
      "process_crash.yaml");
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", loaded.errors[0].ToString().c_str());
    return 1;
  }
  const v1::Stack& stack = loaded.stacks[0];
  const v1::ServiceSpec& spec = stack.spec().services(0);
  std::unique_ptr<upkeep::agent::Host> host =
      upkeep::agent::MakeHost({dir, "", upkeep::agent::ExecPolicy{}});
  auto observer =
      upkeep::agent::StackObserver::Create({"h", /*data_dir=*/""}, &host->runtimes, &host->proxies);
  upkeep::agent::Runtime* rt = *host->runtimes.Get(stack);

  absl::Mutex mu;
  absl::Time runtime_seen = absl::InfinitePast();
  absl::Time reported_down = absl::InfinitePast();
  auto watch = rt->Watch({spec}, [&](const std::string&) {
    absl::MutexLock lock(&mu);
    runtime_seen = absl::Now();
  });
  (*observer)->SetDesired({stack});
  (*observer)->Start([&](const v1::StackObservation& o, bool) {
    if (o.services_size() == 1 && o.services(0).exists() && !o.services(0).running()) {
      absl::MutexLock lock(&mu);
      reported_down = absl::Now();
    }
  });
  if (!rt->Start(spec).ok() || WaitServing(port) == absl::InfiniteFuture()) {
    std::fprintf(stderr, "process_crash: the service never served\n");
    return 1;
  }

  Stats kernel{"SIGKILL -> pidfd readable (the kernel's part)", {}};
  Stats runtime{"SIGKILL -> runtime Watch callback", {}};
  Stats observed{"SIGKILL -> observer reports not running", {}};
  Stats restart{"Runtime::Start -> /health 200", {}};
  Stats own{"own start (fork/exec -> /health 200)", {}};
  for (int i = 0; i < n; ++i) {
    const v1::ServiceObservation before = rt->Inspect(spec);
    if (!before.running() || before.pid() <= 0) break;
    absl::SleepFor(absl::Milliseconds(300));  // the observer settles (not a synchronisation)
    // The floor: this bench's own pidfd on the same process, polled by a thread of its own.
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, before.pid(), 0));
    absl::Time readable = absl::InfinitePast();
    std::thread poller([&] {
      pollfd pfd{pidfd, POLLIN, 0};
      if (pidfd >= 0 && ::poll(&pfd, 1, 5000) == 1) readable = absl::Now();
    });
    absl::SleepFor(absl::Milliseconds(20));  // the poller is waiting (not a synchronisation)
    const absl::Time kill_at = absl::Now();
    ::kill(before.pid(), SIGKILL);
    poller.join();
    if (pidfd >= 0) ::close(pidfd);
    if (readable != absl::InfinitePast()) {
      kernel.ms.push_back(absl::ToDoubleMilliseconds(readable - kill_at));
    }
    auto seen_since = [&](const absl::Time* t) {
      absl::MutexLock lock(&mu);
      return *t >= kill_at;
    };
    if (!WaitFor([&] { return seen_since(&reported_down); }, absl::Seconds(5),
                 absl::Microseconds(100))) {
      std::fprintf(stderr, "iteration %d: no report within 5 s\n", i);
      continue;
    }
    {
      absl::MutexLock lock(&mu);
      runtime.ms.push_back(absl::ToDoubleMilliseconds(runtime_seen - kill_at));
      observed.ms.push_back(absl::ToDoubleMilliseconds(reported_down - kill_at));
    }
    const absl::Time start_at = absl::Now();
    if (!rt->Start(spec).ok()) break;
    const absl::Time up = WaitServing(port);
    if (up != absl::InfiniteFuture())
      restart.ms.push_back(absl::ToDoubleMilliseconds(up - start_at));

    // The same command, started without the agent, on another port.
    const int other = upkeep::testing::FreePort();
    const absl::Time fork_at = absl::Now();
    auto p =
        upkeep::testing::Subprocess::Start({sample, "--port", absl::StrCat(other)}, "/dev/null");
    if (p.ok()) {
      const absl::Time own_up = WaitServing(other);
      if (own_up != absl::InfiniteFuture()) {
        own.ms.push_back(absl::ToDoubleMilliseconds(own_up - fork_at));
      }
      (*p)->Stop();
    }
  }
  std::printf("| step | n | p50 ms | p95 ms | max ms |\n|---|---|---|---|---|\n");
  kernel.Print();
  runtime.Print();
  observed.Print();
  restart.Print();
  own.Print();
  (*observer)->Stop();
  (void)rt->Stop(spec, absl::Seconds(2));
  watch.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return observed.ms.empty() ? 1 : 0;
}

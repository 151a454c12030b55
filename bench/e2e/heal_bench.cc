// heal_bench: time to heal, measured (not asserted). Injects each fault N times into the demo
// stack under upkeep (real controller, agent, nginx, sample services) and reports detection
// and heal latency, median and p95, per scenario; then runs the same crash and unhealthy
// faults under the peers a user would pick instead, in the same run on the same machine:
// Monit (1 s cycle) on the process runtime, and Docker's own `restart: always` when a private
// dockerd can start. Prints a markdown table and writes it to --out.
//
//   build/bench/heal_bench --runs 10 --out bench/results/heal.md [--docker]
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/proto_time.h"
#include "demo/harness.h"
#include "tests/e2e/e2e_env.h"
#include "tests/support/net.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace upkeep::bench {
namespace {

using upkeep::demo::HarnessOptions;
using upkeep::demo::StackHarness;
using upkeep::testing::HttpGetStatus;
using upkeep::testing::Subprocess;
using upkeep::testing::WaitFor;

struct Samples {
  std::string scenario;
  std::string tool;
  std::vector<double> detect_ms;
  std::vector<double> heal_ms;
  int failures = 0;
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

std::string Fmt(double ms) { return ms < 0 ? "-" : absl::StrFormat("%.0f", ms); }

// Polls (every 1 ms) until GET host:port path answers 200; returns when, or InfiniteFuture.
absl::Time WaitHttp200(int port, const std::string& path, absl::Duration timeout) {
  absl::Time at = absl::InfiniteFuture();
  WaitFor(
      [&] {
        if (HttpGetStatus("127.0.0.1", port, path, absl::Milliseconds(200)) == 200) {
          at = absl::Now();
          return true;
        }
        return false;
      },
      timeout, absl::Milliseconds(1));
  return at;
}

// The first event after `seq` that is not bookkeeping: when upkeep noticed.
absl::Time FirstDetection(StackHarness& h, int64_t seq, absl::Time not_before) {
  auto events = h.Events(seq);
  if (!events.ok()) return absl::InfiniteFuture();
  for (const auto& e : *events) {
    if (e.reason() == "Applied" || e.reason() == "AgentConnected" || e.reason() == "Paused" ||
        e.reason() == "Resumed") {
      continue;
    }
    const absl::Time at = upkeep::FromProto(e.at());
    if (at >= not_before - absl::Milliseconds(5)) return at;
  }
  return absl::InfiniteFuture();
}

void RunUpkeep(StackHarness& h, const std::string& scenario, int runs,
               const std::function<absl::Status(StackHarness&)>& inject, int check_port,
               const std::string& check_path, Samples* out) {
  out->scenario = scenario;
  out->tool = "upkeep";
  for (int i = 0; i < runs; ++i) {
    if (!h.WaitServing(absl::Seconds(30)).ok()) {
      ++out->failures;
      continue;
    }
    const int64_t seq = h.LastEventSeq();
    if (!inject(h).ok()) {
      ++out->failures;
      continue;
    }
    const absl::Time t0 = absl::Now();  // the fault is in place from here
    // Serving again = the first 200 after the fault took effect.
    WaitFor([&] {
      return HttpGetStatus("127.0.0.1", check_port, check_path, absl::Milliseconds(100)) != 200;
    }, absl::Seconds(5), absl::Milliseconds(1));
    const absl::Time healed = WaitHttp200(check_port, check_path, absl::Seconds(30));
    if (healed == absl::InfiniteFuture()) {
      ++out->failures;
      continue;
    }
    out->heal_ms.push_back(absl::ToDoubleMilliseconds(healed - t0));
    WaitFor([&] { return FirstDetection(h, seq, t0) != absl::InfiniteFuture(); },
            absl::Seconds(5));
    const absl::Time detected = FirstDetection(h, seq, t0);
    if (detected != absl::InfiniteFuture()) {
      out->detect_ms.push_back(std::max(0.0, absl::ToDoubleMilliseconds(detected - t0)));
    }
  }
}

// Monit, 1 s cycle, supervising one sample service: crash -> restart; /health failing for
// 3 cycles -> restart.
void RunMonit(const std::string& bin_dir, int runs, bool hang, Samples* out) {
  out->scenario = hang ? "backend hung (unhealthy)" : "backend crashed";
  out->tool = "monit (1 s cycle)";
  upkeep::testing::TempDir dir;
  const int port = upkeep::testing::FreePort();
  const std::string name = absl::StrCat("monit-peer-", port);
  const std::string start = absl::StrCat(
      "/bin/sh -c '", bin_dir, "/upkeep-sample-service --name ", name, " --port ", port,
      " >/dev/null 2>&1 & echo $! > ", dir.path(), "/sample.pid'");
  const std::string rc = absl::StrCat(
      "set daemon 1\n"
      "set logfile ", dir.path(), "/monit.log\n"
      "set idfile ", dir.path(), "/monit.id\n"
      "set statefile ", dir.path(), "/monit.state\n"
      "set pidfile ", dir.path(), "/monit.pid\n"
      "check process sample with pidfile ", dir.path(), "/sample.pid\n"
      "  start program = \"", start, "\"\n"
      "  stop program = \"/bin/sh -c 'kill -9 $(cat ", dir.path(), "/sample.pid)'\"\n"
      "  if failed host 127.0.0.1 port ", port,
      " protocol http request /health timeout 1 seconds for 3 cycles then restart\n");
  const std::string rc_path = dir.Join("monitrc");
  { std::ofstream(rc_path) << rc; }
  ::chmod(rc_path.c_str(), 0600);
  auto monit = Subprocess::Start({"monit", "-I", "-c", rc_path}, dir.Join("monit.out"));
  if (!monit.ok()) {
    out->failures = runs;
    return;
  }
  if (WaitHttp200(port, "/health", absl::Seconds(15)) == absl::InfiniteFuture()) {
    out->failures = runs;
    return;
  }
  for (int i = 0; i < runs; ++i) {
    WaitHttp200(port, "/health", absl::Seconds(30));
    const absl::Time t0 = absl::Now();
    HttpGetStatus("127.0.0.1", port, hang ? "/fault/hang" : "/fault/crash",
                  absl::Milliseconds(200));
    WaitFor([&] {
      return HttpGetStatus("127.0.0.1", port, "/health", absl::Milliseconds(100)) != 200;
    }, absl::Seconds(5), absl::Milliseconds(1));
    const absl::Time healed = WaitHttp200(port, "/health", absl::Seconds(30));
    if (healed == absl::InfiniteFuture()) {
      ++out->failures;
      continue;
    }
    out->heal_ms.push_back(absl::ToDoubleMilliseconds(healed - t0));
  }
  (*monit)->Stop(absl::Seconds(5));
  std::ifstream pidf(dir.Join("sample.pid"));
  int pid = 0;
  if (pidf >> pid && pid > 1) ::kill(pid, SIGKILL);
}

// Docker's own restart policy on a private dockerd: crash -> Docker restarts it.
void RunDockerRestartPolicy(const std::string& socket, const std::string& image, int runs,
                            Samples* out) {
  out->scenario = "backend crashed";
  out->tool = "docker restart: always";
  const int port = upkeep::testing::FreePort();
  const std::string host = absl::StrCat("unix://", socket);
  const std::string name = absl::StrCat("restart-peer-", port);
  auto run = Subprocess::Start({"docker", "-H", host, "run", "-d", "--restart", "always",
                                "--network", "host", "--name", name, image,
                                "/upkeep-sample-service", "--port", absl::StrCat(port)});
  if (!run.ok() || !(*run)->Wait(absl::Seconds(60)).has_value() ||
      WaitHttp200(port, "/health", absl::Seconds(30)) == absl::InfiniteFuture()) {
    out->failures = runs;
    return;
  }
  for (int i = 0; i < runs; ++i) {
    WaitHttp200(port, "/health", absl::Seconds(30));
    const absl::Time t0 = absl::Now();
    HttpGetStatus("127.0.0.1", port, "/fault/crash", absl::Milliseconds(200));
    WaitFor([&] {
      return HttpGetStatus("127.0.0.1", port, "/health", absl::Milliseconds(100)) != 200;
    }, absl::Seconds(5), absl::Milliseconds(1));
    const absl::Time healed = WaitHttp200(port, "/health", absl::Seconds(30));
    if (healed == absl::InfiniteFuture()) {
      ++out->failures;
      continue;
    }
    out->heal_ms.push_back(absl::ToDoubleMilliseconds(healed - t0));
  }
  auto rm = Subprocess::Start({"docker", "-H", host, "rm", "-f", name});
  if (rm.ok()) (*rm)->Wait(absl::Seconds(30));
}

int Main(int argc, char** argv) {
  int runs = 10;
  std::string out_path = "bench/results/heal.md";
  std::string bin_dir = "build/bin";
  std::string source_dir = ".";
  bool docker = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) runs = std::atoi(argv[++i]);
    else if (a == "--out" && i + 1 < argc) out_path = argv[++i];
    else if (a == "--bin" && i + 1 < argc) bin_dir = argv[++i];
    else if (a == "--source" && i + 1 < argc) source_dir = argv[++i];
    else if (a == "--docker") docker = true;
  }
  bin_dir = std::filesystem::absolute(bin_dir).string();
  ::setenv("UPKEEP_BIN_DIR", bin_dir.c_str(), 1);
  ::setenv("UPKEEP_SOURCE_DIR", std::filesystem::absolute(source_dir).c_str(), 1);
  std::vector<Samples> all;

  auto bench_runtime = [&](upkeep::demo::Runtime runtime, const std::string& label) {
    upkeep::testing::TempDir dir;
    HarnessOptions options;
    options.work_dir = dir.path();
    options.bin_dir = bin_dir;
    options.source_dir = source_dir;
    options.runtime = runtime;
    options.restart_budget = 1000;  // measuring speed, not the budget
    options.backoff_initial = "1ms";
    if (runtime == upkeep::demo::Runtime::kDocker) {
      auto* env = upkeep::demo::DockerEnv::Get();
      if (!env->ok()) {
        std::fprintf(stderr, "heal_bench: skipping docker: %s\n", env->error().c_str());
        return;
      }
      options.docker_socket = env->socket();
      options.docker_image = env->image();
    }
    auto h = StackHarness::Start(options);
    if (!h.ok() || !(*h)->WaitServing(absl::Seconds(60)).ok()) {
      std::fprintf(stderr, "heal_bench: stack did not come up (%s)\n", dir.path().c_str());
      return;
    }
    StackHarness& s = **h;
    Samples crash, hang, proxy;
    RunUpkeep(s, "backend crashed", runs, [](StackHarness& x) { return x.CrashBackend(); },
              s.backend_port(), "/health", &crash);
    RunUpkeep(s, "backend hung (unhealthy)", std::max(1, runs / 2),
              [](StackHarness& x) { return x.HangBackend(); }, s.backend_port(), "/health",
              &hang);
    if (runtime == upkeep::demo::Runtime::kProcess) {
      RunUpkeep(s, "nginx 502, upstream healthy", runs,
                [](StackHarness& x) { return x.PoisonNginxUpstream(); }, s.nginx_port(),
                "/api/health", &proxy);
    }
    for (Samples* smp : {&crash, &hang, &proxy}) {
      if (smp->scenario.empty()) continue;
      smp->tool = absl::StrCat("upkeep (", label, ")");
      all.push_back(*smp);
    }
  };

  bench_runtime(upkeep::demo::Runtime::kProcess, "process");
  Samples monit_crash, monit_hang;
  RunMonit(bin_dir, runs, false, &monit_crash);
  RunMonit(bin_dir, std::max(1, runs / 2), true, &monit_hang);
  all.push_back(monit_crash);
  all.push_back(monit_hang);
  if (docker) {
    bench_runtime(upkeep::demo::Runtime::kDocker, "docker");
    auto* env = upkeep::demo::DockerEnv::Get();
    if (env->ok()) {
      Samples restart;
      RunDockerRestartPolicy(env->socket(), env->image(), runs, &restart);
      all.push_back(restart);
    }
  }

  std::string table = absl::StrCat(
      "| scenario | tool | runs | detect p50 ms | detect p95 ms | serving again p50 ms | "
      "serving again p95 ms | failed |\n|---|---|---|---|---|---|---|---|\n");
  for (const auto& s : all) {
    absl::StrAppend(&table, "| ", s.scenario, " | ", s.tool, " | ", s.heal_ms.size(), " | ",
                    Fmt(Percentile(s.detect_ms, 0.5)), " | ", Fmt(Percentile(s.detect_ms, 0.95)),
                    " | ", Fmt(Percentile(s.heal_ms, 0.5)), " | ",
                    Fmt(Percentile(s.heal_ms, 0.95)), " | ", s.failures, " |\n");
  }
  std::printf("%s", table.c_str());
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(out_path).parent_path(), ec);
  std::ofstream(out_path) << "# Time to heal (bench/e2e/heal_bench)\n\n"
                          << absl::FormatTime("%Y-%m-%d %H:%M UTC", absl::Now(),
                                              absl::UTCTimeZone())
                          << ", " << runs << " runs per scenario\n\n"
                          << table;
  return 0;
}

}  // namespace
}  // namespace upkeep::bench

int main(int argc, char** argv) { return upkeep::bench::Main(argc, argv); }

// heal_bench: time to heal, measured (not asserted). Injects each fault N times into the demo
// stack under upkeep (real controller, agent, nginx, sample services) and, in the same run on
// the same machine, under the peers a user would pick instead, and prints one table with the
// ratio of upkeep to each peer:
//   - process runtime: upkeep and Monit (1 s cycle), a crash and a hung service;
//   - Docker (--docker, a private dockerd): the floor (SIGKILL -> Docker's `die` event, then
//     `docker start` -> serving, both over the Engine API), upkeep, Docker's own
//     `restart: always` on the first crash of a fresh container (a new container per run), and
//     the same policy on one container crashing again and again (its backoff grows);
//   - nginx answers 502 with a healthy upstream (the upstream moved under a running nginx; see
//     StackHarness::PrepareMovedUpstream), injected with upkeep enforcing and a client sending
//     a request every 100 ms; measured from the fault to the client's first 200 after it, once
//     with nginx logging upstream errors (the error-log path) and once with it logging none
//     (error_log crit: only upkeep's route probes can see it; once at their default period,
//     1 s, and once with `probe.period: 200ms`).
// Every scenario runs --runs runs. Writes the table and how to read it to --out.
//
//   build/bench/heal_bench --runs 10 --out bench/results/heal.md [--docker]
//       [--only process,monit,nginx,docker]
// With --only and no --out, the rows are printed and bench/results/heal.md is left alone.
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bench/e2e/docker_api.h"
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

// One row: a scenario under one tool. Rows of one `group` are compared with each other.
struct Samples {
  std::string group;
  std::string scenario;
  std::string tool;
  int planned = 0;
  std::vector<double> detect_ms;   // upkeep's first event, or Docker's `die` event reaching us
  std::vector<double> action_ms;   // upkeep's repair finished (its action record)
  std::vector<double> first_fail;  // client rows: the client's first failed request
  std::vector<double> heal_ms;     // serving again
  std::vector<double> part_ms;     // the floor: `docker start` -> serving
  std::vector<double> die_ms;      // upkeep on Docker: Docker's `die` event reaching the bench
  std::vector<double> lag_ms;      // upkeep on Docker: upkeep's detection - that `die`, per run
  int failures = 0;
  void Fail(const std::string& why) {
    ++failures;
    std::fprintf(stderr, "heal_bench: %s / %s: run failed: %s\n", scenario.c_str(), tool.c_str(),
                 why.c_str());
  }
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

std::string Fmt(double ms) { return ms < 0 ? "-" : absl::StrFormat("%.0f", ms); }
double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

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

// A user: GET path every 100 ms (a fixed schedule; a slow answer delays only the next one),
// each on a new connection, every answer kept.
class TrafficClient {
 public:
  struct Hit {
    absl::Time sent;
    absl::Time answered;
    int status;
  };
  TrafficClient(int port, std::string path) : port_(port), path_(std::move(path)) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~TrafficClient() {
    stop_ = true;
    thread_.join();
  }
  // The first request sent at or after `after` whose status satisfies `want`, waiting up to
  // `timeout` for one.
  std::optional<Hit> First(absl::Time after, const std::function<bool(int)>& want,
                           absl::Duration timeout) {
    std::optional<Hit> out;
    auto found = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      for (const Hit& h : hits_) {
        if (h.sent >= after && want(h.status)) {
          out = h;
          return true;
        }
      }
      return false;
    };
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&found), timeout);
    return out;
  }

 private:
  void Loop() {
    absl::Time next = absl::Now();
    while (!stop_) {
      const absl::Time now = absl::Now();
      if (now < next) {
        absl::SleepFor(std::min(next - now, absl::Milliseconds(20)));  // the request schedule
        continue;
      }
      next += absl::Milliseconds(100);
      if (next < now) next = now + absl::Milliseconds(100);
      const int status = HttpGetStatus("127.0.0.1", port_, path_, absl::Seconds(2));
      absl::MutexLock lock(&mu_);
      hits_.push_back({now, absl::Now(), status});
    }
  }

  const int port_;
  const std::string path_;
  std::atomic<bool> stop_{false};
  absl::Mutex mu_;
  std::vector<Hit> hits_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// The first event at or after `not_before` that is not bookkeeping: when upkeep noticed.
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

// Whether every action upkeep asked for since `from` has finished.
bool ActionsSettled(StackHarness& h, absl::Time from) {
  auto actions = h.Actions();
  if (!actions.ok()) return false;
  for (const auto& a : *actions) {
    if (a.dry_run() || !a.has_requested_at()) continue;
    if (upkeep::FromProto(a.requested_at()) < from - absl::Milliseconds(5)) continue;
    if (!a.result().has_finished_at()) return false;
  }
  return true;
}

// When the last of upkeep's actions asked for in [from, until] finished (InfiniteFuture: none).
absl::Time RepairFinished(StackHarness& h, absl::Time from, absl::Time until) {
  auto actions = h.Actions();
  if (!actions.ok()) return absl::InfiniteFuture();
  absl::Time last = absl::InfiniteFuture();
  for (const auto& a : *actions) {
    if (!a.has_requested_at() || !a.result().has_finished_at() || a.dry_run()) continue;
    const absl::Time req = upkeep::FromProto(a.requested_at());
    const absl::Time fin = upkeep::FromProto(a.result().finished_at());
    if (req < from - absl::Milliseconds(5) || fin > until) continue;
    if (last == absl::InfiniteFuture() || fin > last) last = fin;
  }
  return last;
}

// HEAL_BENCH_TRACE=1: what upkeep did in one run, in ms from the fault, on stderr (the floor's
// runs print their own stamps: die read, start sent and answered, serving).
void Trace(StackHarness& h, int64_t seq, absl::Time t0, absl::Time healed) {
  std::fprintf(stderr, "  run: fault at %s, serving again at %.1f ms\n",
               absl::FormatTime("%H:%M:%E3S", t0, absl::UTCTimeZone()).c_str(), Ms(healed - t0));
  if (auto events = h.Events(seq); events.ok()) {
    for (const auto& e : *events) {
      std::fprintf(stderr, "  %8.1f event %s %s\n", Ms(upkeep::FromProto(e.at()) - t0),
                   e.reason().c_str(), e.message().substr(0, 100).c_str());
    }
  }
  if (auto actions = h.Actions(); actions.ok()) {
    for (const auto& a : *actions) {
      if (upkeep::FromProto(a.requested_at()) < t0 - absl::Milliseconds(5)) continue;
      if (!a.result().has_finished_at()) continue;
      std::fprintf(stderr, "  %8.1f action %s requested; started %.1f finished %.1f\n",
                   Ms(upkeep::FromProto(a.requested_at()) - t0),
                   upkeep::v1::ActionKind_Name(a.action().kind()).c_str(),
                   Ms(upkeep::FromProto(a.result().started_at()) - t0),
                   Ms(upkeep::FromProto(a.result().finished_at()) - t0));
    }
  }
}

struct UpkeepScenario {
  std::string group;
  std::string scenario;
  std::function<absl::Status(StackHarness&)> prepare;               // untimed, before each run
  std::function<absl::StatusOr<absl::Time>(StackHarness&)> inject;  // returns the fault's instant
  int port;
  std::string path;
  bool client = false;  // measured by the 100 ms client instead of a 1 ms poll
  // Docker crash: when Docker's `die` event of this run's fault reached the bench's own
  // subscription (InfiniteFuture: none), beside upkeep's detection of the same crash.
  // Null (the default) for a scenario that does not watch Docker's events.
  std::function<absl::Time(absl::Time t0)> die_at = nullptr;
};

void RunUpkeep(StackHarness& h, const UpkeepScenario& sc, int runs, Samples* out) {
  out->group = sc.group;
  out->scenario = sc.scenario;
  out->planned = runs;
  std::mt19937 rng(std::random_device{}());
  std::unique_ptr<TrafficClient> client;
  if (sc.client) client = std::make_unique<TrafficClient>(sc.port, sc.path);
  for (int i = 0; i < runs; ++i) {
    if (absl::Status st = h.WaitServing(absl::Seconds(30)); !st.ok()) {
      out->Fail(std::string(st.message()));
      continue;
    }
    if (sc.prepare) {
      if (absl::Status st = sc.prepare(h); !st.ok()) {
        out->Fail(std::string(st.message()));
        continue;
      }
    }
    // The fault lands at a uniformly random point of upkeep's 1 s probe period (the runs
    // would otherwise be phase-locked to it: each run starts right after the last heal).
    absl::SleepFor(absl::Milliseconds(std::uniform_int_distribution<int>(0, 999)(rng)));
    const int64_t seq = h.LastEventSeq();
    absl::StatusOr<absl::Time> t0 = sc.inject(h);
    if (!t0.ok()) {
      out->Fail(std::string(t0.status().message()));
      continue;
    }
    absl::Time healed = absl::InfiniteFuture();
    if (client != nullptr) {
      auto failed = client->First(
          *t0, [](int s) { return s != 200; }, absl::Seconds(5));
      auto ok = client->First(
          failed ? failed->sent : *t0, [](int s) { return s == 200; }, absl::Seconds(30));
      if (failed) out->first_fail.push_back(Ms(failed->answered - *t0));
      if (ok) healed = ok->answered;
    } else {
      // Serving again = the first 200 after the fault took effect.
      WaitFor(
          [&] {
            return HttpGetStatus("127.0.0.1", sc.port, sc.path, absl::Milliseconds(100)) != 200;
          },
          absl::Seconds(5), absl::Milliseconds(1));
      healed = WaitHttp200(sc.port, sc.path, absl::Seconds(30));
    }
    if (healed == absl::InfiniteFuture()) {
      out->Fail("not serving again within 30 s");
      continue;
    }
    out->heal_ms.push_back(Ms(healed - *t0));
    WaitFor([&] { return FirstDetection(h, seq, *t0) != absl::InfiniteFuture(); },
            absl::Seconds(5));
    const absl::Time detected = FirstDetection(h, seq, *t0);
    if (detected != absl::InfiniteFuture()) {
      out->detect_ms.push_back(std::max(0.0, Ms(detected - *t0)));
    }
    if (sc.die_at) {
      const absl::Time died = sc.die_at(*t0);
      if (died != absl::InfiniteFuture()) {
        out->die_ms.push_back(Ms(died - *t0));
        if (detected != absl::InfiniteFuture()) out->lag_ms.push_back(Ms(detected - died));
      }
    }
    WaitFor([&] { return ActionsSettled(h, *t0); }, absl::Seconds(10), absl::Milliseconds(5));
    const absl::Time repaired = RepairFinished(h, *t0, absl::InfiniteFuture());
    if (repaired != absl::InfiniteFuture()) out->action_ms.push_back(Ms(repaired - *t0));
    if (std::getenv("HEAL_BENCH_TRACE") != nullptr) {
      Trace(h, seq, *t0, healed);
      if (sc.die_at) {
        std::fprintf(stderr, "  %8.1f die read by the bench\n", Ms(sc.die_at(*t0) - *t0));
      }
    }
  }
}

int CountLines(const std::string& path, const std::string& needle) {
  std::ifstream in(path);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) n += absl::StrContains(line, needle) ? 1 : 0;
  return n;
}

// Monit, 1 s cycle, supervising one sample service: crash -> restart; /health failing for
// 3 cycles -> restart. `start program ... with timeout 1 seconds`: Monit pauses connection
// tests for the start timeout after every start it makes ("connection test paused for 28 s
// while the process is starting"), and its default 30 s made it blind to a hang for 30 s after
// each of its own restarts.
void RunMonit(const std::string& bin_dir, int runs, bool hang, Samples* out) {
  out->group = hang ? "hang (process)" : "crash (process)";
  out->scenario = hang ? "backend hung (unhealthy)" : "backend crashed";
  out->tool = "monit (1 s cycle)";
  out->planned = runs;
  upkeep::testing::TempDir dir;
  const int port = upkeep::testing::FreePort();
  const std::string name = absl::StrCat("monit-peer-", port);
  const std::string start =
      absl::StrCat("/bin/sh -c '", bin_dir, "/upkeep-sample-service --name ", name, " --port ",
                   port, " >/dev/null 2>&1 & echo $! > ", dir.path(), "/sample.pid'");
  const std::string log = dir.Join("monit.log");
  const std::string rc = absl::StrCat(
      "set daemon 1\n"
      "set logfile ",
      log,
      "\n"
      "set idfile ",
      dir.path(),
      "/monit.id\n"
      "set statefile ",
      dir.path(),
      "/monit.state\n"
      "set pidfile ",
      dir.path(),
      "/monit.pid\n"
      "check process sample with pidfile ",
      dir.path(),
      "/sample.pid\n"
      "  start program = \"",
      start,
      "\" with timeout 1 seconds\n"
      "  stop program = \"/bin/sh -c 'kill -9 $(cat ",
      dir.path(),
      "/sample.pid)'\"\n"
      "  if failed host 127.0.0.1 port ",
      port, " protocol http request /health timeout 1 seconds for 3 cycles then restart\n");
  const std::string rc_path = dir.Join("monitrc");
  { std::ofstream(rc_path) << rc; }
  ::chmod(rc_path.c_str(), 0600);
  auto monit = Subprocess::Start({"monit", "-I", "-c", rc_path}, dir.Join("monit.out"));
  if (!monit.ok()) {
    for (int i = 0; i < runs; ++i) out->Fail(std::string(monit.status().message()));
    return;
  }
  // On every way out: Monit first (so it starts nothing more), then the sample service it
  // started last, by the pid its start program wrote (checked to be that service).
  struct StopMonit {
    Subprocess* monit;
    std::string pidfile;
    std::string name;
    ~StopMonit() {
      monit->Stop(absl::Seconds(5));
      std::ifstream in(pidfile);
      int pid = 0;
      if (!(in >> pid) || pid <= 1) return;
      std::ifstream cmdline(absl::StrCat("/proc/", pid, "/cmdline"));
      std::string args((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
      if (absl::StrContains(args, name)) ::kill(pid, SIGKILL);
    }
  } stop_monit{monit->get(), dir.Join("sample.pid"), name};
  if (WaitHttp200(port, "/health", absl::Seconds(15)) == absl::InfiniteFuture()) {
    for (int i = 0; i < runs; ++i) out->Fail("monit did not start the service");
    return;
  }
  for (int i = 0; i < runs; ++i) {
    WaitHttp200(port, "/health", absl::Seconds(30));
    if (hang) {
      // Monit counts "3 cycles" across its own restart: inject only once it has seen the
      // service pass a test again ("connection succeeded", one per recovery), or a later run
      // would be restarted after one failed test.
      WaitFor([&] { return CountLines(log, "connection succeeded") >= i; }, absl::Seconds(10),
              absl::Milliseconds(20));
    }
    const absl::Time t0 = absl::Now();
    HttpGetStatus("127.0.0.1", port, hang ? "/fault/hang" : "/fault/crash",
                  absl::Milliseconds(200));
    WaitFor(
        [&] { return HttpGetStatus("127.0.0.1", port, "/health", absl::Milliseconds(100)) != 200; },
        absl::Seconds(5), absl::Milliseconds(1));
    const absl::Time healed = WaitHttp200(port, "/health", absl::Seconds(30));
    if (healed == absl::InfiniteFuture()) {
      out->Fail(absl::StrCat("not serving again within 30 s; see ", log));
      continue;
    }
    out->heal_ms.push_back(Ms(healed - t0));
  }
}

absl::Status Docker(const std::string& socket, std::vector<std::string> args) {
  args.insert(args.begin(), {"docker", "-H", absl::StrCat("unix://", socket)});
  auto p = Subprocess::Start(args, "/dev/null");
  if (!p.ok()) return p.status();
  auto st = (*p)->Wait(absl::Seconds(60));
  if (!st.has_value() || !WIFEXITED(*st) || WEXITSTATUS(*st) != 0) {
    return absl::InternalError(absl::StrCat("docker ", args[3], " failed"));
  }
  return absl::OkStatus();
}

// SIGKILLs the container's main process from the host: a crash, as Docker sees it.
absl::StatusOr<std::pair<std::string, absl::Time>> KillContainer(DockerApi& api,
                                                                 const std::string& name) {
  auto id_pid = api.IdAndPid(name);
  if (!id_pid.ok()) return id_pid.status();
  if (id_pid->second <= 1) return absl::FailedPreconditionError(name + " is not running");
  const absl::Time t0 = absl::Now();
  if (::kill(id_pid->second, SIGKILL) != 0) return absl::InternalError("kill failed");
  return std::make_pair(id_pid->first, t0);
}

// One crash of a peer's container: waits until it serves on `port`, SIGKILLs its main
// process, and waits for Docker's `die` event. `died` is when the event reached us.
struct Crash {
  std::string id;
  absl::Time t0;
  absl::Time died;
};
absl::StatusOr<Crash> CrashServingContainer(DockerApi& api, const std::string& name, int port,
                                            absl::Duration serve_timeout) {
  if (WaitHttp200(port, "/health", serve_timeout) == absl::InfiniteFuture()) {
    return absl::DeadlineExceededError("not serving before the fault");
  }
  auto killed = KillContainer(api, name);
  if (!killed.ok()) return killed.status();
  const auto& [id, t0] = *killed;
  const absl::Time died = api.WaitDie(id, t0, absl::Seconds(10));
  if (died == absl::InfiniteFuture())
    return absl::DeadlineExceededError("no die event within 10 s");
  return Crash{id, t0, died};
}

// The floor of any Docker heal: SIGKILL -> Docker's `die` event reaching a subscriber, plus
// `docker start` (the Engine API call upkeep makes) -> the service answers. Measured on a
// container without a restart policy, started again the moment the event arrives.
void RunDockerFloor(DockerApi& api, const std::string& socket, const std::string& image, int runs,
                    Samples* out) {
  out->group = "crash (docker)";
  out->scenario = "backend crashed";
  out->tool = "floor: `die` event + `docker start` → serving";
  out->planned = runs;
  const int port = upkeep::testing::FreePort();
  const std::string name = absl::StrCat("floor-", port);
  if (absl::Status st = Docker(socket, {"create", "--network", "host", "--name", name, image,
                                        "/upkeep-sample-service", "--port", absl::StrCat(port)});
      !st.ok() || !api.Start(name).ok()) {
    for (int i = 0; i < runs; ++i) out->Fail("cannot create the floor's container");
    return;
  }
  for (int i = 0; i < runs; ++i) {
    auto crash = CrashServingContainer(api, name, port, absl::Seconds(30));
    if (!crash.ok()) {
      out->Fail(std::string(crash.status().message()));
      api.Start(name).IgnoreError();
      continue;
    }
    const absl::Time t0 = crash->t0, died = crash->died;
    const absl::Time start = absl::Now();
    if (absl::Status st = api.Start(name); !st.ok()) {
      out->Fail(std::string(st.message()));
      continue;
    }
    const absl::Time answered = absl::Now();
    const absl::Time up = WaitHttp200(port, "/health", absl::Seconds(30));
    if (up == absl::InfiniteFuture()) {
      out->Fail("not serving within 30 s of docker start");
      continue;
    }
    if (std::getenv("HEAL_BENCH_TRACE") != nullptr) {
      std::fprintf(stderr,
                   "  floor run: fault at %s, die read %.1f, start sent %.1f answered %.1f, "
                   "serving %.1f ms\n",
                   absl::FormatTime("%H:%M:%E3S", t0, absl::UTCTimeZone()).c_str(), Ms(died - t0),
                   Ms(start - t0), Ms(answered - t0), Ms(up - t0));
    }
    out->detect_ms.push_back(Ms(died - t0));
    out->part_ms.push_back(Ms(up - start));
    out->heal_ms.push_back(Ms(died - t0) + Ms(up - start));
  }
  Docker(socket, {"rm", "-f", name}).IgnoreError();
}

// Docker's own `restart: always`. first_crash: a fresh container per run, crashed once (what a
// first crash costs); else one container crashed `runs` times in a row (its delay doubles).
void RunDockerRestartPolicy(DockerApi& api, const std::string& socket, const std::string& image,
                            int runs, bool first_crash, Samples* out) {
  out->group = "crash (docker)";
  out->scenario = "backend crashed";
  out->tool = first_crash ? "docker `restart: always`, first crash (new container each run)"
                          : "docker `restart: always`, crash after crash (one container)";
  out->planned = runs;
  std::string name;
  int port = 0;
  auto run = [&]() -> absl::Status {
    port = upkeep::testing::FreePort();
    name = absl::StrCat("restart-peer-", port);
    if (absl::Status st =
            Docker(socket, {"run", "-d", "--restart", "always", "--network", "host", "--name", name,
                            image, "/upkeep-sample-service", "--port", absl::StrCat(port)});
        !st.ok()) {
      return st;
    }
    if (WaitHttp200(port, "/health", absl::Seconds(30)) == absl::InfiniteFuture()) {
      return absl::DeadlineExceededError("the container did not serve");
    }
    return absl::OkStatus();
  };
  if (!first_crash) {
    if (absl::Status st = run(); !st.ok()) {
      for (int i = 0; i < runs; ++i) out->Fail(std::string(st.message()));
      return;
    }
  }
  for (int i = 0; i < runs; ++i) {
    if (first_crash) {
      if (absl::Status st = run(); !st.ok()) {
        out->Fail(std::string(st.message()));
        Docker(socket, {"rm", "-f", name}).IgnoreError();
        continue;
      }
    }
    // Docker restarts it after the `die` (its delay starts there): waiting for the event first
    // takes nothing from the heal measured below.
    auto crash = CrashServingContainer(api, name, port, absl::Seconds(60));
    if (!crash.ok()) {
      out->Fail(std::string(crash.status().message()));
      if (first_crash) Docker(socket, {"rm", "-f", name}).IgnoreError();
      continue;
    }
    const absl::Time healed = WaitHttp200(port, "/health", absl::Seconds(60));
    if (healed == absl::InfiniteFuture()) {
      out->Fail("not serving again within 60 s");
    } else {
      out->heal_ms.push_back(Ms(healed - crash->t0));
      out->detect_ms.push_back(Ms(crash->died - crash->t0));
    }
    if (first_crash) Docker(socket, {"rm", "-f", name}).IgnoreError();
  }
  if (!first_crash) Docker(socket, {"rm", "-f", name}).IgnoreError();
}

std::string Machine() {
  std::ifstream cpu("/proc/cpuinfo");
  std::string line, model;
  while (std::getline(cpu, line)) {
    if (absl::StartsWith(line, "model name")) {
      model = std::string(absl::StripAsciiWhitespace(line.substr(line.find(':') + 1)));
      break;
    }
  }
  std::ifstream load("/proc/loadavg");
  std::string l1, l5, l15;
  load >> l1 >> l5 >> l15;
  return absl::StrCat(std::thread::hardware_concurrency(), " cores (", model, "), load average ",
                      l1, " ", l5, " ", l15);
}

int Main(int argc, char** argv) {
  int runs = 10;
  std::string out_path;  // default: bench/results/heal.md, unless --only picks some rows
  std::string bin_dir = "build/bin";
  std::string source_dir = ".";
  bool docker = false;
  std::set<std::string> only;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--out" && i + 1 < argc) {
      out_path = argv[++i];
    } else if (a == "--bin" && i + 1 < argc) {
      bin_dir = argv[++i];
    } else if (a == "--source" && i + 1 < argc) {
      source_dir = argv[++i];
    } else if (a == "--docker") {
      docker = true;
    } else if (a == "--only" && i + 1 < argc) {
      for (auto part : absl::StrSplit(argv[++i], ',')) only.insert(std::string(part));
    } else {
      std::fprintf(stderr,
                   "heal_bench: unknown argument %s\nusage: heal_bench [--runs N] [--out FILE] "
                   "[--bin DIR] [--source DIR] [--docker] [--only process,monit,nginx,docker]\n",
                   a.c_str());
      return 2;
    }
  }
  // Some rows are not the table: without --out they are printed only, and heal.md keeps the
  // last whole run.
  if (out_path.empty() && only.empty()) out_path = "bench/results/heal.md";
  auto want = [&](const std::string& part) { return only.empty() || only.count(part) > 0; };
  bin_dir = std::filesystem::absolute(bin_dir).string();
  ::setenv("UPKEEP_BIN_DIR", bin_dir.c_str(), 1);
  ::setenv("UPKEEP_SOURCE_DIR", std::filesystem::absolute(source_dir).c_str(), 1);
  const std::string load_before = Machine();
  const absl::Time began = absl::Now();
  std::vector<Samples> all;

  auto crash = [](StackHarness& x) -> absl::StatusOr<absl::Time> {
    absl::Status st = x.CrashBackend();
    if (!st.ok()) return st;
    return absl::Now();  // the backend answered /fault/crash and aborts
  };
  auto hang = [](StackHarness& x) -> absl::StatusOr<absl::Time> {
    absl::Status st = x.HangBackend();
    if (!st.ok()) return st;
    return absl::Now();
  };

  // One upkeep stack (rows "upkeep (label)"): the crash and hang faults, and/or the nginx
  // fault. The scenarios need the stack's ports, so they are built once it runs.
  // `api` (Docker): the crash is SIGKILL of the backend container's main process, and each run
  // also notes when Docker's `die` event reached the bench.
  auto process_rows = [&](HarnessOptions o, const std::string& label, bool faults, bool proxy,
                          const std::string& proxy_label, DockerApi* api = nullptr) {
    upkeep::testing::TempDir dir;
    o.work_dir = dir.path();
    o.bin_dir = bin_dir;
    o.source_dir = source_dir;
    // Measuring the heal path, not the policy: no budget to exhaust, no backoff (the runs
    // crash one service again and again, and upkeep's backoff would grow like Docker's), and
    // no action rate limit (30 a minute by default: the crash and hang rows ask for more, and
    // the run that met the limit waited ≈ 20 s for the bucket; until 2026-11-27 that run was
    // the hang row's p95).
    o.restart_budget = 1000;
    o.backoff_initial = "1ms";
    o.backoff_max = "1ms";
    o.max_actions_per_minute = 1000;
    auto h = StackHarness::Start(o);
    const bool up = h.ok() && (*h)->WaitServing(absl::Seconds(60)).ok();
    std::vector<UpkeepScenario> scenarios;
    const int backend = up ? (*h)->backend_port() : 0;
    const int proxy_port = up ? (*h)->nginx_port() : 0;
    const std::string rt = o.runtime == upkeep::demo::Runtime::kDocker ? "docker" : "process";
    if (faults && api != nullptr) {
      auto killed_id = std::make_shared<std::string>();
      UpkeepScenario sc{"crash (docker)",
                        "backend crashed",
                        nullptr,
                        [api, killed_id](StackHarness& x) -> absl::StatusOr<absl::Time> {
                          auto killed = KillContainer(
                              *api, absl::StrCat(x.stack_name(), "-backend-", x.backend_port()));
                          if (!killed.ok()) return killed.status();
                          *killed_id = killed->first;
                          return killed->second;
                        },
                        backend,
                        "/health"};
      sc.die_at = [api, killed_id](absl::Time t0) {
        return api->WaitDie(*killed_id, t0, absl::Seconds(5));
      };
      scenarios.push_back(std::move(sc));
    } else if (faults) {
      scenarios.push_back({absl::StrCat("crash (", rt, ")"), "backend crashed", nullptr, crash,
                           backend, "/health"});
      scenarios.push_back({absl::StrCat("hang (", rt, ")"), "backend hung (unhealthy)", nullptr,
                           hang, backend, "/health"});
    }
    if (proxy) {
      scenarios.push_back({"nginx 502",
                           absl::StrCat("nginx 502, upstream healthy (", proxy_label, ")"),
                           [](StackHarness& x) { return x.PrepareMovedUpstream(); },
                           [](StackHarness& x) { return x.RetireMovedUpstream(); }, proxy_port,
                           "/api/health", /*client=*/true});
    }
    if (!up) {
      std::fprintf(stderr, "heal_bench: %s stack did not come up (%s): %s\n", label.c_str(),
                   dir.path().c_str(),
                   h.ok() ? "not serving" : std::string(h.status().message()).c_str());
      for (const auto& sc : scenarios) {
        Samples s;
        s.group = sc.group;
        s.scenario = sc.scenario;
        s.tool = absl::StrCat("upkeep (", label, ")");
        s.planned = runs;
        s.failures = runs;
        all.push_back(s);
      }
      return;
    }
    for (const auto& sc : scenarios) {
      Samples s;
      s.tool = absl::StrCat("upkeep (", label, ")");
      std::fprintf(stderr, "heal_bench: %s under %s, %d runs\n", sc.scenario.c_str(),
                   s.tool.c_str(), runs);
      RunUpkeep(**h, sc, runs, &s);
      all.push_back(s);
    }
  };

  if (want("process") || want("nginx")) {
    HarnessOptions o;
    o.runtime = upkeep::demo::Runtime::kProcess;
    process_rows(o, "process", want("process"), want("nginx"), "error-log path");
  }
  if (want("nginx")) {
    HarnessOptions o;
    o.runtime = upkeep::demo::Runtime::kProcess;
    o.nginx_error_log_level = "crit";  // no upstream error is logged: route probes only
    process_rows(o, "process", false, true, "route probe only: error_log crit");
    o.route_probe_period = "200ms";  // what an operator can buy on that path (docs/agent.md)
    process_rows(o, "process", false, true, "route probe only, probed every 200 ms");
  }
  if (want("monit")) {
    for (bool h : {false, true}) {
      Samples s;
      std::fprintf(stderr, "heal_bench: monit, %s, %d runs\n", h ? "hang" : "crash", runs);
      RunMonit(bin_dir, runs, h, &s);
      all.push_back(s);
    }
  }
  if (docker && want("docker")) {
    auto* env = upkeep::demo::DockerEnv::Get();
    if (!env->ok()) {
      std::fprintf(stderr, "heal_bench: skipping docker: %s\n", env->error().c_str());
    } else {
      DockerApi api(env->socket());
      if (absl::Status st = api.WatchDies(absl::Seconds(10)); !st.ok()) {
        std::fprintf(stderr, "heal_bench: skipping docker: %s\n",
                     std::string(st.message()).c_str());
      } else {
        Samples floor, first, repeated;
        std::fprintf(stderr, "heal_bench: docker floor, %d runs\n", runs);
        RunDockerFloor(api, env->socket(), env->image(), runs, &floor);
        all.push_back(floor);
        HarnessOptions o;
        o.runtime = upkeep::demo::Runtime::kDocker;
        o.docker_socket = env->socket();
        o.docker_image = env->image();
        process_rows(o, "docker", true, false, "", &api);
        std::fprintf(stderr, "heal_bench: docker restart: always, %d runs each\n", runs);
        RunDockerRestartPolicy(api, env->socket(), env->image(), runs, true, &first);
        all.push_back(first);
        RunDockerRestartPolicy(api, env->socket(), env->image(), runs, false, &repeated);
        all.push_back(repeated);
      }
    }
  }

  // The table, grouped: rows of one group are compared.
  std::vector<std::string> groups;
  for (const auto& s : all) {
    if (std::find(groups.begin(), groups.end(), s.group) == groups.end()) {
      groups.push_back(s.group);
    }
  }
  std::string table = absl::StrCat(
      "| scenario | tool | runs | failed | detect p50 ms | detect p95 ms | repair done p50 ms | "
      "serving again p50 ms | serving again p95 ms |\n|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& g : groups) {
    for (const auto& s : all) {
      if (s.group != g) continue;
      absl::StrAppend(&table, "| ", s.scenario, " | ", s.tool, " | ", s.planned, " | ", s.failures,
                      " | ", Fmt(Percentile(s.detect_ms, 0.5)), " | ",
                      Fmt(Percentile(s.detect_ms, 0.95)), " | ", Fmt(Percentile(s.action_ms, 0.5)),
                      " | ", Fmt(Percentile(s.heal_ms, 0.5)), " | ",
                      Fmt(Percentile(s.heal_ms, 0.95)), " |\n");
    }
  }
  // Ratios: each upkeep row to each peer of its group, on the medians.
  std::string ratios;
  for (const auto& g : groups) {
    for (const auto& u : all) {
      if (u.group != g || !absl::StartsWith(u.tool, "upkeep") || u.heal_ms.empty()) continue;
      for (const auto& p : all) {
        if (p.group != g || absl::StartsWith(p.tool, "upkeep") || p.heal_ms.empty()) continue;
        const double a = Percentile(u.heal_ms, 0.5), b = Percentile(p.heal_ms, 0.5);
        absl::StrAppend(&ratios, "- ", u.scenario, ": ", u.tool, " ", Fmt(a), " ms = **",
                        absl::StrFormat("%.2f", a / b), " ×** ", p.tool, " (", Fmt(b), " ms; ",
                        a >= b ? "+" : "−", Fmt(std::abs(a - b)), " ms)\n");
      }
    }
  }
  std::string details;
  for (const auto& s : all) {
    if (!s.part_ms.empty()) {
      absl::StrAppend(&details, "- ", s.tool, ": `die` event reached us p50 ",
                      Fmt(Percentile(s.detect_ms, 0.5)), " ms (p95 ",
                      Fmt(Percentile(s.detect_ms, 0.95)), "), `docker start` → serving p50 ",
                      Fmt(Percentile(s.part_ms, 0.5)), " ms (p95 ",
                      Fmt(Percentile(s.part_ms, 0.95)), ")\n");
    }
    if (!s.lag_ms.empty()) {
      absl::StrAppend(&details, "- ", s.scenario, ", ", s.tool,
                      ": Docker's `die` event reached the bench p50 ",
                      Fmt(Percentile(s.die_ms, 0.5)), " ms (p95 ", Fmt(Percentile(s.die_ms, 0.95)),
                      "); upkeep's detection came after it by p50 ", Fmt(Percentile(s.lag_ms, 0.5)),
                      " ms (p95 ", Fmt(Percentile(s.lag_ms, 0.95)), "; per run, same crash)\n");
    }
    if (!s.first_fail.empty()) {
      absl::StrAppend(&details, "- ", s.scenario, ": the client's first failed request p50 ",
                      Fmt(Percentile(s.first_fail, 0.5)), " ms after the fault (p95 ",
                      Fmt(Percentile(s.first_fail, 0.95)), "); upkeep's reload done p50 ",
                      Fmt(Percentile(s.action_ms, 0.5)), " ms (p95 ",
                      Fmt(Percentile(s.action_ms, 0.95)), ")\n");
    }
  }
  std::printf("%s\n%s\n%s", table.c_str(), ratios.c_str(), details.c_str());
  if (out_path.empty()) return 0;
  const std::string load_after = Machine();
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(out_path).parent_path(), ec);
  std::ofstream out(out_path);
  out << "# Time to heal (bench/e2e/heal_bench)\n\n"
      << absl::FormatTime("%Y-%m-%d %H:%M UTC", began, absl::UTCTimeZone()) << ", "
      << absl::StrFormat("%.0f", absl::ToDoubleMinutes(absl::Now() - began))
      << " min; every scenario " << runs << " runs (`heal_bench --runs " << runs
      << (docker ? " --docker" : "") << "`)\n\n"
      << "Machine: " << load_before << " before, " << load_after.substr(load_after.find("load"))
      << " after. The machine is shared with other builds and tests: absolute times are upper "
         "bounds, compare rows of one run (ratios), not runs.\n\n"
      << table << "\nRatios (medians, same run):\n\n"
      << ratios << "\nDetails:\n\n"
      << details;
  const std::string notes = absl::StrCat(source_dir, "/bench/results/heal-notes.md");
  if (std::ifstream in(notes); in) out << "\n" << in.rdbuf();
  return 0;
}

}  // namespace
}  // namespace upkeep::bench

int main(int argc, char** argv) { return upkeep::bench::Main(argc, argv); }

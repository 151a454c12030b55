// DockerRuntime against a real, private dockerd running upkeep-sample containers (host network).
#include "agent/runtime/docker/docker_runtime.h"

#include <curl/curl.h>
#include <signal.h>

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "core/proto_time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/docker/docker_fixture.h"
#include "tests/support/net.h"
#include "tests/support/wait.h"

namespace upkeep::agent {
namespace {

using ::testing::HasSubstr;
using upkeep::testing::FreePort;
using upkeep::testing::HttpGetStatus;
using upkeep::testing::SampleContainer;
using upkeep::testing::WaitFor;
using upkeep::testing::WaitForPort;
using upkeep::v1::ServiceSpec;

ServiceSpec ComposeSpec(const std::string& project, const std::string& service) {
  ServiceSpec s;
  s.set_name(service);
  s.mutable_container()->mutable_compose()->set_project(project);
  s.mutable_container()->mutable_compose()->set_service(service);
  return s;
}

SampleContainer Sample(const std::string& name, int port, const std::string& project = "",
                       const std::string& service = "", bool health_check = false) {
  SampleContainer c;
  c.name = name;
  c.port = port;
  c.project = project;
  c.service = service;
  c.health_check = health_check;
  return c;
}

ServiceSpec NameSpec(const std::string& name) {
  ServiceSpec s;
  s.set_name(name);
  s.mutable_container()->set_name(name);
  return s;
}

// Records on_change calls with their time.
struct Changes {
  absl::Mutex mu;
  std::vector<std::pair<std::string, absl::Time>> calls ABSL_GUARDED_BY(mu);
  std::function<void(const std::string&)> Callback() {
    return [this](const std::string& s) {
      absl::MutexLock lock(&mu);
      calls.emplace_back(s, absl::Now());
    };
  }
  size_t Count() {
    absl::MutexLock lock(&mu);
    return calls.size();
  }
  // No call for `d` (the events of an earlier action have all arrived).
  bool QuietFor(absl::Duration d) {
    absl::MutexLock lock(&mu);
    return calls.empty() || absl::Now() - calls.back().second >= d;
  }
  // The first call at or after `since`.
  std::optional<absl::Time> FirstAfter(absl::Time since) {
    absl::MutexLock lock(&mu);
    for (const auto& [s, t] : calls) {
      if (t >= since) return t;
    }
    return std::nullopt;
  }
};

class DockerRuntimeTest : public upkeep::testing::DockerFixture {
 protected:
  // POST to the Engine API as the docker CLI does (e.g. /containers/ID/stop); the HTTP code.
  long ApiPost(const std::string& path) {
    CURL* h = curl_easy_init();
    const std::string url = "http://localhost/v1.41" + path;
    curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, socket().c_str());
    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 60000L);
    curl_easy_setopt(
        h, CURLOPT_WRITEFUNCTION, +[](char*, size_t s, size_t n, void*) { return s * n; });
    long code = 0;
    if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(h);
    return code;
  }
  // Inspect until the container has stopped.
  upkeep::v1::ServiceObservation Stopped(Runtime* rt, const ServiceSpec& spec) {
    upkeep::v1::ServiceObservation obs;
    EXPECT_TRUE(WaitFor([&] {
      obs = rt->Inspect(spec);
      return obs.exists() && !obs.running();
    })) << obs.DebugString();
    return obs;
  }
  // A runtime as a restarted agent has it: nothing seen, only what dockerd still holds.
  std::unique_ptr<Runtime> FreshRuntime() {
    auto rt = CreateDockerRuntime(socket());
    EXPECT_TRUE(rt.ok()) << rt.status();
    return rt.ok() ? std::move(*rt) : nullptr;
  }
  // Starts the events stream for `spec` and waits until it is live (a restart of ours is seen).
  std::unique_ptr<Subscription> WatchLive(const ServiceSpec& spec, Changes* changes, int port) {
    auto watch = rt_->Watch({spec}, changes->Callback());
    EXPECT_TRUE(rt_->Restart(spec, absl::Seconds(1)).ok());
    EXPECT_TRUE(WaitFor([&] { return changes->Count() > 0; }));
    EXPECT_TRUE(WaitForPort("127.0.0.1", port));
    return watch;
  }

  void SetUp() override {
    DockerFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto rt = CreateDockerRuntime(socket());
    ASSERT_TRUE(rt.ok()) << rt.status();
    rt_ = std::move(*rt);
  }
  void TearDown() override {
    rt_.reset();
    DockerFixture::TearDown();
  }
  std::string Unique(const std::string& base) {
    static int n = 0;
    return absl::StrCat(base, "-", getpid(), "-", ++n);
  }

  std::unique_ptr<Runtime> rt_;
};

TEST_F(DockerRuntimeTest, InspectByComposeLabels) {
  const int port = FreePort();
  const std::string project = Unique("proj");
  auto id = RunSample(Sample(Unique("web"), port, project, "web"));
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(WaitForPort("127.0.0.1", port));
  const auto obs = rt_->Inspect(ComposeSpec(project, "web"));
  EXPECT_EQ(obs.error(), "");
  EXPECT_TRUE(obs.exists());
  EXPECT_TRUE(obs.running());
  EXPECT_EQ(obs.container_id(), *id);
  EXPECT_GT(obs.pid(), 0);
  EXPECT_FALSE(obs.oom_killed());
  EXPECT_EQ(obs.restart_count(), 0);
  EXPECT_EQ(obs.runtime_health(), upkeep::v1::RUNTIME_HEALTH_UNSPECIFIED);
  const absl::Time started = upkeep::FromProto(obs.started_at());
  EXPECT_LT(absl::AbsDuration(absl::Now() - started), absl::Minutes(1));
  // Another service of the project is not there.
  const auto other = rt_->Inspect(ComposeSpec(project, "db"));
  EXPECT_EQ(other.error(), "");
  EXPECT_FALSE(other.exists());
}

TEST_F(DockerRuntimeTest, InspectByNameSeesExitCode) {
  const int port = FreePort();
  const std::string name = Unique("exiter");
  ASSERT_TRUE(RunSample(Sample(name, port)).ok());
  ASSERT_TRUE(WaitForPort("127.0.0.1", port));
  HttpGetStatus("127.0.0.1", port, "/fault/exit?code=3");
  upkeep::v1::ServiceObservation obs;
  ASSERT_TRUE(WaitFor([&] {
    obs = rt_->Inspect(NameSpec(name));
    return obs.exists() && !obs.running();
  }));
  EXPECT_EQ(obs.exit_code(), 3);
  EXPECT_FALSE(obs.oom_killed());
  EXPECT_GE(upkeep::FromProto(obs.finished_at()), upkeep::FromProto(obs.started_at()));
}

TEST_F(DockerRuntimeTest, RestartCountFollowsRestartPolicy) {
  const int port = FreePort();
  const std::string name = Unique("always");
  SampleContainer c = Sample(name, port);
  c.restart = "always";
  ASSERT_TRUE(RunSample(c).ok());
  ASSERT_TRUE(WaitForPort("127.0.0.1", port));
  EXPECT_EQ(rt_->Inspect(NameSpec(name)).restart_count(), 0);
  HttpGetStatus("127.0.0.1", port, "/fault/exit?code=2");
  upkeep::v1::ServiceObservation obs;
  // Running again, with a pid: in its restart back-off Docker already counts the restart and
  // says Running (and Restarting) with Pid 0 and the last exit code, 2; once the container
  // runs again the exit code is cleared. Waiting for the pid makes the observation certain.
  EXPECT_TRUE(WaitFor([&] {
    obs = rt_->Inspect(NameSpec(name));
    return obs.restart_count() == 1 && obs.running() && obs.pid() > 0;
  })) << obs.DebugString();
  EXPECT_EQ(obs.exit_code(), 0);
}

TEST_F(DockerRuntimeTest, MissingContainerDoesNotExist) {
  const auto obs = rt_->Inspect(NameSpec("no-such-container-here"));
  EXPECT_EQ(obs.error(), "");
  EXPECT_FALSE(obs.exists());
  const auto st = rt_->Start(NameSpec("no-such-container-here"));
  EXPECT_TRUE(absl::IsNotFound(st)) << st;
}

TEST_F(DockerRuntimeTest, StartStopRestart) {
  const int port = FreePort();
  const std::string name = Unique("ssr");
  ASSERT_TRUE(RunSample(Sample(name, port)).ok());
  ASSERT_TRUE(WaitForPort("127.0.0.1", port));
  const ServiceSpec spec = NameSpec(name);
  EXPECT_TRUE(rt_->Start(spec).ok());  // already running: 304 is success

  ASSERT_TRUE(rt_->Stop(spec, absl::Seconds(5)).ok());
  auto obs = rt_->Inspect(spec);
  EXPECT_FALSE(obs.running());
  EXPECT_EQ(obs.exit_code(), 0);  // SIGTERM -> clean exit
  EXPECT_FALSE(upkeep::testing::CanConnect("127.0.0.1", port));

  ASSERT_TRUE(rt_->Start(spec).ok());
  EXPECT_TRUE(rt_->Inspect(spec).running());
  ASSERT_TRUE(WaitForPort("127.0.0.1", port));
  const auto before = rt_->Inspect(spec).started_at();

  ASSERT_TRUE(rt_->Restart(spec, absl::Seconds(5)).ok());
  obs = rt_->Inspect(spec);
  EXPECT_TRUE(obs.running());
  EXPECT_GT(upkeep::FromProto(obs.started_at()), upkeep::FromProto(before));
  EXPECT_TRUE(WaitForPort("127.0.0.1", port));
}

TEST_F(DockerRuntimeTest, LogsReturnRequestLines) {
  const int port = FreePort();
  const std::string name = Unique("logs");
  ASSERT_TRUE(RunSample(Sample(name, port)).ok());
  ASSERT_TRUE(WaitForPort("127.0.0.1", port));
  EXPECT_EQ(HttpGetStatus("127.0.0.1", port, "/health"), 200);
  std::string logs;
  ASSERT_TRUE(WaitFor([&] {
    auto l = rt_->Logs(NameSpec(name), 50);
    if (!l.ok()) return false;
    logs = *l;
    return logs.find("GET /health 200") != std::string::npos;
  })) << logs;
  EXPECT_THAT(logs, HasSubstr("listening on 127.0.0.1:"));
  // Decoded: no frame headers left in the text.
  EXPECT_EQ(logs.find('\x01'), std::string::npos);
  auto tail1 = rt_->Logs(NameSpec(name), 1);
  ASSERT_TRUE(tail1.ok());
  EXPECT_EQ(std::count(tail1->begin(), tail1->end(), '\n'), 1) << *tail1;
}

TEST_F(DockerRuntimeTest, RuntimeHealthFollowsHealthcheck) {
  const int port = FreePort();
  const std::string project = Unique("hc");
  ASSERT_TRUE(RunSample(Sample(Unique("hc"), port, project, "api", /*health_check=*/true)).ok());
  const ServiceSpec spec = ComposeSpec(project, "api");
  EXPECT_TRUE(WaitFor(
      [&] { return rt_->Inspect(spec).runtime_health() == upkeep::v1::RUNTIME_HEALTH_HEALTHY; },
      absl::Seconds(20)));
  Changes changes;
  auto watch = rt_->Watch({spec}, changes.Callback());
  HttpGetStatus("127.0.0.1", port, "/fault/unhealthy");
  EXPECT_TRUE(WaitFor(
      [&] { return rt_->Inspect(spec).runtime_health() == upkeep::v1::RUNTIME_HEALTH_UNHEALTHY; },
      absl::Seconds(20)));
  // health_status events reach the watcher.
  EXPECT_TRUE(WaitFor([&] { return changes.Count() > 0; }));
}

TEST_F(DockerRuntimeTest, WatchSeesCrashAndKill) {
  const int port = FreePort();
  const std::string project = Unique("w");
  const std::string name = Unique("crashy");
  ASSERT_TRUE(RunSample(Sample(name, port, project, "web")).ok());
  ASSERT_TRUE(WaitForPort("127.0.0.1", port));
  const ServiceSpec spec = ComposeSpec(project, "web");
  Changes changes;
  // An unrelated container's events must not be reported for "web".
  const int other_port = FreePort();
  ASSERT_TRUE(RunSample(Sample(Unique("other"), other_port)).ok());
  auto watch = rt_->Watch({spec}, changes.Callback());
  // Let the stream connect: a start of the watched service is seen.
  ASSERT_TRUE(rt_->Restart(spec, absl::Seconds(1)).ok());
  ASSERT_TRUE(WaitFor([&] { return changes.Count() > 0; }));
  ASSERT_TRUE(WaitForPort("127.0.0.1", port));
  // So that the latency below is not that of a late restart event.
  ASSERT_TRUE(WaitFor([&] { return changes.QuietFor(absl::Milliseconds(200)); }));

  const absl::Time crash_at = absl::Now();
  HttpGetStatus("127.0.0.1", port, "/fault/crash");
  ASSERT_TRUE(WaitFor([&] { return changes.FirstAfter(crash_at).has_value(); }));
  std::cout << "crash (POST /fault/crash) -> on_change: "
            << absl::FormatDuration(*changes.FirstAfter(crash_at) - crash_at) << "\n";
  ASSERT_TRUE(WaitFor([&] { return !rt_->Inspect(spec).running(); }));
  // Killed by a signal. As PID 1 of its container, abort()'s SIGABRT is ignored and glibc
  // falls back to a fatal fault, so the code is 128+SIGSEGV rather than 128+SIGABRT.
  EXPECT_GT(rt_->Inspect(spec).exit_code(), 128);

  ASSERT_TRUE(rt_->Start(spec).ok());
  ASSERT_TRUE(WaitForPort("127.0.0.1", port));
  ASSERT_TRUE(WaitFor([&] { return changes.QuietFor(absl::Milliseconds(200)); }));
  const absl::Time kill_at = absl::Now();
  ASSERT_TRUE(Docker({"kill", name}).ok());
  ASSERT_TRUE(WaitFor([&] { return changes.FirstAfter(kill_at).has_value(); }));
  std::cout << "docker kill -> on_change: "
            << absl::FormatDuration(*changes.FirstAfter(kill_at) - kill_at) << "\n";
  {
    absl::MutexLock lock(&changes.mu);
    for (const auto& [s, t] : changes.calls) EXPECT_EQ(s, "web");
  }
}

// An exit the events stream saw is inspected from the `die` event (its exitCode) and the last
// Inspect of that run, without asking dockerd: dockerd publishes `die` while it still holds
// the container's lock for its clean-up, and an Inspect sent then waits for all of it. Shown
// by freezing dockerd (SIGSTOP) once the die has arrived: an Inspect that asked it would hang
// to its timeout and come back with an error.
TEST_F(DockerRuntimeTest, ExitSeenOnTheStreamIsInspectedWithoutAskingDockerd) {
  const int port = FreePort();
  const std::string name = Unique("frozen");
  ASSERT_TRUE(RunSample(Sample(name, port)).ok());
  ASSERT_TRUE(WaitForPort("127.0.0.1", port));
  const ServiceSpec spec = NameSpec(name);
  Changes changes;
  auto watch = WatchLive(spec, &changes, port);
  // Every event of the restart has arrived: the Inspect below is of the run the kill ends.
  ASSERT_TRUE(WaitFor([&] { return changes.QuietFor(absl::Milliseconds(200)); }));
  const auto running = rt_->Inspect(spec);
  ASSERT_TRUE(running.running()) << running.DebugString();
  ASSERT_GT(running.pid(), 0);

  int dockerd = 0;
  {
    std::ifstream pidfile(daemon()->dir() + "/docker.pid");
    ASSERT_TRUE(pidfile >> dockerd) << "no pid in " << daemon()->dir() << "/docker.pid";
  }
  ASSERT_GT(dockerd, 1);
  const absl::Time kill_at = absl::Now();
  ASSERT_EQ(kill(running.pid(), SIGKILL), 0);
  // At once (the answer from the event holds for 250 ms after it was read).
  ASSERT_TRUE(WaitFor([&] { return changes.FirstAfter(kill_at).has_value(); }, absl::Seconds(10),
                      absl::Milliseconds(1)));
  ASSERT_EQ(kill(dockerd, SIGSTOP), 0);
  const auto obs = rt_->Inspect(spec);
  ASSERT_EQ(kill(dockerd, SIGCONT), 0);
  EXPECT_TRUE(obs.error().empty()) << "asked the frozen dockerd: " << obs.DebugString();
  EXPECT_TRUE(obs.exists());
  EXPECT_FALSE(obs.running());
  EXPECT_EQ(obs.exit_code(), 137);
  EXPECT_EQ(obs.pid(), 0);
  EXPECT_EQ(obs.container_id(), running.container_id());
  EXPECT_EQ(obs.started_at().seconds(), running.started_at().seconds());
  EXPECT_TRUE(obs.has_finished_at());
  EXPECT_FALSE(obs.stopped_by_person()) << "SIGKILL from the host is a crash";

  // Started again (by us): asked of dockerd again, running, a new pid.
  ASSERT_TRUE(rt_->Start(spec).ok());
  const auto again = rt_->Inspect(spec);
  EXPECT_TRUE(again.running()) << again.DebugString();
  EXPECT_GT(again.pid(), 0);
  EXPECT_NE(again.pid(), running.pid());
}

// The runtime remembers which container a service is while the events stream is up; a new
// container of the same service (a compose recreate) is found at once, not the remembered one:
// here the remembered one still exists, stopped, and the new one runs.
TEST_F(DockerRuntimeTest, InspectFollowsANewContainerOfTheSameService) {
  const int port = FreePort();
  const std::string project = Unique("recreate");
  const std::string first_name = Unique("web-1");
  auto first = RunSample(Sample(first_name, port, project, "web"));
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(WaitForPort("127.0.0.1", port));
  const ServiceSpec spec = ComposeSpec(project, "web");
  Changes changes;
  auto watch = WatchLive(spec, &changes, port);
  EXPECT_EQ(rt_->Inspect(spec).container_id(), *first);
  EXPECT_EQ(rt_->Inspect(spec).container_id(), *first);  // now from what it remembers
  ASSERT_TRUE(Docker({"stop", "-t", "0", first_name}).ok());
  EXPECT_FALSE(rt_->Inspect(spec).running());
  auto second = RunSample(Sample(Unique("web-2"), port, project, "web"));
  ASSERT_TRUE(second.ok()) << second.status();
  upkeep::v1::ServiceObservation obs;
  EXPECT_TRUE(WaitFor([&] {
    obs = rt_->Inspect(spec);
    return obs.container_id() == *second && obs.running();
  })) << obs.DebugString();
  // A start goes to the new one as well, and removing it leaves the old one found again.
  ASSERT_TRUE(Docker({"rm", "-f", obs.container_id()}).ok());
  EXPECT_TRUE(WaitFor([&] { return rt_->Inspect(spec).container_id() == *first; }));
  ASSERT_TRUE(rt_->Start(spec).ok());
  EXPECT_TRUE(WaitFor([&] { return rt_->Inspect(spec).running(); }));
}

// One Docker runtime serves every Docker stack on the host: each stack's watch gets the events
// of its own services, whichever subscribed last.
TEST_F(DockerRuntimeTest, TwoStacksWatchingOneRuntimeBothGetTheirEvents) {
  const int port_a = FreePort(), port_b = FreePort();
  const std::string project_a = Unique("shop"), project_b = Unique("blog");
  ASSERT_TRUE(RunSample(Sample(Unique("a"), port_a, project_a, "web")).ok());
  ASSERT_TRUE(RunSample(Sample(Unique("b"), port_b, project_b, "web")).ok());
  ASSERT_TRUE(WaitForPort("127.0.0.1", port_a));
  ASSERT_TRUE(WaitForPort("127.0.0.1", port_b));
  const ServiceSpec spec_a = ComposeSpec(project_a, "web");
  const ServiceSpec spec_b = ComposeSpec(project_b, "web");
  Changes changes_a, changes_b;
  auto watch_a = rt_->Watch({spec_a}, changes_a.Callback());
  auto watch_b = rt_->Watch({spec_b}, changes_b.Callback());
  ASSERT_TRUE(rt_->Restart(spec_a, absl::Seconds(1)).ok());
  EXPECT_TRUE(WaitFor([&] { return changes_a.Count() > 0; }))
      << "the first stack's watch no longer gets its events";
  ASSERT_TRUE(rt_->Restart(spec_b, absl::Seconds(1)).ok());
  EXPECT_TRUE(WaitFor([&] { return changes_b.Count() > 0; }));
  {
    absl::MutexLock lock(&changes_a.mu);
    for (const auto& [s, t] : changes_a.calls) EXPECT_EQ(s, "web");
  }
  // A stack that goes away stops hearing; the other keeps hearing.
  watch_a.reset();
  const size_t a_before = changes_a.Count();
  const absl::Time restart_at = absl::Now();
  ASSERT_TRUE(rt_->Restart(spec_a, absl::Seconds(1)).ok());
  ASSERT_TRUE(rt_->Restart(spec_b, absl::Seconds(1)).ok());
  EXPECT_TRUE(WaitFor([&] { return changes_b.FirstAfter(restart_at).has_value(); }));
  EXPECT_EQ(changes_a.Count(), a_before) << "an ended watch is never called again";
}

// "Respect people": a `docker stop` upkeep did not do (POST /containers/ID/stop, as the CLI
// does) is a person's stop, seen by the live stream and, after an agent restart, from dockerd's
// event buffer; a `docker start` ends it, and a crash after that is a crash.
TEST_F(DockerRuntimeTest, DockerStopByAPersonIsStoppedByPersonUntilStarted) {
  const int port = FreePort();
  const std::string name = Unique("stopped");
  auto id = RunSample(Sample(name, port));
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(WaitForPort("127.0.0.1", port));
  const ServiceSpec spec = NameSpec(name);
  Changes changes;
  auto watch = WatchLive(spec, &changes, port);
  ASSERT_FALSE(rt_->Inspect(spec).stopped_by_person());

  ASSERT_EQ(ApiPost(absl::StrCat("/containers/", *id, "/stop?t=5")), 204);
  auto obs = Stopped(rt_.get(), spec);
  EXPECT_TRUE(obs.stopped_by_person()) << obs.DebugString();
  EXPECT_EQ(obs.exit_code(), 0);
  // After an agent restart: replayed from dockerd.
  EXPECT_TRUE(FreshRuntime()->Inspect(spec).stopped_by_person());

  ASSERT_EQ(ApiPost(absl::StrCat("/containers/", *id, "/start")), 204);
  ASSERT_TRUE(WaitForPort("127.0.0.1", port));
  // Known once the stream has read its `start` (right after a `die`, Inspect answers from it).
  EXPECT_TRUE(WaitFor([&] {
    obs = rt_->Inspect(spec);
    return obs.running();
  })) << obs.DebugString();
  EXPECT_FALSE(obs.stopped_by_person());

  HttpGetStatus("127.0.0.1", port, "/fault/crash");
  obs = Stopped(rt_.get(), spec);
  EXPECT_FALSE(obs.stopped_by_person())
      << "a crash after the person's start: " << obs.DebugString();
  EXPECT_FALSE(FreshRuntime()->Inspect(spec).stopped_by_person());
}

// Without any watch (the first Inspect replays the run) and for `docker kill` (SIGKILL).
TEST_F(DockerRuntimeTest, DockerKillByAPersonIsStoppedByPerson) {
  const int port = FreePort();
  const std::string name = Unique("killed");
  ASSERT_TRUE(RunSample(Sample(name, port)).ok());
  ASSERT_TRUE(WaitForPort("127.0.0.1", port));
  const ServiceSpec spec = NameSpec(name);
  ASSERT_TRUE(Docker({"kill", name}).ok());
  const auto obs = Stopped(rt_.get(), spec);
  EXPECT_TRUE(obs.stopped_by_person()) << obs.DebugString();
  EXPECT_EQ(obs.exit_code(), 137);
}

// A crash, SIGKILL of the main pid from the host (what the kernel's OOM killer or a fault
// does: no API call) and a non-stopping `docker kill -s USR1` followed by a crash are never a
// person's stop: that would leave the service down.
TEST_F(DockerRuntimeTest, CrashesAreNotStoppedByPerson) {
  const int port = FreePort();
  const std::string name = Unique("crasher");
  auto id = RunSample(Sample(name, port));
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(WaitForPort("127.0.0.1", port));
  const ServiceSpec spec = NameSpec(name);
  Changes changes;
  auto watch = WatchLive(spec, &changes, port);

  HttpGetStatus("127.0.0.1", port, "/fault/crash");
  auto obs = Stopped(rt_.get(), spec);
  EXPECT_GT(obs.exit_code(), 128);
  EXPECT_FALSE(obs.stopped_by_person()) << "crash: " << obs.DebugString();

  ASSERT_TRUE(rt_->Start(spec).ok());
  ASSERT_TRUE(WaitForPort("127.0.0.1", port));
  obs = rt_->Inspect(spec);
  ASSERT_GT(obs.pid(), 0);
  ASSERT_EQ(kill(obs.pid(), SIGKILL), 0) << "kill " << obs.pid();
  obs = Stopped(rt_.get(), spec);
  EXPECT_EQ(obs.exit_code(), 137);
  EXPECT_FALSE(obs.stopped_by_person()) << "SIGKILL from the host: " << obs.DebugString();

  ASSERT_TRUE(rt_->Start(spec).ok());
  ASSERT_TRUE(WaitForPort("127.0.0.1", port));
  ASSERT_EQ(ApiPost(absl::StrCat("/containers/", *id, "/kill?signal=SIGUSR1")), 204);
  ASSERT_TRUE(WaitFor([&] { return HttpGetStatus("127.0.0.1", port, "/health") == 500; }));
  EXPECT_TRUE(rt_->Inspect(spec).running());
  HttpGetStatus("127.0.0.1", port, "/fault/crash");
  obs = Stopped(rt_.get(), spec);
  EXPECT_FALSE(obs.stopped_by_person()) << "USR1, then a crash: " << obs.DebugString();
  EXPECT_FALSE(FreshRuntime()->Inspect(spec).stopped_by_person());
}

// The runtime's own Stop and Restart (repairs, `upkeepctl run stop-service`, which the decision
// side attributes through its action history) are not an outside stop, with or without a watch.
TEST_F(DockerRuntimeTest, OwnStopAndRestartAreNotStoppedByPerson) {
  const int port = FreePort();
  const std::string name = Unique("own");
  ASSERT_TRUE(RunSample(Sample(name, port)).ok());
  ASSERT_TRUE(WaitForPort("127.0.0.1", port));
  const ServiceSpec spec = NameSpec(name);

  ASSERT_TRUE(rt_->Stop(spec, absl::Seconds(5)).ok());
  auto obs = Stopped(rt_.get(), spec);
  EXPECT_FALSE(obs.stopped_by_person()) << "own stop, no watch: " << obs.DebugString();

  ASSERT_TRUE(rt_->Start(spec).ok());
  ASSERT_TRUE(WaitForPort("127.0.0.1", port));
  Changes changes;
  auto watch = WatchLive(spec, &changes, port);
  ASSERT_TRUE(rt_->Stop(spec, absl::Seconds(5)).ok());
  obs = Stopped(rt_.get(), spec);
  EXPECT_FALSE(obs.stopped_by_person()) << "own stop, watched: " << obs.DebugString();

  // Restart, then a crash of the new run: the restart's kill belongs to the run before.
  ASSERT_TRUE(rt_->Start(spec).ok());
  ASSERT_TRUE(rt_->Restart(spec, absl::Seconds(5)).ok());
  ASSERT_TRUE(WaitForPort("127.0.0.1", port));
  HttpGetStatus("127.0.0.1", port, "/fault/crash");
  obs = Stopped(rt_.get(), spec);
  EXPECT_FALSE(obs.stopped_by_person()) << "own restart, then a crash: " << obs.DebugString();
  EXPECT_FALSE(FreshRuntime()->Inspect(spec).stopped_by_person());
}

// The live stream remembers a person's stop that dockerd's 256-event buffer has since dropped;
// a restarted agent cannot know it any more and takes it for a crash (the documented gap).
TEST_F(DockerRuntimeTest, LiveStreamRemembersAStopBeyondDockerdsEventBuffer) {
  const int port = FreePort(), other_port = FreePort();
  const std::string name = Unique("remembered");
  auto id = RunSample(Sample(name, port));
  auto other = RunSample(Sample(Unique("noisy"), other_port));
  ASSERT_TRUE(id.ok() && other.ok());
  ASSERT_TRUE(WaitForPort("127.0.0.1", port));
  ASSERT_TRUE(WaitForPort("127.0.0.1", other_port));
  const ServiceSpec spec = NameSpec(name);
  Changes changes;
  auto watch = WatchLive(spec, &changes, port);
  ASSERT_EQ(ApiPost(absl::StrCat("/containers/", *id, "/stop?t=5")), 204);
  ASSERT_TRUE(WaitFor([&] { return changes.QuietFor(absl::Milliseconds(200)); }));
  // 270 events of another container push the stop out of dockerd's buffer (SIGUSR2: healthy).
  for (int i = 0; i < 270; ++i) {
    ASSERT_EQ(ApiPost(absl::StrCat("/containers/", *other, "/kill?signal=SIGUSR2")), 204);
  }
  const auto obs = Stopped(rt_.get(), spec);
  EXPECT_TRUE(obs.stopped_by_person()) << obs.DebugString();
  EXPECT_FALSE(FreshRuntime()->Inspect(spec).stopped_by_person())
      << "dockerd no longer holds the stop; if this fails, its buffer grew: update the docs";
}

// Last in the file: restarts the shared dockerd.
TEST_F(DockerRuntimeTest, WatchReconnectsAfterDaemonRestart) {
  const int port = FreePort();
  const std::string name = Unique("survivor");
  ASSERT_TRUE(RunSample(Sample(name, port)).ok());
  ASSERT_TRUE(WaitForPort("127.0.0.1", port));
  const ServiceSpec spec = NameSpec(name);
  Changes changes;
  auto watch = rt_->Watch({spec}, changes.Callback());
  ASSERT_TRUE(rt_->Restart(spec, absl::Seconds(1)).ok());
  ASSERT_TRUE(WaitFor([&] { return changes.Count() > 0; }));

  // While the daemon is away: errors; then a reconnect reports the service. The shutdown's own
  // events are all read before `down` (nothing can come while dockerd is stopped), so a change
  // after it is the reconnect's (taking the time after a whole Restart raced a quick reconnect).
  ASSERT_TRUE(daemon()->StopDaemon().ok());
  ASSERT_TRUE(WaitFor([&] { return changes.QuietFor(absl::Milliseconds(200)); }));
  const absl::Time down = absl::Now();
  ASSERT_TRUE(daemon()->StartDaemon().ok());
  ASSERT_TRUE(WaitFor([&] { return changes.FirstAfter(down).has_value(); }, absl::Seconds(20)));
  // dockerd stopped it on its way out, as `docker stop` would (kill, die and stop events on
  // the stream): that is no person's stop.
  const auto obs = rt_->Inspect(spec);
  EXPECT_FALSE(obs.running());
  EXPECT_FALSE(obs.stopped_by_person()) << "stopped by dockerd's shutdown: " << obs.DebugString();
  // The stream is live again: a start is seen.
  const absl::Time start_at = absl::Now();
  ASSERT_TRUE(rt_->Start(spec).ok());
  EXPECT_TRUE(WaitFor([&] { return changes.FirstAfter(start_at).has_value(); }));
  EXPECT_TRUE(rt_->Inspect(spec).running());
}

}  // namespace
}  // namespace upkeep::agent

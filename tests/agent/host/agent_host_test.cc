// The agent against real things on this host: processes it starts (the static sample
// service), real nginx under a temp prefix, /proc, and its journal on disk.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "agent/act/executor.h"
#include "agent/act/journal.h"
#include "agent/observe/nginx.h"
#include "agent/observe/observer.h"
#include "agent/observe/ports.h"
#include "agent/observe/process_runtime.h"
#include "agent/observe/prober.h"
#include "core/manifest/loader.h"
#include "core/proto_time.h"
#include "gtest/gtest.h"
#include "tests/support/net.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace upkeep::agent {
namespace {

namespace v1 = upkeep::v1;
using upkeep::testing::FreePort;
using upkeep::testing::WaitFor;

v1::ServiceSpec SampleSpec(const std::string& name, int port) {
  v1::ServiceSpec s;
  s.set_name(name);
  s.set_port(port);
  for (const std::string& a : {upkeep::testing::BinPath("upkeep-sample-service"),
                               std::string("--name"), name, std::string("--port"),
                               absl::StrCat(port)}) {
    s.mutable_process()->add_command(a);
  }
  s.mutable_probe()->mutable_http()->set_path("/health");
  return s;
}

TEST(ProcessRuntime, SeesAnExitAtOnceAndCollectsLogs) {
  upkeep::testing::TempDir dir;
  auto rt = CreateProcessRuntime(dir.path());
  ASSERT_TRUE(rt.ok());
  const int port = FreePort();
  const v1::ServiceSpec spec = SampleSpec("backend", port);
  absl::Mutex mu;
  absl::Time seen = absl::InfiniteFuture();
  (*rt)->Watch({spec}, [&](const std::string& name) {
    absl::MutexLock lock(&mu);
    if (name == "backend") seen = absl::Now();
  });
  ASSERT_TRUE((*rt)->Start(spec).ok());
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", port));
  v1::ServiceObservation o = (*rt)->Inspect(spec);
  EXPECT_TRUE(o.running());
  EXPECT_GT(o.pid(), 0);
  EXPECT_EQ(upkeep::testing::HttpGetStatus("127.0.0.1", port, "/health"), 200);
  const absl::Time killed = absl::Now();
  ASSERT_EQ(::kill(o.pid(), SIGKILL), 0);
  ASSERT_TRUE(WaitFor([&] {
    absl::MutexLock lock(&mu);
    return seen != absl::InfiniteFuture();
  }));
  {
    absl::MutexLock lock(&mu);
    std::printf("process exit noticed %.2f ms after SIGKILL\n",
                absl::ToDoubleMilliseconds(seen - killed));
  }
  o = (*rt)->Inspect(spec);
  EXPECT_FALSE(o.running());
  EXPECT_EQ(o.exit_code(), 128 + SIGKILL);
  auto logs = (*rt)->Logs(spec, 10);
  ASSERT_TRUE(logs.ok());
  EXPECT_TRUE(absl::StrContains(*logs, "GET /health 200")) << *logs;
}

TEST(ProcessRuntime, AdoptsItsProcessesAfterARestartInsteadOfStartingTwins) {
  upkeep::testing::TempDir dir;
  const int port = FreePort();
  const v1::ServiceSpec spec = SampleSpec("frontend", port);
  int pid = 0;
  {
    auto rt = CreateProcessRuntime(dir.path());
    ASSERT_TRUE(rt.ok());
    ASSERT_TRUE((*rt)->Start(spec).ok());
    ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", port));
    pid = (*rt)->Inspect(spec).pid();
  }  // the "agent" goes away; the service keeps running
  auto rt = CreateProcessRuntime(dir.path());
  ASSERT_TRUE(rt.ok());
  v1::ServiceObservation o = (*rt)->Inspect(spec);
  EXPECT_TRUE(o.running());
  EXPECT_EQ(o.pid(), pid);
  ASSERT_TRUE((*rt)->Start(spec).ok());
  EXPECT_EQ((*rt)->Inspect(spec).pid(), pid) << "a start of a running service is a no-op";
  ASSERT_TRUE((*rt)->Stop(spec, absl::Seconds(5)).ok());
  EXPECT_FALSE((*rt)->Inspect(spec).running());
  EXPECT_FALSE(upkeep::testing::CanConnect("127.0.0.1", port));
}

TEST(Prober, AHungUpstreamDoesNotDelayTheOthers) {
  const int hung = FreePort(), healthy = FreePort();
  auto a = upkeep::testing::Subprocess::Start(
      {upkeep::testing::BinPath("upkeep-sample-service"), "--port", absl::StrCat(hung)}, "/dev/null");
  auto b = upkeep::testing::Subprocess::Start(
      {upkeep::testing::BinPath("upkeep-sample-service"), "--port", absl::StrCat(healthy)},
      "/dev/null");
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", hung));
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", healthy));
  upkeep::testing::HttpGetStatus("127.0.0.1", hung, "/fault/hang");
  ProbeRequest slow{false, absl::StrCat("http://127.0.0.1:", hung, "/health"), "",
                    absl::Seconds(1), {}};
  ProbeRequest fast{false, absl::StrCat("http://127.0.0.1:", healthy, "/health"), "",
                    absl::Seconds(1), {}};
  ProbeRequest tcp{true, absl::StrCat("http://127.0.0.1:", healthy, "/"), "", absl::Seconds(1), {}};
  const auto results = ProbeAll({slow, fast, tcp});
  EXPECT_FALSE(results[0].ok());
  EXPECT_EQ(results[0].error(), "timeout");
  EXPECT_TRUE(results[1].ok());
  EXPECT_EQ(results[1].status_code(), 200);
  EXPECT_TRUE(results[2].ok());
  EXPECT_LT(upkeep::FromProto(results[1].latency()), upkeep::FromProto(results[0].latency()) / 2)
      << "the healthy probe must not wait for the hung one";
  // Judging: three failures make it unhealthy; a new start resets the run.
  v1::ProbeSpec spec;
  spec.set_failure_threshold(3);
  HealthTracker t(spec);
  const absl::Time start = absl::Now();
  EXPECT_EQ(t.Update(results[0], start, absl::Now()), v1::HEALTH_STATE_STARTING);
  t.Update(results[0], start, absl::Now());
  EXPECT_EQ(t.Update(results[0], start, absl::Now()), v1::HEALTH_STATE_UNHEALTHY);
  EXPECT_EQ(t.Update(results[1], start + absl::Seconds(1), absl::Now()),
            v1::HEALTH_STATE_HEALTHY);
}

TEST(Ports, FindsWhatAProcessListensOn) {
  const int port = FreePort();
  auto p = upkeep::testing::Subprocess::Start(
      {upkeep::testing::BinPath("upkeep-sample-service"), "--port", absl::StrCat(port)},
      "/dev/null");
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", port));
  const auto mine = ListenersOf((*p)->pid(), ListListeners());
  ASSERT_EQ(mine.size(), 1u);
  EXPECT_EQ(mine[0].address(), "127.0.0.1");
  EXPECT_EQ(mine[0].port(), port);
  EXPECT_FALSE(mine[0].ipv6());
  const auto parsed = ParseProcNetTcp(
      "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
      "   0: 0100007F:1F42 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1\n"
      "   1: 0100007F:1F43 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4243 1\n",
      false);
  ASSERT_EQ(parsed.size(), 1u);
  EXPECT_EQ(parsed[0].socket.port(), 8002);
  EXPECT_EQ(parsed[0].inode, 4242u);
}

TEST(NginxErrorLog, ParsesUpstreamErrors) {
  v1::UpstreamErrorKind kind;
  std::string upstream;
  ASSERT_TRUE(ParseUpstreamErrorLine(
      "2026/11/24 20:00:00 [error] 12#12: *5 connect() failed (111: Connection refused) while "
      "connecting to upstream, client: 127.0.0.1, server: , request: \"GET /api/health "
      "HTTP/1.0\", upstream: \"http://[::1]:8002/health\", host: \"x\"",
      &kind, &upstream));
  EXPECT_EQ(kind, v1::UPSTREAM_ERROR_KIND_CONNECTION_REFUSED);
  EXPECT_EQ(upstream, "http://[::1]:8002/health");
  ASSERT_TRUE(ParseUpstreamErrorLine(
      "2026/11/24 20:00:00 [error] 12#12: *9 upstream timed out (110: Connection timed out) "
      "while reading response header from upstream, upstream: \"http://127.0.0.1:8002/\"",
      &kind, &upstream));
  EXPECT_EQ(kind, v1::UPSTREAM_ERROR_KIND_TIMED_OUT);
  ASSERT_TRUE(ParseUpstreamErrorLine(
      "2026/11/24 20:00:00 [error] 12#12: *3 no live upstreams while connecting to upstream, "
      "upstream: \"http://backend/health\"",
      &kind, &upstream));
  EXPECT_EQ(kind, v1::UPSTREAM_ERROR_KIND_NO_LIVE_UPSTREAMS);
  ASSERT_TRUE(ParseUpstreamErrorLine(
      "2026/11/24 20:00:00 [emerg] 1#1: host not found in upstream \"backend-aws:8002\" in "
      "/etc/nginx/conf.d/x.conf:3",
      &kind, &upstream));
  EXPECT_EQ(kind, v1::UPSTREAM_ERROR_KIND_HOST_NOT_FOUND);
  EXPECT_EQ(upstream, "backend-aws:8002");
  EXPECT_FALSE(ParseUpstreamErrorLine("2026/11/24 20:00:00 [notice] 1#1: signal process started",
                                      &kind, &upstream));
}

// A real nginx under a temp prefix, proxying to a sample service.
class NginxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // nginx workers run as an unprivileged user and reopen the log themselves on USR1.
    ::chmod(dir_.path().c_str(), 0755);
    port_ = FreePort();
    upstream_port_ = FreePort();
    upstream_ = std::move(*upkeep::testing::Subprocess::Start(
        {upkeep::testing::BinPath("upkeep-sample-service"), "--port", absl::StrCat(upstream_port_)},
        "/dev/null"));
    ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", upstream_port_));
    WriteConfig(true);
    spec_.set_config(dir_.Join("nginx.conf"));
    spec_.set_prefix(dir_.path());
    spec_.set_pid_file(dir_.Join("nginx.pid"));
    spec_.set_error_log(dir_.Join("error.log"));
    spec_.set_binary("nginx");
  }
  void TearDown() override {
    NginxDriver d(spec_);
    if (pid_t m = d.MasterPid(); m > 0) {
      ::kill(m, SIGTERM);
      WaitFor([&] { return d.MasterPid() == 0; });
    }
  }
  void WriteConfig(bool valid, int upstream_port = 0) {
    std::ofstream(dir_.Join("nginx.conf")) << absl::StrCat(
        "worker_processes 1;\npid ", dir_.Join("nginx.pid"), ";\nerror_log ",
        dir_.Join("error.log"), " error;\nevents {}\nhttp {\n access_log off;\n",
        valid ? "" : " this_is_not_a_directive;\n",
        " server { listen 127.0.0.1:", port_, "; location / { proxy_pass http://127.0.0.1:",
        upstream_port == 0 ? upstream_port_ : upstream_port, "; } }\n}\n");
  }

  upkeep::testing::TempDir dir_;
  int port_ = 0, upstream_port_ = 0;
  std::unique_ptr<upkeep::testing::Subprocess> upstream_;
  v1::NginxSpec spec_;
};

TEST_F(NginxTest, StartsReloadsAndRestartsAndReportsABrokenConfig) {
  NginxDriver nginx(spec_);
  auto started = nginx.Start(absl::Seconds(10));
  ASSERT_TRUE(started.ok()) << started.status();
  const pid_t master = nginx.MasterPid();
  ASSERT_GT(master, 0);
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", port_));
  EXPECT_EQ(upkeep::testing::HttpGetStatus("127.0.0.1", port_, "/"), 200);
  v1::ProxyObservation before;
  nginx.Fill(&before);
  ASSERT_EQ(before.worker_pids_size(), 1);
  // A good reload: new workers, same master.
  auto reloaded = nginx.Reload(absl::Seconds(10));
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  v1::ProxyObservation after;
  nginx.Fill(&after);
  EXPECT_EQ(after.master_pid(), master);
  EXPECT_TRUE(WaitFor([&] {
    v1::ProxyObservation o;
    nginx.Fill(&o);
    return o.worker_pids_size() == 1 && o.worker_pids(0) != before.worker_pids(0);
  }));
  // A broken config: the reload is refused with nginx -t's output; the old config serves.
  WriteConfig(false);
  auto broken = nginx.Reload(absl::Seconds(10));
  EXPECT_FALSE(broken.ok());
  EXPECT_TRUE(absl::StrContains(broken.status().message(), "this_is_not_a_directive"))
      << broken.status();
  EXPECT_EQ(upkeep::testing::HttpGetStatus("127.0.0.1", port_, "/"), 200);
  v1::ProxyObservation o;
  nginx.Fill(&o);
  EXPECT_TRUE(o.last_config_test().ran());
  EXPECT_FALSE(o.last_config_test().ok());
  // Restart with a good config: a new master.
  WriteConfig(true);
  auto restarted = nginx.Restart(absl::Seconds(20));
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  EXPECT_NE(nginx.MasterPid(), master);
  EXPECT_TRUE(WaitFor([&] { return upkeep::testing::HttpGetStatus("127.0.0.1", port_, "/") == 200; }));
}

TEST_F(NginxTest, TailsUpstreamErrorsAcrossRotation) {
  // Point nginx at a port where nothing listens.
  WriteConfig(true, FreePort());
  NginxDriver nginx(spec_);
  ASSERT_TRUE(nginx.Start(absl::Seconds(10)).ok());
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", port_));
  nginx.PollErrorLog();  // start tailing
  EXPECT_EQ(upkeep::testing::HttpGetStatus("127.0.0.1", port_, "/x"), 502);
  ASSERT_TRUE(WaitFor([&] { return nginx.PollErrorLog() || [&] {
    v1::ProxyObservation o;
    nginx.Fill(&o);
    return o.upstream_errors_size() > 0;
  }(); }));
  v1::ProxyObservation o;
  nginx.Fill(&o);
  ASSERT_EQ(o.upstream_errors_size(), 1);
  EXPECT_EQ(o.upstream_errors(0).kind(), v1::UPSTREAM_ERROR_KIND_CONNECTION_REFUSED);
  // Rotate like logrotate: move the file away, nginx reopens on USR1.
  ASSERT_EQ(::rename(dir_.Join("error.log").c_str(), dir_.Join("error.log.1").c_str()), 0);
  ::kill(nginx.MasterPid(), SIGUSR1);
  ASSERT_TRUE(WaitFor([&] { return ::access(dir_.Join("error.log").c_str(), F_OK) == 0; }));
  // (workers reopen the log a moment after the master: keep asking until one lands there)
  EXPECT_TRUE(WaitFor([&] {
    EXPECT_EQ(upkeep::testing::HttpGetStatus("127.0.0.1", port_, "/y"), 502);
    v1::ProxyObservation p;
    nginx.Fill(&p);
    return p.upstream_errors_size() == 1 && p.upstream_errors(0).count() >= 2;
  })) << "errors after rotation are counted";
}

v1::Stack StackFor(const upkeep::testing::TempDir& dir, int port) {
  v1::Stack s;
  s.mutable_metadata()->set_name("shop");
  s.mutable_spec()->add_hosts("h");
  s.mutable_spec()->set_runtime(v1::RUNTIME_KIND_PROCESS);
  *s.mutable_spec()->add_services() = SampleSpec("api", port);
  manifest::ApplyDefaults(&s);
  return s;
}

TEST(Executor, RefusesTargetsItsDesiredStateDoesNotName) {
  upkeep::testing::TempDir dir;
  auto observer = StackObserver::Create({"h", dir.path(), ""});
  auto executor = Executor::Create(dir.path(), observer->get());
  ASSERT_TRUE(executor.ok());
  (*executor)->SetDesired({StackFor(dir, FreePort())});
  v1::Action a;
  a.set_id("x1");
  a.set_stack("shop");
  a.set_kind(v1::ACTION_KIND_RESTART_SERVICE);
  a.set_target("postgres");
  EXPECT_EQ((*executor)->Execute(a).outcome(), v1::ACTION_OUTCOME_REFUSED);
  a.set_id("x2");
  a.set_stack("other");
  a.set_target("api");
  EXPECT_EQ((*executor)->Execute(a).outcome(), v1::ACTION_OUTCOME_REFUSED);
  a.set_id("x3");
  a.set_stack("shop");
  a.set_kind(v1::ACTION_KIND_RELOAD_PROXY);
  a.set_target("nginx");
  EXPECT_EQ((*executor)->Execute(a).outcome(), v1::ACTION_OUTCOME_REFUSED) << "no proxy named";
}

TEST(Executor, RunsAnActionIdOnceAcrossItsOwnRestart) {
  upkeep::testing::TempDir dir;
  const int port = FreePort();
  const v1::Stack stack = StackFor(dir, port);
  v1::Action a;
  a.set_id("once-1");
  a.set_stack("shop");
  a.set_kind(v1::ACTION_KIND_START_SERVICE);
  a.set_target("api");
  int first_pid = 0;
  {
    auto observer = StackObserver::Create({"h", dir.path(), ""});
    auto executor = Executor::Create(dir.path(), observer->get());
    (*executor)->SetDesired({stack});
    const v1::ActionResult r = (*executor)->Execute(a);
    ASSERT_EQ(r.outcome(), v1::ACTION_OUTCOME_SUCCEEDED) << r.message();
    EXPECT_FALSE(r.replayed());
    ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", port));
    first_pid = (*observer)->RuntimeFor(stack)->Inspect(stack.spec().services(0)).pid();
    // Kill the service: a second execution of the same id must not start it again.
    ::kill(first_pid, SIGKILL);
    ASSERT_TRUE(WaitFor([&] {
      return !(*observer)->RuntimeFor(stack)->Inspect(stack.spec().services(0)).running();
    }));
  }
  auto observer = StackObserver::Create({"h", dir.path(), ""});
  auto executor = Executor::Create(dir.path(), observer->get());
  (*executor)->SetDesired({stack});
  const v1::ActionResult again = (*executor)->Execute(a);
  EXPECT_TRUE(again.replayed());
  EXPECT_EQ(again.outcome(), v1::ACTION_OUTCOME_SUCCEEDED);
  EXPECT_FALSE((*observer)->RuntimeFor(stack)->Inspect(stack.spec().services(0)).running())
      << "the replay must not have started the service again";
}

TEST(Journal, AnInterruptedActionIsNotRunAgain) {
  upkeep::testing::TempDir dir;
  {
    Journal j(dir.Join("journal"));
    ASSERT_TRUE(j.Recover().ok());
    ASSERT_TRUE(j.MarkStarted("crashed-mid-action").ok());
  }
  // A torn last line from a crash mid-write is ignored.
  std::ofstream(dir.Join("journal"), std::ios::app) << "F half";
  auto observer = StackObserver::Create({"h", dir.path(), ""});
  auto executor = Executor::Create(dir.path(), observer->get());
  ASSERT_TRUE(executor.ok());
  (*executor)->SetDesired({StackFor(dir, FreePort())});
  v1::Action a;
  a.set_id("crashed-mid-action");
  a.set_stack("shop");
  a.set_kind(v1::ACTION_KIND_START_SERVICE);
  a.set_target("api");
  const v1::ActionResult r = (*executor)->Execute(a);
  EXPECT_EQ(r.outcome(), v1::ACTION_OUTCOME_FAILED);
  EXPECT_TRUE(absl::StrContains(r.message(), "interrupted")) << r.message();
}

}  // namespace
}  // namespace upkeep::agent

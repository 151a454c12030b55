// NginxDriver against a real nginx under a temp prefix, proxying to a sample service.
#include "agent/proxy/nginx/nginx_driver.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
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
        valid ? "" : " this_is_not_a_directive;\n", " server { listen 127.0.0.1:", port_,
        "; location / { proxy_pass http://127.0.0.1:",
        upstream_port == 0 ? upstream_port_ : upstream_port, "; } }\n}\n");
  }

  // Waits until nginx runs exactly one worker (a fresh master forks it a moment later).
  static bool OneWorker(NginxDriver& nginx, v1::ProxyObservation* o) {
    return WaitFor([&] {
      o->Clear();
      nginx.Observe(o);
      return o->worker_pids_size() == 1;
    });
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
  nginx.Observe(&before);
  ASSERT_EQ(before.worker_pids_size(), 1);
  // A good reload: new workers, same master.
  auto reloaded = nginx.Reload(absl::Seconds(10));
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  v1::ProxyObservation after;
  nginx.Observe(&after);
  EXPECT_EQ(after.master_pid(), master);
  EXPECT_TRUE(WaitFor([&] {
    v1::ProxyObservation o;
    nginx.Observe(&o);
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
  nginx.Observe(&o);
  EXPECT_TRUE(o.last_config_test().ran());
  EXPECT_FALSE(o.last_config_test().ok());
  // Restart with a good config: a new master.
  WriteConfig(true);
  auto restarted = nginx.Restart(absl::Seconds(20));
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  EXPECT_NE(nginx.MasterPid(), master);
  EXPECT_TRUE(
      WaitFor([&] { return upkeep::testing::HttpGetStatus("127.0.0.1", port_, "/") == 200; }));
}

// `proxy.nginx.service: nginx.service`: start, reload and restart go through systemctl, so
// that systemd's view stays true. systemd cannot run as PID 1 here, so `systemctl` is a
// stand-in on PATH doing what nginx.service's ExecStart/ExecReload/ExecStop do to the real
// nginx, and logging each call; the driver must call it and still confirm each step on the
// real nginx (a new master, new workers).
TEST_F(NginxTest, ASystemdManagedNginxIsDrivenThroughSystemctl) {
  const std::string bin = dir_.Join("bin"), calls = dir_.Join("systemctl.calls");
  std::filesystem::create_directories(bin);
  const std::string conf = dir_.Join("nginx.conf"), pid = dir_.Join("nginx.pid");
  std::ofstream(bin + "/systemctl") << absl::StrCat(
      "#!/bin/sh\necho \"$@\" >> ", calls, "\n[ \"$2\" = nginx.service ] || exit 5\n",
      "case \"$1\" in\n", "  start) exec nginx -p ", dir_.path(), " -c ", conf, " ;;\n",
      "  reload) nginx -t -p ", dir_.path(), " -c ", conf, " && kill -HUP $(cat ", pid, ") ;;\n",
      // As systemd: stop (SIGTERM, waiting for the master to exit, bounded as TimeoutStopSec),
      // then start. `timeout` gives the wait its deadline.
      "  restart) p=$(cat ", pid, "); kill -TERM $p; timeout 10 tail --pid=$p -f /dev/null; ",
      "exec nginx -p ", dir_.path(), " -c ", conf, " ;;\n", "  *) exit 1 ;;\nesac\n");
  ::chmod((bin + "/systemctl").c_str(), 0755);
  const std::string path = std::getenv("PATH") == nullptr ? "" : std::getenv("PATH");
  ::setenv("PATH", (bin + ":" + path).c_str(), 1);
  spec_.set_service("nginx.service");
  NginxDriver nginx(spec_);
  auto started = nginx.Start(absl::Seconds(10));
  ASSERT_TRUE(started.ok()) << started.status();
  ASSERT_TRUE(WaitFor([&] { return nginx.MasterPid() > 0; }));
  const pid_t master = nginx.MasterPid();
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", port_));
  v1::ProxyObservation before;
  ASSERT_TRUE(OneWorker(nginx, &before));
  auto reloaded = nginx.Reload(absl::Seconds(10));
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ(nginx.MasterPid(), master);
  EXPECT_TRUE(WaitFor([&] {
    v1::ProxyObservation o;
    nginx.Observe(&o);
    return o.worker_pids_size() == 1 && o.worker_pids(0) != before.worker_pids(0);
  }));
  auto restarted = nginx.Restart(absl::Seconds(20));
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  EXPECT_TRUE(WaitFor([&] { return nginx.MasterPid() > 0 && nginx.MasterPid() != master; }));
  EXPECT_TRUE(
      WaitFor([&] { return upkeep::testing::HttpGetStatus("127.0.0.1", port_, "/") == 200; }));
  ::setenv("PATH", path.c_str(), 1);
  std::ifstream in(calls);
  const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(log, "start nginx.service\nreload nginx.service\nrestart nginx.service\n");
}

TEST_F(NginxTest, TailsUpstreamErrorsAcrossRotation) {
  // Point nginx at a port where nothing listens.
  WriteConfig(true, FreePort());
  NginxDriver nginx(spec_);
  ASSERT_TRUE(nginx.Start(absl::Seconds(10)).ok());
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", port_));
  nginx.PollErrorLog();  // start tailing
  EXPECT_EQ(upkeep::testing::HttpGetStatus("127.0.0.1", port_, "/x"), 502);
  ASSERT_TRUE(WaitFor([&] {
    return nginx.PollErrorLog() || [&] {
      v1::ProxyObservation o;
      nginx.Observe(&o);
      return o.upstream_errors_size() > 0;
    }();
  }));
  v1::ProxyObservation o;
  nginx.Observe(&o);
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
    nginx.Observe(&p);
    return p.upstream_errors_size() == 1 && p.upstream_errors(0).count() >= 2;
  })) << "errors after rotation are counted";
}

// Records the driver's change notifications.
struct ProxyChanges {
  absl::Mutex mu;
  int master ABSL_GUARDED_BY(mu) = 0;
  int upstream ABSL_GUARDED_BY(mu) = 0;
  int config ABSL_GUARDED_BY(mu) = 0;
  std::function<void(ProxyDriver::Change)> Callback() {
    return [this](ProxyDriver::Change c) {
      absl::MutexLock lock(&mu);
      (c == ProxyDriver::Change::kMaster          ? master
       : c == ProxyDriver::Change::kUpstreamError ? upstream
                                                  : config)++;
    };
  }
  int Config() {
    absl::MutexLock lock(&mu);
    return config;
  }
  int Master() {
    absl::MutexLock lock(&mu);
    return master;
  }
  int Upstream() {
    absl::MutexLock lock(&mu);
    return upstream;
  }
};

// The pid file and the error log are watched (inotify, a pidfd on the master): a master that
// starts or dies and a new upstream error are told without anyone polling the driver.
TEST_F(NginxTest, WatchTellsMasterChangesAndNewUpstreamErrorsAsTheyHappen) {
  WriteConfig(true, FreePort());  // nothing listens upstream: every request is a 502
  NginxDriver nginx(spec_);
  ProxyChanges changes;
  auto watch = nginx.Watch(changes.Callback());
  ASSERT_TRUE(nginx.Start(absl::Seconds(10)).ok());
  EXPECT_TRUE(WaitFor([&] { return changes.Master() >= 1; })) << "start seen";
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", port_));
  EXPECT_EQ(changes.Upstream(), 0);
  EXPECT_EQ(upkeep::testing::HttpGetStatus("127.0.0.1", port_, "/x"), 502);
  EXPECT_TRUE(WaitFor([&] { return changes.Upstream() >= 1; })) << "upstream error seen";
  // SIGKILL leaves the pid file behind: only the pidfd can tell.
  const int before = changes.Master();
  const pid_t master = nginx.MasterPid();
  ASSERT_GT(master, 0);
  v1::ProxyObservation o;
  nginx.Observe(&o);
  ASSERT_EQ(o.worker_pids_size(), 1);
  ::kill(master, SIGKILL);
  ::kill(o.worker_pids(0), SIGKILL);
  EXPECT_TRUE(WaitFor([&] { return changes.Master() > before; })) << "death seen";
  EXPECT_EQ(nginx.MasterPid(), 0);
  // Once the handle is gone the callback is never called again.
  watch.reset();
  const int after = changes.Master();
  ASSERT_TRUE(WaitFor([&] { return !upkeep::testing::CanConnect("127.0.0.1", port_); }));
  auto restarted = nginx.Start(absl::Seconds(10));
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", port_));
  EXPECT_EQ(changes.Master(), after);
}

// A broken config keeps nginx down; once someone fixes the file, the driver re-tests it by
// itself (inotify on the config's directory) and says so, so the controller can start nginx.
TEST_F(NginxTest, RetestsABrokenConfigWhenItsFileIsFixed) {
  WriteConfig(false);
  NginxDriver nginx(spec_);
  ProxyChanges changes;
  auto watch = nginx.Watch(changes.Callback());
  auto started = nginx.Start(absl::Seconds(10));
  ASSERT_FALSE(started.ok()) << "a config that fails nginx -t is not started";
  v1::ProxyObservation o;
  nginx.Observe(&o);
  ASSERT_FALSE(o.last_config_test().ok());
  std::vector<std::string> watched(o.watched_config().begin(), o.watched_config().end());
  EXPECT_NE(std::find(watched.begin(), watched.end(), dir_.Join("nginx.conf")), watched.end());
  // The failed test is told at once (so the controller judges on it, not on the one before).
  EXPECT_TRUE(WaitFor([&] { return changes.Config() >= 1; }));
  const int told = changes.Config();
  // The error log in the same directory is written to: that is no reason to re-test.
  std::ofstream(dir_.Join("error.log"), std::ios::app) << "noise\n";
  WriteConfig(true);
  ASSERT_TRUE(WaitFor([&] {
    v1::ProxyObservation p;
    nginx.Observe(&p);
    return p.last_config_test().ok();
  })) << "the fixed config is re-tested without anyone asking";
  EXPECT_TRUE(WaitFor([&] { return changes.Config() > told; }));
  auto again = nginx.Start(absl::Seconds(10));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", port_));
}

TEST(NginxConfigFiles, NamesTheFilesOfATestOutput) {
  EXPECT_EQ(
      ConfigFilesNamed("nginx: [emerg] unknown directive \"x\" in /etc/nginx/conf.d/a.conf:12\n"
                       "nginx: configuration file /etc/nginx/nginx.conf test failed\n"),
      (std::vector<std::string>{"/etc/nginx/conf.d/a.conf", "/etc/nginx/nginx.conf"}));
  EXPECT_EQ(ConfigFilesNamed("nginx: [emerg] open() \"/etc/nginx/sites/b.conf\" failed (2: No such "
                             "file or directory) in /etc/nginx/nginx.conf:30\n"),
            (std::vector<std::string>{"/etc/nginx/nginx.conf", "/etc/nginx/sites/b.conf"}));
  EXPECT_TRUE(ConfigFilesNamed("").empty());
}

// A reload is confirmed only once no old worker accepts with the old config: an old worker
// held busy by a half-sent request is still there after Reload returns, but shutting down.
TEST_F(NginxTest, ReloadIsConfirmedWhenOldWorkersStopAccepting) {
  NginxDriver nginx(spec_);
  ASSERT_TRUE(nginx.Start(absl::Seconds(10)).ok());
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", port_));
  v1::ProxyObservation before;
  ASSERT_TRUE(OneWorker(nginx, &before));
  const pid_t old_worker = before.worker_pids(0);
  // A client in the middle of its request header keeps the old worker from exiting.
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port_));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const std::string partial = "GET / HTTP/1.1\r\nHost: x\r\n";
  ASSERT_EQ(::write(fd, partial.data(), partial.size()), static_cast<ssize_t>(partial.size()));
  auto reloaded = nginx.Reload(absl::Seconds(10));
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_TRUE(::kill(old_worker, 0) != 0 || WorkerShuttingDown(old_worker))
      << "the reload was confirmed while the old worker " << old_worker << " still accepted";
  EXPECT_EQ(upkeep::testing::HttpGetStatus("127.0.0.1", port_, "/"), 200);
  ::close(fd);
}

// Reload tells the old workers to quit itself once the new ones run, instead of waiting for the
// master's own 100 ms pause; the master must still take them as exiting and never respawn one
// (it respawns a worker that exits unasked). Once the master has reaped the old worker, nginx
// runs exactly the new worker, through several reloads.
TEST_F(NginxTest, ReloadNeverGetsAnOldWorkerRespawned) {
  NginxDriver nginx(spec_);
  ASSERT_TRUE(nginx.Start(absl::Seconds(10)).ok());
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", port_));
  for (int i = 0; i < 5; ++i) {
    v1::ProxyObservation before;
    ASSERT_TRUE(OneWorker(nginx, &before));
    const pid_t old_worker = before.worker_pids(0);
    auto reloaded = nginx.Reload(absl::Seconds(10));
    ASSERT_TRUE(reloaded.ok()) << reloaded.status();
    // Reaped by the master (a zombie still answers kill 0): a respawn would have happened.
    ASSERT_TRUE(WaitFor([&] { return ::kill(old_worker, 0) != 0; }, absl::Seconds(10)));
    v1::ProxyObservation after;
    nginx.Observe(&after);
    ASSERT_EQ(after.worker_pids_size(), 1) << "reload " << i << ": " << after.DebugString();
    EXPECT_NE(after.worker_pids(0), old_worker);
    EXPECT_EQ(upkeep::testing::HttpGetStatus("127.0.0.1", port_, "/"), 200);
  }
}

// A toy upstream that reads a request and then closes the connection, either cleanly (nginx:
// "upstream prematurely closed connection") or with a reset ("Connection reset by peer").
class ClosingUpstream {
 public:
  explicit ClosingUpstream(bool reset) : reset_(reset) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::listen(fd_, 16);
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Loop(); });
  }
  ~ClosingUpstream() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  int port() const { return port_; }

 private:
  void Loop() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      char buf[4096];
      (void)!::read(c, buf, sizeof(buf));
      if (reset_) {
        linger l{1, 0};
        ::setsockopt(c, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
      }
      ::close(c);
    }
  }
  const bool reset_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST_F(NginxTest, ClassifiesUpstreamsThatCloseOrResetTheConnection) {
  for (const bool reset : {false, true}) {
    SCOPED_TRACE(reset ? "reset" : "closed");
    ClosingUpstream upstream(reset);
    WriteConfig(true, upstream.port());
    NginxDriver nginx(spec_);
    if (nginx.MasterPid() > 0) {
      ASSERT_TRUE(nginx.Reload(absl::Seconds(10)).ok());
    } else {
      ASSERT_TRUE(nginx.Start(absl::Seconds(10)).ok());
    }
    ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", port_));
    nginx.PollErrorLog();
    const v1::UpstreamErrorKind want = reset ? v1::UPSTREAM_ERROR_KIND_CONNECTION_RESET
                                             : v1::UPSTREAM_ERROR_KIND_PREMATURELY_CLOSED;
    EXPECT_TRUE(WaitFor([&] {
      EXPECT_EQ(upkeep::testing::HttpGetStatus("127.0.0.1", port_, "/"), 502);
      v1::ProxyObservation o;
      nginx.Observe(&o);
      for (const auto& e : o.upstream_errors()) {
        if (e.kind() == want) return true;
      }
      return false;
    })) << "nginx's error log should show the upstream "
        << (reset ? "resetting" : "closing");
  }
}

}  // namespace
}  // namespace upkeep::agent

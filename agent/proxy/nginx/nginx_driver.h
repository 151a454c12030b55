// NginxDriver: the ProxyDriver (agent/proxy/proxy_driver.h) for nginx. Sees the master (pid
// file + /proc) and its workers, tests the config (`nginx -t`, output kept), starts, reloads
// (SIGHUP to the master, confirmed once a new worker runs and every old worker has exited or
// is shutting down; never sent when the config test fails; once the new workers run, the old
// ones are sent SIGQUIT, what the master sends them only after a fixed 100 ms pause)
// and restarts nginx, and tails the error log — surviving rotation — turning upstream errors
// into typed records counted since the last reload/restart.
//
// Watch starts one thread that waits on inotify (the directories of the pid file, of the
// error log and of the config files: the main one and every file `nginx -t` named) and on a
// pidfd of the master, so a master that starts, stops or dies and a new upstream error are
// seen the moment they happen, without polling. While the last config test fails, a change to
// a config file (settled for 100 ms) or 30 s without one re-tests the config from that thread
// (Change::kConfigTested), so a proxy kept down by a broken config is started again as soon
// as the file is fixed. A directory that does not exist yet is looked for again every second.
// Thread-safe; the destructor joins the thread.
#ifndef UPKEEP_AGENT_PROXY_NGINX_NGINX_DRIVER_H_
#define UPKEEP_AGENT_PROXY_NGINX_NGINX_DRIVER_H_

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/proxy/proxy_driver.h"
#include "upkeep/v1/observation.pb.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::agent {

// True when nginx worker `pid` is draining after a reload (it no longer accepts).
bool WorkerShuttingDown(pid_t pid);

// The config files an `nginx -t` output names (the main file, the file an error is in).
std::vector<std::string> ConfigFilesNamed(const std::string& output);

// Parses one error-log line; false when it is not an upstream error.
bool ParseUpstreamErrorLine(const std::string& line, upkeep::v1::UpstreamErrorKind* kind,
                            std::string* upstream);

class NginxDriver : public ProxyDriver {
 public:
  explicit NginxDriver(const upkeep::v1::NginxSpec& spec);
  ~NginxDriver() override;

  std::string target() const override { return "nginx"; }
  void SetSpec(const upkeep::v1::ProxySpec& spec) override;
  void Observe(upkeep::v1::ProxyObservation* out) override;
  upkeep::v1::ConfigTest TestConfig() override;
  absl::StatusOr<std::string> Start(absl::Duration timeout) override;
  absl::StatusOr<std::string> Reload(absl::Duration timeout) override;
  absl::StatusOr<std::string> Restart(absl::Duration timeout) override;
  std::unique_ptr<Subscription> Watch(std::function<void(Change)> on_change) override;

  // Reads new error-log lines; true when a new upstream error appeared.
  bool PollErrorLog();
  // The running master's pid from the pid file; 0 when none runs.
  pid_t MasterPid() const;

 private:
  std::vector<std::string> BaseArgs() const;
  std::vector<pid_t> Workers(pid_t master) const;
  void ClearErrors();
  std::vector<std::string> ConfigFilesLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool PollLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WatchLoop();
  void WakeWatcher();

  mutable absl::Mutex mu_;
  upkeep::v1::NginxSpec spec_ ABSL_GUARDED_BY(mu_);
  uint64_t spec_generation_ ABSL_GUARDED_BY(mu_) = 0;
  upkeep::v1::ConfigTest last_test_ ABSL_GUARDED_BY(mu_);
  bool config_tested_ ABSL_GUARDED_BY(mu_) = false;  // a test ran since the watcher last told
  absl::Time started_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // error-log tail
  ino_t log_inode_ ABSL_GUARDED_BY(mu_) = 0;
  off_t log_offset_ ABSL_GUARDED_BY(mu_) = -1;
  std::string partial_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> excerpt_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<int, std::string>, upkeep::v1::UpstreamError> errors_ ABSL_GUARDED_BY(mu_);
  uint64_t errors_seen_ ABSL_GUARDED_BY(mu_) = 0;  // upstream error lines ever parsed
  // watching
  Subscribers<bool, Change> watchers_;
  int wake_fd_ = -1;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread watch_thread_ ABSL_GUARDED_BY(mu_);
};

// The ProxyDrivers factory for nginx (ProxySpec.nginx).
std::shared_ptr<ProxyDriver> CreateNginxDriver(const upkeep::v1::ProxySpec& spec);

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_PROXY_NGINX_NGINX_DRIVER_H_

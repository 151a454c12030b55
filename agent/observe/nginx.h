// NginxDriver (the ProxyDriver for nginx): sees the master (pid file + /proc) and its workers,
// tests the config (`nginx -t`, output kept), starts, reloads (SIGHUP to the master, confirmed
// by new worker pids; never sent when the config test fails) and restarts nginx, and tails the
// error log — surviving rotation — turning upstream errors into typed records counted since
// the last reload/restart. Thread-safe.
#ifndef UPKEEP_AGENT_OBSERVE_NGINX_H_
#define UPKEEP_AGENT_OBSERVE_NGINX_H_

#include <sys/types.h>

#include <deque>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "upkeep/v1/observation.pb.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::agent {

// Parses one error-log line; false when it is not an upstream error.
bool ParseUpstreamErrorLine(const std::string& line, upkeep::v1::UpstreamErrorKind* kind,
                            std::string* upstream);

class NginxDriver {
 public:
  explicit NginxDriver(const upkeep::v1::NginxSpec& spec);

  void SetSpec(const upkeep::v1::NginxSpec& spec);
  // Fills master/workers/config test/upstream errors/excerpt (reads new error-log lines).
  void Fill(upkeep::v1::ProxyObservation* out);
  // Reads new error-log lines; true when a new upstream error appeared.
  bool PollErrorLog();
  pid_t MasterPid() const;

  upkeep::v1::ConfigTest Test();
  // Each returns an output excerpt, or an error whose message says why.
  absl::StatusOr<std::string> Start(absl::Duration timeout);
  absl::StatusOr<std::string> Reload(absl::Duration timeout);
  absl::StatusOr<std::string> Restart(absl::Duration timeout);

 private:
  std::vector<std::string> BaseArgs() const;
  std::vector<pid_t> Workers(pid_t master) const;
  void ClearErrors();
  bool PollLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  upkeep::v1::NginxSpec spec_ ABSL_GUARDED_BY(mu_);
  upkeep::v1::ConfigTest last_test_ ABSL_GUARDED_BY(mu_);
  absl::Time started_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // error-log tail
  ino_t log_inode_ ABSL_GUARDED_BY(mu_) = 0;
  off_t log_offset_ ABSL_GUARDED_BY(mu_) = -1;
  std::string partial_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> excerpt_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<int, std::string>, upkeep::v1::UpstreamError> errors_ ABSL_GUARDED_BY(mu_);
};

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_OBSERVE_NGINX_H_

// Standalone: `upkeep-agent --standalone -f MANIFESTS --data DIR` — the whole of upkeep on one
// host with no controller. The agent's own closed loop (agent/autonomy/local_decider.h: the
// controller's Diagnose, policy, dispatcher and event log, on DIR/local/upkeep.db) decides for
// the stacks of the manifests that name this host; the observer and executor are the daemon's.
// Manifests are re-read when a file under MANIFESTS changes (agent/standalone/manifest_watcher.h:
// inotify, no polling; an invalid set is reported and nothing already applied is lost). The read
// and pause parts of FleetService are served on the unix socket DIR/upkeep.sock (mode 0600: only
// this user), so `upkeepctl --agent DIR/upkeep.sock get
// stacks|describe|explain|events|actions|pause|resume` work as against a controller; apply, delete
// and run are refused with what to do instead. Thread-safe; Start() spawns its threads, Stop()
// joins them.
#ifndef UPKEEP_AGENT_STANDALONE_STANDALONE_H_
#define UPKEEP_AGENT_STANDALONE_STANDALONE_H_

#include <deque>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "agent/act/executor.h"
#include "agent/autonomy/local_decider.h"
#include "agent/observe/observer.h"
#include "agent/standalone/manifest_watcher.h"
#include "grpcpp/grpcpp.h"

namespace upkeep::agent {

struct StandaloneOptions {
  std::string manifests;  // a file or a directory of *.yaml
  std::string data_dir;
  std::string host_id;  // empty: the one host the manifests name (several: an error)
};

class Standalone {
 public:
  // `observer` and `executor` are not owned and must outlive it; the observer must have been
  // created for `options.host_id` (see ResolveHostId).
  Standalone(StandaloneOptions options, StackObserver* observer, Executor* executor);
  ~Standalone();

  // The host id to use: options.host_id, else the only host the manifests name.
  static absl::StatusOr<std::string> ResolveHostId(const StandaloneOptions& options);

  absl::Status Start();
  void Stop();
  std::string socket_path() const { return options_.data_dir + "/upkeep.sock"; }
  LocalDecider* decider() { return decider_.get(); }

 private:
  class Service;
  void WatchLoop();
  void ActionLoop();
  // Loads the manifests and applies them when they changed; false when invalid.
  bool Reload();

  const StandaloneOptions options_;
  StackObserver* const observer_;
  Executor* const executor_;
  std::unique_ptr<LocalDecider> decider_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<upkeep::v1::Action> actions_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<ManifestWatcher> watcher_;  // set by Start, before the watch thread
  std::thread watch_thread_, action_thread_;
};

// `upkeep-agent --standalone ...`: flags already split off by the daemon. Returns the exit code.
int RunStandalone(int argc, char** argv);

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_STANDALONE_STANDALONE_H_

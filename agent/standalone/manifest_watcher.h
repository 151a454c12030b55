// ManifestWatcher: tells the standalone agent when its manifests (a file, or a directory of
// *.yaml / *.yml) changed, sleeping on inotify until then (it rescanned every 500 ms).
// It watches the directory that holds them, so an editor's write-then-rename, a file added and
// a file removed are all seen. Only finished writes wake it (close after write, rename in or
// out, delete), never a half-written file. A wake-up counts as a change only when the set of
// manifests (path, mtime, size) differs from the one last reported.
// If the directory goes away (or inotify cannot be had) it looks again every second until it
// is back. Thread-safe: WaitForChange from one thread, Stop from any.
#ifndef UPKEEP_AGENT_STANDALONE_MANIFEST_WATCHER_H_
#define UPKEEP_AGENT_STANDALONE_MANIFEST_WATCHER_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>

namespace upkeep::agent {

class ManifestWatcher {
 public:
  // Takes the current manifests as the baseline: create it before loading them, so a change
  // between the two is reported rather than missed.
  explicit ManifestWatcher(std::string path);
  ~ManifestWatcher();
  ManifestWatcher(const ManifestWatcher&) = delete;
  ManifestWatcher& operator=(const ManifestWatcher&) = delete;

  // Blocks until the manifests differ from the last reported set (true), or Stop (false).
  bool WaitForChange();
  // Wakes WaitForChange, which returns false from now on.
  void Stop();

 private:
  using Snapshot = std::map<std::string, std::pair<int64_t, int64_t>>;  // path -> mtime, size
  Snapshot Scan() const;
  // Watches the directory holding the manifests; false when it cannot (yet).
  bool Arm();

  const std::string path_;
  const std::string dir_;  // the directory watched
  const int inotify_fd_;
  const int wake_fd_;  // eventfd written by Stop
  int wd_ = -1;        // WaitForChange's thread only
  Snapshot seen_;      // WaitForChange's thread only
  std::atomic<bool> stop_{false};
};

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_STANDALONE_MANIFEST_WATCHER_H_

#include "agent/standalone/manifest_watcher.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "core/log.h"

namespace upkeep::agent {
namespace {

// Finished changes only: IN_MODIFY and IN_CREATE come before the content is all there.
constexpr uint32_t kMask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE |
                           IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;
// How often to look for a watched directory that is gone (or when inotify cannot be had).
constexpr int kRearmMs = 1000;

std::string DirectoryOf(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return path;
  const std::string parent = std::filesystem::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

}  // namespace

ManifestWatcher::ManifestWatcher(std::string path)
    : path_(std::move(path)),
      dir_(DirectoryOf(path_)),
      inotify_fd_(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC)),
      wake_fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (inotify_fd_ < 0) {
    UPKEEP_LOG(warn, "manifest_watch_unavailable",
               {{"error", std::strerror(errno)},
                {"note", "inotify failed (fs.inotify.max_user_instances?): rescanning every 1s"}});
  }
  Arm();
  seen_ = Scan();
}

ManifestWatcher::~ManifestWatcher() {
  if (inotify_fd_ >= 0) ::close(inotify_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void ManifestWatcher::Stop() {
  stop_ = true;
  const uint64_t one = 1;
  if (wake_fd_ >= 0) (void)!::write(wake_fd_, &one, sizeof(one));
}

bool ManifestWatcher::Arm() {
  if (inotify_fd_ < 0) return false;
  wd_ = ::inotify_add_watch(inotify_fd_, dir_.c_str(), kMask);
  return wd_ >= 0;
}

ManifestWatcher::Snapshot ManifestWatcher::Scan() const {
  Snapshot out;
  std::error_code ec;
  auto add = [&](const std::filesystem::path& p) {
    out[p.string()] = {std::filesystem::last_write_time(p, ec).time_since_epoch().count(),
                       static_cast<int64_t>(std::filesystem::file_size(p, ec))};
  };
  if (std::filesystem::is_directory(path_, ec)) {
    for (const auto& e : std::filesystem::directory_iterator(path_, ec)) {
      const auto ext = e.path().extension();
      if (ext == ".yaml" || ext == ".yml") add(e.path());
    }
  } else {
    add(path_);
  }
  return out;
}

bool ManifestWatcher::WaitForChange() {
  while (!stop_) {
    pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {inotify_fd_, POLLIN, 0}};
    const int n = ::poll(fds, inotify_fd_ >= 0 ? 2 : 1, wd_ >= 0 ? -1 : kRearmMs);
    if (n < 0 && errno != EINTR) {
      UPKEEP_LOG(error, "manifest_watch_failed", {{"error", std::strerror(errno)}});
      return false;
    }
    if (stop_) break;
    if (n > 0 && (fds[1].revents & POLLIN)) {
      // Drain what came together (an editor's save is several events): one scan for all.
      alignas(inotify_event) char buf[4096];
      ssize_t len;
      while ((len = ::read(inotify_fd_, buf, sizeof(buf))) > 0) {
        for (char* p = buf; p < buf + len;) {
          const auto* e = reinterpret_cast<const inotify_event*>(p);
          if (e->wd == wd_ && (e->mask & IN_MOVE_SELF)) {
            ::inotify_rm_watch(inotify_fd_, wd_);  // it watches the moved directory: drop it
            wd_ = -1;
          } else if (e->wd == wd_ && (e->mask & IN_IGNORED)) {
            wd_ = -1;  // the directory was removed: re-arm below, when it is back
          }
          p += sizeof(inotify_event) + e->len;
        }
      }
    }
    if (wd_ < 0 && Arm()) {
      UPKEEP_LOG(info, "manifest_watch_armed", {{"directory", dir_}});
    }
    Snapshot now = Scan();
    if (now != seen_) {
      seen_ = std::move(now);
      return true;
    }
  }
  return false;
}

}  // namespace upkeep::agent

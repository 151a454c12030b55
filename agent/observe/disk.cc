#include "agent/observe/disk.h"

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <cstdlib>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace upkeep::agent {
namespace {

namespace v1 = upkeep::v1;

// The nearest existing path at or above `path`, with its device.
bool Existing(std::string path, std::string* found, dev_t* dev) {
  while (!path.empty()) {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) {
      *found = path;
      *dev = st.st_dev;
      return true;
    }
    const auto slash = path.rfind('/');
    if (slash == std::string::npos) return false;
    path = slash == 0 ? (path == "/" ? "" : "/") : path.substr(0, slash);
  }
  return false;
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3') {
      out.push_back(static_cast<char>(std::strtol(s.substr(i + 1, 3).c_str(), nullptr, 8)));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// Mount points of this mount namespace, in mount order (a later one over-mounts an earlier).
std::vector<std::string> MountPoints() {
  std::vector<std::string> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw"
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() > 4) out.push_back(Unescape(f[4]));
  }
  return out;
}

// The mount point holding `path` (resolved): the longest mount point that is a prefix of it,
// as df says. `path` itself when the mount table cannot be read.
std::string MountOf(const std::string& path, const std::vector<std::string>& mounts) {
  char* real = ::realpath(path.c_str(), nullptr);
  const std::string p = real != nullptr ? std::string(real) : path;
  std::free(real);
  std::string best;
  bool found = false;
  for (const auto& m : mounts) {
    const bool under =
        m == "/" || p == m ||
        (p.size() > m.size() && p.compare(0, m.size(), m) == 0 && p[m.size()] == '/');
    if (under && (!found || m.size() >= best.size())) {
      best = m;
      found = true;
    }
  }
  return found ? best : path;
}

}  // namespace

std::vector<v1::FilesystemUsage> ObserveDisks(const v1::Stack& stack,
                                              const std::string& agent_data_dir) {
  struct Want {
    std::string path;
    std::string what;
    std::string service;  // empty: not a service's data
    bool proxy_logs = false;
  };
  std::vector<Want> wants;
  for (const auto& s : stack.spec().services()) {
    for (const auto& p : s.data_paths()) wants.push_back({p, s.name() + " data", s.name(), false});
  }
  if (stack.spec().has_proxy()) {
    const auto& nginx = stack.spec().proxy().nginx();
    if (!nginx.error_log().empty()) wants.push_back({nginx.error_log(), "nginx logs", "", true});
    // What nginx creates when it starts: its pid file, and its temp files under the prefix.
    if (!nginx.pid_file().empty()) wants.push_back({nginx.pid_file(), "nginx pid", "", false});
    if (!nginx.prefix().empty()) wants.push_back({nginx.prefix(), "nginx prefix", "", false});
  }
  if (!agent_data_dir.empty()) wants.push_back({agent_data_dir, "agent data", "", false});
  if (wants.empty()) return {};

  const std::vector<std::string> mounts = MountPoints();
  std::map<dev_t, v1::FilesystemUsage> by_dev;
  for (const auto& w : wants) {
    std::string path;
    dev_t dev = 0;
    if (!Existing(w.path, &path, &dev)) continue;
    struct statvfs vfs {};
    if (::statvfs(path.c_str(), &vfs) != 0 || vfs.f_blocks == 0) continue;
    v1::FilesystemUsage& fs = by_dev[dev];
    if (fs.mount().empty()) {
      fs.set_mount(MountOf(path, mounts));
      // As df counts: used of (used + available to unprivileged users).
      const double used = static_cast<double>(vfs.f_blocks - vfs.f_bfree);
      const double avail = static_cast<double>(vfs.f_bavail);
      fs.set_used_percent(used + avail > 0 ? 100.0 * used / (used + avail) : 0);
      fs.set_available_bytes(static_cast<int64_t>(vfs.f_bavail) *
                             static_cast<int64_t>(vfs.f_frsize));
      // As df -i counts; a filesystem without an inode limit reports no inodes.
      if (vfs.f_files > 0) {
        const double iused = static_cast<double>(vfs.f_files - vfs.f_ffree);
        const double iavail = static_cast<double>(vfs.f_favail);
        fs.set_inodes_used_percent(iused + iavail > 0 ? 100.0 * iused / (iused + iavail) : 0);
        fs.set_available_inodes(static_cast<int64_t>(vfs.f_favail));
      }
    }
    fs.add_holds(absl::StrCat(w.what, " ", w.path));
    if (!w.service.empty()) fs.add_services(w.service);
    if (w.proxy_logs) fs.set_proxy_logs(true);
  }
  std::vector<v1::FilesystemUsage> out;
  for (auto& [dev, fs] : by_dev) out.push_back(std::move(fs));
  return out;
}

}  // namespace upkeep::agent

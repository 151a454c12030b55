#include "agent/observe/disk.h"

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <map>

#include "absl/strings/str_cat.h"

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
  if (stack.spec().has_proxy() && !stack.spec().proxy().nginx().error_log().empty()) {
    wants.push_back({stack.spec().proxy().nginx().error_log(), "nginx logs", "", true});
  }
  if (!agent_data_dir.empty()) wants.push_back({agent_data_dir, "agent data", "", false});

  std::map<dev_t, v1::FilesystemUsage> by_dev;
  for (const auto& w : wants) {
    std::string path;
    dev_t dev = 0;
    if (!Existing(w.path, &path, &dev)) continue;
    struct statvfs vfs {};
    if (::statvfs(path.c_str(), &vfs) != 0 || vfs.f_blocks == 0) continue;
    v1::FilesystemUsage& fs = by_dev[dev];
    if (fs.mount().empty()) {
      fs.set_mount(path);
      // As df counts: used of (used + available to unprivileged users).
      const double used = static_cast<double>(vfs.f_blocks - vfs.f_bfree);
      const double avail = static_cast<double>(vfs.f_bavail);
      fs.set_used_percent(used + avail > 0 ? 100.0 * used / (used + avail) : 0);
      fs.set_available_bytes(static_cast<int64_t>(vfs.f_bavail) *
                             static_cast<int64_t>(vfs.f_frsize));
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

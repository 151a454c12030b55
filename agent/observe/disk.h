// Disk usage of the filesystems a stack needs: each service's data (spec dataPaths), the proxy's
// error log, pid file and prefix (its temp files), and the agent's own data directory. One
// FilesystemUsage per filesystem (by device), named by its mount point (the longest mount point
// of /proc/self/mountinfo above the path, as df names it) and naming every path it holds, so
// the decision engine can say "/srv, which holds backend's data, is 99% full" and blame a crash
// or a failing `nginx -t` on it. Blocks and inodes both: a filesystem out of inodes says "No
// space left on device" with its blocks half free. statvfs and one read of mountinfo: cheap
// enough for every assembly. Pure apart from those reads; thread-safe.
#ifndef UPKEEP_AGENT_OBSERVE_DISK_H_
#define UPKEEP_AGENT_OBSERVE_DISK_H_

#include <string>
#include <vector>

#include "upkeep/v1/observation.pb.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::agent {

// Paths that do not exist are looked up through their nearest existing parent (a log file not
// written yet lives on its directory's filesystem); paths with no existing parent are skipped.
std::vector<upkeep::v1::FilesystemUsage> ObserveDisks(const upkeep::v1::Stack& stack,
                                                      const std::string& agent_data_dir);

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_OBSERVE_DISK_H_

#include "tests/support/temp_dir.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/support/files.h"

namespace upkeep::testing {
namespace {

namespace fs = std::filesystem;

// /proc/<pid>/stat: field 4 is the parent pid, field 22 the start time in clock ticks; both
// after the command name, which may hold spaces and is closed by the last ')'.
bool ReadStat(int pid, int* ppid, uint64_t* ticks) {
  const std::string stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return false;
  std::vector<std::string> f = absl::StrSplit(stat.substr(close + 2), ' ');
  if (f.size() < 20) return false;
  return absl::SimpleAtoi(f[1], ppid) && absl::SimpleAtoi(f[19], ticks);
}

// A process-runtime state file: "<pid> <start ticks> <started ms>" on its first line. The
// pid if that process still runs (same start time), else 0.
int ServicePid(const fs::path& state) {
  std::ifstream in(state);
  int pid = 0, ppid = 0;
  uint64_t ticks = 0, now_ticks = 0;
  if (!(in >> pid >> ticks) || pid <= 1 || !ReadStat(pid, &ppid, &now_ticks) ||
      now_ticks != ticks) {
    return 0;
  }
  return pid;
}

bool Under(const std::string& path, const std::string& dir) {
  return path == dir || absl::StartsWith(path, dir + "/");
}

// Whether `pid` works in `dir` or holds a file under it open (a log, a pid file, a socket).
bool UsesDir(int pid, const std::string& dir) {
  const std::string proc = absl::StrCat("/proc/", pid);
  std::error_code ec;
  if (Under(fs::read_symlink(proc + "/cwd", ec).string(), dir)) return true;
  for (const auto& fd : fs::directory_iterator(proc + "/fd", ec)) {
    if (Under(fs::read_symlink(fd.path(), ec).string(), dir)) return true;
  }
  return false;
}

}  // namespace

int StopLeftoversUnder(const std::string& dir) {
  std::error_code ec;
  const std::string root = fs::weakly_canonical(dir, ec).string();
  if (root.empty() || root == "/") return 0;
  std::set<int> pids;
  // The services the process runtime started (they may have opened nothing under `dir`).
  for (auto it = fs::recursive_directory_iterator(root, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->path().filename() == "state" && it->is_regular_file(ec)) {
      if (const int pid = ServicePid(it->path()); pid > 0) pids.insert(pid);
    }
  }
  // Everything else still using the directory: nginx masters and their workers (orphaned
  // workers of a killed master included: they hold its error log), daemons of a test that
  // died on an assertion.
  const int self = ::getpid();
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    int pid = 0;
    if (absl::SimpleAtoi(e.path().filename().string(), &pid) && pid != self && UsesDir(pid, root)) {
      pids.insert(pid);
    }
  }
  for (int pid : pids) ::kill(pid, SIGKILL);
  return static_cast<int>(pids.size());
}

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "upkeep-test-XXXXXX").string();
  path_ = ::mkdtemp(tmpl.data());
}

TempDir::~TempDir() {
  if (const char* keep = std::getenv("UPKEEP_KEEP_TEST_DIRS"); keep != nullptr && *keep) return;
  StopLeftoversUnder(path_);
  std::error_code ec;
  fs::remove_all(path_, ec);
}

}  // namespace upkeep::testing

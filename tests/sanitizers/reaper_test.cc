// upkeep-reaper (scripts/sanitizers/reaper.cc), which scripts/sanitize.sh runs ctest under: it
// passes the command's exit status through, and stops whatever the command left running,
// including a process in its own session (as a daemonised nginx or a process-runtime service).
#include <signal.h>
#include <sys/wait.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace {

using upkeep::testing::BinPath;
using upkeep::testing::Subprocess;

// Runs the reaper with `args` and returns its exit code (-1 when it did not exit normally).
int RunReaper(const std::vector<std::string>& args, const std::string& log) {
  std::vector<std::string> argv = {BinPath("upkeep-reaper")};
  argv.insert(argv.end(), args.begin(), args.end());
  auto p = Subprocess::Start(argv, log);
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return -1;
  const auto st = (*p)->Wait(absl::Seconds(60));
  EXPECT_TRUE(st.has_value()) << "the reaper did not return";
  return st.has_value() && WIFEXITED(*st) ? WEXITSTATUS(*st) : -1;
}

TEST(Reaper, PassesTheExitStatusThrough) {
  upkeep::testing::TempDir dir;
  EXPECT_EQ(RunReaper({"--", "sh", "-c", "exit 7"}, dir.Join("log")), 7);
  EXPECT_EQ(RunReaper({"--fail-on-leftovers", "--", "true"}, dir.Join("log")), 0);
}

TEST(Reaper, StopsWhatTheCommandLeftRunningInItsOwnSession) {
  upkeep::testing::TempDir dir;
  const std::string pid_file = dir.Join("pid");
  // The shell starts a detached `sleep` in a new session, writes its pid, and exits: the sleep
  // is orphaned, as a daemon whose test was halted would be.
  const std::string script = "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! > " + pid_file;
  EXPECT_EQ(RunReaper({"--fail-on-leftovers", "--", "sh", "-c", script}, dir.Join("log")), 3);
  std::string text;
  std::ifstream(pid_file) >> text;
  int pid = 0;
  ASSERT_TRUE(absl::SimpleAtoi(text, &pid)) << "no pid in " << pid_file;
  // Gone, not a zombie: the reaper reaped it before returning.
  EXPECT_EQ(::kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
  std::ifstream log(dir.Join("log"));
  const std::string out((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(out.find("left running: pid " + text), std::string::npos) << out;
}

// /proc/<pid>/stat after the command name: [0] state, [19] start time in clock ticks.
std::vector<std::string> Stat(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  const std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = s.rfind(')');
  if (close == std::string::npos) return {};
  return absl::StrSplit(s.substr(close + 2), ' ');
}

// Gone, or a zombie waiting for whoever adopted it to reap it.
bool Dead(int pid) {
  const auto f = Stat(pid);
  return ::kill(pid, 0) != 0 || (!f.empty() && f[0] == "Z");
}

int ReadPid(const std::string& file) {
  std::string text;
  std::ifstream(file) >> text;
  int pid = 0;
  return absl::SimpleAtoi(text, &pid) ? pid : 0;
}

// The test support's TempDir kills what was left running from it before it removes it: an
// orphan that works in it (as a daemonised nginx with its logs there) and a process-runtime
// service its state file names (as a service whose test died on an assertion).
TEST(TempDir, KillsWhatWasLeftRunningFromIt) {
  upkeep::testing::TempDir outside;
  const std::string pids = outside.Join("pids");
  std::string path;
  int in_dir = 0, service = 0;
  {
    upkeep::testing::TempDir dir;
    path = dir.path();
    const std::string script = absl::StrCat(
        "(cd ", path, " && setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! > ", pids,
        ".1); setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! > ", pids, ".2");
    auto sh = Subprocess::Start({"sh", "-c", script}, outside.Join("log"));
    ASSERT_TRUE(sh.ok()) << sh.status();
    ASSERT_TRUE((*sh)->Wait(absl::Seconds(10)).has_value());
    in_dir = ReadPid(pids + ".1");
    service = ReadPid(pids + ".2");
    ASSERT_GT(in_dir, 0);
    ASSERT_GT(service, 0);
    const auto stat = Stat(service);
    ASSERT_GE(stat.size(), 20u);
    std::filesystem::create_directories(dir.Join("services/shop/api"));
    std::ofstream(dir.Join("services/shop/api/state"))
        << service << " " << stat[19] << " 0\nrestarts 0\n";
    EXPECT_FALSE(Dead(in_dir));
    EXPECT_FALSE(Dead(service));
  }
  EXPECT_TRUE(upkeep::testing::WaitFor([&] { return Dead(in_dir) && Dead(service); }))
      << "left running: " << in_dir << " " << service;
  EXPECT_FALSE(std::filesystem::exists(path));
}

}  // namespace

// upkeep-reaper (scripts/sanitizers/reaper.cc), which scripts/sanitize.sh runs ctest under: it
// passes the command's exit status through, and stops whatever the command left running,
// including a process in its own session (as a daemonised nginx or a process-runtime service).
#include <signal.h>
#include <sys/wait.h>

#include <cerrno>
#include <fstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

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

}  // namespace

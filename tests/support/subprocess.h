// A child process for tests, in its own process group, killed (SIGKILL to the group) and
// reaped when the object goes away. Never kills anything it did not start.
#ifndef UPKEEP_TESTS_SUPPORT_SUBPROCESS_H_
#define UPKEEP_TESTS_SUPPORT_SUBPROCESS_H_

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace upkeep::testing {

class Subprocess {
 public:
  // Starts argv[0] (PATH is searched). stdout/stderr go to `log_file` when given, else inherit.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(
      const std::vector<std::string>& argv, const std::string& log_file = "",
      const std::vector<std::string>& extra_env = {});
  ~Subprocess();

  pid_t pid() const { return pid_; }
  bool Running();
  // Sends `sig` to the process group.
  void Signal(int sig);
  // Waits for exit up to `timeout`; returns the wait status, or nullopt on timeout.
  std::optional<int> Wait(absl::Duration timeout);
  // SIGTERM, wait up to `grace`, then SIGKILL. Returns the wait status.
  int Stop(absl::Duration grace = absl::Seconds(5));

 private:
  explicit Subprocess(pid_t pid) : pid_(pid) {}
  pid_t pid_;
  std::optional<int> status_;
};

// Runs argv to its end (at most `timeout`, then it is killed) with stdout and stderr in `log`
// (kept, for a failing test's reader). The output; or an error naming the command, how it
// ended, and its output.
absl::StatusOr<std::string> RunToEnd(const std::vector<std::string>& argv, const std::string& log,
                                     absl::Duration timeout = absl::Seconds(120));

// Path of a project binary in build/bin (from $UPKEEP_BIN_DIR, set by CTest).
std::string BinPath(const std::string& name);
// Path of a file in the source tree (from $UPKEEP_SOURCE_DIR).
std::string SourcePath(const std::string& relative);

}  // namespace upkeep::testing

#endif  // UPKEEP_TESTS_SUPPORT_SUBPROCESS_H_

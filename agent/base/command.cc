#include "agent/base/command.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace upkeep::agent {

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         absl::Duration timeout, size_t max_output) {
  if (argv.empty()) return absl::InvalidArgumentError("empty command");
  const int out = ::memfd_create("upkeep-cmd", MFD_CLOEXEC);
  if (out < 0) return absl::InternalError(absl::StrCat("memfd_create: ", std::strerror(errno)));
  std::vector<std::string> args = argv;
  std::vector<char*> cargs;
  for (auto& a : args) cargs.push_back(a.data());
  cargs.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(out);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    ::setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::dup2(out, 1);
    ::dup2(out, 2);
    const int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) ::dup2(null, 0);
    ::execvp(cargs[0], cargs.data());
    const std::string msg = absl::StrCat("exec ", args[0], ": ", std::strerror(errno), "\n");
    (void)!::write(1, msg.data(), msg.size());
    ::_exit(127);
  }
  CommandResult result;
  const absl::Time deadline = absl::Now() + timeout;
  int status = 0;
  bool done = false;
  while (!done) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      done = true;
      break;
    }
    if (absl::Now() >= deadline) {
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      result.output = "(timed out)\n";
      break;
    }
    absl::SleepFor(absl::Milliseconds(1));  // waitpid has no timeout; poll the child cheaply
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  const off_t size = ::lseek(out, 0, SEEK_END);
  const off_t from = size > static_cast<off_t>(max_output) ? size - max_output : 0;
  std::string text(static_cast<size_t>(size - from), '\0');
  if (!text.empty()) (void)!::pread(out, text.data(), text.size(), from);
  ::close(out);
  result.output += text;
  if (!done) return absl::DeadlineExceededError(absl::StrCat(args[0], " timed out"));
  return result;
}

}  // namespace upkeep::agent

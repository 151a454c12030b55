#include "tests/support/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "tests/support/files.h"

extern char** environ;

// A sanitizer that halts the test exits at once, without the destructors that stop our children:
// its death callback (set on the first Start, in sanitizer builds only) kills every live child's
// process group instead, so no daemon outlives a halted test. Fixed slots, lock-free: the
// callback runs in whatever state the sanitizer found the process.
extern "C" void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

namespace upkeep::testing {
namespace {

constexpr int kLiveSlots = 256;
std::atomic<pid_t> live[kLiveSlots];

void KillLiveChildren() {
  for (auto& slot : live) {
    const pid_t pid = slot.load();
    if (pid > 0) {
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
    }
  }
}

void Track(pid_t pid) {
  static const bool registered = [] {
    if (__sanitizer_set_death_callback != nullptr) __sanitizer_set_death_callback(KillLiveChildren);
    return true;
  }();
  (void)registered;
  for (auto& slot : live) {
    pid_t empty = 0;
    if (slot.compare_exchange_strong(empty, pid)) return;
  }
}

void Untrack(pid_t pid) {
  for (auto& slot : live) {
    pid_t expected = pid;
    if (slot.compare_exchange_strong(expected, 0)) return;
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Subprocess>> Subprocess::Start(
    const std::vector<std::string>& argv, const std::string& log_file,
    const std::vector<std::string>& extra_env) {
  if (argv.empty()) return absl::InvalidArgumentError("empty argv");
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) env_storage.emplace_back(*e);
  for (const auto& e : extra_env) env_storage.push_back(e);
  std::vector<char*> env;
  for (auto& e : env_storage) env.push_back(e.data());
  env.push_back(nullptr);

  const pid_t pid = ::fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    ::setpgid(0, 0);
    if (!log_file.empty()) {
      const int fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
    }
    ::execvpe(args[0], args.data(), env.data());
    ::_exit(127);
  }
  ::setpgid(pid, pid);
  Track(pid);
  return std::unique_ptr<Subprocess>(new Subprocess(pid));
}

Subprocess::~Subprocess() {
  if (!status_.has_value()) {
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);
    int st = 0;
    ::waitpid(pid_, &st, 0);
    Untrack(pid_);
  }
}

bool Subprocess::Running() {
  if (status_.has_value()) return false;
  int st = 0;
  const pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = st;
    Untrack(pid_);  // Reaped: the pid may be reused.
    return false;
  }
  return true;
}

void Subprocess::Signal(int sig) {
  if (status_.has_value()) return;
  ::kill(-pid_, sig);
}

std::optional<int> Subprocess::Wait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (Running()) {
    if (absl::Now() >= deadline) return std::nullopt;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return status_;
}

int Subprocess::Stop(absl::Duration grace) {
  if (status_.has_value()) return *status_;
  Signal(SIGTERM);
  if (auto st = Wait(grace)) return *st;
  Signal(SIGKILL);
  ::kill(pid_, SIGKILL);
  int st = 0;
  ::waitpid(pid_, &st, 0);
  status_ = st;
  Untrack(pid_);
  return st;
}

absl::StatusOr<std::string> RunToEnd(const std::vector<std::string>& argv, const std::string& log,
                                     absl::Duration timeout) {
  auto p = Subprocess::Start(argv, log);
  if (!p.ok()) return p.status();
  const std::optional<int> st = (*p)->Wait(timeout);
  std::string out = ReadFile(log);
  if (!st.has_value()) {
    return absl::DeadlineExceededError(absl::StrCat(absl::StrJoin(argv, " "), " still ran after ",
                                                    absl::FormatDuration(timeout), ": ", out));
  }
  if (!WIFEXITED(*st) || WEXITSTATUS(*st) != 0) {
    return absl::InternalError(
        absl::StrCat(absl::StrJoin(argv, " "), " failed (",
                     WIFEXITED(*st) ? absl::StrCat("exit ", WEXITSTATUS(*st))
                                    : absl::StrCat("signal ", WIFSIGNALED(*st) ? WTERMSIG(*st) : 0),
                     "): ", out));
  }
  return out;
}

std::string BinPath(const std::string& name) {
  const char* dir = std::getenv("UPKEEP_BIN_DIR");
  return absl::StrCat(dir != nullptr ? dir : "build/bin", "/", name);
}

std::string SourcePath(const std::string& relative) {
  const char* dir = std::getenv("UPKEEP_SOURCE_DIR");
  return absl::StrCat(dir != nullptr ? dir : ".", "/", relative);
}

}  // namespace upkeep::testing

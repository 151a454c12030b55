#include "agent/runtime/process/process_runtime.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "core/log.h"
#include "core/proto_time.h"

namespace upkeep::agent {
namespace {

namespace fs = std::filesystem;
namespace v1 = upkeep::v1;

constexpr off_t kMaxLogBytes = 1 << 20;

int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

// Field 22 of /proc/PID/stat: start time in clock ticks since boot; 0 when gone.
uint64_t StartTicks(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat;
  if (!std::getline(in, stat)) return 0;
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::vector<std::string> fields = absl::StrSplit(stat.substr(close + 2), ' ');
  // fields[0] is field 3 (state); field 22 is fields[19].
  if (fields.size() < 20 || fields[0] == "Z" || fields[0] == "X") return 0;
  uint64_t ticks = 0;
  absl::SimpleAtoi(fields[19], &ticks);
  return ticks;
}

// The host's boot id (changes on every boot); "" when unreadable.
std::string BootId() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  return std::string(absl::StripAsciiWhitespace(id));
}

// The host's OOM kill count (/proc/vmstat oom_kill, Linux 4.13+: every OOM kill, global or in a
// memory cgroup); -1 when unreadable.
// Read with one read(2) and a search: it is sampled on every monitor wake-up and again before an
// exit is judged, so on the path from a crash to its report (a stream parse cost ~0.3 ms).
int64_t OomKillCount() {
  const int fd = ::open("/proc/vmstat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[16384];
  size_t len = 0;
  ssize_t n;
  while (len < sizeof(buf) - 1 && (n = ::read(fd, buf + len, sizeof(buf) - 1 - len)) > 0) {
    len += static_cast<size_t>(n);
  }
  ::close(fd);
  buf[len] = '\0';
  for (const char* p = buf; (p = std::strstr(p, "oom_kill ")) != nullptr; ++p) {
    if (p != buf && p[-1] != '\n') continue;
    return std::strtoll(p + 9, nullptr, 10);
  }
  return -1;
}

// How long before an exit an OOM kill on the host makes a SIGKILL "maybe the OOM killer".
constexpr absl::Duration kOomWindow = absl::Seconds(5);

std::string ReadTail(const std::string& path, int lines, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return "";
  const std::streamoff size = in.tellg();
  const std::streamoff from = size > static_cast<std::streamoff>(max_bytes)
                                  ? size - static_cast<std::streamoff>(max_bytes)
                                  : 0;
  in.seekg(from);
  std::string data(static_cast<size_t>(size - from), '\0');
  in.read(data.data(), static_cast<std::streamsize>(data.size()));
  if (lines <= 0) return "";
  size_t pos = data.size();
  if (pos > 0 && data[pos - 1] == '\n') --pos;
  int seen = 0;
  while (pos > 0) {
    if (data[pos - 1] == '\n' && ++seen == lines) break;
    --pos;
  }
  return data.substr(pos);
}

struct Proc {
  std::string name;
  pid_t pid = 0;
  uint64_t ticks = 0;
  bool child = false;  // started by this agent process (we reap it)
  int pidfd = -1;
  absl::Time started_at;
  bool has_exit = false;
  int exit_code = 0;
  absl::Time finished_at;
  int restarts = 0;
  bool exists = false;      // ever started (state dir present)
  pid_t own_stop = 0;       // the pid our Stop is signalling: its exit is ours
  std::string person;       // the last run was stopped by a person: why (PersonStopCause)
  std::string person_boot;  // the boot id then
};

// Resolves `command` as execvp would (PATH searched when it has no '/'), following symlinks.
std::string ResolveExecutable(const std::string& command) {
  std::vector<std::string> candidates;
  if (command.find('/') != std::string::npos) {
    candidates.push_back(command);
  } else {
    const char* path = std::getenv("PATH");
    for (absl::string_view dir : absl::StrSplit(path != nullptr ? path : "/usr/bin:/bin", ':')) {
      candidates.push_back(absl::StrCat(dir.empty() ? "." : dir, "/", command));
    }
  }
  for (const auto& c : candidates) {
    if (::access(c.c_str(), X_OK) != 0) continue;
    std::error_code ec;
    const fs::path real = fs::canonical(c, ec);
    if (!ec) return real.string();
  }
  return "";
}

// Whether `exec` lets `command` run; else the refusal, saying how to allow it.
absl::Status CheckExec(const ExecPolicy& exec, const std::string& service,
                       const std::string& command) {
  if (exec.unrestricted) return absl::OkStatus();
  const std::string real = ResolveExecutable(command);
  for (const auto& prefix : exec.prefixes) {
    std::error_code ec;
    fs::path p = fs::weakly_canonical(prefix, ec);
    std::string dir = ec ? prefix : p.string();
    if (!dir.empty() && dir.back() != '/') dir += '/';
    if (!real.empty() && absl::StartsWith(real, dir)) return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrCat(
      service, ": refusing to run ", command,
      real.empty() ? " (not found)" : absl::StrCat(" (", real, ")"),
      ": not under any --allow-exec prefix of this agent; start the agent with --allow-exec ",
      real.empty() ? "DIR" : fs::path(real).parent_path().string(), " to allow it"));
}

class ProcessRuntime : public Runtime {
 public:
  ProcessRuntime(std::string dir, ExecPolicy exec)
      : dir_(std::move(dir)), exec_(std::move(exec)), boot_id_(BootId()) {
    {
      absl::MutexLock lock(&mu_);
      oom_count_ = OomKillCount();
    }
    event_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    monitor_ = std::thread([this] { MonitorLoop(); });
  }

  ~ProcessRuntime() override {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    Wake();
    monitor_.join();
    absl::MutexLock lock(&mu_);
    for (auto& [name, p] : procs_) {
      if (p.pidfd >= 0) ::close(p.pidfd);
    }
    ::close(event_fd_);
  }

  v1::ServiceObservation Inspect(const v1::ServiceSpec& spec) override {
    v1::ServiceObservation o;
    o.set_name(spec.name());
    bool reaped = false;
    {
      absl::MutexLock lock(&mu_);
      Proc& p = Load(spec.name());
      // An exit the monitor has not handled yet is recorded now, so that a dead service is never
      // reported before what ended it is known.
      reaped = ReapLocked(p);
      InspectLocked(p, &o);
    }
    if (reaped) NotifyExited({spec.name()});
    return o;
  }

  void InspectLocked(const Proc& p, v1::ServiceObservation* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    v1::ServiceObservation& o = *out;
    o.set_exists(p.exists);
    const bool alive = p.pid > 0 && p.pidfd >= 0 && StartTicks(p.pid) == p.ticks;
    o.set_running(alive);
    if (alive) {
      o.set_pid(p.pid);
      *o.mutable_started_at() = ToProto(p.started_at);
    }
    if (p.has_exit) {
      o.set_exit_code(p.exit_code);
      *o.mutable_finished_at() = ToProto(p.finished_at);
    }
    // A stop recorded in an earlier boot is the shutdown's as much as a person's: forgotten.
    if (!alive && !p.person.empty() && !boot_id_.empty() && p.person_boot == boot_id_) {
      o.set_stopped_by_person(true);
    }
    o.set_restart_count(p.restarts);
  }

  absl::Status Start(const v1::ServiceSpec& spec) override {
    if (spec.process().command().empty()) {
      return absl::FailedPreconditionError(absl::StrCat(spec.name(), ": no process.command"));
    }
    if (absl::Status st = CheckExec(exec_, spec.name(), spec.process().command(0)); !st.ok()) {
      return st;
    }
    absl::MutexLock lock(&mu_);
    Proc& p = Load(spec.name());
    if (p.pid > 0 && p.pidfd >= 0 && StartTicks(p.pid) == p.ticks) return absl::OkStatus();
    return StartLocked(spec, p);
  }

  absl::Status Stop(const v1::ServiceSpec& spec, absl::Duration timeout) override {
    absl::MutexLock lock(&mu_);
    Proc& p = Load(spec.name());
    if (p.pid <= 0 || StartTicks(p.pid) != p.ticks) return absl::OkStatus();
    struct Gone {
      Proc* p;
      pid_t pid;
    } gone{&p, p.pid};
    const absl::Condition exited(
        +[](Gone* g) { return g->p->pid != g->pid; }, &gone);
    p.own_stop = gone.pid;
    ::kill(-gone.pid, SIGTERM);
    if (!mu_.AwaitWithTimeout(exited, timeout)) {
      ::kill(-gone.pid, SIGKILL);
      ::kill(gone.pid, SIGKILL);
      if (!mu_.AwaitWithTimeout(exited, absl::Seconds(5))) {
        return absl::DeadlineExceededError(
            absl::StrCat(spec.name(), " (pid ", gone.pid, ") did not exit after SIGKILL"));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Restart(const v1::ServiceSpec& spec, absl::Duration timeout) override {
    // Refused before anything is stopped.
    if (spec.process().command().empty()) {
      return absl::FailedPreconditionError(absl::StrCat(spec.name(), ": no process.command"));
    }
    if (absl::Status st = CheckExec(exec_, spec.name(), spec.process().command(0)); !st.ok()) {
      return st;
    }
    absl::Status st = Stop(spec, timeout);
    if (!st.ok()) return st;
    absl::MutexLock lock(&mu_);
    Proc& p = Load(spec.name());
    const int restarts = p.restarts;
    absl::Status s = StartLocked(spec, p);
    p.restarts = restarts + 1;
    return s;
  }

  absl::StatusOr<std::string> Logs(const v1::ServiceSpec& spec, int tail) override {
    const std::string dir = absl::StrCat(dir_, "/", spec.name());
    std::string out = ReadTail(dir + "/output.log", tail, 256 << 10);
    int have = 0;
    for (char c : out) have += c == '\n';
    if (have < tail) {
      out = ReadTail(dir + "/output.log.1", tail - have, 256 << 10) + out;
    }
    return out;
  }

  std::unique_ptr<Subscription> Watch(std::vector<v1::ServiceSpec> services,
                                      std::function<void(const std::string&)> on_change) override {
    {
      absl::MutexLock lock(&mu_);
      for (const auto& s : services) Load(s.name());
    }
    return watchers_.Add(std::move(services), std::move(on_change));
  }

 private:
  // Loads (or adopts) what we know about `name`; called with mu_ held.
  Proc& Load(const std::string& name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto [it, inserted] = procs_.try_emplace(name);
    Proc& p = it->second;
    if (!inserted) return p;
    p.name = name;
    const std::string state = absl::StrCat(dir_, "/", name, "/state");
    std::ifstream in(state);
    std::string line;
    if (!in) return p;
    p.exists = true;
    while (std::getline(in, line)) {
      std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
      int64_t ms = 0;
      if (f.size() == 3 && f[0] == "person") {
        p.person = f[1];
        p.person_boot = f[2];
      } else if (f.size() == 3 && f[0] != "exit") {
        int pid = 0;
        uint64_t ticks = 0;
        if (absl::SimpleAtoi(f[0], &pid) && absl::SimpleAtoi(f[1], &ticks) &&
            absl::SimpleAtoi(f[2], &ms)) {
          p.pid = pid;
          p.ticks = ticks;
          p.started_at = absl::FromUnixMillis(ms);
        }
      } else if (f.size() == 3 && f[0] == "exit") {
        absl::SimpleAtoi(f[1], &p.exit_code);
        absl::SimpleAtoi(f[2], &ms);
        p.finished_at = absl::FromUnixMillis(ms);
        p.has_exit = true;
      } else if (f.size() == 2 && f[0] == "restarts") {
        absl::SimpleAtoi(f[1], &p.restarts);
      }
    }
    // Adopt the process we started before this agent restarted, if it is still that process.
    if (p.pid > 0 && StartTicks(p.pid) == p.ticks && p.ticks != 0) {
      p.pidfd = PidfdOpen(p.pid);
      if (p.pidfd >= 0) {
        UPKEEP_LOG(info, "process_adopted", {{"service", name}, {"pid", absl::StrCat(p.pid)}});
        Wake();
      }
    } else {
      p.pid = 0;
    }
    return p;
  }

  void SaveState(const Proc& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const std::string dir = absl::StrCat(dir_, "/", p.name);
    std::string text;
    if (p.pid > 0) {
      absl::StrAppend(&text, p.pid, " ", p.ticks, " ", absl::ToUnixMillis(p.started_at), "\n");
    }
    if (p.has_exit) {
      absl::StrAppend(&text, "exit ", p.exit_code, " ", absl::ToUnixMillis(p.finished_at), "\n");
    }
    if (!p.person.empty()) absl::StrAppend(&text, "person ", p.person, " ", p.person_boot, "\n");
    absl::StrAppend(&text, "restarts ", p.restarts, "\n");
    const std::string tmp = dir + "/state.tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << text;
    }
    std::error_code ec;
    fs::rename(tmp, dir + "/state", ec);
  }

  absl::Status StartLocked(const v1::ServiceSpec& spec, Proc& p)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const std::string dir = absl::StrCat(dir_, "/", spec.name());
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return absl::InternalError(absl::StrCat("create ", dir, ": ", ec.message()));
    const std::string log = dir + "/output.log";
    std::vector<std::string> args(spec.process().command().begin(), spec.process().command().end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env_storage;
    for (char** e = environ; *e != nullptr; ++e) env_storage.emplace_back(*e);
    for (const auto& [k, v] : spec.process().env()) env_storage.push_back(absl::StrCat(k, "=", v));
    std::vector<char*> envp;
    for (auto& e : env_storage) envp.push_back(e.data());
    envp.push_back(nullptr);
    const std::string workdir = spec.process().workdir();
    int err_pipe[2];
    if (::pipe2(err_pipe, O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
    const pid_t pid = ::fork();
    if (pid < 0) {
      ::close(err_pipe[0]);
      ::close(err_pipe[1]);
      return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
    }
    if (pid == 0) {
      ::setsid();
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::signal(SIGPIPE, SIG_DFL);
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      const int null = ::open("/dev/null", O_RDONLY);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      if (null >= 0) ::dup2(null, 0);
      if (!workdir.empty() && ::chdir(workdir.c_str()) != 0) {
        const int e = errno;
        (void)!::write(err_pipe[1], &e, sizeof(e));
        ::_exit(127);
      }
      ::execvpe(argv[0], argv.data(), envp.data());
      const int e = errno;
      (void)!::write(err_pipe[1], &e, sizeof(e));
      ::_exit(127);
    }
    ::close(err_pipe[1]);
    int child_errno = 0;
    const ssize_t n = ::read(err_pipe[0], &child_errno, sizeof(child_errno));
    ::close(err_pipe[0]);
    if (n == sizeof(child_errno)) {
      ::waitpid(pid, nullptr, 0);
      return absl::FailedPreconditionError(
          absl::StrCat("cannot run ", args[0], ": ", std::strerror(child_errno)));
    }
    if (p.pidfd >= 0) ::close(p.pidfd);
    p.pid = pid;
    p.ticks = StartTicks(pid);
    p.child = true;
    p.pidfd = PidfdOpen(pid);
    p.started_at = absl::Now();
    p.exists = true;
    p.own_stop = 0;
    p.person.clear();
    p.person_boot.clear();
    SaveState(p);
    UPKEEP_LOG(info, "process_started", {{"service", spec.name()}, {"pid", absl::StrCat(pid)}});
    Wake();
    return absl::OkStatus();
  }

  // Samples the host's OOM kill count (every monitor wake-up, at most 1 s apart, and before
  // an exit is judged: the OOM killer counts before its SIGKILL ends the process).
  void LookForOomLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const int64_t oom = OomKillCount();
    if (oom != oom_count_) last_oom_ = absl::Now();
    oom_count_ = oom;
  }

  // Records the exit of `p`'s process if it has exited (its pidfd is readable): exit code, and
  // whether a person stopped it. Returns whether it did.
  bool ReapLocked(Proc& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (p.pid <= 0 || p.pidfd < 0) return false;
    pollfd pfd{p.pidfd, POLLIN, 0};
    if (::poll(&pfd, 1, 0) != 1 || !(pfd.revents & POLLIN)) return false;
    LookForOomLocked();
    const bool oom_recent = oom_count_ < 0 || absl::Now() - last_oom_ <= kOomWindow;
    int status = 0;
    int code = -1;
    p.person.clear();
    p.person_boot.clear();
    if (p.child && ::waitpid(p.pid, &status, WNOHANG) == p.pid) {
      code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      p.person = process_internal::PersonStopCause(status, p.own_stop == p.pid, oom_recent);
      if (!p.person.empty()) {
        p.person_boot = boot_id_;
        UPKEEP_LOG(info, "process_stopped_outside_upkeep",
                   {{"service", p.name}, {"cause", p.person}});
      }
    }
    p.own_stop = 0;
    ::close(p.pidfd);
    p.pidfd = -1;
    p.pid = 0;
    p.has_exit = true;
    p.exit_code = code;
    p.finished_at = absl::Now();
    SaveState(p);
    UPKEEP_LOG(info, "process_exited", {{"service", p.name}, {"exit_code", absl::StrCat(code)}});
    return true;
  }

  void NotifyExited(const std::vector<std::string>& exited) ABSL_LOCKS_EXCLUDED(mu_) {
    if (exited.empty()) return;
    watchers_.Notify(
        [&](const std::vector<v1::ServiceSpec>& watched, const ServiceWatchers::Callback& call) {
          for (const auto& s : watched) {
            if (std::find(exited.begin(), exited.end(), s.name()) != exited.end()) call(s.name());
          }
        });
  }

  void Wake() {
    const uint64_t one = 1;
    (void)!::write(event_fd_, &one, sizeof(one));
  }

  void MonitorLoop() {
    absl::Time last_log_check = absl::Now();
    while (true) {
      std::vector<pollfd> fds;
      std::vector<std::string> names;
      {
        absl::MutexLock lock(&mu_);
        if (stop_) return;
        fds.push_back({event_fd_, POLLIN, 0});
        names.push_back("");
        for (auto& [name, p] : procs_) {
          if (p.pidfd >= 0) {
            fds.push_back({p.pidfd, POLLIN, 0});
            names.push_back(name);
          }
        }
      }
      ::poll(fds.data(), fds.size(), 1000);
      if (fds[0].revents & POLLIN) {
        uint64_t v;
        (void)!::read(event_fd_, &v, sizeof(v));
      }
      std::vector<std::string> exited;
      {
        absl::MutexLock lock(&mu_);
        if (stop_) return;
        LookForOomLocked();
        for (size_t i = 1; i < fds.size(); ++i) {
          if (!(fds[i].revents & POLLIN)) continue;
          auto it = procs_.find(names[i]);
          if (it == procs_.end() || it->second.pidfd != fds[i].fd) continue;
          if (ReapLocked(it->second)) exited.push_back(it->first);
        }
        if (!exited.empty()) changed_ = true;
      }
      NotifyExited(exited);
      if (absl::Now() - last_log_check > absl::Seconds(1)) {
        last_log_check = absl::Now();
        RotateLogs();
      }
    }
  }

  // Keeps output.log under 1 MiB: the old content moves to output.log.1, the file is
  // truncated in place (the service appends with O_APPEND, so it keeps writing correctly).
  void RotateLogs() {
    std::vector<std::string> names;
    {
      absl::MutexLock lock(&mu_);
      for (const auto& [name, p] : procs_) names.push_back(name);
    }
    for (const auto& name : names) {
      const std::string log = absl::StrCat(dir_, "/", name, "/output.log");
      struct stat st;
      if (::stat(log.c_str(), &st) != 0 || st.st_size <= kMaxLogBytes) continue;
      std::error_code ec;
      fs::copy_file(log, log + ".1", fs::copy_options::overwrite_existing, ec);
      ::truncate(log.c_str(), 0);
    }
  }

  const std::string dir_;
  const ExecPolicy exec_;
  const std::string boot_id_;
  int event_fd_ = -1;
  absl::Mutex mu_;
  // The host's OOM kill count at the last look, and when it last grew.
  int64_t oom_count_ ABSL_GUARDED_BY(mu_) = -1;
  absl::Time last_oom_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool changed_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, Proc> procs_ ABSL_GUARDED_BY(mu_);
  ServiceWatchers watchers_;
  std::thread monitor_;
};

}  // namespace

namespace process_internal {

std::string PersonStopCause(int status, bool own, bool oom_recent) {
  if (own) return "";
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGQUIT) {
      return absl::StrCat("SIG", sigabbrev_np(sig));
    }
    if (sig == SIGKILL && !oom_recent) return "SIGKILL";
    return "";
  }
  if (WIFEXITED(status)) {
    const int code = WEXITSTATUS(status);
    for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT}) {
      if (code == 128 + sig) return absl::StrCat("exit-", code, "-after-SIG", sigabbrev_np(sig));
    }
  }
  return "";
}

}  // namespace process_internal

absl::StatusOr<std::unique_ptr<Runtime>> CreateProcessRuntime(const std::string& state_dir,
                                                              ExecPolicy exec) {
  std::error_code ec;
  fs::create_directories(state_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("create ", state_dir, ": ", ec.message()));
  return std::unique_ptr<Runtime>(new ProcessRuntime(state_dir, std::move(exec)));
}

}  // namespace upkeep::agent

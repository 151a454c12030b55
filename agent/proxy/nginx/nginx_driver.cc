#include "agent/proxy/nginx/nginx_driver.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "agent/base/command.h"
#include "agent/proxy/nginx/systemd_unit.h"
#include "core/log.h"
#include "core/proto_time.h"

namespace upkeep::agent {
namespace {

namespace v1 = upkeep::v1;

constexpr size_t kExcerptLines = 20;
// While the config fails its test: re-test this long after the last change to a config file
// (editors write in steps), and at least this often whatever the watch saw.
constexpr absl::Duration kConfigSettle = absl::Milliseconds(100);
constexpr absl::Duration kConfigRetestPeriod = absl::Seconds(30);

pid_t ReadPid(const std::string& path) {
  std::ifstream in(path);
  std::string text;
  if (!std::getline(in, text)) return 0;
  int pid = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &pid)) return 0;
  return pid;
}

bool Alive(pid_t pid) {
  if (pid <= 1) return false;
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat;
  if (!std::getline(in, stat)) return false;
  const size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z' &&
         stat[close + 2] != 'X';
}

pid_t ParentOf(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat;
  if (!std::getline(in, stat)) return 0;
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(stat.substr(close + 2));
  std::string state;
  int ppid = 0;
  rest >> state >> ppid;
  return ppid;
}

}  // namespace

bool WorkerShuttingDown(pid_t pid) {
  // A worker told to quit gracefully closes its listening sockets and renames itself
  // "nginx: worker process is shutting down" (ngx_worker_process_cycle).
  std::ifstream in(absl::StrCat("/proc/", pid, "/cmdline"));
  std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return absl::StrContains(cmdline, "shutting down");
}

bool ParseUpstreamErrorLine(const std::string& line, v1::UpstreamErrorKind* kind,
                            std::string* upstream) {
  if (absl::StrContains(line, "(111: Connection refused)")) {
    *kind = v1::UPSTREAM_ERROR_KIND_CONNECTION_REFUSED;
  } else if (absl::StrContains(line, "upstream timed out")) {
    *kind = v1::UPSTREAM_ERROR_KIND_TIMED_OUT;
  } else if (absl::StrContains(line, "no live upstreams")) {
    *kind = v1::UPSTREAM_ERROR_KIND_NO_LIVE_UPSTREAMS;
  } else if (absl::StrContains(line, "host not found in upstream")) {
    *kind = v1::UPSTREAM_ERROR_KIND_HOST_NOT_FOUND;
  } else if (absl::StrContains(line, "upstream prematurely closed connection")) {
    *kind = v1::UPSTREAM_ERROR_KIND_PREMATURELY_CLOSED;
  } else if (absl::StrContains(line, "(104: Connection reset by peer)") &&
             absl::StrContains(line, "upstream")) {
    *kind = v1::UPSTREAM_ERROR_KIND_CONNECTION_RESET;
  } else if (absl::StrContains(line, "while connecting to upstream") ||
             absl::StrContains(line, "from upstream")) {
    *kind = v1::UPSTREAM_ERROR_KIND_OTHER;
  } else {
    return false;
  }
  upstream->clear();
  const size_t at = line.find("upstream: \"");
  if (at != std::string::npos) {
    const size_t start = at + 11;
    const size_t end = line.find('"', start);
    if (end != std::string::npos) *upstream = line.substr(start, end - start);
  } else if (*kind == v1::UPSTREAM_ERROR_KIND_HOST_NOT_FOUND) {
    const size_t q = line.find("upstream \"");
    if (q != std::string::npos) {
      const size_t end = line.find('"', q + 10);
      if (end != std::string::npos) *upstream = line.substr(q + 10, end - q - 10);
    }
  }
  return true;
}

NginxDriver::NginxDriver(const v1::NginxSpec& spec) : spec_(spec) {
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

NginxDriver::~NginxDriver() {
  std::thread t;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    t = std::move(watch_thread_);
  }
  WakeWatcher();
  if (t.joinable()) t.join();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void NginxDriver::SetSpec(const v1::ProxySpec& proxy) {
  const v1::NginxSpec& spec = proxy.nginx();
  {
    absl::MutexLock lock(&mu_);
    if (spec.error_log() != spec_.error_log()) {
      log_offset_ = -1;
      log_inode_ = 0;
    }
    spec_ = spec;
    ++spec_generation_;
  }
  WakeWatcher();  // the watched paths may have changed
}

void NginxDriver::WakeWatcher() {
  const uint64_t one = 1;
  if (wake_fd_ >= 0) (void)!::write(wake_fd_, &one, sizeof(one));
}

std::unique_ptr<Subscription> NginxDriver::Watch(std::function<void(Change)> on_change) {
  std::unique_ptr<Subscription> sub = watchers_.Add(true, std::move(on_change));
  absl::MutexLock lock(&mu_);
  if (!watch_thread_.joinable() && !stopping_) {
    watch_thread_ = std::thread([this] { WatchLoop(); });
  }
  return sub;
}

namespace {

std::string DirOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string BaseOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Names in a config directory whose changes never call for a re-test: the pid file, logs,
// editors' swap and backup files.
bool IgnoredConfigName(const std::string& name, const std::set<std::string>& own_files) {
  return name.empty() || own_files.count(name) > 0 || absl::EndsWith(name, ".log") ||
         absl::EndsWith(name, ".pid") || absl::EndsWith(name, ".swp") ||
         absl::EndsWith(name, ".swx") || absl::EndsWith(name, "~") || name == "4913";
}

}  // namespace

std::vector<std::string> ConfigFilesNamed(const std::string& output) {
  // nginx names files as "in /etc/nginx/conf.d/x.conf:12", "file /etc/nginx/nginx.conf test"
  // and "open() \"/etc/nginx/y.conf\" failed".
  std::vector<std::string> out;
  std::set<std::string> seen;
  auto add = [&](std::string path) {
    while (!path.empty() && (path.back() == '"' || path.back() == ',')) path.pop_back();
    if (path.size() < 2 || path[0] != '/') return;
    if (seen.insert(path).second) out.push_back(path);
  };
  for (const std::string marker : {" in /", " file /", "open() \"/"}) {
    size_t at = 0;
    while ((at = output.find(marker, at)) != std::string::npos) {
      const size_t start = at + marker.size() - 1;
      size_t end = output.find_first_of(" \n\"", start);
      if (end == std::string::npos) end = output.size();
      std::string path = output.substr(start, end - start);
      // "x.conf:12" -> "x.conf"
      if (const size_t colon = path.rfind(':'); colon != std::string::npos &&
                                                colon + 1 < path.size() &&
                                                absl::ascii_isdigit(path[colon + 1])) {
        path.resize(colon);
      }
      add(path);
      at = end;
    }
  }
  return out;
}

// Waits on inotify (pid file and error log directories), a pidfd of the master and the wake
// eventfd; never on a timer unless a directory to watch does not exist yet.
void NginxDriver::WatchLoop() {
  const int in = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  constexpr uint32_t kMask = IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM |
                             IN_DELETE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF;
  std::map<int, std::string> watches;  // wd -> directory
  uint64_t armed_generation = ~uint64_t{0};
  bool all_armed = false;
  pid_t master = -1;
  int master_fd = -1;
  uint64_t errors_notified = 0;
  bool first = true;
  // Config watching: directories of the config files (the main one and every one nginx -t
  // named), and when to re-test (set by a change in them, or the slow timer).
  std::set<int> config_wds;
  std::set<std::string> config_dirs;
  std::set<std::string> own_files;  // names in those directories that are not config
  absl::Time retest_at = absl::InfiniteFuture();
  auto notify = [&](Change c) {
    watchers_.Notify([c](const bool&, const std::function<void(Change)>& call) { call(c); });
  };
  while (true) {
    std::string pid_file, error_log;
    uint64_t generation;
    v1::ConfigTest last_test;
    std::vector<std::string> config_files;
    bool tested = false;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
      pid_file = spec_.pid_file();
      error_log = spec_.error_log();
      generation = spec_generation_;
      last_test = last_test_;
      config_files = ConfigFilesLocked();
      tested = config_tested_;
      config_tested_ = false;
    }
    // Every config test (an action's or our own) is told at once, so the controller judges
    // on it rather than on the one before.
    if (tested) notify(Change::kConfigTested);
    std::set<std::string> want_config_dirs;
    for (const auto& f : config_files) want_config_dirs.insert(DirOf(f));
    if (in >= 0 &&
        (generation != armed_generation || !all_armed || want_config_dirs != config_dirs)) {
      for (const auto& [wd, dir] : watches) ::inotify_rm_watch(in, wd);
      watches.clear();
      config_wds.clear();
      all_armed = true;
      std::set<std::string> dirs = want_config_dirs;
      if (!pid_file.empty()) dirs.insert(DirOf(pid_file));
      if (!error_log.empty()) dirs.insert(DirOf(error_log));
      for (const auto& d : dirs) {
        const int wd = ::inotify_add_watch(in, d.c_str(), kMask);
        if (wd < 0) {
          all_armed = false;  // not there yet: look again in a second
        } else {
          watches[wd] = d;
          if (want_config_dirs.count(d)) config_wds.insert(wd);
        }
      }
      config_dirs = want_config_dirs;
      own_files = {BaseOf(pid_file), BaseOf(error_log)};
      armed_generation = generation;
    }
    // A failing config is re-tested on the slow timer even if no change was seen (a file on a
    // network mount, an include outside the watched directories).
    if (last_test.ran() && !last_test.ok()) {
      retest_at = std::min(retest_at, FromProto(last_test.at()) + kConfigRetestPeriod);
    } else {
      retest_at = absl::InfiniteFuture();
    }
    if (absl::Now() >= retest_at) {
      retest_at = absl::InfiniteFuture();
      const v1::ConfigTest t = TestConfig();
      UPKEEP_LOG(info, "proxy_config_retested",
                 {{"ok", t.ok() ? "true" : "false"}, {"reason", "config changed or timer"}});
      continue;  // the files nginx names may have changed: re-arm
    }
    // What may have changed: the master, and the log.
    const pid_t now_master = MasterPid();
    if (now_master != master) {
      if (master_fd >= 0) ::close(master_fd);
      master_fd = now_master > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, now_master, 0)) : -1;
      if (!first) notify(Change::kMaster);
      master = now_master;
    }
    PollErrorLog();
    uint64_t seen;
    {
      absl::MutexLock lock(&mu_);
      seen = errors_seen_;
    }
    if (first) {
      errors_notified = seen;
    } else if (seen != errors_notified) {
      errors_notified = seen;
      notify(Change::kUpstreamError);
    }
    first = false;

    std::vector<pollfd> fds = {{wake_fd_, POLLIN, 0}};
    if (in >= 0) fds.push_back({in, POLLIN, 0});
    if (master_fd >= 0) fds.push_back({master_fd, POLLIN, 0});
    int wait_ms = all_armed && in >= 0 ? -1 : 1000;
    if (retest_at != absl::InfiniteFuture()) {
      const int64_t until = std::max<int64_t>(
          0, absl::ToInt64Milliseconds(absl::Ceil(retest_at - absl::Now(), absl::Milliseconds(1))));
      wait_ms = wait_ms < 0 ? static_cast<int>(std::min<int64_t>(until, 1 << 30))
                            : static_cast<int>(std::min<int64_t>(until, wait_ms));
    }
    ::poll(fds.data(), fds.size(), wait_ms);
    uint64_t v;
    (void)!::read(wake_fd_, &v, sizeof(v));
    if (in >= 0) {
      alignas(inotify_event) char buf[16 << 10];
      while (true) {
        const ssize_t n = ::read(in, buf, sizeof(buf));
        if (n <= 0) break;
        for (char* p = buf; p < buf + n;) {
          const auto* ev = reinterpret_cast<const inotify_event*>(p);
          if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)) all_armed = false;
          // A config file written, replaced or removed: re-test once the writes settle. Only
          // while the last test failed: a good config that someone edits is theirs to reload.
          const std::string name = ev->len > 0 ? std::string(ev->name) : std::string();
          if (config_wds.count(ev->wd) && !IgnoredConfigName(name, own_files) && last_test.ran() &&
              !last_test.ok()) {
            retest_at = std::min(retest_at, absl::Now() + kConfigSettle);
          }
          p += sizeof(inotify_event) + ev->len;
        }
      }
    }
  }
  if (master_fd >= 0) ::close(master_fd);
  if (in >= 0) ::close(in);
}

std::vector<std::string> NginxDriver::BaseArgs() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> args = {spec_.binary().empty() ? "nginx" : spec_.binary()};
  if (!spec_.prefix().empty()) {
    args.push_back("-p");
    args.push_back(spec_.prefix());
  }
  if (!spec_.config().empty()) {
    args.push_back("-c");
    args.push_back(spec_.config());
  }
  return args;
}

pid_t NginxDriver::MasterPid() const {
  std::string pid_file;
  {
    absl::MutexLock lock(&mu_);
    pid_file = spec_.pid_file();
  }
  const pid_t pid = ReadPid(pid_file);
  return Alive(pid) ? pid : 0;
}

std::vector<pid_t> NginxDriver::Workers(pid_t master) const {
  std::vector<pid_t> out;
  if (master <= 0) return out;
  // The master is single-threaded: its children are its main thread's (one small read, where
  // a scan of /proc reads every process's stat: milliseconds on a busy host, per observation).
  if (std::ifstream children(absl::StrCat("/proc/", master, "/task/", master, "/children"));
      children) {
    int pid = 0;
    while (children >> pid) {
      if (Alive(pid)) out.push_back(pid);
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  DIR* d = opendir("/proc");  // a kernel without CONFIG_PROC_CHILDREN
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    int pid = 0;
    if (!absl::SimpleAtoi(e->d_name, &pid)) continue;
    if (ParentOf(pid) == master && Alive(pid)) out.push_back(pid);
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

bool NginxDriver::PollErrorLog() {
  absl::MutexLock lock(&mu_);
  return PollLocked();
}

bool NginxDriver::PollLocked() {
  if (spec_.error_log().empty()) return false;
  struct stat st;
  if (::stat(spec_.error_log().c_str(), &st) != 0) return false;
  if (log_offset_ < 0) {
    // First look: start at the end (like tail -f), keeping the last lines as the excerpt.
    log_inode_ = st.st_ino;
    log_offset_ = st.st_size > (64 << 10) ? st.st_size - (64 << 10) : 0;
    std::ifstream in(spec_.error_log());
    in.seekg(log_offset_);
    std::string line;
    while (std::getline(in, line)) {
      excerpt_.push_back(line);
      if (excerpt_.size() > kExcerptLines) excerpt_.pop_front();
    }
    log_offset_ = st.st_size;
    return false;
  }
  if (st.st_ino != log_inode_ || st.st_size < log_offset_) {
    // Rotated (new file) or truncated: read the new one from the start.
    log_inode_ = st.st_ino;
    log_offset_ = 0;
    partial_.clear();
  }
  if (st.st_size == log_offset_) return false;
  const int fd = ::open(spec_.error_log().c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const size_t want = static_cast<size_t>(std::min<off_t>(st.st_size - log_offset_, 1 << 20));
  std::string data(want, '\0');
  const ssize_t n = ::pread(fd, data.data(), want, log_offset_);
  ::close(fd);
  if (n <= 0) return false;
  data.resize(static_cast<size_t>(n));
  log_offset_ += n;
  data = partial_ + data;
  const size_t last_nl = data.rfind('\n');
  if (last_nl == std::string::npos) {
    partial_ = data;
    return false;
  }
  partial_ = data.substr(last_nl + 1);
  bool new_error = false;
  std::istringstream lines(data.substr(0, last_nl));
  std::string line;
  const absl::Time now = absl::Now();
  while (std::getline(lines, line)) {
    excerpt_.push_back(line);
    if (excerpt_.size() > kExcerptLines) excerpt_.pop_front();
    v1::UpstreamErrorKind kind;
    std::string upstream;
    if (!ParseUpstreamErrorLine(line, &kind, &upstream)) continue;
    // One record per upstream server (scheme://host:port), whatever the request path.
    if (const size_t scheme = upstream.find("://"); scheme != std::string::npos) {
      const size_t path = upstream.find('/', scheme + 3);
      if (path != std::string::npos) upstream.resize(path);
    }
    auto& rec = errors_[{static_cast<int>(kind), upstream}];
    if (rec.count() == 0) {
      rec.set_kind(kind);
      rec.set_upstream(upstream);
      *rec.mutable_first_seen() = ToProto(now);
    }
    rec.set_count(rec.count() + 1);
    *rec.mutable_last_seen() = ToProto(now);
    rec.set_sample(line.substr(0, 512));
    ++errors_seen_;
    new_error = true;
  }
  return new_error;
}

void NginxDriver::ClearErrors() {
  absl::MutexLock lock(&mu_);
  PollLocked();  // what was logged before the reload belongs to the old state
  errors_.clear();
}

std::vector<std::string> NginxDriver::ConfigFilesLocked() const {
  // Without a config path nginx uses its built-in one, which its test output names.
  std::vector<std::string> files;
  if (!spec_.config().empty()) files.push_back(spec_.config());
  for (auto& f : ConfigFilesNamed(last_test_.output())) {
    if (std::find(files.begin(), files.end(), f) == files.end()) files.push_back(std::move(f));
  }
  return files;
}

void NginxDriver::Observe(v1::ProxyObservation* out) {
  const pid_t master = MasterPid();
  out->set_master_running(master > 0);
  out->set_master_pid(master);
  for (pid_t w : Workers(master)) out->add_worker_pids(w);
  absl::MutexLock lock(&mu_);
  PollLocked();
  *out->mutable_last_config_test() = last_test_;
  for (const auto& [key, rec] : errors_) *out->add_upstream_errors() = rec;
  out->set_error_log_excerpt(absl::StrJoin(excerpt_, "\n"));
  if (started_at_ != absl::InfinitePast()) *out->mutable_started_at() = ToProto(started_at_);
  for (const auto& f : ConfigFilesLocked()) out->add_watched_config(f);
}

v1::ConfigTest NginxDriver::TestConfig() {
  std::vector<std::string> args;
  {
    absl::MutexLock lock(&mu_);
    if (!spec_.test_command().empty()) {
      args.assign(spec_.test_command().begin(), spec_.test_command().end());
    }
  }
  if (args.empty()) {
    args = BaseArgs();
    args.insert(args.begin() + 1, "-t");
  }
  v1::ConfigTest t;
  t.set_ran(true);
  *t.mutable_at() = ToProto(absl::Now());
  auto r = RunCommand(args, absl::Seconds(10));
  if (!r.ok()) {
    t.set_ok(false);
    t.set_output(std::string(r.status().message()));
  } else {
    t.set_ok(r->exit_code == 0);
    t.set_output(r->output);
  }
  {
    absl::MutexLock lock(&mu_);
    last_test_ = t;
    config_tested_ = true;
  }
  WakeWatcher();
  return t;
}

absl::StatusOr<std::string> NginxDriver::Start(absl::Duration timeout) {
  if (const pid_t m = MasterPid(); m > 0)
    return absl::StrCat("nginx already running (pid ", m, ")");
  const v1::ConfigTest test = TestConfig();
  if (!test.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("nginx -t failed; not started:\n", test.output()));
  }
  std::vector<std::string> args;
  {
    absl::MutexLock lock(&mu_);
    args.assign(spec_.start_command().begin(), spec_.start_command().end());
  }
  std::string unit;
  {
    absl::MutexLock lock(&mu_);
    unit = spec_.service();
  }
  if (!unit.empty()) args = SystemctlCommand("start", unit);  // systemd_unit.h
  if (args.empty()) args = BaseArgs();
  auto r = RunCommand(args, timeout);
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    return absl::InternalError(absl::StrCat("nginx exited ", r->exit_code, ":\n", r->output));
  }
  const absl::Time deadline = absl::Now() + timeout;
  pid_t master = 0;
  while ((master = MasterPid()) == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(2));  // waiting for the daemon to write its pid file
  }
  if (master == 0) return absl::DeadlineExceededError("nginx did not write its pid file");
  ClearErrors();
  absl::MutexLock lock(&mu_);
  started_at_ = absl::Now();
  return absl::StrCat("nginx started (master pid ", master, ")\n", test.output());
}

absl::StatusOr<std::string> NginxDriver::Reload(absl::Duration timeout) {
  const pid_t master = MasterPid();
  if (master == 0) return absl::FailedPreconditionError("nginx is not running: nothing to reload");
  const v1::ConfigTest test = TestConfig();
  if (!test.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "nginx -t failed; not reloaded (the running config keeps serving):\n", test.output()));
  }
  const std::vector<pid_t> before = Workers(master);
  std::string unit;
  {
    absl::MutexLock lock(&mu_);
    unit = spec_.service();
  }
  if (!unit.empty()) {
    // systemd_unit.h: the unit's ExecReload signals the master; new workers confirm it below.
    auto r = Systemctl("reload", unit, timeout);
    if (!r.ok()) return r.status();
  } else if (::kill(master, SIGHUP) != 0) {
    return absl::InternalError("cannot signal the nginx master");
  }
  // Confirmed only once every old worker has exited or is shutting down (it has closed its
  // listening sockets): until then an old worker with the old config still accepts, and a
  // probe that reaches it says nothing about the new config.
  //
  // The master forks the new workers, then sleeps 100 ms before it tells the old ones to quit
  // ("allow new processes to start", ngx_master_process_cycle), and until then both
  // generations accept: a request has even odds of the old config for 100 ms. Once the new
  // workers run, the old ones are sent what the master sends them after that sleep (SIGQUIT:
  // close the listeners, finish the requests in flight, exit). The listening sockets stay open
  // in the master and the new workers, so no connection is refused meanwhile; the master marks
  // the old workers exiting when its sleep ends (a SIGCHLD cuts it short) before it reaps them,
  // so none is respawned.
  const absl::Time deadline = absl::Now() + timeout;
  std::vector<pid_t> fresh;
  std::vector<pid_t> accepting;
  std::set<pid_t> told;
  while (absl::Now() < deadline) {
    fresh.clear();
    accepting.clear();
    for (pid_t w : Workers(master)) {
      if (!std::binary_search(before.begin(), before.end(), w)) fresh.push_back(w);
    }
    for (pid_t w : before) {
      if (Alive(w) && !WorkerShuttingDown(w)) accepting.push_back(w);
    }
    if (fresh.size() >= before.size() && !fresh.empty()) {
      for (pid_t w : accepting) {
        if (told.insert(w).second) ::kill(w, SIGQUIT);
      }
    }
    if (!fresh.empty() && accepting.empty()) {
      ClearErrors();
      return absl::StrCat("nginx reloaded: new worker(s) ", absl::StrJoin(fresh, ","),
                          ", old worker(s) ", before.empty() ? "none" : absl::StrJoin(before, ","),
                          " gone or shutting down (master ", master, ")");
    }
    absl::SleepFor(absl::Milliseconds(1));  // waiting for the workers to change over
  }
  if (fresh.empty()) {
    return absl::DeadlineExceededError("SIGHUP sent but no new nginx worker appeared");
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "SIGHUP sent, new worker(s) ", absl::StrJoin(fresh, ","), " up, but old worker(s) ",
      absl::StrJoin(accepting, ","), " still accept connections with the old config"));
}

absl::StatusOr<std::string> NginxDriver::Restart(absl::Duration timeout) {
  std::string unit;
  {
    absl::MutexLock lock(&mu_);
    unit = spec_.service();
  }
  if (!unit.empty()) {  // systemd_unit.h
    const v1::ConfigTest test = TestConfig();
    if (!test.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "nginx -t failed; not restarted (the running nginx keeps serving):\n", test.output()));
    }
    auto r = Systemctl("restart", unit, timeout);
    if (!r.ok()) return r.status();
    ClearErrors();
    absl::MutexLock lock(&mu_);
    started_at_ = absl::Now();
    return absl::StrCat("nginx restarted through ", *r);
  }
  const pid_t master = MasterPid();
  if (master > 0) {
    const v1::ConfigTest test = TestConfig();
    if (!test.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "nginx -t failed; not restarted (the running nginx keeps serving):\n", test.output()));
    }
    ::kill(master, SIGTERM);
    const absl::Time deadline = absl::Now() + timeout / 2;
    while (Alive(master) && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
    if (Alive(master)) {
      for (pid_t w : Workers(master)) ::kill(w, SIGKILL);
      ::kill(master, SIGKILL);
      const absl::Time kill_deadline = absl::Now() + absl::Seconds(2);
      while (Alive(master) && absl::Now() < kill_deadline) absl::SleepFor(absl::Milliseconds(1));
    }
  }
  auto started = Start(timeout / 2);
  if (!started.ok()) return started.status();
  return absl::StrCat("nginx restarted\n", *started);
}

std::shared_ptr<ProxyDriver> CreateNginxDriver(const v1::ProxySpec& spec) {
  return std::make_shared<NginxDriver>(spec.nginx());
}

}  // namespace upkeep::agent

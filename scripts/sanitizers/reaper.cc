// upkeep-reaper: runs a command (ctest, in scripts/sanitize.sh) as a child subreaper, so every
// process a test starts and then orphans (a daemonised nginx, a process-runtime service in its
// own session, a daemon whose test a sanitizer halted before its fixture could stop it) becomes
// our child instead of init's. Orphans are reaped as they exit, exactly as init would, so the
// tests see no difference. When the command has exited, every descendant still running is
// listed on stderr, sent SIGTERM, then SIGKILL after a grace period, and reaped: nothing a test
// started outlives the run. Only our own descendants are ever signalled, by pid.
//
//   upkeep-reaper [--fail-on-leftovers] -- COMMAND [ARG]...
// Exit status: the command's (128+N if killed by signal N); with --fail-on-leftovers, 3 when
// the command passed but left processes running.
#include <dirent.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

// Pids whose parent is us, from /proc/<pid>/stat (field 4).
std::vector<pid_t> Children() {
  std::vector<pid_t> out;
  const pid_t self = ::getpid();
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    std::ifstream in(std::string("/proc/") + e->d_name + "/stat");
    std::string line;
    if (!std::getline(in, line)) continue;
    // "pid (comm) state ppid ...": comm may contain spaces and parentheses; skip past the last ')'.
    const auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 1));
    char state = 0;
    long ppid = 0;
    rest >> state >> ppid;
    if (ppid == self && state != 'Z') out.push_back(static_cast<pid_t>(pid));
  }
  ::closedir(d);
  return out;
}

std::string Cmdline(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (char& c : s) {
    if (c == '\0') c = ' ';
  }
  return s;
}

void ReapAll() {
  while (::waitpid(-1, nullptr, WNOHANG) > 0) {
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool fail_on_leftovers = false;
  int i = 1;
  for (; i < argc; ++i) {
    if (std::strcmp(argv[i], "--fail-on-leftovers") == 0) {
      fail_on_leftovers = true;
    } else if (std::strcmp(argv[i], "--") == 0) {
      ++i;
      break;
    } else {
      break;
    }
  }
  if (i >= argc) {
    std::fprintf(stderr, "usage: upkeep-reaper [--fail-on-leftovers] -- COMMAND [ARG]...\n");
    return 2;
  }
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
    std::fprintf(stderr, "upkeep-reaper: PR_SET_CHILD_SUBREAPER: %s\n", std::strerror(errno));
    return 2;
  }
  const pid_t cmd = ::fork();
  if (cmd < 0) {
    std::fprintf(stderr, "upkeep-reaper: fork: %s\n", std::strerror(errno));
    return 2;
  }
  if (cmd == 0) {
    ::execvp(argv[i], argv + i);
    std::fprintf(stderr, "upkeep-reaper: %s: %s\n", argv[i], std::strerror(errno));
    ::_exit(127);
  }
  // The command's SIGINT/SIGTERM come from the terminal's process group or our caller; pass a
  // SIGTERM on and otherwise keep going until the command is gone.
  ::signal(SIGINT, SIG_IGN);
  int status = 0;
  for (;;) {
    int st = 0;
    const pid_t r = ::waitpid(-1, &st, 0);
    if (r == cmd) {
      status = st;
      break;
    }
    if (r < 0 && errno != EINTR) break;
  }
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);

  // Leftovers: every descendant still running is (or becomes, when its parent goes) our child.
  std::set<pid_t> reported;
  for (int sig : {SIGTERM, SIGKILL}) {
    const std::time_t deadline = std::time(nullptr) + 5;
    for (;;) {
      ReapAll();
      const std::vector<pid_t> kids = Children();
      if (kids.empty()) break;
      for (pid_t k : kids) {
        if (reported.insert(k).second) {
          std::fprintf(stderr, "upkeep-reaper: left running: pid %d: %s\n", k, Cmdline(k).c_str());
        }
        ::kill(k, sig);
      }
      if (std::time(nullptr) >= deadline) break;
      ::usleep(50 * 1000);  // A poll of /proc, not synchronisation: nothing to wait on.
    }
  }
  ReapAll();
  if (!reported.empty()) {
    std::fprintf(stderr, "upkeep-reaper: %zu process(es) outlived the run and were stopped\n",
                 reported.size());
    if (fail_on_leftovers && code == 0) return 3;
  }
  return code;
}

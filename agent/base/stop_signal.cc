#include "agent/base/stop_signal.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace upkeep::agent {
namespace {

std::atomic<bool> g_stop{false};
int g_wake[2] = {-1, -1};  // the self-pipe: the handler writes [1], the main thread reads [0]

void OnSignal(int) {
  const int saved = errno;
  g_stop = true;
  const char c = 1;
  if (g_wake[1] >= 0) (void)!::write(g_wake[1], &c, 1);  // async-signal-safe
  errno = saved;
}

}  // namespace

absl::Status InstallStopSignals() {
  if (g_wake[0] < 0 && ::pipe2(g_wake, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe2 for the stop signals: ", std::strerror(errno)));
  }
  ::signal(SIGINT, OnSignal);
  ::signal(SIGTERM, OnSignal);
  ::signal(SIGPIPE, SIG_IGN);
  return absl::OkStatus();
}

void WaitForStopSignal() {
  while (!g_stop) {
    char c;
    if (::read(g_wake[0], &c, 1) < 0 && errno != EINTR) return;
  }
}

}  // namespace upkeep::agent

// Listening TCP sockets, from /proc/net/tcp and /proc/net/tcp6, and which of them a process
// owns (through /proc/PID/fd), so a diagnosis can say "nginx expects 8002, backend listens on
// 8003" or "listens on 127.0.0.1 only".
#ifndef UPKEEP_AGENT_OBSERVE_PORTS_H_
#define UPKEEP_AGENT_OBSERVE_PORTS_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "upkeep/v1/observation.pb.h"

namespace upkeep::agent {

struct Listener {
  upkeep::v1::ListenSocket socket;
  uint64_t inode = 0;
};

// Parses the text of /proc/net/tcp or /proc/net/tcp6; LISTEN sockets only.
std::vector<Listener> ParseProcNetTcp(absl::string_view text, bool ipv6);
// Every listening TCP socket of this network namespace.
std::vector<Listener> ListListeners();
// The listeners among `all` owned by `pid` or its descendants' open files (pid's own fds).
std::vector<upkeep::v1::ListenSocket> ListenersOf(pid_t pid, const std::vector<Listener>& all);

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_OBSERVE_PORTS_H_

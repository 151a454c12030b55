// Listening TCP sockets, from /proc/PID/net/tcp and tcp6 (the process's own network namespace),
// and which of them a process tree holds (through /proc/PID/fd), so a diagnosis can say "nginx
// expects 8002, backend listens on 8003" or "listens on 127.0.0.1 only". Stateless.
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
// The listeners among `all` held open by `pid` itself.
std::vector<upkeep::v1::ListenSocket> ListenersOf(pid_t pid, const std::vector<Listener>& all);
// What the service whose main process is `pid` listens on, read from its own network namespace
// (/proc/PID/net/tcp{,6}: a container on a bridge network has its own) and held by `pid` or
// any of its descendants (a shell or supervisor whose child listens). Empty when pid <= 0 or
// its /proc entries cannot be read.
std::vector<upkeep::v1::ListenSocket> ServiceListeners(pid_t pid);
// `pid` and every descendant of it, from /proc/*/stat.
std::vector<pid_t> ProcessTree(pid_t pid);

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_OBSERVE_PORTS_H_

// Listening TCP sockets, from /proc/PID/net/tcp and tcp6 (the process's own network namespace),
// and which of them a process tree holds (through /proc/PID/fd), so a diagnosis can say "nginx
// expects 8002, backend listens on 8003" or "listens on 127.0.0.1 only". Stateless, except
// ListenerSnapshot (one observation's reads, thread-compatible).
#ifndef UPKEEP_AGENT_OBSERVE_PORTS_H_
#define UPKEEP_AGENT_OBSERVE_PORTS_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
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
// Every listening TCP socket of this network namespace: from the kernel's sock_diag netlink
// interface (asks for LISTEN sockets only), else from /proc/net/tcp{,6} (which the kernel
// prints by walking every socket of the namespace, established and TIME_WAIT ones too: on a
// busy host, most of an idle agent's CPU).
std::vector<Listener> ListListeners();
// The same from sock_diag only; nullopt when netlink is unavailable.
std::optional<std::vector<Listener>> ListListenersNetlink();
// The listeners among `all` held open by `pid` itself.
std::vector<upkeep::v1::ListenSocket> ListenersOf(pid_t pid, const std::vector<Listener>& all);
// What the service whose main process is `pid` listens on, read from its own network namespace
// (/proc/PID/net/tcp{,6}: a container on a bridge network has its own) and held by `pid` or
// any of its descendants (a shell or supervisor whose child listens). Empty when pid <= 0 or
// its /proc entries cannot be read.
std::vector<upkeep::v1::ListenSocket> ServiceListeners(pid_t pid);
// `pid` and every descendant of it, from /proc/*/stat.
std::vector<pid_t> ProcessTree(pid_t pid);

// ServiceListeners for the several services of one observation: the process table (for the
// process trees) and each network namespace's listening sockets are read once, on first need,
// however many services ask. Use one snapshot per observation, then drop it (what it read
// ages).
class ListenerSnapshot {
 public:
  std::vector<upkeep::v1::ListenSocket> Of(pid_t pid);

 private:
  std::vector<pid_t> Tree(pid_t pid);
  std::map<uint64_t, std::vector<Listener>> by_netns_;  // by the namespace's inode
  std::optional<std::multimap<pid_t, pid_t>> children_;
};

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_OBSERVE_PORTS_H_

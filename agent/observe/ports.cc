#include "agent/observe/ports.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace upkeep::agent {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// "0100007F:1F90" (little-endian words) -> address text and port.
bool ParseAddress(absl::string_view field, bool ipv6, std::string* address, int* port) {
  const size_t colon = field.find(':');
  if (colon == absl::string_view::npos) return false;
  const absl::string_view hex = field.substr(0, colon);
  uint32_t p = 0;
  if (!absl::SimpleHexAtoi(field.substr(colon + 1), &p)) return false;
  *port = static_cast<int>(p);
  unsigned char bytes[16];
  const size_t words = ipv6 ? 4 : 1;
  if (hex.size() != words * 8) return false;
  for (size_t w = 0; w < words; ++w) {
    uint32_t v = 0;
    if (!absl::SimpleHexAtoi(hex.substr(w * 8, 8), &v)) return false;
    // The kernel prints each 32-bit word in host (little-endian) order.
    bytes[w * 4 + 0] = v & 0xff;
    bytes[w * 4 + 1] = (v >> 8) & 0xff;
    bytes[w * 4 + 2] = (v >> 16) & 0xff;
    bytes[w * 4 + 3] = (v >> 24) & 0xff;
  }
  char buf[INET6_ADDRSTRLEN];
  if (inet_ntop(ipv6 ? AF_INET6 : AF_INET, bytes, buf, sizeof(buf)) == nullptr) return false;
  *address = buf;
  return true;
}

}  // namespace

std::vector<Listener> ParseProcNetTcp(absl::string_view text, bool ipv6) {
  std::vector<Listener> out;
  bool header = true;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (header) {
      header = false;
      continue;
    }
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
    if (f.size() < 10 || f[3] != "0A") continue;
    Listener l;
    std::string address;
    int port = 0;
    if (!ParseAddress(f[1], ipv6, &address, &port)) continue;
    l.socket.set_address(address);
    l.socket.set_port(port);
    l.socket.set_ipv6(ipv6);
    absl::SimpleAtoi(f[9], &l.inode);
    out.push_back(l);
  }
  return out;
}

namespace {

constexpr int kTcpListen = 10;  // TCP_LISTEN in the kernel's state numbering

// One SOCK_DIAG_BY_FAMILY dump of `family`'s listening TCP sockets into `out`.
bool DumpListening(int fd, int family, std::vector<Listener>* out) {
  struct {
    nlmsghdr nlh;
    inet_diag_req_v2 req;
  } msg{};
  msg.nlh.nlmsg_len = sizeof(msg);
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  msg.req.sdiag_family = static_cast<uint8_t>(family);
  msg.req.sdiag_protocol = IPPROTO_TCP;
  msg.req.idiag_states = 1u << kTcpListen;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(fd, &msg, sizeof(msg), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof(kernel)) !=
      static_cast<ssize_t>(sizeof(msg))) {
    return false;
  }
  alignas(nlmsghdr) char buf[16384];
  while (true) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return false;
    int len = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_type == NLMSG_DONE) return true;
      if (h->nlmsg_type == NLMSG_ERROR) return false;
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg))) continue;
      const auto* d = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
      if (d->idiag_state != kTcpListen) continue;
      char text[INET6_ADDRSTRLEN];
      if (inet_ntop(d->idiag_family, d->id.idiag_src, text, sizeof(text)) == nullptr) continue;
      Listener l;
      l.socket.set_address(text);
      l.socket.set_port(ntohs(d->id.idiag_sport));
      l.socket.set_ipv6(d->idiag_family == AF_INET6);
      l.inode = d->idiag_inode;
      out->push_back(std::move(l));
    }
  }
}

// The inode of `pid`'s network namespace (0 when unreadable); pid 0 is this process.
uint64_t NetNamespace(pid_t pid) {
  struct stat st;
  const std::string path = pid > 0 ? absl::StrCat("/proc/", pid, "/ns/net") : "/proc/self/ns/net";
  return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

}  // namespace

std::optional<std::vector<Listener>> ListListenersNetlink() {
  const int fd = ::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return std::nullopt;
  std::vector<Listener> all;
  const bool ok = DumpListening(fd, AF_INET, &all) && DumpListening(fd, AF_INET6, &all);
  ::close(fd);
  if (!ok) return std::nullopt;
  return all;
}

std::vector<Listener> ListListeners() {
  if (auto all = ListListenersNetlink()) return *std::move(all);
  std::vector<Listener> all = ParseProcNetTcp(ReadAll("/proc/net/tcp"), false);
  for (auto& l : ParseProcNetTcp(ReadAll("/proc/net/tcp6"), true)) all.push_back(l);
  return all;
}

namespace {

// Adds the inodes of the sockets `pid` holds open.
void SocketInodes(pid_t pid, std::set<uint64_t>* inodes) {
  const std::string dir = absl::StrCat("/proc/", pid, "/fd");
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return;
  while (dirent* e = readdir(d)) {
    char target[128];
    const ssize_t n =
        readlink(absl::StrCat(dir, "/", e->d_name).c_str(), target, sizeof(target) - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    uint64_t inode = 0;
    // "socket:[12345]"
    if (std::sscanf(target, "socket:[%lu]", &inode) == 1) inodes->insert(inode);
  }
  closedir(d);
}

pid_t ParentPid(pid_t pid) {
  const std::string stat = ReadAll(absl::StrCat("/proc/", pid, "/stat"));
  const size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 4 > stat.size()) return 0;
  int ppid = 0;
  // ") S PPID ..."
  if (std::sscanf(stat.c_str() + close + 2, "%*c %d", &ppid) != 1) return 0;
  return ppid;
}

}  // namespace

std::vector<upkeep::v1::ListenSocket> ListenersOf(pid_t pid, const std::vector<Listener>& all) {
  std::vector<upkeep::v1::ListenSocket> out;
  if (pid <= 0) return out;
  std::set<uint64_t> inodes;
  SocketInodes(pid, &inodes);
  for (const auto& l : all) {
    if (inodes.count(l.inode)) out.push_back(l.socket);
  }
  return out;
}

namespace {

std::multimap<pid_t, pid_t> ChildrenOfEveryProcess() {
  std::multimap<pid_t, pid_t> children;
  if (DIR* d = opendir("/proc")) {
    while (dirent* e = readdir(d)) {
      int p = 0;
      if (!absl::SimpleAtoi(e->d_name, &p) || p <= 0) continue;
      children.emplace(ParentPid(p), p);
    }
    closedir(d);
  }
  return children;
}

std::vector<pid_t> Descendants(pid_t pid, const std::multimap<pid_t, pid_t>& children) {
  std::vector<pid_t> tree{pid};
  for (size_t i = 0; i < tree.size() && tree.size() < 4096; ++i) {
    auto [begin, end] = children.equal_range(tree[i]);
    for (auto it = begin; it != end; ++it) tree.push_back(it->second);
  }
  return tree;
}

}  // namespace

std::vector<pid_t> ProcessTree(pid_t pid) {
  if (pid <= 0) return {};
  return Descendants(pid, ChildrenOfEveryProcess());
}

std::vector<pid_t> ListenerSnapshot::Tree(pid_t pid) {
  if (!children_.has_value()) children_ = ChildrenOfEveryProcess();
  return Descendants(pid, *children_);
}

std::vector<upkeep::v1::ListenSocket> ServiceListeners(pid_t pid) {
  return ListenerSnapshot().Of(pid);
}

std::vector<upkeep::v1::ListenSocket> ListenerSnapshot::Of(pid_t pid) {
  std::vector<upkeep::v1::ListenSocket> out;
  if (pid <= 0) return out;
  // The namespace of the main process: every process of a container shares it. The agent's own
  // is asked through netlink; another (read through /proc/PID/net) only through /proc.
  const uint64_t ns = NetNamespace(pid);
  if (ns == 0) return out;
  auto cached = by_netns_.find(ns);
  if (cached == by_netns_.end()) {
    std::vector<Listener> listeners;
    std::optional<std::vector<Listener>> netlink;
    if (ns == NetNamespace(0)) netlink = ListListenersNetlink();
    if (netlink.has_value()) {
      listeners = *std::move(netlink);
    } else {
      listeners = ParseProcNetTcp(ReadAll(absl::StrCat("/proc/", pid, "/net/tcp")), false);
      for (auto& l : ParseProcNetTcp(ReadAll(absl::StrCat("/proc/", pid, "/net/tcp6")), true)) {
        listeners.push_back(l);
      }
    }
    cached = by_netns_.emplace(ns, std::move(listeners)).first;
  }
  const std::vector<Listener>& all = cached->second;
  if (all.empty()) return out;
  std::set<uint64_t> inodes;
  for (pid_t p : Tree(pid)) SocketInodes(p, &inodes);
  std::set<std::pair<std::string, int>> seen;  // one socket per address:port (SO_REUSEPORT)
  for (const auto& l : all) {
    if (!inodes.count(l.inode)) continue;
    if (!seen.emplace(l.socket.address(), l.socket.port()).second) continue;
    out.push_back(l.socket);
  }
  return out;
}

}  // namespace upkeep::agent

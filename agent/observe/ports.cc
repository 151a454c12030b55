#include "agent/observe/ports.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <unistd.h>

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

std::vector<Listener> ListListeners() {
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

std::vector<pid_t> ProcessTree(pid_t pid) {
  std::vector<pid_t> tree;
  if (pid <= 0) return tree;
  std::multimap<pid_t, pid_t> children;
  if (DIR* d = opendir("/proc")) {
    while (dirent* e = readdir(d)) {
      int p = 0;
      if (!absl::SimpleAtoi(e->d_name, &p) || p <= 0) continue;
      children.emplace(ParentPid(p), p);
    }
    closedir(d);
  }
  tree.push_back(pid);
  for (size_t i = 0; i < tree.size() && tree.size() < 4096; ++i) {
    auto [begin, end] = children.equal_range(tree[i]);
    for (auto it = begin; it != end; ++it) tree.push_back(it->second);
  }
  return tree;
}

std::vector<upkeep::v1::ListenSocket> ServiceListeners(pid_t pid) {
  std::vector<upkeep::v1::ListenSocket> out;
  if (pid <= 0) return out;
  // The namespace of the main process: every process of a container shares it.
  std::vector<Listener> all =
      ParseProcNetTcp(ReadAll(absl::StrCat("/proc/", pid, "/net/tcp")), false);
  for (auto& l : ParseProcNetTcp(ReadAll(absl::StrCat("/proc/", pid, "/net/tcp6")), true)) {
    all.push_back(l);
  }
  if (all.empty()) return out;
  std::set<uint64_t> inodes;
  for (pid_t p : ProcessTree(pid)) SocketInodes(p, &inodes);
  std::set<std::pair<std::string, int>> seen;  // one socket per address:port (SO_REUSEPORT)
  for (const auto& l : all) {
    if (!inodes.count(l.inode)) continue;
    if (!seen.emplace(l.socket.address(), l.socket.port()).second) continue;
    out.push_back(l.socket);
  }
  return out;
}

}  // namespace upkeep::agent

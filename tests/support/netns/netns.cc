#include "tests/support/netns/netns.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace upkeep::testing {

absl::StatusOr<std::string> RunCommand(const std::vector<std::string>& argv) {
  std::vector<std::string> quoted;
  for (const auto& a : argv) quoted.push_back("'" + a + "'");
  const std::string cmd = absl::StrCat(absl::StrJoin(quoted, " "), " 2>&1");
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return absl::InternalError(absl::StrCat("cannot run ", cmd));
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int st = ::pclose(p);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    return absl::InternalError(absl::StrCat(absl::StrJoin(argv, " "), " failed: ", out));
  }
  return out;
}

std::string NetnsNetwork::Unavailable() {
  if (::geteuid() != 0) return "network namespaces need root";
  for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (std::filesystem::exists(p)) return "";
  }
  return "iproute2 (`ip`) is not installed";
}

absl::StatusOr<std::unique_ptr<NetnsNetwork>> NetnsNetwork::Create() {
  if (std::string why = Unavailable(); !why.empty()) return absl::UnavailableError(why);
  std::unique_ptr<NetnsNetwork> n(new NetnsNetwork());
  n->prefix_ = absl::StrCat("upk", ::getpid() % 100000);
  n->bridge_ns_ = n->prefix_ + "-br";
  auto run = [](const std::vector<std::string>& a) { return RunCommand(a).status(); };
  if (absl::Status st = run({"ip", "netns", "add", n->bridge_ns_}); !st.ok()) return st;
  const std::vector<std::string> in = {"ip", "netns", "exec", n->bridge_ns_};
  for (const auto& cmd :
       std::vector<std::vector<std::string>>{{"ip", "link", "add", "br0", "type", "bridge"},
                                             {"ip", "link", "set", "br0", "up"},
                                             {"ip", "link", "set", "lo", "up"}}) {
    std::vector<std::string> argv = in;
    argv.insert(argv.end(), cmd.begin(), cmd.end());
    if (absl::Status st = run(argv); !st.ok()) return st;
  }
  return n;
}

NetnsNetwork::~NetnsNetwork() {
  for (const auto& [host, ns] : ns_) (void)RunCommand({"ip", "netns", "del", ns});
  if (!bridge_ns_.empty()) (void)RunCommand({"ip", "netns", "del", bridge_ns_});
}

absl::StatusOr<std::string> NetnsNetwork::AddHost(const std::string& name, int octet) {
  const std::string ns = absl::StrCat(prefix_, "-", name);
  const std::string veth = absl::StrCat(prefix_, "h", next_);  // host side, <= 15 chars
  const std::string peer = absl::StrCat(prefix_, "b", next_);  // bridge side
  ++next_;
  const std::string address = absl::StrCat("10.213.0.", octet);
  std::vector<std::vector<std::string>> cmds = {
      {"ip", "netns", "add", ns},
      {"ip", "-n", ns, "link", "set", "lo", "up"},
      {"ip", "-n", ns, "link", "add", veth, "type", "veth", "peer", "name", peer, "netns",
       bridge_ns_},
      {"ip", "-n", ns, "addr", "add", address + "/24", "dev", veth},
      {"ip", "-n", ns, "link", "set", veth, "up"},
      {"ip", "-n", bridge_ns_, "link", "set", peer, "master", "br0"},
      {"ip", "-n", bridge_ns_, "link", "set", peer, "up"},
  };
  for (const auto& c : cmds) {
    if (absl::Status st = RunCommand(c).status(); !st.ok()) return st;
    if (c[2] == "add" && c[1] == "netns") ns_[name] = ns;
  }
  peer_[name] = peer;
  return address;
}

std::vector<std::string> NetnsNetwork::Command(const std::string& host,
                                               const std::vector<std::string>& argv) const {
  std::vector<std::string> out = {"ip", "netns", "exec", ns_.at(host)};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

absl::Status NetnsNetwork::SetLink(const std::string& host, bool up) {
  return RunCommand({"ip", "-n", bridge_ns_, "link", "set", peer_.at(host), up ? "up" : "down"})
      .status();
}

std::string PrivateNetns::Unavailable() {
  if (std::string why = NetnsNetwork::Unavailable(); !why.empty()) return why;
  for (const char* p : {"/usr/bin/nsenter", "/bin/nsenter", "/usr/sbin/nsenter"}) {
    if (std::filesystem::exists(p)) return "";
  }
  return "nsenter (util-linux) is not installed";
}

absl::StatusOr<std::unique_ptr<PrivateNetns>> PrivateNetns::Create(const std::string& tag) {
  if (std::string why = Unavailable(); !why.empty()) return absl::UnavailableError(why);
  std::unique_ptr<PrivateNetns> n(new PrivateNetns());
  const std::string name = absl::StrCat("upkeep-", tag, "-", ::getpid());
  if (absl::Status st = RunCommand({"ip", "netns", "add", name}).status(); !st.ok()) return st;
  n->name_ = name;  // from here the destructor deletes it
  if (absl::Status st = RunCommand({"ip", "-n", name, "link", "set", "lo", "up"}).status();
      !st.ok()) {
    return st;
  }
  return n;
}

PrivateNetns::~PrivateNetns() {
  if (!name_.empty()) (void)RunCommand({"ip", "netns", "del", name_});
  if (!etc_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(etc_, ec);
    std::filesystem::remove("/etc/netns", ec);  // only when empty: others' stay
  }
}

std::vector<std::string> PrivateNetns::Exec(const std::vector<std::string>& argv) const {
  std::vector<std::string> out = {"ip", "netns", "exec", name_};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

std::vector<std::string> PrivateNetns::NetOnly(const std::vector<std::string>& argv) const {
  std::vector<std::string> out = {"nsenter", "--net=/run/netns/" + name_};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

absl::Status PrivateNetns::SetHosts(const std::string& content) {
  const std::string dir = "/etc/netns/" + name_;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("mkdir ", dir, ": ", ec.message()));
  etc_ = dir;
  // Truncate and write the same inode: a bind mount of it shows the new content.
  std::ofstream out(dir + "/hosts", std::ios::out | std::ios::trunc);
  out << content;
  out.flush();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", dir, "/hosts"));
  return absl::OkStatus();
}

}  // namespace upkeep::testing

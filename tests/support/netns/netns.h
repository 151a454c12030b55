// NetnsNetwork: a private network of Linux network namespaces for multi-host tests. Each
// "host" is a namespace with its own loopback and one veth link into a bridge that lives in a
// namespace of its own; addresses (10.213.0.0/24) exist only inside these namespaces, so no
// traffic can reach any address outside them. Partition = take a host's link down (the bridge
// side), heal = up. Processes run inside a host with Command(host, argv) (`ip netns exec`).
// Needs root and iproute2: Available() says why not. The destructor deletes every namespace it
// made (stop the processes inside first). Not thread-safe: one owner.
#ifndef UPKEEP_TESTS_SUPPORT_NETNS_NETNS_H_
#define UPKEEP_TESTS_SUPPORT_NETNS_NETNS_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace upkeep::testing {

class NetnsNetwork {
 public:
  // Empty when namespaces can be made here; else why not (not root, no `ip`).
  static std::string Unavailable();
  static absl::StatusOr<std::unique_ptr<NetnsNetwork>> Create();
  ~NetnsNetwork();

  // Adds a host namespace with address 10.213.0.<octet>; returns that address.
  absl::StatusOr<std::string> AddHost(const std::string& name, int octet);
  // The argv that runs `argv` inside `host`.
  std::vector<std::string> Command(const std::string& host,
                                   const std::vector<std::string>& argv) const;
  // Partition (down) or heal (up) the host's link.
  absl::Status SetLink(const std::string& host, bool up);

 private:
  NetnsNetwork() = default;
  std::string prefix_;
  std::string bridge_ns_;
  std::map<std::string, std::string> ns_;    // host -> namespace
  std::map<std::string, std::string> peer_;  // host -> bridge-side veth
  int next_ = 0;
};

// One network namespace of a test's own, alone (no link out): a host whose loopback, and any
// bridge a dockerd makes inside it, exist only there. Exec(argv) runs argv inside with
// `ip netns exec`, which also gives it the namespace's own /etc/hosts once SetHosts wrote one
// (iproute2 bind-mounts /etc/netns/NAME/hosts over /etc/hosts for that process and its
// children); NetOnly(argv) with `nsenter --net`, which keeps the machine's mounts (dockerd needs
// the cgroup hierarchy that `ip netns exec` hides when it remounts /sys). The destructor
// deletes the namespace and /etc/netns/NAME (stop the processes inside first). Needs root,
// iproute2 and nsenter: Unavailable() says why not. Not thread-safe: one owner.
class PrivateNetns {
 public:
  // Empty when it can be made here; else why not.
  static std::string Unavailable();
  // A namespace named upkeep-TAG-PID with its loopback up.
  static absl::StatusOr<std::unique_ptr<PrivateNetns>> Create(const std::string& tag);
  ~PrivateNetns();

  const std::string& name() const { return name_; }
  std::vector<std::string> Exec(const std::vector<std::string>& argv) const;
  std::vector<std::string> NetOnly(const std::vector<std::string>& argv) const;
  // Writes the namespace's hosts file (whole; give localhost too). In place, so processes
  // already started with Exec see the new content, as after an edit of /etc/hosts.
  absl::Status SetHosts(const std::string& content);

 private:
  PrivateNetns() = default;
  std::string name_;
  std::string etc_;  // /etc/netns/NAME when SetHosts made it
};

// Runs argv to completion; its combined output, or an error naming the command.
absl::StatusOr<std::string> RunCommand(const std::vector<std::string>& argv);

}  // namespace upkeep::testing

#endif  // UPKEEP_TESTS_SUPPORT_NETNS_NETNS_H_

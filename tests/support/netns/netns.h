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

// Runs argv to completion; its combined output, or an error naming the command.
absl::StatusOr<std::string> RunCommand(const std::vector<std::string>& argv);

}  // namespace upkeep::testing

#endif  // UPKEEP_TESTS_SUPPORT_NETNS_NETNS_H_

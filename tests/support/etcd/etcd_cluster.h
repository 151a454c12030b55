// A real etcd cluster for tests: N members (Debian's etcd-server) on loopback ephemeral ports,
// data in a temporary directory, every member started, killed and reaped by pid.
#ifndef UPKEEP_TESTS_SUPPORT_ETCD_ETCD_CLUSTER_H_
#define UPKEEP_TESTS_SUPPORT_ETCD_ETCD_CLUSTER_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace upkeep::testing {

// Mutual TLS on the client endpoints: etcd serves `cert`/`key` and requires client certificates
// signed by `ca` (--client-cert-auth). `client_cert`/`client_key` are what Ready() presents.
struct EtcdTls {
  std::string ca, cert, key;
  std::string client_cert, client_key;
};

class EtcdCluster {
 public:
  // Starts `members` members and waits until the cluster has a leader and answers a read.
  static absl::StatusOr<std::unique_ptr<EtcdCluster>> Start(int members = 3,
                                                            std::optional<EtcdTls> tls = {});
  ~EtcdCluster();

  // "127.0.0.1:PORT" of each member's client (gRPC) endpoint, in member order.
  const std::vector<std::string>& endpoints() const { return endpoints_; }
  // The endpoints joined with commas, as --etcd-endpoints takes them.
  std::string EndpointList() const;
  // SIGKILLs member `i` (its pid only) and reaps it.
  void Kill(int i);
  // Restarts a killed member with its data directory.
  absl::Status Restart(int i);
  // True when `endpoint` answers a linearizable read within `timeout`.
  bool Ready(const std::string& endpoint, absl::Duration timeout) const;
  // The member's log (for failure messages).
  std::string Log(int i) const;

 private:
  EtcdCluster() = default;
  absl::Status StartMember(int i, bool fresh);

  TempDir dir_;
  std::optional<EtcdTls> tls_;
  std::vector<std::string> endpoints_;
  std::vector<int> peer_ports_;
  std::string initial_cluster_;
  std::vector<std::unique_ptr<Subprocess>> members_;
};

}  // namespace upkeep::testing

#endif  // UPKEEP_TESTS_SUPPORT_ETCD_ETCD_CLUSTER_H_

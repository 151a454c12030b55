// A loopback TCP forwarder for tests that cut a process off from a peer: clients connect to
// port(), bytes go both ways to `target`; Cut() closes every connection and the listener, so
// the peer becomes unreachable (connection refused) until the test ends.
#ifndef UPKEEP_TESTS_SUPPORT_ETCD_TCP_PROXY_H_
#define UPKEEP_TESTS_SUPPORT_ETCD_TCP_PROXY_H_

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace upkeep::testing {

class TcpProxy {
 public:
  // `target`: "127.0.0.1:PORT".
  static absl::StatusOr<std::unique_ptr<TcpProxy>> Start(const std::string& target);
  ~TcpProxy();
  int port() const { return port_; }
  std::string address() const;
  void Cut();

 private:
  TcpProxy() = default;
  void AcceptLoop();
  void Pump(int from, int to);

  int listen_fd_ = -1;
  int port_ = 0;
  int target_port_ = 0;
  absl::Mutex mu_;
  bool cut_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<int> fds_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  std::thread acceptor_;
};

}  // namespace upkeep::testing

#endif  // UPKEEP_TESTS_SUPPORT_ETCD_TCP_PROXY_H_

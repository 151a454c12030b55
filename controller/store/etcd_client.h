// EtcdClient: etcd's v3 gRPC API (proto/etcd) over one channel per member. A call goes to the
// current member; when that member is unreachable (UNAVAILABLE) the call is retried once on each
// other member in turn, and the one that answered becomes current. Mutual TLS with
// --etcd-ca/--etcd-cert/--etcd-key; plaintext only to loopback members (tls::ClientCredentials).
// Thread-safe.
#ifndef UPKEEP_CONTROLLER_STORE_ETCD_CLIENT_H_
#define UPKEEP_CONTROLLER_STORE_ETCD_CLIENT_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "etcd/etcdserver/api/v3election/v3electionpb/v3election.grpc.pb.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace upkeep::controller {

struct EtcdOptions {
  // "host:port", "http://host:port" or "https://host:port", in any number.
  std::vector<std::string> endpoints;
  std::string ca, cert, key;  // all three, or none (plaintext: loopback members only)
  absl::Duration call_timeout = absl::Seconds(5);
};

// Splits "a:2379,https://b:2379" into endpoints; InvalidArgument naming the bad entry.
absl::StatusOr<std::vector<std::string>> ParseEtcdEndpoints(const std::string& list);

class EtcdClient {
 public:
  static absl::StatusOr<std::unique_ptr<EtcdClient>> Connect(const EtcdOptions& options);

  struct Stubs {
    std::string endpoint;
    etcdserverpb::KV::Stub* kv;
    etcdserverpb::Watch::Stub* watch;
    etcdserverpb::Lease::Stub* lease;
    etcdserverpb::Maintenance::Stub* maintenance;
    v3electionpb::Election::Stub* election;
  };
  // Runs `call` on the current member with a context carrying the call timeout (`timeout`
  // when not zero; InfiniteDuration for none); on UNAVAILABLE, on the next member.
  grpc::Status Call(const std::function<grpc::Status(const Stubs&, grpc::ClientContext*)>& call,
                    absl::Duration timeout = absl::ZeroDuration());

  absl::StatusOr<etcdserverpb::RangeResponse> Range(const etcdserverpb::RangeRequest& req);
  absl::StatusOr<etcdserverpb::TxnResponse> Txn(const etcdserverpb::TxnRequest& req);
  absl::StatusOr<int64_t> LeaseGrant(absl::Duration ttl);
  absl::Status LeaseRevoke(int64_t lease);
  // One keep-alive; returns the remaining TTL (zero or less: the lease is gone). `timeout`
  // bounds each attempt (zero: the call timeout).
  absl::StatusOr<int64_t> LeaseKeepAliveOnce(int64_t lease,
                                             absl::Duration timeout = absl::ZeroDuration());

  // The stubs of the member calls go to now (for streams such as Watch).
  Stubs Current();
  // Moves to the next member (after a stream on the current one broke).
  void Rotate();
  const std::vector<std::string>& endpoints() const { return endpoints_; }
  absl::Duration call_timeout() const { return timeout_; }

 private:
  struct Member {
    std::string endpoint;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<etcdserverpb::KV::Stub> kv;
    std::unique_ptr<etcdserverpb::Watch::Stub> watch;
    std::unique_ptr<etcdserverpb::Lease::Stub> lease;
    std::unique_ptr<etcdserverpb::Maintenance::Stub> maintenance;
    std::unique_ptr<v3electionpb::Election::Stub> election;
  };
  Stubs StubsOf(size_t i);

  std::vector<std::string> endpoints_;
  std::vector<Member> members_;
  std::atomic<size_t> current_{0};
  absl::Duration timeout_;
};

// The end of the key range that holds every key starting with `prefix` (etcd's range_end).
std::string PrefixEnd(const std::string& prefix);
absl::Status FromGrpc(const grpc::Status& st, const std::string& what);

}  // namespace upkeep::controller

#endif  // UPKEEP_CONTROLLER_STORE_ETCD_CLIENT_H_

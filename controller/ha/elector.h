// Elector: leader election for controller replicas on etcd's Election API (v3electionpb),
// with one lease per replica. The replica grants a lease (`ttl`), keeps it alive every ttl/4,
// and campaigns under `name` with its address as the value; Campaign returns when it leads,
// with the election key and that key's create revision: the fence every leader write carries
// (EtcdStore::SetFence). Leadership is lost when a keep-alive says the lease is gone, or when
// no keep-alive has succeeded for `ttl - safety` since it was sent — a moment at which etcd
// cannot yet have expired the lease, so a leader cut off from etcd steps down before another
// can be elected. Loss is final for this Elector: on_lost runs once and the process is meant
// to stop acting (upkeep-controller exits; its supervisor starts it again as a follower).
// Thread-safe.
#ifndef UPKEEP_CONTROLLER_HA_ELECTOR_H_
#define UPKEEP_CONTROLLER_HA_ELECTOR_H_

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/store/etcd_client.h"
#include "controller/store/etcd_store.h"

namespace upkeep::controller {

struct ElectorOptions {
  std::string name = "/upkeep/leader";  // the election's key prefix
  std::string value;                    // this replica's address
  absl::Duration ttl = absl::Seconds(5);
  absl::Duration safety = absl::Seconds(1);
};

class Elector {
 public:
  // `client` must outlive the elector.
  Elector(EtcdClient* client, ElectorOptions options);
  ~Elector();

  // Grants the lease and starts the keep-alive and campaign threads. `on_elected` runs (on the
  // campaign thread) once this replica leads; `on_lost` once it stops leading or its lease is
  // lost while leading.
  absl::Status Start(std::function<void(const Fence&)> on_elected, std::function<void()> on_lost);
  // Resigns (if leading), revokes the lease, joins the threads.
  void Stop();

  bool leading() const;
  bool lost() const;
  int64_t lease() const { return lease_.load(); }
  // The leader's value (address) as etcd says now; empty when there is no leader.
  absl::StatusOr<std::string> Leader();

 private:
  void KeepAliveLoop();
  void CampaignLoop();
  void Lose(const std::string& why);

  EtcdClient* const client_;
  const ElectorOptions options_;
  std::atomic<int64_t> lease_{0};
  std::function<void(const Fence&)> on_elected_;
  std::function<void()> on_lost_;

  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool leading_ ABSL_GUARDED_BY(mu_) = false;
  bool lost_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<v3electionpb::LeaderKey> key_ ABSL_GUARDED_BY(mu_);
  grpc::ClientContext* campaign_ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::thread keepalive_;
  std::thread campaign_;
};

}  // namespace upkeep::controller

#endif  // UPKEEP_CONTROLLER_HA_ELECTOR_H_

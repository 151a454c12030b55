// A controller replica's place in an etcd-backed fleet of controllers:
//  - ReplicaRegistry: a heartbeat key PREFIX/controllers/ADDRESS (on the replica's lease, so
//    it goes when the replica does) carrying the newest etcd revision the replica has seen;
//    List() is what `upkeepctl get controllers` prints, with each replica's role and lag.
//  - ControllerServiceImpl: ListControllers, on every replica (and on a single SQLite
//    controller, which lists itself).
//  - FollowerFleetService: FleetService on a follower. Reads (get, list, describe, events,
//    watch, actions, notifiers) come from etcd; everything else answers UNAVAILABLE with the
//    leader's address in the message and in the trailing metadata `upkeep-leader`.
#ifndef UPKEEP_CONTROLLER_HA_REPLICA_H_
#define UPKEEP_CONTROLLER_HA_REPLICA_H_

#include <functional>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "controller/ha/elector.h"
#include "controller/store/etcd_store.h"
#include "upkeep/v1/controller_service.grpc.pb.h"
#include "upkeep/v1/fleet_service.grpc.pb.h"

namespace upkeep::controller {

inline constexpr char kLeaderMetadata[] = "upkeep-leader";

class ReplicaRegistry {
 public:
  // All must outlive the registry.
  ReplicaRegistry(EtcdStore* store, Elector* elector, std::string address,
                  absl::Duration every = absl::Seconds(1));
  ~ReplicaRegistry();
  void Start();
  void Stop();
  absl::StatusOr<upkeep::v1::ListControllersResponse> List();
  // The leader's address (cached from the last heartbeat; empty when unknown).
  std::string leader() const;

 private:
  void Loop();
  absl::Status Beat();

  EtcdStore* const store_;
  Elector* const elector_;
  const std::string address_;
  const absl::Duration every_;
  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::string leader_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

class ControllerServiceImpl final : public upkeep::v1::ControllerService::Service {
 public:
  using Lister = std::function<absl::StatusOr<upkeep::v1::ListControllersResponse>()>;
  explicit ControllerServiceImpl(Lister lister) : lister_(std::move(lister)) {}
  grpc::Status ListControllers(grpc::ServerContext* ctx,
                               const upkeep::v1::ListControllersRequest* req,
                               upkeep::v1::ListControllersResponse* resp) override;

 private:
  Lister lister_;
};

class FollowerFleetService final : public upkeep::v1::FleetService::Service {
 public:
  FollowerFleetService(EtcdStore* store, ReplicaRegistry* registry)
      : store_(store), registry_(registry) {}

  grpc::Status GetStack(grpc::ServerContext*, const upkeep::v1::GetStackRequest*,
                        upkeep::v1::Stack*) override;
  grpc::Status ListStacks(grpc::ServerContext*, const upkeep::v1::ListStacksRequest*,
                          upkeep::v1::ListStacksResponse*) override;
  grpc::Status DescribeStack(grpc::ServerContext*, const upkeep::v1::DescribeStackRequest*,
                             upkeep::v1::DescribeStackResponse*) override;
  grpc::Status ListEvents(grpc::ServerContext*, const upkeep::v1::ListEventsRequest*,
                          upkeep::v1::ListEventsResponse*) override;
  grpc::Status WatchEvents(grpc::ServerContext*, const upkeep::v1::WatchEventsRequest*,
                           grpc::ServerWriter<upkeep::v1::Event>*) override;
  grpc::Status ListActions(grpc::ServerContext*, const upkeep::v1::ListActionsRequest*,
                           upkeep::v1::ListActionsResponse*) override;
  // Notifiers as the leader last saved them (spec and delivery status).
  grpc::Status ListNotifiers(grpc::ServerContext*, const upkeep::v1::ListNotifiersRequest*,
                             upkeep::v1::ListNotifiersResponse*) override;
  // Writes, and what only the leader knows (connected hosts, plans).
  grpc::Status Apply(grpc::ServerContext*, const upkeep::v1::ApplyRequest*,
                     upkeep::v1::ApplyResponse*) override;
  grpc::Status DeleteStack(grpc::ServerContext*, const upkeep::v1::DeleteStackRequest*,
                           upkeep::v1::DeleteStackResponse*) override;
  grpc::Status ListHosts(grpc::ServerContext*, const upkeep::v1::ListHostsRequest*,
                         upkeep::v1::ListHostsResponse*) override;
  grpc::Status Plan(grpc::ServerContext*, const upkeep::v1::PlanRequest*,
                    upkeep::v1::PlanResponse*) override;
  grpc::Status Pause(grpc::ServerContext*, const upkeep::v1::PauseRequest*,
                     upkeep::v1::PauseResponse*) override;
  grpc::Status Resume(grpc::ServerContext*, const upkeep::v1::PauseRequest*,
                      upkeep::v1::PauseResponse*) override;
  grpc::Status RunAction(grpc::ServerContext*, const upkeep::v1::RunActionRequest*,
                         upkeep::v1::RunActionResponse*) override;
  grpc::Status DeleteNotifier(grpc::ServerContext*, const upkeep::v1::DeleteNotifierRequest*,
                              upkeep::v1::DeleteNotifierResponse*) override;
  grpc::Status TestNotifier(grpc::ServerContext*, const upkeep::v1::TestNotifierRequest*,
                            upkeep::v1::TestNotifierResponse*) override;

 private:
  grpc::Status NotLeader(grpc::ServerContext* ctx);
  EtcdStore* const store_;
  ReplicaRegistry* const registry_;
};

// UNAVAILABLE naming the leader, with its address in `upkeep-leader` (for agents and tools).
grpc::Status NotLeaderStatus(grpc::ServerContext* ctx, const std::string& leader);

}  // namespace upkeep::controller

#endif  // UPKEEP_CONTROLLER_HA_REPLICA_H_

// FleetServiceImpl: upkeep.v1.FleetService for people and tools (upkeepctl). Validates
// manifests (errors come back structured, nothing is stored), and otherwise asks the
// reconciler. Synchronous gRPC service; WatchEvents holds its handler thread for the stream.
// Thread-safe.
#ifndef UPKEEP_CONTROLLER_API_FLEET_SERVICE_H_
#define UPKEEP_CONTROLLER_API_FLEET_SERVICE_H_

#include "controller/notify/notify_service.h"
#include "controller/reconcile/reconciler.h"
#include "upkeep/v1/fleet_service.grpc.pb.h"

namespace upkeep::controller {

class FleetServiceImpl : public upkeep::v1::FleetService::Service {
 public:
  FleetServiceImpl(Reconciler* reconciler, Store* store) : reconciler_(reconciler), store_(store) {}

  grpc::Status Apply(grpc::ServerContext*, const upkeep::v1::ApplyRequest*,
                     upkeep::v1::ApplyResponse*) override;
  grpc::Status GetStack(grpc::ServerContext*, const upkeep::v1::GetStackRequest*,
                        upkeep::v1::Stack*) override;
  grpc::Status ListStacks(grpc::ServerContext*, const upkeep::v1::ListStacksRequest*,
                          upkeep::v1::ListStacksResponse*) override;
  grpc::Status DeleteStack(grpc::ServerContext*, const upkeep::v1::DeleteStackRequest*,
                           upkeep::v1::DeleteStackResponse*) override;
  grpc::Status ListHosts(grpc::ServerContext*, const upkeep::v1::ListHostsRequest*,
                         upkeep::v1::ListHostsResponse*) override;
  grpc::Status DescribeStack(grpc::ServerContext*, const upkeep::v1::DescribeStackRequest*,
                             upkeep::v1::DescribeStackResponse*) override;
  grpc::Status Plan(grpc::ServerContext*, const upkeep::v1::PlanRequest*,
                    upkeep::v1::PlanResponse*) override;
  grpc::Status ListEvents(grpc::ServerContext*, const upkeep::v1::ListEventsRequest*,
                          upkeep::v1::ListEventsResponse*) override;
  grpc::Status WatchEvents(grpc::ServerContext*, const upkeep::v1::WatchEventsRequest*,
                           grpc::ServerWriter<upkeep::v1::Event>*) override;
  grpc::Status ListActions(grpc::ServerContext*, const upkeep::v1::ListActionsRequest*,
                           upkeep::v1::ListActionsResponse*) override;
  grpc::Status Pause(grpc::ServerContext*, const upkeep::v1::PauseRequest*,
                     upkeep::v1::PauseResponse*) override;
  grpc::Status Resume(grpc::ServerContext*, const upkeep::v1::PauseRequest*,
                      upkeep::v1::PauseResponse*) override;
  grpc::Status RunAction(grpc::ServerContext*, const upkeep::v1::RunActionRequest*,
                         upkeep::v1::RunActionResponse*) override;
  grpc::Status ListNotifiers(grpc::ServerContext*, const upkeep::v1::ListNotifiersRequest*,
                             upkeep::v1::ListNotifiersResponse*) override;
  grpc::Status DeleteNotifier(grpc::ServerContext*, const upkeep::v1::DeleteNotifierRequest*,
                              upkeep::v1::DeleteNotifierResponse*) override;
  grpc::Status TestNotifier(grpc::ServerContext*, const upkeep::v1::TestNotifierRequest*,
                            upkeep::v1::TestNotifierResponse*) override;

  // Where `kind: Notifier` manifests go; without it they are refused (FAILED_PRECONDITION).
  // Set before the server starts; must outlive it.
  void SetNotifiers(notify::NotifyService* notifiers) { notifiers_ = notifiers; }

 private:
  Reconciler* const reconciler_;
  Store* const store_;
  notify::NotifyService* notifiers_ = nullptr;
};

}  // namespace upkeep::controller

#endif  // UPKEEP_CONTROLLER_API_FLEET_SERVICE_H_

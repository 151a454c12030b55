#include "controller/ha/replica.h"

#include "absl/strings/str_cat.h"
#include "core/log.h"
#include "core/proto_time.h"

namespace upkeep::controller {
namespace {

namespace v1 = upkeep::v1;
namespace pb = etcdserverpb;

grpc::Status ToGrpc(const absl::Status& st) {
  if (st.ok()) return grpc::Status::OK;
  if (absl::IsNotFound(st))
    return grpc::Status(grpc::StatusCode::NOT_FOUND, std::string(st.message()));
  if (absl::IsUnavailable(st)) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, std::string(st.message()));
  }
  return grpc::Status(grpc::StatusCode::INTERNAL, std::string(st.message()));
}

}  // namespace

ReplicaRegistry::ReplicaRegistry(EtcdStore* store, Elector* elector, std::string address,
                                 absl::Duration every)
    : store_(store), elector_(elector), address_(std::move(address)), every_(every) {}

ReplicaRegistry::~ReplicaRegistry() { Stop(); }

void ReplicaRegistry::Start() {
  Beat().IgnoreError();
  thread_ = std::thread([this] { Loop(); });
}

void ReplicaRegistry::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

std::string ReplicaRegistry::leader() const {
  absl::MutexLock lock(&mu_);
  return leader_;
}

void ReplicaRegistry::Loop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stop_), every_)) return;
    }
    if (absl::Status st = Beat(); !st.ok()) {
      UPKEEP_LOG(warn, "replica_heartbeat_failed", {{"error", std::string(st.message())}});
    }
  }
}

absl::Status ReplicaRegistry::Beat() {
  auto leader = elector_->Leader();
  if (leader.ok()) {
    absl::MutexLock lock(&mu_);
    leader_ = *leader;
  }
  v1::ControllerReplica me;
  me.set_address(address_);
  me.set_revision(store_->SeenRevision());
  *me.mutable_heard_at() = ToProto(absl::Now());
  // Not fenced: every replica, leader or not, keeps its own heartbeat.
  pb::TxnRequest txn;
  pb::RequestOp* op = txn.add_success();
  op->mutable_request_put()->set_key(store_->prefix() + "controllers/" + address_);
  op->mutable_request_put()->set_value(me.SerializeAsString());
  op->mutable_request_put()->set_lease(elector_->lease());
  auto resp = store_->client()->Txn(txn);
  return resp.ok() ? absl::OkStatus() : resp.status();
}

absl::StatusOr<v1::ListControllersResponse> ReplicaRegistry::List() {
  pb::RangeRequest req;
  req.set_key(store_->prefix() + "controllers/");
  req.set_range_end(PrefixEnd(req.key()));
  auto resp = store_->client()->Range(req);
  if (!resp.ok()) return resp.status();
  auto leader = elector_->Leader();
  if (!leader.ok()) return leader.status();
  v1::ListControllersResponse out;
  out.set_leader(*leader);
  out.set_revision(resp->header().revision());
  out.set_store("etcd");
  for (const auto& kv : resp->kvs()) {
    v1::ControllerReplica r;
    if (!r.ParseFromString(kv.value())) continue;
    r.set_role(r.address() == *leader ? "leader" : "follower");
    r.set_lag(std::max<int64_t>(0, out.revision() - r.revision()));
    *out.add_replicas() = std::move(r);
  }
  return out;
}

grpc::Status ControllerServiceImpl::ListControllers(grpc::ServerContext*,
                                                    const v1::ListControllersRequest*,
                                                    v1::ListControllersResponse* resp) {
  auto list = lister_();
  if (!list.ok()) return ToGrpc(list.status());
  *resp = std::move(*list);
  return grpc::Status::OK;
}

grpc::Status NotLeaderStatus(grpc::ServerContext* ctx, const std::string& leader) {
  if (ctx != nullptr && !leader.empty()) ctx->AddTrailingMetadata(kLeaderMetadata, leader);
  return grpc::Status(
      grpc::StatusCode::UNAVAILABLE,
      leader.empty() ? "this controller is a follower and no leader is elected yet; retry"
                     : absl::StrCat("this controller is a follower; the leader is at ", leader));
}

grpc::Status FollowerFleetService::NotLeader(grpc::ServerContext* ctx) {
  return NotLeaderStatus(ctx, registry_->leader());
}

grpc::Status FollowerFleetService::GetStack(grpc::ServerContext*, const v1::GetStackRequest* req,
                                            v1::Stack* resp) {
  auto stacks = store_->ListStacks();
  if (!stacks.ok()) return ToGrpc(stacks.status());
  for (auto& s : *stacks) {
    if (s.metadata().name() == req->name()) {
      *resp = std::move(s);
      return grpc::Status::OK;
    }
  }
  return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("no stack ", req->name()));
}

grpc::Status FollowerFleetService::ListStacks(grpc::ServerContext*, const v1::ListStacksRequest*,
                                              v1::ListStacksResponse* resp) {
  auto stacks = store_->ListStacks();
  if (!stacks.ok()) return ToGrpc(stacks.status());
  for (auto& s : *stacks) *resp->add_stacks() = std::move(s);
  return grpc::Status::OK;
}

grpc::Status FollowerFleetService::DescribeStack(grpc::ServerContext* ctx,
                                                 const v1::DescribeStackRequest* req,
                                                 v1::DescribeStackResponse* resp) {
  v1::GetStackRequest get;
  get.set_name(req->name());
  if (grpc::Status st = GetStack(ctx, &get, resp->mutable_stack()); !st.ok()) return st;
  const int max_events = req->max_events() > 0 ? std::min(req->max_events(), 1000) : 20;
  const int max_actions = req->max_actions() > 0 ? std::min(req->max_actions(), 1000) : 20;
  if (auto events = store_->TailEvents(req->name(), max_events); events.ok()) {
    for (auto& e : *events) *resp->add_events() = std::move(e);
  }
  if (auto actions = store_->ListActions(req->name(), "", max_actions); actions.ok()) {
    for (auto& a : *actions) *resp->add_actions() = std::move(a);
  }
  return grpc::Status::OK;
}

grpc::Status FollowerFleetService::ListEvents(grpc::ServerContext*,
                                              const v1::ListEventsRequest* req,
                                              v1::ListEventsResponse* resp) {
  const int limit = req->limit() > 0 ? std::min(req->limit(), 100000) : 1000;
  auto events = store_->ListEvents(req->stack(), req->after_seq(), limit);
  if (!events.ok()) return ToGrpc(events.status());
  for (auto& e : *events) *resp->add_events() = std::move(e);
  return grpc::Status::OK;
}

grpc::Status FollowerFleetService::WatchEvents(grpc::ServerContext* ctx,
                                               const v1::WatchEventsRequest* req,
                                               grpc::ServerWriter<v1::Event>* writer) {
  bool broken = false;
  absl::Status st = store_->WatchEvents(
      req->stack(), req->after_seq(),
      [&](const v1::Event& e) {
        if (!broken && !writer->Write(e)) broken = true;
      },
      [&] { return broken || ctx->IsCancelled(); });
  return ToGrpc(st);
}

grpc::Status FollowerFleetService::ListActions(grpc::ServerContext*,
                                               const v1::ListActionsRequest* req,
                                               v1::ListActionsResponse* resp) {
  const int limit = req->limit() > 0 ? std::min(req->limit(), 100000) : 100;
  auto actions = store_->ListActions(req->stack(), "", limit);
  if (!actions.ok()) return ToGrpc(actions.status());
  for (auto& a : *actions) *resp->add_actions() = std::move(a);
  return grpc::Status::OK;
}

grpc::Status FollowerFleetService::ListNotifiers(grpc::ServerContext*,
                                                 const v1::ListNotifiersRequest*,
                                                 v1::ListNotifiersResponse* resp) {
  auto notifiers = store_->ListNotifiers();
  if (!notifiers.ok()) return ToGrpc(notifiers.status());
  for (auto& n : *notifiers) *resp->add_notifiers() = std::move(n);
  return grpc::Status::OK;
}

grpc::Status FollowerFleetService::DeleteNotifier(grpc::ServerContext* ctx,
                                                  const v1::DeleteNotifierRequest*,
                                                  v1::DeleteNotifierResponse*) {
  return NotLeader(ctx);
}
grpc::Status FollowerFleetService::TestNotifier(grpc::ServerContext* ctx,
                                                const v1::TestNotifierRequest*,
                                                v1::TestNotifierResponse*) {
  return NotLeader(ctx);
}

grpc::Status FollowerFleetService::Apply(grpc::ServerContext* ctx, const v1::ApplyRequest*,
                                         v1::ApplyResponse*) {
  return NotLeader(ctx);
}
grpc::Status FollowerFleetService::DeleteStack(grpc::ServerContext* ctx,
                                               const v1::DeleteStackRequest*,
                                               v1::DeleteStackResponse*) {
  return NotLeader(ctx);
}
grpc::Status FollowerFleetService::ListHosts(grpc::ServerContext* ctx, const v1::ListHostsRequest*,
                                             v1::ListHostsResponse*) {
  return NotLeader(ctx);
}
grpc::Status FollowerFleetService::Plan(grpc::ServerContext* ctx, const v1::PlanRequest*,
                                        v1::PlanResponse*) {
  return NotLeader(ctx);
}
grpc::Status FollowerFleetService::Pause(grpc::ServerContext* ctx, const v1::PauseRequest*,
                                         v1::PauseResponse*) {
  return NotLeader(ctx);
}
grpc::Status FollowerFleetService::Resume(grpc::ServerContext* ctx, const v1::PauseRequest*,
                                          v1::PauseResponse*) {
  return NotLeader(ctx);
}
grpc::Status FollowerFleetService::RunAction(grpc::ServerContext* ctx, const v1::RunActionRequest*,
                                             v1::RunActionResponse*) {
  return NotLeader(ctx);
}

}  // namespace upkeep::controller

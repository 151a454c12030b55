#include "controller/api/fleet_service.h"

#include <algorithm>
#include <deque>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "controller/auth/authenticator.h"
#include "core/manifest/loader.h"
#include "core/proto_time.h"

namespace upkeep::controller {
namespace {

namespace v1 = upkeep::v1;

grpc::Status ToGrpc(const absl::Status& st) {
  if (st.ok()) return grpc::Status::OK;
  grpc::StatusCode code = grpc::StatusCode::INTERNAL;
  switch (st.code()) {
    case absl::StatusCode::kNotFound:
      code = grpc::StatusCode::NOT_FOUND;
      break;
    case absl::StatusCode::kInvalidArgument:
      code = grpc::StatusCode::INVALID_ARGUMENT;
      break;
    case absl::StatusCode::kFailedPrecondition:
      code = grpc::StatusCode::FAILED_PRECONDITION;
      break;
    case absl::StatusCode::kUnavailable:
      code = grpc::StatusCode::UNAVAILABLE;
      break;
    default:
      break;
  }
  return grpc::Status(code, std::string(st.message()));
}

constexpr size_t kMaxManifestBytes = 4 << 20;

// The caller's identity for the audit log: who the auth layer says it is ("user:ann",
// "token:ci"), or on a plaintext loopback port the peer address.
std::string Caller(const grpc::ServerContext* ctx) {
  if (ctx == nullptr) return "";
  const controller_auth::Principal p = controller_auth::PrincipalOf(*ctx);
  if (p.kind != controller_auth::Principal::Kind::kAnonymous) return p.RequestedBy();
  return ctx->peer();
}

}  // namespace

grpc::Status FleetServiceImpl::Apply(grpc::ServerContext* ctx, const v1::ApplyRequest* req,
                                     v1::ApplyResponse* resp) {
  if (req->manifests_size() == 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no manifests");
  }
  std::vector<v1::Stack> stacks;
  std::vector<v1::Notifier> notifiers;
  std::set<std::string> names;
  size_t total = 0;
  for (const auto& m : req->manifests()) {
    total += m.content().size();
    if (total > kMaxManifestBytes) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "manifests larger than 4 MiB");
    }
    const manifest::LoadResult r = manifest::LoadString(m.content(), m.filename());
    for (const auto& e : r.errors) {
      v1::ValidationError* ve = resp->add_errors();
      ve->set_file(e.file);
      ve->set_line(e.line);
      ve->set_field(e.field);
      ve->set_message(e.message);
    }
    for (const auto& s : r.stacks) {
      if (!names.insert(s.metadata().name()).second) {
        v1::ValidationError* ve = resp->add_errors();
        ve->set_file(m.filename());
        ve->set_field("metadata.name");
        ve->set_message(absl::StrCat("stack ", s.metadata().name(), " appears twice"));
      }
      stacks.push_back(s);
    }
    for (const auto& n : r.notifiers) notifiers.push_back(n);
  }
  if (!notifiers.empty() && notifiers_ == nullptr) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "this controller has no notifier service");
  }
  if (resp->errors_size() > 0) {
    const auto& e = resp->errors(0);
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat(resp->errors_size(), " validation error(s); first: ", e.file(),
                                     ":", e.line(), ": ", e.field(), ": ", e.message()),
                        resp->SerializeAsString());
  }
  if (!stacks.empty()) {
    auto applied = reconciler_->Apply(stacks, req->dry_run(), Caller(ctx));
    if (!applied.ok()) return ToGrpc(applied.status());
    *resp = *applied;
  }
  if (!notifiers.empty()) {
    auto applied = notifiers_->Apply(notifiers, req->dry_run());
    if (!applied.ok()) return ToGrpc(applied.status());
    for (auto& a : *applied) *resp->add_notifiers() = std::move(a);
  }
  return grpc::Status::OK;
}

grpc::Status FleetServiceImpl::GetStack(grpc::ServerContext*, const v1::GetStackRequest* req,
                                        v1::Stack* resp) {
  auto s = reconciler_->GetStack(req->name());
  if (!s.ok()) return ToGrpc(s.status());
  *resp = *s;
  return grpc::Status::OK;
}

grpc::Status FleetServiceImpl::ListStacks(grpc::ServerContext*, const v1::ListStacksRequest*,
                                          v1::ListStacksResponse* resp) {
  for (auto& s : reconciler_->Stacks()) *resp->add_stacks() = std::move(s);
  return grpc::Status::OK;
}

grpc::Status FleetServiceImpl::DeleteStack(grpc::ServerContext* ctx,
                                           const v1::DeleteStackRequest* req,
                                           v1::DeleteStackResponse*) {
  return ToGrpc(reconciler_->Delete(req->name(), Caller(ctx)));
}

grpc::Status FleetServiceImpl::ListHosts(grpc::ServerContext*, const v1::ListHostsRequest*,
                                         v1::ListHostsResponse* resp) {
  for (auto& h : reconciler_->Hosts()) *resp->add_hosts() = std::move(h);
  return grpc::Status::OK;
}

grpc::Status FleetServiceImpl::DescribeStack(grpc::ServerContext*,
                                             const v1::DescribeStackRequest* req,
                                             v1::DescribeStackResponse* resp) {
  auto s = reconciler_->GetStack(req->name());
  if (!s.ok()) return ToGrpc(s.status());
  *resp->mutable_stack() = *s;
  const int max_events = req->max_events() > 0 ? std::min(req->max_events(), 1000) : 20;
  const int max_actions = req->max_actions() > 0 ? std::min(req->max_actions(), 1000) : 20;
  auto events = store_->TailEvents(req->name(), max_events);
  if (events.ok()) {
    for (auto& e : *events) *resp->add_events() = std::move(e);
  }
  auto actions = store_->ListActions(req->name(), "", max_actions);
  if (actions.ok()) {
    for (auto& a : *actions) *resp->add_actions() = std::move(a);
  }
  return grpc::Status::OK;
}

grpc::Status FleetServiceImpl::Plan(grpc::ServerContext*, const v1::PlanRequest* req,
                                    v1::PlanResponse* resp) {
  auto d = reconciler_->Plan(req->name(), req->host());
  if (!d.ok()) return ToGrpc(d.status());
  for (auto& x : *d) *resp->add_diagnoses() = std::move(x);
  return grpc::Status::OK;
}

grpc::Status FleetServiceImpl::ListEvents(grpc::ServerContext*, const v1::ListEventsRequest* req,
                                          v1::ListEventsResponse* resp) {
  const int limit = req->limit() > 0 ? std::min(req->limit(), 100000) : 1000;
  auto events = store_->ListEvents(req->stack(), req->after_seq(), limit);
  if (!events.ok()) return ToGrpc(events.status());
  for (auto& e : *events) *resp->add_events() = std::move(e);
  return grpc::Status::OK;
}

grpc::Status FleetServiceImpl::WatchEvents(grpc::ServerContext* ctx,
                                           const v1::WatchEventsRequest* req,
                                           grpc::ServerWriter<v1::Event>* writer) {
  // Live events queue up from the moment we subscribe; stored ones are replayed first and the
  // overlap is dropped by seq. The queue is shared with the subscription, and the subscription
  // is destroyed (waiting for a delivery in progress) before this handler returns.
  struct Live {
    absl::Mutex mu;
    std::deque<v1::Event> events ABSL_GUARDED_BY(mu);
    int64_t dropped ABSL_GUARDED_BY(mu) = 0;
  };
  auto live = std::make_shared<Live>();
  const std::string stack = req->stack();
  std::unique_ptr<EventBus::Subscription> sub =
      reconciler_->events()->Subscribe(stack, [live](const v1::Event& e) {
        absl::MutexLock lock(&live->mu);
        if (live->events.size() < 10000) {
          live->events.push_back(e);
        } else {
          ++live->dropped;
        }
      });
  int64_t seq = req->after_seq();
  auto stored = store_->ListEvents(stack, seq, 100000);
  bool ok = true;
  if (stored.ok()) {
    for (const auto& e : *stored) {
      if (!writer->Write(e)) {
        ok = false;
        break;
      }
      seq = e.seq();
    }
  }
  while (ok && !ctx->IsCancelled()) {
    std::deque<v1::Event> batch;
    {
      absl::MutexLock lock(&live->mu);
      live->mu.AwaitWithTimeout(
          absl::Condition(
              +[](std::deque<v1::Event>* q) { return !q->empty(); }, &live->events),
          absl::Milliseconds(200));  // bounded, to notice cancellation
      batch.swap(live->events);
    }
    for (const auto& e : batch) {
      if (e.seq() != 0 && e.seq() <= seq) continue;
      if (!writer->Write(e)) {
        ok = false;
        break;
      }
      if (e.seq() != 0) seq = e.seq();
    }
  }
  return grpc::Status::OK;
}

grpc::Status FleetServiceImpl::ListActions(grpc::ServerContext*, const v1::ListActionsRequest* req,
                                           v1::ListActionsResponse* resp) {
  const int limit = req->limit() > 0 ? std::min(req->limit(), 100000) : 50;
  auto actions = store_->ListActions(req->stack(), "", limit);
  if (!actions.ok()) return ToGrpc(actions.status());
  for (auto& a : *actions) *resp->add_actions() = std::move(a);
  return grpc::Status::OK;
}

grpc::Status FleetServiceImpl::Pause(grpc::ServerContext* ctx, const v1::PauseRequest* req,
                                     v1::PauseResponse*) {
  return ToGrpc(reconciler_->SetPaused(req->stack(), req->host(), true, Caller(ctx),
                                       FromProto(req->duration())));
}

grpc::Status FleetServiceImpl::Resume(grpc::ServerContext* ctx, const v1::PauseRequest* req,
                                      v1::PauseResponse*) {
  return ToGrpc(reconciler_->SetPaused(req->stack(), req->host(), false, Caller(ctx)));
}

grpc::Status FleetServiceImpl::RunAction(grpc::ServerContext* ctx, const v1::RunActionRequest* req,
                                         v1::RunActionResponse* resp) {
  // Waits for the result at most 30 s, and never past the caller's deadline (a caller that
  // gave up no longer holds a server thread).
  absl::Duration wait = absl::Seconds(30);
  const absl::Time deadline = absl::FromChrono(ctx->deadline());
  if (deadline < absl::Now() + wait) wait = std::max(absl::ZeroDuration(), deadline - absl::Now());
  auto r = reconciler_->RunAction(*req, wait, Caller(ctx));
  if (!r.ok()) return ToGrpc(r.status());
  *resp->mutable_record() = *r;
  return grpc::Status::OK;
}

grpc::Status FleetServiceImpl::ListNotifiers(grpc::ServerContext*, const v1::ListNotifiersRequest*,
                                             v1::ListNotifiersResponse* resp) {
  if (notifiers_ == nullptr) return grpc::Status::OK;
  for (auto& n : notifiers_->List()) *resp->add_notifiers() = std::move(n);
  return grpc::Status::OK;
}

grpc::Status FleetServiceImpl::DeleteNotifier(grpc::ServerContext*,
                                              const v1::DeleteNotifierRequest* req,
                                              v1::DeleteNotifierResponse*) {
  if (notifiers_ == nullptr) return grpc::Status(grpc::StatusCode::NOT_FOUND, "no notifiers");
  return ToGrpc(notifiers_->Delete(req->name()));
}

grpc::Status FleetServiceImpl::TestNotifier(grpc::ServerContext*,
                                            const v1::TestNotifierRequest* req,
                                            v1::TestNotifierResponse* resp) {
  if (notifiers_ == nullptr) return grpc::Status(grpc::StatusCode::NOT_FOUND, "no notifiers");
  auto r = notifiers_->Test(req->name());
  if (!r.ok()) return ToGrpc(r.status());
  *resp = *r;
  return grpc::Status::OK;
}

}  // namespace upkeep::controller

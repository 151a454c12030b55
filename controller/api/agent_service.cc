#include "controller/api/agent_service.h"

#include <list>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "core/log.h"

namespace upkeep::controller {
namespace {

namespace v1 = upkeep::v1;

bool ValidHostId(const std::string& id) {
  if (id.empty() || id.size() > 253) return false;
  for (char c : id) {
    if (!(absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_')) return false;
  }
  return true;
}

}  // namespace

class Stream;

// What the hub and the sweeper may touch of a stream: guarded by its own mutex, and outliving
// the reactor (the reactor clears `reactor` in OnDone before deleting itself).
struct StreamHandle {
  absl::Mutex mu;
  Stream* reactor ABSL_GUARDED_BY(mu) = nullptr;
  // A list: an idle stream's queue allocates nothing (a deque allocates its first block).
  std::list<v1::ControllerMessage> outbound ABSL_GUARDED_BY(mu);
  bool writing ABSL_GUARDED_BY(mu) = false;
  bool finished ABSL_GUARDED_BY(mu) = false;
  bool replaced ABSL_GUARDED_BY(mu) = false;
  std::string host_id ABSL_GUARDED_BY(mu);
  absl::Time opened_at = absl::Now();
};

class AgentServiceImpl::Impl {
 public:
  Impl(AgentListener* listener, AgentServiceOptions options)
      : listener_(listener), options_(options) {
    sweeper_ = std::thread([this] { Sweep(); });
  }
  ~Impl() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    sweeper_.join();
  }

  void Sweep();
  bool Send(const std::string& host, v1::ControllerMessage message);
  void Register(const std::shared_ptr<StreamHandle>& h) {
    absl::MutexLock lock(&mu_);
    all_.insert(h);
  }
  // Makes `h` the stream of `host`; returns the stream it replaces (or null).
  std::shared_ptr<StreamHandle> Claim(const std::string& host,
                                      const std::shared_ptr<StreamHandle>& h) {
    absl::MutexLock lock(&mu_);
    auto& slot = by_host_[host];
    std::shared_ptr<StreamHandle> old = slot;
    slot = h;
    return old;
  }
  // Removes `h`; true when it was still the host's current stream.
  bool Release(const std::shared_ptr<StreamHandle>& h, const std::string& host) {
    absl::MutexLock lock(&mu_);
    all_.erase(h);
    auto it = by_host_.find(host);
    if (it != by_host_.end() && it->second == h) {
      by_host_.erase(it);
      return true;
    }
    return false;
  }
  std::vector<std::string> Hosts() const {
    absl::MutexLock lock(&mu_);
    std::vector<std::string> out;
    for (const auto& [h, s] : by_host_) out.push_back(h);
    return out;
  }
  std::vector<std::shared_ptr<StreamHandle>> All() const {
    absl::MutexLock lock(&mu_);
    return {all_.begin(), all_.end()};
  }

  AgentListener* const listener_;
  const AgentServiceOptions options_;

 private:
  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, std::shared_ptr<StreamHandle>> by_host_ ABSL_GUARDED_BY(mu_);
  std::set<std::shared_ptr<StreamHandle>> all_ ABSL_GUARDED_BY(mu_);
  std::thread sweeper_;
};

// One reactor per agent stream. At most one read and one write in flight; outbound messages
// wait in the handle's queue; Finish exactly once (under the handle's mutex); deletes itself
// in OnDone.
class Stream : public grpc::ServerBidiReactor<v1::AgentMessage, v1::ControllerMessage> {
 public:
  Stream(AgentServiceImpl::Impl* svc, grpc::CallbackServerContext* context)
      : svc_(svc), context_(context), handle_(std::make_shared<StreamHandle>()) {
    {
      absl::MutexLock lock(&handle_->mu);
      handle_->reactor = this;
    }
    svc_->Register(handle_);
    StartRead(&in_);
  }

  // Called with handle->mu held.
  void FinishLocked(StreamHandle* h, grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(h->mu) {
    if (h->finished) return;
    h->finished = true;
    h->outbound.clear();
    Finish(status);
  }

  // Called with handle->mu held.
  void WriteLocked(StreamHandle* h) ABSL_EXCLUSIVE_LOCKS_REQUIRED(h->mu) {
    if (h->writing || h->finished || h->outbound.empty()) return;
    h->writing = true;
    StartWrite(&h->outbound.front());
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      absl::MutexLock lock(&handle_->mu);
      FinishLocked(handle_.get(), grpc::Status::OK);
      return;
    }
    grpc::Status error = Handle(in_);
    if (!error.ok()) {
      UPKEEP_LOG(warn, "agent_stream_rejected",
                 {{"host", host_}, {"error", error.error_message()}});
      absl::MutexLock lock(&handle_->mu);
      FinishLocked(handle_.get(), error);
      return;
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&handle_->mu);
    handle_->writing = false;
    if (!ok) {
      FinishLocked(handle_.get(), grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed"));
      return;
    }
    if (!handle_->outbound.empty()) handle_->outbound.pop_front();
    WriteLocked(handle_.get());
  }

  void OnDone() override {
    bool replaced;
    {
      absl::MutexLock lock(&handle_->mu);
      handle_->reactor = nullptr;
      handle_->finished = true;
      replaced = handle_->replaced;
    }
    const bool current = svc_->Release(handle_, host_);
    if (hello_done_ && current && !replaced) svc_->listener_->OnDisconnected(host_);
    if (hello_done_) UPKEEP_LOG(info, "agent_stream_closed", {{"host", host_}});
    delete this;
  }

 private:
  // `msg` is the reactor's read buffer: what is handed on is moved out of it (the next read
  // overwrites it anyway).
  grpc::Status Handle(v1::AgentMessage& msg) {
    if (!hello_done_) {
      if (!msg.has_hello()) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "the first message on AgentService.Connect must be a hello");
      }
      if (!ValidHostId(msg.hello().host_id())) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "hello.host_id must be 1-253 characters of [A-Za-z0-9._-]");
      }
      if (svc_->options_.authorize_hello) {
        // Before Claim: a refused hello never replaces the host's real stream.
        grpc::Status allowed = svc_->options_.authorize_hello(context_, msg.hello().host_id());
        if (!allowed.ok()) return allowed;
      }
      host_ = msg.hello().host_id();
      hello_done_ = true;
      {
        absl::MutexLock lock(&handle_->mu);
        handle_->host_id = host_;
      }
      std::shared_ptr<StreamHandle> old = svc_->Claim(host_, handle_);
      if (old != nullptr && old != handle_) {
        absl::MutexLock lock(&old->mu);
        old->replaced = true;
        if (old->reactor != nullptr) {
          old->reactor->FinishLocked(
              old.get(), grpc::Status(grpc::StatusCode::ABORTED, "replaced by a newer stream"));
        }
      }
      UPKEEP_LOG(info, "agent_connected", {{"host", host_}, {"version", msg.hello().version()}});
      svc_->listener_->OnConnected(host_, msg.hello());
      return grpc::Status::OK;
    }
    switch (msg.msg_case()) {
      case v1::AgentMessage::kHello:
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "hello sent twice");
      case v1::AgentMessage::kObservation: {
        for (auto& s : msg.observation().stacks()) {
          if (s.stack().empty()) {
            return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                "observation for a stack without a name");
          }
          if (s.host().host_id() != host_) {
            return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                "observation names another host than the stream's hello");
          }
        }
        svc_->listener_->OnObservation(host_, std::move(*msg.mutable_observation()));
        return grpc::Status::OK;
      }
      case v1::AgentMessage::kActionResult:
        if (msg.action_result().id().empty()) {
          return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "action result without an id");
        }
        svc_->listener_->OnActionResult(host_, std::move(*msg.mutable_action_result()));
        return grpc::Status::OK;
      default:
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "empty agent message");
    }
  }

  AgentServiceImpl::Impl* const svc_;
  grpc::CallbackServerContext* const context_;
  std::shared_ptr<StreamHandle> handle_;
  v1::AgentMessage in_;
  std::string host_;
  bool hello_done_ = false;
};

bool AgentServiceImpl::Impl::Send(const std::string& host, v1::ControllerMessage message) {
  std::shared_ptr<StreamHandle> h;
  {
    absl::MutexLock lock(&mu_);
    auto it = by_host_.find(host);
    if (it == by_host_.end()) return false;
    h = it->second;
  }
  absl::MutexLock lock(&h->mu);
  if (h->finished || h->reactor == nullptr) return false;
  if (h->outbound.size() >= options_.max_outbound_queue) {
    h->reactor->FinishLocked(h.get(), grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                                   "agent does not read its stream"));
    return false;
  }
  h->outbound.push_back(std::move(message));
  h->reactor->WriteLocked(h.get());
  return true;
}

void AgentServiceImpl::Impl::Sweep() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stop_), absl::Seconds(1));
      if (stop_) return;
    }
    const absl::Time cutoff = absl::Now() - absl::Milliseconds(options_.hello_timeout_ms);
    for (const auto& h : All()) {
      absl::MutexLock lock(&h->mu);
      if (h->host_id.empty() && h->opened_at < cutoff && h->reactor != nullptr) {
        h->reactor->FinishLocked(
            h.get(), grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "no hello in time"));
      }
    }
  }
}

AgentServiceImpl::AgentServiceImpl(AgentListener* listener, AgentServiceOptions options)
    : impl_(std::make_unique<Impl>(listener, options)) {}

AgentServiceImpl::~AgentServiceImpl() = default;

grpc::ServerBidiReactor<v1::AgentMessage, v1::ControllerMessage>* AgentServiceImpl::Connect(
    grpc::CallbackServerContext* context) {
  return new Stream(impl_.get(), context);
}

bool AgentServiceImpl::Send(const std::string& host_id, v1::ControllerMessage message) {
  return impl_->Send(host_id, std::move(message));
}

std::vector<std::string> AgentServiceImpl::ConnectedHosts() const { return impl_->Hosts(); }

void AgentServiceImpl::Shutdown() {
  for (const auto& h : impl_->All()) {
    absl::MutexLock lock(&h->mu);
    if (h->reactor != nullptr) {
      h->reactor->FinishLocked(
          h.get(), grpc::Status(grpc::StatusCode::UNAVAILABLE, "controller shutting down"));
    }
  }
}

}  // namespace upkeep::controller

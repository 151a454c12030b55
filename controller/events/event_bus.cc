#include "controller/events/event_bus.h"

#include <vector>

#include "core/log.h"
#include "core/proto_time.h"

namespace upkeep::controller {

namespace v1 = upkeep::v1;

EventBus::Subscription::~Subscription() {
  bus_->Unsubscribe(id_);
  absl::MutexLock lock(&state_->mu);  // waits for a delivery in progress
  state_->active = false;
}

void EventBus::Publish(v1::Event event) {
  if (!event.has_at()) *event.mutable_at() = ToProto(clock_->Now());
  if (absl::Status st = store_->AppendEvent(&event); !st.ok()) {
    UPKEEP_LOG(error, "store_failed", {{"what", "event"}, {"error", std::string(st.message())}});
    if (metrics_ != nullptr) metrics_->Inc("upkeep_store_errors_total", {{"what", "event"}});
  }
  UPKEEP_LOG(info, "event",
             {{"type", event.type()},
              {"reason", event.reason()},
              {"stack", event.stack()},
              {"host", event.host()},
              {"message", event.message()}});
  std::vector<std::shared_ptr<Subscription::State>> subs;
  {
    absl::MutexLock lock(&mu_);
    subs.reserve(subs_.size());
    for (const auto& [id, s] : subs_) {
      if (s->stack.empty() || event.stack().empty() || s->stack == event.stack()) {
        subs.push_back(s);
      }
    }
  }
  for (const auto& s : subs) {
    absl::MutexLock lock(&s->mu);
    if (s->active) s->callback(event);
  }
}

void EventBus::Publish(const std::string& type, const std::string& reason, const std::string& stack,
                       const std::string& host, const std::string& target,
                       const std::string& message, const std::string& action_id,
                       const std::string& requested_by) {
  v1::Event e;
  e.set_type(type);
  e.set_reason(reason);
  e.set_stack(stack);
  e.set_host(host);
  e.set_target(target);
  e.set_message(message);
  e.set_action_id(action_id);
  e.set_requested_by(requested_by);
  Publish(std::move(e));
}

std::unique_ptr<EventBus::Subscription> EventBus::Subscribe(const std::string& stack,
                                                            Callback callback) {
  auto state = std::make_shared<Subscription::State>();
  state->stack = stack;
  state->callback = std::move(callback);
  absl::MutexLock lock(&mu_);
  const int id = ++next_id_;
  subs_[id] = state;
  return std::unique_ptr<Subscription>(new Subscription(this, id, std::move(state)));
}

size_t EventBus::Subscribers() const {
  absl::MutexLock lock(&mu_);
  return subs_.size();
}

void EventBus::Unsubscribe(int id) {
  absl::MutexLock lock(&mu_);
  subs_.erase(id);
}

}  // namespace upkeep::controller

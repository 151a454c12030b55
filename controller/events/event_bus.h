// EventBus: every event the controller emits goes through here — appended to the store
// (which assigns its seq), logged as one structured line, then delivered to subscribers.
//
// Subscriptions are owned by the subscriber: Subscribe() returns a handle whose destruction
// unsubscribes and WAITS for a delivery in progress to that subscriber to finish, so a callback
// never runs after its handle is gone (the captured state may then be freed). Deliveries run
// on the publishing thread (a reconciler worker) and must not block: copy the event into a
// queue of your own and return.
// Thread-safe. Publish() may be called from any number of threads; a subscriber's callback is
// never run concurrently with itself.
#ifndef UPKEEP_CONTROLLER_EVENTS_EVENT_BUS_H_
#define UPKEEP_CONTROLLER_EVENTS_EVENT_BUS_H_

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "controller/metrics/metrics.h"
#include "controller/store/store.h"
#include "core/clock.h"
#include "upkeep/v1/event.pb.h"

namespace upkeep::controller {

class EventBus {
 public:
  using Callback = std::function<void(const upkeep::v1::Event&)>;

  class Subscription {
   public:
    ~Subscription();
    Subscription(const Subscription&) = delete;
    Subscription& operator=(const Subscription&) = delete;

   private:
    friend class EventBus;
    struct State {
      absl::Mutex mu;  // held while delivering: unsubscribe waits for it
      bool active ABSL_GUARDED_BY(mu) = true;
      std::string stack;  // empty: every event
      Callback callback;
    };
    Subscription(EventBus* bus, int id, std::shared_ptr<State> state)
        : bus_(bus), id_(id), state_(std::move(state)) {}
    EventBus* const bus_;
    const int id_;
    std::shared_ptr<State> state_;
  };

  // `store`, `clock` and `metrics` (may be null) must outlive the bus, and the bus every
  // subscription.
  EventBus(Store* store, Clock* clock, Metrics* metrics)
      : store_(store), clock_(clock), metrics_(metrics) {}

  // Stores, logs and delivers `event` (its `at` is set to now when empty). A store failure is
  // logged and counted; the event is still delivered (with seq 0).
  void Publish(upkeep::v1::Event event);
  void Publish(const std::string& type, const std::string& reason, const std::string& stack,
               const std::string& host, const std::string& target, const std::string& message,
               const std::string& action_id = "", const std::string& requested_by = "");

  // Events of `stack` (and fleet-wide events, whose stack is empty); every event when `stack`
  // is empty.
  std::unique_ptr<Subscription> Subscribe(const std::string& stack, Callback callback);
  size_t Subscribers() const;

 private:
  void Unsubscribe(int id);

  Store* const store_;
  Clock* const clock_;
  Metrics* const metrics_;
  mutable absl::Mutex mu_;
  std::map<int, std::shared_ptr<Subscription::State>> subs_ ABSL_GUARDED_BY(mu_);
  int next_id_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace upkeep::controller

#endif  // UPKEEP_CONTROLLER_EVENTS_EVENT_BUS_H_

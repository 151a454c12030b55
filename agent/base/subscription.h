// Subscription: a live registration for change callbacks (Runtime::Watch, ProxyDriver::Watch).
// Destroying the handle ends it: when the destructor returns, the callback is not running and
// will never run again, so the callback may capture whatever dies with the handle. Never destroy
// a handle from inside its own callback (it would wait for itself).
#ifndef UPKEEP_AGENT_BASE_SUBSCRIPTION_H_
#define UPKEEP_AGENT_BASE_SUBSCRIPTION_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace upkeep::agent {

class Subscription {
 public:
  virtual ~Subscription() = default;
};

// The subscribers of one event source, each with its own filter data `F` (e.g. the services it
// watches) and callback. The source's thread calls Notify; subscribers come and go from any
// thread. A subscriber's callback runs under that subscriber's own mutex only, so one slow
// subscriber never blocks Add/remove of another, and a removed subscriber is never called
// again. Thread-safe; handles may outlive the Subscribers object.
template <typename F, typename... Args>
class Subscribers {
 public:
  using Callback = std::function<void(Args...)>;

  std::unique_ptr<Subscription> Add(F filter, Callback callback) {
    auto entry = std::make_shared<Entry>();
    entry->filter = std::move(filter);
    entry->callback = std::move(callback);
    uint64_t id;
    {
      absl::MutexLock lock(&state_->mu);
      id = ++state_->next_id;
      state_->entries[id] = entry;
    }
    return std::make_unique<Handle>(state_, id, std::move(entry));
  }

  // For each subscriber, `deliver(filter, call)` decides what to tell it and calls
  // `call(args...)` for each thing (possibly never).
  void Notify(const std::function<void(const F& filter, const Callback& call)>& deliver) {
    std::vector<std::shared_ptr<Entry>> entries;
    {
      absl::MutexLock lock(&state_->mu);
      for (const auto& [id, e] : state_->entries) entries.push_back(e);
    }
    for (const auto& e : entries) {
      absl::MutexLock lock(&e->call_mu);
      if (!e->active) continue;
      deliver(e->filter, e->callback);
    }
  }

  size_t size() const {
    absl::MutexLock lock(&state_->mu);
    return state_->entries.size();
  }

 private:
  struct Entry {
    F filter;
    Callback callback;
    absl::Mutex call_mu;
    bool active ABSL_GUARDED_BY(call_mu) = true;
  };
  struct State {
    mutable absl::Mutex mu;
    uint64_t next_id ABSL_GUARDED_BY(mu) = 0;
    std::map<uint64_t, std::shared_ptr<Entry>> entries ABSL_GUARDED_BY(mu);
  };
  class Handle : public Subscription {
   public:
    Handle(std::shared_ptr<State> state, uint64_t id, std::shared_ptr<Entry> entry)
        : state_(std::move(state)), id_(id), entry_(std::move(entry)) {}
    ~Handle() override {
      {
        absl::MutexLock lock(&state_->mu);
        state_->entries.erase(id_);
      }
      absl::MutexLock lock(&entry_->call_mu);  // waits for a call in progress
      entry_->active = false;
    }

   private:
    std::shared_ptr<State> state_;
    uint64_t id_;
    std::shared_ptr<Entry> entry_;
  };

  std::shared_ptr<State> state_ = std::make_shared<State>();
};

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_BASE_SUBSCRIPTION_H_

// Test doubles for the controller's seams, in one place.
//   FaultyStore: a real store (SQLite) with faults injected on demand — PutAction fails while
//     `fail_put_action` is set, as a full disk or a lost etcd quorum would.
//   RecordingHub: an AgentHub that records what it is given; `block` makes Send wait until
//     released (to hold a thread inside the moment of sending).
#ifndef UPKEEP_TESTS_SUPPORT_CONTROLLER_DOUBLES_H_
#define UPKEEP_TESTS_SUPPORT_CONTROLLER_DOUBLES_H_

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "controller/api/agent_hub.h"
#include "controller/store/store.h"

namespace upkeep::testing {

class FaultyStore : public controller::Store {
 public:
  explicit FaultyStore(std::unique_ptr<controller::Store> real) : real_(std::move(real)) {}
  std::atomic<bool> fail_put_action{false};

  absl::StatusOr<std::vector<upkeep::v1::AppliedStack>> ApplyStacks(
      const std::vector<upkeep::v1::Stack>& stacks) override {
    return real_->ApplyStacks(stacks);
  }
  absl::Status DeleteStack(const std::string& name) override { return real_->DeleteStack(name); }
  absl::StatusOr<std::vector<upkeep::v1::Stack>> ListStacks() override {
    return real_->ListStacks();
  }
  absl::Status SaveStatus(const std::string& name, const upkeep::v1::StackStatus& s) override {
    return real_->SaveStatus(name, s);
  }
  absl::Status SetStackPaused(const std::string& name, bool paused) override {
    return real_->SetStackPaused(name, paused);
  }
  absl::Status SetHostPaused(const std::string& host, bool paused) override {
    return real_->SetHostPaused(host, paused);
  }
  absl::StatusOr<std::set<std::string>> PausedHosts() override { return real_->PausedHosts(); }
  absl::Status PauseHostUntil(const std::string& host, absl::Time until) override {
    return real_->PauseHostUntil(host, until);
  }
  absl::StatusOr<std::map<std::string, absl::Time>> HostPauses() override {
    return real_->HostPauses();
  }
  absl::Status AppendEvent(upkeep::v1::Event* event) override { return real_->AppendEvent(event); }
  absl::StatusOr<std::vector<upkeep::v1::Event>> ListEvents(const std::string& stack,
                                                            int64_t after_seq, int limit) override {
    return real_->ListEvents(stack, after_seq, limit);
  }
  absl::StatusOr<std::vector<upkeep::v1::Event>> TailEvents(const std::string& stack,
                                                            int limit) override {
    return real_->TailEvents(stack, limit);
  }
  absl::StatusOr<upkeep::v1::ActionRecord> GetAction(const std::string& id) override {
    return real_->GetAction(id);
  }
  absl::Status PutAction(const upkeep::v1::ActionRecord& record) override {
    if (fail_put_action) return absl::UnavailableError("injected: database or disk is full");
    return real_->PutAction(record);
  }
  absl::StatusOr<std::vector<upkeep::v1::ActionRecord>> ListActions(const std::string& stack,
                                                                    const std::string& host,
                                                                    int limit) override {
    return real_->ListActions(stack, host, limit);
  }
  absl::StatusOr<std::vector<upkeep::v1::Notifier>> ListNotifiers() override {
    return real_->ListNotifiers();
  }
  absl::Status PutNotifier(const upkeep::v1::Notifier& n) override { return real_->PutNotifier(n); }
  absl::Status DeleteNotifier(const std::string& name) override {
    return real_->DeleteNotifier(name);
  }
  absl::Status SaveNotifierStatus(const std::string& name,
                                  const upkeep::v1::NotifierStatus& s) override {
    return real_->SaveNotifierStatus(name, s);
  }
  absl::StatusOr<controller::PruneStats> Prune(const controller::Retention& r,
                                               absl::Time now) override {
    return real_->Prune(r, now);
  }

 private:
  std::unique_ptr<controller::Store> real_;
};

class RecordingHub : public controller::AgentHub {
 public:
  bool Send(const std::string& host_id, upkeep::v1::ControllerMessage message) override {
    absl::MutexLock lock(&mu_);
    ++entered_;
    mu_.Await(absl::Condition(
        +[](RecordingHub* h) ABSL_EXCLUSIVE_LOCKS_REQUIRED(h->mu_) { return !h->block_; }, this));
    sent_.push_back(std::move(message));
    return connected_;
  }
  std::vector<std::string> ConnectedHosts() const override { return {}; }

  void SetBlocked(bool block) {
    absl::MutexLock lock(&mu_);
    block_ = block;
  }
  void SetConnected(bool connected) {
    absl::MutexLock lock(&mu_);
    connected_ = connected;
  }
  // Threads that entered Send (including any still blocked in it).
  int entered() {
    absl::MutexLock lock(&mu_);
    return entered_;
  }
  std::vector<upkeep::v1::Action> actions() {
    absl::MutexLock lock(&mu_);
    std::vector<upkeep::v1::Action> out;
    for (const auto& m : sent_) {
      if (m.has_action()) out.push_back(m.action());
    }
    return out;
  }

 private:
  absl::Mutex mu_;
  bool block_ ABSL_GUARDED_BY(mu_) = false;
  bool connected_ ABSL_GUARDED_BY(mu_) = true;
  int entered_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<upkeep::v1::ControllerMessage> sent_ ABSL_GUARDED_BY(mu_);
};

}  // namespace upkeep::testing

#endif  // UPKEEP_TESTS_SUPPORT_CONTROLLER_DOUBLES_H_

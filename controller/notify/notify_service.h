// NotifyService: the controller's notifiers (kind: Notifier). It subscribes to the EventBus,
// picks the events each notifier wants (its `events:` classes, stack names and labels), adds
// the stack's last diagnosis on that host (the decision path with its evidence), and delivers
// on a thread per notifier: retries with exponential backoff on no answer / 408 / 429 / 5xx,
// a per-notifier rate limit (per minute) and a bounded queue (1000). The bus callback only
// copies the event into a queue, so a slow or down receiver never slows the reconciler.
//
// Secrets (URL, token) are references (env / file) read at each delivery; the resolved values
// are never stored, logged, or returned (List shows the references).
//
// On disk: DATA_DIR/notifiers.pb, a binary upkeep.v1.ListNotifiersResponse holding the applied
// notifiers (spec only; delivery counters live in memory and in metrics), written whole to
// notifiers.pb.tmp and renamed. Recovery: Open() reads it; a missing file is no notifiers, an
// unreadable one is an error naming the file.
//
// Thread-safe. Stop() (or the destructor) drops the subscription and joins every channel.
#ifndef UPKEEP_CONTROLLER_NOTIFY_NOTIFY_SERVICE_H_
#define UPKEEP_CONTROLLER_NOTIFY_NOTIFY_SERVICE_H_

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/events/event_bus.h"
#include "controller/metrics/metrics.h"
#include "controller/notify/http_post.h"
#include "upkeep/v1/fleet_service.pb.h"
#include "upkeep/v1/notifier.pb.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::notify {

class NotifyService {
 public:
  // The stack (spec labels and status with its last diagnoses), when it exists. Called on a
  // notifier thread, never on the bus's.
  using StackLookup = std::function<std::optional<upkeep::v1::Stack>(const std::string& name)>;

  // `data_dir` empty: nothing persisted (tests). `metrics` may be null.
  static absl::StatusOr<std::unique_ptr<NotifyService>> Open(const std::string& data_dir,
                                                             StackLookup lookup,
                                                             controller::Metrics* metrics);
  ~NotifyService();
  NotifyService(const NotifyService&) = delete;
  NotifyService& operator=(const NotifyService&) = delete;

  // Subscribes to every event of `bus` (which must outlive Stop()).
  void Attach(controller::EventBus* bus);
  void Stop();

  // Creates or replaces notifiers by name; "created" / "configured" / "unchanged" for each.
  // `dry_run`: only says what would change.
  absl::StatusOr<std::vector<upkeep::v1::AppliedStack>> Apply(
      const std::vector<upkeep::v1::Notifier>& notifiers, bool dry_run);
  absl::Status Delete(const std::string& name);
  // Specs (secret references only) with delivery status.
  std::vector<upkeep::v1::Notifier> List();
  // Sends a test message now, on the caller's thread, past the rate limit; the receiver's answer.
  absl::StatusOr<upkeep::v1::TestNotifierResponse> Test(const std::string& name);

  // What the bus delivers; public for tests. Copies and returns.
  void OnEvent(const upkeep::v1::Event& event);

 private:
  class Channel;
  NotifyService(std::string data_dir, StackLookup lookup, controller::Metrics* metrics);
  absl::Status SaveLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string data_dir_;
  const StackLookup lookup_;
  controller::Metrics* const metrics_;
  std::unique_ptr<controller::EventBus::Subscription> subscription_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Channel>> channels_ ABSL_GUARDED_BY(mu_);
};

// The secret a reference points at: the environment variable or the file's first line.
// Errors name the variable or file, never the value.
absl::StatusOr<std::string> ResolveSecret(const upkeep::v1::SecretRef& ref,
                                          const std::string& what);

// Whether notifier `spec` wants `event` of a stack with `labels`.
bool Wants(const upkeep::v1::NotifierSpec& spec, const upkeep::v1::Event& event,
           const google::protobuf::Map<std::string, std::string>* labels);

}  // namespace upkeep::notify

#endif  // UPKEEP_CONTROLLER_NOTIFY_NOTIFY_SERVICE_H_

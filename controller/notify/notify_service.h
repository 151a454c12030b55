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
// Persistence is the controller's Store (store.h: SQLite, or etcd shared by the replicas): the
// applied notifiers (spec only) and each one's delivery status (sent / failed / dropped, last
// attempt, success, error), saved after every delivery attempt. So a replica that takes over
// the lead knows every notifier applied through any earlier leader and carries on its counters.
// Not stored: the queue of messages not yet delivered (lost with the process that held them).
// On etcd the writes are fenced: a deposed leader's Apply fails and its counters stop moving.
// Recovery: Open() reads the store. Before the store held notifiers they were kept in
// DATA/notifiers.pb; Open(legacy_dir) imports that file once, when the store has none, and
// renames it notifiers.pb.imported.
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
#include "controller/store/store.h"
#include "upkeep/v1/fleet_service.pb.h"
#include "upkeep/v1/notifier.pb.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::notify {

class NotifyService {
 public:
  // The stack (spec labels and status with its last diagnoses), when it exists. Called on a
  // notifier thread, never on the bus's.
  using StackLookup = std::function<std::optional<upkeep::v1::Stack>(const std::string& name)>;

  // `store` (outlives the service) null: nothing persisted. `metrics` may be null.
  // `legacy_dir`: where an old DATA/notifiers.pb may wait to be imported ("" : none).
  static absl::StatusOr<std::unique_ptr<NotifyService>> Open(controller::Store* store,
                                                             StackLookup lookup,
                                                             controller::Metrics* metrics,
                                                             const std::string& legacy_dir = "");
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
  NotifyService(controller::Store* store, StackLookup lookup, controller::Metrics* metrics);
  absl::Status ImportLegacy(const std::string& dir);

  controller::Store* const store_;
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

// Store: the controller's memory that survives it — applied stacks (spec, generation,
// revision, pause flag, last status), paused hosts, events, the audit log of every action, and
// the notifiers (spec with secret references only, and their delivery status).
// SqliteStore is the embedded default; EtcdStore (etcd_store.h) is the one replicas share.
// Implementations are thread-safe.
#ifndef UPKEEP_CONTROLLER_STORE_STORE_H_
#define UPKEEP_CONTROLLER_STORE_STORE_H_

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "upkeep/v1/action.pb.h"
#include "upkeep/v1/event.pb.h"
#include "upkeep/v1/fleet_service.pb.h"
#include "upkeep/v1/notifier.pb.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::controller {

// How long and how many events and action records the store keeps. Whichever limit is hit
// first prunes the oldest. Unanswered actions younger than the age limit are never pruned.
struct Retention {
  absl::Duration events_max_age = absl::Hours(24 * 7);
  int64_t events_max_count = 100000;
  absl::Duration actions_max_age = absl::Hours(24 * 30);
  int64_t actions_max_count = 100000;
};

struct PruneStats {
  int64_t events = 0;
  int64_t actions = 0;
};

class Store {
 public:
  virtual ~Store() = default;

  // Stores every stack or none (one transaction). A spec that changed gets generation + 1;
  // each write gets a new store revision. Returns what happened to each.
  virtual absl::StatusOr<std::vector<upkeep::v1::AppliedStack>> ApplyStacks(
      const std::vector<upkeep::v1::Stack>& stacks) = 0;
  virtual absl::Status DeleteStack(const std::string& name) = 0;
  // Every stack, with metadata.generation/revision and status (paused, conditions).
  virtual absl::StatusOr<std::vector<upkeep::v1::Stack>> ListStacks() = 0;
  // No effect when the stack is not there (deleted meanwhile).
  virtual absl::Status SaveStatus(const std::string& name,
                                  const upkeep::v1::StackStatus& status) = 0;
  // Many at once, as SaveStatus each. SqliteStore: one transaction (all or none). By default
  // one SaveStatus after another, stopping at the first error.
  virtual absl::Status SaveStatuses(
      const std::vector<std::pair<std::string, upkeep::v1::StackStatus>>& statuses) {
    for (const auto& [name, status] : statuses) {
      if (absl::Status st = SaveStatus(name, status); !st.ok()) return st;
    }
    return absl::OkStatus();
  }
  virtual absl::Status SetStackPaused(const std::string& name, bool paused) = 0;
  // Pauses with no end (true) or resumes (false, forgetting any end).
  virtual absl::Status SetHostPaused(const std::string& host, bool paused) = 0;
  virtual absl::StatusOr<std::set<std::string>> PausedHosts() = 0;
  // Pauses `host` until `until` (`upkeepctl pause host H --for D`), so that a restarted
  // controller still resumes it then; InfiniteFuture is SetHostPaused(host, true).
  virtual absl::Status PauseHostUntil(const std::string& host, absl::Time until) = 0;
  // Every paused host with the end of its pause (InfiniteFuture: until someone resumes it).
  virtual absl::StatusOr<std::map<std::string, absl::Time>> HostPauses() = 0;

  // Assigns event->seq.
  virtual absl::Status AppendEvent(upkeep::v1::Event* event) = 0;
  virtual absl::StatusOr<std::vector<upkeep::v1::Event>> ListEvents(const std::string& stack,
                                                                    int64_t after_seq,
                                                                    int limit) = 0;
  // The newest `limit` events (of `stack` and fleet-wide ones when not empty), oldest first.
  virtual absl::StatusOr<std::vector<upkeep::v1::Event>> TailEvents(const std::string& stack,
                                                                    int limit) = 0;

  // NotFound when no record has this id.
  virtual absl::StatusOr<upkeep::v1::ActionRecord> GetAction(const std::string& id) = 0;
  // Inserts or replaces the record with its action id.
  virtual absl::Status PutAction(const upkeep::v1::ActionRecord& record) = 0;
  // The newest `limit` records (of `stack`, or all when empty; of `host` when not empty),
  // oldest first.
  virtual absl::StatusOr<std::vector<upkeep::v1::ActionRecord>> ListActions(
      const std::string& stack, const std::string& host, int limit) = 0;

  // Notifiers (kind: Notifier), by metadata.name, in name order: each spec with its last saved
  // delivery status (`pending` is whatever was saved; the queue itself is not stored).
  virtual absl::StatusOr<std::vector<upkeep::v1::Notifier>> ListNotifiers() = 0;
  // Inserts or replaces the notifier's spec (its `status` is ignored; a new one starts empty,
  // a replaced one keeps its delivery status).
  virtual absl::Status PutNotifier(const upkeep::v1::Notifier& notifier) = 0;
  // Deletes the notifier and its status; NotFound when there is none.
  virtual absl::Status DeleteNotifier(const std::string& name) = 0;
  // Replaces the delivery status; no effect when the notifier is not there (deleted meanwhile).
  virtual absl::Status SaveNotifierStatus(const std::string& name,
                                          const upkeep::v1::NotifierStatus& status) = 0;

  // Deletes events and action records beyond `retention` (as of `now`).
  virtual absl::StatusOr<PruneStats> Prune(const Retention& retention, absl::Time now) = 0;
};

// Opens (creating if needed) DIR/upkeep.db.
absl::StatusOr<std::unique_ptr<Store>> OpenSqliteStore(const std::string& data_dir);

}  // namespace upkeep::controller

#endif  // UPKEEP_CONTROLLER_STORE_STORE_H_

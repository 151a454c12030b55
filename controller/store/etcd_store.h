// EtcdStore: the Store on etcd v3 (KV with transactions, Watch), for controller replicas.
// Layout under `prefix` (default "/upkeep/"), every value a serialized proto or a decimal:
//   rev                         the last store revision (as SqliteStore's meta.revision)
//   stacks/NAME                 Stack: spec with metadata.generation/revision
//   status/NAME                 StackStatus (without `paused`)
//   paused/stacks/NAME   "1";  paused/hosts/HOST   "1", or "until=UNIX_MS" for a pause with an end
//   evseq                       the last event seq
//   events/SEQ (20 digits)      Event
//   actions/MS/ID (MS: requested_at, 20 digits)   ActionRecord (time order = key order)
//   actid/ID                    "MS/ID": where the record of action ID is
//   notifiers/NAME              Notifier: spec only (secret references, never their values)
//   notifstatus/NAME            NotifierStatus: its delivery counters, last success and error
// Fencing: with a fence set (SetFence: the leader's election key and its create revision),
// every write is one transaction that also compares the election key's create revision; when
// leadership has moved the write is not applied and returns FailedPrecondition. With
// `require_fence`, writes without a fence are refused the same way (a follower never writes).
// Retention (Prune) deletes by count and age like SqliteStore and then compacts etcd's history
// to `compact_keep_revisions` behind the head. Thread-safe.
#ifndef UPKEEP_CONTROLLER_STORE_ETCD_STORE_H_
#define UPKEEP_CONTROLLER_STORE_ETCD_STORE_H_

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/synchronization/mutex.h"
#include "controller/store/etcd_client.h"
#include "controller/store/store.h"

namespace upkeep::controller {

struct EtcdStoreOptions {
  std::string prefix = "/upkeep/";
  bool require_fence = false;
  int64_t compact_keep_revisions = 10000;
};

struct Fence {
  std::string key;
  int64_t create_revision = 0;
};

class EtcdStore : public Store {
 public:
  // `client` must outlive the store.
  EtcdStore(EtcdClient* client, EtcdStoreOptions options);

  void SetFence(std::optional<Fence> fence);
  // The newest etcd revision this store has seen in a response.
  int64_t SeenRevision() const { return seen_revision_.load(); }
  EtcdClient* client() { return client_; }
  const std::string& prefix() const { return options_.prefix; }

  absl::StatusOr<std::vector<upkeep::v1::AppliedStack>> ApplyStacks(
      const std::vector<upkeep::v1::Stack>& stacks) override;
  absl::Status DeleteStack(const std::string& name) override;
  absl::StatusOr<std::vector<upkeep::v1::Stack>> ListStacks() override;
  absl::Status SaveStatus(const std::string& name, const upkeep::v1::StackStatus& status) override;
  absl::Status SetStackPaused(const std::string& name, bool paused) override;
  absl::Status SetHostPaused(const std::string& host, bool paused) override;
  absl::StatusOr<std::set<std::string>> PausedHosts() override;
  absl::Status PauseHostUntil(const std::string& host, absl::Time until) override;
  absl::StatusOr<std::map<std::string, absl::Time>> HostPauses() override;
  absl::Status AppendEvent(upkeep::v1::Event* event) override;
  absl::StatusOr<std::vector<upkeep::v1::Event>> ListEvents(const std::string& stack,
                                                            int64_t after_seq, int limit) override;
  absl::StatusOr<std::vector<upkeep::v1::Event>> TailEvents(const std::string& stack,
                                                            int limit) override;
  absl::StatusOr<upkeep::v1::ActionRecord> GetAction(const std::string& id) override;
  absl::Status PutAction(const upkeep::v1::ActionRecord& record) override;
  absl::StatusOr<std::vector<upkeep::v1::ActionRecord>> ListActions(const std::string& stack,
                                                                    const std::string& host,
                                                                    int limit) override;
  absl::StatusOr<std::vector<upkeep::v1::Notifier>> ListNotifiers() override;
  absl::Status PutNotifier(const upkeep::v1::Notifier& notifier) override;
  absl::Status DeleteNotifier(const std::string& name) override;
  absl::Status SaveNotifierStatus(const std::string& name,
                                  const upkeep::v1::NotifierStatus& status) override;
  absl::StatusOr<PruneStats> Prune(const Retention& retention, absl::Time now) override;

  // Calls `on_event` with every event after `after_seq` (of `stack`, or all when empty), in
  // seq order, as they are appended, until `cancelled` returns true or the call fails. When
  // the watch falls behind a compaction it resumes from a fresh list of what is stored after
  // the last event delivered (events pruned meanwhile are skipped, never an error).
  // `from_revision`: resume at this etcd revision (one the caller kept with `after_seq`)
  // instead of listing first. Returns when cancelled (OK) or on an error etcd keeps returning.
  absl::Status WatchEvents(const std::string& stack, int64_t after_seq,
                           const std::function<void(const upkeep::v1::Event&)>& on_event,
                           const std::function<bool()>& cancelled, int64_t from_revision = 0);
  // How many times a watch resumed from a fresh list after a compaction (for tests).
  int64_t watch_relists() const { return relists_.load(); }

 private:
  std::string K(const std::string& rest) const { return options_.prefix + rest; }
  // Runs a transaction: `compares` plus the fence; FailedPrecondition when the fence failed.
  absl::StatusOr<etcdserverpb::TxnResponse> Write(etcdserverpb::TxnRequest req);
  absl::StatusOr<etcdserverpb::RangeResponse> Get(const std::string& key,
                                                  const std::string& end = "", int64_t limit = 0,
                                                  bool keys_only = false);
  void See(const etcdserverpb::ResponseHeader& h);

  EtcdClient* const client_;
  const EtcdStoreOptions options_;
  absl::Mutex mu_;
  std::optional<Fence> fence_ ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> seen_revision_{0};
  std::atomic<int64_t> relists_{0};
};

absl::StatusOr<std::unique_ptr<EtcdStore>> OpenEtcdStore(EtcdClient* client,
                                                         EtcdStoreOptions options = {});

}  // namespace upkeep::controller

#endif  // UPKEEP_CONTROLLER_STORE_ETCD_STORE_H_

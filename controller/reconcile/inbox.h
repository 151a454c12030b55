// Inboxes: what gRPC reactions hand to the reconciler. A reaction appends to its host's inbox
// and returns; a reconciler worker drains the inbox (in order) later. Nothing else happens on a
// gRPC thread: no store, no events, no reconciler lock.
// Consecutive observation reports of one host coalesce (the newest report of each stack
// wins), so a chatty agent cannot grow its inbox; hellos, results and disconnects are kept.
// Sharded by host so that reactions of different hosts rarely share a mutex.
// Thread-safe.
#ifndef UPKEEP_CONTROLLER_RECONCILE_INBOX_H_
#define UPKEEP_CONTROLLER_RECONCILE_INBOX_H_

#include <array>
#include <map>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "upkeep/v1/agent_service.pb.h"

namespace upkeep::controller {

struct InboxItem {
  enum class Kind { kConnected, kObservation, kResult, kDisconnected };
  explicit InboxItem(Kind k) : kind(k) {}
  Kind kind;
  upkeep::v1::Hello hello;               // kConnected
  upkeep::v1::ObservationReport report;  // kObservation
  upkeep::v1::ActionResult result;       // kResult
};

class Inboxes {
 public:
  void Push(const std::string& host, InboxItem item);
  // Everything waiting for `host`, oldest first; the inbox is then empty (and forgotten).
  std::vector<InboxItem> Take(const std::string& host);
  size_t Size(const std::string& host) const;

 private:
  static constexpr size_t kShards = 32;
  struct Shard {
    mutable absl::Mutex mu;
    std::map<std::string, std::vector<InboxItem>> boxes ABSL_GUARDED_BY(mu);
  };
  Shard& ShardOf(const std::string& host) const;
  mutable std::array<Shard, kShards> shards_;
};

}  // namespace upkeep::controller

#endif  // UPKEEP_CONTROLLER_RECONCILE_INBOX_H_

#include "controller/reconcile/inbox.h"

#include <functional>

namespace upkeep::controller {

Inboxes::Shard& Inboxes::ShardOf(const std::string& host) const {
  return shards_[std::hash<std::string>{}(host) % kShards];
}

void Inboxes::Push(const std::string& host, InboxItem item) {
  Shard& shard = ShardOf(host);
  absl::MutexLock lock(&shard.mu);
  std::vector<InboxItem>& box = shard.boxes[host];
  if (item.kind == InboxItem::Kind::kObservation && !box.empty() &&
      box.back().kind == InboxItem::Kind::kObservation) {
    upkeep::v1::ObservationReport& queued = box.back().report;
    for (auto& s : *item.report.mutable_stacks()) {
      bool replaced = false;
      for (auto& q : *queued.mutable_stacks()) {
        if (q.stack() == s.stack()) {
          q = std::move(s);
          replaced = true;
          break;
        }
      }
      if (!replaced) *queued.add_stacks() = std::move(s);
    }
    return;
  }
  box.push_back(std::move(item));
}

std::vector<InboxItem> Inboxes::Take(const std::string& host) {
  Shard& shard = ShardOf(host);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.boxes.find(host);
  if (it == shard.boxes.end()) return {};
  std::vector<InboxItem> out = std::move(it->second);
  shard.boxes.erase(it);
  return out;
}

size_t Inboxes::Size(const std::string& host) const {
  Shard& shard = ShardOf(host);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.boxes.find(host);
  return it == shard.boxes.end() ? 0 : it->second.size();
}

}  // namespace upkeep::controller

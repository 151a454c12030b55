#include "controller/store/etcd_store.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "core/proto_time.h"

namespace upkeep::controller {
namespace {

namespace v1 = upkeep::v1;
namespace pb = etcdserverpb;

std::string Pad(int64_t n) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%020" PRId64, n);
  return buf;
}

int64_t ToInt(const std::string& s) {
  int64_t v = 0;
  return absl::SimpleAtoi(s, &v) ? v : 0;
}

pb::RequestOp PutOp(const std::string& key, const std::string& value) {
  pb::RequestOp op;
  op.mutable_request_put()->set_key(key);
  op.mutable_request_put()->set_value(value);
  return op;
}

pb::RequestOp DeleteOp(const std::string& key, const std::string& end = "") {
  pb::RequestOp op;
  op.mutable_request_delete_range()->set_key(key);
  if (!end.empty()) op.mutable_request_delete_range()->set_range_end(end);
  return op;
}

pb::RequestOp RangeOp(const std::string& key) {
  pb::RequestOp op;
  op.mutable_request_range()->set_key(key);
  return op;
}

// The key's mod revision is `mod` (0: the key does not exist).
pb::Compare ModIs(const std::string& key, int64_t mod) {
  pb::Compare c;
  c.set_key(key);
  c.set_target(pb::Compare::MOD);
  c.set_result(pb::Compare::EQUAL);
  c.set_mod_revision(mod);
  return c;
}

// Retries a read-compare-write until its compares hold (another writer came between).
constexpr int kMaxCasAttempts = 64;

}  // namespace

EtcdStore::EtcdStore(EtcdClient* client, EtcdStoreOptions options)
    : client_(client), options_(std::move(options)) {}

void EtcdStore::SetFence(std::optional<Fence> fence) {
  absl::MutexLock lock(&mu_);
  fence_ = std::move(fence);
}

void EtcdStore::See(const pb::ResponseHeader& h) {
  int64_t cur = seen_revision_.load();
  while (h.revision() > cur && !seen_revision_.compare_exchange_weak(cur, h.revision())) {
  }
}

absl::StatusOr<pb::RangeResponse> EtcdStore::Get(const std::string& key, const std::string& end,
                                                 int64_t limit, bool keys_only) {
  pb::RangeRequest req;
  req.set_key(key);
  if (!end.empty()) req.set_range_end(end);
  req.set_limit(limit);
  req.set_keys_only(keys_only);
  auto resp = client_->Range(req);
  if (resp.ok()) See(resp->header());
  return resp;
}

absl::StatusOr<pb::TxnResponse> EtcdStore::Write(pb::TxnRequest req) {
  std::optional<Fence> fence;
  {
    absl::MutexLock lock(&mu_);
    fence = fence_;
  }
  if (!fence.has_value() && options_.require_fence) {
    return absl::FailedPreconditionError("not the leader: only the leader writes to the store");
  }
  // The fence's result is read in the failure branch, after the caller's own failure ops.
  const int own_failure_ops = req.failure_size();
  if (fence.has_value()) {
    pb::Compare* c = req.add_compare();
    c->set_key(fence->key);
    c->set_target(pb::Compare::CREATE);
    c->set_result(pb::Compare::EQUAL);
    c->set_create_revision(fence->create_revision);
    *req.add_failure() = RangeOp(fence->key);
  }
  auto resp = client_->Txn(req);
  if (!resp.ok()) return resp.status();
  See(resp->header());
  if (!resp->succeeded() && fence.has_value()) {
    const auto& r = resp->responses(own_failure_ops).response_range();
    if (r.kvs_size() == 0 || r.kvs(0).create_revision() != fence->create_revision) {
      return absl::FailedPreconditionError(absl::StrCat("fenced: leadership (", fence->key, " @",
                                                        fence->create_revision,
                                                        ") is lost; the write was not applied"));
    }
  }
  return resp;
}

absl::StatusOr<std::vector<v1::AppliedStack>> EtcdStore::ApplyStacks(
    const std::vector<v1::Stack>& stacks) {
  for (int attempt = 0; attempt < kMaxCasAttempts; ++attempt) {
    auto rev = Get(K("rev"));
    if (!rev.ok()) return rev.status();
    const int64_t rev_mod = rev->kvs_size() ? rev->kvs(0).mod_revision() : 0;
    int64_t revision = rev->kvs_size() ? ToInt(rev->kvs(0).value()) : 0;
    pb::TxnRequest txn;
    *txn.add_compare() = ModIs(K("rev"), rev_mod);
    std::vector<v1::AppliedStack> out;
    bool changed = false;
    for (const auto& stack : stacks) {
      v1::Stack spec_only = stack;
      spec_only.clear_status();
      spec_only.mutable_metadata()->clear_generation();
      spec_only.mutable_metadata()->clear_revision();
      v1::AppliedStack applied;
      applied.set_name(stack.metadata().name());
      const std::string key = K("stacks/" + stack.metadata().name());
      auto cur = Get(key);
      if (!cur.ok()) return cur.status();
      int64_t generation = 1;
      if (cur->kvs_size() > 0) {
        v1::Stack old;
        old.ParseFromString(cur->kvs(0).value());
        const int64_t old_gen = old.metadata().generation();
        const int64_t old_rev = old.metadata().revision();
        old.mutable_metadata()->clear_generation();
        old.mutable_metadata()->clear_revision();
        old.mutable_metadata()->clear_source();
        v1::Stack cmp = spec_only;
        cmp.mutable_metadata()->clear_source();
        *txn.add_compare() = ModIs(key, cur->kvs(0).mod_revision());
        if (old.SerializeAsString() == cmp.SerializeAsString()) {
          applied.set_change("unchanged");
          applied.set_generation(old_gen);
          applied.set_revision(old_rev);
          out.push_back(applied);
          continue;
        }
        generation = old_gen + 1;
        applied.set_change("configured");
      } else {
        *txn.add_compare() = ModIs(key, 0);
        applied.set_change("created");
      }
      ++revision;
      changed = true;
      spec_only.mutable_metadata()->set_generation(generation);
      spec_only.mutable_metadata()->set_revision(revision);
      *txn.add_success() = PutOp(key, spec_only.SerializeAsString());
      applied.set_generation(generation);
      applied.set_revision(revision);
      out.push_back(applied);
    }
    if (!changed) return out;
    *txn.add_success() = PutOp(K("rev"), absl::StrCat(revision));
    auto resp = Write(std::move(txn));
    if (!resp.ok()) return resp.status();
    if (resp->succeeded()) return out;
  }
  return absl::AbortedError("etcd apply: too much contention");
}

absl::Status EtcdStore::DeleteStack(const std::string& name) {
  pb::TxnRequest txn;
  pb::Compare* c = txn.add_compare();
  c->set_key(K("stacks/" + name));
  c->set_target(pb::Compare::CREATE);
  c->set_result(pb::Compare::GREATER);
  c->set_create_revision(0);
  *txn.add_success() = DeleteOp(K("stacks/" + name));
  *txn.add_success() = DeleteOp(K("status/" + name));
  *txn.add_success() = DeleteOp(K("paused/stacks/" + name));
  auto resp = Write(std::move(txn));
  if (!resp.ok()) return resp.status();
  if (!resp->succeeded()) return absl::NotFoundError(absl::StrCat("no stack ", name));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Stack>> EtcdStore::ListStacks() {
  // One transaction of reads: a consistent snapshot of specs, statuses and pause flags.
  pb::TxnRequest txn;
  for (const char* p : {"stacks/", "status/", "paused/stacks/"}) {
    pb::RequestOp op;
    op.mutable_request_range()->set_key(K(p));
    op.mutable_request_range()->set_range_end(PrefixEnd(K(p)));
    *txn.add_success() = op;
  }
  auto resp = client_->Txn(txn);
  if (!resp.ok()) return resp.status();
  See(resp->header());
  std::map<std::string, v1::StackStatus> status;
  std::set<std::string> paused;
  const size_t status_len = K("status/").size();
  for (const auto& kv : resp->responses(1).response_range().kvs()) {
    status[kv.key().substr(status_len)].ParseFromString(kv.value());
  }
  const size_t paused_len = K("paused/stacks/").size();
  for (const auto& kv : resp->responses(2).response_range().kvs()) {
    paused.insert(kv.key().substr(paused_len));
  }
  std::vector<v1::Stack> out;
  for (const auto& kv : resp->responses(0).response_range().kvs()) {
    v1::Stack stack;
    if (!stack.ParseFromString(kv.value())) continue;
    const std::string& name = stack.metadata().name();
    if (auto it = status.find(name); it != status.end()) *stack.mutable_status() = it->second;
    stack.mutable_status()->set_paused(paused.count(name) > 0);
    out.push_back(std::move(stack));
  }
  return out;  // key order is name order
}

absl::Status EtcdStore::SaveStatus(const std::string& name, const v1::StackStatus& status) {
  // Like SqliteStore's UPDATE: no effect when the stack is not there.
  pb::TxnRequest txn;
  pb::Compare* c = txn.add_compare();
  c->set_key(K("stacks/" + name));
  c->set_target(pb::Compare::CREATE);
  c->set_result(pb::Compare::GREATER);
  c->set_create_revision(0);
  v1::StackStatus s = status;
  s.clear_paused();
  *txn.add_success() = PutOp(K("status/" + name), s.SerializeAsString());
  auto resp = Write(std::move(txn));
  return resp.ok() ? absl::OkStatus() : resp.status();
}

absl::Status EtcdStore::SetStackPaused(const std::string& name, bool paused) {
  pb::TxnRequest txn;
  pb::Compare* c = txn.add_compare();
  c->set_key(K("stacks/" + name));
  c->set_target(pb::Compare::CREATE);
  c->set_result(pb::Compare::GREATER);
  c->set_create_revision(0);
  *txn.add_success() =
      paused ? PutOp(K("paused/stacks/" + name), "1") : DeleteOp(K("paused/stacks/" + name));
  auto resp = Write(std::move(txn));
  if (!resp.ok()) return resp.status();
  if (!resp->succeeded()) return absl::NotFoundError(absl::StrCat("no stack ", name));
  return absl::OkStatus();
}

absl::Status EtcdStore::SetHostPaused(const std::string& host, bool paused) {
  pb::TxnRequest txn;
  *txn.add_success() =
      paused ? PutOp(K("paused/hosts/" + host), "1") : DeleteOp(K("paused/hosts/" + host));
  auto resp = Write(std::move(txn));
  return resp.ok() ? absl::OkStatus() : resp.status();
}

absl::StatusOr<std::set<std::string>> EtcdStore::PausedHosts() {
  auto resp = Get(K("paused/hosts/"), PrefixEnd(K("paused/hosts/")), 0, true);
  if (!resp.ok()) return resp.status();
  std::set<std::string> out;
  const size_t len = K("paused/hosts/").size();
  for (const auto& kv : resp->kvs()) out.insert(kv.key().substr(len));
  return out;
}

absl::Status EtcdStore::PauseHostUntil(const std::string& host, absl::Time until) {
  if (until == absl::InfiniteFuture()) return SetHostPaused(host, true);
  // The value is "1" for a pause with no end, else "until=UNIX_MS".
  pb::TxnRequest txn;
  *txn.add_success() =
      PutOp(K("paused/hosts/" + host), absl::StrCat("until=", absl::ToUnixMillis(until)));
  auto resp = Write(std::move(txn));
  return resp.ok() ? absl::OkStatus() : resp.status();
}

absl::StatusOr<std::map<std::string, absl::Time>> EtcdStore::HostPauses() {
  auto resp = Get(K("paused/hosts/"), PrefixEnd(K("paused/hosts/")), 0, false);
  if (!resp.ok()) return resp.status();
  std::map<std::string, absl::Time> out;
  const size_t len = K("paused/hosts/").size();
  for (const auto& kv : resp->kvs()) {
    absl::Time until = absl::InfiniteFuture();
    int64_t ms = 0;
    if (absl::string_view v = kv.value(); absl::ConsumePrefix(&v, "until=")) {
      if (!absl::SimpleAtoi(v, &ms)) {
        return absl::DataLossError(
            absl::StrCat("etcd ", kv.key(), ": unreadable pause end \"", kv.value(), "\""));
      }
      until = absl::FromUnixMillis(ms);
    }
    out[kv.key().substr(len)] = until;
  }
  return out;
}

absl::Status EtcdStore::AppendEvent(v1::Event* event) {
  for (int attempt = 0; attempt < kMaxCasAttempts; ++attempt) {
    auto seq = Get(K("evseq"));
    if (!seq.ok()) return seq.status();
    const int64_t mod = seq->kvs_size() ? seq->kvs(0).mod_revision() : 0;
    const int64_t next = (seq->kvs_size() ? ToInt(seq->kvs(0).value()) : 0) + 1;
    event->set_seq(next);
    pb::TxnRequest txn;
    *txn.add_compare() = ModIs(K("evseq"), mod);
    *txn.add_success() = PutOp(K("evseq"), absl::StrCat(next));
    *txn.add_success() = PutOp(K("events/" + Pad(next)), event->SerializeAsString());
    auto resp = Write(std::move(txn));
    if (!resp.ok()) return resp.status();
    if (resp->succeeded()) return absl::OkStatus();
  }
  return absl::AbortedError("etcd event: too much contention");
}

absl::StatusOr<std::vector<v1::Event>> EtcdStore::ListEvents(const std::string& stack,
                                                             int64_t after_seq, int limit) {
  std::vector<v1::Event> out;
  std::string from = K("events/" + Pad(after_seq + 1));
  const std::string end = PrefixEnd(K("events/"));
  // Pages in key (= seq) order; a stack filter is applied here, page by page.
  const int64_t page = stack.empty() ? limit : std::max(limit, 512);
  while (static_cast<int>(out.size()) < limit) {
    auto resp = Get(from, end, page);
    if (!resp.ok()) return resp.status();
    for (const auto& kv : resp->kvs()) {
      v1::Event e;
      if (!e.ParseFromString(kv.value())) continue;
      if (!stack.empty() && e.stack() != stack) continue;
      out.push_back(std::move(e));
      if (static_cast<int>(out.size()) == limit) break;
    }
    if (!resp->more() || resp->kvs_size() == 0) break;
    from = resp->kvs(resp->kvs_size() - 1).key() + '\0';
  }
  return out;
}

absl::StatusOr<std::vector<v1::Event>> EtcdStore::TailEvents(const std::string& stack, int limit) {
  auto seq = Get(K("evseq"));
  if (!seq.ok()) return seq.status();
  const int64_t last = seq->kvs_size() ? ToInt(seq->kvs(0).value()) : 0;
  // Seqs are contiguous (pruning only removes the oldest), so walk back in windows.
  std::vector<v1::Event> out;
  int64_t hi = last;
  int64_t window = std::max(limit, 256);
  while (hi > 0 && static_cast<int>(out.size()) < limit) {
    const int64_t lo = std::max<int64_t>(1, hi - window + 1);
    auto resp = Get(K("events/" + Pad(lo)), K("events/" + Pad(hi + 1)));
    if (!resp.ok()) return resp.status();
    std::vector<v1::Event> chunk;
    for (const auto& kv : resp->kvs()) {
      v1::Event e;
      if (!e.ParseFromString(kv.value())) continue;
      if (!stack.empty() && e.stack() != stack) continue;
      chunk.push_back(std::move(e));
    }
    // Newest first into `out`.
    for (auto it = chunk.rbegin(); it != chunk.rend() && static_cast<int>(out.size()) < limit;
         ++it) {
      out.push_back(std::move(*it));
    }
    if (resp->kvs_size() == 0 && lo > 1) {
      // Everything below was pruned.
      auto first = Get(K("events/"), PrefixEnd(K("events/")), 1, true);
      if (!first.ok()) return first.status();
      if (first->kvs_size() == 0) break;
      const std::string& k = first->kvs(0).key();
      const int64_t oldest = ToInt(k.substr(K("events/").size()));
      if (oldest >= lo) break;
      hi = std::min(lo - 1, hi);
    } else {
      hi = lo - 1;
    }
    window *= 2;
  }
  std::reverse(out.begin(), out.end());
  return out;
}

absl::StatusOr<v1::ActionRecord> EtcdStore::GetAction(const std::string& id) {
  auto ptr = Get(K("actid/" + id));
  if (!ptr.ok()) return ptr.status();
  if (ptr->kvs_size() == 0) return absl::NotFoundError(absl::StrCat("no action ", id));
  auto rec = Get(K("actions/" + ptr->kvs(0).value()));
  if (!rec.ok()) return rec.status();
  if (rec->kvs_size() == 0) return absl::NotFoundError(absl::StrCat("no action ", id));
  v1::ActionRecord r;
  if (!r.ParseFromString(rec->kvs(0).value())) {
    return absl::DataLossError(absl::StrCat("action ", id, ": unreadable record"));
  }
  return r;
}

absl::Status EtcdStore::PutAction(const v1::ActionRecord& record) {
  const std::string& id = record.action().id();
  const std::string where = Pad(absl::ToUnixMillis(FromProto(record.requested_at()))) + "/" + id;
  for (int attempt = 0; attempt < kMaxCasAttempts; ++attempt) {
    auto ptr = Get(K("actid/" + id));
    if (!ptr.ok()) return ptr.status();
    pb::TxnRequest txn;
    *txn.add_compare() = ModIs(K("actid/" + id), ptr->kvs_size() ? ptr->kvs(0).mod_revision() : 0);
    if (ptr->kvs_size() > 0 && ptr->kvs(0).value() != where) {
      *txn.add_success() = DeleteOp(K("actions/" + ptr->kvs(0).value()));
    }
    *txn.add_success() = PutOp(K("actid/" + id), where);
    *txn.add_success() = PutOp(K("actions/" + where), record.SerializeAsString());
    auto resp = Write(std::move(txn));
    if (!resp.ok()) return resp.status();
    if (resp->succeeded()) return absl::OkStatus();
  }
  return absl::AbortedError("etcd action: too much contention");
}

absl::StatusOr<std::vector<v1::ActionRecord>> EtcdStore::ListActions(const std::string& stack,
                                                                     const std::string& host,
                                                                     int limit) {
  // Newest first: pages in descending key (= requested_at) order.
  std::vector<v1::ActionRecord> out;
  const std::string start = K("actions/");
  std::string end = PrefixEnd(start);
  const int64_t page = (stack.empty() && host.empty()) ? limit : std::max(limit, 512);
  while (static_cast<int>(out.size()) < limit) {
    pb::RangeRequest req;
    req.set_key(start);
    req.set_range_end(end);
    req.set_limit(page);
    req.set_sort_order(pb::RangeRequest::DESCEND);
    req.set_sort_target(pb::RangeRequest::KEY);
    auto resp = client_->Range(req);
    if (!resp.ok()) return resp.status();
    See(resp->header());
    for (const auto& kv : resp->kvs()) {
      v1::ActionRecord r;
      if (!r.ParseFromString(kv.value())) continue;
      if (!stack.empty() && r.action().stack() != stack) continue;
      if (!host.empty() && r.action().host() != host) continue;
      out.push_back(std::move(r));
      if (static_cast<int>(out.size()) == limit) break;
    }
    if (!resp->more() || resp->kvs_size() == 0) break;
    end = resp->kvs(resp->kvs_size() - 1).key();  // exclusive
  }
  std::reverse(out.begin(), out.end());
  return out;
}

absl::StatusOr<std::vector<v1::Notifier>> EtcdStore::ListNotifiers() {
  // One transaction of reads: specs and statuses of the same revision.
  pb::TxnRequest txn;
  for (const char* p : {"notifiers/", "notifstatus/"}) {
    pb::RequestOp op;
    op.mutable_request_range()->set_key(K(p));
    op.mutable_request_range()->set_range_end(PrefixEnd(K(p)));
    *txn.add_success() = op;
  }
  auto resp = client_->Txn(txn);
  if (!resp.ok()) return resp.status();
  See(resp->header());
  std::map<std::string, std::string> status;
  const size_t status_len = K("notifstatus/").size();
  for (const auto& kv : resp->responses(1).response_range().kvs()) {
    status[kv.key().substr(status_len)] = kv.value();
  }
  std::vector<v1::Notifier> out;
  for (const auto& kv : resp->responses(0).response_range().kvs()) {
    v1::Notifier n;
    if (!n.ParseFromString(kv.value())) continue;
    if (auto it = status.find(n.metadata().name()); it != status.end()) {
      n.mutable_status()->ParseFromString(it->second);
    }
    out.push_back(std::move(n));
  }
  return out;  // key order is name order
}

absl::Status EtcdStore::PutNotifier(const v1::Notifier& notifier) {
  v1::Notifier spec = notifier;
  spec.clear_status();
  pb::TxnRequest txn;
  *txn.add_success() =
      PutOp(K("notifiers/" + notifier.metadata().name()), spec.SerializeAsString());
  auto resp = Write(std::move(txn));
  return resp.ok() ? absl::OkStatus() : resp.status();
}

absl::Status EtcdStore::DeleteNotifier(const std::string& name) {
  pb::TxnRequest txn;
  pb::Compare* c = txn.add_compare();
  c->set_key(K("notifiers/" + name));
  c->set_target(pb::Compare::CREATE);
  c->set_result(pb::Compare::GREATER);
  c->set_create_revision(0);
  *txn.add_success() = DeleteOp(K("notifiers/" + name));
  *txn.add_success() = DeleteOp(K("notifstatus/" + name));
  auto resp = Write(std::move(txn));
  if (!resp.ok()) return resp.status();
  if (!resp->succeeded()) return absl::NotFoundError(absl::StrCat("no notifier ", name));
  return absl::OkStatus();
}

absl::Status EtcdStore::SaveNotifierStatus(const std::string& name,
                                           const v1::NotifierStatus& status) {
  // Like SaveStatus: no effect when the notifier was deleted meanwhile (never resurrects one).
  pb::TxnRequest txn;
  pb::Compare* c = txn.add_compare();
  c->set_key(K("notifiers/" + name));
  c->set_target(pb::Compare::CREATE);
  c->set_result(pb::Compare::GREATER);
  c->set_create_revision(0);
  *txn.add_success() = PutOp(K("notifstatus/" + name), status.SerializeAsString());
  auto resp = Write(std::move(txn));
  return resp.ok() ? absl::OkStatus() : resp.status();
}

absl::StatusOr<PruneStats> EtcdStore::Prune(const Retention& retention, absl::Time now) {
  PruneStats stats;
  // Events by count: seqs are contiguous, so everything up to last - max_count goes.
  auto seq = Get(K("evseq"));
  if (!seq.ok()) return seq.status();
  const int64_t last = seq->kvs_size() ? ToInt(seq->kvs(0).value()) : 0;
  auto del = [&](const std::string& from, const std::string& to,
                 bool actions) -> absl::StatusOr<int64_t> {
    pb::TxnRequest txn;
    pb::RequestOp op = DeleteOp(from, to);
    if (actions) op.mutable_request_delete_range()->set_prev_kv(true);
    *txn.add_success() = op;
    auto resp = Write(std::move(txn));
    if (!resp.ok()) return resp.status();
    const auto& d = resp->responses(0).response_delete_range();
    if (actions && d.deleted() > 0) {
      // Their id pointers, in transactions of bounded size.
      pb::TxnRequest ids;
      for (const auto& kv : d.prev_kvs()) {
        const std::string k = kv.key();
        *ids.add_success() = DeleteOp(K("actid/" + k.substr(k.rfind('/') + 1)));
        if (ids.success_size() == 100) {
          if (auto r = Write(std::move(ids)); !r.ok()) return r.status();
          ids = pb::TxnRequest();
        }
      }
      if (ids.success_size() > 0) {
        if (auto r = Write(std::move(ids)); !r.ok()) return r.status();
      }
    }
    return d.deleted();
  };
  if (last - retention.events_max_count >= 1) {
    auto n = del(K("events/"), K("events/" + Pad(last - retention.events_max_count + 1)), false);
    if (!n.ok()) return n.status();
    stats.events += *n;
  }
  // Events by age: from the oldest, in pages, up to the first young enough.
  {
    const int64_t cutoff = absl::ToUnixMillis(now - retention.events_max_age);
    std::string from = K("events/");
    const std::string end = PrefixEnd(K("events/"));
    std::string young;  // first key to keep
    while (young.empty()) {
      auto resp = Get(from, end, 256);
      if (!resp.ok()) return resp.status();
      for (const auto& kv : resp->kvs()) {
        v1::Event e;
        e.ParseFromString(kv.value());
        if (!e.has_at() || absl::ToUnixMillis(FromProto(e.at())) >= cutoff) {
          young = kv.key();
          break;
        }
      }
      if (!young.empty() || !resp->more() || resp->kvs_size() == 0) break;
      from = resp->kvs(resp->kvs_size() - 1).key() + '\0';
    }
    auto n = del(K("events/"), young.empty() ? end : young, false);
    if (!n.ok()) return n.status();
    stats.events += *n;
  }
  // Actions by age: keys are in requested_at order.
  {
    auto n = del(K("actions/"),
                 K("actions/" + Pad(absl::ToUnixMillis(now - retention.actions_max_age))), true);
    if (!n.ok()) return n.status();
    stats.actions += *n;
  }
  // Actions by count: the oldest beyond max_count.
  {
    pb::RangeRequest count;
    count.set_key(K("actions/"));
    count.set_range_end(PrefixEnd(K("actions/")));
    count.set_count_only(true);
    auto c = client_->Range(count);
    if (!c.ok()) return c.status();
    const int64_t excess = c->count() - retention.actions_max_count;
    if (excess > 0) {
      auto keys = Get(K("actions/"), PrefixEnd(K("actions/")), excess, true);
      if (!keys.ok()) return keys.status();
      if (keys->kvs_size() > 0) {
        auto n = del(K("actions/"), keys->kvs(keys->kvs_size() - 1).key() + '\0', true);
        if (!n.ok()) return n.status();
        stats.actions += *n;
      }
    }
  }
  // Compaction: etcd keeps every old revision until compacted; keep a window behind the head
  // for watchers. Only a writer compacts (a fenced-out leader has already failed above).
  const int64_t head = seen_revision_.load();
  if (head - options_.compact_keep_revisions > 1) {
    pb::CompactionRequest req;
    req.set_revision(head - options_.compact_keep_revisions);
    pb::CompactionResponse resp;
    grpc::Status st = client_->Call([&](const EtcdClient::Stubs& s, grpc::ClientContext* ctx) {
      return s.kv->Compact(ctx, req, &resp);
    });
    // "required revision has been compacted": someone compacted further already; fine.
    if (!st.ok() && st.error_code() != grpc::StatusCode::OUT_OF_RANGE) {
      return FromGrpc(st, "compact");
    }
  }
  return stats;
}

absl::Status EtcdStore::WatchEvents(const std::string& stack, int64_t after_seq,
                                    const std::function<void(const v1::Event&)>& on_event,
                                    const std::function<bool()>& cancelled, int64_t from_revision) {
  int64_t last_seq = after_seq;
  int failures = 0;
  bool list = from_revision <= 0;
  while (!cancelled()) {
    // A fresh list first: everything stored after the last event delivered, and the revision
    // it was read at; then a watch from the revision after it.
    int64_t list_revision = from_revision - 1;
    while (list) {
      auto page = ListEvents("", last_seq, 1000);
      if (!page.ok()) return page.status();
      list_revision = seen_revision_.load();
      for (const auto& e : *page) {
        last_seq = e.seq();
        if (stack.empty() || e.stack() == stack) on_event(e);
      }
      if (page->size() < 1000) break;
    }
    EtcdClient::Stubs stubs = client_->Current();
    grpc::ClientContext ctx;
    auto stream = stubs.watch->Watch(&ctx);
    pb::WatchRequest req;
    auto* create = req.mutable_create_request();
    create->set_key(K("events/" + Pad(last_seq + 1)));
    create->set_range_end(PrefixEnd(K("events/")));
    create->set_start_revision(list_revision + 1);
    create->add_filters(pb::WatchCreateRequest::NODELETE);
    create->set_progress_notify(true);
    if (!stream->Write(req)) {
      client_->Rotate();
      if (++failures > 50) return absl::UnavailableError("etcd watch: cannot open a stream");
      absl::SleepFor(absl::Milliseconds(100));  // backoff between reconnects
      continue;
    }
    // A canceller: the stream's Read blocks, so cancellation closes the context.
    std::atomic<bool> done{false};
    std::thread canceller([&] {
      while (!done.load()) {
        if (cancelled()) {
          ctx.TryCancel();
          return;
        }
        absl::SleepFor(absl::Milliseconds(20));  // polling the caller's flag
      }
    });
    pb::WatchResponse resp;
    bool relist = false;
    while (stream->Read(&resp)) {
      failures = 0;
      if (resp.compact_revision() != 0 || resp.canceled()) {
        relist = true;  // fell behind a compaction: list afresh
        break;
      }
      for (const auto& ev : resp.events()) {
        v1::Event e;
        if (!e.ParseFromString(ev.kv().value())) continue;
        if (e.seq() <= last_seq) continue;
        last_seq = e.seq();
        if (stack.empty() || e.stack() == stack) on_event(e);
      }
    }
    done = true;
    ctx.TryCancel();
    stream->Finish();
    canceller.join();
    list = true;
    if (relist) {
      relists_.fetch_add(1);
    } else if (!cancelled()) {
      client_->Rotate();  // the member went away
      if (++failures > 50) return absl::UnavailableError("etcd watch: stream keeps breaking");
      absl::SleepFor(absl::Milliseconds(100));  // backoff between reconnects
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<EtcdStore>> OpenEtcdStore(EtcdClient* client,
                                                         EtcdStoreOptions options) {
  if (options.prefix.empty() || options.prefix.back() != '/') {
    return absl::InvalidArgumentError("etcd store prefix must end with '/'");
  }
  auto store = std::make_unique<EtcdStore>(client, std::move(options));
  // Reachable? A read of the revision key answers that and warms the channel.
  auto rev = client->Range([&] {
    etcdserverpb::RangeRequest r;
    r.set_key(store->prefix() + "rev");
    return r;
  }());
  if (!rev.ok()) return rev.status();
  return store;
}

}  // namespace upkeep::controller

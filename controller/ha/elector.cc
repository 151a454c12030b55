#include "controller/ha/elector.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/log.h"

namespace upkeep::controller {

Elector::Elector(EtcdClient* client, ElectorOptions options)
    : client_(client), options_(std::move(options)) {}

Elector::~Elector() { Stop(); }

absl::Status Elector::Start(std::function<void(const Fence&)> on_elected,
                            std::function<void()> on_lost) {
  auto lease = client_->LeaseGrant(options_.ttl);
  if (!lease.ok()) return lease.status();
  lease_ = *lease;
  on_elected_ = std::move(on_elected);
  on_lost_ = std::move(on_lost);
  keepalive_ = std::thread([this] { KeepAliveLoop(); });
  campaign_ = std::thread([this] { CampaignLoop(); });
  return absl::OkStatus();
}

void Elector::Stop() {
  std::optional<v3electionpb::LeaderKey> key;
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    stop_ = true;
    if (campaign_ctx_ != nullptr) campaign_ctx_->TryCancel();
    key = key_;
  }
  if (keepalive_.joinable()) keepalive_.join();
  if (campaign_.joinable()) campaign_.join();
  if (key.has_value()) {
    // Hand over at once rather than after the lease's TTL.
    v3electionpb::ResignRequest req;
    *req.mutable_leader() = *key;
    v3electionpb::ResignResponse resp;
    client_->Call([&](const EtcdClient::Stubs& s, grpc::ClientContext* ctx) {
      return s.election->Resign(ctx, req, &resp);
    });
  }
  if (lease_.load() != 0) client_->LeaseRevoke(lease_.load()).IgnoreError();
}

bool Elector::leading() const {
  absl::MutexLock lock(&mu_);
  return leading_ && !lost_;
}

bool Elector::lost() const {
  absl::MutexLock lock(&mu_);
  return lost_;
}

void Elector::Lose(const std::string& why) {
  {
    absl::MutexLock lock(&mu_);
    if (lost_) return;
    lost_ = true;
    leading_ = false;
    if (campaign_ctx_ != nullptr) campaign_ctx_->TryCancel();
  }
  UPKEEP_LOG(warn, "leadership_lost", {{"why", why}, {"lease", absl::StrCat(lease_.load())}});
  if (on_lost_) on_lost_();
}

void Elector::KeepAliveLoop() {
  absl::Time last_ok_sent = absl::Now();
  const absl::Duration every = options_.ttl / 4;
  // Leading: the loss is final. Following: a new lease and a new campaign.
  auto lost = [&](const std::string& why) {
    bool leading;
    {
      absl::MutexLock lock(&mu_);
      leading = leading_;
    }
    if (leading) {
      Lose(why);
      return true;
    }
    auto fresh = client_->LeaseGrant(options_.ttl);
    if (!fresh.ok()) return false;  // etcd still unreachable: try again next round
    UPKEEP_LOG(warn, "follower_lease_renewed",
               {{"why", why}, {"old", absl::StrCat(lease_.load())}, {"new", absl::StrCat(*fresh)}});
    lease_ = *fresh;
    last_ok_sent = absl::Now();
    absl::MutexLock lock(&mu_);
    if (campaign_ctx_ != nullptr) campaign_ctx_->TryCancel();  // re-campaign on the new lease
    return false;
  };
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto woke = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_ || lost_; };
      if (mu_.AwaitWithTimeout(absl::Condition(&woke), every)) return;
    }
    const absl::Time sent = absl::Now();
    // Each attempt (one per member at most) is bounded so that members that do not answer
    // cannot hold us past the moment we must step down.
    const absl::Duration left = last_ok_sent + options_.ttl - options_.safety - sent;
    if (left <= absl::ZeroDuration()) {
      if (lost(absl::StrCat("no keep-alive for ", absl::FormatDuration(sent - last_ok_sent)))) {
        return;
      }
      continue;
    }
    const absl::Duration attempt =
        std::min(every, left / static_cast<int64_t>(client_->endpoints().size()));
    auto ttl = client_->LeaseKeepAliveOnce(lease_.load(), attempt);
    if (ttl.ok() && *ttl > 0) {
      last_ok_sent = sent;
      continue;
    }
    if (ttl.ok()) {
      if (lost("the lease expired")) return;
    }
  }
}

void Elector::CampaignLoop() {
  while (true) {
    grpc::ClientContext ctx;
    {
      absl::MutexLock lock(&mu_);
      if (stop_ || lost_) return;
      campaign_ctx_ = &ctx;
    }
    v3electionpb::CampaignRequest req;
    req.set_name(options_.name);
    const int64_t lease = lease_.load();
    req.set_lease(lease);
    req.set_value(options_.value);
    v3electionpb::CampaignResponse resp;
    // Blocks in etcd until this replica leads; no deadline.
    EtcdClient::Stubs stubs = client_->Current();
    grpc::Status st = stubs.election->Campaign(&ctx, req, &resp);
    {
      absl::MutexLock lock(&mu_);
      campaign_ctx_ = nullptr;
      if (stop_ || lost_) return;
      if (st.ok() && resp.leader().lease() != lease_.load()) {
        // Elected on a lease that was replaced meanwhile: that key dies with its lease.
        st = grpc::Status(grpc::StatusCode::ABORTED, "elected on a replaced lease");
      } else if (st.ok()) {
        key_ = resp.leader();
        leading_ = true;
      }
    }
    if (st.ok()) {
      Fence fence{resp.leader().key(), resp.leader().rev()};
      UPKEEP_LOG(info, "elected",
                 {{"key", fence.key}, {"revision", absl::StrCat(fence.create_revision)}});
      if (on_elected_) on_elected_(fence);
      return;
    }
    UPKEEP_LOG(warn, "campaign_failed", {{"etcd", stubs.endpoint}, {"error", st.error_message()}});
    client_->Rotate();
    absl::MutexLock lock(&mu_);
    auto woke = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_ || lost_; };
    mu_.AwaitWithTimeout(absl::Condition(&woke), absl::Milliseconds(200));  // retry backoff
  }
}

absl::StatusOr<std::string> Elector::Leader() {
  v3electionpb::LeaderRequest req;
  req.set_name(options_.name);
  v3electionpb::LeaderResponse resp;
  grpc::Status st = client_->Call([&](const EtcdClient::Stubs& s, grpc::ClientContext* ctx) {
    return s.election->Leader(ctx, req, &resp);
  });
  if (st.error_code() == grpc::StatusCode::UNKNOWN &&
      st.error_message().find("no leader") != std::string::npos) {
    return std::string();
  }
  if (!st.ok()) return FromGrpc(st, "leader");
  return resp.kv().value();
}

}  // namespace upkeep::controller

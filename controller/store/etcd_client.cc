#include "controller/store/etcd_client.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/tls/tls.h"

namespace upkeep::controller {

absl::StatusOr<std::vector<std::string>> ParseEtcdEndpoints(const std::string& list) {
  std::vector<std::string> out;
  for (absl::string_view e : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    e = absl::StripAsciiWhitespace(e);
    absl::string_view hostport = e;
    absl::ConsumePrefix(&hostport, "http://") || absl::ConsumePrefix(&hostport, "https://");
    absl::ConsumeSuffix(&hostport, "/");
    const size_t colon = hostport.rfind(':');
    if (hostport.empty() || colon == absl::string_view::npos || colon + 1 == hostport.size() ||
        hostport.find('/') != absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("--etcd-endpoints: \"", e, "\" is not host:port (or http(s)://host:port)"));
    }
    out.emplace_back(hostport);
  }
  if (out.empty()) return absl::InvalidArgumentError("--etcd-endpoints: no endpoint given");
  return out;
}

std::string PrefixEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

absl::Status FromGrpc(const grpc::Status& st, const std::string& what) {
  if (st.ok()) return absl::OkStatus();
  const std::string msg = absl::StrCat("etcd ", what, ": ", st.error_message());
  switch (st.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return absl::UnavailableError(msg);
    case grpc::StatusCode::NOT_FOUND:
      return absl::NotFoundError(msg);
    case grpc::StatusCode::FAILED_PRECONDITION:
      return absl::FailedPreconditionError(msg);
    case grpc::StatusCode::OUT_OF_RANGE:
      return absl::OutOfRangeError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::StatusOr<std::unique_ptr<EtcdClient>> EtcdClient::Connect(const EtcdOptions& options) {
  if (options.endpoints.empty()) return absl::InvalidArgumentError("no etcd endpoint");
  auto c = std::unique_ptr<EtcdClient>(new EtcdClient());
  c->timeout_ = options.call_timeout;
  for (const auto& e : options.endpoints) {
    auto creds = tls::ClientCredentials(e, options.ca, options.cert, options.key);
    if (!creds.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("etcd endpoint ", e, ": ", creds.status().message(),
                       " (for etcd: --etcd-ca/--etcd-cert/--etcd-key)"));
    }
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 2000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 2000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    args.SetMaxReceiveMessageSize(64 << 20);
    Member m;
    m.endpoint = e;
    m.channel = grpc::CreateCustomChannel(e, *creds, args);
    m.kv = etcdserverpb::KV::NewStub(m.channel);
    m.watch = etcdserverpb::Watch::NewStub(m.channel);
    m.lease = etcdserverpb::Lease::NewStub(m.channel);
    m.maintenance = etcdserverpb::Maintenance::NewStub(m.channel);
    m.election = v3electionpb::Election::NewStub(m.channel);
    c->endpoints_.push_back(e);
    c->members_.push_back(std::move(m));
  }
  return c;
}

EtcdClient::Stubs EtcdClient::StubsOf(size_t i) {
  Member& m = members_[i];
  return Stubs{m.endpoint,    m.kv.get(),          m.watch.get(),
               m.lease.get(), m.maintenance.get(), m.election.get()};
}

EtcdClient::Stubs EtcdClient::Current() { return StubsOf(current_.load() % members_.size()); }

void EtcdClient::Rotate() { current_.fetch_add(1); }

grpc::Status EtcdClient::Call(
    const std::function<grpc::Status(const Stubs&, grpc::ClientContext*)>& call,
    absl::Duration timeout) {
  if (timeout == absl::ZeroDuration()) timeout = timeout_;
  grpc::Status st;
  const size_t start = current_.load();
  for (size_t attempt = 0; attempt < members_.size(); ++attempt) {
    const size_t i = (start + attempt) % members_.size();
    grpc::ClientContext ctx;
    if (timeout != absl::InfiniteDuration()) {
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    }
    st = call(StubsOf(i), &ctx);
    if (st.error_code() != grpc::StatusCode::UNAVAILABLE) {
      if (attempt > 0) current_.store(i);
      return st;
    }
  }
  return st;
}

absl::StatusOr<etcdserverpb::RangeResponse> EtcdClient::Range(
    const etcdserverpb::RangeRequest& req) {
  etcdserverpb::RangeResponse resp;
  grpc::Status st =
      Call([&](const Stubs& s, grpc::ClientContext* ctx) { return s.kv->Range(ctx, req, &resp); });
  if (!st.ok()) return FromGrpc(st, "range");
  return resp;
}

absl::StatusOr<etcdserverpb::TxnResponse> EtcdClient::Txn(const etcdserverpb::TxnRequest& req) {
  etcdserverpb::TxnResponse resp;
  grpc::Status st =
      Call([&](const Stubs& s, grpc::ClientContext* ctx) { return s.kv->Txn(ctx, req, &resp); });
  if (!st.ok()) return FromGrpc(st, "txn");
  return resp;
}

absl::StatusOr<int64_t> EtcdClient::LeaseGrant(absl::Duration ttl) {
  etcdserverpb::LeaseGrantRequest req;
  req.set_ttl(std::max<int64_t>(1, absl::ToInt64Seconds(ttl)));
  etcdserverpb::LeaseGrantResponse resp;
  grpc::Status st = Call([&](const Stubs& s, grpc::ClientContext* ctx) {
    return s.lease->LeaseGrant(ctx, req, &resp);
  });
  if (!st.ok()) return FromGrpc(st, "lease grant");
  if (!resp.error().empty()) return absl::InternalError("etcd lease grant: " + resp.error());
  return resp.id();
}

absl::Status EtcdClient::LeaseRevoke(int64_t lease) {
  etcdserverpb::LeaseRevokeRequest req;
  req.set_id(lease);
  etcdserverpb::LeaseRevokeResponse resp;
  return FromGrpc(Call([&](const Stubs& s, grpc::ClientContext* ctx) {
                    return s.lease->LeaseRevoke(ctx, req, &resp);
                  }),
                  "lease revoke");
}

absl::StatusOr<int64_t> EtcdClient::LeaseKeepAliveOnce(int64_t lease, absl::Duration timeout) {
  etcdserverpb::LeaseKeepAliveResponse resp;
  grpc::Status st = Call(
      [&](const Stubs& s, grpc::ClientContext* ctx) {
        auto stream = s.lease->LeaseKeepAlive(ctx);
        etcdserverpb::LeaseKeepAliveRequest req;
        req.set_id(lease);
        if (!stream->Write(req) || !stream->Read(&resp)) {
          stream->WritesDone();
          grpc::Status f = stream->Finish();
          return f.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "keep-alive stream closed")
                        : f;
        }
        stream->WritesDone();
        ctx->TryCancel();
        stream->Finish();
        return grpc::Status::OK;
      },
      timeout);
  if (!st.ok()) return FromGrpc(st, "lease keep-alive");
  return resp.ttl();
}

}  // namespace upkeep::controller

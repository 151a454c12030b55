#include "tests/support/etcd/etcd_cluster.h"

#include <signal.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "tests/support/files.h"
#include "tests/support/net.h"
#include "tests/support/wait.h"

namespace upkeep::testing {

absl::StatusOr<std::unique_ptr<EtcdCluster>> EtcdCluster::Start(int members,
                                                                std::optional<EtcdTls> tls) {
  std::unique_ptr<EtcdCluster> c(new EtcdCluster());
  c->tls_ = std::move(tls);
  std::vector<std::string> peers;
  for (int i = 0; i < members; ++i) {
    c->endpoints_.push_back(absl::StrCat("127.0.0.1:", FreePort()));
    c->peer_ports_.push_back(FreePort());
    peers.push_back(absl::StrCat("m", i, "=http://127.0.0.1:", c->peer_ports_.back()));
  }
  c->initial_cluster_ = absl::StrJoin(peers, ",");
  c->members_.resize(members);
  for (int i = 0; i < members; ++i) {
    if (absl::Status st = c->StartMember(i, true); !st.ok()) return st;
  }
  for (int i = 0; i < members; ++i) {
    if (!c->Ready(c->endpoints_[i], absl::Seconds(30))) {
      return absl::DeadlineExceededError(absl::StrCat("etcd member ", i, " at ", c->endpoints_[i],
                                                      " not ready in 30 s:\n", c->Log(i)));
    }
  }
  return c;
}

absl::Status EtcdCluster::StartMember(int i, bool fresh) {
  const std::string name = absl::StrCat("m", i);
  const std::string client = (tls_ ? "https://" : "http://") + endpoints_[i];
  const std::string peer = absl::StrCat("http://127.0.0.1:", peer_ports_[i]);
  // Short heartbeat and election timeouts: a killed member's leadership moves in about a second.
  // --max-txn-ops: ApplyStacks writes every stack of one apply in one transaction.
  std::vector<std::string> argv = {"etcd",
                                   "--name",
                                   name,
                                   "--data-dir",
                                   dir_.Join(name),
                                   "--listen-client-urls",
                                   client,
                                   "--advertise-client-urls",
                                   client,
                                   "--listen-peer-urls",
                                   peer,
                                   "--initial-advertise-peer-urls",
                                   peer,
                                   "--initial-cluster",
                                   initial_cluster_,
                                   "--initial-cluster-state",
                                   fresh ? "new" : "existing",
                                   "--initial-cluster-token",
                                   "upkeep-test",
                                   "--heartbeat-interval",
                                   "50",
                                   "--election-timeout",
                                   "500",
                                   "--max-txn-ops",
                                   "1024",
                                   "--logger",
                                   "zap",
                                   "--log-level",
                                   "warn",
                                   "--listen-metrics-urls",
                                   "",
                                   "--enable-pprof=false"};
  if (tls_) {
    argv.insert(argv.end(), {"--cert-file", tls_->cert, "--key-file", tls_->key,
                             "--trusted-ca-file", tls_->ca, "--client-cert-auth"});
  }
  auto p = Subprocess::Start(argv, dir_.Join(name + ".log"));
  if (!p.ok()) return p.status();
  members_[i] = std::move(*p);
  return absl::OkStatus();
}

EtcdCluster::~EtcdCluster() {
  for (auto& m : members_) {
    if (m != nullptr) m->Stop(absl::Seconds(2));
  }
}

std::string EtcdCluster::EndpointList() const { return absl::StrJoin(endpoints_, ","); }

void EtcdCluster::Kill(int i) {
  if (members_[i] == nullptr) return;
  members_[i]->Signal(SIGKILL);
  members_[i]->Wait(absl::Seconds(10));
  members_[i].reset();
}

absl::Status EtcdCluster::Restart(int i) {
  if (members_[i] != nullptr) return absl::FailedPreconditionError("member is running");
  if (absl::Status st = StartMember(i, false); !st.ok()) return st;
  if (!Ready(endpoints_[i], absl::Seconds(30))) {
    return absl::DeadlineExceededError(absl::StrCat("restarted member ", i, " not ready"));
  }
  return absl::OkStatus();
}

bool EtcdCluster::Ready(const std::string& endpoint, absl::Duration timeout) const {
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (tls_) {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = ReadFile(tls_->ca);
    o.pem_cert_chain = ReadFile(tls_->client_cert);
    o.pem_private_key = ReadFile(tls_->client_key);
    creds = grpc::SslCredentials(o);
  }
  auto channel = grpc::CreateChannel(endpoint, creds);
  auto kv = etcdserverpb::KV::NewStub(channel);
  return WaitFor(
      [&] {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
        etcdserverpb::RangeRequest req;
        req.set_key("upkeep-ready-probe");
        etcdserverpb::RangeResponse resp;
        return kv->Range(&ctx, req, &resp).ok();
      },
      timeout, absl::Milliseconds(50));
}

std::string EtcdCluster::Log(int i) const {
  return ReadFile(dir_.Join(absl::StrCat("m", i, ".log")));
}

}  // namespace upkeep::testing

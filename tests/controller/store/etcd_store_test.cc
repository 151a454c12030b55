// EtcdStore beyond the conformance suite, on a real 3-member etcd cluster: the event watch
// (live delivery, resuming from a fresh list after falling behind a compaction), and reads and
// writes that go on when the member in use is killed, and etcd over mutual TLS
// (--etcd-ca/--etcd-cert/--etcd-key).
#include "controller/store/etcd_store.h"

#include <atomic>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/proto_time.h"
#include "core/tls/tls.h"
#include "gtest/gtest.h"
#include "tests/support/etcd/etcd_cluster.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace upkeep::controller {
namespace {

namespace v1 = upkeep::v1;

v1::Event Ev(int i) {
  v1::Event e;
  e.set_stack(i % 2 ? "shop" : "blog");
  e.set_message(absl::StrCat(i));
  *e.mutable_at() = ToProto(absl::Now());
  return e;
}

class EtcdStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = testing::EtcdCluster::Start(3);
    ASSERT_TRUE(c.ok()) << c.status();
    etcd_ = std::move(*c);
    EtcdOptions o;
    o.endpoints = etcd_->endpoints();
    o.call_timeout = absl::Seconds(3);
    client_ = std::move(*EtcdClient::Connect(o));
    EtcdStoreOptions so;
    so.compact_keep_revisions = 0;  // compact to the head on every Prune
    store_ = std::move(*OpenEtcdStore(client_.get(), so));
  }
  std::unique_ptr<testing::EtcdCluster> etcd_;
  std::unique_ptr<EtcdClient> client_;
  std::unique_ptr<EtcdStore> store_;
};

TEST_F(EtcdStoreTest, WatchDeliversInOrderAndResumesFromAFreshListAfterACompaction) {
  for (int i = 1; i <= 5; ++i) {
    v1::Event e = Ev(i);
    ASSERT_TRUE(store_->AppendEvent(&e).ok());
  }
  absl::Mutex mu;
  std::vector<int64_t> seen;
  std::atomic<bool> stop{false};
  absl::Status result;
  std::thread watcher([&] {
    result = store_->WatchEvents(
        "shop", 0,
        [&](const v1::Event& e) {
          absl::MutexLock lock(&mu);
          seen.push_back(e.seq());
        },
        [&] { return stop.load(); });
  });
  auto count = [&] {
    absl::MutexLock lock(&mu);
    return seen.size();
  };
  ASSERT_TRUE(testing::WaitFor([&] { return count() == 3; }));  // 1, 3, 5
  v1::Event e6 = Ev(7);
  ASSERT_TRUE(store_->AppendEvent(&e6).ok());
  ASSERT_TRUE(testing::WaitFor([&] { return count() == 4; }));  // live

  stop = true;
  watcher.join();
  EXPECT_TRUE(result.ok()) << result;
  const int64_t resume_seq = e6.seq();
  const int64_t resume_revision = store_->SeenRevision() + 1;

  // Fall behind: the history after `resume_revision` is compacted away (Prune compacts to the
  // head here); a watch resuming there must list afresh instead of failing.
  for (int i = 10; i < 60; ++i) {
    v1::Event e = Ev(i);
    ASSERT_TRUE(store_->AppendEvent(&e).ok());
  }
  Retention r;
  r.events_max_count = 20;  // the oldest go
  ASSERT_TRUE(store_->Prune(r, absl::Now()).ok());
  {
    absl::MutexLock lock(&mu);
    seen.clear();
  }
  stop = false;
  std::thread resumed([&] {
    result = store_->WatchEvents(
        "shop", resume_seq,
        [&](const v1::Event& e) {
          absl::MutexLock lock(&mu);
          seen.push_back(e.seq());
        },
        [&] { return stop.load(); }, resume_revision);
  });
  const int64_t last = store_->TailEvents("shop", 1)->back().seq();
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        absl::MutexLock lock(&mu);
        return !seen.empty() && seen.back() == last;
      },
      absl::Seconds(20)));
  stop = true;
  resumed.join();
  EXPECT_TRUE(result.ok()) << result;
  EXPECT_EQ(store_->watch_relists(), 1) << "the watch did not list afresh after the compaction";
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(seen.size(), 10u);  // the "shop" events among the 20 kept
  }
  absl::MutexLock lock(&mu);
  for (size_t i = 1; i < seen.size(); ++i) EXPECT_GT(seen[i], seen[i - 1]) << "out of order";
}

TEST_F(EtcdStoreTest, ReadsAndWritesGoOnWhenTheMemberInUseIsKilled) {
  v1::Event e = Ev(1);
  ASSERT_TRUE(store_->AppendEvent(&e).ok());
  etcd_->Kill(0);  // calls went to member 0 so far
  for (int i = 2; i < 10; ++i) {
    v1::Event x = Ev(i);
    ASSERT_TRUE(store_->AppendEvent(&x).ok()) << i;
  }
  auto all = store_->ListEvents("", 0, 100);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), 9u);
}

// etcd requiring client certificates (--client-cert-auth): the store works with the CA, a
// certificate and key; a client whose certificate another CA signed, and one that sends none,
// are refused and nothing they tried is written.
TEST(EtcdStoreTls, MutualTlsWorksAndStrangersAreRefused) {
  testing::TempDir dir;
  const std::string pki = dir.Join("pki"), other = dir.Join("other");
  ASSERT_TRUE(tls::InitCa(pki).ok());
  ASSERT_TRUE(tls::InitCa(other).ok());
  // etcd's own server certificate for 127.0.0.1, and client certificates (clientAuth) from
  // each CA: etcd checks the chain and the key usage, not upkeep's identity URI.
  auto server = tls::Issue(pki, tls::IssueRequest::Controller("etcd", {"127.0.0.1"}));
  auto client = tls::Issue(pki, tls::IssueRequest::Agent("controller-1"));
  auto stranger = tls::Issue(other, tls::IssueRequest::Agent("controller-1"));
  ASSERT_TRUE(server.ok() && client.ok() && stranger.ok());
  testing::EtcdTls t{pki + "/ca.crt", server->cert, server->key, client->cert, client->key};
  auto etcd = testing::EtcdCluster::Start(1, t);
  ASSERT_TRUE(etcd.ok()) << etcd.status();

  EtcdOptions o;
  auto endpoints = ParseEtcdEndpoints("https://" + (*etcd)->endpoints()[0]);  // as the flag
  ASSERT_TRUE(endpoints.ok()) << endpoints.status();
  o.endpoints = *endpoints;
  o.ca = pki + "/ca.crt";
  o.cert = client->cert;
  o.key = client->key;
  o.call_timeout = absl::Seconds(3);
  auto c = EtcdClient::Connect(o);
  ASSERT_TRUE(c.ok()) << c.status();
  auto store = OpenEtcdStore(c->get(), EtcdStoreOptions{});
  ASSERT_TRUE(store.ok()) << store.status();
  v1::Event e = Ev(1);
  ASSERT_TRUE((*store)->AppendEvent(&e).ok());

  // Attempts that must fail: a certificate from another CA; no certificate at all.
  EtcdOptions bad = o;
  bad.cert = stranger->cert;
  bad.key = stranger->key;
  auto bad_client = EtcdClient::Connect(bad);
  if (bad_client.ok()) {
    auto bad_store = OpenEtcdStore(bad_client->get(), EtcdStoreOptions{});
    if (bad_store.ok()) {
      v1::Event x = Ev(2);
      EXPECT_FALSE((*bad_store)->AppendEvent(&x).ok());
    }
  }
  grpc::SslCredentialsOptions no_cert;
  no_cert.pem_root_certs = [&] {
    std::ifstream in(pki + "/ca.crt");
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }();
  auto kv = etcdserverpb::KV::NewStub(
      grpc::CreateChannel((*etcd)->endpoints()[0], grpc::SslCredentials(no_cert)));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
  etcdserverpb::PutRequest put;
  put.set_key("/upkeep/intruder");
  put.set_value("x");
  etcdserverpb::PutResponse put_resp;
  EXPECT_FALSE(kv->Put(&ctx, put, &put_resp).ok()) << "etcd took a write without a certificate";

  auto events = (*store)->ListEvents("", 0, 100);
  ASSERT_TRUE(events.ok()) << events.status();
  EXPECT_EQ(events->size(), 1u);
}

}  // namespace
}  // namespace upkeep::controller

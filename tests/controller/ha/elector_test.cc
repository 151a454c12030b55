// Leader election and fencing on a real 3-member etcd cluster: one leader at a time; a leader
// that resigns, whose lease is revoked, or that is cut off from etcd stops leading, and a
// write it attempts with its old fence is refused and leaves nothing behind.
#include "controller/ha/elector.h"

#include <atomic>

#include "absl/strings/str_cat.h"
#include "controller/ha/replica.h"
#include "controller/store/etcd_store.h"
#include "core/proto_time.h"
#include "gtest/gtest.h"
#include "tests/support/etcd/etcd_cluster.h"
#include "tests/support/etcd/tcp_proxy.h"
#include "tests/support/wait.h"

namespace upkeep::controller {
namespace {

namespace v1 = upkeep::v1;

testing::EtcdCluster* g_etcd = nullptr;
int g_n = 0;

class ElectorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto c = testing::EtcdCluster::Start(3);
    ASSERT_TRUE(c.ok()) << c.status();
    g_etcd = c->release();
  }
  static void TearDownTestSuite() {
    delete g_etcd;
    g_etcd = nullptr;
  }
  void SetUp() override {
    ++g_n;
    name_ = absl::StrCat("/test", g_n, "/leader");
    prefix_ = absl::StrCat("/test", g_n, "/");
  }
  std::unique_ptr<EtcdClient> Client(std::vector<std::string> endpoints = {}) {
    EtcdOptions o;
    o.endpoints = endpoints.empty() ? g_etcd->endpoints() : endpoints;
    o.call_timeout = absl::Seconds(2);
    return std::move(*EtcdClient::Connect(o));
  }
  ElectorOptions Opts(const std::string& value) {
    ElectorOptions o;
    o.name = name_;
    o.value = value;
    o.ttl = absl::Seconds(3);
    o.safety = absl::Milliseconds(800);
    return o;
  }
  std::unique_ptr<EtcdStore> Store(EtcdClient* c) {
    EtcdStoreOptions o;
    o.prefix = prefix_;
    o.require_fence = true;
    return std::move(*OpenEtcdStore(c, o));
  }
  static v1::ActionRecord Rec(const std::string& id) {
    v1::ActionRecord r;
    r.mutable_action()->set_id(id);
    *r.mutable_requested_at() = ToProto(absl::Now());
    return r;
  }

  std::string name_, prefix_;
};

// A replica: its client, store, elector, and what the elector told it.
struct Replica {
  std::unique_ptr<EtcdClient> client;
  std::unique_ptr<EtcdStore> store;
  std::unique_ptr<Elector> elector;
  std::atomic<bool> elected{false};
  std::atomic<bool> lost{false};
  std::atomic<int64_t> lost_at_ns{0};
  absl::Status Start() {
    return elector->Start(
        [this](const Fence& f) {
          store->SetFence(f);
          elected = true;
        },
        [this] {
          store->SetFence(std::nullopt);
          lost_at_ns = absl::ToUnixNanos(absl::Now());
          lost = true;
        });
  }
};

TEST_F(ElectorTest, OneLeaderAtATimeAndResignHandsOver) {
  Replica a, b;
  a.client = Client();
  b.client = Client();
  a.store = Store(a.client.get());
  b.store = Store(b.client.get());
  a.elector = std::make_unique<Elector>(a.client.get(), Opts("a:1"));
  b.elector = std::make_unique<Elector>(b.client.get(), Opts("b:1"));
  ASSERT_TRUE(a.Start().ok());
  ASSERT_TRUE(testing::WaitFor([&] { return a.elected.load(); }));
  ASSERT_TRUE(b.Start().ok());
  EXPECT_EQ(*b.elector->Leader(), "a:1");
  EXPECT_FALSE(b.elector->leading());
  // The follower's store refuses writes; the leader's succeeds.
  EXPECT_TRUE(absl::IsFailedPrecondition(b.store->PutAction(Rec("x1"))));
  ASSERT_TRUE(a.store->PutAction(Rec("a1")).ok());

  a.elector->Stop();  // resigns
  ASSERT_TRUE(testing::WaitFor([&] { return b.elected.load(); }));
  EXPECT_EQ(*b.elector->Leader(), "b:1");
  ASSERT_TRUE(b.store->PutAction(Rec("b1")).ok());
  EXPECT_TRUE(b.store->GetAction("a1").ok());
  EXPECT_TRUE(absl::IsNotFound(b.store->GetAction("x1").status()));
}

TEST_F(ElectorTest, DeposedLeaderCannotWriteWithItsOldFence) {
  Replica a, b;
  a.client = Client();
  b.client = Client();
  a.store = Store(a.client.get());
  b.store = Store(b.client.get());
  a.elector = std::make_unique<Elector>(a.client.get(), Opts("a:1"));
  b.elector = std::make_unique<Elector>(b.client.get(), Opts("b:1"));
  ASSERT_TRUE(a.Start().ok());
  ASSERT_TRUE(testing::WaitFor([&] { return a.elected.load(); }));
  ASSERT_TRUE(b.Start().ok());
  // Keep A's fence as a deposed leader that has not noticed yet would.
  auto stale = std::make_unique<EtcdStore>(a.client.get(), EtcdStoreOptions{prefix_, true});
  {
    v3electionpb::LeaderRequest req;
    req.set_name(name_);
    v3electionpb::LeaderResponse resp;
    ASSERT_TRUE(a.client
                    ->Call([&](const EtcdClient::Stubs& s, grpc::ClientContext* ctx) {
                      return s.election->Leader(ctx, req, &resp);
                    })
                    .ok());
    stale->SetFence(Fence{resp.kv().key(), resp.kv().create_revision()});
  }
  ASSERT_TRUE(stale->PutAction(Rec("before")).ok());
  // A's lease ends (as when etcd expires it); B is elected.
  ASSERT_TRUE(b.client->LeaseRevoke(a.elector->lease()).ok());
  ASSERT_TRUE(testing::WaitFor([&] { return b.elected.load(); }));
  absl::Status st = stale->PutAction(Rec("after"));
  EXPECT_TRUE(absl::IsFailedPrecondition(st)) << st;
  v1::Event e;
  EXPECT_TRUE(absl::IsFailedPrecondition(stale->AppendEvent(&e)));
  EXPECT_TRUE(absl::IsNotFound(b.store->GetAction("after").status()));
  EXPECT_TRUE(b.store->GetAction("before").ok());
  // A's own elector notices at its next keep-alive.
  EXPECT_TRUE(testing::WaitFor([&] { return a.lost.load(); }));
  EXPECT_FALSE(a.elector->leading());
}

TEST_F(ElectorTest, LeaderCutOffFromEtcdStepsDownBeforeAnotherIsElected) {
  // A reaches etcd only through proxies; cutting them partitions A from the whole cluster.
  std::vector<std::unique_ptr<testing::TcpProxy>> proxies;
  std::vector<std::string> via;
  for (const auto& e : g_etcd->endpoints()) {
    auto p = testing::TcpProxy::Start(e);
    ASSERT_TRUE(p.ok()) << p.status();
    via.push_back((*p)->address());
    proxies.push_back(std::move(*p));
  }
  Replica a, b;
  a.client = Client(via);
  b.client = Client();
  a.store = Store(a.client.get());
  b.store = Store(b.client.get());
  a.elector = std::make_unique<Elector>(a.client.get(), Opts("a:1"));
  b.elector = std::make_unique<Elector>(b.client.get(), Opts("b:1"));
  std::atomic<int64_t> b_elected_ns{0};
  ASSERT_TRUE(a.Start().ok());
  ASSERT_TRUE(testing::WaitFor([&] { return a.elected.load(); }));
  ASSERT_TRUE(b.elector
                  ->Start(
                      [&](const Fence& f) {
                        b.store->SetFence(f);
                        b_elected_ns = absl::ToUnixNanos(absl::Now());
                        b.elected = true;
                      },
                      [] {})
                  .ok());
  ASSERT_TRUE(a.store->PutAction(Rec("a1")).ok());
  for (auto& p : proxies) p->Cut();
  ASSERT_TRUE(testing::WaitFor([&] { return b.elected.load(); }, absl::Seconds(20)));
  ASSERT_TRUE(a.lost.load()) << "B was elected while A still thought it led";
  EXPECT_LT(a.lost_at_ns.load(), b_elected_ns.load());
  // A cannot record anything now (no fence; etcd unreachable anyway).
  EXPECT_FALSE(a.store->PutAction(Rec("a2")).ok());
  EXPECT_TRUE(absl::IsNotFound(b.store->GetAction("a2").status()));
}

TEST_F(ElectorTest, RegistryListsReplicasWithRoles) {
  Replica a, b;
  a.client = Client();
  b.client = Client();
  a.store = Store(a.client.get());
  b.store = Store(b.client.get());
  a.elector = std::make_unique<Elector>(a.client.get(), Opts("a:1"));
  b.elector = std::make_unique<Elector>(b.client.get(), Opts("b:1"));
  ASSERT_TRUE(a.Start().ok());
  ASSERT_TRUE(testing::WaitFor([&] { return a.elected.load(); }));
  ASSERT_TRUE(b.Start().ok());
  ReplicaRegistry ra(a.store.get(), a.elector.get(), "a:1", absl::Milliseconds(100));
  ReplicaRegistry rb(b.store.get(), b.elector.get(), "b:1", absl::Milliseconds(100));
  ra.Start();
  rb.Start();
  auto list = rb.List();
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->replicas_size(), 2);
  EXPECT_EQ(list->leader(), "a:1");
  EXPECT_EQ(list->replicas(0).address(), "a:1");
  EXPECT_EQ(list->replicas(0).role(), "leader");
  EXPECT_EQ(list->replicas(1).role(), "follower");
  EXPECT_GE(list->replicas(1).lag(), 0);
  EXPECT_EQ(rb.leader(), "a:1");
  // A replica that goes away leaves the list with its lease.
  ra.Stop();
  a.elector->Stop();
  ASSERT_TRUE(testing::WaitFor([&] {
    auto l = rb.List();
    return l.ok() && l->replicas_size() == 1 && l->replicas(0).role() == "leader";
  }));
}

}  // namespace
}  // namespace upkeep::controller

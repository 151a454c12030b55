// One suite, every Store: each test runs against SqliteStore (a fresh database file) and
// EtcdStore (a fresh key prefix on a real 3-member etcd cluster started once for the suite).
#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "controller/store/etcd_client.h"
#include "controller/store/etcd_store.h"
#include "controller/store/store.h"
#include "core/proto_time.h"
#include "gtest/gtest.h"
#include "tests/support/etcd/etcd_cluster.h"
#include "tests/support/temp_dir.h"

namespace upkeep::controller {
namespace {

namespace v1 = upkeep::v1;

const absl::Time kT0 = absl::FromUnixSeconds(1800000000);

v1::Stack MakeStack(const std::string& name, const std::string& host) {
  v1::Stack s;
  s.set_api_version("upkeep/v1");
  s.set_kind("Stack");
  s.mutable_metadata()->set_name(name);
  s.mutable_spec()->add_hosts(host);
  return s;
}

v1::Event Ev(const std::string& stack, absl::Time at, int i) {
  v1::Event e;
  e.set_stack(stack);
  e.set_reason("X");
  e.set_message(absl::StrCat(i));
  *e.mutable_at() = ToProto(at);
  return e;
}

v1::ActionRecord Rec(const std::string& id, absl::Time at, const std::string& stack = "shop",
                     const std::string& host = "h1") {
  v1::ActionRecord r;
  r.mutable_action()->set_id(id);
  r.mutable_action()->set_stack(stack);
  r.mutable_action()->set_host(host);
  *r.mutable_requested_at() = ToProto(at);
  return r;
}

// The etcd cluster outlives every test of the suite; each test gets its own prefix.
testing::EtcdCluster* g_etcd = nullptr;
std::unique_ptr<EtcdClient> g_client;
int g_prefix = 0;

class StoreTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    if (g_etcd != nullptr) return;
    auto c = testing::EtcdCluster::Start(3);
    ASSERT_TRUE(c.ok()) << c.status();
    g_etcd = c->release();
    EtcdOptions o;
    o.endpoints = g_etcd->endpoints();
    auto client = EtcdClient::Connect(o);
    ASSERT_TRUE(client.ok()) << client.status();
    g_client = std::move(*client);
  }
  static void TearDownTestSuite() {
    g_client.reset();
    delete g_etcd;
    g_etcd = nullptr;
  }
  void SetUp() override { store_ = Open(); }
  std::unique_ptr<Store> Open() {
    if (GetParam() == "sqlite") {
      auto s = OpenSqliteStore(dir_.path());
      EXPECT_TRUE(s.ok()) << s.status();
      return s.ok() ? std::move(*s) : nullptr;
    }
    if (prefix_.empty()) prefix_ = absl::StrCat("/conformance/", ++g_prefix, "/");
    EtcdStoreOptions o;
    o.prefix = prefix_;
    auto s = OpenEtcdStore(g_client.get(), o);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::unique_ptr<Store>(std::move(*s)) : nullptr;
  }

  testing::TempDir dir_;
  std::string prefix_;
  std::unique_ptr<Store> store_;
};

TEST_P(StoreTest, ApplyCountsGenerationsAndRevisions) {
  auto first = store_->ApplyStacks({MakeStack("shop", "h1"), MakeStack("blog", "h2")});
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->size(), 2u);
  EXPECT_EQ((*first)[0].change(), "created");
  EXPECT_EQ((*first)[0].generation(), 1);
  EXPECT_LT((*first)[0].revision(), (*first)[1].revision());

  auto again = store_->ApplyStacks({MakeStack("shop", "h1")});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)[0].change(), "unchanged");
  EXPECT_EQ((*again)[0].revision(), (*first)[0].revision());

  v1::Stack moved = MakeStack("shop", "h3");
  moved.mutable_metadata()->set_source("other.yaml");
  auto changed = store_->ApplyStacks({moved});
  ASSERT_TRUE(changed.ok());
  EXPECT_EQ((*changed)[0].change(), "configured");
  EXPECT_EQ((*changed)[0].generation(), 2);
  EXPECT_GT((*changed)[0].revision(), (*first)[1].revision());

  auto stacks = store_->ListStacks();
  ASSERT_TRUE(stacks.ok());
  ASSERT_EQ(stacks->size(), 2u);
  EXPECT_EQ((*stacks)[0].metadata().name(), "blog");  // name order
  EXPECT_EQ((*stacks)[1].spec().hosts(0), "h3");
  EXPECT_EQ((*stacks)[1].metadata().generation(), 2);
  EXPECT_EQ((*stacks)[1].metadata().revision(), (*changed)[0].revision());
}

TEST_P(StoreTest, OnlySourceChangedIsUnchanged) {
  ASSERT_TRUE(store_->ApplyStacks({MakeStack("shop", "h1")}).ok());
  v1::Stack s = MakeStack("shop", "h1");
  s.mutable_metadata()->set_source("moved.yaml");
  auto r = store_->ApplyStacks({s});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)[0].change(), "unchanged");
}

TEST_P(StoreTest, DeleteStatusAndPause) {
  ASSERT_TRUE(store_->ApplyStacks({MakeStack("shop", "h1")}).ok());
  v1::StackStatus st;
  st.set_observed_generation(1);
  st.add_conditions()->set_type("Healthy");
  ASSERT_TRUE(store_->SaveStatus("shop", st).ok());
  ASSERT_TRUE(store_->SetStackPaused("shop", true).ok());
  auto stacks = store_->ListStacks();
  ASSERT_EQ(stacks->size(), 1u);
  EXPECT_EQ((*stacks)[0].status().observed_generation(), 1);
  EXPECT_EQ((*stacks)[0].status().conditions(0).type(), "Healthy");
  EXPECT_TRUE((*stacks)[0].status().paused());
  // A status save does not resume it.
  ASSERT_TRUE(store_->SaveStatus("shop", st).ok());
  EXPECT_TRUE((*store_->ListStacks())[0].status().paused());
  ASSERT_TRUE(store_->SetStackPaused("shop", false).ok());
  EXPECT_FALSE((*store_->ListStacks())[0].status().paused());

  EXPECT_TRUE(absl::IsNotFound(store_->SetStackPaused("nope", true)));
  EXPECT_TRUE(absl::IsNotFound(store_->DeleteStack("nope")));
  ASSERT_TRUE(store_->DeleteStack("shop").ok());
  EXPECT_TRUE(store_->ListStacks()->empty());
  EXPECT_TRUE(absl::IsNotFound(store_->DeleteStack("shop")));
  // Re-created: a fresh generation, no old status or pause.
  ASSERT_TRUE(store_->ApplyStacks({MakeStack("shop", "h1")}).ok());
  auto again = store_->ListStacks();
  EXPECT_EQ((*again)[0].metadata().generation(), 1);
  EXPECT_FALSE((*again)[0].status().paused());
}

TEST_P(StoreTest, PausedHosts) {
  ASSERT_TRUE(store_->SetHostPaused("h1", true).ok());
  ASSERT_TRUE(store_->SetHostPaused("h2", true).ok());
  ASSERT_TRUE(store_->SetHostPaused("h1", false).ok());
  auto paused = store_->PausedHosts();
  ASSERT_TRUE(paused.ok());
  EXPECT_EQ(*paused, (std::set<std::string>{"h2"}));
}

// `pause host H --for D` keeps its end in the store: a restarted controller (a reopened store)
// still knows when to resume; a pause with no end, or a resume, forgets it.
TEST_P(StoreTest, HostPausesKeepTheirEndAcrossAReopen) {
  const absl::Time until = absl::FromUnixMillis(1'900'000'123'456);
  ASSERT_TRUE(store_->PauseHostUntil("h1", until).ok());
  ASSERT_TRUE(store_->SetHostPaused("h2", true).ok());
  ASSERT_TRUE(store_->PauseHostUntil("h3", until).ok());
  ASSERT_TRUE(store_->SetHostPaused("h3", false).ok());
  store_ = Open();
  ASSERT_NE(store_, nullptr);
  auto pauses = store_->HostPauses();
  ASSERT_TRUE(pauses.ok()) << pauses.status();
  EXPECT_EQ(*pauses,
            (std::map<std::string, absl::Time>{{"h1", until}, {"h2", absl::InfiniteFuture()}}));
  auto paused = store_->PausedHosts();
  ASSERT_TRUE(paused.ok());
  EXPECT_EQ(*paused, (std::set<std::string>{"h1", "h2"}));
  // Paused again with no end: the old end is gone; a new end replaces the old.
  ASSERT_TRUE(store_->SetHostPaused("h1", true).ok());
  ASSERT_TRUE(store_->PauseHostUntil("h2", until + absl::Minutes(30)).ok());
  ASSERT_TRUE(store_->PauseHostUntil("h4", absl::InfiniteFuture()).ok());
  pauses = store_->HostPauses();
  ASSERT_TRUE(pauses.ok());
  EXPECT_EQ(*pauses, (std::map<std::string, absl::Time>{{"h1", absl::InfiniteFuture()},
                                                        {"h2", until + absl::Minutes(30)},
                                                        {"h4", absl::InfiniteFuture()}}));
}

TEST_P(StoreTest, EventsGetIncreasingSeqsAndFilterByStack) {
  std::vector<int64_t> seqs;
  for (int i = 0; i < 30; ++i) {
    v1::Event e = Ev(i % 3 == 0 ? "shop" : "blog", kT0, i);
    ASSERT_TRUE(store_->AppendEvent(&e).ok());
    seqs.push_back(e.seq());
  }
  for (size_t i = 1; i < seqs.size(); ++i) EXPECT_GT(seqs[i], seqs[i - 1]);
  auto all = store_->ListEvents("", 0, 1000);
  ASSERT_EQ(all->size(), 30u);
  EXPECT_EQ(all->front().seq(), seqs[0]);
  auto after = store_->ListEvents("", seqs[9], 5);
  ASSERT_EQ(after->size(), 5u);
  EXPECT_EQ(after->front().message(), "10");
  auto shop = store_->ListEvents("shop", 0, 1000);
  ASSERT_EQ(shop->size(), 10u);
  EXPECT_EQ((*shop)[1].message(), "3");
  auto shop_after = store_->ListEvents("shop", seqs[3], 2);
  ASSERT_EQ(shop_after->size(), 2u);
  EXPECT_EQ((*shop_after)[0].message(), "6");
}

TEST_P(StoreTest, TailEventsReturnsTheNewestOldestFirst) {
  for (int i = 0; i < 50; ++i) {
    v1::Event e = Ev(i % 2 ? "shop" : "blog", kT0, i);
    ASSERT_TRUE(store_->AppendEvent(&e).ok());
  }
  auto tail = store_->TailEvents("shop", 3);
  ASSERT_TRUE(tail.ok());
  ASSERT_EQ(tail->size(), 3u);
  EXPECT_EQ((*tail)[0].message(), "45");
  EXPECT_EQ((*tail)[2].message(), "49");
  EXPECT_EQ(store_->TailEvents("", 100)->size(), 50u);
  EXPECT_EQ(store_->TailEvents("nope", 10)->size(), 0u);
}

TEST_P(StoreTest, ActionsPutReplaceGetAndList) {
  ASSERT_TRUE(store_->PutAction(Rec("a1", kT0, "shop", "h1")).ok());
  ASSERT_TRUE(store_->PutAction(Rec("a2", kT0 + absl::Seconds(1), "blog", "h2")).ok());
  ASSERT_TRUE(store_->PutAction(Rec("a3", kT0 + absl::Seconds(2), "shop", "h2")).ok());
  v1::ActionRecord done = Rec("a1", kT0, "shop", "h1");
  done.mutable_result()->set_id("a1");
  ASSERT_TRUE(store_->PutAction(done).ok());
  auto got = store_->GetAction("a1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->result().id(), "a1");
  EXPECT_TRUE(absl::IsNotFound(store_->GetAction("zz").status()));

  auto all = store_->ListActions("", "", 10);
  ASSERT_EQ(all->size(), 3u);  // replaced, not added
  EXPECT_EQ((*all)[0].action().id(), "a1");
  EXPECT_EQ((*all)[2].action().id(), "a3");
  auto newest = store_->ListActions("", "", 2);
  ASSERT_EQ(newest->size(), 2u);
  EXPECT_EQ((*newest)[0].action().id(), "a2");
  auto shop = store_->ListActions("shop", "", 10);
  ASSERT_EQ(shop->size(), 2u);
  auto h2 = store_->ListActions("", "h2", 10);
  ASSERT_EQ(h2->size(), 2u);
  auto shop_h2 = store_->ListActions("shop", "h2", 10);
  ASSERT_EQ(shop_h2->size(), 1u);
  EXPECT_EQ((*shop_h2)[0].action().id(), "a3");
}

TEST_P(StoreTest, PruneKeepsEventsAndActionsWithinAgeAndCount) {
  for (int i = 0; i < 100; ++i) {
    v1::Event e = Ev("shop", kT0 + absl::Minutes(i), i);
    ASSERT_TRUE(store_->AppendEvent(&e).ok());
    ASSERT_TRUE(store_->PutAction(Rec(absl::StrCat("a", i), kT0 + absl::Minutes(i))).ok());
  }
  Retention r;
  r.events_max_count = 60;
  r.events_max_age = absl::Minutes(30);
  r.actions_max_count = 20;
  r.actions_max_age = absl::Hours(1);
  auto stats = store_->Prune(r, kT0 + absl::Minutes(99));
  ASSERT_TRUE(stats.ok()) << stats.status();
  auto events = store_->ListEvents("", 0, 1000);
  ASSERT_EQ(events->size(), 31u);  // minutes 69..99: younger than 30 min
  EXPECT_EQ(events->front().message(), "69");
  auto actions = store_->ListActions("", "", 1000);
  ASSERT_EQ(actions->size(), 20u);
  EXPECT_EQ(actions->front().action().id(), "a80");
  EXPECT_EQ(stats->events, 69);
  EXPECT_EQ(stats->actions, 80);
  EXPECT_TRUE(absl::IsNotFound(store_->GetAction("a0").status()));
  EXPECT_TRUE(store_->GetAction("a99").ok());
  // Seqs go on after pruning; the tail still finds the newest.
  v1::Event e = Ev("shop", kT0 + absl::Minutes(100), 100);
  ASSERT_TRUE(store_->AppendEvent(&e).ok());
  EXPECT_GT(e.seq(), events->back().seq());
  auto tail = store_->TailEvents("shop", 2);
  ASSERT_EQ(tail->size(), 2u);
  EXPECT_EQ((*tail)[1].message(), "100");
}

TEST_P(StoreTest, ReopenedStoreHasWhatWasWritten) {
  ASSERT_TRUE(store_->ApplyStacks({MakeStack("shop", "h1")}).ok());
  v1::Event e = Ev("shop", kT0, 1);
  ASSERT_TRUE(store_->AppendEvent(&e).ok());
  ASSERT_TRUE(store_->PutAction(Rec("a1", kT0)).ok());
  store_.reset();
  auto reopened = Open();
  ASSERT_NE(reopened, nullptr);
  EXPECT_EQ(reopened->ListStacks()->size(), 1u);
  EXPECT_EQ(reopened->ListEvents("", 0, 10)->size(), 1u);
  EXPECT_TRUE(reopened->GetAction("a1").ok());
}

v1::Notifier MakeNotifier(const std::string& name, const std::string& url_env) {
  v1::Notifier n;
  n.set_api_version("upkeep/v1");
  n.set_kind("Notifier");
  n.mutable_metadata()->set_name(name);
  n.mutable_spec()->set_type(v1::NOTIFIER_TYPE_WEBHOOK);
  n.mutable_spec()->mutable_url()->set_env(url_env);
  n.mutable_spec()->add_events("alerts");
  return n;
}

TEST_P(StoreTest, NotifiersKeepSpecAndDeliveryStatusApart) {
  v1::Notifier ops = MakeNotifier("ops", "HOOK");
  ops.mutable_status()->set_sent(99);  // a status given with the spec is not stored
  ASSERT_TRUE(store_->PutNotifier(ops).ok());
  ASSERT_TRUE(store_->PutNotifier(MakeNotifier("alpha", "ALPHA_HOOK")).ok());
  auto list = store_->ListNotifiers();
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].metadata().name(), "alpha");  // name order
  EXPECT_EQ((*list)[1].spec().url().env(), "HOOK");
  EXPECT_EQ((*list)[1].status().sent(), 0);

  v1::NotifierStatus st;
  st.set_sent(3);
  st.set_failed(1);
  st.set_last_error("HTTP 503");
  st.set_last_http_status(503);
  *st.mutable_last_success() = ToProto(kT0);
  ASSERT_TRUE(store_->SaveNotifierStatus("ops", st).ok());
  // A new spec keeps the delivery status.
  v1::Notifier changed = MakeNotifier("ops", "OTHER_HOOK");
  ASSERT_TRUE(store_->PutNotifier(changed).ok());
  list = store_->ListNotifiers();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[1].spec().url().env(), "OTHER_HOOK");
  EXPECT_EQ((*list)[1].status().sent(), 3);
  EXPECT_EQ((*list)[1].status().failed(), 1);
  EXPECT_EQ((*list)[1].status().last_error(), "HTTP 503");
  EXPECT_EQ(FromProto((*list)[1].status().last_success()), kT0);

  // A status saved for a notifier that is gone does not bring it back.
  ASSERT_TRUE(store_->SaveNotifierStatus("gone", st).ok());
  ASSERT_TRUE(store_->DeleteNotifier("ops").ok());
  EXPECT_TRUE(store_->SaveNotifierStatus("ops", st).ok());
  EXPECT_EQ(store_->DeleteNotifier("ops").code(), absl::StatusCode::kNotFound);
  list = store_->ListNotifiers();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].metadata().name(), "alpha");
  // Applied again after a delete, it starts from an empty status.
  ASSERT_TRUE(store_->PutNotifier(MakeNotifier("ops", "HOOK")).ok());
  list = store_->ListNotifiers();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[1].status().sent(), 0);

  store_.reset();
  auto reopened = Open();
  ASSERT_NE(reopened, nullptr);
  ASSERT_TRUE(reopened->SaveNotifierStatus("alpha", st).ok());
  auto again = reopened->ListNotifiers();
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->size(), 2u);
  EXPECT_EQ((*again)[0].status().sent(), 3);
}

INSTANTIATE_TEST_SUITE_P(Stores, StoreTest, ::testing::Values("sqlite", "etcd"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace upkeep::controller

// SqliteStore on a real database file: retention by age and count, the newest events, records.
#include <sqlite3.h>

#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "controller/store/store.h"
#include "core/proto_time.h"
#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace upkeep::controller {
namespace {

namespace v1 = upkeep::v1;

const absl::Time kT0 = absl::FromUnixSeconds(1800000000);

v1::Event Ev(const std::string& stack, absl::Time at, int i) {
  v1::Event e;
  e.set_stack(stack);
  e.set_reason("X");
  e.set_message(absl::StrCat(i));
  *e.mutable_at() = ToProto(at);
  return e;
}

v1::ActionRecord Rec(const std::string& id, absl::Time at) {
  v1::ActionRecord r;
  r.mutable_action()->set_id(id);
  r.mutable_action()->set_stack("shop");
  r.mutable_action()->set_host("h1");
  *r.mutable_requested_at() = ToProto(at);
  return r;
}

TEST(SqliteStore, TailEventsReturnsTheNewestOldestFirst) {
  testing::TempDir dir;
  auto store = std::move(*OpenSqliteStore(dir.path()));
  for (int i = 0; i < 50; ++i) {
    v1::Event e = Ev(i % 2 ? "shop" : "blog", kT0, i);
    ASSERT_TRUE(store->AppendEvent(&e).ok());
  }
  auto tail = store->TailEvents("shop", 3);
  ASSERT_TRUE(tail.ok());
  ASSERT_EQ(tail->size(), 3u);
  EXPECT_EQ((*tail)[0].message(), "45");
  EXPECT_EQ((*tail)[2].message(), "49");
  EXPECT_EQ(store->TailEvents("", 100)->size(), 50u);
}

TEST(SqliteStore, PruneKeepsEventsAndActionsWithinAgeAndCount) {
  testing::TempDir dir;
  auto store = std::move(*OpenSqliteStore(dir.path()));
  for (int i = 0; i < 100; ++i) {
    v1::Event e = Ev("shop", kT0 + absl::Minutes(i), i);
    ASSERT_TRUE(store->AppendEvent(&e).ok());
    ASSERT_TRUE(store->PutAction(Rec(absl::StrCat("a", i), kT0 + absl::Minutes(i))).ok());
  }
  Retention r;
  r.events_max_count = 60;
  r.events_max_age = absl::Minutes(30);
  r.actions_max_count = 20;
  r.actions_max_age = absl::Hours(1);
  auto stats = store->Prune(r, kT0 + absl::Minutes(99));
  ASSERT_TRUE(stats.ok()) << stats.status();
  auto events = store->ListEvents("", 0, 1000);
  ASSERT_EQ(events->size(), 31u);  // minutes 69..99: younger than 30 min
  EXPECT_EQ(events->front().message(), "69");
  auto actions = store->ListActions("", "", 1000);
  ASSERT_EQ(actions->size(), 20u);
  EXPECT_EQ(actions->front().action().id(), "a80");
  EXPECT_EQ(stats->events, 69);
  EXPECT_EQ(stats->actions, 80);
  EXPECT_TRUE(absl::IsNotFound(store->GetAction("a0").status()));
  EXPECT_TRUE(store->GetAction("a99").ok());
}

TEST(SqliteStore, ReopensAnExistingDatabaseWithItsEvents) {
  testing::TempDir dir;
  {
    auto store = std::move(*OpenSqliteStore(dir.path()));
    v1::Event e = Ev("shop", kT0, 1);
    ASSERT_TRUE(store->AppendEvent(&e).ok());
  }
  auto store = OpenSqliteStore(dir.path());
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->ListEvents("", 0, 10)->size(), 1u);
  Retention r;
  r.events_max_age = absl::Hours(1);
  ASSERT_TRUE((*store)->Prune(r, kT0 + absl::Hours(2)).ok());
  EXPECT_EQ((*store)->ListEvents("", 0, 10)->size(), 0u);
}

// A version 3 database (hosts without an end to their pause) is migrated: its paused hosts stay
// paused with no end, and a pause with an end can be stored.
TEST(SqliteStore, MigratesVersion3HostPauses) {
  testing::TempDir dir;
  ASSERT_TRUE(OpenSqliteStore(dir.path()).ok());
  {
    // Back to version 3's hosts table.
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(dir.Join("upkeep.db").c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "ALTER TABLE hosts DROP COLUMN paused_until_ms;"
                           "INSERT INTO hosts VALUES('h1', 1), ('h2', 0);"
                           "PRAGMA user_version=3;",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  auto store = OpenSqliteStore(dir.path());
  ASSERT_TRUE(store.ok()) << store.status();
  auto pauses = (*store)->HostPauses();
  ASSERT_TRUE(pauses.ok()) << pauses.status();
  EXPECT_EQ(*pauses, (std::map<std::string, absl::Time>{{"h1", absl::InfiniteFuture()}}));
  ASSERT_TRUE((*store)->PauseHostUntil("h2", kT0).ok());
  EXPECT_EQ((*(*store)->HostPauses())["h2"], kT0);
}

}  // namespace
}  // namespace upkeep::controller

// EventBus over a real SQLite store: delivery, filters, and that a subscription's callback
// never runs after its handle is gone (the WatchEvents use-after-free).
#include "controller/events/event_bus.h"

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace upkeep::controller {
namespace {

namespace v1 = upkeep::v1;

class EventBusTest : public ::testing::Test {
 protected:
  void SetUp() override { store_ = std::move(*OpenSqliteStore(dir_.path())); }
  testing::TempDir dir_;
  std::unique_ptr<Store> store_;
  SimulatedClock clock_;
};

TEST_F(EventBusTest, StoresThenDeliversToMatchingSubscribers) {
  EventBus bus(store_.get(), &clock_, nullptr);
  std::vector<v1::Event> shop, all;
  auto a = bus.Subscribe("shop", [&](const v1::Event& e) { shop.push_back(e); });
  auto b = bus.Subscribe("", [&](const v1::Event& e) { all.push_back(e); });
  bus.Publish("Normal", "Applied", "shop", "", "", "one");
  bus.Publish("Normal", "Applied", "blog", "", "", "two");
  bus.Publish("Warning", "AgentDisconnected", "", "h1", "", "fleet-wide");
  ASSERT_EQ(shop.size(), 2u);
  EXPECT_EQ(shop[0].message(), "one");
  EXPECT_EQ(shop[1].message(), "fleet-wide");
  ASSERT_EQ(all.size(), 3u);
  EXPECT_GT(all[0].seq(), 0) << "stored before delivery";
  EXPECT_LT(all[0].seq(), all[1].seq());
  EXPECT_EQ(store_->ListEvents("", 0, 10)->size(), 3u);
}

TEST_F(EventBusTest, DestroyingASubscriptionWaitsForTheDeliveryInProgress) {
  EventBus bus(store_.get(), &clock_, nullptr);
  absl::Notification entered, release;
  std::atomic<bool> callback_done{false};
  auto* state = new std::atomic<int>(0);  // what a handler's stack would hold
  auto sub = bus.Subscribe("", [&, state](const v1::Event&) {
    entered.Notify();
    release.WaitForNotification();
    state->fetch_add(1);  // touches the subscriber's state after a while
    callback_done = true;
  });
  std::thread publisher([&] { bus.Publish("Normal", "X", "shop", "", "", "m"); });
  entered.WaitForNotification();
  std::atomic<bool> unsubscribed{false};
  std::thread subscriber([&] {
    sub.reset();  // the handler returns
    unsubscribed = true;
    EXPECT_TRUE(callback_done.load()) << "the callback ran after its subscription was gone";
    delete state;
  });
  // The subscription must not be gone while the callback still runs.
  EXPECT_FALSE(testing::WaitFor([&] { return unsubscribed.load(); }, absl::Milliseconds(100)));
  release.Notify();
  publisher.join();
  subscriber.join();
  EXPECT_EQ(bus.Subscribers(), 0u);
}

TEST_F(EventBusTest, ChurningSubscribersWhilePublishingIsSafe) {
  EventBus bus(store_.get(), &clock_, nullptr);
  std::atomic<bool> stop{false};
  std::thread publisher([&] {
    while (!stop) bus.Publish("Normal", "X", "shop", "", "", "m");
  });
  for (int i = 0; i < 300; ++i) {
    auto counter = std::make_unique<int>(0);
    int* raw = counter.get();
    auto sub = bus.Subscribe("shop", [raw](const v1::Event&) { ++*raw; });
    sub.reset();
    counter.reset();  // freed right after unsubscribing: no callback may touch it
  }
  stop = true;
  publisher.join();
  EXPECT_EQ(bus.Subscribers(), 0u);
}

}  // namespace
}  // namespace upkeep::controller

// The runtime seam's plumbing: subscriptions that end themselves, and the registry's scopes.
#include "agent/runtime/registry.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace upkeep::agent {
namespace {

namespace v1 = upkeep::v1;

// A runtime that does nothing; only its identity matters here.
class NullRuntime : public Runtime {
 public:
  v1::ServiceObservation Inspect(const v1::ServiceSpec&) override { return {}; }
  absl::Status Start(const v1::ServiceSpec&) override { return absl::OkStatus(); }
  absl::Status Stop(const v1::ServiceSpec&, absl::Duration) override { return absl::OkStatus(); }
  absl::Status Restart(const v1::ServiceSpec&, absl::Duration) override { return absl::OkStatus(); }
  absl::StatusOr<std::string> Logs(const v1::ServiceSpec&, int) override { return ""; }
  std::unique_ptr<Subscription> Watch(std::vector<v1::ServiceSpec> services,
                                      std::function<void(const std::string&)> cb) override {
    return watchers.Add(std::move(services), std::move(cb));
  }
  ServiceWatchers watchers;
};

v1::Stack StackOf(const std::string& name, v1::RuntimeKind kind) {
  v1::Stack s;
  s.mutable_metadata()->set_name(name);
  s.mutable_spec()->set_runtime(kind);
  return s;
}

v1::ServiceSpec Service(const std::string& name) {
  v1::ServiceSpec s;
  s.set_name(name);
  return s;
}

void NotifyService(ServiceWatchers& w, const std::string& name) {
  w.Notify([&](const std::vector<v1::ServiceSpec>& watched, const ServiceWatchers::Callback& call) {
    for (const auto& s : watched) {
      if (s.name() == name) call(name);
    }
  });
}

TEST(Subscribers, EachSubscriberHearsItsOwnServicesUntilItsHandleGoes) {
  ServiceWatchers w;
  std::vector<std::string> a, b;
  auto sub_a = w.Add({Service("web")}, [&](const std::string& s) { a.push_back(s); });
  auto sub_b = w.Add({Service("db")}, [&](const std::string& s) { b.push_back(s); });
  NotifyService(w, "web");
  NotifyService(w, "db");
  EXPECT_EQ(a, std::vector<std::string>{"web"});
  EXPECT_EQ(b, std::vector<std::string>{"db"});
  sub_a.reset();
  NotifyService(w, "web");
  NotifyService(w, "db");
  EXPECT_EQ(a.size(), 1u);
  EXPECT_EQ(b.size(), 2u);
  EXPECT_EQ(w.size(), 1u);
}

TEST(Subscribers, EndingASubscriptionWaitsForItsCallbackInProgress) {
  ServiceWatchers w;
  absl::Notification in_callback, release;
  std::atomic<bool> finished{false};
  auto sub = w.Add({Service("web")}, [&](const std::string&) {
    in_callback.Notify();
    release.WaitForNotification();
    finished = true;
  });
  std::thread source([&] { NotifyService(w, "web"); });
  in_callback.WaitForNotification();
  std::thread ender([&] { sub.reset(); });
  // The handle cannot be gone while its callback still runs.
  EXPECT_FALSE(release.WaitForNotificationWithTimeout(absl::Milliseconds(50)));
  release.Notify();
  ender.join();
  EXPECT_TRUE(finished);
  source.join();
}

TEST(Subscribers, AHandleMayOutliveItsSource) {
  auto w = std::make_unique<ServiceWatchers>();
  auto sub = w->Add({Service("web")}, [](const std::string&) {});
  w.reset();
  sub.reset();  // no crash, no leak under ASan
}

TEST(RuntimeRegistry, OneRuntimePerHostKindAndOnePerStackForStackKinds) {
  RuntimeRegistry r;
  int host_made = 0, stack_made = 0;
  r.Register(v1::RUNTIME_KIND_DOCKER, RuntimeRegistry::Scope::kHost, [&](const std::string& s) {
    ++host_made;
    EXPECT_EQ(s, "");
    return absl::StatusOr<std::unique_ptr<Runtime>>(std::make_unique<NullRuntime>());
  });
  r.Register(v1::RUNTIME_KIND_PROCESS, RuntimeRegistry::Scope::kStack, [&](const std::string&) {
    ++stack_made;
    return absl::StatusOr<std::unique_ptr<Runtime>>(std::make_unique<NullRuntime>());
  });
  auto shop = r.Get(StackOf("shop", v1::RUNTIME_KIND_DOCKER));
  auto blog = r.Get(StackOf("blog", v1::RUNTIME_KIND_DOCKER));
  ASSERT_TRUE(shop.ok() && blog.ok());
  EXPECT_EQ(*shop, *blog) << "one Docker daemon serves every stack";
  auto p1 = r.Get(StackOf("shop", v1::RUNTIME_KIND_PROCESS));
  auto p2 = r.Get(StackOf("blog", v1::RUNTIME_KIND_PROCESS));
  auto p1_again = r.Get(StackOf("shop", v1::RUNTIME_KIND_PROCESS));
  ASSERT_TRUE(p1.ok() && p2.ok() && p1_again.ok());
  EXPECT_NE(*p1, *p2);
  EXPECT_EQ(*p1, *p1_again);
  EXPECT_EQ(host_made, 1);
  EXPECT_EQ(stack_made, 2);
}

TEST(RuntimeRegistry, AKindNotRegisteredIsAnErrorThatSaysSo) {
  RuntimeRegistry r;
  auto rt = r.Get(StackOf("shop", v1::RUNTIME_KIND_DOCKER));
  ASSERT_FALSE(rt.ok());
  EXPECT_NE(rt.status().message().find("RUNTIME_KIND_DOCKER"), std::string::npos) << rt.status();
}

TEST(RuntimeRegistry, AFailedCreationIsRetriedNextTime) {
  RuntimeRegistry r;
  int calls = 0;
  r.Register(v1::RUNTIME_KIND_DOCKER, RuntimeRegistry::Scope::kHost,
             [&](const std::string&) -> absl::StatusOr<std::unique_ptr<Runtime>> {
               if (++calls == 1) return absl::UnavailableError("not yet");
               return std::make_unique<NullRuntime>();
             });
  EXPECT_FALSE(r.Get(StackOf("shop", v1::RUNTIME_KIND_DOCKER)).ok());
  EXPECT_TRUE(r.Get(StackOf("shop", v1::RUNTIME_KIND_DOCKER)).ok());
}

}  // namespace
}  // namespace upkeep::agent

// StackObserver with the real process runtime and real sample services: desired states applied
// off the caller's thread, event-driven reports, stacks dropped cleanly, shutdown.
#include "agent/observe/observer.h"

#include <signal.h>

#include <map>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "agent/daemon/host.h"
#include "core/manifest/loader.h"
#include "core/proto_time.h"
#include "gtest/gtest.h"
#include "tests/support/net.h"
#include "tests/support/sample_spec.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace upkeep::agent {
namespace {

namespace v1 = upkeep::v1;
using upkeep::testing::FreePort;
using upkeep::testing::WaitFor;

v1::Stack ProcessStack(const std::string& name, const std::string& service, int port) {
  v1::Stack s;
  s.mutable_metadata()->set_name(name);
  s.mutable_spec()->add_hosts("h");
  s.mutable_spec()->set_runtime(v1::RUNTIME_KIND_PROCESS);
  *s.mutable_spec()->add_services() = upkeep::testing::SampleProcessSpec(service, port);
  manifest::ApplyDefaults(&s);
  return s;
}

// The observations the callback received, per stack.
struct Reports {
  absl::Mutex mu;
  std::map<std::string, v1::StackObservation> last ABSL_GUARDED_BY(mu);
  std::map<std::string, int> count ABSL_GUARDED_BY(mu);
  StackObserver::Callback Callback() {
    return [this](const v1::StackObservation& o, bool) {
      absl::MutexLock lock(&mu);
      last[o.stack()] = o;
      ++count[o.stack()];
    };
  }
  int Count(const std::string& stack) {
    absl::MutexLock lock(&mu);
    return count[stack];
  }
  bool Running(const std::string& stack, bool running) {
    absl::MutexLock lock(&mu);
    auto it = last.find(stack);
    return it != last.end() && it->second.services_size() == 1 &&
           it->second.services(0).running() == running &&
           (!running || it->second.services(0).health() == v1::HEALTH_STATE_HEALTHY);
  }
};

TEST(StackObserver, ReportsEachDesiredStackAtOnceOnAnExitAndForgetsDroppedStacks) {
  upkeep::testing::TempDir dir;
  std::unique_ptr<Host> host = MakeHost({dir.path(), ""});
  const int shop_port = FreePort(), blog_port = FreePort();
  const v1::Stack shop = ProcessStack("shop", "api", shop_port);
  const v1::Stack blog = ProcessStack("blog", "web", blog_port);
  Runtime* shop_rt = *host->runtimes.Get(shop);
  Runtime* blog_rt = *host->runtimes.Get(blog);
  ASSERT_TRUE(shop_rt->Start(shop.spec().services(0)).ok());
  ASSERT_TRUE(blog_rt->Start(blog.spec().services(0)).ok());
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", shop_port));
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", blog_port));

  Reports reports;
  auto observer = StackObserver::Create({"h"}, &host->runtimes, &host->proxies);
  ASSERT_TRUE(observer.ok());
  (*observer)->Start(reports.Callback());
  (*observer)->SetDesired({shop, blog});
  ASSERT_TRUE(
      WaitFor([&] { return reports.Running("shop", true) && reports.Running("blog", true); }));

  // Drop blog: it is no longer reported, shop still is, and at once on an exit.
  (*observer)->SetDesired({shop});
  const int shop_before = reports.Count("shop");
  (*observer)->RefreshNow();
  ASSERT_TRUE(WaitFor([&] { return reports.Count("shop") > shop_before; }));
  const int blog_after_drop = reports.Count("blog");
  const absl::Time killed = absl::Now();
  ASSERT_EQ(::kill(shop_rt->Inspect(shop.spec().services(0)).pid(), SIGKILL), 0);
  ASSERT_TRUE(WaitFor([&] { return reports.Running("shop", false); }, absl::Seconds(3)));
  std::printf("exit -> observation %.1f ms\n", absl::ToDoubleMilliseconds(absl::Now() - killed));
  ASSERT_TRUE(blog_rt->Stop(blog.spec().services(0), absl::Seconds(5)).ok());
  (*observer)->RefreshNow();
  const int shop_now = reports.Count("shop");
  ASSERT_TRUE(WaitFor([&] { return reports.Count("shop") > shop_now; }));
  EXPECT_EQ(reports.Count("blog"), blog_after_drop) << "a dropped stack is not observed";

  // Stop joins everything; nothing is reported afterwards.
  (*observer)->Stop();
  const int final_count = reports.Count("shop");
  ASSERT_TRUE(shop_rt->Start(shop.spec().services(0)).ok());
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", shop_port));
  EXPECT_EQ(reports.Count("shop"), final_count);
  ASSERT_TRUE(shop_rt->Stop(shop.spec().services(0), absl::Seconds(5)).ok());
}

TEST(StackObserver, SetDesiredReturnsAtOnceAndStopIsClean) {
  upkeep::testing::TempDir dir;
  std::unique_ptr<Host> host = MakeHost({dir.path(), ""});
  auto observer = StackObserver::Create({"h"}, &host->runtimes, &host->proxies);
  ASSERT_TRUE(observer.ok());
  Reports reports;
  (*observer)->Start(reports.Callback());
  for (int i = 0; i < 20; ++i) {
    (*observer)->SetDesired({ProcessStack("s" + std::to_string(i % 3), "svc", FreePort())});
  }
  (*observer)->Stop();
  observer->reset();  // the destructor after Stop is a no-op
}

// Slow is not dead: after a probe times out, the same request is sent again and allowed to run
// past the timeout, and the observation carries what it measured. A hung service gets no such
// measurement, and Stop does not wait for one in flight.
TEST(StackObserver, MeasuresASlowServicePastItsProbeTimeout) {
  upkeep::testing::TempDir dir;
  std::unique_ptr<Host> host = MakeHost({dir.path(), ""});
  const int slow_port = FreePort(), hung_port = FreePort();
  v1::Stack stack = ProcessStack("slow", "api", slow_port);
  *stack.mutable_spec()->add_services() = upkeep::testing::SampleProcessSpec("hung", hung_port);
  manifest::ApplyDefaults(&stack);
  for (auto& svc : *stack.mutable_spec()->mutable_services()) {
    *svc.mutable_probe()->mutable_timeout() = ToProto(absl::Milliseconds(200));
  }
  Runtime* rt = *host->runtimes.Get(stack);
  for (const auto& svc : stack.spec().services()) ASSERT_TRUE(rt->Start(svc).ok());
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", slow_port));
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", hung_port));
  upkeep::testing::HttpGetStatus("127.0.0.1", slow_port, "/fault/slow?ms=700");
  upkeep::testing::HttpGetStatus("127.0.0.1", hung_port, "/fault/hang");

  Reports reports;
  auto observer = StackObserver::Create({"h"}, &host->runtimes, &host->proxies);
  ASSERT_TRUE(observer.ok());
  (*observer)->Start(reports.Callback());
  (*observer)->SetDesired({stack});
  v1::ServiceObservation slow, hung;
  ASSERT_TRUE(WaitFor(
      [&] {
        absl::MutexLock lock(&reports.mu);
        auto it = reports.last.find("slow");
        if (it == reports.last.end() || it->second.services_size() != 2) return false;
        slow = it->second.services(0);
        hung = it->second.services(1);
        return slow.probe().has_late_latency();
      },
      absl::Seconds(20)))
      << slow.DebugString();
  EXPECT_FALSE(slow.probe().ok());
  EXPECT_GT(FromProto(slow.probe().late_latency()), absl::Milliseconds(200))
      << "measured past the timeout";
  EXPECT_EQ(slow.probe().late_status_code(), 200);
  EXPECT_FALSE(hung.probe().has_late_latency()) << "a hung service never answers";
  (*observer)->Stop();  // joins the measurer still waiting on the hung service
  for (const auto& svc : stack.spec().services()) {
    ASSERT_TRUE(rt->Stop(svc, absl::Seconds(5)).ok());
  }
}

}  // namespace
}  // namespace upkeep::agent

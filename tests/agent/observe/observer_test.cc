// StackObserver with the real process runtime and real sample services: desired states applied
// off the caller's thread, event-driven reports, stacks dropped cleanly, shutdown.
#include "agent/observe/observer.h"

#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "agent/daemon/host.h"
#include "agent/proxy/nginx/nginx_driver.h"
#include "agent/proxy/proxy_drivers.h"
#include "core/clock.h"
#include "core/manifest/loader.h"
#include "core/proto_time.h"
#include "gtest/gtest.h"
#include "tests/support/net.h"
#include "tests/support/nginx_conf.h"
#include "tests/support/sample_spec.h"
#include "tests/support/subprocess.h"
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

// Puts `stack` behind the test's own nginx, run from `dir` (config, pid file and error log
// there), with one probed route: /api/ -> api, probed at http://127.0.0.1:PORT/api/health.
void BehindNginx(const std::string& dir, int nginx_port, v1::Stack* stack) {
  auto* proxy = stack->mutable_spec()->mutable_proxy();
  proxy->mutable_nginx()->set_config(dir + "/nginx.conf");
  proxy->mutable_nginx()->set_prefix(dir);
  proxy->mutable_nginx()->set_pid_file(dir + "/nginx.pid");
  proxy->mutable_nginx()->set_error_log(dir + "/error.log");
  auto* route = proxy->add_routes();
  route->set_path("/api/");
  route->set_upstream("api");
  route->mutable_probe()->set_url(absl::StrCat("http://127.0.0.1:", nginx_port, "/api/health"));
  *route->mutable_probe()->mutable_timeout() = ToProto(absl::Seconds(1));
  manifest::ApplyDefaults(stack);
}

// Runs nginx on `dir`/nginx.conf in the foreground (stopped when the handle goes).
absl::StatusOr<std::unique_ptr<upkeep::testing::Subprocess>> StartNginx(const std::string& dir) {
  return upkeep::testing::Subprocess::Start(
      {"nginx", "-p", dir, "-c", dir + "/nginx.conf", "-g", "daemon off;"}, dir + "/nginx.out");
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
  std::unique_ptr<Host> host = MakeHost({dir.path(), "", ExecPolicy{}});
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
  auto observer = StackObserver::Create({"h", /*data_dir=*/""}, &host->runtimes, &host->proxies);
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
  std::unique_ptr<Host> host = MakeHost({dir.path(), "", ExecPolicy{}});
  auto observer = StackObserver::Create({"h", /*data_dir=*/""}, &host->runtimes, &host->proxies);
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
  std::unique_ptr<Host> host = MakeHost({dir.path(), "", ExecPolicy{}});
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
  auto observer = StackObserver::Create({"h", /*data_dir=*/""}, &host->runtimes, &host->proxies);
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

// A route failing through nginx keeps its probe period. Each failing probe writes an upstream
// error to nginx's log, and a new upstream error pokes the routes: poking a route already
// failing probed it again at once, in a loop as fast as nginx answered (a thousand probes and
// observations a second, which buried the controller in stale observations). The check is a
// lower bound on the spacing of the route's probes, which a slow machine only makes wider.
TEST(StackObserver, ARouteFailingThroughNginxIsNotPokedByItsOwnErrors) {
  upkeep::testing::TempDir dir;
  ::chmod(dir.path().c_str(), 0755);  // nginx workers run unprivileged
  const int nginx_port = FreePort(), dead_port = FreePort(), api_port = FreePort();
  std::ofstream(dir.Join("nginx.conf")) << absl::StrCat(
      "worker_processes 1;\npid ", dir.Join("nginx.pid"), ";\nerror_log ", dir.Join("error.log"),
      " error;\nevents {}\nhttp {\n access_log off;\n server { listen 127.0.0.1:", nginx_port,
      "; location /api/ { proxy_pass http://127.0.0.1:", dead_port, "/; } }\n}\n");
  auto nginx = StartNginx(dir.path());
  ASSERT_TRUE(nginx.ok()) << nginx.status();
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", nginx_port));

  std::unique_ptr<Host> host = MakeHost({dir.path(), "", ExecPolicy{}});
  v1::Stack stack = ProcessStack("shop", "api", api_port);
  BehindNginx(dir.path(), nginx_port, &stack);

  absl::Mutex mu;
  std::set<absl::Time> failing;  // when each failing probe of /api/ reported was sent
  auto observer = StackObserver::Create({"h", /*data_dir=*/""}, &host->runtimes, &host->proxies);
  ASSERT_TRUE(observer.ok());
  (*observer)->Start([&](const v1::StackObservation& o, bool) {
    absl::MutexLock lock(&mu);
    for (const auto& r : o.proxy().routes()) {
      if (r.path() == "/api/" && !r.probe().ok() && r.probe().has_at()) {
        failing.insert(FromProto(r.probe().at()));
      }
    }
  });
  (*observer)->SetDesired({stack});
  ASSERT_TRUE(WaitFor(
      [&] {
        absl::MutexLock lock(&mu);
        return failing.size() >= 4;
      },
      absl::Seconds(30)));
  (*observer)->Stop();
  (*nginx)->Stop();

  absl::MutexLock lock(&mu);
  // Four failing probes span about three probe periods (3 s); poked by its own errors they
  // came a few ms apart (272 errors in 200 ms). One early pair may be close (the first probe,
  // and a poke that came while the route had not failed yet), so the whole span is judged.
  const absl::Duration span = *failing.rbegin() - *failing.begin();
  std::ifstream log(dir.Join("error.log"));
  int errors = 0;
  for (std::string line; std::getline(log, line);)
    errors += line.find("upstream") != std::string::npos;
  EXPECT_GE(span, absl::Seconds(1))
      << "the failing route was probed again on its own upstream errors; nginx logged " << errors
      << " upstream errors for " << failing.size() << " reported probes";
}

// Hands each change the real nginx driver reports on to the observer, and counts the upstream
// errors the observer has finished handling (the count moves after its callback returned).
class CountingDriver : public ProxyDriver {
 public:
  CountingDriver(std::shared_ptr<ProxyDriver> real, std::atomic<int>* handled)
      : real_(std::move(real)), handled_(handled) {}
  std::string target() const override { return real_->target(); }
  void SetSpec(const v1::ProxySpec& spec) override { real_->SetSpec(spec); }
  void Observe(v1::ProxyObservation* out) override { real_->Observe(out); }
  v1::ConfigTest TestConfig() override { return real_->TestConfig(); }
  absl::StatusOr<std::string> Start(absl::Duration t) override { return real_->Start(t); }
  absl::StatusOr<std::string> Reload(absl::Duration t) override { return real_->Reload(t); }
  absl::StatusOr<std::string> Restart(absl::Duration t) override { return real_->Restart(t); }
  std::unique_ptr<Subscription> Watch(std::function<void(Change)> on_change) override {
    return real_->Watch([this, on_change = std::move(on_change)](Change c) {
      on_change(c);
      if (c == Change::kUpstreamError) ++*handled_;
    });
  }

 private:
  const std::shared_ptr<ProxyDriver> real_;
  std::atomic<int>* const handled_;
};

// A sample service "api" run on its own (the stack's process runtime does not start it) behind
// the test's nginx, which logs every request it answers: /api/ proxies to it, /dead/ to a port
// nothing listens on. Everything stops with it.
struct ApiBehindNginx {
  upkeep::testing::TempDir dir;
  int nginx_port = FreePort(), dead_port = FreePort(), api_port = FreePort();
  std::unique_ptr<upkeep::testing::Subprocess> api, nginx;
  v1::Stack stack;  // "shop": the api service and the probed route /api/ (BehindNginx)
  std::unique_ptr<Host> host = MakeHost({dir.path(), "", ExecPolicy{}});

  // Starts both; false (with a gtest failure) when either did not come up.
  bool Start() {
    ::chmod(dir.path().c_str(), 0755);  // nginx workers run unprivileged
    auto a = upkeep::testing::Subprocess::Start({upkeep::testing::BinPath("upkeep-sample-service"),
                                                 "--name", "api", "--port", absl::StrCat(api_port)},
                                                dir.Join("api.out"));
    EXPECT_TRUE(a.ok()) << a.status();
    if (!a.ok()) return false;
    api = std::move(*a);
    std::ofstream(dir.Join("nginx.conf")) << upkeep::testing::TestNginxConf(
        dir.path(), absl::StrCat("  server {\n    listen 127.0.0.1:", nginx_port,
                                 ";\n    access_log ", dir.Join("access.log"),
                                 ";\n    location /api/ { proxy_pass http://127.0.0.1:", api_port,
                                 "/; }\n    location /dead/ { proxy_pass http://127.0.0.1:",
                                 dead_port, "/; }\n  }\n"));
    auto n = StartNginx(dir.path());
    EXPECT_TRUE(n.ok()) << n.status();
    if (!n.ok()) return false;
    nginx = std::move(*n);
    stack = ProcessStack("shop", "api", api_port);
    BehindNginx(dir.path(), nginx_port, &stack);
    return upkeep::testing::WaitForPort("127.0.0.1", nginx_port) &&
           upkeep::testing::WaitForPort("127.0.0.1", api_port);
  }

  // How many probes of the route nginx has answered (its access log).
  int RouteProbes() const {
    std::ifstream in(dir.Join("access.log"));
    int n = 0;
    for (std::string line; std::getline(in, line);) n += line.find("/api/health") != line.npos;
    return n;
  }
};

// An observer on a simulated clock, counting the observations in which the route /api/ passed.
struct ClockedObserver {
  SimulatedClock clock;
  std::atomic<int> route_passed{0};
  std::unique_ptr<StackObserver> observer;

  bool Start(Host* host, ProxyDrivers* proxies, const v1::Stack& stack) {
    ObserverOptions options;
    options.host_id = "h";
    options.clock = &clock;
    auto o = StackObserver::Create(options, &host->runtimes, proxies);
    EXPECT_TRUE(o.ok()) << o.status();
    if (!o.ok()) return false;
    observer = std::move(*o);
    observer->Start([this](const v1::StackObservation& obs, bool) {
      for (const auto& r : obs.proxy().routes()) {
        if (r.path() == "/api/" && r.probe().ok()) ++route_passed;
      }
    });
    observer->SetDesired({stack});
    // The first probe of the route passed (and the observer has it: an observation carried it).
    EXPECT_TRUE(WaitFor([&] { return route_passed > 0; }, absl::Seconds(20)));
    return route_passed > 0;
  }

  // The probe spec of the stack's route /api/ (BehindNginx).
  static v1::RouteProbeSpec* RouteProbe(v1::Stack* stack) {
    return stack->mutable_spec()->mutable_proxy()->mutable_routes(0)->mutable_probe();
  }
};

// A new upstream error within the repoke window of a route's last (passing) probe does not
// probe it at once (real traffic can log hundreds a second), but it is not dropped either: the
// probe comes when the window ends, though no further error comes and the route's period has
// not run out. Simulated time: the window cannot close before the test has seen the error
// handled, and only the deferral can explain a probe before the period (1 s).
TEST(StackObserver, AnUpstreamErrorInsideTheRepokeWindowProbesTheRouteWhenTheWindowEnds) {
  ApiBehindNginx net;
  ASSERT_TRUE(net.Start());
  std::atomic<int> errors_handled{0};
  ProxyDrivers proxies([&](const v1::ProxySpec& spec) -> std::shared_ptr<ProxyDriver> {
    return std::make_shared<CountingDriver>(CreateNginxDriver(spec), &errors_handled);
  });
  ClockedObserver o;
  ASSERT_TRUE(o.Start(net.host.get(), &proxies, net.stack));
  ASSERT_EQ(net.RouteProbes(), 1);

  // An upstream error, while the clock stands at the time of that probe: inside the window.
  // (Asked again until handled: the driver counts only errors after its first look at the log.)
  ASSERT_TRUE(WaitFor(
      [&] {
        if (errors_handled > 0) return true;
        EXPECT_EQ(upkeep::testing::HttpGetStatus("127.0.0.1", net.nginx_port, "/dead/"), 502);
        return false;
      },
      absl::Seconds(20), absl::Milliseconds(100)));
  EXPECT_EQ(net.RouteProbes(), 1) << "an error inside the window does not probe at once";

  // Past the 250 ms window, short of the route's 1 s period: the deferred probe is sent.
  o.clock.Advance(absl::Milliseconds(300));
  EXPECT_TRUE(WaitFor([&] { return net.RouteProbes() >= 2; }, absl::Seconds(20)))
      << "the upstream error inside the window was dropped, not deferred";
  o.observer->Stop();
}

// A route is probed on its own `probe.period`. Simulated time: the clock moves only when the
// test moves it, so a second probe after 300 ms is the 250 ms period's (the default is 1 s).
TEST(StackObserver, ARouteIsProbedOnItsOwnPeriod) {
  ApiBehindNginx net;
  ASSERT_TRUE(net.Start());
  *ClockedObserver::RouteProbe(&net.stack)->mutable_period() = ToProto(absl::Milliseconds(250));
  ClockedObserver o;
  ASSERT_TRUE(o.Start(net.host.get(), &net.host->proxies, net.stack));
  ASSERT_EQ(net.RouteProbes(), 1);
  o.clock.Advance(absl::Milliseconds(300));
  EXPECT_TRUE(WaitFor([&] { return net.RouteProbes() >= 2; }, absl::Seconds(20)))
      << "the route was not probed again after its 250 ms period";
  o.observer->Stop();
}

// A stack whose route has no period (stored by a controller from before routes had one) is
// probed each second, not in a loop: with the clock standing still after the second probe,
// no third one comes.
TEST(StackObserver, ARouteWithoutAPeriodIsProbedEachSecond) {
  ApiBehindNginx net;
  ASSERT_TRUE(net.Start());
  ClockedObserver::RouteProbe(&net.stack)->clear_period();
  ClockedObserver o;
  ASSERT_TRUE(o.Start(net.host.get(), &net.host->proxies, net.stack));
  o.clock.Advance(absl::Milliseconds(1100));
  ASSERT_TRUE(WaitFor([&] { return net.RouteProbes() >= 2; }, absl::Seconds(20)));
  // The observation carrying the second probe: the probe loop has gone back to waiting.
  ASSERT_TRUE(WaitFor([&] { return o.route_passed >= 2; }, absl::Seconds(20)));
  o.observer->Stop();
  EXPECT_EQ(net.RouteProbes(), 2) << "a route without a period was probed in a loop";
}

}  // namespace
}  // namespace upkeep::agent

// The executor against real processes, a real proxy driver and its journal on disk.
#include "agent/act/executor.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "agent/act/journal.h"
#include "agent/daemon/host.h"
#include "agent/observe/observer.h"
#include "core/manifest/loader.h"
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

v1::Stack StackFor(const upkeep::testing::TempDir& dir, int port) {
  v1::Stack s;
  s.mutable_metadata()->set_name("shop");
  s.mutable_spec()->add_hosts("h");
  s.mutable_spec()->set_runtime(v1::RUNTIME_KIND_PROCESS);
  *s.mutable_spec()->add_services() = upkeep::testing::SampleProcessSpec("api", port);
  manifest::ApplyDefaults(&s);
  return s;
}

TEST(Executor, RefusesTargetsItsDesiredStateDoesNotName) {
  upkeep::testing::TempDir dir;
  std::unique_ptr<Host> host = MakeHost({dir.path(), "", ExecPolicy{}});
  auto executor = Executor::Create(dir.path(), &host->runtimes, &host->proxies);
  ASSERT_TRUE(executor.ok());
  (*executor)->SetDesired({StackFor(dir, FreePort())});
  v1::Action a;
  a.set_id("x1");
  a.set_stack("shop");
  a.set_kind(v1::ACTION_KIND_RESTART_SERVICE);
  a.set_target("postgres");
  EXPECT_EQ((*executor)->Execute(a).outcome(), v1::ACTION_OUTCOME_REFUSED);
  a.set_id("x2");
  a.set_stack("other");
  a.set_target("api");
  EXPECT_EQ((*executor)->Execute(a).outcome(), v1::ACTION_OUTCOME_REFUSED);
  a.set_id("x3");
  a.set_stack("shop");
  a.set_kind(v1::ACTION_KIND_RELOAD_PROXY);
  a.set_target("nginx");
  EXPECT_EQ((*executor)->Execute(a).outcome(), v1::ACTION_OUTCOME_REFUSED) << "no proxy named";
}

TEST(Executor, RunsAnActionIdOnceAcrossItsOwnRestart) {
  upkeep::testing::TempDir dir;
  const int port = FreePort();
  const v1::Stack stack = StackFor(dir, port);
  v1::Action a;
  a.set_id("once-1");
  a.set_stack("shop");
  a.set_kind(v1::ACTION_KIND_START_SERVICE);
  a.set_target("api");
  int first_pid = 0;
  {
    std::unique_ptr<Host> host = MakeHost({dir.path(), "", ExecPolicy{}});
    auto executor = Executor::Create(dir.path(), &host->runtimes, &host->proxies);
    ASSERT_TRUE(executor.ok());
    Runtime* runtime = *host->runtimes.Get(stack);
    (*executor)->SetDesired({stack});
    const v1::ActionResult r = (*executor)->Execute(a);
    ASSERT_EQ(r.outcome(), v1::ACTION_OUTCOME_SUCCEEDED) << r.message();
    EXPECT_FALSE(r.replayed());
    ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", port));
    first_pid = runtime->Inspect(stack.spec().services(0)).pid();
    // Kill the service: a second execution of the same id must not start it again.
    ::kill(first_pid, SIGKILL);
    ASSERT_TRUE(WaitFor([&] { return !runtime->Inspect(stack.spec().services(0)).running(); }));
  }
  std::unique_ptr<Host> host = MakeHost({dir.path(), "", ExecPolicy{}});
  auto executor = Executor::Create(dir.path(), &host->runtimes, &host->proxies);
  ASSERT_TRUE(executor.ok());
  (*executor)->SetDesired({stack});
  const v1::ActionResult again = (*executor)->Execute(a);
  EXPECT_TRUE(again.replayed());
  EXPECT_EQ(again.outcome(), v1::ACTION_OUTCOME_SUCCEEDED);
  EXPECT_FALSE((*host->runtimes.Get(stack))->Inspect(stack.spec().services(0)).running())
      << "the replay must not have started the service again";
}

TEST(Journal, AnInterruptedActionIsNotRunAgain) {
  upkeep::testing::TempDir dir;
  {
    Journal j(dir.Join("journal"));
    ASSERT_TRUE(j.Recover().ok());
    ASSERT_TRUE(j.MarkStarted("crashed-mid-action").ok());
  }
  // A torn last line from a crash mid-write is ignored.
  std::ofstream(dir.Join("journal"), std::ios::app) << "F half";
  std::unique_ptr<Host> host = MakeHost({dir.path(), "", ExecPolicy{}});
  auto executor = Executor::Create(dir.path(), &host->runtimes, &host->proxies);
  ASSERT_TRUE(executor.ok());
  (*executor)->SetDesired({StackFor(dir, FreePort())});
  v1::Action a;
  a.set_id("crashed-mid-action");
  a.set_stack("shop");
  a.set_kind(v1::ACTION_KIND_START_SERVICE);
  a.set_target("api");
  const v1::ActionResult r = (*executor)->Execute(a);
  EXPECT_EQ(r.outcome(), v1::ACTION_OUTCOME_FAILED);
  EXPECT_TRUE(absl::StrContains(r.message(), "interrupted")) << r.message();
}

// A proxy action holds its driver: a desired state that drops the stack meanwhile (observer
// and driver set forget it) must not destroy the driver under the running action. Before the
// ProxyDrivers seam the executor kept a raw NginxDriver* owned by the observer, and this
// aborted with "Mutex corrupt" (use after free) or hung.
TEST(Executor, AProxyActionSurvivesItsStackLeavingTheDesiredState) {
  upkeep::testing::TempDir dir;
  v1::Stack s;
  s.mutable_metadata()->set_name("shop");
  s.mutable_spec()->set_runtime(v1::RUNTIME_KIND_PROCESS);
  auto* nginx = s.mutable_spec()->mutable_proxy()->mutable_nginx();
  // The "config test" runs until the test lets it finish: it blocks reading a FIFO.
  const std::string gate = dir.Join("gate");
  const std::string running = dir.Join("running");
  ASSERT_EQ(::mkfifo(gate.c_str(), 0600), 0);
  for (const std::string& a :
       {std::string("sh"), std::string("-c"),
        absl::StrCat("touch ", running, "; read x < ", gate, "; echo config-ok")}) {
    nginx->add_test_command(a);
  }
  std::unique_ptr<Host> host = MakeHost({dir.path(), "", ExecPolicy{}});
  auto observer = StackObserver::Create({"h", /*data_dir=*/""}, &host->runtimes, &host->proxies);
  ASSERT_TRUE(observer.ok());
  auto executor = Executor::Create(dir.path(), &host->runtimes, &host->proxies);
  ASSERT_TRUE(executor.ok());
  (*observer)->Start([](const v1::StackObservation&, bool) {});
  (*observer)->SetDesired({s});
  (*executor)->SetDesired({s});
  v1::Action a;
  a.set_id("t1");
  a.set_stack("shop");
  a.set_kind(v1::ACTION_KIND_TEST_PROXY_CONFIG);
  a.set_target("nginx");
  v1::ActionResult r;
  std::thread t([&] { r = (*executor)->Execute(a); });
  ASSERT_TRUE(WaitFor([&] { return ::access(running.c_str(), F_OK) == 0; }));
  (*observer)->SetDesired({});
  host->proxies.Retain({});
  (*observer)->Stop();            // applies nothing more; every watch of the old stack is gone
  std::ofstream(gate) << "go\n";  // opens once the test command is reading, then ends it
  t.join();
  EXPECT_EQ(r.outcome(), v1::ACTION_OUTCOME_SUCCEEDED) << r.message();
  EXPECT_TRUE(absl::StrContains(r.output(), "config-ok")) << r.output();
}

}  // namespace
}  // namespace upkeep::agent

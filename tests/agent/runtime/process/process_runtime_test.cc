// The process runtime against real processes (the static sample service) and /proc.
#include "agent/runtime/process/process_runtime.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
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

TEST(ProcessRuntime, SeesAnExitAtOnceAndCollectsLogs) {
  upkeep::testing::TempDir dir;
  auto rt = CreateProcessRuntime(dir.path());
  ASSERT_TRUE(rt.ok());
  const int port = FreePort();
  const v1::ServiceSpec spec = upkeep::testing::SampleProcessSpec("backend", port);
  absl::Mutex mu;
  absl::Time seen = absl::InfiniteFuture();
  auto watch = (*rt)->Watch({spec}, [&](const std::string& name) {
    absl::MutexLock lock(&mu);
    if (name == "backend") seen = absl::Now();
  });
  ASSERT_TRUE((*rt)->Start(spec).ok());
  ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", port));
  v1::ServiceObservation o = (*rt)->Inspect(spec);
  EXPECT_TRUE(o.running());
  EXPECT_GT(o.pid(), 0);
  EXPECT_EQ(upkeep::testing::HttpGetStatus("127.0.0.1", port, "/health"), 200);
  const absl::Time killed = absl::Now();
  ASSERT_EQ(::kill(o.pid(), SIGKILL), 0);
  ASSERT_TRUE(WaitFor([&] {
    absl::MutexLock lock(&mu);
    return seen != absl::InfiniteFuture();
  }));
  {
    absl::MutexLock lock(&mu);
    std::printf("process exit noticed %.2f ms after SIGKILL\n",
                absl::ToDoubleMilliseconds(seen - killed));
  }
  o = (*rt)->Inspect(spec);
  EXPECT_FALSE(o.running());
  EXPECT_EQ(o.exit_code(), 128 + SIGKILL);
  auto logs = (*rt)->Logs(spec, 10);
  ASSERT_TRUE(logs.ok());
  EXPECT_TRUE(absl::StrContains(*logs, "GET /health 200")) << *logs;
}

TEST(ProcessRuntime, AdoptsItsProcessesAfterARestartInsteadOfStartingTwins) {
  upkeep::testing::TempDir dir;
  const int port = FreePort();
  const v1::ServiceSpec spec = upkeep::testing::SampleProcessSpec("frontend", port);
  int pid = 0;
  {
    auto rt = CreateProcessRuntime(dir.path());
    ASSERT_TRUE(rt.ok());
    ASSERT_TRUE((*rt)->Start(spec).ok());
    ASSERT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", port));
    pid = (*rt)->Inspect(spec).pid();
  }  // the "agent" goes away; the service keeps running
  auto rt = CreateProcessRuntime(dir.path());
  ASSERT_TRUE(rt.ok());
  v1::ServiceObservation o = (*rt)->Inspect(spec);
  EXPECT_TRUE(o.running());
  EXPECT_EQ(o.pid(), pid);
  ASSERT_TRUE((*rt)->Start(spec).ok());
  EXPECT_EQ((*rt)->Inspect(spec).pid(), pid) << "a start of a running service is a no-op";
  ASSERT_TRUE((*rt)->Stop(spec, absl::Seconds(5)).ok());
  EXPECT_FALSE((*rt)->Inspect(spec).running());
  EXPECT_FALSE(upkeep::testing::CanConnect("127.0.0.1", port));
}

// Security: a controller names the command, the agent decides whether it may run.
TEST(ProcessRuntime, RunsOnlyCommandsUnderItsAllowExecPrefixes) {
  upkeep::testing::TempDir dir;
  const int port = FreePort();
  const v1::ServiceSpec sample = upkeep::testing::SampleProcessSpec("backend", port);
  v1::ServiceSpec shell = sample;
  shell.set_name("evil");
  shell.mutable_process()->clear_command();
  for (const char* a : {"sh", "-c", "id > /tmp/upkeep-owned"})
    shell.mutable_process()->add_command(a);

  ExecPolicy none;
  none.unrestricted = false;
  auto locked = CreateProcessRuntime(dir.Join("none"), none);
  ASSERT_TRUE(locked.ok());
  absl::Status st = (*locked)->Start(sample);
  EXPECT_TRUE(absl::IsPermissionDenied(st)) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "--allow-exec")) << st;

  // Allowed: the directory of the sample service, and nothing else.
  ExecPolicy bin;
  bin.unrestricted = false;
  bin.prefixes.push_back(
      std::string(std::filesystem::path(sample.process().command(0)).parent_path()));
  auto rt = CreateProcessRuntime(dir.Join("bin"), bin);
  ASSERT_TRUE(rt.ok());
  EXPECT_TRUE(absl::IsPermissionDenied((*rt)->Start(shell))) << "sh is not under the prefix";
  EXPECT_TRUE(absl::IsPermissionDenied((*rt)->Restart(shell, absl::Seconds(1))));
  ASSERT_TRUE((*rt)->Start(sample).ok());
  EXPECT_TRUE(upkeep::testing::WaitForPort("127.0.0.1", port));
  EXPECT_TRUE((*rt)->Stop(sample, absl::Seconds(5)).ok());
}

// ---- A person's stop ----------------------------------------------------------------------

TEST(PersonStopCause, SignalsPeopleSendAreAPersonsCrashesAndOwnStopsAreNot) {
  using process_internal::PersonStopCause;
  EXPECT_EQ(PersonStopCause(W_EXITCODE(0, SIGTERM), false, false), "SIGTERM");
  EXPECT_EQ(PersonStopCause(W_EXITCODE(0, SIGINT), false, false), "SIGINT");
  EXPECT_EQ(PersonStopCause(W_EXITCODE(0, SIGHUP), false, false), "SIGHUP");
  EXPECT_EQ(PersonStopCause(W_EXITCODE(0, SIGQUIT) | WCOREFLAG, false, false), "SIGQUIT");
  EXPECT_EQ(PersonStopCause(W_EXITCODE(0, SIGKILL), false, false), "SIGKILL");
  EXPECT_EQ(PersonStopCause(W_EXITCODE(0, SIGKILL), false, true), "") << "maybe the OOM killer";
  EXPECT_EQ(PersonStopCause(W_EXITCODE(0, SIGTERM), true, false), "") << "upkeep's own stop";
  EXPECT_EQ(PersonStopCause(W_EXITCODE(0, SIGKILL), true, false), "") << "upkeep's own stop";
  EXPECT_EQ(PersonStopCause(W_EXITCODE(143, 0), false, false), "exit-143-after-SIGTERM");
  EXPECT_EQ(PersonStopCause(W_EXITCODE(130, 0), false, false), "exit-130-after-SIGINT");
  EXPECT_EQ(PersonStopCause(W_EXITCODE(137, 0), false, false), "") << "a wrapper's child killed";
  EXPECT_EQ(PersonStopCause(W_EXITCODE(0, 0), false, false), "") << "a clean exit";
  EXPECT_EQ(PersonStopCause(W_EXITCODE(1, 0), false, false), "");
  for (int sig : {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL, SIGUSR1, SIGPIPE, SIGXCPU}) {
    EXPECT_EQ(PersonStopCause(W_EXITCODE(0, sig), false, false), "") << "signal " << sig;
  }
}

class ProcessPersonStopTest : public ::testing::Test {
 protected:
  ProcessPersonStopTest() { rt_ = Fresh(); }

  std::unique_ptr<Runtime> Fresh() {
    auto rt = CreateProcessRuntime(dir_.path());
    EXPECT_TRUE(rt.ok()) << rt.status();
    return rt.ok() ? std::move(*rt) : nullptr;
  }

  // A process with no signal handlers: a signal's default action ends it.
  static v1::ServiceSpec Sleeper(const std::string& name) {
    v1::ServiceSpec s;
    s.set_name(name);
    for (const char* a : {"sleep", "1000"}) s.mutable_process()->add_command(a);
    return s;
  }

  // Starts `spec`, sends `sig` to it as a person would, and returns what the runtime then says.
  v1::ServiceObservation StartAndSignal(const v1::ServiceSpec& spec, int sig) {
    EXPECT_TRUE(rt_->Start(spec).ok());
    const v1::ServiceObservation running = rt_->Inspect(spec);
    EXPECT_TRUE(running.running()) << running.DebugString();
    const absl::Time sent = absl::Now();
    EXPECT_EQ(::kill(running.pid(), sig), 0);
    return WaitForExitAfter(spec, sent);
  }

  v1::ServiceObservation WaitForExitAfter(const v1::ServiceSpec& spec, absl::Time after) {
    v1::ServiceObservation o;
    EXPECT_TRUE(WaitFor([&] {
      o = rt_->Inspect(spec);
      return !o.running() && o.has_finished_at() && FromProto(o.finished_at()) >= after;
    })) << o.DebugString();
    return o;
  }

  upkeep::testing::TempDir dir_;
  std::unique_ptr<Runtime> rt_;
};

TEST_F(ProcessPersonStopTest, SigtermFromAPersonIsStoppedByPersonUntilStarted) {
  const v1::ServiceSpec spec = Sleeper("worker");
  v1::ServiceObservation o = StartAndSignal(spec, SIGTERM);
  EXPECT_EQ(o.exit_code(), 128 + SIGTERM);
  EXPECT_TRUE(o.stopped_by_person()) << o.DebugString();
  // Kept in the state file: an agent restart still knows.
  rt_ = Fresh();
  EXPECT_TRUE(rt_->Inspect(spec).stopped_by_person());
  // Someone starts it: the stop no longer holds, now or after a restart.
  ASSERT_TRUE(rt_->Start(spec).ok());
  o = rt_->Inspect(spec);
  EXPECT_TRUE(o.running());
  EXPECT_FALSE(o.stopped_by_person()) << o.DebugString();
  const absl::Time stop = absl::Now();
  ASSERT_TRUE(rt_->Stop(spec, absl::Seconds(5)).ok());
  o = WaitForExitAfter(spec, stop);
  EXPECT_FALSE(o.stopped_by_person()) << "upkeep's own stop: " << o.DebugString();
  EXPECT_FALSE(Fresh()->Inspect(spec).stopped_by_person());
}

TEST_F(ProcessPersonStopTest, SigkillAndSigintFromAPersonAreStoppedByPerson) {
  const v1::ServiceSpec spec = Sleeper("worker");
  // (Not a person's when the host's OOM killer fired in the 5 s before: this test then fails
  // on a host that is running out of memory.)
  v1::ServiceObservation o = StartAndSignal(spec, SIGKILL);
  EXPECT_EQ(o.exit_code(), 128 + SIGKILL);
  EXPECT_TRUE(o.stopped_by_person()) << o.DebugString();
  o = StartAndSignal(spec, SIGINT);
  EXPECT_TRUE(o.stopped_by_person()) << o.DebugString();
}

TEST_F(ProcessPersonStopTest, CrashesAreNotStoppedByPerson) {
  const v1::ServiceSpec spec = Sleeper("worker");
  v1::ServiceObservation o = StartAndSignal(spec, SIGSEGV);
  EXPECT_FALSE(o.stopped_by_person()) << "SIGSEGV: " << o.DebugString();
  o = StartAndSignal(spec, SIGUSR1);
  EXPECT_FALSE(o.stopped_by_person()) << "SIGUSR1: " << o.DebugString();
  // A person's stop, then the next run crashes: the crash is what counts.
  o = StartAndSignal(spec, SIGTERM);
  ASSERT_TRUE(o.stopped_by_person());
  o = StartAndSignal(spec, SIGABRT);
  EXPECT_FALSE(o.stopped_by_person()) << "SIGABRT after a person's stop: " << o.DebugString();
  EXPECT_FALSE(Fresh()->Inspect(spec).stopped_by_person());

  v1::ServiceSpec failing;
  failing.set_name("failing");
  for (const char* a : {"sh", "-c", "exit 3"}) failing.mutable_process()->add_command(a);
  const absl::Time started = absl::Now();
  ASSERT_TRUE(rt_->Start(failing).ok());
  o = WaitForExitAfter(failing, started);
  EXPECT_EQ(o.exit_code(), 3);
  EXPECT_FALSE(o.stopped_by_person()) << o.DebugString();
}

TEST_F(ProcessPersonStopTest, OwnStopAndRestartAreNotStoppedByPerson) {
  const v1::ServiceSpec spec = Sleeper("worker");
  ASSERT_TRUE(rt_->Start(spec).ok());
  const int first = rt_->Inspect(spec).pid();
  ASSERT_TRUE(rt_->Restart(spec, absl::Seconds(5)).ok());
  v1::ServiceObservation o = rt_->Inspect(spec);
  ASSERT_TRUE(o.running());
  EXPECT_NE(o.pid(), first);
  EXPECT_FALSE(o.stopped_by_person()) << o.DebugString();
  // Own stop of a process that ignores SIGTERM: it ends by upkeep's SIGKILL, not a person's.
  v1::ServiceSpec stubborn;
  stubborn.set_name("stubborn");
  const std::string ready = dir_.Join("stubborn-ready");
  for (const std::string& a : {std::string("sh"), std::string("-c"),
                               "trap '' TERM; touch " + ready + "; while :; do sleep 1; done"})
    stubborn.mutable_process()->add_command(a);
  ASSERT_TRUE(rt_->Start(stubborn).ok());
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(ready); }));
  const absl::Time stop = absl::Now();
  ASSERT_TRUE(rt_->Stop(stubborn, absl::Milliseconds(300)).ok());
  o = WaitForExitAfter(stubborn, stop);
  EXPECT_EQ(o.exit_code(), 128 + SIGKILL);
  EXPECT_FALSE(o.stopped_by_person()) << o.DebugString();
  ASSERT_TRUE(rt_->Stop(spec, absl::Seconds(5)).ok());
  EXPECT_FALSE(rt_->Inspect(spec).stopped_by_person());
}

TEST_F(ProcessPersonStopTest, AStopRecordedInAnEarlierBootIsForgotten) {
  std::string boot;
  std::getline(std::ifstream("/proc/sys/kernel/random/boot_id"), boot);
  ASSERT_FALSE(boot.empty());
  const v1::ServiceSpec spec = Sleeper("worker");
  auto write_state = [&](const std::string& person_boot) {
    std::filesystem::create_directories(dir_.Join("worker"));
    std::ofstream(dir_.Join("worker/state"), std::ios::trunc)
        << "exit 143 1700000000000\nperson SIGTERM " << person_boot << "\nrestarts 0\n";
  };
  write_state(boot);
  EXPECT_TRUE(Fresh()->Inspect(spec).stopped_by_person()) << "this boot's stop";
  write_state("00000000-0000-0000-0000-000000000000");
  EXPECT_FALSE(Fresh()->Inspect(spec).stopped_by_person()) << "a shutdown's signals";
}

}  // namespace
}  // namespace upkeep::agent

// The process runtime against real processes (the static sample service) and /proc.
#include "agent/runtime/process/process_runtime.h"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
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

}  // namespace
}  // namespace upkeep::agent

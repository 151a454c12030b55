// upkeep-sample-service as a real process: serving, health, faults, --check, SIGTERM.
#include <signal.h>
#include <sys/wait.h>

#include <string>

#include "gtest/gtest.h"
#include "tests/support/net.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace upkeep::testing {
namespace {

class SampleServiceTest : public ::testing::Test {
 protected:
  void StartSample(std::vector<std::string> extra = {}) {
    port_ = FreePort();
    std::vector<std::string> argv = {BinPath("upkeep-sample-service"), "--port",
                                     std::to_string(port_), "--name", "web"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto p = Subprocess::Start(argv, dir_.Join("sample.log"));
    ASSERT_TRUE(p.ok()) << p.status();
    proc_ = std::move(*p);
    ASSERT_TRUE(WaitForPort("127.0.0.1", port_));
  }
  int Get(const std::string& path, std::string* body = nullptr) {
    return HttpGetStatus("127.0.0.1", port_, path, absl::Seconds(2), body);
  }
  int Check() {
    auto p = Subprocess::Start({BinPath("upkeep-sample-service"), "--check",
                                "http://127.0.0.1:" + std::to_string(port_) + "/health"},
                               dir_.Join("check.log"));
    if (!p.ok()) return -1;
    auto st = (*p)->Wait(absl::Seconds(10));
    return st.has_value() && WIFEXITED(*st) ? WEXITSTATUS(*st) : -1;
  }

  TempDir dir_;
  int port_ = 0;
  std::unique_ptr<Subprocess> proc_;
};

TEST_F(SampleServiceTest, ServesHealthAndFaults) {
  StartSample();
  std::string body;
  EXPECT_EQ(Get("/", &body), 200);
  EXPECT_NE(body.find("web ok"), std::string::npos);
  EXPECT_EQ(Get("/health", &body), 200);
  EXPECT_NE(body.find("\"status\":\"ok\""), std::string::npos);
  EXPECT_EQ(Check(), 0);
  EXPECT_EQ(Get("/fault/unhealthy"), 200);
  EXPECT_EQ(Get("/health"), 500);
  EXPECT_EQ(Check(), 1);
  proc_->Signal(SIGUSR2);
  EXPECT_TRUE(WaitFor([&] { return Get("/health") == 200; }));
  proc_->Signal(SIGUSR1);
  EXPECT_TRUE(WaitFor([&] { return Get("/health") == 500; }));
}

TEST_F(SampleServiceTest, CrashAbortsAndExitUsesCode) {
  StartSample();
  Get("/fault/crash");
  auto st = proc_->Wait(absl::Seconds(10));
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(WIFSIGNALED(*st));
  EXPECT_EQ(WTERMSIG(*st), SIGABRT);

  StartSample();
  Get("/fault/exit?code=7");
  st = proc_->Wait(absl::Seconds(10));
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(WIFEXITED(*st));
  EXPECT_EQ(WEXITSTATUS(*st), 7);
}

TEST_F(SampleServiceTest, HangKeepsAcceptingButNeverAnswers) {
  StartSample();
  EXPECT_EQ(Get("/fault/hang"), 200);
  EXPECT_EQ(HttpGetStatus("127.0.0.1", port_, "/health", absl::Milliseconds(300)), -1);
  EXPECT_TRUE(CanConnect("127.0.0.1", port_));
}

TEST_F(SampleServiceTest, SigtermExitsZero) {
  StartSample();
  auto st = proc_->Stop();
  EXPECT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 0);
}

TEST_F(SampleServiceTest, CheckFailsWhenNothingListens) {
  port_ = FreePort();
  EXPECT_EQ(Check(), 1);
}

}  // namespace
}  // namespace upkeep::testing

// DockerRuntime against things that are not a healthy Docker daemon: a missing socket and a
// unix-socket server answering garbage. Errors must be clear; nothing may crash.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>

#include "agent/runtime/docker/docker_runtime.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace upkeep::agent {
namespace {

using ::testing::HasSubstr;

// Answers every connection with `response` (a full HTTP response), then closes.
class GarbageServer {
 public:
  GarbageServer(const std::string& path, std::string response)
      : path_(path), response_(std::move(response)) {
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof(a.sun_path), "%s", path.c_str());
    bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    listen(fd_, 16);
    thread_ = std::thread([this] {
      while (true) {
        const int c = accept(fd_, nullptr, nullptr);
        if (c < 0 || stop_) {
          if (c >= 0) close(c);
          return;
        }
        char buf[4096];
        (void)recv(c, buf, sizeof(buf), 0);  // the request head fits
        (void)send(c, response_.data(), response_.size(), MSG_NOSIGNAL);
        close(c);
      }
    });
  }
  ~GarbageServer() {
    stop_ = true;
    shutdown(fd_, SHUT_RDWR);
    // Wake accept() with one last connection in case shutdown does not.
    const int c = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof(a.sun_path), "%s", path_.c_str());
    connect(c, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    close(c);
    thread_.join();
    close(fd_);
  }

 private:
  std::string path_;
  std::string response_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

upkeep::v1::ServiceSpec Spec() {
  upkeep::v1::ServiceSpec s;
  s.set_name("web");
  s.mutable_container()->mutable_compose()->set_project("p");
  s.mutable_container()->mutable_compose()->set_service("web");
  return s;
}

std::string Http(int code, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(code) +
         " X\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
         body;
}

TEST(DockerRuntimeErrors, MissingSocketIsAClearError) {
  upkeep::testing::TempDir dir;
  auto rt = CreateDockerRuntime(dir.Join("nope.sock"));
  ASSERT_TRUE(rt.ok());
  auto obs = (*rt)->Inspect(Spec());
  EXPECT_FALSE(obs.exists());
  EXPECT_THAT(obs.error(), HasSubstr("nope.sock"));
  EXPECT_THAT(obs.error(), HasSubstr("No such file"));
  auto st = (*rt)->Start(Spec());
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(std::string(st.message()), HasSubstr("nope.sock"));
  EXPECT_FALSE((*rt)->Logs(Spec(), 10).ok());
}

TEST(DockerRuntimeErrors, EmptySocketPathRejected) { EXPECT_FALSE(CreateDockerRuntime("").ok()); }

TEST(DockerRuntimeErrors, NonJsonVersionBody) {
  upkeep::testing::TempDir dir;
  GarbageServer server(dir.Join("d.sock"), Http(200, "<html>hello</html>"));
  auto rt = CreateDockerRuntime(dir.Join("d.sock"));
  ASSERT_TRUE(rt.ok());
  auto obs = (*rt)->Inspect(Spec());
  EXPECT_FALSE(obs.exists());
  EXPECT_THAT(obs.error(), HasSubstr("/version"));
  EXPECT_THAT(obs.error(), HasSubstr("unexpected body"));
  EXPECT_THAT(obs.error(), HasSubstr("<html>hello"));
}

TEST(DockerRuntimeErrors, ServerError) {
  upkeep::testing::TempDir dir;
  GarbageServer server(dir.Join("d.sock"), Http(500, "{\"message\":\"boom\"}"));
  auto rt = CreateDockerRuntime(dir.Join("d.sock"));
  ASSERT_TRUE(rt.ok());
  auto obs = (*rt)->Inspect(Spec());
  EXPECT_THAT(obs.error(), HasSubstr("HTTP 500"));
  EXPECT_FALSE((*rt)->Stop(Spec(), absl::Seconds(1)).ok());
}

TEST(DockerRuntimeErrors, WatchOnGarbageDoesNotCrashAndStopsPromptly) {
  upkeep::testing::TempDir dir;
  GarbageServer server(dir.Join("d.sock"), Http(200, "not json\n"));
  auto rt = CreateDockerRuntime(dir.Join("d.sock"));
  ASSERT_TRUE(rt.ok());
  auto watch = (*rt)->Watch({Spec()}, [](const std::string&) {});
  const absl::Time t0 = absl::Now();
  rt->reset();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(3));
}

TEST(DemuxDockerStream, DecodesFramesAndPassesRawThrough) {
  std::string framed;
  auto frame = [&](char stream, const std::string& payload) {
    framed += std::string({stream, 0, 0, 0});
    const uint32_t n = payload.size();
    framed += std::string({static_cast<char>(n >> 24), static_cast<char>((n >> 16) & 0xff),
                           static_cast<char>((n >> 8) & 0xff), static_cast<char>(n & 0xff)});
    framed += payload;
  };
  frame(1, "out line\n");
  frame(2, "err line\n");
  EXPECT_EQ(DemuxDockerStream(framed), "out line\nerr line\n");
  EXPECT_EQ(DemuxDockerStream("plain tty output\n"), "plain tty output\n");
  EXPECT_EQ(DemuxDockerStream(""), "");
}

}  // namespace
}  // namespace upkeep::agent

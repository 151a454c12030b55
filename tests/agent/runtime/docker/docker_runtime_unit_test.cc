// DockerRuntime against things that are not a healthy Docker daemon (a missing socket, a
// unix-socket server answering garbage: errors must be clear, nothing may crash), and its pure
// parts: the multiplexed log stream, and telling a person's stop from a crash by the events.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <string>
#include <thread>
#include <vector>

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

// How a run ended, from the events Docker logs (sequences as dockerd 20.10 emits them).
namespace di = docker_internal;

struct StopCase {
  const char* name;
  std::vector<std::pair<const char*, int>> events;  // action (kill: signal), 10 ms apart
  int exit_code;
  bool oom_killed;
  int stop_signal;
  std::vector<std::pair<int, int>> own;  // event index ranges [from, to] made by the runtime
  int started_at_index;                  // the run began at this event's time
  bool person;
};

TEST(OutsideStopCause, TellsAPersonsStopFromACrash) {
  const StopCase cases[] = {
      {"docker stop",
       {{"start", 0}, {"kill", 15}, {"die", 0}, {"stop", 0}},
       0,
       false,
       15,
       {},
       0,
       true},
      {"docker stop, seen before the stop event",
       {{"start", 0}, {"kill", 15}, {"die", 0}},
       0,
       false,
       15,
       {},
       0,
       true},
      {"docker stop, SIGKILL after the timeout",
       {{"start", 0}, {"kill", 15}, {"kill", 9}, {"die", 0}},
       137,
       false,
       15,
       {},
       0,
       true},
      {"docker kill", {{"start", 0}, {"kill", 9}, {"die", 0}}, 137, false, 15, {}, 0, true},
      {"docker stop of nginx (StopSignal SIGQUIT)",
       {{"start", 0}, {"kill", SIGQUIT}, {"die", 0}},
       0,
       false,
       SIGQUIT,
       {},
       0,
       true},
      {"docker kill -s HUP that ended it",
       {{"start", 0}, {"kill", SIGHUP}, {"die", 0}},
       129,
       false,
       15,
       {},
       0,
       true},
      {"kill event stamped just after the exit",
       {{"start", 0}, {"die", 0}, {"kill", 9}},
       137,
       false,
       15,
       {},
       0,
       true},
      {"a crash", {{"start", 0}, {"die", 0}}, 139, false, 15, {}, 0, false},
      {"a clean exit", {{"start", 0}, {"die", 0}}, 0, false, 15, {}, 0, false},
      {"the OOM killer", {{"start", 0}, {"oom", 0}, {"die", 0}}, 137, false, 15, {}, 0, false},
      {"OOMKilled without the event", {{"start", 0}, {"die", 0}}, 137, true, 15, {}, 0, false},
      {"a person's stop of an OOM-killed run",
       {{"start", 0}, {"oom", 0}, {"kill", 15}, {"die", 0}},
       137,
       false,
       15,
       {},
       0,
       false},
      {"docker kill -s USR1 (reload, not a stop), later a crash",
       {{"start", 0}, {"kill", SIGUSR1}, {"die", 0}},
       139,
       false,
       15,
       {},
       0,
       false},
      {"our own stop",
       {{"start", 0}, {"kill", 15}, {"die", 0}, {"stop", 0}},
       0,
       false,
       15,
       {{1, 3}},
       0,
       false},
      {"our own restart, then a crash",
       {{"kill", 15}, {"die", 0}, {"stop", 0}, {"start", 0}, {"restart", 0}, {"die", 0}},
       139,
       false,
       15,
       {{0, 4}},
       3,
       false},
      {"a person's stop, docker start, then a crash",
       {{"start", 0}, {"kill", 15}, {"die", 0}, {"stop", 0}, {"start", 0}, {"die", 0}},
       139,
       false,
       15,
       {},
       4,
       false},
      {"a person's docker restart whose start failed",
       {{"start", 0}, {"kill", 15}, {"die", 0}, {"stop", 0}},
       0,
       false,
       15,
       {},
       0,
       true},
      {"no events at all (beyond dockerd's buffer)", {{"start", 0}}, 0, false, 15, {}, 0, false},
  };
  const absl::Time t0 = absl::FromUnixSeconds(1700000000);
  for (const auto& c : cases) {
    std::vector<di::ContainerEvent> events;
    for (size_t i = 0; i < c.events.size(); ++i) {
      di::ContainerEvent e;
      e.action = c.events[i].first;
      e.at = t0 + absl::Milliseconds(10 * i);
      e.signal = c.events[i].second;
      events.push_back(e);
    }
    // Out of order on purpose: replayed and live events are merged.
    std::reverse(events.begin(), events.end());
    std::vector<di::OwnCall> own;
    for (const auto& [from, to] : c.own) {
      own.push_back({t0 + absl::Milliseconds(10 * from - 1), t0 + absl::Milliseconds(10 * to + 1)});
    }
    di::ExitFacts exit;
    exit.started_at = t0 + absl::Milliseconds(10 * c.started_at_index) - absl::Milliseconds(2);
    exit.exit_code = c.exit_code;
    exit.oom_killed = c.oom_killed;
    exit.stop_signal = c.stop_signal;
    const std::string cause = di::OutsideStopCause(events, own, exit);
    EXPECT_EQ(!cause.empty(), c.person) << c.name << ": cause '" << cause << "'";
  }
}

TEST(OutsideStopCause, AnOwnCallStillRunningCoversItsEvents) {
  const absl::Time t0 = absl::FromUnixSeconds(1700000000);
  std::vector<di::ContainerEvent> events = {
      {"start", t0, 0}, {"kill", t0 + absl::Seconds(1), 15}, {"die", t0 + absl::Seconds(2), 0}};
  di::ExitFacts exit;
  exit.started_at = t0;
  EXPECT_EQ(
      di::OutsideStopCause(events, {{t0 + absl::Milliseconds(500), absl::InfiniteFuture()}}, exit),
      "");
  // A call that ended before the kill does not cover it.
  EXPECT_NE(di::OutsideStopCause(
                events, {{t0 + absl::Milliseconds(100), t0 + absl::Milliseconds(500)}}, exit),
            "");
}

TEST(ParseStopSignal, NamesNumbersAndDefault) {
  EXPECT_EQ(di::ParseStopSignal(""), SIGTERM);
  EXPECT_EQ(di::ParseStopSignal("SIGQUIT"), SIGQUIT);
  EXPECT_EQ(di::ParseStopSignal("quit"), SIGQUIT);
  EXPECT_EQ(di::ParseStopSignal("SIGWINCH"), SIGWINCH);
  EXPECT_EQ(di::ParseStopSignal("9"), SIGKILL);
  EXPECT_EQ(di::ParseStopSignal("SIGNOPE"), 0);
  EXPECT_EQ(di::ParseStopSignal("99"), 0);
}

}  // namespace
}  // namespace upkeep::agent

// What the host shows, end to end (issue 11, "Beyond 502: disks" and "Sockets of containers"):
// a real controller, agent, nginx and sample services on the process runtime, with a fault the
// test makes on the host itself: a small tmpfs it mounts and fills, a network namespace it
// creates. Both are undone in TearDown, also when a case fails. The tests run as root.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "core/proto_time.h"
#include "demo/harness.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_env.h"
#include "tests/support/net.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace upkeep::demo {
namespace {

namespace v1 = upkeep::v1;
using upkeep::testing::WaitFor;

class HostEvidenceTest : public ::testing::Test {
 protected:
  void TearDown() override {
    // The harness (a local of the test body) has stopped nginx and the services by now.
    if (!mounted_.empty() && Run({"umount", mounted_}) != 0) {
      ADD_FAILURE() << "umount " << mounted_ << " failed; detaching it lazily";
      Run({"umount", "-l", mounted_});
    }
    if (!netns_.empty() && Run({"ip", "netns", "del", netns_}) != 0) {
      ADD_FAILURE() << "ip netns del " << netns_ << " failed";
    }
  }

  // Runs a command to its end; its exit code (-1 when it did not run or end).
  int Run(const std::vector<std::string>& argv) {
    auto p = upkeep::testing::Subprocess::Start(argv, dir_.Join("commands.log"));
    if (!p.ok()) return -1;
    const auto st = (*p)->Wait(absl::Seconds(30));
    if (!st.has_value() || !WIFEXITED(*st)) return -1;
    return WEXITSTATUS(*st);
  }

  HarnessOptions Options() {
    HarnessOptions options;
    options.work_dir = dir_.path();
    options.source_dir = upkeep::testing::SourcePath("");
    options.bin_dir = upkeep::testing::BinPath("");
    options.backoff_initial = "200ms";
    return options;
  }

  std::vector<v1::ActionRecord> ActionsOf(StackHarness& h, v1::ActionKind kind,
                                          const std::string& target, size_t skip = 0) {
    std::vector<v1::ActionRecord> out;
    auto actions = h.Actions();
    if (!actions.ok()) return out;
    for (size_t i = skip; i < actions->size(); ++i) {
      const auto& a = (*actions)[i];
      if (a.action().kind() == kind && a.action().target() == target) out.push_back(a);
    }
    return out;
  }

  // The first finding `code` whose target starts with `target_prefix`, in the stack's last
  // diagnoses.
  static bool FindingOf(StackHarness& h, const std::string& code, const std::string& target_prefix,
                        v1::Finding* out) {
    auto d = h.Describe();
    if (!d.ok()) return false;
    for (const auto& diagnosis : d->stack().status().diagnoses()) {
      for (const auto& f : diagnosis.findings()) {
        if (f.code() == code && absl::StartsWith(f.target(), target_prefix)) {
          *out = f;
          return true;
        }
      }
    }
    return false;
  }

  static absl::Time LastReconcile(StackHarness& h) {
    auto d = h.Describe();
    if (!d.ok() || !d->stack().status().has_last_reconcile()) return absl::InfinitePast();
    return FromProto(d->stack().status().last_reconcile());
  }

  // Waits until the controller has judged the stack twice more after now: enough to show
  // that something it would do at once, it did not do.
  static void WaitTwoReconciles(StackHarness& h) {
    const absl::Time from = LastReconcile(h);
    ASSERT_TRUE(WaitFor(
        [&] {
          (void)h.ProxyStatus("/api/health", absl::Milliseconds(200));  // a change to react to
          return LastReconcile(h) > from + absl::Seconds(1);
        },
        absl::Seconds(30)));
  }

  upkeep::testing::TempDir dir_;
  std::string mounted_;  // a tmpfs this test mounted
  std::string netns_;    // a network namespace this test created
};

// "Beyond 502": the filesystem that holds nginx's logs is full. upkeep says so (DiskFull, with
// how full, what is left and what it holds) and leaves nginx alone: no reload or restart frees
// a byte. nginx's prefix (its logs, pid and temp files) is a 2 MiB tmpfs the test mounts.
TEST_F(HostEvidenceTest, AFullDiskHoldingNginxLogsIsAFindingAndNginxIsLeftAlone) {
  const std::string mount = dir_.Join("nginx");
  std::filesystem::create_directories(mount);
  ASSERT_EQ(Run({"mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "upkeep-e2e-disk", mount}), 0)
      << "mount -t tmpfs failed (the e2e tests run as root); see " << dir_.Join("commands.log");
  mounted_ = mount;

  auto started = StackHarness::Start(Options());
  ASSERT_TRUE(started.ok()) << started.status();
  StackHarness& h = **started;
  ASSERT_TRUE(h.WaitServing(absl::Seconds(60)).ok()) << Summary(h);
  v1::Finding f;
  ASSERT_FALSE(FindingOf(h, "DiskFull", mount, &f))
      << "full before the test filled it? " << f.DebugString();
  auto before = h.Actions();
  ASSERT_TRUE(before.ok());
  const size_t baseline = before->size();

  // Fill it to the last byte.
  {
    const std::string filler = mount + "/filler";
    const int fd = ::open(filler.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0) << filler;
    const std::string chunk(64 * 1024, 'x');
    ssize_t n = 0;
    while ((n = ::write(fd, chunk.data(), chunk.size())) > 0) {
    }
    const int err = errno;
    ::close(fd);
    ASSERT_EQ(err, ENOSPC) << "filling " << filler << " stopped with errno " << err;
  }

  ASSERT_TRUE(WaitFor([&] { return FindingOf(h, "DiskFull", mount, &f); }, absl::Seconds(30)))
      << Summary(h);
  EXPECT_EQ(f.severity(), v1::SEVERITY_ALERT) << f.DebugString();
  EXPECT_TRUE(absl::StrContains(f.evidence().at("holds"), "nginx logs " + mount + "/error.log"))
      << f.DebugString();
  double used = 0;
  EXPECT_TRUE(absl::SimpleAtod(absl::StripSuffix(f.evidence().at("used"), "%"), &used))
      << f.DebugString();
  EXPECT_GE(used, 95.0) << f.DebugString();
  int64_t available = -1;
  EXPECT_TRUE(absl::SimpleAtoi(f.evidence().at("available_bytes"), &available)) << f.DebugString();
  EXPECT_LT(available, 64 * 1024) << f.DebugString();
  EXPECT_TRUE(absl::StrContains(f.message(), "over 95%")) << f.DebugString();

  // An alert, not a repair: nginx still serves and nothing is done to it.
  WaitTwoReconciles(h);
  EXPECT_TRUE(FindingOf(h, "DiskFull", mount, &f)) << Summary(h);
  // (Not Ready while the alert stands, but both routes answer.)
  EXPECT_EQ(h.ProxyStatus("/api/health"), 200) << Summary(h);
  EXPECT_EQ(h.ProxyStatus("/"), 200) << Summary(h);
  for (auto kind :
       {v1::ACTION_KIND_RELOAD_PROXY, v1::ACTION_KIND_RESTART_PROXY, v1::ACTION_KIND_START_PROXY}) {
    EXPECT_TRUE(ActionsOf(h, kind, "nginx", baseline).empty())
        << v1::ActionKind_Name(kind) << Summary(h);
  }

  // Space freed: the finding goes with it.
  std::filesystem::remove(mount + "/filler");
  EXPECT_TRUE(WaitFor([&] { return !FindingOf(h, "DiskFull", mount, &f); }, absl::Seconds(30)))
      << Summary(h);
  EXPECT_TRUE(h.WaitServing(absl::Seconds(30)).ok()) << Summary(h);
}

// "Sockets of containers": listening sockets are read from the service's own network
// namespace. The backend runs (`ip netns exec NS upkeep-sample-service ...`) in a namespace the
// test creates, on another port than the one nginx and the stack expect. Seen from the agent's
// namespace nothing listens at all; upkeep reads /proc/PID/net/tcp of the backend itself and
// says where it listens (PortMismatch), and does not restart it for that.
TEST_F(HostEvidenceTest, AWrongPortInTheServicesOwnNetnsIsNamedNotRestarted) {
  std::string ip = "/usr/sbin/ip";
  if (!std::filesystem::exists(ip)) ip = "/usr/bin/ip";
  ASSERT_TRUE(std::filesystem::exists(ip)) << "iproute2's ip is not installed";
  const std::string ns = absl::StrCat("upkeep-e2e-", ::getpid(), "-portns");
  ASSERT_EQ(Run({ip, "netns", "add", ns}), 0) << "see " << dir_.Join("commands.log");
  netns_ = ns;
  ASSERT_EQ(Run({ip, "netns", "exec", ns, ip, "link", "set", "lo", "up"}), 0);

  HarnessOptions options = Options();
  options.backend_command_prefix = {ip, "netns", "exec", ns};
  options.allow_exec = {std::filesystem::canonical(ip).parent_path().string()};
  int listen = upkeep::testing::FreePort();
  options.backend_listen_port = listen;
  auto started = StackHarness::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  StackHarness& h = **started;
  ASSERT_NE(listen, h.backend_port());

  v1::Finding f;
  ASSERT_TRUE(
      WaitFor([&] { return FindingOf(h, "PortMismatch", "backend", &f); }, absl::Seconds(40)))
      << Summary(h);
  const std::string where = absl::StrCat("127.0.0.1:", listen);
  EXPECT_EQ(f.evidence().at("listening"), where) << f.DebugString();
  EXPECT_EQ(f.evidence().at("expected_port"), absl::StrCat(h.backend_port())) << f.DebugString();
  EXPECT_TRUE(absl::StrContains(f.message(), "listens on " + where)) << f.DebugString();
  // The socket is the namespace's own: from the host nobody answers there.
  EXPECT_FALSE(upkeep::testing::CanConnect("127.0.0.1", listen));

  // A restart will not move the port: none for it, the backend started once.
  WaitTwoReconciles(h);
  EXPECT_TRUE(FindingOf(h, "PortMismatch", "backend", &f)) << Summary(h);
  EXPECT_TRUE(ActionsOf(h, v1::ACTION_KIND_RESTART_SERVICE, "backend").empty()) << Summary(h);
  EXPECT_EQ(ActionsOf(h, v1::ACTION_KIND_START_SERVICE, "backend").size(), 1u) << Summary(h);
  EXPECT_TRUE(ActionsOf(h, v1::ACTION_KIND_RESTART_PROXY, "nginx").empty()) << Summary(h);
}

}  // namespace
}  // namespace upkeep::demo

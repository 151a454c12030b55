// What the host shows, end to end (issue 11, "Beyond 502: disks" and "Sockets of containers"):
// a real controller, agent, nginx and sample services on the process runtime, with a fault the
// test makes on the host itself: a small tmpfs it mounts and fills (by blocks or by inodes), a
// network namespace it creates. Both are undone in TearDown, also when a case fails. The tests
// run as root.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
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
    for (const std::string& m : mounted_) {
      if (Run({"umount", m}) != 0) {
        ADD_FAILURE() << "umount " << m << " failed; detaching it lazily";
        Run({"umount", "-l", m});
      }
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

  // Mounts a tmpfs (`options` e.g. "size=2m,nr_inodes=64") at dir_/NAME; its resolved path.
  std::string MountTmpfs(const std::string& name, const std::string& options) {
    const std::string mount = dir_.Join(name);
    std::filesystem::create_directories(mount);
    if (Run({"mount", "-t", "tmpfs", "-o", options + ",mode=0755", "upkeep-e2e-disk", mount}) !=
        0) {
      ADD_FAILURE() << "mount -t tmpfs failed (the e2e tests run as root); see "
                    << dir_.Join("commands.log");
      return "";
    }
    mounted_.push_back(mount);
    return std::filesystem::canonical(mount).string();
  }

  // Writes `file` until the filesystem has no block left; the errno that stopped it.
  static int FillBlocks(const std::string& file) {
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return errno;
    const std::string chunk(64 * 1024, 'x');
    while (::write(fd, chunk.data(), chunk.size()) > 0) {
    }
    const int err = errno;
    ::close(fd);
    return err;
  }

  // Creates empty files in `dir` until the filesystem has no inode left; the errno that
  // stopped it. `*made` counts them.
  static int FillInodes(const std::string& dir, int* made) {
    *made = 0;
    while (true) {
      const std::string f = absl::StrCat(dir, "/f", *made);
      const int fd = ::open(f.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd < 0) return errno;
      ::close(fd);
      ++*made;
    }
  }

  // Executed (not dry-run, not paused) records of `kind` on `target`, after the first `skip`.
  std::vector<v1::ActionRecord> Executed(StackHarness& h, v1::ActionKind kind,
                                         const std::string& target, size_t skip) {
    std::vector<v1::ActionRecord> out;
    for (auto& a : ActionsOf(h, kind, target, skip)) {
      if (!a.dry_run()) out.push_back(std::move(a));
    }
    return out;
  }

  static size_t ActionCount(StackHarness& h) {
    auto actions = h.Actions();
    return actions.ok() ? actions->size() : 0;
  }

  // The stack's condition `type` ("Ready"): "True", "False", "Unknown" or "" when absent.
  static std::string Condition(StackHarness& h, const std::string& type, std::string* reason) {
    auto d = h.Describe();
    if (!d.ok()) return "";
    for (const auto& c : d->stack().status().conditions()) {
      if (c.type() != type) continue;
      if (reason != nullptr) *reason = absl::StrCat(c.reason(), ": ", c.message());
      return c.status();
    }
    return "";
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
  std::vector<std::string> mounted_;  // tmpfs this test mounted
  std::string netns_;                 // a network namespace this test created
};

// "Beyond 502": the filesystem that holds nginx's logs is full. upkeep says so (DiskFull, with
// how full, what is left and what it holds) and leaves nginx alone: no reload or restart frees
// a byte. nginx's prefix (its logs, pid and temp files) is a 2 MiB tmpfs the test mounts.
TEST_F(HostEvidenceTest, AFullDiskHoldingNginxLogsIsAFindingAndNginxIsLeftAlone) {
  const std::string mount = MountTmpfs("nginx", "size=2m");
  ASSERT_FALSE(mount.empty());

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
  ASSERT_EQ(FillBlocks(mount + "/filler"), ENOSPC);

  ASSERT_TRUE(WaitFor([&] { return FindingOf(h, "DiskFull", mount, &f); }, absl::Seconds(30)))
      << Summary(h);
  EXPECT_EQ(f.severity(), v1::SEVERITY_ALERT) << f.DebugString();
  // Named by its mount point; the paths on it are the evidence.
  EXPECT_EQ(f.target(), mount) << f.DebugString();
  EXPECT_TRUE(
      absl::StrContains(f.evidence().at("holds"), "nginx logs " + dir_.Join("nginx/error.log")))
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
  // Ready says whether the stack serves, and it does: the full disk is a finding about what
  // will break next, told to people (the Alert event), not unreadiness.
  EXPECT_TRUE(h.WaitServing(absl::Seconds(10)).ok()) << Summary(h);
  std::string why;
  EXPECT_EQ(Condition(h, "Ready", &why), "True") << why;
  EXPECT_EQ(Condition(h, "Degraded", &why), "True") << why;  // the alert stands
  EXPECT_TRUE(absl::StrContains(why, "DiskFull [" + mount + "]")) << why;
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

// "Beyond 502": nginx is down and cannot start for want of space. nginx's prefix (its error log,
// pid file, temp directories and config) is a tmpfs with 64 inodes. With the stack paused (so
// upkeep does not race the injection) nginx is stopped, its error log rotated away, and the
// tmpfs's inodes all taken: `nginx -t` now fails with `open() ".../error.log" failed (28: No
// space left on device)`. Resumed, upkeep tests the config once, blames the disk (DiskFull on
// nginx, naming the mount, and DiskFull on the mount: out of inodes, its blocks nearly all
// free) and neither starts nor restarts nginx, however long the disk stays full. Once inodes
// are freed (files deleted in a directory nobody watches, as an operator cleaning up would),
// the next observation shows the filesystem with room, upkeep tests again, starts nginx, and
// both routes serve.
TEST_F(HostEvidenceTest, NginxThatCannotStartForWantOfInodesIsBlamedOnTheDiskThenStarted) {
  const std::string mount = MountTmpfs("nginx", "size=2m,nr_inodes=64");
  ASSERT_FALSE(mount.empty());
  auto started = StackHarness::Start(Options());
  ASSERT_TRUE(started.ok()) << started.status();
  StackHarness& h = **started;
  ASSERT_TRUE(h.WaitServing(absl::Seconds(60)).ok()) << Summary(h);

  // The fault, injected while paused.
  ASSERT_TRUE(h.SetPaused(true).ok());
  const std::string pid_file = dir_.Join("nginx/nginx.pid");
  ASSERT_TRUE(h.StopNginx().ok());
  ASSERT_TRUE(
      WaitFor([&] { return h.ProxyStatus("/", absl::Milliseconds(200)) == -1; }, absl::Seconds(20)))
      << "nginx did not stop";
  ASSERT_TRUE(WaitFor([&] { return !std::filesystem::exists(pid_file); }, absl::Seconds(20)))
      << "nginx left its pid file";
  // Rotated away. Its inode is free only once nginx's last process has closed it (the master
  // removes its pid file before it exits): wait for that, or the fill below races it.
  const auto free_inodes = [&] {
    struct statvfs vfs {};
    return ::statvfs(mount.c_str(), &vfs) == 0 ? static_cast<int64_t>(vfs.f_favail) : -1;
  };
  const int64_t before_rotation = free_inodes();
  std::filesystem::remove(dir_.Join("nginx/error.log"));
  ASSERT_TRUE(WaitFor([&] { return free_inodes() == before_rotation + 1; }, absl::Seconds(20)))
      << "the rotated error log's inode was not released";
  const std::string filler = mount + "/filler";
  std::filesystem::create_directories(filler);
  int made = 0;
  ASSERT_EQ(FillInodes(filler, &made), ENOSPC) << "after " << made << " files";
  const size_t baseline = ActionCount(h);
  ASSERT_TRUE(h.SetPaused(false).ok());

  // Blamed on the disk, the mount named.
  v1::Finding nginx, disk;
  ASSERT_TRUE(WaitFor([&] { return FindingOf(h, "DiskFull", "nginx", &nginx); }, absl::Seconds(30)))
      << Summary(h);
  EXPECT_EQ(nginx.evidence().at("filesystem"), mount) << nginx.DebugString();
  EXPECT_TRUE(absl::StrContains(nginx.message(), "No space left on device\" on " + mount))
      << nginx.DebugString();
  EXPECT_TRUE(absl::StrContains(nginx.evidence().at("output"), "No space left on device"))
      << nginx.DebugString();
  ASSERT_TRUE(FindingOf(h, "DiskFull", mount, &disk)) << Summary(h);
  EXPECT_EQ(disk.target(), mount) << disk.DebugString();
  EXPECT_EQ(disk.evidence().at("available_inodes"), "0") << disk.DebugString();
  EXPECT_TRUE(absl::StrContains(disk.message(), "inodes")) << disk.DebugString();
  v1::Finding invalid;
  EXPECT_FALSE(FindingOf(h, "ConfigInvalid", "nginx", &invalid)) << invalid.DebugString();

  // No loop: while the disk stays full nothing starts nginx, and its config was tested once
  // (the test that found the disk full), not on every observation.
  WaitTwoReconciles(h);
  WaitTwoReconciles(h);
  EXPECT_TRUE(FindingOf(h, "DiskFull", "nginx", &nginx)) << Summary(h);
  EXPECT_TRUE(Executed(h, v1::ACTION_KIND_START_PROXY, "nginx", baseline).empty()) << Summary(h);
  EXPECT_TRUE(Executed(h, v1::ACTION_KIND_RESTART_PROXY, "nginx", baseline).empty()) << Summary(h);
  EXPECT_TRUE(Executed(h, v1::ACTION_KIND_RELOAD_PROXY, "nginx", baseline).empty()) << Summary(h);
  EXPECT_EQ(Executed(h, v1::ACTION_KIND_TEST_PROXY_CONFIG, "nginx", baseline).size(), 1u)
      << Summary(h);
  EXPECT_EQ(h.ProxyStatus("/", absl::Milliseconds(500)), -1) << "nginx runs? " << Summary(h);

  // Room again: the files go (the directory stays: no watched directory changes).
  for (int i = 0; i < made; ++i) std::filesystem::remove(absl::StrCat(filler, "/f", i));
  ASSERT_TRUE(h.WaitServing(absl::Seconds(40)).ok()) << Summary(h);
  const auto starts = Executed(h, v1::ACTION_KIND_START_PROXY, "nginx", baseline);
  ASSERT_EQ(starts.size(), 1u) << Summary(h);
  // Started on the evidence (the disk has room again), not on the agent's slow re-test.
  EXPECT_TRUE(absl::StrContains(starts[0].why(), "the disk has room again")) << starts[0].why();
  EXPECT_TRUE(
      WaitFor([&] { return !FindingOf(h, "DiskFull", "nginx", &nginx); }, absl::Seconds(30)))
      << Summary(h);
}

// "Beyond 502": a service that cannot write its data stops, and restarting it cannot help. The
// backend keeps its state on a 1 MiB tmpfs (sample service --data-dir: it saves the state on
// every request, and exits 1 when a save fails) and the stack names it in dataPaths. The test
// fills the tmpfs: the backend's next save fails with "No space left on device" and it exits.
// upkeep blames the disk (DiskFull on the backend, naming the mount) and does not start it: no
// crash loop, no restart budget spent, no CrashLooping. Freed, the backend is started once and
// serves.
TEST_F(HostEvidenceTest, AServiceThatCannotWriteItsDataIsBlamedOnTheDiskNotRestarted) {
  const std::string mount = MountTmpfs("data", "size=1m");
  ASSERT_FALSE(mount.empty());
  HarnessOptions options = Options();
  options.backend_data_dir = dir_.Join("data/backend");
  auto started = StackHarness::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  StackHarness& h = **started;
  ASSERT_TRUE(h.WaitServing(absl::Seconds(60)).ok()) << Summary(h);
  ASSERT_TRUE(std::filesystem::exists(dir_.Join("data/backend/backend.state")))
      << "the backend keeps no state: is --data-dir passed?";
  const size_t baseline = ActionCount(h);

  ASSERT_EQ(FillBlocks(mount + "/filler"), ENOSPC);
  // The backend's next save (its next probe, within a second) fails and it exits.
  v1::Finding f;
  ASSERT_TRUE(WaitFor([&] { return FindingOf(h, "DiskFull", "backend", &f); }, absl::Seconds(30)))
      << Summary(h);
  EXPECT_EQ(f.evidence().at("filesystem"), mount) << f.DebugString();
  EXPECT_TRUE(absl::StrContains(f.message(), "backend is down and " + mount)) << f.DebugString();
  v1::Finding disk;
  EXPECT_TRUE(FindingOf(h, "DiskFull", mount, &disk)) << Summary(h);
  EXPECT_TRUE(
      absl::StrContains(disk.evidence().at("holds"), "backend data " + dir_.Join("data/backend")))
      << disk.DebugString();

  // Not restarted, however long it stays so.
  WaitTwoReconciles(h);
  WaitTwoReconciles(h);
  EXPECT_TRUE(FindingOf(h, "DiskFull", "backend", &f)) << Summary(h);
  EXPECT_TRUE(Executed(h, v1::ACTION_KIND_START_SERVICE, "backend", baseline).empty())
      << Summary(h);
  EXPECT_TRUE(Executed(h, v1::ACTION_KIND_RESTART_SERVICE, "backend", baseline).empty())
      << Summary(h);
  v1::Finding looping;
  EXPECT_FALSE(FindingOf(h, "CrashLooping", "backend", &looping)) << looping.DebugString();
  EXPECT_NE(h.ProxyStatus("/api/health"), 200) << Summary(h);
  std::string why;
  EXPECT_EQ(Condition(h, "Ready", &why), "False") << why;  // /api/ does not serve

  // Room again: started once, serving.
  std::filesystem::remove(mount + "/filler");
  ASSERT_TRUE(h.WaitServing(absl::Seconds(30)).ok()) << Summary(h);
  EXPECT_EQ(Executed(h, v1::ACTION_KIND_START_SERVICE, "backend", baseline).size(), 1u)
      << Summary(h);
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

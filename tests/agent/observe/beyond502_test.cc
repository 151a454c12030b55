// "Beyond 502" evidence: the filesystems a stack needs (statvfs on real paths) and the
// certificate an https route serves (a real TLS server: openssl s_server with a certificate
// made for the test, expiring in 5 days).
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/observe/certificate.h"
#include "agent/observe/disk.h"
#include "gtest/gtest.h"
#include "tests/support/net.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace upkeep::agent {
namespace {

namespace v1 = upkeep::v1;

TEST(Disks, NamesWhatEachFilesystemHolds) {
  testing::TempDir dir;
  v1::Stack stack;
  auto* svc = stack.mutable_spec()->add_services();
  svc->set_name("backend");
  svc->add_data_paths(dir.Join("backend-data"));  // not created yet: its parent counts
  stack.mutable_spec()->mutable_proxy()->mutable_nginx()->set_error_log(dir.Join("error.log"));
  const auto disks = ObserveDisks(stack, dir.path());
  ASSERT_EQ(disks.size(), 1u);  // all on the temp dir's filesystem
  const auto& fs = disks[0];
  EXPECT_GT(fs.used_percent(), 0);
  EXPECT_LE(fs.used_percent(), 100);
  EXPECT_GT(fs.available_bytes(), 0);
  EXPECT_EQ(fs.holds_size(), 3);
  ASSERT_EQ(fs.services_size(), 1);
  EXPECT_EQ(fs.services(0), "backend");
  EXPECT_TRUE(fs.proxy_logs());
}

// A filesystem is named by its mount point, not by the first path checked on it, and counts
// its inodes: a tmpfs with 16 inodes, mounted under the test's directory (the tests run as
// root), holding the backend's data two levels down.
TEST(Disks, NamesTheMountPointAndCountsInodes) {
  testing::TempDir dir;
  const std::string mount = dir.Join("small");
  std::filesystem::create_directories(mount);
  auto run = [&](std::vector<std::string> argv) {
    auto p = testing::Subprocess::Start(argv, dir.Join("mount.log"));
    if (!p.ok()) return -1;
    auto st = (*p)->Wait(absl::Seconds(30));
    return st.has_value() && WIFEXITED(*st) ? WEXITSTATUS(*st) : -1;
  };
  ASSERT_EQ(run({"mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=16", "upkeep-test", mount}), 0)
      << "see " << dir.Join("mount.log");
  const std::string data = mount + "/srv/backend";
  std::filesystem::create_directories(data);
  v1::Stack stack;
  auto* svc = stack.mutable_spec()->add_services();
  svc->set_name("backend");
  svc->add_data_paths(data);
  const auto disks = ObserveDisks(stack, "");
  int made = 0;
  while (std::ofstream(absl::StrCat(mount, "/f", made)) && made < 64) ++made;
  const auto full = ObserveDisks(stack, "");
  EXPECT_EQ(run({"umount", mount}), 0);

  ASSERT_EQ(disks.size(), 1u);
  EXPECT_EQ(disks[0].mount(), std::filesystem::canonical(dir.path()).string() + "/small");
  ASSERT_EQ(disks[0].holds_size(), 1);
  EXPECT_EQ(disks[0].holds(0), "backend data " + data);  // the path stays, as evidence
  EXPECT_GT(disks[0].inodes_used_percent(), 0);
  EXPECT_LT(disks[0].inodes_used_percent(), 50);
  EXPECT_GT(disks[0].available_inodes(), 8);
  ASSERT_EQ(full.size(), 1u);
  EXPECT_EQ(full[0].available_inodes(), 0) << made << " files made";
  EXPECT_EQ(full[0].inodes_used_percent(), 100);
  EXPECT_LT(full[0].used_percent(), 10);  // its blocks are nearly all free
}

TEST(Certificates, ReadsTheExpiryAnHttpsRouteServes) {
  testing::TempDir dir;
  const std::string key = dir.Join("k.pem"), crt = dir.Join("c.pem");
  auto gen = testing::Subprocess::Start(
      {"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
       "-days", "5", "-subj", "/CN=dashboard.test"},
      dir.Join("gen.log"));
  ASSERT_TRUE(gen.ok());
  auto gen_status = (*gen)->Wait(absl::Seconds(60));
  ASSERT_TRUE(gen_status.has_value() && *gen_status == 0);
  const int port = testing::FreePort();
  auto server = testing::Subprocess::Start(
      {"openssl", "s_server", "-quiet", "-accept", absl::StrCat("127.0.0.1:", port), "-cert", crt,
       "-key", key, "-www"},
      dir.Join("server.log"));
  ASSERT_TRUE(server.ok());
  const std::string url = absl::StrCat("https://127.0.0.1:", port, "/api/health");
  absl::StatusOr<Certificate> cert = absl::UnavailableError("not yet");
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        cert = ReadCertificate(url, "dashboard.test", absl::Seconds(2));
        return cert.ok();
      },
      absl::Seconds(20)))
      << cert.status();
  EXPECT_TRUE(absl::StrContains(cert->subject, "CN=dashboard.test")) << cert->subject;
  const absl::Duration left = cert->not_after - absl::Now();
  EXPECT_GT(left, absl::Hours(24 * 4));
  EXPECT_LE(left, absl::Hours(24 * 5));
  // And into the observation, through the cache.
  v1::Stack stack;
  auto* route = stack.mutable_spec()->mutable_proxy()->add_routes();
  route->set_path("/api/");
  route->mutable_probe()->set_url(url);
  v1::ProxyObservation proxy;
  proxy.add_routes()->set_path("/api/");
  CertificateCache cache;
  AddCertificates(stack, &cache, &proxy);
  EXPECT_TRUE(proxy.routes(0).has_certificate_not_after());
}

// A route that could not be read (nginx not up yet) is read again seconds later, not after the
// hour a certificate is kept.
TEST(Certificates, AFailedReadIsRetriedSoon) {
  testing::TempDir dir;
  const std::string key = dir.Join("k.pem"), crt = dir.Join("c.pem");
  auto gen = testing::Subprocess::Start(
      {"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
       "-days", "5", "-subj", "/CN=late.test"},
      dir.Join("gen.log"));
  ASSERT_TRUE(gen.ok());
  auto gen_status = (*gen)->Wait(absl::Seconds(60));
  ASSERT_TRUE(gen_status.has_value() && *gen_status == 0);
  const int port = testing::FreePort();
  const std::string url = absl::StrCat("https://127.0.0.1:", port, "/");
  CertificateCache cache;
  const absl::Time t0 = absl::Now();
  ASSERT_FALSE(cache.Get(url, "", t0).ok()) << "nothing listens yet";
  auto server = testing::Subprocess::Start(
      {"openssl", "s_server", "-quiet", "-accept", absl::StrCat("127.0.0.1:", port), "-cert", crt,
       "-key", key, "-www"},
      dir.Join("server.log"));
  ASSERT_TRUE(server.ok());
  ASSERT_TRUE(testing::WaitForPort("127.0.0.1", port));
  EXPECT_FALSE(cache.Get(url, "", t0 + absl::Seconds(1)).ok()) << "cached for a moment";
  auto cert = cache.Get(url, "", t0 + CertificateCache::kRetryFailed);
  ASSERT_TRUE(cert.ok()) << cert.status();
  EXPECT_TRUE(absl::StrContains(cert->subject, "CN=late.test")) << cert->subject;
}

TEST(Certificates, PlainHttpIsNotRead) {
  EXPECT_FALSE(ReadCertificate("http://127.0.0.1:1/", "", absl::Seconds(1)).ok());
}

}  // namespace
}  // namespace upkeep::agent

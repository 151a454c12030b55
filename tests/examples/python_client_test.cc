// examples/python/upkeep_client.py (Debian's python3-grpcio, modules generated from proto/ at
// build time) against a live controller: services through server reflection, stacks, and a
// watch that sees an event published while it is open.
#include <sys/wait.h>

#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/support/net.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace upkeep {
namespace {

using testing::BinPath;
using testing::SourcePath;
using testing::WaitFor;

std::string Shell(const std::string& cmd, int* rc = nullptr) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
  const int status = ::pclose(p);
  if (rc != nullptr) *rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(PythonClient, ListsServicesAndStacksAndWatchesEvents) {
  const std::string generated = BinPath("../examples/python");
  if (!std::ifstream(generated + "/upkeep/v1/fleet_service_pb2_grpc.py").good()) {
    GTEST_SKIP() << "python3-grpcio / python3-grpc-tools missing (scripts/deps.sh)";
  }
  testing::TempDir dir;
  const std::string address = absl::StrCat("127.0.0.1:", testing::FreePort());
  auto controller = testing::Subprocess::Start(
      {BinPath("upkeep-controller"), "--data", dir.path(), "--listen", address, "--http", "off"},
      dir.Join("controller.log"));
  ASSERT_TRUE(controller.ok());
  ASSERT_TRUE(testing::WaitForPort("127.0.0.1", std::stoi(address.substr(10))));
  int rc = 0;
  Shell(absl::StrCat(BinPath("upkeepctl"), " apply -f ", SourcePath("manifests/demo.yaml"),
                     " --controller ", address),
        &rc);
  ASSERT_EQ(rc, 0);

  const std::string client =
      absl::StrCat("PYTHONPATH=", generated, " /usr/bin/python3 ",
                   SourcePath("examples/python/upkeep_client.py"), " --controller ", address, " ");
  const std::string services = Shell(client + "services", &rc);
  EXPECT_EQ(rc, 0) << services;
  EXPECT_NE(services.find("upkeep.v1.FleetService"), std::string::npos) << services;
  const std::string stacks = Shell(client + "stacks", &rc);
  EXPECT_EQ(rc, 0) << stacks;
  EXPECT_NE(stacks.find("demo"), std::string::npos) << stacks;

  // The watch replays what is stored, then stays open for what comes next.
  auto watch = testing::Subprocess::Start({"/bin/sh", "-c", client + "watch --count 2"},
                                          dir.Join("watch.out"));
  ASSERT_TRUE(watch.ok());
  ASSERT_TRUE(
      WaitFor([&] { return ReadFile(dir.Join("watch.out")).find("Applied") != std::string::npos; },
              absl::Seconds(30)))
      << ReadFile(dir.Join("watch.out"));
  Shell(absl::StrCat(BinPath("upkeepctl"), " pause stack demo --controller ", address), &rc);
  ASSERT_EQ(rc, 0);
  const auto status = (*watch)->Wait(absl::Seconds(30));
  ASSERT_TRUE(status.has_value()) << ReadFile(dir.Join("watch.out"));
  EXPECT_EQ(WEXITSTATUS(*status), 0);
  EXPECT_NE(ReadFile(dir.Join("watch.out")).find("Paused"), std::string::npos)
      << ReadFile(dir.Join("watch.out"));
}

}  // namespace
}  // namespace upkeep

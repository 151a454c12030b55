// A private dockerd for tests (scripts/dockerd.sh in a TempDir), shared by every test of one
// binary, with the image upkeep-sample:test (only /upkeep-sample-service, static) imported.
//
//   class MyTest : public upkeep::testing::DockerFixture {};
//   TEST_F(MyTest, X) { auto id = RunSample({.name = "web", .port = FreePort()}); ... }
//
// When dockerd cannot start the test is skipped with the reason, or FAILS when CI=true.
// Containers started through the fixture are removed (rm -f) after each test; dockerd is
// stopped when the binary exits.
#ifndef UPKEEP_TESTS_SUPPORT_DOCKER_DOCKER_FIXTURE_H_
#define UPKEEP_TESTS_SUPPORT_DOCKER_DOCKER_FIXTURE_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"

namespace upkeep::testing {

class DockerDaemon {
 public:
  static constexpr const char* kImage = "upkeep-sample:test";

  // Starts the private dockerd and imports the image on first call.
  static DockerDaemon* Get();

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  // CI=true: a Docker test that cannot get a dockerd fails instead of skipping.
  static bool Required();
  const std::string& socket() const { return socket_; }
  const std::string& dir() const { return dir_; }

  // Runs `docker -H unix://SOCKET args...`; returns stdout+stderr, or an error with them.
  absl::StatusOr<std::string> Docker(const std::vector<std::string>& args);
  // Stops and starts dockerd on the same directories (containers stop with it).
  absl::Status Restart();
  absl::Status StopDaemon();
  absl::Status StartDaemon();

 private:
  DockerDaemon() = default;
  void Init();

  std::string error_;
  std::string dir_;
  std::string socket_;
};

struct SampleContainer {
  std::string name;     // container name (required)
  int port = 0;         // --port, host network (required)
  std::string project;  // com.docker.compose.project label when set
  std::string service;  // com.docker.compose.service label when set
  // An exec-form health check (`upkeep-sample-service --check http://127.0.0.1:PORT/health`,
  // every 500ms, 1 retry); the container is then created through the API, as the CLI's
  // --health-cmd needs a shell the image does not have.
  bool health_check = false;
  std::string restart;            // --restart policy, e.g. "always"
  std::vector<std::string> args;  // extra sample-service flags
};

class DockerFixture : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  DockerDaemon* daemon() { return DockerDaemon::Get(); }
  const std::string& socket() { return daemon()->socket(); }
  // docker run -d --network host ... upkeep-sample:test; returns the container id.
  absl::StatusOr<std::string> RunSample(const SampleContainer& c);
  absl::StatusOr<std::string> Docker(const std::vector<std::string>& args) {
    return daemon()->Docker(args);
  }

 private:
  std::vector<std::string> containers_;
};

}  // namespace upkeep::testing

#endif  // UPKEEP_TESTS_SUPPORT_DOCKER_DOCKER_FIXTURE_H_

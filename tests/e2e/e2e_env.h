// What the e2e suite shares: one private dockerd per test binary (started on first use,
// stopped at exit) with the sample-service image imported, and the summary a failing case
// prints.
#ifndef UPKEEP_TESTS_E2E_E2E_ENV_H_
#define UPKEEP_TESTS_E2E_E2E_ENV_H_

#include <string>

#include "demo/harness.h"

namespace upkeep::demo {

// What happened to the stack, for a failing assertion: every action with its outcome and the
// start of its output, every event, and the last diagnosis of each host with its path.
std::string Summary(StackHarness& h);

class DockerEnv {
 public:
  // Starts the private dockerd on first call.
  static DockerEnv* Get();

  bool ok() const { return error_.empty(); }
  // In CI (CI=true) a Docker test that cannot start dockerd fails instead of skipping.
  bool required() const;
  const std::string& error() const { return error_; }
  const std::string& socket() const { return socket_; }
  const std::string& image() const { return image_; }

 private:
  DockerEnv() = default;
  void Start();

  std::string error_;
  std::string socket_;
  std::string image_;
};

}  // namespace upkeep::demo

#endif  // UPKEEP_TESTS_E2E_E2E_ENV_H_

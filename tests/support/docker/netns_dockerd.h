// A private dockerd of one test, started inside that test's network namespace (any argv prefix
// that enters it, e.g. PrivateNetns::NetOnly), with the sample image imported (a `docker
// import` of the static upkeep-sample-service, nothing pulled). Unlike DockerDaemon's
// host-network containers, a container on a user-defined network here gets an address of its
// own (`docker network create --subnet ...`), which exists only inside the namespace:
//
//   auto d = NetnsDockerd::Start(ns->NetOnly({}), dir.Join("docker"));
//   d->Docker({"network", "create", "--subnet", "10.213.7.0/24", "shopnet"});
//   d->Docker({"run", "-d", "--name", "web", "--network", "shopnet", d->image(), ...});
//   d->AddressOf("web");  // 10.213.7.2
//
// The destructor removes every container and stops dockerd (by the pid in its pidfile, through
// scripts/dockerd.sh). Not thread-safe: one owner.
#ifndef UPKEEP_TESTS_SUPPORT_DOCKER_NETNS_DOCKERD_H_
#define UPKEEP_TESTS_SUPPORT_DOCKER_NETNS_DOCKERD_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace upkeep::testing {

class NetnsDockerd {
 public:
  static constexpr const char* kImage = "upkeep-sample:netns";

  // Empty when dockerd and the docker CLI are installed; else what is missing.
  static std::string Unavailable();
  // scripts/dockerd.sh start DIR under `prefix`; then the image. DIR must be short (unix
  // socket paths stay under ~100 bytes).
  static absl::StatusOr<std::unique_ptr<NetnsDockerd>> Start(const std::vector<std::string>& prefix,
                                                             const std::string& dir);
  ~NetnsDockerd();

  const std::string& socket() const { return socket_; }
  const std::string& image() const { return image_; }
  // `docker -H unix://SOCKET args...`; its output, or an error with it.
  absl::StatusOr<std::string> Docker(const std::vector<std::string>& args);
  // The container's address on its (first) network; an error when it has none.
  absl::StatusOr<std::string> AddressOf(const std::string& container);

 private:
  NetnsDockerd() = default;
  std::string dir_;
  std::string socket_;
  std::string image_ = kImage;
  bool started_ = false;
};

}  // namespace upkeep::testing

#endif  // UPKEEP_TESTS_SUPPORT_DOCKER_NETNS_DOCKERD_H_

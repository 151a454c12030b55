// The sample image of the private dockerds (DockerDaemon, NetnsDockerd): the static
// upkeep-sample-service alone in a tarball for `docker import`, so nothing is pulled.
#ifndef UPKEEP_TESTS_SUPPORT_DOCKER_SAMPLE_IMAGE_H_
#define UPKEEP_TESTS_SUPPORT_DOCKER_SAMPLE_IMAGE_H_

#include <string>

#include "absl/status/statusor.h"

namespace upkeep::testing {

// Lays out `dir`/image-root with the sample service and tars it; returns the tar's path.
absl::StatusOr<std::string> SampleImageTar(const std::string& dir);

}  // namespace upkeep::testing

#endif  // UPKEEP_TESTS_SUPPORT_DOCKER_SAMPLE_IMAGE_H_

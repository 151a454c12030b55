#include "tests/support/docker/sample_image.h"

#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "tests/support/subprocess.h"

namespace upkeep::testing {

absl::StatusOr<std::string> SampleImageTar(const std::string& dir) {
  const std::string root = dir + "/image-root";
  std::error_code ec;
  std::filesystem::create_directories(root, ec);
  std::filesystem::copy_file(BinPath("upkeep-sample-service"), root + "/upkeep-sample-service",
                             std::filesystem::copy_options::overwrite_existing, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("copy ", BinPath("upkeep-sample-service"), ": ", ec.message()));
  }
  const std::string tar = dir + "/image.tar";
  if (auto out = RunToEnd({"tar", "-C", root, "-cf", tar, "."}, dir + "/tar.log"); !out.ok()) {
    return out.status();
  }
  return tar;
}

}  // namespace upkeep::testing

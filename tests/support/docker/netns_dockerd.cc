#include "tests/support/docker/netns_dockerd.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tests/support/docker/sample_image.h"
#include "tests/support/subprocess.h"

namespace upkeep::testing {
namespace {

// Runs argv to its end; its log goes once read (a docker CLI call writes one each).
absl::StatusOr<std::string> Run(const std::vector<std::string>& argv, const std::string& log) {
  auto out = RunToEnd(argv, log);
  std::error_code ec;
  std::filesystem::remove(log, ec);
  return out;
}

}  // namespace

std::string NetnsDockerd::Unavailable() {
  for (const char* p : {"/usr/sbin/dockerd", "/usr/bin/dockerd"}) {
    if (!std::filesystem::exists(p)) continue;
    for (const char* c : {"/usr/bin/docker", "/usr/sbin/docker"}) {
      if (std::filesystem::exists(c)) return "";
    }
    return "the docker CLI is not installed";
  }
  return "dockerd is not installed";
}

absl::StatusOr<std::unique_ptr<NetnsDockerd>> NetnsDockerd::Start(
    const std::vector<std::string>& prefix, const std::string& dir) {
  if (std::string why = Unavailable(); !why.empty()) return absl::UnavailableError(why);
  std::unique_ptr<NetnsDockerd> d(new NetnsDockerd());
  std::filesystem::create_directories(dir);
  d->dir_ = dir;
  d->socket_ = dir + "/docker.sock";
  std::vector<std::string> argv = prefix;
  argv.insert(argv.end(), {SourcePath("scripts/dockerd.sh"), "start", dir});
  d->started_ = true;  // from here the destructor stops whatever started
  if (auto st = Run(argv, dir + "/start.log"); !st.ok()) {
    return absl::UnavailableError(
        absl::StrCat("cannot start a private dockerd in the namespace: ", st.status().message(),
                     " (see ", dir, "/dockerd.log)"));
  }
  auto tar = SampleImageTar(dir);
  if (!tar.ok()) return tar.status();
  if (auto st = d->Docker({"import", *tar, kImage}); !st.ok()) return st.status();
  return d;
}

NetnsDockerd::~NetnsDockerd() {
  if (!started_) return;
  // Containers first (dockerd would stop them too, each within its stop timeout).
  if (auto ids = Docker({"ps", "-aq"}); ids.ok()) {
    std::vector<std::string> args = {"rm", "-f"};
    for (absl::string_view id : absl::StrSplit(*ids, '\n', absl::SkipWhitespace())) {
      args.emplace_back(absl::StripAsciiWhitespace(id));
    }
    if (args.size() > 2) (void)Docker(args);
  }
  (void)Run({SourcePath("scripts/dockerd.sh"), "stop", dir_}, dir_ + "/stop.log");
}

absl::StatusOr<std::string> NetnsDockerd::Docker(const std::vector<std::string>& args) {
  static int counter = 0;
  std::vector<std::string> argv = {"docker", "-H", "unix://" + socket_};
  argv.insert(argv.end(), args.begin(), args.end());
  return Run(argv, absl::StrCat(dir_, "/docker-cli-", ++counter, ".log"));
}

absl::StatusOr<std::string> NetnsDockerd::AddressOf(const std::string& container) {
  auto out = Docker(
      {"inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", container});
  if (!out.ok()) return out.status();
  std::vector<std::string> ips = absl::StrSplit(*out, ' ', absl::SkipWhitespace());
  if (ips.empty() || absl::StripAsciiWhitespace(ips[0]).empty()) {
    return absl::NotFoundError(absl::StrCat(container, " has no address on any network"));
  }
  return std::string(absl::StripAsciiWhitespace(ips[0]));
}

}  // namespace upkeep::testing

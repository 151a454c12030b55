#include "agent/runtime/docker/compose.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "agent/base/command.h"

namespace upkeep::agent {
namespace {

// An executable named `name` on PATH, or "".
std::string OnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path != nullptr ? path : "/usr/bin:/bin", ':')) {
    if (dir.empty()) continue;
    const std::string full = absl::StrCat(dir, "/", name);
    if (::access(full.c_str(), X_OK) == 0) return full;
  }
  return "";
}

std::string Quote(const std::string& s) {
  if (!s.empty() && s.find_first_of(" \t\n'\"\\$") == std::string::npos) return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace

std::vector<std::string> ComposeUpArgv(const std::vector<std::string>& compose,
                                       const upkeep::v1::ComposeRef& ref,
                                       const std::string& docker_socket) {
  std::vector<std::string> argv;
  const std::string host = absl::StrCat("unix://", docker_socket);
  if (compose.size() >= 2) {  // docker compose: -H belongs to docker
    argv = {compose[0], "-H", host};
    argv.insert(argv.end(), compose.begin() + 1, compose.end());
  } else {
    argv = {compose.empty() ? "docker-compose" : compose[0], "-H", host};
  }
  argv.insert(argv.end(), {"-p", ref.project(), "-f", ref.file()});
  if (!ref.profile().empty()) argv.insert(argv.end(), {"--profile", ref.profile()});
  argv.insert(argv.end(), {"up", "-d", "--no-deps", ref.service()});
  return argv;
}

absl::StatusOr<std::vector<std::string>> FindCompose(absl::Duration timeout) {
  if (const std::string docker = OnPath("docker"); !docker.empty()) {
    auto r = RunCommand({docker, "compose", "version"}, timeout);
    if (r.ok() && r->exit_code == 0) return std::vector<std::string>{docker, "compose"};
  }
  if (const std::string v1 = OnPath("docker-compose"); !v1.empty()) {
    return std::vector<std::string>{v1};
  }
  return absl::NotFoundError(
      "neither `docker compose` nor `docker-compose` is installed (Debian: apt-get install "
      "docker-compose)");
}

absl::StatusOr<std::string> ComposeUp(const upkeep::v1::ComposeRef& ref,
                                      const std::string& docker_socket, absl::Duration timeout) {
  if (ref.file().empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("compose service ", ref.service(), " names no compose file"));
  }
  const absl::Time deadline = absl::Now() + timeout;
  auto compose = FindCompose(std::min(timeout, absl::Seconds(5)));
  if (!compose.ok()) return compose.status();
  const std::vector<std::string> argv = ComposeUpArgv(*compose, ref, docker_socket);
  std::vector<std::string> quoted;
  for (const auto& a : argv) quoted.push_back(Quote(a));
  const std::string transcript_head = absl::StrCat("$ ", absl::StrJoin(quoted, " "), "\n");
  auto r = RunCommand(argv, std::max(deadline - absl::Now(), absl::Seconds(1)), 64 << 10);
  if (!r.ok()) return absl::UnavailableError(absl::StrCat(transcript_head, r.status().message()));
  const std::string transcript = absl::StrCat(transcript_head, r->output);
  if (r->exit_code != 0) {
    return absl::InternalError(absl::StrCat(transcript, "(exit ", r->exit_code, ")"));
  }
  return transcript;
}

}  // namespace upkeep::agent

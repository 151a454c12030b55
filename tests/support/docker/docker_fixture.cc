#include "tests/support/docker/docker_fixture.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"
#include "tests/support/docker/sample_image.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace upkeep::testing {
namespace {

// Owns the directory; stops dockerd when the binary exits.
struct Holder {
  TempDir dir;
  bool started = false;
  ~Holder() {
    if (started) {
      (void)RunToEnd({SourcePath("scripts/dockerd.sh"), "stop", dir.path()}, dir.Join("stop.log"));
    }
  }
};

Holder* GetHolder() {
  static std::unique_ptr<Holder> holder(new Holder());
  return holder.get();
}

}  // namespace

bool DockerDaemon::Required() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

DockerDaemon* DockerDaemon::Get() {
  static DockerDaemon* d = [] {
    auto* daemon = new DockerDaemon();
    daemon->Init();
    return daemon;
  }();
  return d;
}

absl::Status DockerDaemon::StartDaemon() {
  Holder* h = GetHolder();
  const std::string script = SourcePath("scripts/dockerd.sh");
  if (!std::filesystem::exists(script)) return absl::NotFoundError(script + " missing");
  if (auto out = RunToEnd({script, "start", dir_}, dir_ + "/start.log"); !out.ok()) {
    return absl::UnavailableError(
        absl::StrCat("cannot start a private dockerd: ", out.status().message(), " (see ", dir_,
                     "/dockerd.log)"));
  }
  h->started = true;
  return absl::OkStatus();
}

absl::Status DockerDaemon::StopDaemon() {
  Holder* h = GetHolder();
  if (auto out = RunToEnd({SourcePath("scripts/dockerd.sh"), "stop", dir_}, dir_ + "/stop.log");
      !out.ok()) {
    return out.status();
  }
  h->started = false;
  return absl::OkStatus();
}

absl::Status DockerDaemon::Restart() {
  if (auto st = StopDaemon(); !st.ok()) return st;
  return StartDaemon();
}

void DockerDaemon::Init() {
  dir_ = GetHolder()->dir.path();
  socket_ = dir_ + "/docker.sock";
  if (auto st = StartDaemon(); !st.ok()) {
    error_ = std::string(st.message());
    return;
  }
  auto tar = SampleImageTar(dir_);
  if (!tar.ok()) {
    error_ = std::string(tar.status().message());
    return;
  }
  auto out = Docker({"import", *tar, kImage});
  if (!out.ok()) error_ = absl::StrCat("cannot import the sample image: ", out.status().message());
}

absl::StatusOr<std::string> DockerDaemon::Docker(const std::vector<std::string>& args) {
  static int counter = 0;
  const std::string log = absl::StrCat(dir_, "/docker-cli-", ++counter, ".log");
  std::vector<std::string> argv = {"docker", "-H", "unix://" + socket_};
  argv.insert(argv.end(), args.begin(), args.end());
  auto out = RunToEnd(argv, log);
  std::error_code ec;
  std::filesystem::remove(log, ec);
  return out;
}

void DockerFixture::SetUp() {
  DockerDaemon* d = DockerDaemon::Get();
  if (!d->ok()) {
    if (DockerDaemon::Required()) {
      FAIL() << "private dockerd unavailable (CI=true): " << d->error();
    }
    GTEST_SKIP() << "private dockerd unavailable: " << d->error();
  }
}

void DockerFixture::TearDown() {
  if (containers_.empty()) return;
  std::vector<std::string> args = {"rm", "-f"};
  args.insert(args.end(), containers_.begin(), containers_.end());
  (void)daemon()->Docker(args);
  containers_.clear();
}

absl::StatusOr<std::string> DockerFixture::RunSample(const SampleContainer& c) {
  containers_.push_back(c.name);
  std::vector<std::string> cmd = {"/upkeep-sample-service", "--port", std::to_string(c.port),
                                  "--name", c.name};
  cmd.insert(cmd.end(), c.args.begin(), c.args.end());
  if (c.health_check) {
    // The CLI's --health-cmd needs a shell, which the image does not have: create through the
    // API with an exec-form ["CMD", ...] health check.
    nlohmann::json labels = nlohmann::json::object();
    if (!c.project.empty()) labels["com.docker.compose.project"] = c.project;
    if (!c.service.empty()) labels["com.docker.compose.service"] = c.service;
    nlohmann::json body = {{"Image", DockerDaemon::kImage},
                           {"Cmd", cmd},
                           {"Labels", labels},
                           {"HostConfig",
                            {{"NetworkMode", "host"},
                             {"RestartPolicy", {{"Name", c.restart.empty() ? "no" : c.restart}}}}},
                           {"Healthcheck",
                            {{"Test",
                              {"CMD", "/upkeep-sample-service", "--check",
                               absl::StrCat("http://127.0.0.1:", c.port, "/health")}},
                             {"Interval", 500000000},
                             {"Timeout", 2000000000},
                             {"Retries", 1}}}};
    const std::string dir = daemon()->dir();
    const std::string body_file = dir + "/create-" + c.name + ".json";
    std::ofstream(body_file) << body.dump();
    const std::string log = dir + "/create-" + c.name + ".log";
    auto out = RunToEnd(
        {"curl", "-sS", "--unix-socket", socket(), "-H", "Content-Type: application/json",
         "--data-binary", "@" + body_file, "http://d/v1.41/containers/create?name=" + c.name},
        log);
    if (!out.ok()) return out.status();
    std::string id;
    try {
      id = nlohmann::json::parse(*out).at("Id").get<std::string>();
    } catch (const std::exception&) {
    }
    if (id.empty()) return absl::InternalError(absl::StrCat("create ", c.name, " via API: ", *out));
    auto started = daemon()->Docker({"start", id});
    if (!started.ok()) return started.status();
    return id;
  }
  std::vector<std::string> args = {"run", "-d", "--network", "host", "--name", c.name};
  if (!c.project.empty()) args.push_back("--label=com.docker.compose.project=" + c.project);
  if (!c.service.empty()) args.push_back("--label=com.docker.compose.service=" + c.service);
  if (!c.restart.empty()) args.push_back("--restart=" + c.restart);
  args.push_back(DockerDaemon::kImage);
  args.insert(args.end(), cmd.begin(), cmd.end());
  auto out = daemon()->Docker(args);
  if (!out.ok()) return out.status();
  std::string id(absl::StripAsciiWhitespace(*out));
  // The CLI may print warnings first; the id is the last line.
  if (const size_t nl = id.rfind('\n'); nl != std::string::npos) id = id.substr(nl + 1);
  return id;
}

}  // namespace upkeep::testing

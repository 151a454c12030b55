#include "tests/e2e/e2e_env.h"

#include <cstdlib>
#include <filesystem>
#include <memory>

#include "absl/strings/str_cat.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace upkeep::demo {
namespace {

using upkeep::testing::Subprocess;

int Run(const std::vector<std::string>& argv, const std::string& log) {
  auto p = Subprocess::Start(argv, log);
  if (!p.ok()) return -1;
  auto st = (*p)->Wait(absl::Seconds(120));
  if (!st.has_value()) return -1;
  return WIFEXITED(*st) ? WEXITSTATUS(*st) : -1;
}

// Owns the dockerd directory; stops dockerd when the test binary exits.
struct DockerdDir {
  upkeep::testing::TempDir dir;
  bool started = false;
  ~DockerdDir() {
    if (started) {
      Run({upkeep::testing::SourcePath("scripts/dockerd.sh"), "stop", dir.path()},
          dir.Join("stop.log"));
    }
  }
};

}  // namespace

bool DockerEnv::required() const {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

DockerEnv* DockerEnv::Get() {
  static DockerEnv* env = [] {
    auto* e = new DockerEnv();
    e->Start();
    return e;
  }();
  return env;
}

void DockerEnv::Start() {
  static DockerdDir* holder = new DockerdDir();
  static std::unique_ptr<DockerdDir> cleanup(holder);  // stops dockerd at exit
  const std::string dir = holder->dir.path();
  const std::string script = upkeep::testing::SourcePath("scripts/dockerd.sh");
  if (!std::filesystem::exists(script)) {
    error_ = absl::StrCat(script, " missing");
    return;
  }
  if (Run({script, "start", dir}, dir + "/start.log") != 0) {
    error_ = absl::StrCat("cannot start a private dockerd; see ", dir, "/start.log and ", dir,
                          "/dockerd.log");
    return;
  }
  holder->started = true;
  socket_ = dir + "/docker.sock";
  image_ = "upkeep-sample:e2e";
  // The image: a tarball holding only the static sample service.
  const std::string root = dir + "/image-root";
  std::filesystem::create_directories(root);
  std::error_code ec;
  std::filesystem::copy_file(upkeep::testing::BinPath("upkeep-sample-service"),
                             root + "/upkeep-sample-service",
                             std::filesystem::copy_options::overwrite_existing, ec);
  if (ec) {
    error_ = absl::StrCat("copy sample service: ", ec.message());
    return;
  }
  if (Run({"tar", "-C", root, "-cf", dir + "/image.tar", "."}, dir + "/tar.log") != 0 ||
      Run({"docker", "-H", "unix://" + socket_, "import", dir + "/image.tar", image_},
          dir + "/import.log") != 0) {
    error_ = absl::StrCat("cannot import the sample image; see ", dir, "/import.log");
  }
}

std::string Summary(StackHarness& h) {
  namespace v1 = upkeep::v1;
  std::string s;
  if (auto actions = h.Actions(); actions.ok()) {
    for (const auto& a : *actions) {
      absl::StrAppend(&s, "\n  action ", v1::ActionKind_Name(a.action().kind()), " ",
                      a.action().target(), " -> ", v1::ActionOutcome_Name(a.result().outcome()),
                      a.dry_run() ? " (dry-run) " : " ", a.result().output().substr(0, 300));
    }
  }
  if (auto events = h.Events(0); events.ok()) {
    for (const auto& e : *events) {
      absl::StrAppend(&s, "\n  event ", e.type(), " ", e.reason(), ": ", e.message());
    }
  }
  if (auto d = h.Describe(); d.ok()) {
    for (const auto& diagnosis : d->stack().status().diagnoses()) {
      absl::StrAppend(&s, "\n  last diagnosis on ", diagnosis.host(), ": ",
                      v1::Verdict_Name(diagnosis.verdict()), " ", diagnosis.summary());
      for (const auto& n : diagnosis.path()) {
        absl::StrAppend(&s, "\n    ", n.step(), "[", n.target(), "] = ", n.decision());
        for (const auto& [k, v] : n.evidence()) absl::StrAppend(&s, " ", k, "=", v);
      }
    }
  }
  return s;
}

}  // namespace upkeep::demo

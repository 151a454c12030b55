// The operators' side against a live installation (controller, agent, nginx, the sample
// services): the status page in a real headless Chromium shows the stack degraded and then
// healed without a reload (status_page_browser.py), on the plaintext loopback page and on the
// HTTPS page of a mutual-TLS installation (a viewer token; requests without credentials are
// refused), and a webhook notifier delivers the wrong-port alert with its decision path and
// evidence, then its "resolved" follow-up, to a local receiver that fails its first delivery on
// purpose.
#include <httplib.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "demo/harness.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace upkeep {
namespace {

using demo::StackHarness;
using nlohmann::json;
using testing::WaitFor;

class Receiver {
 public:
  Receiver() {
    server_.Post("/hook", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard<std::mutex> l(mu_);
      if (fail_first_ && calls_++ == 0) {
        res.status = 503;  // on purpose: the notifier must retry
        return;
      }
      bodies_.push_back(req.body);
      res.set_content("received", "text/plain");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~Receiver() {
    server_.stop();
    thread_.join();
  }
  std::string url() const { return absl::StrCat("http://127.0.0.1:", port_, "/hook"); }
  std::vector<json> Messages() {
    std::lock_guard<std::mutex> l(mu_);
    std::vector<json> out;
    for (const auto& b : bodies_) out.push_back(json::parse(b));
    return out;
  }
  int calls() {
    std::lock_guard<std::mutex> l(mu_);
    return calls_;
  }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mu_;
  bool fail_first_ = true;
  int calls_ = 0;
  std::vector<std::string> bodies_;
};

std::string Shell(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
  ::pclose(p);
  return out;
}

std::optional<json> FindEvent(const std::vector<json>& messages, const std::string& event) {
  for (const auto& m : messages) {
    if (m.value("event", "") == event) return m;
  }
  return std::nullopt;
}

bool BrowserInstalled() {
  return std::filesystem::exists("/usr/bin/chromedriver") &&
         std::filesystem::exists("/usr/bin/chromium");
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Opens the page in Chromium (status_page_browser.py), breaks nginx (a reload with /api/ on a
// port nothing listens on) once the page shows the stack healthy, calls `while_degraded` once
// the page shows it degraded, repairs nginx, and expects the script to see it healed without a
// reload. Returns the script's output.
std::string BrowseThroughWrongPort(StackHarness& h, testing::TempDir& dir,
                                   const std::vector<std::string>& extra_args,
                                   const std::vector<std::string>& env,
                                   const std::function<void()>& while_degraded) {
  const std::string signals = dir.Join("signals");
  std::filesystem::create_directories(signals);
  std::vector<std::string> argv = {
      "/usr/bin/python3",
      "-u",
      testing::SourcePath("tests/controller/http/status_page_browser.py"),
      "--url",
      h.status_url(),
      "--signal-dir",
      signals,
      "--timeout",
      "90"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  const std::string log_path = dir.Join("browser.log");
  auto browser = testing::Subprocess::Start(argv, log_path, env);
  EXPECT_TRUE(browser.ok()) << browser.status();
  if (!browser.ok()) return "";
  auto log = [&] { return ReadFile(log_path); };
  // Waits for a signal file; false at once when the script has exited (it failed).
  auto signalled = [&](const char* name) {
    return WaitFor(
               [&] {
                 return std::filesystem::exists(signals + "/" + name) || !(*browser)->Running();
               },
               absl::Seconds(150)) &&
           std::filesystem::exists(signals + "/" + name);
  };
  if (!signalled("ready")) {
    ADD_FAILURE() << "the page was never ready (the stack healthy, every load served):\n" << log();
    return log();
  }
  EXPECT_TRUE(h.MisconfigureNginxPort().ok());
  if (!signalled("degraded")) {
    ADD_FAILURE() << "the page never showed the stack degraded:\n" << log();
    EXPECT_TRUE(h.RestoreNginxConfig().ok());
    return log();
  }
  while_degraded();
  EXPECT_TRUE(h.RestoreNginxConfig().ok());
  const auto status = (*browser)->Wait(absl::Seconds(200));
  EXPECT_TRUE(status.has_value()) << log();
  if (status.has_value()) {
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << log();
  }
  return log();
}

TEST(StatusPageBrowser, ShowsDegradedThenHealedLiveAndWebhookCarriesTheWrongPortAlert) {
  if (!BrowserInstalled()) {
    GTEST_SKIP() << "chromium / chromium-driver not installed (scripts/deps.sh)";
  }
  testing::TempDir dir;
  Receiver receiver;
  demo::HarnessOptions options;
  options.work_dir = dir.path();
  options.source_dir = testing::SourcePath("");
  options.bin_dir = testing::BinPath("");
  options.controller_env = {"UPKEEP_TEST_WEBHOOK=" + receiver.url()};
  options.tls = false;  // the plaintext loopback page, the default install (HTTPS: below)
  auto h = StackHarness::Start(options);
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_TRUE((*h)->WaitServing(absl::Seconds(60)).ok());

  // A notifier, applied like a stack; its URL comes from the controller's environment.
  const std::string notifier = dir.Join("notifier.yaml");
  std::ofstream(notifier) << "apiVersion: upkeep/v1\nkind: Notifier\nmetadata: {name: ops}\n"
                             "spec:\n  type: webhook\n  url: {env: UPKEEP_TEST_WEBHOOK}\n"
                             "  events: [alerts, resolved]\n"
                             "  retry: {initialBackoff: 50ms}\n";
  const std::string ctl =
      absl::StrCat("UPKEEP_CONTROLLER=", (*h)->controller_address(),
                   " UPKEEP_TLS_DIR=", (*h)->tls_dir(), " ", testing::BinPath("upkeepctl"));
  EXPECT_NE(Shell(ctl + " apply -f " + notifier).find("notifier/ops created"), std::string::npos);

  const std::string log = BrowseThroughWrongPort(**h, dir, {}, {}, [&] {
    EXPECT_TRUE(WaitFor([&] { return FindEvent(receiver.Messages(), "alerts").has_value(); },
                        absl::Seconds(60)));
  });
  ASSERT_FALSE(HasFailure()) << log;
  ASSERT_TRUE(FindEvent(receiver.Messages(), "alerts").has_value());

  // The webhook: the alert explains itself, and its follow-up came.
  const json alert = *FindEvent(receiver.Messages(), "alerts");
  EXPECT_EQ(alert["stack"], "demo");
  EXPECT_EQ(alert["host"], "demo");
  EXPECT_FALSE(alert["code"].get<std::string>().empty()) << alert.dump(2);
  EXPECT_FALSE(alert["path"].empty()) << alert.dump(2);
  ASSERT_FALSE(alert["findings"].empty()) << alert.dump(2);
  EXPECT_FALSE(alert["findings"][0]["evidence"].empty()) << alert.dump(2);
  EXPECT_GE(receiver.calls(), 2) << "the first delivery failed on purpose and was retried";
  EXPECT_TRUE(WaitFor([&] { return FindEvent(receiver.Messages(), "resolved").has_value(); },
                      absl::Seconds(60)))
      << alert.dump(2);
  const std::string notifiers = Shell(ctl + " get notifiers");
  EXPECT_NE(notifiers.find("env:UPKEEP_TEST_WEBHOOK"), std::string::npos) << notifiers;
  EXPECT_EQ(notifiers.find(receiver.url()), std::string::npos) << "the URL is a secret";
  std::printf("%s\nalert delivered:\n%s\n", log.c_str(), alert.dump(2).c_str());
}

// The same page on a mutual-TLS installation, as a viewer opens it: HTTPS with the
// controller's certificate (Chromium trusts the fleet CA), a viewer token made with
// `upkeep-controller token create` and opened once as ?token= (then an HttpOnly cookie carries
// it to /api/state and /api/events). Before the browser, the script asserts that the page, the
// API, the event stream and /metrics answer 401 without credentials or with a wrong token.
// Chromium resumes TLS sessions on every connection after the first: this failed with
// ERR_SSL_PROTOCOL_ERROR until the server set a session id context (status_server.cc).
TEST(StatusPageBrowser, OverHttpsAViewerSeesDegradedThenHealedAndNobodyElse) {
  if (!BrowserInstalled() || !std::filesystem::exists("/usr/bin/certutil")) {
    GTEST_SKIP() << "chromium / chromium-driver / libnss3-tools not installed (scripts/deps.sh)";
  }
  testing::TempDir dir;
  demo::HarnessOptions options;
  options.work_dir = dir.path();
  options.source_dir = testing::SourcePath("");
  options.bin_dir = testing::BinPath("");
  options.tls = true;
  auto h = StackHarness::Start(options);
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_TRUE((*h)->WaitServing(absl::Seconds(60)).ok());
  ASSERT_EQ((*h)->status_url().rfind("https://", 0), 0u) << (*h)->status_url();

  // The token a viewer is given (the running controller reads tokens.db on every request).
  const std::string token(absl::StripTrailingAsciiWhitespace(
      Shell(absl::StrCat(testing::BinPath("upkeep-controller"), " token create --data ",
                         dir.Join("controller"), " --name page --role viewer"))));
  ASSERT_EQ(token.rfind("upk_", 0), 0u) << token;

  const std::string pki = (*h)->tls_dir();
  const std::string log = BrowseThroughWrongPort(**h, dir, {"--ca", pki + "/ca.crt"},
                                                 {"UPKEEP_VIEWER_TOKEN=" + token}, [] {});
  EXPECT_NE(log.find("without a token: unauthenticated"), std::string::npos) << log;
  if (!HasFailure()) std::printf("%s\n", log.c_str());
}

}  // namespace
}  // namespace upkeep

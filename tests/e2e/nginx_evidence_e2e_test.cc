// What nginx itself shows, end to end (issue 11, "More of nginx's error log" and "Beyond 502"):
// a real controller, agent, nginx and sample services on the process runtime. Each case makes
// real nginx meet the fault and asserts the finding and the action upkeep produced from it.
#include <openssl/asn1.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdio>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "demo/harness.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_env.h"
#include "tests/support/net.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace upkeep::demo {
namespace {

namespace v1 = upkeep::v1;
using upkeep::testing::WaitFor;

class NginxEvidenceTest : public ::testing::Test {
 protected:
  std::unique_ptr<StackHarness> StartStack(HarnessOptions options = {}) {
    options.work_dir = dir_.path();
    options.source_dir = upkeep::testing::SourcePath("");
    options.bin_dir = upkeep::testing::BinPath("");
    options.backoff_initial = "200ms";
    auto h = StackHarness::Start(options);
    EXPECT_TRUE(h.ok()) << h.status();
    if (!h.ok()) return nullptr;
    absl::Status serving = (*h)->WaitServing(absl::Seconds(60));
    EXPECT_TRUE(serving.ok()) << serving << Summary(**h);
    if (!serving.ok()) return nullptr;
    auto actions = (*h)->Actions();
    baseline_ = actions.ok() ? actions->size() : 0;
    return std::move(*h);
  }

  std::vector<v1::ActionRecord> ActionsOf(StackHarness& h, v1::ActionKind kind,
                                          const std::string& target) {
    std::vector<v1::ActionRecord> out;
    auto actions = h.Actions();
    if (!actions.ok()) return out;
    for (size_t i = baseline_; i < actions->size(); ++i) {
      const auto& a = (*actions)[i];
      if (a.action().kind() == kind && a.action().target() == target) out.push_back(a);
    }
    return out;
  }

  // The finding `code` on `target` in the stack's last diagnosis, if any.
  static bool FindingOf(StackHarness& h, const std::string& code, const std::string& target,
                        v1::Finding* out) {
    auto d = h.Describe();
    if (!d.ok()) return false;
    for (const auto& diagnosis : d->stack().status().diagnoses()) {
      for (const auto& f : diagnosis.findings()) {
        if (f.code() == code && f.target() == target) {
          *out = f;
          return true;
        }
      }
    }
    return false;
  }

  // The backend closes (or resets) every connection nginx proxies to it, unanswered, while
  // answering its own health probe: nginx logs it, the route answers 502. upkeep says why
  // (UpstreamConnectionClosed, with nginx's own line) and reloads nginx; it never restarts the
  // healthy backend.
  void ExpectExplainedReload(const std::string& mode, const std::string& nginx_says) {
    auto h = StartStack();
    ASSERT_NE(h, nullptr);
    ASSERT_EQ(upkeep::testing::HttpGetStatus("127.0.0.1", h->backend_port(),
                                             "/fault/drop-proxied?mode=" + mode),
              200);
    EXPECT_EQ(h->ProxyStatus("/api/health"), 502);
    v1::Finding f;
    ASSERT_TRUE(WaitFor(
        [&] {
          return FindingOf(*h, "UpstreamConnectionClosed", "nginx", &f) &&
                 !ActionsOf(*h, v1::ACTION_KIND_RELOAD_PROXY, "nginx").empty();
        },
        absl::Seconds(40)))
        << Summary(*h);
    EXPECT_TRUE(absl::StrContains(f.evidence().at("sample"), nginx_says)) << f.DebugString();
    EXPECT_TRUE(absl::StrContains(f.message(), absl::StrCat("127.0.0.1:", h->backend_port())))
        << f.DebugString();
    EXPECT_TRUE(ActionsOf(*h, v1::ACTION_KIND_RESTART_SERVICE, "backend").empty()) << Summary(*h);
    // The upstream behaves again: serving, still without touching the backend.
    ASSERT_EQ(upkeep::testing::HttpGetStatus("127.0.0.1", h->backend_port(), "/fault/healthy"),
              200);
    ASSERT_TRUE(h->WaitServing(absl::Seconds(60)).ok()) << Summary(*h);
    EXPECT_TRUE(ActionsOf(*h, v1::ACTION_KIND_RESTART_SERVICE, "backend").empty()) << Summary(*h);
  }

  upkeep::testing::TempDir dir_;
  size_t baseline_ = 0;
};

TEST_F(NginxEvidenceTest, UpstreamPrematurelyClosedIsExplainedAndReloaded) {
  ExpectExplainedReload("close", "upstream prematurely closed connection");
}

TEST_F(NginxEvidenceTest, UpstreamConnectionResetIsExplainedAndReloaded) {
  ExpectExplainedReload("reset", "Connection reset by peer");
}

// The certificate's notAfter, read with OpenSSL (not with the agent's code under test).
absl::Time NotAfter(const std::string& pem) {
  FILE* f = std::fopen(pem.c_str(), "r");
  if (f == nullptr) return absl::InfinitePast();
  X509* x = PEM_read_X509(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  if (x == nullptr) return absl::InfinitePast();
  std::tm tm{};
  const bool ok = ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1;
  X509_free(x);
  return ok ? absl::FromTM(tm, absl::UTCTimeZone()) : absl::InfinitePast();
}

// "Beyond 502": an https route whose certificate expires within certificateWarning (14 days by
// default) is a warning finding with the expiry date, and nothing is done to nginx for it.
TEST_F(NginxEvidenceTest, AnHttpsCertificateExpiringSoonIsAWarningWithItsDate) {
  const std::string key = dir_.Join("tls.key"), crt = dir_.Join("tls.crt");
  auto gen = upkeep::testing::Subprocess::Start(
      {"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
       "-days", "5", "-subj", "/CN=shop.test"},
      dir_.Join("openssl.log"));
  ASSERT_TRUE(gen.ok()) << gen.status();
  const auto gen_status = (*gen)->Wait(absl::Seconds(60));
  ASSERT_TRUE(gen_status.has_value() && *gen_status == 0) << "openssl req failed";
  const absl::Time not_after = NotAfter(crt);
  ASSERT_NE(not_after, absl::InfinitePast());

  HarnessOptions options;
  options.https_cert = crt;
  options.https_key = key;
  auto h = StartStack(options);
  ASSERT_NE(h, nullptr);
  v1::Finding f;
  ASSERT_TRUE(
      WaitFor([&] { return FindingOf(*h, "CertificateExpiring", "/tls/", &f); }, absl::Seconds(30)))
      << Summary(*h);
  EXPECT_EQ(f.severity(), v1::SEVERITY_WARNING) << f.DebugString();
  EXPECT_EQ(f.evidence().at("not_after"),
            absl::FormatTime(absl::RFC3339_sec, not_after, absl::UTCTimeZone()))
      << f.DebugString();
  EXPECT_TRUE(absl::StrContains(
      f.message(), absl::FormatTime("%Y-%m-%d %H:%M UTC", not_after, absl::UTCTimeZone())))
      << f.DebugString();
  EXPECT_TRUE(absl::StrContains(f.message(), "CN=shop.test")) << f.DebugString();
  // A warning, not a fault: the stack serves and nginx is left alone.
  ASSERT_TRUE(h->WaitServing(absl::Seconds(10)).ok()) << Summary(*h);
  EXPECT_TRUE(ActionsOf(*h, v1::ACTION_KIND_RELOAD_PROXY, "nginx").empty()) << Summary(*h);
  EXPECT_TRUE(ActionsOf(*h, v1::ACTION_KIND_RESTART_PROXY, "nginx").empty()) << Summary(*h);
}

}  // namespace
}  // namespace upkeep::demo

// core/tls over real gRPC on loopback, with certificates made by InitCa/Issue: who can finish a
// handshake, what identity each side sees, expiry, host names, and rotation of the server's
// files while a stream stays open.
#include "core/tls/tls.h"

#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"
#include "upkeep/v1/fleet_service.grpc.pb.h"

namespace upkeep::tls {
namespace {

using ::upkeep::testing::TempDir;
using ::upkeep::testing::WaitFor;

// A FleetService whose ListStacks records the peer identity gRPC reports, and whose WatchEvents
// streams whatever the test pushes (to hold a stream open across a rotation).
class RecordingFleet : public upkeep::v1::FleetService::Service {
 public:
  grpc::Status ListStacks(grpc::ServerContext* ctx, const upkeep::v1::ListStacksRequest*,
                          upkeep::v1::ListStacksResponse*) override {
    absl::MutexLock lock(&mu_);
    last_peer_uris_.clear();
    auto pems = ctx->auth_context()->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME);
    last_peer_pem_ = pems.empty() ? "" : std::string(pems[0].data(), pems[0].size());
    for (const auto& v : ctx->auth_context()->FindPropertyValues(GRPC_PEER_URI_PROPERTY_NAME)) {
      last_peer_uris_.emplace_back(v.data(), v.size());
    }
    return grpc::Status::OK;
  }

  grpc::Status WatchEvents(grpc::ServerContext* ctx, const upkeep::v1::WatchEventsRequest*,
                           grpc::ServerWriter<upkeep::v1::Event>* writer) override {
    while (!ctx->IsCancelled()) {
      upkeep::v1::Event e;
      {
        absl::MutexLock lock(&mu_);
        if (!mu_.AwaitWithTimeout(
                absl::Condition(
                    +[](std::deque<upkeep::v1::Event>* q) { return !q->empty(); }, &events_),
                absl::Milliseconds(100))) {
          continue;
        }
        e = events_.front();
        events_.pop_front();
      }
      if (!writer->Write(e)) break;
    }
    return grpc::Status::OK;
  }

  void Push(const std::string& reason) {
    upkeep::v1::Event e;
    e.set_reason(reason);
    absl::MutexLock lock(&mu_);
    events_.push_back(e);
  }
  std::string last_peer_pem() {
    absl::MutexLock lock(&mu_);
    return last_peer_pem_;
  }
  std::vector<std::string> last_peer_uris() {
    absl::MutexLock lock(&mu_);
    return last_peer_uris_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> last_peer_uris_ ABSL_GUARDED_BY(mu_);
  std::string last_peer_pem_ ABSL_GUARDED_BY(mu_);
  std::deque<upkeep::v1::Event> events_ ABSL_GUARDED_BY(mu_);
};

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(InitCa(dir_.path()).ok());
    IssueRequest controller = IssueRequest::Controller("c1", {"127.0.0.1", "controller.example"});
    auto c = Issue(dir_.path(), controller);
    ASSERT_TRUE(c.ok()) << c.status();
    controller_ = *c;
    auto a = Issue(dir_.path(), IssueRequest::Agent("web-1"));
    ASSERT_TRUE(a.ok()) << a.status();
    agent_ = *a;
  }
  void TearDown() override {
    if (server_) server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  }

  std::string Ca() const { return dir_.Join("ca.crt"); }

  void StartServer(const std::string& cert, const std::string& key, ServerTlsOptions options = {}) {
    auto creds = ServerCredentials(cert, key, Ca(), options);
    ASSERT_TRUE(creds.ok()) << creds.status();
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", *creds, &port_);
    b.RegisterService(&fleet_);
    server_ = b.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(port_, 0);
  }

  // A fresh connection each time (no subchannel shared with earlier channels).
  std::shared_ptr<grpc::Channel> Dial(std::shared_ptr<grpc::ChannelCredentials> creds,
                                      const std::string& host = "127.0.0.1") {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel(absl::StrCat(host, ":", port_), creds, args);
  }

  // One ListStacks call; `peer_cn`, when given, receives the server certificate's CN.
  grpc::Status Call(std::shared_ptr<grpc::Channel> channel, std::string* peer_uri = nullptr,
                    std::string* peer_cn = nullptr) {
    auto stub = upkeep::v1::FleetService::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    upkeep::v1::ListStacksRequest req;
    upkeep::v1::ListStacksResponse resp;
    grpc::Status s = stub->ListStacks(&ctx, req, &resp);
    auto auth = ctx.auth_context();
    if (auth != nullptr) {
      auto uris = auth->FindPropertyValues(GRPC_PEER_URI_PROPERTY_NAME);
      if (peer_uri && !uris.empty()) *peer_uri = std::string(uris[0].data(), uris[0].size());
      auto cns = auth->FindPropertyValues(GRPC_X509_CN_PROPERTY_NAME);
      if (peer_cn && !cns.empty()) *peer_cn = std::string(cns[0].data(), cns[0].size());
    }
    return s;
  }

  std::shared_ptr<grpc::ChannelCredentials> Creds(const std::string& ca, const std::string& cert,
                                                  const std::string& key) {
    auto c = ChannelCredentials(ca, cert, key);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *c : nullptr;
  }

  TempDir dir_;
  IssuedFiles controller_;
  IssuedFiles agent_;
  RecordingFleet fleet_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

mode_t Mode(const std::string& path) {
  struct stat st {};
  ::stat(path.c_str(), &st);
  return st.st_mode & 0777;
}

TEST_F(TlsTest, InitCaRefusesToReplaceAnExistingCa) {
  const auto s = InitCa(dir_.path());
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
}

TEST_F(TlsTest, InitCaCreatesAPrivateDirectory) {
  const std::string fresh = dir_.Join("new/pki");
  ASSERT_TRUE(InitCa(fresh).ok());
  EXPECT_EQ(Mode(fresh), 0700u);
  EXPECT_EQ(Mode(fresh + "/ca.key"), 0600u);
  EXPECT_EQ(Mode(fresh + "/ca.crt"), 0644u);
}

TEST_F(TlsTest, KeysArePrivateAndFilesAreNamedByKindAndName) {
  EXPECT_EQ(Mode(dir_.Join("ca.key")), 0600u);
  EXPECT_EQ(controller_.cert, dir_.Join("controller-c1.crt"));
  EXPECT_EQ(Mode(controller_.key), 0600u);
  EXPECT_EQ(agent_.key, dir_.Join("agent-web-1.key"));
  EXPECT_EQ(Mode(agent_.key), 0600u);
  EXPECT_EQ(agent_.uri, "upkeep://agent/web-1");
  auto u = Issue(dir_.path(), IssueRequest::User("ann", "operator"));
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->cert, dir_.Join("user-ann.crt"));
  EXPECT_EQ(u->uri, "upkeep://user/ann?role=operator");
}

IssueRequest AgentWith(const std::string& role, std::vector<std::string> sans) {
  IssueRequest r = IssueRequest::Agent("h");
  r.role = role;
  r.sans = std::move(sans);
  return r;
}

TEST_F(TlsTest, IssueRejectsBadNamesRolesAndSans) {
  struct Case {
    IssueRequest request;
    const char* why;
  };
  const std::vector<Case> cases = {
      {IssueRequest::Agent(""), "empty name"},
      {IssueRequest::Agent("a/b"), "slash in name"},
      {IssueRequest::Agent("..x"), "leading dot"},
      {IssueRequest::Agent("a?role=admin"), "query in name"},
      {IssueRequest::User("ann", "root"), "unknown role"},
      {IssueRequest::User("ann", ""), "no role"},
      {AgentWith("admin", {}), "role on an agent"},
      {AgentWith("", {"1.2.3.4"}), "SAN on an agent"},
      {IssueRequest::Controller("c", {"bad name,x"}), "SAN with a space"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(Issue(dir_.path(), c.request).status().code(), absl::StatusCode::kInvalidArgument)
        << c.why;
  }
}

TEST_F(TlsTest, IssueWithoutCaSaysSo) {
  TempDir empty;
  EXPECT_EQ(Issue(empty.path(), IssueRequest::Agent("h")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(TlsTest, CredentialsRefuseAKeyThatDoesNotMatchTheCertificate) {
  const auto s = ServerCredentials(controller_.cert, agent_.key, Ca()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_FALSE(ChannelCredentials(Ca(), agent_.cert, controller_.key).ok());
  EXPECT_FALSE(ChannelCredentials(dir_.Join("missing.crt")).ok());
}

TEST_F(TlsTest, MutualTlsEachSideSeesTheOthersIdentityUri) {
  StartServer(controller_.cert, controller_.key);
  std::string server_uri;
  ASSERT_TRUE(Call(Dial(Creds(Ca(), agent_.cert, agent_.key)), &server_uri).ok());
  EXPECT_EQ(server_uri, "upkeep://controller/c1");
  EXPECT_THAT(fleet_.last_peer_uris(), ::testing::ElementsAre("upkeep://agent/web-1"));
}

TEST_F(TlsTest, ClientWithoutCertificateFinishesTheHandshakeWithNoIdentity) {
  // Token users: TLS lets them in; controller/auth refuses the call unless a token comes along.
  StartServer(controller_.cert, controller_.key);
  ASSERT_TRUE(Call(Dial(Creds(Ca(), "", ""))).ok());
  EXPECT_THAT(fleet_.last_peer_uris(), ::testing::IsEmpty());
}

TEST_F(TlsTest, RequiringClientCertificatesRefusesACertlessClient) {
  ServerTlsOptions options;
  options.require_client_certificate = true;
  StartServer(controller_.cert, controller_.key, options);
  EXPECT_EQ(Call(Dial(Creds(Ca(), "", ""))).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(Call(Dial(Creds(Ca(), agent_.cert, agent_.key))).ok());
}

TEST_F(TlsTest, ClientCertificateFromAnotherCaFailsTheHandshake) {
  StartServer(controller_.cert, controller_.key);
  TempDir other;
  ASSERT_TRUE(InitCa(other.path()).ok());
  auto stranger = Issue(other.path(), IssueRequest::Agent("web-1"));
  ASSERT_TRUE(stranger.ok());
  // The stranger trusts our CA for the server but presents a certificate our CA never signed.
  const auto s = Call(Dial(Creds(Ca(), stranger->cert, stranger->key)));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_THAT(fleet_.last_peer_uris(), ::testing::IsEmpty());
}

TEST_F(TlsTest, ClientTrustingAnotherCaRefusesTheServer) {
  StartServer(controller_.cert, controller_.key);
  TempDir other;
  ASSERT_TRUE(InitCa(other.path()).ok());
  EXPECT_EQ(Call(Dial(Creds(other.Join("ca.crt"), agent_.cert, agent_.key))).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, PlaintextClientAgainstTheTlsPortFails) {
  StartServer(controller_.cert, controller_.key);
  EXPECT_EQ(Call(Dial(grpc::InsecureChannelCredentials())).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, ExpiredClientCertificateIsRefused) {
  StartServer(controller_.cert, controller_.key);
  IssueRequest r = IssueRequest::Agent("old");
  r.not_before = absl::Now() - absl::Hours(48);
  r.validity = absl::Hours(24);
  auto old = Issue(dir_.path(), r);
  ASSERT_TRUE(old.ok());
  EXPECT_EQ(Call(Dial(Creds(Ca(), old->cert, old->key))).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, ExpiredServerCertificateIsRefused) {
  IssueRequest r = IssueRequest::Controller("old", {"127.0.0.1"});
  r.not_before = absl::Now() - absl::Hours(48);
  r.validity = absl::Hours(24);
  auto old = Issue(dir_.path(), r);
  ASSERT_TRUE(old.ok());
  StartServer(old->cert, old->key);
  EXPECT_EQ(Call(Dial(Creds(Ca(), agent_.cert, agent_.key))).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, ServerCertificateMustNameTheHostDialled) {
  // c1 names 127.0.0.1 and controller.example, not "localhost".
  StartServer(controller_.cert, controller_.key);
  EXPECT_EQ(Call(Dial(Creds(Ca(), agent_.cert, agent_.key), "localhost")).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // The same dial succeeds against a certificate that names it.
  server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  auto local = Issue(dir_.path(), IssueRequest::Controller("loc", {"localhost", "::1"}));
  ASSERT_TRUE(local.ok()) << local.status();
  StartServer(local->cert, local->key);
  EXPECT_TRUE(Call(Dial(Creds(Ca(), agent_.cert, agent_.key), "localhost")).ok());
}

TEST_F(TlsTest, AnAgentCertificateCannotServeAsTheController) {
  // Its only EKU is clientAuth, and it names no host: a stolen agent key is no controller.
  StartServer(agent_.cert, agent_.key);
  auto other_agent = Issue(dir_.path(), IssueRequest::Agent("web-2"));
  ASSERT_TRUE(other_agent.ok());
  EXPECT_EQ(Call(Dial(Creds(Ca(), other_agent->cert, other_agent->key))).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

void CopyAtomically(const std::string& from, const std::string& to) {
  std::filesystem::copy_file(from, to + ".new", std::filesystem::copy_options::overwrite_existing);
  std::filesystem::rename(to + ".new", to);
}

TEST_F(TlsTest, RotatedServerFilesServeNewConnectionsWhileAnOpenStreamStaysUp) {
  const std::string cert = dir_.Join("server.crt");
  const std::string key = dir_.Join("server.key");
  CopyAtomically(controller_.key, key);
  CopyAtomically(controller_.cert, cert);
  ServerTlsOptions options;
  options.refresh = absl::Seconds(1);
  StartServer(cert, key, options);

  auto creds = Creds(Ca(), agent_.cert, agent_.key);
  auto channel = Dial(creds);
  auto stub = upkeep::v1::FleetService::NewStub(channel);
  grpc::ClientContext stream_ctx;
  stream_ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  auto reader = stub->WatchEvents(&stream_ctx, upkeep::v1::WatchEventsRequest());
  fleet_.Push("before");
  upkeep::v1::Event e;
  ASSERT_TRUE(reader->Read(&e));
  EXPECT_EQ(e.reason(), "before");
  std::string cn;
  ASSERT_TRUE(Call(Dial(creds), nullptr, &cn).ok());
  EXPECT_EQ(cn, "c1");

  auto c2 = Issue(dir_.path(), IssueRequest::Controller("c2", {"127.0.0.1"}));
  ASSERT_TRUE(c2.ok());
  CopyAtomically(c2->key, key);
  CopyAtomically(c2->cert, cert);
  EXPECT_TRUE(WaitFor(
      [&] {
        std::string now_cn;
        return Call(Dial(creds), nullptr, &now_cn).ok() && now_cn == "c2";
      },
      absl::Seconds(20), absl::Milliseconds(200)))
      << "new connections never saw the rotated certificate";

  fleet_.Push("after");
  ASSERT_TRUE(reader->Read(&e)) << "the stream opened before the rotation was dropped";
  EXPECT_EQ(e.reason(), "after");
  stream_ctx.TryCancel();
  reader->Finish();
}

using ::upkeep::testing::ReadFile;

TEST_F(TlsTest, RotatedClientFilesAreUsedByTheNextConnectionOfTheSameCredentials) {
  StartServer(controller_.cert, controller_.key);
  const std::string cert = dir_.Join("client.crt");
  const std::string key = dir_.Join("client.key");
  CopyAtomically(agent_.key, key);
  CopyAtomically(agent_.cert, cert);
  ChannelTlsOptions options;
  options.refresh = absl::Seconds(1);
  auto creds = ChannelCredentials(Ca(), cert, key, options);
  ASSERT_TRUE(creds.ok()) << creds.status();
  ASSERT_TRUE(Call(Dial(*creds)).ok());
  EXPECT_EQ(fleet_.last_peer_pem(), ReadFile(agent_.cert));

  auto renewed = Issue(dir_.path(), IssueRequest::Agent("web-1"));  // same name, new key
  ASSERT_TRUE(renewed.ok());
  CopyAtomically(renewed->key, key);
  CopyAtomically(renewed->cert, cert);
  const std::string want = ReadFile(renewed->cert);
  EXPECT_TRUE(WaitFor([&] { return Call(Dial(*creds)).ok() && fleet_.last_peer_pem() == want; },
                      absl::Seconds(20), absl::Milliseconds(200)));
}

// Not a check: prints what a fresh connection (handshake + first unary call) costs with mutual
// TLS and in plaintext on loopback. Run with --gtest_also_run_disabled_tests.
TEST_F(TlsTest, DISABLED_MeasureConnectCost) {
  StartServer(controller_.cert, controller_.key);
  grpc::ServerBuilder b;
  int plain_port = 0;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &plain_port);
  RecordingFleet plain_fleet;
  b.RegisterService(&plain_fleet);
  auto plain = b.BuildAndStart();
  auto measure = [&](std::shared_ptr<grpc::ChannelCredentials> creds, int port) {
    constexpr int kRuns = 200;
    std::vector<absl::Duration> d;
    struct rusage before {
    }, after{};
    ::getrusage(RUSAGE_SELF, &before);
    for (int i = 0; i < kRuns; ++i) {
      const absl::Time start = absl::Now();
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      auto ch = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port), creds, args);
      auto stub = upkeep::v1::FleetService::NewStub(ch);
      grpc::ClientContext ctx;
      upkeep::v1::ListStacksResponse resp;
      EXPECT_TRUE(stub->ListStacks(&ctx, {}, &resp).ok());
      d.push_back(absl::Now() - start);
    }
    ::getrusage(RUSAGE_SELF, &after);
    const auto cpu = [](const struct rusage& r) {
      return absl::DurationFromTimeval(r.ru_utime) + absl::DurationFromTimeval(r.ru_stime);
    };
    std::sort(d.begin(), d.end());
    return std::make_tuple(d[kRuns / 2], d[kRuns * 99 / 100], (cpu(after) - cpu(before)) / kRuns);
  };
  auto creds = Creds(Ca(), agent_.cert, agent_.key);
  measure(creds, port_);  // warm up
  const auto tls = measure(creds, port_);
  const auto clear = measure(grpc::InsecureChannelCredentials(), plain_port);
  std::printf(
      "connect+first call, loopback (client and server CPU together):\n"
      "  mTLS      p50=%s p99=%s cpu/connection=%s\n  plaintext p50=%s p99=%s cpu/connection=%s\n",
      absl::FormatDuration(std::get<0>(tls)).c_str(),
      absl::FormatDuration(std::get<1>(tls)).c_str(),
      absl::FormatDuration(std::get<2>(tls)).c_str(),
      absl::FormatDuration(std::get<0>(clear)).c_str(),
      absl::FormatDuration(std::get<1>(clear)).c_str(),
      absl::FormatDuration(std::get<2>(clear)).c_str());
  plain->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
}

// Security: plaintext to the controller only on loopback, or when the operator says --insecure.
TEST(ClientCredentials, PlaintextOnlyToLoopbackUnlessInsecure) {
  EXPECT_TRUE(ClientCredentials("127.0.0.1:7400", "", "", "").ok());
  EXPECT_TRUE(ClientCredentials("localhost:7400", "", "", "").ok());
  EXPECT_TRUE(ClientCredentials("[::1]:7400", "", "", "").ok());
  const auto remote = ClientCredentials("controller.example:7400", "", "", "");
  EXPECT_TRUE(absl::IsFailedPrecondition(remote.status())) << remote.status();
  EXPECT_TRUE(absl::StrContains(remote.status().message(), "--tls-ca"));
  EXPECT_TRUE(ClientCredentials("10.0.0.5:7400", "", "", "", {}, /*insecure=*/true).ok());
  ChannelTlsOptions token;
  token.bearer_token = "secret";
  EXPECT_TRUE(
      absl::IsFailedPrecondition(ClientCredentials("127.0.0.1:7400", "", "", "", token).status()))
      << "a token must never travel in the clear";
}

}  // namespace
}  // namespace upkeep::tls

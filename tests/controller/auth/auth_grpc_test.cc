// AuthProcessor on a real TLS port (certificates from core/tls), in front of a sync
// FleetService and a callback AgentService: who gets through, who is refused with which code,
// that refused calls never reach a handler, and what handlers see as the principal.
#include <atomic>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "controller/auth/authenticator.h"
#include "controller/auth/token_store.h"
#include "core/tls/tls.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"
#include "upkeep/v1/agent_service.grpc.pb.h"
#include "upkeep/v1/fleet_service.grpc.pb.h"

namespace upkeep::controller_auth {
namespace {

using tls::IssueRequest;
using ::upkeep::testing::TempDir;

// Records who each handler saw, and whether the token reached it.
struct Seen {
  absl::Mutex mu;
  std::vector<std::string> calls ABSL_GUARDED_BY(mu);  // "Method principal"
  bool saw_authorization ABSL_GUARDED_BY(mu) = false;

  void Record(const std::string& method, const grpc::ServerContextBase& ctx) {
    absl::MutexLock lock(&mu);
    calls.push_back(method + " " + PrincipalOf(ctx).ToString());
    if (auto* sc = dynamic_cast<const grpc::ServerContext*>(&ctx)) {
      if (sc->client_metadata().count("authorization")) saw_authorization = true;
    }
  }
  std::vector<std::string> Calls() {
    absl::MutexLock lock(&mu);
    return calls;
  }
};

class StubFleet : public upkeep::v1::FleetService::Service {
 public:
  explicit StubFleet(Seen* seen) : seen_(seen) {}
  grpc::Status ListStacks(grpc::ServerContext* ctx, const upkeep::v1::ListStacksRequest*,
                          upkeep::v1::ListStacksResponse*) override {
    seen_->Record("ListStacks", *ctx);
    return grpc::Status::OK;
  }
  grpc::Status Apply(grpc::ServerContext* ctx, const upkeep::v1::ApplyRequest*,
                     upkeep::v1::ApplyResponse*) override {
    seen_->Record("Apply", *ctx);
    return grpc::Status::OK;
  }
  grpc::Status Pause(grpc::ServerContext* ctx, const upkeep::v1::PauseRequest*,
                     upkeep::v1::PauseResponse*) override {
    seen_->Record("Pause", *ctx);
    return grpc::Status::OK;
  }

 private:
  Seen* seen_;
};

// Reads the hello, checks it against the caller's certificate as the real AgentService is to
// (AuthorizeHello), and finishes with the verdict.
class StubAgents : public upkeep::v1::AgentService::CallbackService {
 public:
  explicit StubAgents(Seen* seen) : seen_(seen) {}
  grpc::ServerBidiReactor<upkeep::v1::AgentMessage, upkeep::v1::ControllerMessage>* Connect(
      grpc::CallbackServerContext* ctx) override {
    seen_->Record("Connect", *ctx);
    const Principal principal = PrincipalOf(*ctx);
    class Reactor
        : public grpc::ServerBidiReactor<upkeep::v1::AgentMessage, upkeep::v1::ControllerMessage> {
     public:
      explicit Reactor(Principal principal) : principal_(std::move(principal)) { StartRead(&msg_); }
      void OnReadDone(bool ok) override {
        if (!ok || !msg_.has_hello()) {
          Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "hello first"));
          return;
        }
        const absl::Status s = AuthorizeHello(principal_, msg_.hello().host_id(), true);
        Finish(s.ok() ? grpc::Status::OK
                      : grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                                     std::string(s.message())));
      }
      void OnDone() override { delete this; }

     private:
      const Principal principal_;
      upkeep::v1::AgentMessage msg_;
    };
    return new Reactor(principal);
  }

 private:
  Seen* seen_;
};

class AuthGrpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(tls::InitCa(certs_.path()).ok());
    auto c = tls::Issue(certs_.path(), IssueRequest::Controller("c1", {"127.0.0.1"}));
    ASSERT_TRUE(c.ok());
    for (const auto& r :
         {IssueRequest::Agent("web-1"), IssueRequest::User("vera", "viewer"),
          IssueRequest::User("otto", "operator"), IssueRequest::User("ada", "admin")}) {
      ASSERT_TRUE(tls::Issue(certs_.path(), r).ok());
    }
    auto tokens = TokenStore::Open(data_.path());
    ASSERT_TRUE(tokens.ok());
    tokens_ = std::move(*tokens);

    auto creds = SecureServerCredentials(c->cert, c->key, certs_.Join("ca.crt"), tokens_.get());
    ASSERT_TRUE(creds.ok()) << creds.status();
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", *creds, &port_);
    b.RegisterService(&fleet_);
    b.RegisterService(&agents_);
    server_ = b.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    if (server_) server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  }

  // A channel with the certificate of `who` ("agent-web-1", "user-vera"; empty: none) and an
  // optional bearer token.
  std::shared_ptr<grpc::Channel> Channel(const std::string& who, const std::string& token = "") {
    tls::ChannelTlsOptions options;
    options.bearer_token = token;
    auto creds = who.empty()
                     ? tls::ChannelCredentials(certs_.Join("ca.crt"), "", "", options)
                     : tls::ChannelCredentials(certs_.Join("ca.crt"), certs_.Join(who + ".crt"),
                                               certs_.Join(who + ".key"), options);
    EXPECT_TRUE(creds.ok()) << creds.status();
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port_), *creds, args);
  }

  static void Deadline(grpc::ClientContext* ctx) {
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  }
  grpc::Status List(std::shared_ptr<grpc::Channel> ch) {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    upkeep::v1::ListStacksResponse resp;
    return upkeep::v1::FleetService::NewStub(ch)->ListStacks(&ctx, {}, &resp);
  }
  grpc::Status Apply(std::shared_ptr<grpc::Channel> ch) {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    upkeep::v1::ApplyResponse resp;
    return upkeep::v1::FleetService::NewStub(ch)->Apply(&ctx, {}, &resp);
  }
  grpc::Status Pause(std::shared_ptr<grpc::Channel> ch) {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    upkeep::v1::PauseResponse resp;
    return upkeep::v1::FleetService::NewStub(ch)->Pause(&ctx, {}, &resp);
  }
  grpc::Status Connect(std::shared_ptr<grpc::Channel> ch, const std::string& host) {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    auto stream = upkeep::v1::AgentService::NewStub(ch)->Connect(&ctx);
    upkeep::v1::AgentMessage hello;
    hello.mutable_hello()->set_host_id(host);
    stream->Write(hello);
    stream->WritesDone();
    upkeep::v1::ControllerMessage m;
    while (stream->Read(&m)) {
    }
    return stream->Finish();
  }

  // grpc.health.v1.Health/Check for the whole server (an empty request), through a generic stub.
  grpc::Status HealthCheck(std::shared_ptr<grpc::Channel> ch) {
    grpc::GenericStub stub(ch);
    grpc::ClientContext ctx;
    Deadline(&ctx);
    grpc::Slice empty("");  // HealthCheckRequest{service: ""} encodes to nothing
    grpc::ByteBuffer request(&empty, 1);
    grpc::ByteBuffer response;
    grpc::Status status;
    absl::Notification done;
    stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                   [&](grpc::Status s) {
                     status = std::move(s);
                     done.Notify();
                   });
    done.WaitForNotification();
    return status;
  }

  TempDir certs_;
  TempDir data_;
  std::unique_ptr<TokenStore> tokens_;
  Seen seen_;
  StubFleet fleet_{&seen_};
  StubAgents agents_{&seen_};
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(AuthGrpcTest, AgentCertificateConnectsAndTheReactorSeesItsHost) {
  const grpc::Status s = Connect(Channel("agent-web-1"), "web-1");
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(seen_.Calls(), ::testing::ElementsAre("Connect agent:web-1"));
}

TEST_F(AuthGrpcTest, AgentCertificateSayingHelloAsAnotherHostIsPermissionDenied) {
  const grpc::Status s = Connect(Channel("agent-web-1"), "web-2");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
}

TEST_F(AuthGrpcTest, AgentCertificateMayNotCallFleetService) {
  auto ch = Channel("agent-web-1");
  EXPECT_EQ(List(ch).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Apply(ch).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(seen_.Calls(), ::testing::IsEmpty());
}

TEST_F(AuthGrpcTest, UsersMayNotCallAgentService) {
  EXPECT_EQ(Connect(Channel("user-ada"), "web-1").error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(seen_.Calls(), ::testing::IsEmpty());
}

TEST_F(AuthGrpcTest, ViewerReadsButApplyIsPermissionDeniedAndNeverReachesTheHandler) {
  auto ch = Channel("user-vera");
  EXPECT_TRUE(List(ch).ok());
  const grpc::Status s = Apply(ch);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), ::testing::HasSubstr("admin"));
  EXPECT_EQ(Pause(ch).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(seen_.Calls(), ::testing::ElementsAre("ListStacks user:vera(viewer)"));
}

TEST_F(AuthGrpcTest, OperatorPausesAdminApplies) {
  EXPECT_TRUE(Pause(Channel("user-otto")).ok());
  EXPECT_EQ(Apply(Channel("user-otto")).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(Apply(Channel("user-ada")).ok());
  EXPECT_THAT(seen_.Calls(),
              ::testing::ElementsAre("Pause user:otto(operator)", "Apply user:ada(admin)"));
}

TEST_F(AuthGrpcTest, NoCertificateAndNoTokenIsUnauthenticated) {
  auto ch = Channel("");
  EXPECT_EQ(List(ch).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Connect(ch, "web-1").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(seen_.Calls(), ::testing::IsEmpty());
}

TEST_F(AuthGrpcTest, HealthChecksNeedAViewerAndAreClosedToAgentsAndStrangers) {
  EXPECT_TRUE(HealthCheck(Channel("user-vera")).ok());
  EXPECT_EQ(HealthCheck(Channel("")).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(HealthCheck(Channel("agent-web-1")).error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(AuthGrpcTest, TokenGrantsItsRoleAndNeverReachesTheHandler) {
  auto token = tokens_->Create("ci", Role::kViewer);
  ASSERT_TRUE(token.ok());
  auto ch = Channel("", *token);
  EXPECT_TRUE(List(ch).ok());
  EXPECT_EQ(Apply(ch).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(seen_.Calls(), ::testing::ElementsAre("ListStacks token:ci(viewer)"));
  absl::MutexLock lock(&seen_.mu);
  EXPECT_FALSE(seen_.saw_authorization) << "the token must be consumed by the processor";
}

TEST_F(AuthGrpcTest, UnknownTokenIsUnauthenticatedEvenWithACertificate) {
  EXPECT_EQ(List(Channel("", "upk_nope")).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(List(Channel("user-ada", "upk_nope")).error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(AuthGrpcTest, RevokedTokenStopsWorkingAtTheNextCallOnTheSameConnection) {
  auto token = tokens_->Create("ci", Role::kAdmin);
  ASSERT_TRUE(token.ok());
  auto ch = Channel("", *token);
  ASSERT_TRUE(List(ch).ok());
  // Revoked the way `upkeep-controller token revoke` does it: another handle on the file.
  auto cli = TokenStore::Open(data_.path());
  ASSERT_TRUE(cli.ok());
  ASSERT_TRUE((*cli)->Revoke("ci").ok());
  EXPECT_EQ(List(ch).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Apply(ch).error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

}  // namespace
}  // namespace upkeep::controller_auth

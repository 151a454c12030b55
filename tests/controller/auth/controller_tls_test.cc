// The real upkeep-controller binary with the fleet's own certificates (core/tls): it refuses
// plaintext off loopback, serves mutual TLS, authorises by role, and an agent certificate says
// hello only as its own host; and it refuses a bad flag before it starts anything.
#include <sys/wait.h>

#include "absl/strings/str_cat.h"
#include "core/tls/tls.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/support/files.h"
#include "tests/support/net.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"
#include "upkeep/v1/agent_service.grpc.pb.h"
#include "upkeep/v1/fleet_service.grpc.pb.h"

namespace upkeep::testing {
namespace {

namespace v1 = upkeep::v1;

TEST(ControllerTls, RefusesPlaintextOffLoopbackUnlessInsecure) {
  TempDir dir;
  auto c = Subprocess::Start({BinPath("upkeep-controller"), "--data", dir.Join("data"), "--listen",
                              absl::StrCat("0.0.0.0:", FreePort())},
                             dir.Join("log"));
  ASSERT_TRUE(c.ok());
  auto status = (*c)->Wait(absl::Seconds(20));
  ASSERT_TRUE(status.has_value()) << "a plaintext controller on 0.0.0.0 kept running";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0);
  EXPECT_NE(ReadFile(dir.Join("log")).find("refusing_plaintext"), std::string::npos)
      << ReadFile(dir.Join("log"));
}

// A bad --grpc-args is refused before the controller starts anything: a replica on etcd exits
// naming the pair without reaching for etcd (nothing listens at the endpoint given), where it
// used to campaign, serve as a follower and fail only once elected.
TEST(ControllerFlags, ABadGrpcArgIsRefusedBeforeTheReplicaJoinsEtcd) {
  TempDir dir;
  auto c = Subprocess::Start(
      {BinPath("upkeep-controller"), "--data", dir.Join("data"), "--listen",
       absl::StrCat("127.0.0.1:", FreePort()), "--store", "etcd", "--etcd-endpoints",
       absl::StrCat("127.0.0.1:", FreePort()), "--grpc-args", "grpc.enable_channelz=0,oops"},
      dir.Join("log"));
  ASSERT_TRUE(c.ok());
  auto status = (*c)->Wait(absl::Seconds(20));
  ASSERT_TRUE(status.has_value()) << "kept running: " << ReadFile(dir.Join("log"));
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1);
  const std::string log = ReadFile(dir.Join("log"));
  EXPECT_NE(log.find("bad_flag"), std::string::npos) << log;
  EXPECT_NE(log.find("oops"), std::string::npos) << "the bad pair is not named: " << log;
  EXPECT_EQ(log.find("etcd"), std::string::npos) << "reached for etcd first: " << log;
}

class ControllerTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(tls::InitCa(dir_.Join("pki")).ok());
    ASSERT_TRUE(
        tls::Issue(dir_.Join("pki"), tls::IssueRequest::Controller("c1", {"127.0.0.1"})).ok());
    for (const char* host : {"h1", "h2"}) {
      ASSERT_TRUE(tls::Issue(dir_.Join("pki"), tls::IssueRequest::Agent(host)).ok());
    }
    ASSERT_TRUE(tls::Issue(dir_.Join("pki"), tls::IssueRequest::User("vic", "viewer")).ok());
    ASSERT_TRUE(tls::Issue(dir_.Join("pki"), tls::IssueRequest::User("ann", "admin")).ok());
    port_ = FreePort();
    const std::string pki = dir_.Join("pki");
    auto c = Subprocess::Start(
        {BinPath("upkeep-controller"), "--data", dir_.Join("data"), "--listen",
         absl::StrCat("127.0.0.1:", port_), "--tls-cert", pki + "/controller-c1.crt", "--tls-key",
         pki + "/controller-c1.key", "--tls-ca", pki + "/ca.crt"},
        dir_.Join("controller.log"));
    ASSERT_TRUE(c.ok());
    controller_ = std::move(*c);
    ASSERT_TRUE(WaitFor(
        [&] {
          return ReadFile(dir_.Join("controller.log")).find("controller_started") !=
                 std::string::npos;
        },
        absl::Seconds(30)))
        << ReadFile(dir_.Join("controller.log"));
  }
  std::shared_ptr<grpc::Channel> Channel(const std::string& who) {
    const std::string pki = dir_.Join("pki");
    auto creds = tls::ChannelCredentials(pki + "/ca.crt", pki + "/" + who + ".crt",
                                         pki + "/" + who + ".key");
    EXPECT_TRUE(creds.ok()) << creds.status();
    return grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_), *creds);
  }
  grpc::Status Apply(std::shared_ptr<grpc::Channel> ch, int port = 8002) {
    v1::ApplyRequest req;
    req.add_manifests()->set_filename("shop.yaml");
    req.mutable_manifests(0)->set_content(R"(apiVersion: upkeep/v1
kind: Stack
metadata: {name: shop}
spec:
  hosts: [h1]
  runtime: process
  services:
    - {name: backend, process: {command: [backend]}, port: )" +
                                          std::to_string(port) + R"(}
)");
    v1::ApplyResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return v1::FleetService::NewStub(ch)->Apply(&ctx, req, &resp);
  }

  TempDir dir_;
  int port_ = 0;
  std::unique_ptr<Subprocess> controller_;
};

TEST_F(ControllerTlsTest, RolesDecideAndPlaintextIsRefused) {
  EXPECT_EQ(Apply(Channel("user-vic")).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Apply(Channel("agent-h1")).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  const grpc::Status admin = Apply(Channel("user-ann"));
  EXPECT_TRUE(admin.ok()) << admin.error_message();
  auto plain =
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials());
  EXPECT_FALSE(Apply(plain).ok());
}

TEST_F(ControllerTlsTest, AnAgentSaysHelloOnlyAsItsOwnHostAndTheRealOneKeepsItsStream) {
  ASSERT_TRUE(Apply(Channel("user-ann")).ok());
  // The real h1.
  auto real_ch = Channel("agent-h1");
  auto real_stub = v1::AgentService::NewStub(real_ch);
  grpc::ClientContext real_ctx;
  auto real = real_stub->Connect(&real_ctx);
  v1::AgentMessage hello;
  hello.mutable_hello()->set_host_id("h1");
  ASSERT_TRUE(real->Write(hello));
  v1::ControllerMessage m;
  ASSERT_TRUE(real->Read(&m));
  EXPECT_TRUE(m.has_desired());
  // h2's certificate saying hello as h1.
  auto thief_stub = v1::AgentService::NewStub(Channel("agent-h2"));
  grpc::ClientContext thief_ctx;
  auto thief = thief_stub->Connect(&thief_ctx);
  ASSERT_TRUE(thief->Write(hello));
  while (thief->Read(&m)) {
  }
  EXPECT_EQ(thief->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // The real stream was not touched: the next apply's desired state reaches it.
  ASSERT_TRUE(Apply(Channel("user-ann"), 8003).ok());
  bool got = false;
  while (!got && real->Read(&m)) {
    got = m.has_desired() && m.desired().stacks_size() == 1 &&
          m.desired().stacks(0).spec().services(0).port() == 8003;
  }
  EXPECT_TRUE(got) << "the real agent's stream was replaced or closed";
  real_ctx.TryCancel();
}

}  // namespace
}  // namespace upkeep::testing

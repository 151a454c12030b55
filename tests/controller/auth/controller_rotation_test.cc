// Certificate rotation on the real upkeep-controller binary while an agent stays connected: the
// controller's own certificate, then its CA bundle (a new CA added, later the old one removed),
// then the agent's client certificate. New connections see each change (the controller re-reads
// its files about every 10 s); the agent's stream opened at the start is never dropped nor
// re-established: it keeps receiving desired state and reporting on the same stream, and the
// controller logs exactly one connection for that host.
#include <filesystem>
#include <fstream>

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

using ::upkeep::testing::ReadFile;

// Written to a temporary name and renamed, as `upkeepctl tls issue` does.
void WriteAtomically(const std::string& path, const std::string& content) {
  {
    std::ofstream out(path + ".new", std::ios::trunc);
    out << content;
  }
  std::filesystem::rename(path + ".new", path);
}

// Installs an issued pair at cert/key, key first (the watcher keeps the old pair until both
// match).
void Install(const tls::IssuedFiles& issued, const std::string& cert, const std::string& key) {
  WriteAtomically(key, ReadFile(issued.key));
  WriteAtomically(cert, ReadFile(issued.cert));
}

size_t Count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

class ControllerRotationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Two CAs: the fleet's first, and the one it moves to.
    ASSERT_TRUE(tls::InitCa(ca1_).ok());
    ASSERT_TRUE(tls::InitCa(ca2_).ok());
    auto c1 = tls::Issue(ca1_, tls::IssueRequest::Controller("c1", {"127.0.0.1"}));
    auto h1 = tls::Issue(ca1_, tls::IssueRequest::Agent("h1"));
    ASSERT_TRUE(c1.ok() && h1.ok());
    ASSERT_TRUE(tls::Issue(ca1_, tls::IssueRequest::User("ann", "admin")).ok());
    ASSERT_TRUE(tls::Issue(ca2_, tls::IssueRequest::User("ann", "admin")).ok());
    ASSERT_TRUE(tls::Issue(ca2_, tls::IssueRequest::Agent("h2")).ok());
    std::filesystem::create_directories(dir_.Join("ctl"));
    std::filesystem::create_directories(dir_.Join("agent"));
    // The controller's files, as a deployment would lay them out.
    Install(*c1, ServerCert(), dir_.Join("ctl/server.key"));
    WriteAtomically(dir_.Join("ctl/ca.crt"), ReadFile(ca1_ + "/ca.crt"));
    // The agent's files. It trusts both CAs from the start (the first step of a CA rotation).
    Install(*h1, dir_.Join("agent/client.crt"), dir_.Join("agent/client.key"));
    WriteAtomically(dir_.Join("agent/ca.crt"),
                    ReadFile(ca1_ + "/ca.crt") + ReadFile(ca2_ + "/ca.crt"));

    port_ = FreePort();
    auto c = Subprocess::Start(
        {BinPath("upkeep-controller"), "--data", dir_.Join("data"), "--listen",
         absl::StrCat("127.0.0.1:", port_), "--tls-cert", ServerCert(), "--tls-key",
         dir_.Join("ctl/server.key"), "--tls-ca", dir_.Join("ctl/ca.crt")},
        Log());
    ASSERT_TRUE(c.ok());
    controller_ = std::move(*c);
    ASSERT_TRUE(
        WaitFor([&] { return ReadFile(Log()).find("controller_started") != std::string::npos; },
                absl::Seconds(30)))
        << ReadFile(Log());
    // The agent's credentials: one object for the agent's whole life, re-reading its files.
    tls::ChannelTlsOptions options;
    options.refresh = absl::Seconds(1);
    auto creds = tls::ChannelCredentials(dir_.Join("agent/ca.crt"), dir_.Join("agent/client.crt"),
                                         dir_.Join("agent/client.key"), options);
    ASSERT_TRUE(creds.ok()) << creds.status();
    agent_creds_ = *creds;
  }

  std::string ServerCert() { return dir_.Join("ctl/server.crt"); }
  std::string Log() { return dir_.Join("controller.log"); }

  // A fresh connection each time: no subchannel shared with earlier channels.
  std::shared_ptr<grpc::Channel> Dial(std::shared_ptr<grpc::ChannelCredentials> creds) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port_), creds, args);
  }
  std::shared_ptr<grpc::ChannelCredentials> Creds(const std::string& ca, const std::string& who) {
    // People trust both CAs too (the controller's certificate stays one of the first CA's).
    auto creds = tls::ChannelCredentials(dir_.Join("agent/ca.crt"), ca + "/" + who + ".crt",
                                         ca + "/" + who + ".key");
    EXPECT_TRUE(creds.ok()) << creds.status();
    return *creds;
  }

  // Applies the one-service stack on h1 with `port`, as the admin of `ca`; on success, `pem` is
  // the certificate the controller presented on that (new) connection.
  grpc::Status Apply(const std::string& ca, int port, std::string* pem = nullptr) {
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
                                          std::to_string(port) + "}\n");
    v1::ApplyResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::Status st =
        v1::FleetService::NewStub(Dial(Creds(ca, "user-ann")))->Apply(&ctx, req, &resp);
    if (st.ok() && pem != nullptr) {
      auto pems = ctx.auth_context()->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME);
      *pem = pems.empty() ? "" : std::string(pems[0].data(), pems[0].size());
    }
    return st;
  }

  // Says hello as `host` on a new connection with `creds`; the stream's final status (a refused
  // handshake is UNAVAILABLE, a hello refused by the controller PERMISSION_DENIED, an accepted
  // one is cancelled by us after the first message).
  grpc::Status Hello(std::shared_ptr<grpc::ChannelCredentials> creds, const std::string& host) {
    auto stub = v1::AgentService::NewStub(Dial(creds));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    auto stream = stub->Connect(&ctx);
    v1::AgentMessage hello;
    hello.mutable_hello()->set_host_id(host);
    stream->Write(hello);
    v1::ControllerMessage m;
    if (stream->Read(&m)) {
      ctx.TryCancel();
      while (stream->Read(&m)) {
      }
      stream->Finish();
      return grpc::Status::OK;
    }
    return stream->Finish();
  }

  // The agent reports on its stream, then the next apply's desired state reaches it there.
  void ExpectStreamAlive(grpc::ClientReaderWriter<v1::AgentMessage, v1::ControllerMessage>* s,
                         const std::string& ca, int port, const std::string& when) {
    v1::AgentMessage report;
    auto* obs = report.mutable_observation()->add_stacks();
    obs->set_stack("shop");
    obs->mutable_host()->set_host_id("h1");
    ASSERT_TRUE(s->Write(report)) << "the agent could not report " << when;
    ASSERT_TRUE(Apply(ca, port).ok()) << when;
    v1::ControllerMessage m;
    bool got = false;
    while (!got && s->Read(&m)) {
      got = m.has_desired() && m.desired().stacks_size() == 1 &&
            m.desired().stacks(0).spec().services(0).port() == port;
    }
    ASSERT_TRUE(got) << "the agent's stream was dropped " << when;
  }

  TempDir dir_;
  const std::string ca1_ = dir_.Join("ca1");
  const std::string ca2_ = dir_.Join("ca2");
  int port_ = 0;
  std::unique_ptr<Subprocess> controller_;
  std::shared_ptr<grpc::ChannelCredentials> agent_creds_;
};

TEST_F(ControllerRotationTest, CertificatesRotateWhileTheAgentStaysConnected) {
  std::string pem_before;
  ASSERT_TRUE(Apply(ca1_, 8001, &pem_before).ok());
  EXPECT_EQ(pem_before, ReadFile(ServerCert()));

  // The agent connects once, for the whole test.
  auto stub = v1::AgentService::NewStub(Dial(agent_creds_));
  grpc::ClientContext ctx;
  auto stream = stub->Connect(&ctx);
  v1::AgentMessage hello;
  hello.mutable_hello()->set_host_id("h1");
  ASSERT_TRUE(stream->Write(hello));
  ExpectStreamAlive(stream.get(), ca1_, 8002, "after hello");

  // 1. The controller's certificate is renewed (same name, new key) in place.
  auto renewed = tls::Issue(ca1_, tls::IssueRequest::Controller("c1", {"127.0.0.1"}));
  ASSERT_TRUE(renewed.ok());
  Install(*renewed, ServerCert(), dir_.Join("ctl/server.key"));
  const std::string want = ReadFile(renewed->cert);
  ASSERT_NE(want, pem_before);
  EXPECT_TRUE(WaitFor(
      [&] {
        std::string pem;
        return Apply(ca1_, 8003, &pem).ok() && pem == want;
      },
      absl::Seconds(40), absl::Milliseconds(500)))
      << "new connections never saw the renewed controller certificate";
  ExpectStreamAlive(stream.get(), ca1_, 8004, "after the controller's certificate was renewed");

  // 2. A second CA is added to the controller's bundle: its agents get in, the old ones stay.
  auto h2 = Creds(ca2_, "agent-h2");
  EXPECT_EQ(Hello(h2, "h2").error_code(), grpc::StatusCode::UNAVAILABLE)
      << "a certificate of a CA the controller does not trust got through";
  WriteAtomically(dir_.Join("ctl/ca.crt"), ReadFile(ca1_ + "/ca.crt") + ReadFile(ca2_ + "/ca.crt"));
  EXPECT_TRUE(
      WaitFor([&] { return Hello(h2, "h2").ok(); }, absl::Seconds(40), absl::Milliseconds(500)))
      << "an agent of the added CA was never let in";
  ExpectStreamAlive(stream.get(), ca2_, 8005, "after a CA was added to the bundle");

  // 3. The agent's own certificate is replaced by one of the new CA, and the controller then
  // drops the old CA. The agent's credentials (the same object) present the new certificate on
  // their next connection: a hello as another host gets past the handshake to the controller's
  // PERMISSION_DENIED, where the old certificate would fail the handshake (UNAVAILABLE).
  auto h1_new = tls::Issue(ca2_, tls::IssueRequest::Agent("h1"));
  ASSERT_TRUE(h1_new.ok());
  Install(*h1_new, dir_.Join("agent/client.crt"), dir_.Join("agent/client.key"));
  WriteAtomically(dir_.Join("ctl/ca.crt"), ReadFile(ca2_ + "/ca.crt"));
  auto old_h1 = Creds(ca1_, "agent-h1");
  EXPECT_TRUE(
      WaitFor([&] { return Hello(old_h1, "h9").error_code() == grpc::StatusCode::UNAVAILABLE; },
              absl::Seconds(40), absl::Milliseconds(500)))
      << "the controller never stopped trusting the removed CA";
  EXPECT_TRUE(WaitFor(
      [&] { return Hello(agent_creds_, "h9").error_code() == grpc::StatusCode::PERMISSION_DENIED; },
      absl::Seconds(20), absl::Milliseconds(500)))
      << "the agent's credentials did not present its renewed certificate";
  ExpectStreamAlive(stream.get(), ca2_, 8006, "after the agent's certificate was renewed");

  // One connection for h1 in the whole run: the stream was never re-established.
  EXPECT_EQ(Count(ReadFile(Log()), "event=agent_connected host=h1 "), 1u) << ReadFile(Log());
  ctx.TryCancel();
  stream->Finish();
}

}  // namespace
}  // namespace upkeep::testing

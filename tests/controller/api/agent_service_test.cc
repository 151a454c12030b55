// AgentServiceImpl over real gRPC on loopback, driven by raw client streams.
#include "controller/api/agent_service.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/support/net.h"
#include "tests/support/wait.h"

namespace upkeep::controller {
namespace {

using upkeep::testing::FreePort;
using upkeep::testing::WaitFor;
using upkeep::v1::AgentMessage;
using upkeep::v1::ControllerMessage;

class RecordingListener : public AgentListener {
 public:
  void OnConnected(const std::string& host, const upkeep::v1::Hello&) override {
    absl::MutexLock l(&mu_);
    connected_.push_back(host);
  }
  void OnObservation(const std::string& host, upkeep::v1::ObservationReport) override {
    absl::MutexLock l(&mu_);
    observations_.push_back(host);
  }
  void OnActionResult(const std::string& host, upkeep::v1::ActionResult) override {}
  void OnDisconnected(const std::string& host) override {
    absl::MutexLock l(&mu_);
    disconnected_.push_back(host);
  }
  size_t connected() {
    absl::MutexLock l(&mu_);
    return connected_.size();
  }
  size_t observations() {
    absl::MutexLock l(&mu_);
    return observations_.size();
  }
  size_t disconnected() {
    absl::MutexLock l(&mu_);
    return disconnected_.size();
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> connected_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> observations_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> disconnected_ ABSL_GUARDED_BY(mu_);
};

class AgentServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    service_ = std::make_unique<AgentServiceImpl>(&listener_);
    address_ = "127.0.0.1:" + std::to_string(FreePort());
    grpc::ServerBuilder builder;
    builder.AddListeningPort(address_, grpc::InsecureServerCredentials());
    builder.SetMaxReceiveMessageSize(64 * 1024);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = upkeep::v1::AgentService::NewStub(
        grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    service_->Shutdown();
    server_->Shutdown();
  }
  static AgentMessage Hello(const std::string& host) {
    AgentMessage m;
    m.mutable_hello()->set_host_id(host);
    return m;
  }

  RecordingListener listener_;
  std::unique_ptr<AgentServiceImpl> service_;
  std::string address_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<upkeep::v1::AgentService::Stub> stub_;
};

TEST_F(AgentServiceTest, HelloConnectsAndSendReachesTheAgent) {
  grpc::ClientContext ctx;
  auto stream = stub_->Connect(&ctx);
  ASSERT_TRUE(stream->Write(Hello("host-a")));
  ASSERT_TRUE(WaitFor([&] { return listener_.connected() == 1; }));
  ControllerMessage out;
  out.mutable_action()->set_id("act-1");
  ASSERT_TRUE(service_->Send("host-a", out));
  ControllerMessage in;
  ASSERT_TRUE(stream->Read(&in));
  EXPECT_EQ(in.action().id(), "act-1");
  EXPECT_FALSE(service_->Send("nobody", out));
  stream->WritesDone();
  ctx.TryCancel();
  stream->Finish();
  EXPECT_TRUE(WaitFor([&] { return listener_.disconnected() == 1; }));
}

TEST_F(AgentServiceTest, InvalidHostIdIsRejectedAndServerKeepsServing) {
  {
    grpc::ClientContext ctx;
    auto stream = stub_->Connect(&ctx);
    stream->Write(Hello("bad host/id"));
    ControllerMessage in;
    while (stream->Read(&in)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext ctx;
    auto stream = stub_->Connect(&ctx);
    AgentMessage big = Hello("host-big");
    big.mutable_hello()->set_version(std::string(128 * 1024, 'x'));
    stream->Write(big);
    ControllerMessage in;
    while (stream->Read(&in)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  grpc::ClientContext ctx;
  auto stream = stub_->Connect(&ctx);
  ASSERT_TRUE(stream->Write(Hello("host-ok")));
  EXPECT_TRUE(WaitFor([&] { return listener_.connected() == 1; }));
  ctx.TryCancel();
  stream->Finish();
}

TEST_F(AgentServiceTest, SecondStreamForSameHostReplacesTheFirst) {
  grpc::ClientContext c1, c2;
  auto s1 = stub_->Connect(&c1);
  ASSERT_TRUE(s1->Write(Hello("host-r")));
  ASSERT_TRUE(WaitFor([&] { return listener_.connected() == 1; }));
  auto s2 = stub_->Connect(&c2);
  ASSERT_TRUE(s2->Write(Hello("host-r")));
  ASSERT_TRUE(WaitFor([&] { return listener_.connected() == 2; }));
  ControllerMessage in;
  while (s1->Read(&in)) {
  }
  EXPECT_EQ(s1->Finish().error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(listener_.disconnected(), 0u);
  EXPECT_EQ(service_->ConnectedHosts(), std::vector<std::string>{"host-r"});
  c2.TryCancel();
  s2->Finish();
}

TEST_F(AgentServiceTest, ShutdownFinishesOpenStreamsWithUnavailable) {
  grpc::ClientContext ctx;
  auto stream = stub_->Connect(&ctx);
  ASSERT_TRUE(stream->Write(Hello("host-s")));
  ASSERT_TRUE(WaitFor([&] { return listener_.connected() == 1; }));
  service_->Shutdown();
  ControllerMessage in;
  while (stream->Read(&in)) {
  }
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(AgentServiceTest, ObservationBeforeHelloIsRejected) {
  grpc::ClientContext ctx;
  auto stream = stub_->Connect(&ctx);
  AgentMessage m;
  m.mutable_observation()->set_event_driven(true);
  stream->Write(m);
  ControllerMessage in;
  while (stream->Read(&in)) {
  }
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(listener_.connected(), 0u);
}

TEST_F(AgentServiceTest, ServesTwoHundredConcurrentStreams) {
  constexpr int kStreams = 200;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReaderWriter<AgentMessage, ControllerMessage>>> streams;
  for (int i = 0; i < kStreams; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    streams.push_back(stub_->Connect(contexts.back().get()));
    ASSERT_TRUE(streams.back()->Write(Hello("host-" + std::to_string(i))));
  }
  ASSERT_TRUE(WaitFor([&] { return listener_.connected() == kStreams; }));
  EXPECT_EQ(service_->ConnectedHosts().size(), static_cast<size_t>(kStreams));
  for (int i = 0; i < kStreams; ++i) {
    ControllerMessage out;
    out.mutable_action()->set_id("a" + std::to_string(i));
    ASSERT_TRUE(service_->Send("host-" + std::to_string(i), out));
  }
  for (int i = 0; i < kStreams; ++i) {
    ControllerMessage in;
    ASSERT_TRUE(streams[i]->Read(&in));
    EXPECT_EQ(in.action().id(), "a" + std::to_string(i));
  }
  for (int i = 0; i < kStreams; ++i) {
    contexts[i]->TryCancel();
    streams[i]->Finish();
  }
  EXPECT_TRUE(WaitFor([&] { return listener_.disconnected() == kStreams; }));
}

}  // namespace
}  // namespace upkeep::controller

// FleetService.Apply on a live controller over real gRPC, fed every manifest the fuzzer found
// to hang a YAML parser we used, and the parser's limits: each call is answered at once with
// INVALID_ARGUMENT and FILE:LINE errors, and the controller keeps serving valid applies.
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "controller/api/agent_service.h"
#include "controller/api/fleet_service.h"
#include "controller/metrics/metrics.h"
#include "controller/reconcile/reconciler.h"
#include "controller/store/store.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace upkeep::controller {
namespace {

namespace v1 = upkeep::v1;

constexpr char kValid[] = R"(apiVersion: upkeep/v1
kind: Stack
metadata: {name: shop}
spec:
  hosts: [web-1]
  runtime: process
  services:
    - name: backend
      process: {command: [backend]}
      port: 8002
)";

// The controller's gRPC services, its reconciler and a SQLite store, in-process on loopback.
class LiveController {
 public:
  explicit LiveController(const std::string& dir) {
    store_ = std::move(*OpenSqliteStore(dir));
    reconciler_ = std::move(*Reconciler::Create(store_.get(), Clock::Real(), &metrics_));
    agents_ = std::make_unique<AgentServiceImpl>(reconciler_.get());
    reconciler_->SetHub(agents_.get());
    fleet_ = std::make_unique<FleetServiceImpl>(reconciler_.get(), store_.get());
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    b.SetMaxReceiveMessageSize(8 << 20);
    b.RegisterService(agents_.get());
    b.RegisterService(fleet_.get());
    server_ = b.BuildAndStart();
    reconciler_->Start();
    stub_ = v1::FleetService::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials()));
  }
  ~LiveController() {
    agents_->Shutdown();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    reconciler_->Stop();
  }

  // One Apply with a deadline: a parser that never returns shows as DEADLINE_EXCEEDED.
  grpc::Status Apply(const std::string& filename, const std::string& content,
                     v1::ApplyResponse* resp) {
    v1::ApplyRequest req;
    req.add_manifests()->set_filename(filename);
    req.mutable_manifests(0)->set_content(content);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return stub_->Apply(&ctx, req, resp);
  }

 private:
  Metrics metrics_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Reconciler> reconciler_;
  std::unique_ptr<AgentServiceImpl> agents_;
  std::unique_ptr<FleetServiceImpl> fleet_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::unique_ptr<v1::FleetService::Stub> stub_;
};

std::string Corpus(const std::string& name) {
  std::ifstream in(upkeep::testing::SourcePath("tests/fuzz/corpus/manifest/" + name),
                   std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string Laughs() {
  std::string laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  for (char c = 'b'; c <= 'k'; ++c) {
    const char p = static_cast<char>(c - 1);
    laughs += absl::StrCat(std::string(1, c), ": &", std::string(1, c), " [*", std::string(1, p),
                           ", *", std::string(1, p), ", *", std::string(1, p), "]\n");
  }
  return laughs;
}

TEST(ApplyManifest, RejectsEveryHangingInputAndKeepsServing) {
  upkeep::testing::TempDir dir;
  LiveController controller(dir.path());
  struct Hostile {
    std::string name;
    std::string content;
    // Whether the input is valid UTF-8 (ManifestSource.content is `bytes`, so invalid UTF-8
    // reaches the loader too and is answered the same way).
    bool utf8;
  };
  const std::vector<Hostile> hostile = {
      {"yaml-cpp-hang-comma", Corpus("yaml-cpp-hang-comma"), true},
      {"yaml-cpp-hang-seq-comma", Corpus("yaml-cpp-hang-seq-comma"), false},
      {"yaml-cpp-hang-tag-comma", Corpus("yaml-cpp-hang-tag-comma"), true},
      {"yaml-cpp-hang-utf8-comma", Corpus("yaml-cpp-hang-utf8-comma"), false},
      {"yaml-cpp-hang-seq-comma-utf8", Corpus("yaml-cpp-hang-seq-comma-utf8"), true},
      {"comma-second-doc", Corpus("comma-second-doc"), true},
      {"deep-flow", std::string(1 << 20, '['), true},  // libyaml is quadratic here, unbounded
      {"laughs", Laughs(), true},
      {"nul", std::string("apiVersion: upkeep/v1\n\0", 23), true},
  };
  for (const auto& [name, content, valid_utf8] : hostile) {
    ASSERT_FALSE(content.empty()) << name;
    v1::ApplyResponse resp;
    const grpc::Status st = controller.Apply(name + ".yaml", content, &resp);
    EXPECT_NE(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << name;
    EXPECT_FALSE(st.ok()) << name;
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << name << (valid_utf8 ? "" : " (invalid UTF-8)") << ": " << st.error_code() << " "
        << st.error_message();
    EXPECT_TRUE(absl::StrContains(st.error_message(), "first: " + name + ".yaml:"))
        << name << ": " << st.error_message();

    // The same controller still takes a valid manifest right after.
    v1::ApplyResponse ok;
    const grpc::Status good = controller.Apply("shop.yaml", kValid, &ok);
    EXPECT_TRUE(good.ok()) << "after " << name << ": " << good.error_message();
    EXPECT_EQ(ok.errors_size(), 0);
  }
}

}  // namespace
}  // namespace upkeep::controller

// `upkeepctl tls init|issue` end to end: the files it writes make a working mutual-TLS pair.
// (Here rather than tests/cli because what it proves is that the CLI's output is what core/tls
// and gRPC accept.)
#include <sys/wait.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/tls/tls.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "upkeep/v1/fleet_service.grpc.pb.h"

namespace upkeep {
namespace {

using testing::BinPath;
using testing::Subprocess;
using testing::TempDir;

int Upkeepctl(const TempDir& dir, std::vector<std::string> args) {
  args.insert(args.begin(), {BinPath("upkeepctl"), "tls"});
  auto p = Subprocess::Start(args, dir.Join("cli.log"));
  EXPECT_TRUE(p.ok());
  if (!p.ok()) return -1;
  auto st = (*p)->Wait(absl::Seconds(30));
  return st.has_value() && WIFEXITED(*st) ? WEXITSTATUS(*st) : -1;
}

class Fleet : public upkeep::v1::FleetService::Service {
  grpc::Status ListStacks(grpc::ServerContext*, const upkeep::v1::ListStacksRequest*,
                          upkeep::v1::ListStacksResponse*) override {
    return grpc::Status::OK;
  }
};

TEST(UpkeepctlTls, InitAndIssueWriteAWorkingFleet) {
  TempDir dir;
  const std::string pki = dir.Join("pki");
  ASSERT_EQ(Upkeepctl(dir, {"init", "--dir", pki}), 0);
  EXPECT_EQ(Upkeepctl(dir, {"init", "--dir", pki}), 1) << "init must not replace a CA";
  ASSERT_EQ(Upkeepctl(dir, {"issue", "--dir", pki, "--controller", "c1", "--san",
                            "127.0.0.1,controller.example"}),
            0);
  ASSERT_EQ(Upkeepctl(dir, {"issue", "--dir", pki, "--agent", "web-1"}), 0);
  ASSERT_EQ(Upkeepctl(dir, {"issue", "--dir", pki, "--user", "ann", "--role", "viewer"}), 0);
  EXPECT_EQ(Upkeepctl(dir, {"issue", "--dir", pki, "--user", "bob"}), 2);
  EXPECT_EQ(Upkeepctl(dir, {"issue", "--dir", pki, "--controller", "c2"}), 2);

  auto server_creds = tls::ServerCredentials(pki + "/controller-c1.crt", pki + "/controller-c1.key",
                                             pki + "/ca.crt");
  ASSERT_TRUE(server_creds.ok()) << server_creds.status();
  Fleet fleet;
  int port = 0;
  grpc::ServerBuilder b;
  b.AddListeningPort("127.0.0.1:0", *server_creds, &port);
  b.RegisterService(&fleet);
  auto server = b.BuildAndStart();
  ASSERT_NE(server, nullptr);
  for (const std::string who : {"agent-web-1", "user-ann"}) {
    auto creds = tls::ChannelCredentials(pki + "/ca.crt", pki + "/" + who + ".crt",
                                         pki + "/" + who + ".key");
    ASSERT_TRUE(creds.ok()) << creds.status();
    auto stub = upkeep::v1::FleetService::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), *creds));
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    upkeep::v1::ListStacksResponse resp;
    const grpc::Status s = stub->ListStacks(&ctx, {}, &resp);
    EXPECT_TRUE(s.ok()) << who << ": " << s.error_message();
  }
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
}

}  // namespace
}  // namespace upkeep

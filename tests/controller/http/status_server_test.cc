// StatusServer over loopback: the embedded page and its API, live events over SSE, shutdown
// with a stream open, and roles on the TLS port (no credentials 401; a viewer token or a user
// certificate 200; an agent certificate 403).
#include "controller/http/status_server.h"

#include <httplib.h>

#include "absl/strings/str_cat.h"
#include "core/tls/tls.h"
#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace upkeep::controller {
namespace {

using upkeep::testing::WaitFor;

class StatusServerTest : public ::testing::Test {
 protected:
  void SetUp() override { store_ = std::move(*OpenSqliteStore(dir_.path())); }
  testing::TempDir dir_;
  std::unique_ptr<Store> store_;
  SimulatedClock clock_;
  Metrics metrics_;
};

TEST_F(StatusServerTest, ServesPageStateMetricsAndLiveEvents) {
  EventBus bus(store_.get(), &clock_, nullptr);
  StatusServerOptions o;
  o.address = "127.0.0.1:0";
  o.metrics = &metrics_;
  o.events = &bus;
  o.state = [] { return std::string(R"({"stacks":[]})"); };
  auto s = StatusServer::Start(o);
  ASSERT_TRUE(s.ok()) << s.status();
  httplib::Client c("127.0.0.1", (*s)->port());
  auto page = c.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("<script src=\"app.js\">"), std::string::npos);
  EXPECT_NE(page->get_header_value("Content-Security-Policy").find("default-src 'self'"),
            std::string::npos);
  EXPECT_NE(c.Get("/app.js")->body.find("EventSource"), std::string::npos);
  EXPECT_EQ(c.Get("/api/state")->body, R"({"stacks":[]})");
  metrics_.Inc("upkeep_reconciles_total");
  EXPECT_NE(c.Get("/metrics")->body.find("upkeep_reconciles_total 1"), std::string::npos);

  // A stream: what the bus publishes arrives as an SSE frame.
  std::mutex mu;
  std::string received;
  std::thread reader([&] {
    httplib::Client sse("127.0.0.1", (*s)->port());
    sse.Get("/api/events", [&](const char* data, size_t n) {
      std::lock_guard<std::mutex> l(mu);
      received.append(data, n);
      return received.find("\"reason\":\"Healed\"") == std::string::npos;
    });
  });
  // Publish until the stream is attached and the frame has arrived.
  ASSERT_TRUE(WaitFor(
      [&] {
        bus.Publish("Normal", "Healed", "demo", "web-1", "", "healthy again");
        std::lock_guard<std::mutex> l(mu);
        return received.find("\"reason\":\"Healed\"") != std::string::npos;
      },
      absl::Seconds(10), absl::Milliseconds(50)));
  reader.join();
  EXPECT_NE(received.find("event: upkeep\ndata: {"), std::string::npos) << received;
}

TEST_F(StatusServerTest, StopClosesOpenStreams) {
  StatusServerOptions o;
  o.address = "127.0.0.1:0";
  auto s = StatusServer::Start(o);
  ASSERT_TRUE(s.ok());
  std::atomic<bool> connected{false};
  std::thread reader([&] {
    httplib::Client sse("127.0.0.1", (*s)->port());
    sse.Get(
        "/api/events", httplib::Headers(),
        [&](const httplib::Response&) {
          connected = true;
          return true;
        },
        [&](const char*, size_t) { return true; });
  });
  ASSERT_TRUE(WaitFor([&] { return connected.load(); }));
  (*s)->Stop();  // must return although a stream is open
  reader.join();
}

TEST_F(StatusServerTest, TlsPortWantsAViewer) {
  const std::string pki = dir_.Join("pki");
  ASSERT_TRUE(tls::InitCa(pki).ok());
  auto server_cert = tls::Issue(pki, tls::IssueRequest::Controller("c1", {"127.0.0.1"}));
  auto viewer = tls::Issue(pki, tls::IssueRequest::User("ann", "viewer"));
  auto agent = tls::Issue(pki, tls::IssueRequest::Agent("web-1"));
  ASSERT_TRUE(server_cert.ok() && viewer.ok() && agent.ok());
  auto tokens = controller_auth::TokenStore::Open(dir_.path());
  ASSERT_TRUE(tokens.ok());
  auto token = (*tokens)->Create("page", controller_auth::Role::kViewer);
  ASSERT_TRUE(token.ok());

  StatusServerOptions o;
  o.address = "127.0.0.1:0";
  o.metrics = &metrics_;
  o.state = [] { return std::string("{}"); };
  o.tls_cert = server_cert->cert;
  o.tls_key = server_cert->key;
  o.tls_ca = pki + "/ca.crt";
  o.tokens = tokens->get();
  auto s = StatusServer::Start(o);
  ASSERT_TRUE(s.ok()) << s.status();

  auto client = [&](const std::string& cert = "", const std::string& key = "") {
    auto c = cert.empty()
                 ? std::make_unique<httplib::SSLClient>("127.0.0.1", (*s)->port())
                 : std::make_unique<httplib::SSLClient>("127.0.0.1", (*s)->port(), cert, key);
    c->set_ca_cert_path((pki + "/ca.crt").c_str());
    c->enable_server_certificate_verification(true);
    return c;
  };
  EXPECT_EQ(client()->Get("/healthz")->status, 200);
  EXPECT_EQ(client()->Get("/api/state")->status, 401);
  EXPECT_EQ(client()->Get("/metrics")->status, 401);
  EXPECT_EQ(client()->Get("/api/state", {{"Authorization", "Bearer nope"}})->status, 401);
  EXPECT_EQ(client()->Get("/api/state", {{"Authorization", "Bearer " + *token}})->status, 200);
  auto by_query = client()->Get(absl::StrCat("/?token=", *token));
  EXPECT_EQ(by_query->status, 200);
  EXPECT_NE(by_query->get_header_value("Set-Cookie").find("HttpOnly"), std::string::npos);
  EXPECT_EQ(
      client()->Get("/api/state", {{"Cookie", absl::StrCat("upkeep_token=", *token)}})->status,
      200);
  EXPECT_EQ(client(viewer->cert, viewer->key)->Get("/api/state")->status, 200);
  EXPECT_EQ(client(agent->cert, agent->key)->Get("/api/state")->status, 403);
}

}  // namespace
}  // namespace upkeep::controller

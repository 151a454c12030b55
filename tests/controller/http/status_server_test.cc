// StatusServer over loopback: the embedded page and its API, live events over SSE, shutdown
// with a stream open, roles on the TLS port (no credentials 401; a viewer token or a user
// certificate 200; an agent certificate 403), and TLS session resumption as browsers do it (a
// second connection resuming the first one's session is served, with the first one's roles).
#include "controller/http/status_server.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/tls/tls.h"
#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

namespace upkeep::controller {
namespace {

using upkeep::testing::WaitFor;

// One HTTPS GET on a fresh connection with OpenSSL itself, resuming *session when it is set
// (as a browser does for every connection after its first) and leaving the connection's
// session there for the next. httplib's client never resumes, so it cannot see this.
struct RawResult {
  int status = -1;  // -1: the handshake or the exchange failed
  bool reused = false;
  std::string error;  // OpenSSL's reason when status is -1
};
RawResult RawGet(SSL_CTX* ctx, int port, const std::string& path, SSL_SESSION** session) {
  RawResult r;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    r.error = "connect failed";
    return r;
  }
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  if (*session != nullptr) SSL_set_session(ssl, *session);
  ERR_clear_error();
  std::string response;
  if (SSL_connect(ssl) == 1) {
    const std::string req =
        absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    SSL_write(ssl, req.data(), static_cast<int>(req.size()));
    char buf[4096];
    int n;
    while ((n = SSL_read(ssl, buf, sizeof buf)) > 0) response.append(buf, n);
  }
  if (absl::StartsWith(response, "HTTP/1.1 ") && response.size() >= 12) {
    r.status = std::stoi(response.substr(9, 3));
  } else {
    char reason[256];
    ERR_error_string_n(ERR_get_error(), reason, sizeof reason);
    r.error = reason;
  }
  r.reused = SSL_session_reused(ssl) == 1;
  SSL_shutdown(ssl);  // without it OpenSSL forgets the session as possibly bad
  if (SSL_SESSION* s = SSL_get1_session(ssl); s != nullptr) {
    if (*session != nullptr) SSL_SESSION_free(*session);
    *session = s;
  }
  SSL_free(ssl);
  ::close(fd);
  return r;
}

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

// Regression: with client certificates asked for and no session id context, OpenSSL ended
// every resumed handshake with an internal_error alert, which Chromium showed as
// ERR_SSL_PROTOCOL_ERROR on all loads after the first.
TEST_F(StatusServerTest, TlsSessionsResumeAndKeepTheirRoles) {
  const std::string pki = dir_.Join("pki");
  ASSERT_TRUE(tls::InitCa(pki).ok());
  auto server_cert = tls::Issue(pki, tls::IssueRequest::Controller("c1", {"127.0.0.1"}));
  auto viewer = tls::Issue(pki, tls::IssueRequest::User("ann", "viewer"));
  ASSERT_TRUE(server_cert.ok() && viewer.ok());
  StatusServerOptions o;
  o.address = "127.0.0.1:0";
  o.state = [] { return std::string("{}"); };
  o.tls_cert = server_cert->cert;
  o.tls_key = server_cert->key;
  o.tls_ca = pki + "/ca.crt";
  auto s = StatusServer::Start(o);
  ASSERT_TRUE(s.ok()) << s.status();
  const int port = (*s)->port();

  for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    SCOPED_TRACE(version == TLS1_3_VERSION ? "TLS 1.3 (tickets)" : "TLS 1.2 (session ids)");
    // A browser: trusts the CA, no client certificate.
    SSL_CTX* browser = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(browser, version);
    SSL_CTX_set_max_proto_version(browser, version);
    ASSERT_EQ(SSL_CTX_load_verify_locations(browser, (pki + "/ca.crt").c_str(), nullptr), 1);
    SSL_CTX_set_verify(browser, SSL_VERIFY_PEER, nullptr);
    SSL_SESSION* session = nullptr;
    RawResult first = RawGet(browser, port, "/healthz", &session);
    EXPECT_EQ(first.status, 200) << first.error;
    ASSERT_NE(session, nullptr);
    RawResult again = RawGet(browser, port, "/healthz", &session);
    EXPECT_EQ(again.status, 200) << again.error;
    EXPECT_TRUE(again.reused);
    // Resumed without credentials: still nobody.
    RawResult anonymous = RawGet(browser, port, "/api/state", &session);
    EXPECT_EQ(anonymous.status, 401) << anonymous.error;
    EXPECT_TRUE(anonymous.reused);
    SSL_SESSION_free(session);
    SSL_CTX_free(browser);

    // A viewer's certificate: the resumed session is still the viewer's.
    SSL_CTX* person = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(person, version);
    SSL_CTX_set_max_proto_version(person, version);
    ASSERT_EQ(SSL_CTX_load_verify_locations(person, (pki + "/ca.crt").c_str(), nullptr), 1);
    ASSERT_EQ(SSL_CTX_use_certificate_chain_file(person, viewer->cert.c_str()), 1);
    ASSERT_EQ(SSL_CTX_use_PrivateKey_file(person, viewer->key.c_str(), SSL_FILETYPE_PEM), 1);
    session = nullptr;
    RawResult full = RawGet(person, port, "/api/state", &session);
    EXPECT_EQ(full.status, 200) << full.error;
    RawResult resumed = RawGet(person, port, "/api/state", &session);
    EXPECT_EQ(resumed.status, 200) << resumed.error;
    EXPECT_TRUE(resumed.reused);
    SSL_SESSION_free(session);
    SSL_CTX_free(person);
  }
}

}  // namespace
}  // namespace upkeep::controller

// Parsing nginx error-log lines into typed upstream errors.
#include <string>

#include "agent/proxy/nginx/nginx_driver.h"
#include "gtest/gtest.h"

namespace upkeep::agent {
namespace {

namespace v1 = upkeep::v1;

TEST(NginxErrorLog, ParsesUpstreamErrors) {
  v1::UpstreamErrorKind kind;
  std::string upstream;
  ASSERT_TRUE(ParseUpstreamErrorLine(
      "2026/11/24 20:00:00 [error] 12#12: *5 connect() failed (111: Connection refused) while "
      "connecting to upstream, client: 127.0.0.1, server: , request: \"GET /api/health "
      "HTTP/1.0\", upstream: \"http://[::1]:8002/health\", host: \"x\"",
      &kind, &upstream));
  EXPECT_EQ(kind, v1::UPSTREAM_ERROR_KIND_CONNECTION_REFUSED);
  EXPECT_EQ(upstream, "http://[::1]:8002/health");
  ASSERT_TRUE(ParseUpstreamErrorLine(
      "2026/11/24 20:00:00 [error] 12#12: *9 upstream timed out (110: Connection timed out) "
      "while reading response header from upstream, upstream: \"http://127.0.0.1:8002/\"",
      &kind, &upstream));
  EXPECT_EQ(kind, v1::UPSTREAM_ERROR_KIND_TIMED_OUT);
  ASSERT_TRUE(ParseUpstreamErrorLine(
      "2026/11/24 20:00:00 [error] 12#12: *3 no live upstreams while connecting to upstream, "
      "upstream: \"http://backend/health\"",
      &kind, &upstream));
  EXPECT_EQ(kind, v1::UPSTREAM_ERROR_KIND_NO_LIVE_UPSTREAMS);
  ASSERT_TRUE(ParseUpstreamErrorLine(
      "2026/11/24 20:00:00 [emerg] 1#1: host not found in upstream \"backend-aws:8002\" in "
      "/etc/nginx/conf.d/x.conf:3",
      &kind, &upstream));
  EXPECT_EQ(kind, v1::UPSTREAM_ERROR_KIND_HOST_NOT_FOUND);
  EXPECT_EQ(upstream, "backend-aws:8002");
  EXPECT_FALSE(ParseUpstreamErrorLine("2026/11/24 20:00:00 [notice] 1#1: signal process started",
                                      &kind, &upstream));
}

TEST(NginxErrorLog, ClassifiesClosedAndResetUpstreamConnections) {
  v1::UpstreamErrorKind kind;
  std::string upstream;
  ASSERT_TRUE(ParseUpstreamErrorLine(
      "2026/11/25 19:00:00 [error] 7#7: *41 upstream prematurely closed connection while reading "
      "response header from upstream, client: 127.0.0.1, server: , request: \"GET /api/ "
      "HTTP/1.1\", upstream: \"http://127.0.0.1:8002/\", host: \"x\"",
      &kind, &upstream));
  EXPECT_EQ(kind, v1::UPSTREAM_ERROR_KIND_PREMATURELY_CLOSED);
  EXPECT_EQ(upstream, "http://127.0.0.1:8002/");
  ASSERT_TRUE(ParseUpstreamErrorLine(
      "2026/11/25 19:00:00 [error] 7#7: *42 recv() failed (104: Connection reset by peer) while "
      "reading response header from upstream, client: 127.0.0.1, server: , request: \"GET / "
      "HTTP/1.1\", upstream: \"http://172.18.0.3:8002/\", host: \"x\"",
      &kind, &upstream));
  EXPECT_EQ(kind, v1::UPSTREAM_ERROR_KIND_CONNECTION_RESET);
  EXPECT_EQ(upstream, "http://172.18.0.3:8002/");
  // A client that resets its own connection is not an upstream error.
  EXPECT_FALSE(ParseUpstreamErrorLine(
      "2026/11/25 19:00:00 [info] 7#7: *43 recv() failed (104: Connection reset by peer) while "
      "waiting for request, client: 127.0.0.1, server: 0.0.0.0:80",
      &kind, &upstream));
}

}  // namespace
}  // namespace upkeep::agent

#include "tests/support/net.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "tests/support/wait.h"

namespace upkeep::testing {
namespace {

int Connect(const std::string& host, int port, absl::Duration timeout) {
  const bool v6 = host.find(':') != std::string::npos;
  const int fd = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int rc;
  if (v6) {
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(port);
    ::inet_pton(AF_INET6, host.c_str(), &a.sin6_addr);
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  } else {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    ::inet_pton(AF_INET, host.c_str(), &a.sin_addr);
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  }
  if (rc != 0 && errno != EINPROGRESS) {
    ::close(fd);
    return -1;
  }
  pollfd p{fd, POLLOUT, 0};
  if (::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) != 1) {
    ::close(fd);
    return -1;
  }
  int err = 0;
  socklen_t len = sizeof(err);
  ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

namespace {

bool BindableOnLoopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  // No SO_REUSEADDR: a port with any socket on it, even one in TIME_WAIT, is not handed out.
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

int FreePort() {
  static absl::Mutex mu(absl::kConstInit);
  static std::set<int>* given = new std::set<int>();
  static std::mt19937* rng = new std::mt19937(std::random_device{}() ^ ::getpid());
  std::uniform_int_distribution<int> pick(kFreePortMin, kFreePortMax - 1);
  absl::MutexLock lock(&mu);
  for (int attempt = 0; attempt < 10000; ++attempt) {
    const int port = pick(*rng);
    if (given->count(port) > 0 || !BindableOnLoopback(port)) continue;
    given->insert(port);
    return port;
  }
  std::fprintf(stderr, "FreePort: no free port in [%d, %d) after 10000 tries\n", kFreePortMin,
               kFreePortMax);
  std::abort();
}

bool CanConnect(const std::string& host, int port) {
  const int fd = Connect(host, port, absl::Milliseconds(500));
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

bool WaitForPort(const std::string& host, int port, absl::Duration timeout) {
  return WaitFor([&] { return CanConnect(host, port); }, timeout);
}

int HttpGetStatus(const std::string& host, int port, const std::string& path,
                  absl::Duration timeout, std::string* body) {
  const absl::Time deadline = absl::Now() + timeout;
  const int fd = Connect(host, port, timeout);
  if (fd < 0) return -1;
  const std::string req = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", host, "\r\n\r\n");
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return -1;
  }
  std::string resp;
  char buf[4096];
  while (true) {
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) != 1) break;
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    resp.append(buf, n);
  }
  ::close(fd);
  // "HTTP/1.1 200 OK"
  const size_t sp = resp.find(' ');
  if (sp == std::string::npos || resp.size() < sp + 4) return -1;
  int code = 0;
  if (!absl::SimpleAtoi(resp.substr(sp + 1, 3), &code)) return -1;
  if (body != nullptr) {
    const size_t hdr_end = resp.find("\r\n\r\n");
    *body = hdr_end == std::string::npos ? "" : resp.substr(hdr_end + 4);
  }
  return code;
}

}  // namespace upkeep::testing

#include "tests/support/etcd/tcp_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace upkeep::testing {

absl::StatusOr<std::unique_ptr<TcpProxy>> TcpProxy::Start(const std::string& target) {
  std::unique_ptr<TcpProxy> p(new TcpProxy());
  const size_t colon = target.rfind(':');
  if (colon == std::string::npos || !absl::SimpleAtoi(target.substr(colon + 1), &p->target_port_)) {
    return absl::InvalidArgumentError("target is not 127.0.0.1:PORT: " + target);
  }
  p->listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(p->listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(p->listen_fd_, 64) != 0) {
    return absl::InternalError(absl::StrCat("proxy listen: ", std::strerror(errno)));
  }
  socklen_t len = sizeof addr;
  ::getsockname(p->listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  p->port_ = ntohs(addr.sin_port);
  p->acceptor_ = std::thread([raw = p.get()] { raw->AcceptLoop(); });
  return p;
}

std::string TcpProxy::address() const { return absl::StrCat("127.0.0.1:", port_); }

void TcpProxy::AcceptLoop() {
  while (true) {
    const int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR) continue;
      return;  // the listener was shut down
    }
    const int u = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(target_port_);
    if (::connect(u, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(c);
      ::close(u);
      continue;
    }
    absl::MutexLock lock(&mu_);
    if (cut_) {
      ::close(c);
      ::close(u);
      return;
    }
    fds_.push_back(c);
    fds_.push_back(u);
    threads_.emplace_back([this, c, u] { Pump(c, u); });
    threads_.emplace_back([this, c, u] { Pump(u, c); });
  }
}

void TcpProxy::Pump(int from, int to) {
  char buf[16384];
  while (true) {
    const ssize_t n = ::read(from, buf, sizeof buf);
    if (n <= 0) break;
    ssize_t off = 0;
    while (off < n) {
      const ssize_t w = ::send(to, buf + off, n - off, MSG_NOSIGNAL);
      if (w <= 0) return;
      off += w;
    }
  }
  ::shutdown(to, SHUT_WR);
}

void TcpProxy::Cut() {
  absl::MutexLock lock(&mu_);
  if (cut_) return;
  cut_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
}

TcpProxy::~TcpProxy() {
  Cut();
  if (acceptor_.joinable()) acceptor_.join();
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    threads.swap(threads_);
  }
  for (auto& t : threads) t.join();
  absl::MutexLock lock(&mu_);
  for (int fd : fds_) ::close(fd);
  ::close(listen_fd_);
}

}  // namespace upkeep::testing

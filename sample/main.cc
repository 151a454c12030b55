// upkeep-sample-service: the backend, frontend and database of every test and of the demo.
// Static (raw POSIX sockets and threads only) so that it can be a one-file container image.
//
//   upkeep-sample-service --port N [--address A] [--name NAME] [--unhealthy]
//                         [--start-delay DUR] [--exit-after DUR] [--require HOST:PORT]
//                         [--data-dir DIR]
//   upkeep-sample-service --check http://HOST:PORT/PATH
//       exits 0 when the GET answers 2xx within 2s, else 1 (a HEALTHCHECK for the image)
//
// GET /            200 "NAME ok"
// GET /health      200 {"status":"ok"}, or 500 when unhealthy (or a --require peer is down)
// GET /fault/unhealthy | /fault/healthy | /fault/hang | /fault/slow?ms=N | /fault/crash |
//     /fault/exit?code=N | /fault/drop-proxied?mode=close|reset
//     drop-proxied: from now on HTTP/1.0 requests (what nginx sends upstream by default) are
//     read and then the connection is closed unanswered (close) or reset (reset), as an
//     upstream that restarted under nginx's connections does; HTTP/1.1 ones (direct probes,
//     curl) and /fault/ requests are answered. /fault/healthy ends it.
// SIGUSR1 -> unhealthy, SIGUSR2 -> healthy, SIGTERM -> exit 0. One log line per request.
// --data-dir: the service keeps its state in DIR/NAME.state, saved (written to a new file,
// then renamed over the old one) when it starts and on every request, as a database
// checkpoints. A save that fails (a full disk: "No space left on device") is logged and the
// service exits 1, at start or while it runs.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <string>
#include <thread>

namespace {

std::atomic<bool> g_unhealthy{false};
std::atomic<bool> g_hung{false};
std::atomic<int> g_slow_ms{0};
std::atomic<int> g_drop_proxied{0};  // 0: no; 1: close unanswered; 2: reset
std::string g_name = "sample";
std::string g_require_host;
int g_require_port = 0;
std::mutex g_log_mu;
std::string g_data_dir;  // empty: no state kept
std::mutex g_state_mu;
long g_requests = 0;

void OnSignal(int sig) {
  if (sig == SIGUSR1) g_unhealthy = true;
  if (sig == SIGUSR2) g_unhealthy = false;
  if (sig == SIGTERM || sig == SIGINT) _exit(0);
}

// "500ms", "2s", "1m" -> milliseconds; -1 when malformed.
long ParseDurationMs(const std::string& s) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  const std::string unit = end;
  if (end == s.c_str() || v < 0) return -1;
  if (unit == "ms") return static_cast<long>(v);
  if (unit == "s" || unit.empty()) return static_cast<long>(v * 1000);
  if (unit == "m") return static_cast<long>(v * 60000);
  return -1;
}

void Log(const std::string& line) {
  std::lock_guard<std::mutex> lock(g_log_mu);
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  std::printf("%ld.%03ld %s %s\n", static_cast<long>(ts.tv_sec), ts.tv_nsec / 1000000,
              g_name.c_str(), line.c_str());
  std::fflush(stdout);
}

// Saves the state file; on failure logs why and exits 1 (the service cannot run without it).
void SaveState() {
  if (g_data_dir.empty()) return;
  std::lock_guard<std::mutex> lock(g_state_mu);
  const std::string path = g_data_dir + "/" + g_name + ".state";
  const std::string tmp = path + ".tmp";
  const std::string text = g_name + " requests " + std::to_string(g_requests++) + "\n";
  const char* what = "open";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  bool ok = fd >= 0;
  if (ok) {
    what = "write";
    ok = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    const int e = errno;
    if (close(fd) != 0 && ok) {
      what = "close";
      ok = false;
    } else {
      errno = e;
    }
  }
  if (ok) {
    what = "rename";
    ok = rename(tmp.c_str(), path.c_str()) == 0;
  }
  if (ok) return;
  const int e = errno;
  unlink(tmp.c_str());
  Log(std::string("cannot save state: ") + what + " " + tmp + ": " + std::strerror(e) +
      ": exiting 1");
  _exit(1);
}

bool PeerUp(const std::string& host, int port) {
  const bool v6 = host.find(':') != std::string::npos;
  const int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  int rc;
  if (v6) {
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(port);
    inet_pton(AF_INET6, host.c_str(), &a.sin6_addr);
    rc = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  } else {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    inet_pton(AF_INET, host.c_str(), &a.sin_addr);
    rc = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  }
  bool up = rc == 0;
  if (rc != 0 && errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    int err = 0;
    socklen_t len = sizeof(err);
    up = poll(&p, 1, 300) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
  }
  close(fd);
  return up;
}

void Respond(int fd, int code, const std::string& body) {
  const char* reason = code == 200 ? "OK" : code == 404 ? "Not Found" : "Internal Server Error";
  char head[256];
  const int n = std::snprintf(head, sizeof(head),
                              "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: "
                              "%zu\r\nConnection: close\r\n\r\n",
                              code, reason, body.size());
  std::string out(head, n);
  out += body;
  size_t off = 0;
  while (off < out.size()) {
    const ssize_t w = send(fd, out.data() + off, out.size() - off, MSG_NOSIGNAL);
    if (w <= 0) break;
    off += w;
  }
}

int QueryInt(const std::string& target, const std::string& key, int fallback) {
  const size_t q = target.find(key + "=");
  if (q == std::string::npos) return fallback;
  return std::atoi(target.c_str() + q + key.size() + 1);
}

void Serve(int fd) {
  std::string req;
  char buf[4096];
  while (req.find("\r\n\r\n") == std::string::npos && req.size() < 65536) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 10000) != 1) break;
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    req.append(buf, n);
  }
  const size_t sp1 = req.find(' ');
  const size_t sp2 = sp1 == std::string::npos ? sp1 : req.find(' ', sp1 + 1);
  if (sp2 == std::string::npos) {
    close(fd);
    return;
  }
  const std::string method = req.substr(0, sp1);
  const std::string target = req.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string path = target.substr(0, target.find('?'));
  if (g_hung) {
    Log(method + " " + target + " (hung: no answer)");
    // Hold the connection open and never answer, like a deadlocked server.
    pollfd p{fd, POLLIN, 0};
    while (poll(&p, 1, 1000) == 0 || (p.revents & POLLIN && recv(fd, buf, sizeof(buf), 0) > 0)) {
    }
    close(fd);
    return;
  }
  if (const int drop = g_drop_proxied.load();
      drop != 0 && req.compare(sp2 + 1, 8, "HTTP/1.0") == 0 && path.rfind("/fault/", 0) != 0) {
    Log(method + " " + target + (drop == 2 ? " (reset)" : " (closed unanswered)"));
    if (drop == 2) {
      linger l{1, 0};  // close() sends an RST
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    close(fd);
    return;
  }
  if (const int ms = g_slow_ms.load(); ms > 0) usleep(static_cast<useconds_t>(ms) * 1000);
  if (path.rfind("/fault/", 0) != 0) SaveState();
  int code = 200;
  std::string body = g_name + " ok\n";
  if (path == "/health") {
    const bool peer_down = g_require_port > 0 && !PeerUp(g_require_host, g_require_port);
    if (g_unhealthy || peer_down) {
      code = 500;
      body = peer_down ? "{\"status\":\"dependency down\"}\n" : "{\"status\":\"unhealthy\"}\n";
    } else {
      body = "{\"status\":\"ok\"}\n";
    }
  } else if (path == "/fault/unhealthy") {
    g_unhealthy = true;
    body = "unhealthy\n";
  } else if (path == "/fault/healthy") {
    g_unhealthy = false;
    g_slow_ms = 0;
    g_drop_proxied = 0;
    body = "healthy\n";
  } else if (path == "/fault/hang") {
    g_hung = true;
    body = "hanging from now on\n";
  } else if (path == "/fault/slow") {
    g_slow_ms = QueryInt(target, "ms", 1000);
    body = "slow\n";
  } else if (path == "/fault/drop-proxied") {
    g_drop_proxied = target.find("mode=reset") != std::string::npos ? 2 : 1;
    body = "dropping proxied requests\n";
  } else if (path == "/fault/crash") {
    Log(method + " " + target + " -> crashing");
    Respond(fd, 200, "crashing\n");
    close(fd);
    abort();
  } else if (path == "/fault/exit") {
    const int exit_code = QueryInt(target, "code", 0);
    Log(method + " " + target + " -> exit " + std::to_string(exit_code));
    Respond(fd, 200, "exiting\n");
    close(fd);
    _exit(exit_code);
  } else if (path != "/" && path.rfind("/fault", 0) == 0) {
    code = 404;
    body = "no such fault\n";
  }
  Log(method + " " + target + " " + std::to_string(code));
  Respond(fd, code, body);
  close(fd);
}

int Listen(const std::string& address, int port) {
  const bool v6 = address.find(':') != std::string::npos;
  const int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  int rc;
  if (v6) {
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(port);
    if (inet_pton(AF_INET6, address.c_str(), &a.sin6_addr) != 1) return -1;
    rc = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  } else {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    if (inet_pton(AF_INET, address.c_str(), &a.sin_addr) != 1) return -1;
    rc = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  }
  if (rc != 0 || listen(fd, 512) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// --check: a one-shot HTTP GET for Docker's HEALTHCHECK (the image has no curl).
int Check(const std::string& url) {
  std::string rest = url;
  if (rest.rfind("http://", 0) == 0) rest = rest.substr(7);
  const size_t slash = rest.find('/');
  const std::string hostport = rest.substr(0, slash);
  const std::string path = slash == std::string::npos ? "/" : rest.substr(slash);
  std::string host = hostport;
  int port = 80;
  if (!hostport.empty() && hostport[0] == '[') {
    const size_t close_b = hostport.find(']');
    if (close_b == std::string::npos) return 1;
    host = hostport.substr(1, close_b - 1);
    if (close_b + 1 < hostport.size() && hostport[close_b + 1] == ':') {
      port = std::atoi(hostport.c_str() + close_b + 2);
    }
  } else if (const size_t colon = hostport.rfind(':'); colon != std::string::npos) {
    host = hostport.substr(0, colon);
    port = std::atoi(hostport.c_str() + colon + 1);
  }
  const bool v6 = host.find(':') != std::string::npos;
  const int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 1;
  timeval tv{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  int rc;
  if (v6) {
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(port);
    if (inet_pton(AF_INET6, host.c_str(), &a.sin6_addr) != 1) return 1;
    rc = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  } else {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    if (inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) return 1;
    rc = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  }
  if (rc != 0) {
    close(fd);
    return 1;
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: " + host + "\r\n\r\n";
  if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    close(fd);
    return 1;
  }
  char buf[64];
  const ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
  close(fd);
  if (n < 12) return 1;
  buf[n] = 0;
  // "HTTP/1.1 200 ..."
  return buf[9] == '2' ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0;
  std::string address = "127.0.0.1";
  long start_delay_ms = 0;
  long exit_after_ms = -1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "upkeep-sample-service: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--check") return Check(next());
    if (a == "--port")
      port = std::atoi(next().c_str());
    else if (a == "--address")
      address = next();
    else if (a == "--name")
      g_name = next();
    else if (a == "--unhealthy")
      g_unhealthy = true;
    else if (a == "--start-delay")
      start_delay_ms = ParseDurationMs(next());
    else if (a == "--exit-after")
      exit_after_ms = ParseDurationMs(next());
    else if (a == "--data-dir")
      g_data_dir = next();
    else if (a == "--require") {
      const std::string hp = next();
      const size_t colon = hp.rfind(':');
      if (colon == std::string::npos) {
        std::fprintf(stderr, "upkeep-sample-service: --require wants HOST:PORT\n");
        return 2;
      }
      g_require_host = hp.substr(0, colon);
      g_require_port = std::atoi(hp.c_str() + colon + 1);
    } else {
      std::fprintf(stderr, "upkeep-sample-service: unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  if (port <= 0 || port > 65535 || start_delay_ms < 0) {
    std::fprintf(stderr,
                 "usage: upkeep-sample-service --port N [--address A] [--name NAME] "
                 "[--unhealthy] [--start-delay DUR] [--exit-after DUR] "
                 "[--require HOST:PORT] [--data-dir DIR]\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  signal(SIGUSR1, OnSignal);
  signal(SIGUSR2, OnSignal);
  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);
  if (start_delay_ms > 0) usleep(static_cast<useconds_t>(start_delay_ms) * 1000);
  if (!g_data_dir.empty()) {
    mkdir(g_data_dir.c_str(), 0755);  // EEXIST is fine; a real failure shows in the save
    SaveState();
  }
  const int lfd = Listen(address, port);
  if (lfd < 0) {
    std::fprintf(stderr, "upkeep-sample-service: cannot listen on %s:%d: %s\n", address.c_str(),
                 port, std::strerror(errno));
    return 1;
  }
  Log("listening on " + address + ":" + std::to_string(port));
  if (exit_after_ms >= 0) {
    std::thread([exit_after_ms] {
      usleep(static_cast<useconds_t>(exit_after_ms) * 1000);
      Log("exit-after elapsed: exiting 1");
      _exit(1);
    }).detach();  // the process ends with it
  }
  while (true) {
    const int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      usleep(1000);
      continue;
    }
    std::thread(Serve, fd).detach();  // one short-lived thread per connection
  }
}

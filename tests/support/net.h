// Loopback helpers for tests.
#ifndef UPKEEP_TESTS_SUPPORT_NET_H_
#define UPKEEP_TESTS_SUPPORT_NET_H_

#include <string>

#include "absl/time/time.h"

namespace upkeep::testing {

// Where FreePort picks from: below the kernel's ephemeral range (ip_local_port_range,
// 32768-60999 by default), so no outgoing connection takes the port as its local port (nor
// holds it for TIME_WAIT's 60 s) between FreePort and the bind of whatever was given it — a
// listener's bind fails then, even with SO_REUSEADDR — and bind(0) callers never get it.
inline constexpr int kFreePortMin = 20000;
inline constexpr int kFreePortMax = 32000;
// A TCP port on 127.0.0.1, random in [kFreePortMin, kFreePortMax), bindable a moment ago (no
// socket on it, not even in TIME_WAIT), never the same twice in one process.
int FreePort();
// True when a TCP connect to host:port succeeds.
bool CanConnect(const std::string& host, int port);
// Waits until host:port accepts connections.
bool WaitForPort(const std::string& host, int port, absl::Duration timeout = absl::Seconds(10));
// A tiny blocking HTTP/1.0 GET; returns the status code, or -1 on a transport error.
int HttpGetStatus(const std::string& host, int port, const std::string& path,
                  absl::Duration timeout = absl::Seconds(5), std::string* body = nullptr);

}  // namespace upkeep::testing

#endif  // UPKEEP_TESTS_SUPPORT_NET_H_

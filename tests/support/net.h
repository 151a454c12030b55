// Loopback helpers for tests.
#ifndef UPKEEP_TESTS_SUPPORT_NET_H_
#define UPKEEP_TESTS_SUPPORT_NET_H_

#include <string>

#include "absl/time/time.h"

namespace upkeep::testing {

// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close).
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

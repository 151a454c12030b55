// FreePort: ports outside the kernel's ephemeral range, never the same twice, bindable.
#include "tests/support/net.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <set>

#include "gtest/gtest.h"

namespace upkeep::testing {
namespace {

// A port from bind(0) is in the ephemeral range, which outgoing connections share: one of
// them (or its TIME_WAIT) could take it before the service given it binds it.
TEST(FreePort, HandsOutPortsOutsideTheEphemeralRangeNeverTwiceAndBindable) {
  int low = 32768, high = 60999;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> low >> high;
  std::set<int> seen;
  for (int i = 0; i < 500; ++i) {
    const int port = FreePort();
    EXPECT_TRUE(port < low || port > high) << port << " is in the ephemeral range";
    EXPECT_TRUE(seen.insert(port).second) << port << " was handed out twice";
  }
  const int port = FreePort();
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << port;
  EXPECT_EQ(::listen(fd, 1), 0);
  EXPECT_TRUE(CanConnect("127.0.0.1", port));
  ::close(fd);
}

}  // namespace
}  // namespace upkeep::testing

// Placeholder: replaced by the daemon implementation.
#include "agent/daemon/daemon.h"

#include <cstdio>

namespace upkeep::agent {

int RunDaemon(int, char**) {
  std::fprintf(stderr, "upkeep-agent: daemon mode not implemented yet\n");
  return 2;
}

}  // namespace upkeep::agent

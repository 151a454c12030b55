// Placeholder: replaced by the agent implementation.
#include "agent/commands.h"

#include <cstdio>

namespace upkeep::agent {

int RunObserveCommand(int, char**) {
  std::fprintf(stderr, "upkeep-agent observe: not implemented yet\n");
  return 2;
}

int RunActCommand(int, char**) {
  std::fprintf(stderr, "upkeep-agent act: not implemented yet\n");
  return 2;
}

}  // namespace upkeep::agent

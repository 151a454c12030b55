// Placeholder: replaced by the implementation.
#include <cstdio>

#include "cli/commands.h"

namespace upkeep::cli {

int RunFleetCommand(int, char** argv) {
  std::fprintf(stderr, "upkeepctl %s: not implemented yet\n", argv[0]);
  return 2;
}

}  // namespace upkeep::cli

#include "tests/support/files.h"

#include <fstream>
#include <sstream>

namespace upkeep::testing {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace upkeep::testing

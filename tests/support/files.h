// Reading a whole file in a test or fixture (a daemon's log, a command's output, a PEM file):
// one helper, where each fixture had its own copy.
#ifndef UPKEEP_TESTS_SUPPORT_FILES_H_
#define UPKEEP_TESTS_SUPPORT_FILES_H_

#include <string>

namespace upkeep::testing {

// The whole of `path`; empty when it cannot be read (a log not written yet reads as nothing).
std::string ReadFile(const std::string& path);

}  // namespace upkeep::testing

#endif  // UPKEEP_TESTS_SUPPORT_FILES_H_

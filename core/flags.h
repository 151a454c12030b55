// Command lines: the daemons take abseil flags, and people type `--tls-cert` as the docs and
// other tools do. NormalizeFlagDashes rewrites `--tls-cert[=v]` to `--tls_cert[=v]` in place
// (the name only, never the value) before absl::ParseCommandLine.
#ifndef UPKEEP_CORE_FLAGS_H_
#define UPKEEP_CORE_FLAGS_H_

#include <string>

namespace upkeep {

void NormalizeFlagDashes(int argc, char** argv);

// Whether a listen address ("127.0.0.1:7400", "[::1]:7400", "localhost:0", "unix:/p") is
// reachable only from this host.
bool IsLoopbackAddress(const std::string& address);

}  // namespace upkeep

#endif  // UPKEEP_CORE_FLAGS_H_

// upkeepctl validate -f PATH: check manifests offline.
#include <cstdio>
#include <cstring>
#include <string>

#include "cli/commands.h"
#include "core/manifest/loader.h"

namespace upkeep::cli {

int RunValidate(int argc, char** argv) {
  std::string path;
  for (int i = 1; i < argc; ++i) {
    if ((std::strcmp(argv[i], "-f") == 0 || std::strcmp(argv[i], "--filename") == 0) &&
        i + 1 < argc) {
      path = argv[++i];
    } else {
      std::fprintf(stderr, "upkeepctl validate: unexpected argument %s\n", argv[i]);
      return 2;
    }
  }
  if (path.empty()) {
    std::fprintf(stderr, "usage: upkeepctl validate -f FILE|DIR\n");
    return 2;
  }
  const manifest::LoadResult result = manifest::LoadPath(path);
  if (!result.ok()) {
    for (const auto& e : result.errors) std::fprintf(stderr, "%s\n", e.ToString().c_str());
    std::fprintf(stderr, "%zu error(s)\n", result.errors.size());
    return 1;
  }
  for (const auto& s : result.stacks) {
    std::printf("%s: stack %s OK (%d services, %d routes, hosts: %d)\n",
                s.metadata().source().c_str(), s.metadata().name().c_str(),
                s.spec().services_size(), s.spec().proxy().routes_size(), s.spec().hosts_size());
  }
  return 0;
}

}  // namespace upkeep::cli

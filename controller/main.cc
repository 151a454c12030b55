// upkeep-controller: placeholder main until the controller lands.
#include "core/log.h"

int main() {
  upkeep::InitLogging("controller", false, spdlog::level::info);
  UPKEEP_LOG(error, "not_implemented", {});
  return 2;
}

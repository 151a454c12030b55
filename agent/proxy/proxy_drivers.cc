#include "agent/proxy/proxy_drivers.h"

#include <set>

namespace upkeep::agent {

std::shared_ptr<ProxyDriver> ProxyDrivers::For(const upkeep::v1::Stack& stack) {
  if (!stack.spec().has_proxy()) return nullptr;
  const std::string& name = stack.metadata().name();
  const std::string spec = stack.spec().proxy().SerializeAsString();
  absl::MutexLock lock(&mu_);
  auto& driver = drivers_[name];
  if (driver == nullptr) {
    driver = factory_(stack.spec().proxy());
    specs_[name] = spec;
  } else if (specs_[name] != spec) {
    driver->SetSpec(stack.spec().proxy());
    specs_[name] = spec;
  }
  return driver;
}

void ProxyDrivers::Retain(const std::vector<std::string>& stacks) {
  const std::set<std::string> keep(stacks.begin(), stacks.end());
  std::vector<std::shared_ptr<ProxyDriver>> dropped;  // destroyed outside the lock
  {
    absl::MutexLock lock(&mu_);
    for (auto it = drivers_.begin(); it != drivers_.end();) {
      if (keep.count(it->first)) {
        ++it;
        continue;
      }
      dropped.push_back(std::move(it->second));
      specs_.erase(it->first);
      it = drivers_.erase(it);
    }
  }
}

}  // namespace upkeep::agent

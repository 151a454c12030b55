#include "agent/runtime/registry.h"

#include "absl/strings/str_cat.h"

namespace upkeep::agent {

namespace v1 = upkeep::v1;

void RuntimeRegistry::Register(v1::RuntimeKind kind, Scope scope, Factory factory) {
  absl::MutexLock lock(&mu_);
  kinds_[kind] = Kind{scope, std::move(factory)};
}

absl::StatusOr<Runtime*> RuntimeRegistry::Get(const v1::Stack& stack) {
  const v1::RuntimeKind kind = stack.spec().runtime();
  absl::MutexLock lock(&mu_);
  auto k = kinds_.find(kind);
  if (k == kinds_.end()) {
    return absl::UnimplementedError(
        absl::StrCat("no runtime for kind ", v1::RuntimeKind_Name(kind), " on this agent"));
  }
  const std::string key = k->second.scope == Scope::kStack ? stack.metadata().name() : "";
  auto& slot = runtimes_[{kind, key}];
  if (slot == nullptr) {
    absl::StatusOr<std::unique_ptr<Runtime>> rt = k->second.factory(key);
    if (!rt.ok()) {
      runtimes_.erase({kind, key});
      return rt.status();
    }
    slot = std::move(*rt);
  }
  return slot.get();
}

}  // namespace upkeep::agent

// RuntimeRegistry: the runtimes of this host, by runtime kind. Owned by the daemon (or by a
// one-shot command), created and filled by `main` before anything uses it, and destroyed after
// everything that uses it: the observer and the executor keep the Runtime* it hands out for as
// long as they live. A kind is either host-wide (one runtime for every stack: a Docker daemon)
// or per stack (the process runtime keeps each stack's state in its own directory).
// Thread-safe.
#ifndef UPKEEP_AGENT_RUNTIME_REGISTRY_H_
#define UPKEEP_AGENT_RUNTIME_REGISTRY_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agent/runtime/runtime.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::agent {

class RuntimeRegistry {
 public:
  enum class Scope { kHost, kStack };
  // Creates the runtime; `stack` is the stack's name for kStack kinds, "" for kHost kinds.
  using Factory = std::function<absl::StatusOr<std::unique_ptr<Runtime>>(const std::string& stack)>;

  RuntimeRegistry() = default;
  RuntimeRegistry(const RuntimeRegistry&) = delete;
  RuntimeRegistry& operator=(const RuntimeRegistry&) = delete;

  void Register(upkeep::v1::RuntimeKind kind, Scope scope, Factory factory);

  // The runtime for `stack` (created on first use; valid until the registry is destroyed), or
  // why there is none (kind not registered, runtime could not be created).
  absl::StatusOr<Runtime*> Get(const upkeep::v1::Stack& stack);

 private:
  struct Kind {
    Scope scope;
    Factory factory;
  };
  absl::Mutex mu_;
  std::map<int, Kind> kinds_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<int, std::string>, std::unique_ptr<Runtime>> runtimes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_RUNTIME_REGISTRY_H_

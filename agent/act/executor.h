// Executor: runs typed actions on targets its desired state names, at most once per action id
// (a journal in the data directory survives agent restarts; a repeated id returns the stored
// result with replayed=true). Every action honours its deadline and returns an ActionResult
// with an output excerpt. Services are acted on through the stack's runtime (RuntimeRegistry),
// the proxy through the stack's ProxyDriver (ProxyDrivers), held for the whole action, so a
// desired state that drops the stack meanwhile cannot pull the driver from under it.
// Thread-safe; SetDesired never blocks; Execute blocks until the action finishes (call it from
// a worker thread, never from a gRPC reaction).
#ifndef UPKEEP_AGENT_ACT_EXECUTOR_H_
#define UPKEEP_AGENT_ACT_EXECUTOR_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "upkeep/v1/action.pb.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::agent {

class RuntimeRegistry;
class ProxyDrivers;

class Executor {
 public:
  // `runtimes` and `proxies` are not owned and must outlive the executor. `after_action`, when
  // set, is called after every executed action (the daemon asks the observer for fresh
  // evidence); it must not block.
  static absl::StatusOr<std::unique_ptr<Executor>> Create(const std::string& data_dir,
                                                          RuntimeRegistry* runtimes,
                                                          ProxyDrivers* proxies,
                                                          std::function<void()> after_action = {});
  virtual ~Executor() = default;

  virtual void SetDesired(const std::vector<upkeep::v1::Stack>& stacks) = 0;
  virtual upkeep::v1::ActionResult Execute(const upkeep::v1::Action& action) = 0;
  // The results the journal holds, oldest first: the agent's own action history when it
  // decides alone (agent/autonomy).
  virtual std::vector<upkeep::v1::ActionResult> Finished() = 0;
};

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_ACT_EXECUTOR_H_

// Executor: runs typed actions on targets its desired state names, at most once per action id
// (a journal in the data directory survives agent restarts; a repeated id returns the stored
// result with replayed=true). Every action honours its deadline and returns an ActionResult
// with an output excerpt. Thread-safe; Execute blocks until the action finishes.
#ifndef UPKEEP_AGENT_ACT_EXECUTOR_H_
#define UPKEEP_AGENT_ACT_EXECUTOR_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "upkeep/v1/action.pb.h"
#include "upkeep/v1/stack.pb.h"

namespace upkeep::agent {

class StackObserver;

class Executor {
 public:
  // `observer` provides the runtimes (and is told about proxy reloads); not owned.
  static absl::StatusOr<std::unique_ptr<Executor>> Create(const std::string& data_dir,
                                                          StackObserver* observer);
  virtual ~Executor() = default;

  virtual void SetDesired(const std::vector<upkeep::v1::Stack>& stacks) = 0;
  virtual upkeep::v1::ActionResult Execute(const upkeep::v1::Action& action) = 0;
};

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_ACT_EXECUTOR_H_

// Journal: what the agent must not forget across its own restarts — which action ids it has
// started and finished, with their results — so an id is executed at most once.
//
// On-disk layout: DATA/journal, append-only text, one record per line, each record written
// with one write(2) and fdatasync'd before the call returns:
//   S <id>\n                         execution started
//   F <id> <base64(ActionResult)>\n  execution finished, with its result
// A record counts only once its '\n' is on disk.
//
// Recovery rule (Recover(), once, before any other call): read every complete line; an id with
// S but no F was interrupted by an agent crash (it is reported, never run again). Bytes after
// the last '\n' are a record torn by a crash mid-append: they are cut off (the file is
// truncated to its last complete line and synced) so the next record starts on a line of its
// own instead of being glued to the torn one and lost at the following recovery. A complete
// line that does not parse is skipped. An append that fails half-way is cut off the same way
// at once. When the file holds more than kCompactAt records it is rewritten (temp file +
// rename) with the newest kKeep ids. Thread-safe.
#ifndef UPKEEP_AGENT_ACT_JOURNAL_H_
#define UPKEEP_AGENT_ACT_JOURNAL_H_

#include <sys/types.h>

#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "upkeep/v1/action.pb.h"

namespace upkeep::agent {

class Journal {
 public:
  static constexpr size_t kCompactAt = 8000;
  static constexpr size_t kKeep = 4000;

  explicit Journal(std::string path) : path_(std::move(path)) {}
  ~Journal();

  absl::Status Recover();

  enum class State { kUnknown, kStarted, kFinished };
  // The state of `id`, and its result when finished.
  State Lookup(const std::string& id, upkeep::v1::ActionResult* result);

  // Every finished result the journal holds, oldest first.
  std::vector<upkeep::v1::ActionResult> Finished();

  absl::Status MarkStarted(const std::string& id);
  absl::Status MarkFinished(const upkeep::v1::ActionResult& result);

 private:
  absl::Status Append(const std::string& line) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Compact() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  absl::Mutex mu_;
  int fd_ ABSL_GUARDED_BY(mu_) = -1;
  std::map<std::string, std::optional<upkeep::v1::ActionResult>> entries_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> order_ ABSL_GUARDED_BY(mu_);
  size_t records_ ABSL_GUARDED_BY(mu_) = 0;
  off_t size_ ABSL_GUARDED_BY(mu_) = 0;  // bytes of complete records in the file
};

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_ACT_JOURNAL_H_

// DesiredCache: the last desired state the controller sent this agent, kept on disk so that an
// agent that starts (or restarts) while it cannot reach the controller still knows what to
// keep healthy, and can decide on its own (agent/autonomy/local_decider.h).
//
// On-disk layout: DATA/desired.pb, one file, replaced atomically (written to desired.pb.tmp,
// fsync'd, renamed over desired.pb, directory fsync'd):
//   line 1: "upkeep-desired v1 <revision> <byte length> <sha256 of the payload, hex>\n"
//   then:   the payload, a serialized upkeep.v1.DesiredState of exactly that length.
//
// Recovery rule (Load()): a missing file is "nothing known" (nullopt). A file whose header does
// not parse, whose length differs, whose checksum differs or whose payload does not parse is
// torn or corrupt: Load() returns DATA_LOSS naming the file and what is wrong; the caller reports
// it and acts on nothing (it waits for the controller). A stale desired.pb.tmp is ignored.
// Thread-compatible: one owner (the agent client's supervisor thread).
#ifndef UPKEEP_AGENT_AUTONOMY_DESIRED_CACHE_H_
#define UPKEEP_AGENT_AUTONOMY_DESIRED_CACHE_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "upkeep/v1/agent_service.pb.h"

namespace upkeep::agent {

class DesiredCache {
 public:
  explicit DesiredCache(const std::string& data_dir);

  absl::Status Save(const upkeep::v1::DesiredState& desired);
  absl::StatusOr<std::optional<upkeep::v1::DesiredState>> Load() const;

  const std::string& path() const { return path_; }

 private:
  const std::string dir_;
  const std::string path_;
};

}  // namespace upkeep::agent

#endif  // UPKEEP_AGENT_AUTONOMY_DESIRED_CACHE_H_

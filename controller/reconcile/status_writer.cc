#include "controller/reconcile/status_writer.h"

#include "absl/strings/str_cat.h"
#include "core/log.h"

namespace upkeep::controller {

StatusWriter::StatusWriter(Store* store, Snapshot snapshot, Metrics* metrics, absl::Duration retry)
    : store_(store), snapshot_(std::move(snapshot)), metrics_(metrics), retry_(retry) {}

StatusWriter::~StatusWriter() { Stop(); }

void StatusWriter::Start() {
  absl::MutexLock lock(&mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Loop(); });
}

void StatusWriter::Stop() {
  std::thread t;
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    t.swap(thread_);
  }
  if (t.joinable()) t.join();
  if (absl::Status st = Flush(); !st.ok()) {
    UPKEEP_LOG(error, "store_failed",
               {{"what", "status"}, {"error", std::string(st.message())}, {"when", "stopping"}});
  }
}

void StatusWriter::MarkDirty(const std::string& name) {
  absl::MutexLock lock(&mu_);
  dirty_.insert(name);
}

size_t StatusWriter::Dirty() const {
  absl::MutexLock lock(&mu_);
  return dirty_.size();
}

absl::Status StatusWriter::SaveNow(const std::string& name) {
  absl::MutexLock write(&write_mu_);
  {
    absl::MutexLock lock(&mu_);
    dirty_.erase(name);  // written below, with what is current now
  }
  return Write({name});
}

absl::Status StatusWriter::Flush() {
  bool more = true;
  while (more) {
    if (absl::Status st = WriteBatch(&more); !st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::Status StatusWriter::WriteBatch(bool* more) {
  absl::MutexLock write(&write_mu_);
  std::vector<std::string> names;
  {
    absl::MutexLock lock(&mu_);
    auto end = dirty_.begin();
    for (size_t i = 0; i < kMaxBatch && end != dirty_.end(); ++i) ++end;
    names.assign(dirty_.begin(), end);
    dirty_.erase(dirty_.begin(), end);
    *more = !dirty_.empty();
  }
  if (names.empty()) return absl::OkStatus();
  return Write(std::move(names));
}

absl::Status StatusWriter::Write(std::vector<std::string> names) {
  const auto batch = snapshot_(names);
  if (batch.empty()) return absl::OkStatus();
  absl::Status st = store_->SaveStatuses(batch);
  if (!st.ok()) {
    // Kept dirty: the next write takes them again (with whatever status is current then).
    absl::MutexLock lock(&mu_);
    dirty_.insert(names.begin(), names.end());
    return st;
  }
  if (metrics_ != nullptr) {
    metrics_->Inc("upkeep_status_writes_total");
    metrics_->Inc("upkeep_status_saved_total", {}, static_cast<double>(batch.size()));
  }
  return absl::OkStatus();
}

void StatusWriter::Loop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &StatusWriter::HasWork));
      if (stop_) return;  // Stop() writes what is left
    }
    bool more = false;
    if (absl::Status st = WriteBatch(&more); !st.ok()) {
      UPKEEP_LOG(error, "store_failed",
                 {{"what", "status"},
                  {"error", std::string(st.message())},
                  {"retry_in", absl::FormatDuration(retry_)}});
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stop_), retry_);
      if (stop_) return;
    }
  }
}

}  // namespace upkeep::controller

#include "agent/act/journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace upkeep::agent {

Journal::~Journal() {
  absl::MutexLock lock(&mu_);
  if (fd_ >= 0) ::close(fd_);
}

absl::Status Journal::Recover() {
  absl::MutexLock lock(&mu_);
  entries_.clear();
  order_.clear();
  records_ = 0;
  std::string text;
  {
    std::ifstream in(path_, std::ios::binary);
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  // Only complete lines are records; a torn tail is cut off below.
  const size_t complete = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
  const bool torn = complete < text.size();
  text.resize(complete);
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() == 2 && f[0] == "S") {
      if (entries_.emplace(f[1], std::nullopt).second) order_.push_back(f[1]);
    } else if (f.size() == 3 && f[0] == "F") {
      std::string raw;
      upkeep::v1::ActionResult result;
      if (!absl::Base64Unescape(f[2], &raw) || !result.ParseFromString(raw)) continue;
      if (!entries_.count(f[1])) order_.push_back(f[1]);
      entries_[f[1]] = result;
    }
    // A complete line that does not parse (not written by us): skipped.
    ++records_;
  }
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd_ < 0) {
    return absl::InternalError(absl::StrCat("journal ", path_, ": ", std::strerror(errno)));
  }
  size_ = static_cast<off_t>(complete);
  if (torn) {
    if (::ftruncate(fd_, size_) != 0 || ::fdatasync(fd_) != 0) {
      return absl::InternalError(absl::StrCat(
          "journal ", path_, ": cannot cut off a torn record: ", std::strerror(errno)));
    }
  }
  return absl::OkStatus();
}

Journal::State Journal::Lookup(const std::string& id, upkeep::v1::ActionResult* result) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return State::kUnknown;
  if (!it->second.has_value()) return State::kStarted;
  if (result != nullptr) *result = *it->second;
  return State::kFinished;
}

std::vector<upkeep::v1::ActionResult> Journal::Finished() {
  absl::MutexLock lock(&mu_);
  std::vector<upkeep::v1::ActionResult> out;
  for (const auto& id : order_) {
    const auto& e = entries_[id];
    if (e.has_value()) out.push_back(*e);
  }
  return out;
}

absl::Status Journal::Append(const std::string& line) {
  if (fd_ < 0) return absl::FailedPreconditionError("journal not recovered");
  const ssize_t n = ::write(fd_, line.data(), line.size());
  if (n != static_cast<ssize_t>(line.size())) {
    const std::string why = n < 0 ? std::strerror(errno) : "short write";
    (void)!::ftruncate(fd_, size_);  // no torn record left behind for the next append
    return absl::InternalError(absl::StrCat("journal write: ", why));
  }
  if (::fdatasync(fd_) != 0) {
    return absl::InternalError(absl::StrCat("journal fsync: ", std::strerror(errno)));
  }
  size_ += n;
  if (++records_ > kCompactAt) return Compact();
  return absl::OkStatus();
}

absl::Status Journal::MarkStarted(const std::string& id) {
  absl::MutexLock lock(&mu_);
  if (entries_.emplace(id, std::nullopt).second) order_.push_back(id);
  return Append(absl::StrCat("S ", id, "\n"));
}

absl::Status Journal::MarkFinished(const upkeep::v1::ActionResult& result) {
  absl::MutexLock lock(&mu_);
  if (!entries_.count(result.id())) order_.push_back(result.id());
  entries_[result.id()] = result;
  return Append(
      absl::StrCat("F ", result.id(), " ", absl::Base64Escape(result.SerializeAsString()), "\n"));
}

absl::Status Journal::Compact() {
  while (order_.size() > kKeep) {
    entries_.erase(order_.front());
    order_.pop_front();
  }
  const std::string tmp = path_ + ".tmp";
  std::string text;
  for (const auto& id : order_) {
    const auto& e = entries_[id];
    if (e.has_value()) {
      absl::StrAppend(&text, "F ", id, " ", absl::Base64Escape(e->SerializeAsString()), "\n");
    } else {
      absl::StrAppend(&text, "S ", id, "\n");
    }
  }
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError("journal compaction: cannot write");
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                  ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path_.c_str()) != 0) {
    return absl::InternalError("journal compaction failed");
  }
  ::close(fd_);
  fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  records_ = order_.size();
  size_ = static_cast<off_t>(text.size());
  return absl::OkStatus();
}

}  // namespace upkeep::agent

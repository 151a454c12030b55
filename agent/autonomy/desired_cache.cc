#include "agent/autonomy/desired_cache.h"

#include <fcntl.h>
#include <openssl/sha.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace upkeep::agent {
namespace {

std::string Sha256Hex(const std::string& data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

absl::Status Errno(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

}  // namespace

DesiredCache::DesiredCache(const std::string& data_dir)
    : dir_(data_dir), path_(data_dir + "/desired.pb") {}

absl::Status DesiredCache::Save(const upkeep::v1::DesiredState& desired) {
  const std::string payload = desired.SerializeAsString();
  const std::string text = absl::StrCat("upkeep-desired v1 ", desired.revision(), " ",
                                        payload.size(), " ", Sha256Hex(payload), "\n", payload);
  const std::string tmp = path_ + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Errno("cannot write", tmp);
  size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const absl::Status st = Errno("cannot write", tmp);
      ::close(fd);
      return st;
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const absl::Status st = Errno("cannot sync", tmp);
    ::close(fd);
    return st;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path_.c_str()) != 0) return Errno("cannot rename onto", path_);
  // The rename itself is durable only once the directory is.
  const int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<upkeep::v1::DesiredState>> DesiredCache::Load() const {
  std::ifstream in(path_, std::ios::binary);
  if (!in) return std::optional<upkeep::v1::DesiredState>();
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto corrupt = [&](const std::string& why) {
    return absl::DataLossError(
        absl::StrCat(path_, ": ", why, "; the copy is ignored until the controller sends one"));
  };
  const size_t nl = text.find('\n');
  if (nl == std::string::npos) return corrupt("no header line (torn write?)");
  const std::vector<std::string> f = absl::StrSplit(text.substr(0, nl), ' ');
  int64_t revision = 0;
  uint64_t length = 0;
  if (f.size() != 5 || f[0] != "upkeep-desired" || f[1] != "v1" ||
      !absl::SimpleAtoi(f[2], &revision) || !absl::SimpleAtoi(f[3], &length)) {
    return corrupt("header does not parse");
  }
  const std::string payload = text.substr(nl + 1);
  if (payload.size() != length) {
    return corrupt(absl::StrCat("payload is ", payload.size(), " bytes, header says ", length,
                                " (torn write?)"));
  }
  if (Sha256Hex(payload) != f[4]) return corrupt("checksum mismatch");
  upkeep::v1::DesiredState desired;
  if (!desired.ParseFromString(payload)) return corrupt("payload does not parse");
  if (desired.revision() != revision) return corrupt("revision differs from the header's");
  return std::optional<upkeep::v1::DesiredState>(std::move(desired));
}

}  // namespace upkeep::agent

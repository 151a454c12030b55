#include "controller/auth/token_store.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace upkeep::controller_auth {
namespace {

constexpr char kPrefix[] = "upk_";

class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) { rc_ = sqlite3_prepare_v2(db, sql, -1, &s_, nullptr); }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  bool ok() const { return rc_ == SQLITE_OK; }
  void Text(int i, absl::string_view v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  void Blob(int i, const std::string& v) {
    sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  void Int(int i, int64_t v) { sqlite3_bind_int64(s_, i, v); }
  int Step() { return sqlite3_step(s_); }
  std::string ColText(int i) {
    const unsigned char* p = sqlite3_column_text(s_, i);
    return p == nullptr ? "" : reinterpret_cast<const char*>(p);
  }
  int64_t ColInt(int i) { return sqlite3_column_int64(s_, i); }

 private:
  sqlite3_stmt* s_ = nullptr;
  int rc_;
};

absl::Status DbError(sqlite3* db, absl::string_view what) {
  return absl::UnavailableError(absl::StrCat("token store: ", what, ": ", sqlite3_errmsg(db)));
}

std::string Sha256(absl::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<char*>(out), len);
}

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 128 || name[0] == '.') return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TokenStore>> TokenStore::Open(const std::string& data_dir) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create ", data_dir, ": ", ec.message()));
  }
  const std::string path = data_dir + "/tokens.db";
  // Created 0600 before SQLite opens it (SQLite gives its -wal/-shm files the same mode).
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  ::fchmod(fd, 0600);
  ::close(fd);
  sqlite3* db = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (rc != SQLITE_OK) {
    const std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("cannot open ", path, ": ", msg));
  }
  sqlite3_busy_timeout(db, 5000);
  char* err = nullptr;
  if (sqlite3_exec(db,
                   "PRAGMA journal_mode=WAL;"
                   "PRAGMA synchronous=NORMAL;"
                   "CREATE TABLE IF NOT EXISTS tokens("
                   "  name TEXT PRIMARY KEY, role TEXT NOT NULL,"
                   "  sha256 BLOB NOT NULL UNIQUE, created_unix INTEGER NOT NULL);",
                   nullptr, nullptr, &err) != SQLITE_OK) {
    const std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("cannot initialise ", path, ": ", msg));
  }
  return std::unique_ptr<TokenStore>(new TokenStore(db));
}

TokenStore::~TokenStore() { sqlite3_close(db_); }

absl::StatusOr<std::string> TokenStore::Create(const std::string& name, Role role) {
  if (!ValidName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("token name \"", name, "\" must be 1-128 letters, digits, '.', '_' or '-'"));
  }
  if (role == Role::kNone) return absl::InvalidArgumentError("a token needs a role");
  unsigned char raw[32];
  if (RAND_bytes(raw, sizeof(raw)) != 1) {
    return absl::InternalError("no randomness for a token (RAND_bytes failed)");
  }
  const std::string token =
      absl::StrCat(kPrefix, absl::WebSafeBase64Escape(absl::string_view(
                                reinterpret_cast<const char*>(raw), sizeof(raw))));
  absl::MutexLock lock(&mu_);
  Stmt s(db_, "INSERT INTO tokens(name, role, sha256, created_unix) VALUES(?, ?, ?, ?)");
  if (!s.ok()) return DbError(db_, "prepare insert");
  s.Text(1, name);
  s.Text(2, RoleName(role));
  s.Blob(3, Sha256(token));
  s.Int(4, absl::ToUnixSeconds(absl::Now()));
  const int rc = s.Step();
  if (rc == SQLITE_CONSTRAINT) {
    return absl::AlreadyExistsError(
        absl::StrCat("a token named \"", name, "\" exists; revoke it first"));
  }
  if (rc != SQLITE_DONE) return DbError(db_, "insert");
  return token;
}

absl::StatusOr<std::vector<TokenStore::Info>> TokenStore::List() {
  absl::MutexLock lock(&mu_);
  Stmt s(db_, "SELECT name, role, created_unix FROM tokens ORDER BY name");
  if (!s.ok()) return DbError(db_, "prepare list");
  std::vector<Info> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) {
    Info info;
    info.name = s.ColText(0);
    info.role = ParseRole(s.ColText(1)).value_or(Role::kNone);
    info.created = absl::FromUnixSeconds(s.ColInt(2));
    out.push_back(std::move(info));
  }
  if (rc != SQLITE_DONE) return DbError(db_, "list");
  return out;
}

absl::Status TokenStore::Revoke(const std::string& name) {
  absl::MutexLock lock(&mu_);
  Stmt s(db_, "DELETE FROM tokens WHERE name = ?");
  if (!s.ok()) return DbError(db_, "prepare revoke");
  s.Text(1, name);
  if (s.Step() != SQLITE_DONE) return DbError(db_, "revoke");
  if (sqlite3_changes(db_) == 0) {
    return absl::NotFoundError(absl::StrCat("no token named \"", name, "\""));
  }
  return absl::OkStatus();
}

absl::StatusOr<Principal> TokenStore::Authenticate(absl::string_view token) {
  if (!absl::StartsWith(token, kPrefix)) {
    return absl::UnauthenticatedError("bearer token is not an upkeep token");
  }
  absl::MutexLock lock(&mu_);
  Stmt s(db_, "SELECT name, role FROM tokens WHERE sha256 = ?");
  if (!s.ok()) return DbError(db_, "prepare lookup");
  s.Blob(1, Sha256(token));
  const int rc = s.Step();
  if (rc == SQLITE_DONE) return absl::UnauthenticatedError("unknown or revoked bearer token");
  if (rc != SQLITE_ROW) return DbError(db_, "lookup");
  Principal p;
  p.kind = Principal::Kind::kUser;
  p.source = Principal::Source::kToken;
  p.name = s.ColText(0);
  p.role = ParseRole(s.ColText(1)).value_or(Role::kNone);
  return p;
}

}  // namespace upkeep::controller_auth

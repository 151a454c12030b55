// TokenStore: bearer tokens for people and tools that have no client certificate.
//
// A token is "upk_" + 43 base64url characters (32 random bytes from OpenSSL's RAND_bytes). It
// is shown once, by Create; only its SHA-256 is stored. A 256-bit random token needs no salt or
// slow hash (nobody can guess it, so a stolen database yields nothing to replay), and a hash
// lets the controller find the token with one indexed lookup.
//
// On-disk layout: DATA/tokens.db (SQLite, WAL, mode 0600), one table
//   tokens(name TEXT PRIMARY KEY, role TEXT, sha256 BLOB UNIQUE, created_unix INTEGER)
// Revoke deletes the row.
//
// Why SQLite and not a JSON file: the writer (`upkeep-controller token ...`, another process)
// and the reader (the running controller) share the file. Authenticate reads the database on
// every call, so a revoked token stops working at the very next call with no cache to
// invalidate and no file watch; SQLite gives that read its consistency (WAL readers never see
// a half-written change) and lets both processes write without a lock of our own. A lookup is
// one indexed SELECT (tens of microseconds), paid only by token calls (agents use
// certificates). Recovery: nothing to do beyond SQLite's own; a missing file is created empty.
//
// Thread-safe: one connection, serialised by a mutex.
#ifndef UPKEEP_CONTROLLER_AUTH_TOKEN_STORE_H_
#define UPKEEP_CONTROLLER_AUTH_TOKEN_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/auth/principal.h"

struct sqlite3;

namespace upkeep::controller_auth {

class TokenStore {
 public:
  struct Info {
    std::string name;
    Role role = Role::kNone;
    absl::Time created;
  };

  // Opens DATA_DIR/tokens.db, creating the directory and the file when missing.
  static absl::StatusOr<std::unique_ptr<TokenStore>> Open(const std::string& data_dir);
  ~TokenStore();
  TokenStore(const TokenStore&) = delete;
  TokenStore& operator=(const TokenStore&) = delete;

  // A new token for `name` (same rules as certificate names) with `role`; AlreadyExists when
  // the name holds one (revoke it first). The returned token is never stored and cannot be
  // shown again.
  absl::StatusOr<std::string> Create(const std::string& name, Role role);
  // Every token, by name.
  absl::StatusOr<std::vector<Info>> List();
  // NotFound when no token has that name. Takes effect at the next call that presents it.
  absl::Status Revoke(const std::string& name);
  // The principal (kind user, source token) a presented token stands for; Unauthenticated when
  // it is unknown or revoked, Unavailable when the database cannot be read.
  absl::StatusOr<Principal> Authenticate(absl::string_view token);

 private:
  explicit TokenStore(sqlite3* db) : db_(db) {}

  absl::Mutex mu_;
  sqlite3* const db_;  // guarded by mu_
};

}  // namespace upkeep::controller_auth

#endif  // UPKEEP_CONTROLLER_AUTH_TOKEN_STORE_H_

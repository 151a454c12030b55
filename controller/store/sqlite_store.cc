// SqliteStore. Layout of DATA/upkeep.db (PRAGMA user_version = 4; older versions are migrated:
// 2 adds events.at_ms, 3 the notifiers table, 4 hosts.paused_until_ms):
//   meta(key, value)            "revision": the last store revision
//   stacks(name, spec, generation, revision, paused, status)   spec/status: serialized protos
//   hosts(host_id, paused, paused_until_ms)   paused_until_ms: NULL when the pause has no end
//   events(seq, stack, data, at_ms)   data: serialized Event; at_ms: its time (retention)
//   actions(id, stack, host, requested_at_ms, record)          record: serialized ActionRecord
//   notifiers(name, spec, status)   spec: serialized Notifier (no status); status: NotifierStatus
// WAL with synchronous=NORMAL: every committed write survives a crash or kill of the
// controller (the WAL is in the OS's hands once the commit returns); only a power cut can lose
// the last transactions. FULL would fsync on every commit and cap the fleet at a few hundred
// actions per second on ordinary disks (measured with bench/controller/load.sh).
#include <sqlite3.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "controller/store/store.h"
#include "core/proto_time.h"

namespace upkeep::controller {
namespace {

namespace v1 = upkeep::v1;

class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) { rc_ = sqlite3_prepare_v2(db, sql, -1, &s_, nullptr); }
  ~Stmt() { sqlite3_finalize(s_); }
  bool ok() const { return rc_ == SQLITE_OK; }
  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Text(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Int(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  int Step() { return sqlite3_step(s_); }
  // Ready to Step again with new bindings.
  void Reset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  int64_t ColInt(int i) { return sqlite3_column_int64(s_, i); }
  std::string ColBlob(int i) {
    const void* p = sqlite3_column_blob(s_, i);
    return p == nullptr ? ""
                        : std::string(static_cast<const char*>(p), sqlite3_column_bytes(s_, i));
  }
  std::string ColText(int i) {
    const unsigned char* p = sqlite3_column_text(s_, i);
    return p == nullptr ? "" : reinterpret_cast<const char*>(p);
  }

 private:
  sqlite3_stmt* s_ = nullptr;
  int rc_;
};

class SqliteStore : public Store {
 public:
  explicit SqliteStore(sqlite3* db) : db_(db) {}
  ~SqliteStore() override { sqlite3_close(db_); }

  absl::Status Init() {
    absl::MutexLock lock(&mu_);
    absl::Status st = Exec(
        "PRAGMA journal_mode=WAL;"
        "PRAGMA synchronous=NORMAL;"
        "PRAGMA busy_timeout=5000;"
        "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "CREATE TABLE IF NOT EXISTS stacks(name TEXT PRIMARY KEY, spec BLOB NOT NULL,"
        "  generation INTEGER NOT NULL, revision INTEGER NOT NULL, paused INTEGER NOT NULL"
        "  DEFAULT 0, status BLOB);"
        "CREATE TABLE IF NOT EXISTS hosts(host_id TEXT PRIMARY KEY, paused INTEGER NOT NULL);"
        "CREATE TABLE IF NOT EXISTS events(seq INTEGER PRIMARY KEY AUTOINCREMENT, stack TEXT,"
        "  data BLOB NOT NULL);"
        "CREATE INDEX IF NOT EXISTS events_stack ON events(stack, seq);"
        "CREATE TABLE IF NOT EXISTS actions(id TEXT PRIMARY KEY, stack TEXT, host TEXT,"
        "  requested_at_ms INTEGER, record BLOB NOT NULL);"
        "CREATE INDEX IF NOT EXISTS actions_stack ON actions(stack, host, requested_at_ms);"
        "CREATE TABLE IF NOT EXISTS notifiers(name TEXT PRIMARY KEY, spec BLOB NOT NULL,"
        "  status BLOB);"
        "INSERT OR IGNORE INTO meta(key, value) VALUES('revision', 0);");
    if (!st.ok()) return st;
    int version = 0;
    {
      Stmt s(db_, "PRAGMA user_version");
      if (s.Step() == SQLITE_ROW) version = static_cast<int>(s.ColInt(0));
    }
    if (version < 2) {
      // Version 2: events carry their time in a column, so retention by age is an index scan.
      bool has_at = false;
      {
        Stmt s(db_, "SELECT 1 FROM pragma_table_info('events') WHERE name='at_ms'");
        has_at = s.Step() == SQLITE_ROW;
      }
      if (!has_at) {
        if (absl::Status a = Exec("ALTER TABLE events ADD COLUMN at_ms INTEGER"); !a.ok()) {
          return a;
        }
      }
    }
    if (version < 4) {
      // Version 4: a host pause may have an end (`pause host H --for D`).
      bool has_until = false;
      {
        Stmt s(db_, "SELECT 1 FROM pragma_table_info('hosts') WHERE name='paused_until_ms'");
        has_until = s.Step() == SQLITE_ROW;
      }
      if (!has_until) {
        if (absl::Status a = Exec("ALTER TABLE hosts ADD COLUMN paused_until_ms INTEGER");
            !a.ok()) {
          return a;
        }
      }
    }
    return Exec(
        "CREATE INDEX IF NOT EXISTS events_at ON events(at_ms);"
        "CREATE INDEX IF NOT EXISTS actions_at ON actions(requested_at_ms);"
        "PRAGMA user_version=4;");
  }

  absl::StatusOr<std::vector<v1::AppliedStack>> ApplyStacks(
      const std::vector<v1::Stack>& stacks) override {
    absl::MutexLock lock(&mu_);
    if (absl::Status st = Exec("BEGIN IMMEDIATE"); !st.ok()) return st;
    std::vector<v1::AppliedStack> out;
    int64_t revision = 0;
    {
      Stmt s(db_, "SELECT value FROM meta WHERE key='revision'");
      if (s.Step() == SQLITE_ROW) revision = s.ColInt(0);
    }
    for (const auto& stack : stacks) {
      v1::Stack spec_only = stack;
      spec_only.clear_status();
      spec_only.mutable_metadata()->clear_generation();
      spec_only.mutable_metadata()->clear_revision();
      const std::string blob = spec_only.SerializeAsString();
      v1::AppliedStack applied;
      applied.set_name(stack.metadata().name());
      Stmt q(db_, "SELECT spec, generation, revision FROM stacks WHERE name=?");
      q.Text(1, stack.metadata().name());
      int64_t generation = 1;
      if (q.Step() == SQLITE_ROW) {
        v1::Stack old;
        old.ParseFromString(q.ColBlob(0));
        old.mutable_metadata()->clear_source();
        spec_only.mutable_metadata()->clear_source();
        if (old.SerializeAsString() == spec_only.SerializeAsString()) {
          applied.set_change("unchanged");
          applied.set_generation(q.ColInt(1));
          applied.set_revision(q.ColInt(2));
          out.push_back(applied);
          continue;
        }
        generation = q.ColInt(1) + 1;
        applied.set_change("configured");
      } else {
        applied.set_change("created");
      }
      ++revision;
      Stmt w(db_,
             "INSERT INTO stacks(name, spec, generation, revision, paused) VALUES(?,?,?,?,0)"
             " ON CONFLICT(name) DO UPDATE SET spec=excluded.spec,"
             " generation=excluded.generation, revision=excluded.revision");
      w.Text(1, stack.metadata().name()).Bind(2, blob).Int(3, generation).Int(4, revision);
      if (w.Step() != SQLITE_DONE) {
        Exec("ROLLBACK").IgnoreError();
        return Error("apply");
      }
      applied.set_generation(generation);
      applied.set_revision(revision);
      out.push_back(applied);
    }
    Stmt r(db_, "UPDATE meta SET value=? WHERE key='revision'");
    r.Int(1, revision);
    if (r.Step() != SQLITE_DONE) {
      Exec("ROLLBACK").IgnoreError();
      return Error("revision");
    }
    if (absl::Status st = Exec("COMMIT"); !st.ok()) {
      Exec("ROLLBACK").IgnoreError();
      return st;
    }
    return out;
  }

  absl::Status DeleteStack(const std::string& name) override {
    absl::MutexLock lock(&mu_);
    Stmt s(db_, "DELETE FROM stacks WHERE name=?");
    s.Text(1, name);
    if (s.Step() != SQLITE_DONE) return Error("delete");
    if (sqlite3_changes(db_) == 0) return absl::NotFoundError(absl::StrCat("no stack ", name));
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<v1::Stack>> ListStacks() override {
    absl::MutexLock lock(&mu_);
    std::vector<v1::Stack> out;
    Stmt s(db_, "SELECT spec, generation, revision, paused, status FROM stacks ORDER BY name");
    while (s.Step() == SQLITE_ROW) {
      v1::Stack stack;
      if (!stack.ParseFromString(s.ColBlob(0))) continue;
      stack.mutable_metadata()->set_generation(s.ColInt(1));
      stack.mutable_metadata()->set_revision(s.ColInt(2));
      stack.mutable_status()->ParseFromString(s.ColBlob(4));
      stack.mutable_status()->set_paused(s.ColInt(3) != 0);
      out.push_back(std::move(stack));
    }
    return out;
  }

  absl::Status SaveStatus(const std::string& name, const v1::StackStatus& status) override {
    absl::MutexLock lock(&mu_);
    Stmt s(db_, "UPDATE stacks SET status=? WHERE name=?");
    s.Bind(1, status.SerializeAsString()).Text(2, name);
    return s.Step() == SQLITE_DONE ? absl::OkStatus() : Error("status");
  }

  absl::Status SaveStatuses(
      const std::vector<std::pair<std::string, v1::StackStatus>>& statuses) override {
    absl::MutexLock lock(&mu_);
    if (absl::Status st = Exec("BEGIN IMMEDIATE"); !st.ok()) return st;
    Stmt s(db_, "UPDATE stacks SET status=? WHERE name=?");
    std::string blob;
    for (const auto& [name, status] : statuses) {
      status.SerializeToString(&blob);
      s.Bind(1, blob).Text(2, name);
      if (s.Step() != SQLITE_DONE) {
        absl::Status error = Error("status");
        Exec("ROLLBACK").IgnoreError();
        return error;
      }
      s.Reset();
    }
    if (absl::Status st = Exec("COMMIT"); !st.ok()) {
      Exec("ROLLBACK").IgnoreError();
      return st;
    }
    return absl::OkStatus();
  }

  absl::Status SetStackPaused(const std::string& name, bool paused) override {
    absl::MutexLock lock(&mu_);
    Stmt s(db_, "UPDATE stacks SET paused=? WHERE name=?");
    s.Int(1, paused ? 1 : 0).Text(2, name);
    if (s.Step() != SQLITE_DONE) return Error("pause");
    if (sqlite3_changes(db_) == 0) return absl::NotFoundError(absl::StrCat("no stack ", name));
    return absl::OkStatus();
  }

  absl::Status SetHostPaused(const std::string& host, bool paused) override {
    absl::MutexLock lock(&mu_);
    Stmt s(db_,
           "INSERT INTO hosts(host_id, paused, paused_until_ms) VALUES(?,?,NULL)"
           " ON CONFLICT(host_id) DO UPDATE SET paused=excluded.paused, paused_until_ms=NULL");
    s.Text(1, host).Int(2, paused ? 1 : 0);
    return s.Step() == SQLITE_DONE ? absl::OkStatus() : Error("pause host");
  }

  absl::Status PauseHostUntil(const std::string& host, absl::Time until) override {
    if (until == absl::InfiniteFuture()) return SetHostPaused(host, true);
    absl::MutexLock lock(&mu_);
    Stmt s(
        db_,
        "INSERT INTO hosts(host_id, paused, paused_until_ms) VALUES(?,1,?)"
        " ON CONFLICT(host_id) DO UPDATE SET paused=1, paused_until_ms=excluded.paused_until_ms");
    s.Text(1, host).Int(2, absl::ToUnixMillis(until));
    return s.Step() == SQLITE_DONE ? absl::OkStatus() : Error("pause host");
  }

  absl::StatusOr<std::map<std::string, absl::Time>> HostPauses() override {
    absl::MutexLock lock(&mu_);
    std::map<std::string, absl::Time> out;
    Stmt s(db_,
           "SELECT host_id, paused_until_ms IS NULL, paused_until_ms FROM hosts WHERE paused=1");
    while (s.Step() == SQLITE_ROW) {
      out[s.ColText(0)] =
          s.ColInt(1) != 0 ? absl::InfiniteFuture() : absl::FromUnixMillis(s.ColInt(2));
    }
    return out;
  }

  absl::StatusOr<std::set<std::string>> PausedHosts() override {
    absl::MutexLock lock(&mu_);
    std::set<std::string> out;
    Stmt s(db_, "SELECT host_id FROM hosts WHERE paused=1");
    while (s.Step() == SQLITE_ROW) out.insert(s.ColText(0));
    return out;
  }

  absl::Status AppendEvent(v1::Event* event) override {
    absl::MutexLock lock(&mu_);
    Stmt s(db_, "INSERT INTO events(stack, data, at_ms) VALUES(?, ?, ?)");
    s.Text(1, event->stack())
        .Bind(2, event->SerializeAsString())
        .Int(3, absl::ToUnixMillis(FromProto(event->at())));
    if (s.Step() != SQLITE_DONE) return Error("event");
    event->set_seq(sqlite3_last_insert_rowid(db_));
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<v1::Event>> ListEvents(const std::string& stack, int64_t after_seq,
                                                    int limit) override {
    absl::MutexLock lock(&mu_);
    std::vector<v1::Event> out;
    Stmt s(db_, stack.empty()
                    ? "SELECT seq, data FROM events WHERE seq>? ORDER BY seq LIMIT ?"
                    : "SELECT seq, data FROM events WHERE seq>? AND stack=? ORDER BY seq LIMIT ?");
    s.Int(1, after_seq);
    if (stack.empty()) {
      s.Int(2, limit);
    } else {
      s.Text(2, stack).Int(3, limit);
    }
    while (s.Step() == SQLITE_ROW) {
      v1::Event e;
      e.ParseFromString(s.ColBlob(1));
      e.set_seq(s.ColInt(0));
      out.push_back(std::move(e));
    }
    return out;
  }

  absl::StatusOr<std::vector<v1::Event>> TailEvents(const std::string& stack, int limit) override {
    absl::MutexLock lock(&mu_);
    std::vector<v1::Event> out;
    Stmt s(db_, stack.empty()
                    ? "SELECT seq, data FROM events ORDER BY seq DESC LIMIT ?1"
                    : "SELECT seq, data FROM events WHERE stack=?2 ORDER BY seq DESC LIMIT ?1");
    s.Int(1, limit);
    if (!stack.empty()) s.Text(2, stack);
    while (s.Step() == SQLITE_ROW) {
      v1::Event e;
      e.ParseFromString(s.ColBlob(1));
      e.set_seq(s.ColInt(0));
      out.push_back(std::move(e));
    }
    std::reverse(out.begin(), out.end());
    return out;
  }

  absl::StatusOr<v1::ActionRecord> GetAction(const std::string& id) override {
    absl::MutexLock lock(&mu_);
    Stmt s(db_, "SELECT record FROM actions WHERE id=?");
    s.Text(1, id);
    if (s.Step() != SQLITE_ROW) return absl::NotFoundError(absl::StrCat("no action ", id));
    v1::ActionRecord r;
    if (!r.ParseFromString(s.ColBlob(0))) {
      return absl::DataLossError(absl::StrCat("action ", id, ": unreadable record"));
    }
    return r;
  }

  absl::StatusOr<std::vector<v1::Notifier>> ListNotifiers() override {
    absl::MutexLock lock(&mu_);
    std::vector<v1::Notifier> out;
    Stmt s(db_, "SELECT spec, status FROM notifiers ORDER BY name");
    while (s.Step() == SQLITE_ROW) {
      v1::Notifier n;
      if (!n.ParseFromString(s.ColBlob(0))) continue;
      n.mutable_status()->ParseFromString(s.ColBlob(1));
      out.push_back(std::move(n));
    }
    return out;
  }

  absl::Status PutNotifier(const v1::Notifier& notifier) override {
    v1::Notifier spec = notifier;
    spec.clear_status();
    absl::MutexLock lock(&mu_);
    Stmt s(db_,
           "INSERT INTO notifiers(name, spec) VALUES(?,?)"
           " ON CONFLICT(name) DO UPDATE SET spec=excluded.spec");
    s.Text(1, notifier.metadata().name()).Bind(2, spec.SerializeAsString());
    return s.Step() == SQLITE_DONE ? absl::OkStatus() : Error("notifier");
  }

  absl::Status DeleteNotifier(const std::string& name) override {
    absl::MutexLock lock(&mu_);
    Stmt s(db_, "DELETE FROM notifiers WHERE name=?");
    s.Text(1, name);
    if (s.Step() != SQLITE_DONE) return Error("delete notifier");
    if (sqlite3_changes(db_) == 0) return absl::NotFoundError(absl::StrCat("no notifier ", name));
    return absl::OkStatus();
  }

  absl::Status SaveNotifierStatus(const std::string& name,
                                  const v1::NotifierStatus& status) override {
    absl::MutexLock lock(&mu_);
    Stmt s(db_, "UPDATE notifiers SET status=? WHERE name=?");
    s.Bind(1, status.SerializeAsString()).Text(2, name);
    return s.Step() == SQLITE_DONE ? absl::OkStatus() : Error("notifier status");
  }

  absl::StatusOr<PruneStats> Prune(const Retention& retention, absl::Time now) override {
    absl::MutexLock lock(&mu_);
    PruneStats stats;
    // Events: by count (seqs only grow), then by age.
    {
      Stmt s(db_, "DELETE FROM events WHERE seq <= (SELECT MAX(seq) FROM events) - ?");
      s.Int(1, retention.events_max_count);
      if (s.Step() != SQLITE_DONE) return Error("prune events");
      stats.events += sqlite3_changes(db_);
    }
    {
      Stmt s(db_, "DELETE FROM events WHERE at_ms IS NOT NULL AND at_ms < ?");
      s.Int(1, absl::ToUnixMillis(now - retention.events_max_age));
      if (s.Step() != SQLITE_DONE) return Error("prune events by age");
      stats.events += sqlite3_changes(db_);
    }
    {
      Stmt s(db_, "DELETE FROM actions WHERE requested_at_ms < ?");
      s.Int(1, absl::ToUnixMillis(now - retention.actions_max_age));
      if (s.Step() != SQLITE_DONE) return Error("prune actions by age");
      stats.actions += sqlite3_changes(db_);
    }
    {
      Stmt s(db_,
             "DELETE FROM actions WHERE rowid IN (SELECT rowid FROM actions ORDER BY "
             "requested_at_ms DESC, rowid DESC LIMIT -1 OFFSET ?)");
      s.Int(1, retention.actions_max_count);
      if (s.Step() != SQLITE_DONE) return Error("prune actions by count");
      stats.actions += sqlite3_changes(db_);
    }
    return stats;
  }

  absl::Status PutAction(const v1::ActionRecord& record) override {
    absl::MutexLock lock(&mu_);
    Stmt s(db_,
           "INSERT INTO actions(id, stack, host, requested_at_ms, record) VALUES(?,?,?,?,?)"
           " ON CONFLICT(id) DO UPDATE SET record=excluded.record");
    s.Text(1, record.action().id())
        .Text(2, record.action().stack())
        .Text(3, record.action().host())
        .Int(4, absl::ToUnixMillis(FromProto(record.requested_at())))
        .Bind(5, record.SerializeAsString());
    return s.Step() == SQLITE_DONE ? absl::OkStatus() : Error("action");
  }

  absl::StatusOr<std::vector<v1::ActionRecord>> ListActions(const std::string& stack,
                                                            const std::string& host,
                                                            int limit) override {
    absl::MutexLock lock(&mu_);
    std::vector<v1::ActionRecord> out;
    std::string sql = "SELECT record FROM actions WHERE 1=1";
    if (!stack.empty()) sql += " AND stack=?1";
    if (!host.empty()) sql += " AND host=?2";
    sql += " ORDER BY requested_at_ms DESC, rowid DESC LIMIT ?3";
    Stmt s(db_, sql.c_str());
    if (!stack.empty()) s.Text(1, stack);
    if (!host.empty()) s.Text(2, host);
    s.Int(3, limit);
    while (s.Step() == SQLITE_ROW) {
      v1::ActionRecord r;
      if (r.ParseFromString(s.ColBlob(0))) out.push_back(std::move(r));
    }
    std::reverse(out.begin(), out.end());
    return out;
  }

 private:
  absl::Status Exec(const char* sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err != nullptr ? err : "unknown";
      sqlite3_free(err);
      return absl::InternalError(absl::StrCat("sqlite: ", msg));
    }
    return absl::OkStatus();
  }
  absl::Status Error(const char* what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return absl::InternalError(absl::StrCat("sqlite ", what, ": ", sqlite3_errmsg(db_)));
  }

  absl::Mutex mu_;
  sqlite3* db_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> OpenSqliteStore(const std::string& data_dir) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("create ", data_dir, ": ", ec.message()));
  sqlite3* db = nullptr;
  const std::string path = data_dir + "/upkeep.db";
  if (sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    std::string msg = db != nullptr ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::InternalError(absl::StrCat("open ", path, ": ", msg));
  }
  auto store = std::make_unique<SqliteStore>(db);
  if (absl::Status st = store->Init(); !st.ok()) return st;
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace upkeep::controller

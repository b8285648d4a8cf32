// SQLite index of packed objects; see pack_index.h.
#include "server/store/pack_index.h"

#include <sqlite3.h>

#include <thread>
#include <unordered_map>

#include "absl/cleanup/cleanup.h"
#include "common/str_cat.h"
#include "common/status_util.h"
#include "server/store/file_io.h"

namespace packstore {
namespace {

constexpr int kBusyTimeoutMs = 5000;
constexpr size_t kMaxIdleReaders = 16;
// LookupMany splits batches this large between two threads (a thread costs
// tens of microseconds; 2,048 lookups take about 2 ms).
constexpr size_t kParallelLookupMin = 2048;

absl::Status SqliteError(sqlite3* db, int rc, std::string_view what) {
  std::string message =
      StrCat("packs.idx: ", what, ": ", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) return absl::UnavailableError(message);
  if (rc == SQLITE_FULL) return absl::ResourceExhaustedError(message);
  if (rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB) return absl::DataLossError(message);
  return absl::InternalError(message);
}

absl::StatusOr<PackedLocation> ReadLocation(sqlite3_stmt* stmt, int first_column) {
  PackedLocation loc;
  loc.compressed = sqlite3_column_int64(stmt, first_column) != 0;
  int64_t size = sqlite3_column_int64(stmt, first_column + 1);
  int64_t offset = sqlite3_column_int64(stmt, first_column + 2);
  int64_t length = sqlite3_column_int64(stmt, first_column + 3);
  loc.pack_id = sqlite3_column_int64(stmt, first_column + 4);
  if (size < 0 || offset < 0 || length < 0) {
    return absl::DataLossError("packs.idx: a row has a negative size, offset or length");
  }
  loc.size = static_cast<uint64_t>(size);
  loc.offset = static_cast<uint64_t>(offset);
  loc.length = static_cast<uint64_t>(length);
  return loc;
}

}  // namespace

// One SQLite connection with its prepared statements. Used by one thread at
// a time (opened with SQLITE_OPEN_NOMUTEX).
class PackIndex::Connection {
 public:
  static absl::StatusOr<std::unique_ptr<Connection>> Open(const std::string& path, int flags) {
    // SQLite's memory statistics, which packstore never reads, take a
    // process-wide mutex on every allocation: the two lookup threads of a
    // bulk read contended on it. Only possible before SQLite initialises
    // (a no-op if something in the process used SQLite first).
    static const int kNoMemoryStatistics = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    (void)kNoMemoryStatistics;
    sqlite3* db = nullptr;
    int rc = sqlite3_open_v2(path.c_str(), &db, flags | SQLITE_OPEN_NOMUTEX, nullptr);
    auto connection = std::unique_ptr<Connection>(new Connection(db));
    if (rc != SQLITE_OK) return SqliteError(db, rc, "open " + path);
    sqlite3_busy_timeout(db, kBusyTimeoutMs);
    sqlite3_extended_result_codes(db, 0);
    return connection;
  }
  ~Connection() {
    for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
    sqlite3_close_v2(db_);
  }

  sqlite3* db() const { return db_; }

  absl::Status Exec(std::string_view sql) {
    char* error = nullptr;
    int rc = sqlite3_exec(db_, std::string(sql).c_str(), nullptr, nullptr, &error);
    if (rc != SQLITE_OK) {
      std::string message = error ? error : sqlite3_errstr(rc);
      sqlite3_free(error);
      if (rc == SQLITE_BUSY) return absl::UnavailableError("packs.idx busy: " + message);
      if (rc == SQLITE_FULL) return absl::ResourceExhaustedError("packs.idx: " + message);
      return absl::InternalError(StrCat("packs.idx: ", message, " (", sql, ")"));
    }
    return absl::OkStatus();
  }

  // Runs a statement without results through the statement cache (saves
  // parsing BEGIN/COMMIT on every batch lookup).
  absl::Status Step(const char* sql) {
    PACKSTORE_ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare(sql));
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return SqliteError(db_, rc, sql);
    return absl::OkStatus();
  }

  // A cached prepared statement, reset and unbound, ready for use.
  absl::StatusOr<sqlite3_stmt*> Prepare(const char* sql) {
    auto it = statements_.find(sql);
    if (it != statements_.end()) {
      sqlite3_reset(it->second);
      sqlite3_clear_bindings(it->second);
      return it->second;
    }
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK) return SqliteError(db_, rc, "prepare");
    statements_.emplace(sql, stmt);
    return stmt;
  }

  // Runs `fn` inside BEGIN IMMEDIATE .. COMMIT, rolling back on error.
  absl::Status Transaction(const std::function<absl::Status()>& fn) {
    PACKSTORE_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
    absl::Status status = fn();
    if (status.ok()) status = Exec("COMMIT");
    if (!status.ok()) Exec("ROLLBACK").IgnoreError();
    return status;
  }

 private:
  explicit Connection(sqlite3* db) : db_(db) {}
  sqlite3* db_;
  // Keyed by the SQL text's address: every caller passes a string literal.
  std::unordered_map<const char*, sqlite3_stmt*> statements_;
};

PackIndex::PackIndex(std::string path) : path_(std::move(path)) {}
PackIndex::~PackIndex() = default;

absl::StatusOr<std::unique_ptr<PackIndex>> PackIndex::Open(const std::string& path, bool create) {
  if (create && PathExists(path)) {
    return absl::AlreadyExistsError(path + " already exists");
  }
  if (!create && !PathExists(path)) {
    return absl::NotFoundError(path + " does not exist: the container has no index");
  }
  std::unique_ptr<PackIndex> index(new PackIndex(path));
  int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
  PACKSTORE_ASSIGN_OR_RETURN(index->writer_, Connection::Open(path, flags));
  Connection& w = *index->writer_;
  // The writer looks up every batch's keys before appending and inserts
  // them at random places of the key index. Its page cache is heap memory
  // that counts against the daemon's budget; 64 MiB was measured no faster
  // than 16 MiB (the OS caches the file's pages either way).
  PACKSTORE_RETURN_IF_ERROR(w.Exec("PRAGMA cache_size=-16384"));
  // A checkpoint copies every page the WAL holds back into the index; with
  // SQLite's default of 1000 pages a bulk insert checkpoints after nearly
  // every batch, writing each random leaf page twice per batch. 64 MiB
  // lets one checkpoint absorb many batches (measured: PutMany 1.1x-1.4x faster).
  PACKSTORE_RETURN_IF_ERROR(w.Exec("PRAGMA wal_autocheckpoint=16384"));
  if (create) {
    PACKSTORE_RETURN_IF_ERROR(w.Exec("PRAGMA journal_mode=wal"));
    PACKSTORE_RETURN_IF_ERROR(w.Transaction([&]() -> absl::Status {
      PACKSTORE_RETURN_IF_ERROR(w.Exec(kCreateTableSql));
      return w.Exec(kCreateIndexSql);
    }));
  } else {
    PACKSTORE_ASSIGN_OR_RETURN(
        sqlite3_stmt * stmt,
        w.Prepare("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='db_object'"));
    int rc = sqlite3_step(stmt);
    int64_t tables = rc == SQLITE_ROW ? sqlite3_column_int64(stmt, 0) : 0;
    sqlite3_reset(stmt);
    if (rc != SQLITE_ROW) return SqliteError(w.db(), rc, "read schema");
    if (tables != 1) {
      return absl::DataLossError(path + " has no db_object table: not a container index");
    }
    // Containers made by disk-objectstore are in WAL mode already; this is a
    // no-op then, and makes readers independent of the writer otherwise.
    PACKSTORE_RETURN_IF_ERROR(w.Exec("PRAGMA journal_mode=wal"));
  }
  return index;
}

absl::StatusOr<std::unique_ptr<PackIndex::Connection>> PackIndex::AcquireReader() {
  {
    absl::MutexLock lock(&pool_mu_);
    if (!idle_readers_.empty()) {
      auto connection = std::move(idle_readers_.back());
      idle_readers_.pop_back();
      return connection;
    }
  }
  PACKSTORE_ASSIGN_OR_RETURN(auto connection, Connection::Open(path_, SQLITE_OPEN_READWRITE));
  // 4 MiB per reader holds the upper levels of a million-object index;
  // leaf pages come from the OS page cache, which all readers share
  // (measured: 16 MiB per reader cost 70 MiB of heap in bulk reads and was
  // no faster).
  PACKSTORE_RETURN_IF_ERROR(connection->Exec("PRAGMA cache_size=-4096"));
  return connection;
}

void PackIndex::ReleaseReader(std::unique_ptr<Connection> connection) {
  absl::MutexLock lock(&pool_mu_);
  if (idle_readers_.size() < kMaxIdleReaders) idle_readers_.push_back(std::move(connection));
}

#define PACKSTORE_WITH_READER(name)                                 \
  PACKSTORE_ASSIGN_OR_RETURN(auto name##_owned, AcquireReader());   \
  absl::Cleanup name##_release = [&] { ReleaseReader(std::move(name##_owned)); }; \
  Connection& name = *name##_owned

absl::StatusOr<std::optional<PackedLocation>> PackIndex::Lookup(std::string_view key) {
  PACKSTORE_WITH_READER(c);
  PACKSTORE_ASSIGN_OR_RETURN(
      sqlite3_stmt * stmt,
      c.Prepare("SELECT compressed, size, \"offset\", length, pack_id FROM db_object "
                "WHERE hashkey = ?"));
  sqlite3_bind_text(stmt, 1, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
  int rc = sqlite3_step(stmt);
  absl::Cleanup reset = [stmt] { sqlite3_reset(stmt); };
  if (rc == SQLITE_DONE) return std::nullopt;
  if (rc != SQLITE_ROW) return SqliteError(c.db(), rc, "lookup");
  PACKSTORE_ASSIGN_OR_RETURN(PackedLocation loc, ReadLocation(stmt, 0));
  return loc;
}

absl::StatusOr<std::vector<std::optional<PackedLocation>>> PackIndex::LookupMany(
    const std::vector<std::string>& keys) {
  using Locations = std::vector<std::optional<PackedLocation>>;
  auto lookup = [this](std::span<const std::string> part) -> absl::StatusOr<Locations> {
    PACKSTORE_WITH_READER(c);
    return LookupManyOn(c, part);
  };
  if (keys.size() < kParallelLookupMin) return lookup(keys);
  // Half on a thread of its own: a bulk read (GetMany, the fast path's
  // LOCATE) of 10,000 keys is bound by these B-tree descents (about 1 us
  // each), and the caller only waits.
  const std::span<const std::string> all(keys);
  const size_t half = keys.size() / 2;
  absl::StatusOr<Locations> tail;
  std::thread other([&] { tail = lookup(all.subspan(half)); });
  absl::StatusOr<Locations> head = lookup(all.first(half));
  other.join();
  if (!head.ok()) return head.status();
  if (!tail.ok()) return tail.status();
  head->insert(head->end(), tail->begin(), tail->end());
  return head;
}

absl::StatusOr<std::vector<std::optional<PackedLocation>>> PackIndex::LookupManyAsWriter(
    const std::vector<std::string>& keys) {
  return LookupManyOn(*writer_, keys);
}

absl::StatusOr<std::vector<std::optional<PackedLocation>>> PackIndex::LookupManyOn(
    Connection& c, std::span<const std::string> keys) {
  PACKSTORE_ASSIGN_OR_RETURN(
      sqlite3_stmt * stmt,
      c.Prepare("SELECT compressed, size, \"offset\", length, pack_id FROM db_object "
                "WHERE hashkey = ?"));
  // One read transaction for the whole batch: a consistent snapshot, and no
  // per-lookup lock traffic on the WAL.
  PACKSTORE_RETURN_IF_ERROR(c.Step("BEGIN"));
  absl::Cleanup end = [&c] { c.Step("COMMIT").IgnoreError(); };
  std::vector<std::optional<PackedLocation>> out;
  out.reserve(keys.size());
  for (const std::string& key : keys) {
    sqlite3_reset(stmt);
    sqlite3_bind_text(stmt, 1, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) {
      out.emplace_back();
    } else if (rc == SQLITE_ROW) {
      PACKSTORE_ASSIGN_OR_RETURN(PackedLocation loc, ReadLocation(stmt, 0));
      out.emplace_back(loc);
    } else {
      sqlite3_reset(stmt);
      return SqliteError(c.db(), rc, "lookup");
    }
  }
  sqlite3_reset(stmt);
  return out;
}

absl::Status PackIndex::ForEachKey(std::string_view after, uint64_t limit,
                                   const std::function<bool(std::string_view)>& fn) {
  PACKSTORE_WITH_READER(c);
  PACKSTORE_ASSIGN_OR_RETURN(
      sqlite3_stmt * stmt,
      c.Prepare("SELECT hashkey FROM db_object WHERE hashkey > ? ORDER BY hashkey LIMIT ?"));
  absl::Cleanup reset = [stmt] { sqlite3_reset(stmt); };
  sqlite3_bind_text(stmt, 1, after.data(), static_cast<int>(after.size()), SQLITE_STATIC);
  sqlite3_bind_int64(stmt, 2, limit == 0 ? -1 : static_cast<int64_t>(limit));
  while (true) {
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) return absl::OkStatus();
    if (rc != SQLITE_ROW) return SqliteError(c.db(), rc, "list keys");
    const char* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    if (!fn(std::string_view(text, static_cast<size_t>(sqlite3_column_bytes(stmt, 0))))) {
      return absl::OkStatus();
    }
  }
}

absl::Status PackIndex::ForEachRow(std::optional<int64_t> pack_id,
                                   const std::function<absl::Status(const IndexRow&)>& fn) {
  PACKSTORE_WITH_READER(c);
  sqlite3_stmt* stmt;
  if (pack_id) {
    PACKSTORE_ASSIGN_OR_RETURN(
        stmt, c.Prepare("SELECT hashkey, compressed, size, \"offset\", length, pack_id FROM "
                        "db_object WHERE pack_id = ? ORDER BY \"offset\""));
    sqlite3_bind_int64(stmt, 1, *pack_id);
  } else {
    PACKSTORE_ASSIGN_OR_RETURN(
        stmt, c.Prepare("SELECT hashkey, compressed, size, \"offset\", length, pack_id FROM "
                        "db_object ORDER BY pack_id, \"offset\""));
  }
  absl::Cleanup reset = [stmt] { sqlite3_reset(stmt); };
  IndexRow row;
  while (true) {
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) return absl::OkStatus();
    if (rc != SQLITE_ROW) return SqliteError(c.db(), rc, "scan rows");
    row.key.assign(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)),
                   static_cast<size_t>(sqlite3_column_bytes(stmt, 0)));
    PACKSTORE_ASSIGN_OR_RETURN(row.location, ReadLocation(stmt, 1));
    PACKSTORE_RETURN_IF_ERROR(fn(row));
  }
}

absl::StatusOr<std::vector<std::string>> PackIndex::CheckIntegrity() {
  PACKSTORE_WITH_READER(c);
  PACKSTORE_ASSIGN_OR_RETURN(sqlite3_stmt * stmt, c.Prepare("PRAGMA quick_check"));
  absl::Cleanup reset = [stmt] { sqlite3_reset(stmt); };
  std::vector<std::string> problems;
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    const auto* line = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    std::string text = line ? line : "";
    if (text != "ok") problems.push_back(std::move(text));
  }
  // A file too damaged to check at all is a problem found, too.
  if (rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB) {
    problems.push_back(sqlite3_errmsg(c.db()));
  } else if (rc != SQLITE_DONE) {
    return SqliteError(c.db(), rc, "quick_check");
  }
  return problems;
}

absl::StatusOr<IndexTotals> PackIndex::Totals() {
  PACKSTORE_WITH_READER(c);
  PACKSTORE_ASSIGN_OR_RETURN(
      sqlite3_stmt * stmt,
      c.Prepare("SELECT count(*), coalesce(sum(size), 0), coalesce(sum(length), 0) "
                "FROM db_object"));
  absl::Cleanup reset = [stmt] { sqlite3_reset(stmt); };
  int rc = sqlite3_step(stmt);
  if (rc != SQLITE_ROW) return SqliteError(c.db(), rc, "totals");
  IndexTotals t;
  t.count = static_cast<uint64_t>(sqlite3_column_int64(stmt, 0));
  t.total_size = static_cast<uint64_t>(sqlite3_column_int64(stmt, 1));
  t.total_length = static_cast<uint64_t>(sqlite3_column_int64(stmt, 2));
  return t;
}

absl::StatusOr<std::vector<std::pair<int64_t, uint64_t>>> PackIndex::LengthPerPack() {
  PACKSTORE_WITH_READER(c);
  PACKSTORE_ASSIGN_OR_RETURN(
      sqlite3_stmt * stmt,
      c.Prepare("SELECT pack_id, sum(length) FROM db_object GROUP BY pack_id ORDER BY pack_id"));
  absl::Cleanup reset = [stmt] { sqlite3_reset(stmt); };
  std::vector<std::pair<int64_t, uint64_t>> out;
  while (true) {
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) return out;
    if (rc != SQLITE_ROW) return SqliteError(c.db(), rc, "lengths per pack");
    out.emplace_back(sqlite3_column_int64(stmt, 0),
                     static_cast<uint64_t>(sqlite3_column_int64(stmt, 1)));
  }
}

absl::StatusOr<uint64_t> PackIndex::InsertRows(const std::vector<IndexRow>& rows) {
  Connection& w = *writer_;
  uint64_t inserted = 0;
  PACKSTORE_RETURN_IF_ERROR(w.Transaction([&]() -> absl::Status {
    PACKSTORE_ASSIGN_OR_RETURN(
        sqlite3_stmt * stmt,
        w.Prepare("INSERT OR IGNORE INTO db_object "
                  "(hashkey, compressed, size, \"offset\", length, pack_id) "
                  "VALUES (?, ?, ?, ?, ?, ?)"));
    for (const IndexRow& row : rows) {
      sqlite3_reset(stmt);
      sqlite3_bind_text(stmt, 1, row.key.data(), static_cast<int>(row.key.size()),
                        SQLITE_STATIC);
      sqlite3_bind_int(stmt, 2, row.location.compressed ? 1 : 0);
      sqlite3_bind_int64(stmt, 3, static_cast<int64_t>(row.location.size));
      sqlite3_bind_int64(stmt, 4, static_cast<int64_t>(row.location.offset));
      sqlite3_bind_int64(stmt, 5, static_cast<int64_t>(row.location.length));
      sqlite3_bind_int64(stmt, 6, row.location.pack_id);
      int rc = sqlite3_step(stmt);
      if (rc != SQLITE_DONE) return SqliteError(w.db(), rc, "insert");
      inserted += static_cast<uint64_t>(sqlite3_changes(w.db()));
    }
    sqlite3_reset(stmt);
    return absl::OkStatus();
  }));
  return inserted;
}

absl::Status PackIndex::MoveRows(const std::vector<IndexRow>& rows) {
  Connection& w = *writer_;
  return w.Transaction([&]() -> absl::Status {
    PACKSTORE_ASSIGN_OR_RETURN(
        sqlite3_stmt * stmt,
        w.Prepare("UPDATE db_object SET compressed = ?, size = ?, \"offset\" = ?, length = ?, "
                  "pack_id = ? WHERE hashkey = ?"));
    for (const IndexRow& row : rows) {
      sqlite3_reset(stmt);
      sqlite3_bind_int(stmt, 1, row.location.compressed ? 1 : 0);
      sqlite3_bind_int64(stmt, 2, static_cast<int64_t>(row.location.size));
      sqlite3_bind_int64(stmt, 3, static_cast<int64_t>(row.location.offset));
      sqlite3_bind_int64(stmt, 4, static_cast<int64_t>(row.location.length));
      sqlite3_bind_int64(stmt, 5, row.location.pack_id);
      sqlite3_bind_text(stmt, 6, row.key.data(), static_cast<int>(row.key.size()),
                        SQLITE_STATIC);
      int rc = sqlite3_step(stmt);
      if (rc != SQLITE_DONE) return SqliteError(w.db(), rc, "update");
    }
    sqlite3_reset(stmt);
    return absl::OkStatus();
  });
}

absl::Status PackIndex::RenamePack(int64_t from, int64_t to) {
  Connection& w = *writer_;
  return w.Transaction([&]() -> absl::Status {
    PACKSTORE_ASSIGN_OR_RETURN(sqlite3_stmt * stmt,
                               w.Prepare("UPDATE db_object SET pack_id = ? WHERE pack_id = ?"));
    sqlite3_bind_int64(stmt, 1, to);
    sqlite3_bind_int64(stmt, 2, from);
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    if (rc != SQLITE_DONE) return SqliteError(w.db(), rc, "rename pack");
    return absl::OkStatus();
  });
}

absl::StatusOr<uint64_t> PackIndex::DeleteRows(const std::vector<std::string>& keys) {
  Connection& w = *writer_;
  uint64_t deleted = 0;
  PACKSTORE_RETURN_IF_ERROR(w.Transaction([&]() -> absl::Status {
    PACKSTORE_ASSIGN_OR_RETURN(sqlite3_stmt * stmt,
                               w.Prepare("DELETE FROM db_object WHERE hashkey = ?"));
    for (const std::string& key : keys) {
      sqlite3_reset(stmt);
      sqlite3_bind_text(stmt, 1, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
      int rc = sqlite3_step(stmt);
      if (rc != SQLITE_DONE) return SqliteError(w.db(), rc, "delete");
      deleted += static_cast<uint64_t>(sqlite3_changes(w.db()));
    }
    sqlite3_reset(stmt);
    return absl::OkStatus();
  }));
  return deleted;
}

absl::Status PackIndex::Vacuum() { return writer_->Exec("VACUUM"); }

absl::Status PackIndex::Checkpoint() {
  return writer_->Exec("PRAGMA wal_checkpoint(TRUNCATE)");
}

}  // namespace packstore

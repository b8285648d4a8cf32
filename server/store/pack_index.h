// PackIndex: the container's SQLite index, packs.idx (docs/format.md,
// "packs.idx"): one row per packed object, keyed by its hash.
//
// Reads run on any thread, each on a read connection taken from a pool
// (WAL mode: readers never wait for the writer, and see the last commit).
// Mutations (InsertRows, MoveRows, DeleteRows, Vacuum, Checkpoint) use the
// single write connection and must be serialized by the caller: in the
// engine, by Container's writer lock.
//
// Errors: INTERNAL with SQLite's message for SQLite failures, UNAVAILABLE
// when the database stays busy past the 5 s busy timeout, DATA_LOSS for
// a row that breaks the schema's invariants (negative sizes, say).
//
//   PACKSTORE_ASSIGN_OR_RETURN(auto index, PackIndex::Open(dir + "/packs.idx", false));
//   PACKSTORE_ASSIGN_OR_RETURN(std::optional<PackedLocation> loc, index->Lookup(key));
#ifndef PACKSTORE_SERVER_STORE_PACK_INDEX_H_
#define PACKSTORE_SERVER_STORE_PACK_INDEX_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

struct sqlite3;

namespace packstore {

// Where a packed object's bytes are.
struct PackedLocation {
  int64_t pack_id = 0;
  uint64_t offset = 0;
  uint64_t length = 0;  // bytes stored in the pack
  uint64_t size = 0;    // uncompressed size
  bool compressed = false;
};

struct IndexRow {
  std::string key;
  PackedLocation location;
};

struct IndexTotals {
  uint64_t count = 0;
  uint64_t total_size = 0;    // sum of uncompressed sizes
  uint64_t total_length = 0;  // sum of stored lengths
};

class PackIndex {
 public:
  // The schema disk-objectstore creates, byte for byte (SQLAlchemy's DDL).
  static constexpr std::string_view kCreateTableSql =
      "CREATE TABLE db_object (\n"
      "\tid INTEGER NOT NULL, \n"
      "\thashkey VARCHAR NOT NULL, \n"
      "\tcompressed BOOLEAN NOT NULL, \n"
      "\tsize INTEGER NOT NULL, \n"
      "\t\"offset\" INTEGER NOT NULL, \n"
      "\tlength INTEGER NOT NULL, \n"
      "\tpack_id INTEGER NOT NULL, \n"
      "\tPRIMARY KEY (id)\n"
      ")";
  static constexpr std::string_view kCreateIndexSql =
      "CREATE UNIQUE INDEX ix_db_object_hashkey ON db_object (hashkey)";

  // Opens packs.idx at `path`. With `create`, makes a new database with the
  // schema and WAL mode (ALREADY_EXISTS if the file exists); without, the
  // file must exist (NOT_FOUND) and hold a db_object table (DATA_LOSS).
  static absl::StatusOr<std::unique_ptr<PackIndex>> Open(const std::string& path, bool create);
  ~PackIndex();
  PackIndex(const PackIndex&) = delete;
  PackIndex& operator=(const PackIndex&) = delete;

  // --- Reads (any thread) ---
  absl::StatusOr<std::optional<PackedLocation>> Lookup(std::string_view key);
  // One result per key, in order; std::nullopt for keys without a row.
  // A large batch is looked up by two connections on two threads, each in
  // a read transaction of its own (every row found was the key's row at
  // some instant of the call).
  absl::StatusOr<std::vector<std::optional<PackedLocation>>> LookupMany(
      const std::vector<std::string>& keys);
  // The same through the writer's connection, whose page cache stays warm
  // across its own commits (a reader's is dropped whenever the index
  // changes). REQUIRES: the caller is the container's single writer.
  absl::StatusOr<std::vector<std::optional<PackedLocation>>> LookupManyAsWriter(
      const std::vector<std::string>& keys);
  // Calls `fn` for each key greater than `after` in ascending order, until
  // `fn` returns false or `limit` keys were given (0: no limit).
  absl::Status ForEachKey(std::string_view after, uint64_t limit,
                          const std::function<bool(std::string_view)>& fn);
  // Calls `fn` for every row of `pack_id` (or of every pack when nullopt),
  // ordered by pack and offset.
  absl::Status ForEachRow(std::optional<int64_t> pack_id,
                          const std::function<absl::Status(const IndexRow&)>& fn);
  absl::StatusOr<IndexTotals> Totals();
  // SQLite's own check of packs.idx (PRAGMA quick_check: every page, row
  // and index entry is well formed and agrees; reads the whole file): the
  // problems it found, none when the file is sound.
  absl::StatusOr<std::vector<std::string>> CheckIntegrity();
  // Sum of stored lengths per pack id.
  absl::StatusOr<std::vector<std::pair<int64_t, uint64_t>>> LengthPerPack();

  // --- Mutations (one caller at a time) ---
  // Inserts rows in one transaction; a key that already has a row keeps it
  // (the new bytes are then a hole). Returns how many rows were inserted.
  absl::StatusOr<uint64_t> InsertRows(const std::vector<IndexRow>& rows);
  // Points existing rows (by key) at new locations, in one transaction.
  absl::Status MoveRows(const std::vector<IndexRow>& rows);
  // Moves every row of pack `from` to pack `to` (offsets unchanged).
  absl::Status RenamePack(int64_t from, int64_t to);
  // Deletes the rows of `keys`, in one transaction; returns how many existed.
  absl::StatusOr<uint64_t> DeleteRows(const std::vector<std::string>& keys);
  absl::Status Vacuum();
  // Copies the WAL into the database file (TRUNCATE mode when idle).
  absl::Status Checkpoint();

 private:
  class Connection;
  explicit PackIndex(std::string path);
  absl::StatusOr<std::unique_ptr<Connection>> AcquireReader();
  absl::StatusOr<std::vector<std::optional<PackedLocation>>> LookupManyOn(
      Connection& c, std::span<const std::string> keys);
  void ReleaseReader(std::unique_ptr<Connection> connection);

  const std::string path_;
  std::unique_ptr<Connection> writer_;
  absl::Mutex pool_mu_;
  std::vector<std::unique_ptr<Connection>> idle_readers_ ABSL_GUARDED_BY(pool_mu_);
};

}  // namespace packstore

#endif  // PACKSTORE_SERVER_STORE_PACK_INDEX_H_

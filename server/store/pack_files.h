// Pack files (docs/format.md, "Pack files"): the read side (PackFileTable)
// and the single writer's appender (PackWriter).
//
// Packs are append-only and never rewritten or truncated in place. A repack
// writes a new file and unlinks the old one; a pack id may later be reused
// for a new file. Readers therefore hold layout_mu() shared from the index
// lookup until they hold the StoredFile, and whoever unlinks a pack holds it
// exclusively: a reader never pairs an old row with a new file of the same
// id, and a file it holds keeps reading the old bytes.
//
// Thread-safety: PackFileTable is thread-safe. PackWriter is owned by the
// container's single writer and used under its lock.
#ifndef PACKSTORE_SERVER_STORE_PACK_FILES_H_
#define PACKSTORE_SERVER_STORE_PACK_FILES_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/cache/region_cache.h"
#include "server/store/file_io.h"
#include "server/store/stored_file.h"

namespace packstore {

struct PackListing {
  std::vector<int64_t> ids;          // valid pack names, ascending
  std::vector<std::string> locks;    // "<id>.lock" names
  std::vector<std::string> strays;   // anything else
};

// Parses a pack file name: a decimal id without leading zeros ("0", "17"),
// or "-1" (a repack's temporary pack). nullopt otherwise.
std::optional<int64_t> ParsePackName(std::string_view name);

class PackFileTable {
 public:
  // With a cache (the writer's table), packs are read through it and stay
  // registered until Remove: only this process replaces pack files, under
  // layout_mu() exclusively. Without one (a shared opener, beside a writer
  // in another process), Get opens packs/<id> afresh each time, since the
  // writer may have replaced it unseen; the caller then checks that the
  // rows it looked up before the open still hold after it.
  PackFileTable(std::string packs_dir, RegionCache* cache)
      : dir_(std::move(packs_dir)), cache_(cache) {}

  std::string PathFor(int64_t id) const;
  absl::Mutex& layout_mu() { return layout_mu_; }
  bool cached() const { return cache_ != nullptr; }

  // The pack file `id`. DATA_LOSS if rows point at a pack file that does not
  // exist. REQUIRES: layout_mu() held (shared).
  absl::StatusOr<std::shared_ptr<const StoredFile>> Get(int64_t id);
  // Unlinks pack `id` and forgets it. Readers that hold it keep reading the
  // old file; its cache registration is retired when the last one lets go.
  // (Should the cache have closed the file's descriptor under its fd limit
  // meanwhile, such a reader gets an error, never other bytes.) Takes
  // layout_mu() exclusively.
  absl::Status Remove(int64_t id);

  absl::StatusOr<PackListing> List() const;

 private:
  const std::string dir_;
  RegionCache* const cache_;
  absl::Mutex layout_mu_;
  absl::Mutex files_mu_ ABSL_ACQUIRED_AFTER(layout_mu_);
  std::map<int64_t, std::shared_ptr<const StoredFile>> files_ ABSL_GUARDED_BY(files_mu_);
};

// Appends objects to packs for the single writer.
//
//   writer.BeginObject() -> where the object starts (rolling over to the
//   next pack first when the current one has reached the target);
//   writer.Write(bytes)...; writer.EndObject() -> bytes written;
//   writer.Commit() fdatasyncs every pack touched (and packs/ if a file was
//   created), then releases the pack locks. Only then may index rows that
//   point at the new bytes be committed. Abandon() releases the locks
//   without syncing (the bytes become holes).
//
// Failures. A pack that a write (or short write) or an fdatasync failed on
// is never appended to again by this writer: after a failed fdatasync the
// kernel may have dropped the dirty pages and marked them clean (the
// "fsyncgate" problem), so neither the file's size, nor what a read
// returns, nor a later successful fdatasync says anything about which of
// its tail bytes reached the disk. The next object goes to the next pack.
// A pack that was failed but then removed (it held no rows; see
// Container::AbandonAppends) is forgotten. A pack lock that cannot be
// removed is retried before each new pack is opened.
class PackWriter {
 public:
  PackWriter(std::string packs_dir, int64_t pack_size_target);
  ~PackWriter();

  // Directs the next objects into a new pack file (the lowest id that has
  // no file) with no rollover: used by repack, which writes each pack it
  // rewrites into exactly one new file.
  void UseFreshPack() { fresh_only_ = true; }

  struct Position {
    int64_t pack_id;
    uint64_t offset;
  };
  absl::StatusOr<Position> BeginObject();
  absl::Status Write(std::string_view data);
  uint64_t EndObject();

  // Packs touched since the last Commit/Abandon.
  const std::set<int64_t>& touched() const { return touched_; }
  // On success, releases the locks. On failure, keeps them (and touched())
  // so that the caller can drop packs the failed batch leaves without rows
  // while no other packer can take them; the caller must then Abandon.
  absl::Status Commit();
  void Abandon();
  // Pack `id`'s file is gone (removed while this writer held its lock): a
  // failure seen on the old file does not concern a new one of that id.
  void Forget(int64_t id) { failed_.erase(id); }
  // Packs this writer will not append to again (see "Failures").
  const std::set<int64_t>& failed() const { return failed_; }

  // Forgets the current pack choice: the next object looks again from id 0
  // (after a repack or recovery freed low ids).
  void Reset();

 private:
  absl::Status OpenPack(int64_t id, bool must_be_new);
  absl::Status ClosePack();
  // Writes the buffered small objects with one pwrite.
  absl::Status Flush();
  absl::Status WriteAt(std::string_view data, uint64_t offset);
  // Unlinks a lock, or remembers it to retry (a lock left behind would
  // keep this and every other packer out of that pack).
  void ReleaseLock(const std::string& path);

  const std::string dir_;
  const int64_t target_;
  bool fresh_only_ = false;
  int64_t next_candidate_ = 0;
  int64_t current_id_ = -1;
  UniqueFd current_fd_;
  uint64_t current_size_ = 0;
  uint64_t object_start_ = 0;
  // Appended bytes from here on have not been handed to writeback yet.
  uint64_t writeback_from_ = 0;
  static constexpr uint64_t kWritebackStep = 8 << 20;
  // Small objects are gathered here and written together: a batch of
  // thousands of 1 KiB objects costs a few pwrites, not thousands. They
  // start at file offset pending_at_; current_size_ counts them.
  std::string pending_;
  uint64_t pending_at_ = 0;
  static constexpr size_t kBufferedWriteMax = 256 << 10;
  static constexpr size_t kFlushAt = 1 << 20;
  bool created_file_ = false;
  std::set<int64_t> touched_;
  // Packs rolled over before Commit, with their ids.
  std::vector<std::pair<int64_t, UniqueFd>> unsynced_;
  std::vector<std::string> held_locks_;
  std::vector<std::string> stale_locks_;  // our locks an unlink failed to remove
  std::set<int64_t> failed_;
};

}  // namespace packstore

#endif  // PACKSTORE_SERVER_STORE_PACK_FILES_H_

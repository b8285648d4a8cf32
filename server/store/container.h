// Container: a disk-objectstore container (docs/format.md) opened by
// packstore: the engine the daemon owns, usable on its own.
//
// Objects are immutable and named by the hash of their content, which the
// container computes. They are stored loose (one file each) or in packs
// (append-only files indexed by packs.idx). Reads look in the index first,
// then for a loose file, then in the index again (the object may just have
// been packed and its loose copy cleaned).
//
// Opening modes:
//   kWriter  the single writer of packs and index. Takes an exclusive flock
//            on <dir>/packstore.lock (FAILED_PRECONDITION, naming the
//            holder's pid, if another writer has it), then recovers from any
//            crash (docs/format.md, "Recovery") before returning.
//   kShared  reads and loose writes only, as any number of other processes
//            may do beside the writer; mutations of packs or index return
//            FAILED_PRECONDITION. No recovery is run.
//
// Thread-safety: every method may be called from any thread. Reads and
// loose writes run concurrently; every pack or index mutation (packed puts,
// pack, clean, delete, repack, import) is serialized by the writer lock, so
// a batch of packed puts costs one fdatasync and one transaction. Pack data
// is fdatasync'd before the index rows that point at it are committed.
//
// Errors: INVALID_ARGUMENT for a malformed key (checked before any path is
// built) or option, NOT_FOUND for a missing object, DATA_LOSS for corrupt
// stored bytes, RESOURCE_EXHAUSTED for a full disk, FAILED_PRECONDITION for
// a mutation on a shared container or a container held by another writer,
// UNAVAILABLE for a pack locked by another process, INTERNAL otherwise.
//
//   PACKSTORE_RETURN_IF_ERROR(Container::Init(dir, {}));
//   PACKSTORE_ASSIGN_OR_RETURN(auto store, Container::Open(dir));
//   PACKSTORE_ASSIGN_OR_RETURN(auto keys, store->PutPacked({"a", "b"}));
//   PACKSTORE_ASSIGN_OR_RETURN(std::string bytes, store->Get(keys[0].key));
#ifndef PACKSTORE_SERVER_STORE_CONTAINER_H_
#define PACKSTORE_SERVER_STORE_CONTAINER_H_

#include <cstdint>
#include <functional>
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
#include "common/codec.h"
#include "server/cache/region_cache.h"
#include "server/store/config.h"
#include "server/store/file_io.h"
#include "server/store/loose_store.h"
#include "server/store/object_source.h"
#include "server/store/pack_index.h"

namespace packstore {

class ObjectReader;
class PackFileTable;
class StoredFile;
class PackWriter;

// Whether to compress an object written to a pack.
enum class CompressMode {
  kNo,
  kYes,
  // disk-objectstore's heuristic: compress when zlib-1 shrinks a ~128 KiB
  // sample below 0.9 of its size. For a stream, the sample is its first
  // 128 KiB (the rest is not known when the decision must be made).
  kAuto,
};
absl::StatusOr<CompressMode> ParseCompressMode(std::string_view name);  // no|yes|auto

struct InitOptions {
  int loose_prefix_len = 2;
  int64_t pack_size_target = int64_t{4} << 30;
  HashType hash_type = HashType::kSha256;
  Codec codec;  // zlib+1
  // zstd leaves disk-objectstore behind: it cannot read such a container.
  // Init refuses a zstd codec unless this is set.
  bool allow_incompatible_codec = false;
};

enum class OpenMode { kWriter, kShared };

struct OpenOptions {
  OpenMode mode = OpenMode::kWriter;
  // The writer reads packs through a region cache with these limits
  // (server/cache/region_cache.h); a shared opener reads them with pread.
  RegionCacheOptions cache;
};

struct ObjectInfo {
  std::string key;
  uint64_t size = 0;
  // Where a read finds it: packed (location set) or else loose.
  std::optional<PackedLocation> packed;
};

struct StoreCounts {
  uint64_t packed_objects = 0;
  uint64_t packed_bytes = 0;        // uncompressed
  uint64_t packed_stored_bytes = 0; // as stored (compressed or not)
  uint64_t pack_files = 0;
  uint64_t pack_file_bytes = 0;
  uint64_t hole_bytes = 0;          // pack bytes no row points to
  uint64_t loose_objects = 0;
  uint64_t loose_bytes = 0;
  uint64_t index_bytes = 0;         // packs.idx with its WAL
};

// Long operations report progress: `phase` names the step, done/total count
// objects (total 0: unknown).
struct Progress {
  std::string_view phase;
  uint64_t done = 0;
  uint64_t total = 0;
};
using ProgressFn = std::function<void(const Progress&)>;

struct PackOptions {
  CompressMode compress = CompressMode::kNo;
  // Re-hash each loose object while copying it; a corrupt one is left loose
  // and reported instead of packed.
  bool validate = true;
  // Delete each pack's loose copies once its rows are committed.
  bool delete_loose = true;
};
struct PackResult {
  uint64_t packed = 0;          // objects copied into packs
  uint64_t already_packed = 0;  // loose copies of objects already in packs
  uint64_t bytes = 0;           // uncompressed bytes copied
  uint64_t loose_deleted = 0;
  std::vector<std::string> corrupt;  // loose objects whose content is not their key
};

struct CleanOptions {
  bool vacuum = false;
  // Sandbox files of other writers (disk-objectstore's) are removed only
  // when older than this; packstore's are removed as soon as no writer
  // holds them.
  int64_t foreign_sandbox_age_seconds = 3600;
};
struct CleanResult {
  uint64_t loose_deleted = 0;
  uint64_t sandbox_deleted = 0;
  uint64_t duplicates_resolved = 0;
};

struct RepackOptions {
  // nullopt: keep each object's compression; else recompress to this mode.
  std::optional<CompressMode> compress;
};
struct RepackResult {
  uint64_t packs_rewritten = 0;
  uint64_t packs_removed = 0;  // packs with no live object left
  uint64_t objects_moved = 0;
  uint64_t bytes_reclaimed = 0;
};

struct ImportResult {
  uint64_t imported = 0;
  uint64_t already_present = 0;
  uint64_t bytes = 0;
};

// One problem validate found.
struct ValidateIssue {
  enum class Kind {
    kCorruptLoose,     // loose file content does not hash to its name
    kCorruptPacked,    // packed bytes do not decode or hash to the key
    kSizeMismatch,     // size column disagrees with the content
    kOverlap,          // two rows share pack bytes
    kPastEndOfPack,    // a row points past the end of its pack
    kMissingPack,      // rows point at a pack file that does not exist
    kOrphanPack,       // a pack file no row points at
    kStrayFile,        // a file that has no business where it is
    kCorruptIndex,     // packs.idx itself is damaged (SQLite's check fails)
  };
  Kind kind;
  std::string subject;  // key or path
  std::string detail;
};
std::string_view ValidateIssueKindName(ValidateIssue::Kind kind);

struct ValidateReport {
  uint64_t loose_checked = 0;
  uint64_t packed_checked = 0;
  std::vector<ValidateIssue> issues;
  bool ok() const { return issues.empty(); }
};

// A byte range of an object; length nullopt: to the end.
struct ByteRange {
  uint64_t offset = 0;
  std::optional<uint64_t> length;
};

// What Container::Locate says about one key.
struct ObjectLocation {
  enum class State {
    kFound,     // the fields below say where its stored bytes are
    kMissing,   // the container does not hold the object
    kDeferred,  // not looked for: it would have needed a descriptor past the limit
  };
  State state = State::kMissing;
  // Index into LocateResult::files.
  size_t file = 0;
  // The stored bytes are [offset, offset + length) of that file (a loose
  // object's: all of it, from offset 0).
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t size = 0;  // uncompressed
  // How the stored bytes are compressed; nullopt: they are the content
  // (length == size).
  std::optional<CodecKind> codec;
};

struct LocateResult {
  // Read-only, close-on-exec descriptors, one per pack file that holds any
  // of the objects (shared by all of them) and one per loose object.
  std::vector<UniqueFd> files;
  // One per key, in order.
  std::vector<ObjectLocation> objects;
};

class Container {
 public:
  // Creates a container in `dir`, which must not exist or be empty
  // (ALREADY_EXISTS if it holds a container, FAILED_PRECONDITION if it
  // holds anything else). INVALID_ARGUMENT for bad options.
  static absl::Status Init(const std::string& dir, const InitOptions& options);

  // Opens an initialised container. NOT_FOUND if `dir` is not one
  // (config.json or a folder missing), INVALID_ARGUMENT for a corrupt or
  // unsupported config.json, FAILED_PRECONDITION if another writer holds it.
  static absl::StatusOr<std::unique_ptr<Container>> Open(const std::string& dir,
                                                         const OpenOptions& options);
  static absl::StatusOr<std::unique_ptr<Container>> Open(const std::string& dir,
                                                         OpenMode mode = OpenMode::kWriter) {
    OpenOptions options;
    options.mode = mode;
    return Open(dir, options);
  }
  ~Container();
  Container(const Container&) = delete;
  Container& operator=(const Container&) = delete;

  const ContainerConfig& config() const { return config_; }
  const std::string& dir() const { return dir_; }
  OpenMode mode() const { return mode_; }

  // --- Writes ---
  absl::StatusOr<WrittenObject> PutLoose(ObjectSource& source);
  absl::StatusOr<WrittenObject> PutLoose(std::string_view data);
  // Writes many objects straight into packs: one fdatasync per pack touched
  // and one index transaction for the batch. Objects already packed (and
  // repeats within the batch) add no bytes and no rows. Results are in
  // input order.
  absl::StatusOr<std::vector<WrittenObject>> PutPacked(const std::vector<std::string_view>& objects,
                                                       CompressMode compress = CompressMode::kNo);
  // Streams one object of any size into a pack in constant memory. If it
  // turns out to be packed already, its new bytes are left as a hole.
  absl::StatusOr<WrittenObject> PutPackedStream(ObjectSource& source,
                                                CompressMode compress = CompressMode::kNo);

  // --- Reads ---
  absl::StatusOr<std::string> Get(std::string_view key);
  absl::StatusOr<std::string> GetRange(std::string_view key, ByteRange range);
  // A reader that streams the object in constant memory and seeks. It must
  // not outlive the container.
  absl::StatusOr<std::unique_ptr<ObjectReader>> OpenObject(std::string_view key);
  absl::StatusOr<ObjectInfo> Stat(std::string_view key);
  absl::StatusOr<bool> Has(std::string_view key);
  // One entry per key, in order; nullopt for missing keys.
  absl::StatusOr<std::vector<std::optional<ObjectInfo>>> StatMany(
      const std::vector<std::string>& keys);
  // Calls `fn` once per distinct key, in storage order (packed objects by
  // pack and offset, then loose ones), with the content or NOT_FOUND.
  // Contiguous packed objects are read with one pread. Objects are delivered
  // whole; with `large` set, objects larger than `max_whole_size` are not
  // read but passed to `large` (key and size, in the same order) for the
  // caller to stream with OpenObject.
  // INVALID_ARGUMENT (before anything is read) if any key is malformed;
  // stops at the first error a callback returns.
  using GetManyFn =
      std::function<absl::Status(std::string_view key, const absl::StatusOr<std::string_view>& content)>;
  using LargeObjectFn = std::function<absl::Status(std::string_view key, uint64_t size)>;
  absl::Status GetMany(const std::vector<std::string>& keys, const GetManyFn& fn,
                       uint64_t max_whole_size = UINT64_MAX, const LargeObjectFn& large = {});
  // Where the objects are, with descriptors of their files for a reader
  // outside the engine (the daemon's local fast path). Each descriptor is
  // the very file its objects' locations were read from, and keeps reading
  // the same bytes however long it is held: packs are never rewritten in
  // place (a repack writes a new file, and the old one lives on while a
  // descriptor holds it), loose files are only ever unlinked. Lookup order
  // as for reads: the index, then the loose file, then the index again (an
  // object packed and cleaned meanwhile). At most `max_files` descriptors
  // are opened: packed objects are located first, then loose ones, and an
  // object that would need one more is kDeferred.
  // INVALID_ARGUMENT (before anything is looked up) if any key is
  // malformed; DATA_LOSS when rows point at a missing pack file;
  // RESOURCE_EXHAUSTED when the process is out of descriptors.
  absl::StatusOr<LocateResult> Locate(const std::vector<std::string>& keys, size_t max_files);
  // Every key (packed and loose, each once) greater than `after`, ascending,
  // until `fn` returns false.
  absl::Status ListKeys(std::string_view after, const std::function<bool(std::string_view)>& fn);
  absl::StatusOr<StoreCounts> Counts();
  // The region cache's counters and gauges (all zero for a shared opener).
  RegionCacheStats CacheStats() const;
  // Unmaps cached windows nobody read since the previous call (the daemon
  // calls it on a timer); returns how many. 0 for a shared opener.
  uint64_t UnmapIdleWindows();

  // --- Maintenance (writer only) ---
  absl::StatusOr<PackResult> PackAllLoose(const PackOptions& options, const ProgressFn& progress = {});
  absl::StatusOr<CleanResult> Clean(const CleanOptions& options, const ProgressFn& progress = {});
  // Deletes objects (rows and loose files; pack bytes become holes).
  // Returns how many of `keys` existed.
  absl::StatusOr<uint64_t> Delete(const std::vector<std::string>& keys);
  // Rewrites every pack that has holes (or every pack, when recompressing)
  // into a new pack file, moves its rows in one transaction, then unlinks
  // the old file: no pack is ever rewritten or truncated in place.
  absl::StatusOr<RepackResult> Repack(const RepackOptions& options, const ProgressFn& progress = {});
  // Copies every object of `source` missing here into packs, checking each
  // one's hash (DATA_LOSS for a source object whose content is not its key).
  absl::StatusOr<ImportResult> Import(Container& source, const ProgressFn& progress = {});
  // Re-hashes every object and checks sizes, overlaps and stray files.
  absl::StatusOr<ValidateReport> Validate(const ProgressFn& progress = {});
  // Checkpoints the WAL into packs.idx.
  absl::Status Checkpoint();

 private:
  struct Resolved;
  Container(std::string dir, ContainerConfig config, OpenMode mode,
            std::unique_ptr<RegionCache> cache);

  absl::Status RequireWriter(std::string_view operation) const;
  absl::Status CheckKey(std::string_view key) const;
  absl::StatusOr<Resolved> Resolve(std::string_view key);
  // Looks up `keys` in the index and opens the packs their rows point at,
  // such that each row is known to belong to the file opened for it (see
  // PackFileTable). REQUIRES: packs_->layout_mu() held (shared).
  absl::StatusOr<std::vector<std::optional<PackedLocation>>> LookupAndOpen(
      const std::vector<std::string>& keys,
      std::map<int64_t, std::shared_ptr<const StoredFile>>* files);
  absl::StatusOr<std::unique_ptr<ObjectReader>> ReaderFor(Resolved resolved);
  absl::Status Recover() ABSL_EXCLUSIVE_LOCKS_REQUIRED(writer_mu_);
  // Appends `source` as one object at the writer's current position
  // (compressing when asked), hashing what it reads. REQUIRES: writer_mu_.
  absl::StatusOr<IndexRow> AppendObject(ObjectSource& source, bool compress)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(writer_mu_);
  // Gives up the pack writer's appends since its last Commit (after a
  // failure, or when they turn out not to be needed): each pack they
  // touched that no row points into is removed while its lock is still
  // held, so a failed batch leaves no orphan pack behind; the appended
  // bytes of the others become holes.
  void AbandonAppends() ABSL_EXCLUSIVE_LOCKS_REQUIRED(writer_mu_);
  // Runs `commit`, the index transaction for bytes the pack writer has just
  // made durable in packs `synced`. When it fails, a pack that only its rows
  // would have pointed into is not removed at once: SQLite wrote the
  // transaction's WAL frames before the sync that failed, and a crash
  // before the next commit could recover them. Such packs are removed by
  // the next commit that succeeds (which supersedes those frames) if no row
  // points into them then.
  absl::Status CommitRows(const std::set<int64_t>& synced,
                          const std::function<absl::Status()>& commit)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(writer_mu_);
  absl::Status ValidatePack(int64_t id, bool has_lock_file, ValidateReport& report,
                            const ProgressFn& progress, uint64_t total);

  const std::string dir_;
  const ContainerConfig config_;
  const OpenMode mode_;
  LooseStore loose_;
  std::unique_ptr<PackIndex> index_;
  // Declared before packs_: the cached packs retire themselves from it.
  std::unique_ptr<RegionCache> cache_;
  std::unique_ptr<PackFileTable> packs_;
  UniqueFd writer_lock_;
  // The single writer: every pack or index mutation runs under it.
  absl::Mutex writer_mu_;
  std::unique_ptr<PackWriter> pack_writer_ ABSL_GUARDED_BY(writer_mu_);
  // See CommitRows.
  std::set<int64_t> uncommitted_packs_ ABSL_GUARDED_BY(writer_mu_);
};

}  // namespace packstore

#endif  // PACKSTORE_SERVER_STORE_CONTAINER_H_

// Store: what the packstore commands need of a store. Two implementations
// stand behind it: DaemonStore talks to packstored through the client
// library (client/include/packstore/client.h), FolderStore opens a container
// folder directly through the engine (server/store/container.h). Each
// command is written once, against this interface.
//
// The commands see neither the client library's types (packstore::client)
// nor the engine's (packstore): this interface has its own, and each
// implementation converts in its own .cc file, the only one that includes
// its header.
//
// Errors: absl::Status values with the engine's and the daemon's codes
// (INVALID_ARGUMENT for a malformed key or option, NOT_FOUND for a missing
// object, PERMISSION_DENIED, UNAVAILABLE, DATA_LOSS, ...) and a message for
// a person; DaemonStore rewrites the messages of connection and permission
// errors into advice (daemon_store.h).
//
// Thread-safety: a Store is used from one thread at a time.
//
//   PACKSTORE_ASSIGN_OR_RETURN(std::unique_ptr<Store> store, OpenDaemonStore(socket));
//   PACKSTORE_ASSIGN_OR_RETURN(Written w, store->PutFile("a.txt", {}));
#ifndef PACKSTORE_CLIENT_CLI_STORE_H_
#define PACKSTORE_CLIENT_CLI_STORE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace packstore::cli {

// Where a new object goes. kDefault: the daemon's configured default, or
// loose for a folder (what the offline tool always did).
enum class Placement { kDefault, kAuto, kLoose, kPacked };
// loose | packed (or pack) | auto.
absl::StatusOr<Placement> ParsePlacement(std::string_view name);

// Compression of objects written to packs. kDefault: none for writes and
// packing, each object as stored for a repack.
enum class CompressChoice { kDefault, kNo, kYes, kAuto };
// no | yes | auto.
absl::StatusOr<CompressChoice> ParseCompressChoice(std::string_view name);

// Objects up to this size go to packs in kAuto (the daemon's default
// --auto-packed-max-size), and travel in batches rather than one by one.
inline constexpr uint64_t kSmallObjectMax = uint64_t{1} << 20;

struct WriteOptions {
  Placement placement = Placement::kDefault;
  CompressChoice compress = CompressChoice::kDefault;
};

struct Written {
  std::string key;
  uint64_t size = 0;
};

struct ObjectStat {
  std::string key;
  uint64_t size = 0;  // uncompressed
  bool packed = false;
  bool compressed = false;
  uint64_t stored_size = 0;  // bytes in its pack; 0 when loose
  // Where in its pack: known for a folder only (the daemon does not say).
  std::optional<int64_t> pack_id;
  std::optional<uint64_t> offset;
};

// Progress of a long operation: `phase` names the step, done/total count
// its units (total 0: unknown).
struct Progress {
  std::string_view phase;
  uint64_t done = 0;
  uint64_t total = 0;
};
using ProgressFn = std::function<void(const Progress&)>;

struct StoreInfo {
  std::string container_dir;
  std::string container_id;
  std::string hash_type;
  std::string compression_algorithm;
  bool disk_objectstore_compatible = true;  // false for a zstd codec
  std::optional<int64_t> pack_size_target;  // a folder's; the daemon does not say
  uint64_t packed_objects = 0;
  uint64_t packed_bytes = 0;
  uint64_t packed_stored_bytes = 0;
  uint64_t pack_files = 0;
  uint64_t pack_file_bytes = 0;
  uint64_t hole_bytes = 0;
  uint64_t loose_objects = 0;
  uint64_t loose_bytes = 0;
  uint64_t index_bytes = 0;
  // The daemon only.
  struct Daemon {
    std::string version;
    std::string socket;
    uint64_t uptime_seconds = 0;
    std::string maintenance;  // "" when idle
    uint64_t free_bytes = 0;
    uint64_t free_bytes_reserve = 0;
  };
  std::optional<Daemon> daemon;
  // Everything, as one JSON object: for a folder, its counts and
  // config.json; for the daemon, all it reports (packstore.proto's names).
  std::string json;
};

struct PackRequest {
  CompressChoice compress = CompressChoice::kDefault;
  bool validate = true;     // re-hash loose objects while copying them
  bool keep_loose = false;  // a folder only: keep the packed loose copies
};
struct PackSummary {
  uint64_t packed = 0;
  uint64_t already_packed = 0;
  uint64_t bytes = 0;
  uint64_t loose_deleted = 0;
  std::vector<std::string> corrupt;  // loose objects left loose: wrong content
};
struct RepackSummary {
  uint64_t packs_rewritten = 0;
  uint64_t packs_removed = 0;
  uint64_t objects_moved = 0;
  uint64_t bytes_reclaimed = 0;
};
struct CleanSummary {
  uint64_t loose_deleted = 0;
  uint64_t sandbox_deleted = 0;
  uint64_t duplicates_resolved = 0;
};
struct Issue {
  std::string kind;  // corrupt_loose, corrupt_packed, size_mismatch, ... (docs/protocol.md)
  std::string subject;
  std::string detail;
};
struct ValidateSummary {
  uint64_t loose_checked = 0;
  uint64_t packed_checked = 0;
  std::vector<Issue> issues;
};
struct ImportSummary {
  uint64_t imported = 0;
  uint64_t already_present = 0;
  uint64_t bytes = 0;
};

class Store {
 public:
  enum class Kind { kFolder, kDaemon };

  virtual ~Store() = default;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  virtual Kind kind() const = 0;

  // --- Writes: each returns the key(s) the store computed, in order. ---

  // Small objects, written in as few calls and transactions as the store
  // allows.
  virtual absl::StatusOr<std::vector<Written>> PutMany(std::span<const std::string_view> objects,
                                                       const WriteOptions& options) = 0;
  // A file of any size, in constant memory. NOT_FOUND or PERMISSION_DENIED
  // when it cannot be opened.
  virtual absl::StatusOr<Written> PutFile(const std::string& path, const WriteOptions& options) = 0;
  // Bytes from `source` (bytes read into the buffer, 0 at the end), in
  // constant memory.
  using ByteSource = std::function<absl::StatusOr<size_t>(char* buffer, size_t n)>;
  virtual absl::StatusOr<Written> PutStream(const ByteSource& source,
                                            const WriteOptions& options) = 0;

  // --- Reads ---

  // Copies one object to `sink`, chunk by chunk, in constant memory;
  // `on_size` (if set) learns its size before the first chunk. With
  // `verify`, the content is re-hashed: DATA_LOSS after the last chunk when
  // it does not match the key. Returns the size.
  using ChunkSink = std::function<absl::Status(std::string_view chunk)>;
  virtual absl::StatusOr<uint64_t> ReadObject(std::string_view key, const ChunkSink& sink,
                                              bool verify,
                                              const std::function<void(uint64_t)>& on_size) = 0;
  // One entry per key, in order: nullopt for a missing one.
  virtual absl::StatusOr<std::vector<std::optional<ObjectStat>>> Stat(
      std::span<const std::string> keys) = 0;
  virtual absl::StatusOr<std::vector<bool>> Has(std::span<const std::string> keys) = 0;
  // Every key greater than `after`, ascending, a page at a time; an error
  // from the callback stops the listing and is returned.
  using KeysFn = std::function<absl::Status(std::span<const std::string> keys)>;
  virtual absl::Status List(std::string_view after, const KeysFn& on_keys) = 0;
  virtual absl::StatusOr<StoreInfo> Info() = 0;

  // --- Maintenance (with the daemon: admins only) ---

  virtual absl::StatusOr<PackSummary> Pack(const PackRequest& request,
                                           const ProgressFn& progress) = 0;
  virtual absl::StatusOr<RepackSummary> Repack(CompressChoice compress,
                                               const ProgressFn& progress) = 0;
  virtual absl::StatusOr<CleanSummary> Clean(bool vacuum, const ProgressFn& progress) = 0;
  // How many of the distinct keys existed.
  virtual absl::StatusOr<uint64_t> Delete(std::span<const std::string> keys,
                                          const ProgressFn& progress) = 0;
  virtual absl::StatusOr<ValidateSummary> Validate(const ProgressFn& progress) = 0;
  // Copies every object of the container in `source_dir` (opened shared,
  // read only) that this store lacks, checking each one's hash (DATA_LOSS
  // for a source object whose content is not its key).
  virtual absl::StatusOr<ImportSummary> Import(const std::string& source_dir,
                                               const ProgressFn& progress) = 0;

 protected:
  Store() = default;
};

}  // namespace packstore::cli

#endif  // PACKSTORE_CLIENT_CLI_STORE_H_

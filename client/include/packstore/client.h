// packstore client library: stores and fetches objects through packstored,
// the packstore daemon, over its Unix socket.
//
//   auto client = packstore::client::Client::Connect();  // $PACKSTORE_SOCKET, else
//   if (!client.ok()) return client.status();  // /run/packstore/packstore.sock
//   absl::StatusOr<packstore::client::ObjectRef> ref = (*client)->Put("hello");
//   absl::StatusOr<std::string> bytes = (*client)->Get(ref->key);
//
// Errors are values: every call returns an absl::Status (or StatusOr) whose
// code is the gRPC code the daemon answered with (absl and gRPC codes are
// the same numbers) and whose message is the daemon's, meant for a person:
// INVALID_ARGUMENT for a malformed key or request, NOT_FOUND for a missing
// object, RESOURCE_EXHAUSTED for a limit (object size, free-disk reserve,
// concurrent streams), PERMISSION_DENIED for a caller the daemon does not
// allow (maintenance needs an admin), FAILED_PRECONDITION for maintenance
// while another runs, DATA_LOSS for corruption found while reading,
// UNAVAILABLE when no daemon answers on the socket, DEADLINE_EXCEEDED past
// the deadline.
//
// Thread-safety: a Client is safe to use from many threads at once; all its
// calls share one channel (one connection). An ObjectReader is not: use it
// from one thread at a time.
//
// The local fast path: on the same machine, reads and PutFile go through
// file descriptors the daemon passes over its socket instead of bytes
// through gRPC (ClientOptions::fast_path, on by default); everything falls
// back to gRPC when the daemon does not offer it. verify=true reads always
// go through gRPC, where the daemon re-hashes the object.
//
// Retries: calls that are safe to repeat (reads, and puts, which content
// addressing makes idempotent) are retried on UNAVAILABLE with a short
// backoff, `ClientOptions::max_attempts` times in all. PutStream from a
// caller's source is not retried (the source cannot be rewound), PutFile
// is. Maintenance calls are never retried.
#ifndef PACKSTORE_CLIENT_H_
#define PACKSTORE_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <istream>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace packstore::client {

// The socket a client connects to when none is given: $PACKSTORE_SOCKET
// when set and not empty, else /run/packstore/packstore.sock.
std::string DefaultSocketPath();

// Where a new object goes.
enum class PutMode {
  kDefault,  // the daemon's configured default (auto unless changed)
  kAuto,     // small objects to packs, large ones loose (packed later)
  kLoose,    // one file per object
  kPacked,   // straight into a pack, durable at once (group commit)
};

// Compression of objects written to packs (loose objects never are).
enum class Compression {
  kDefault,  // no compression for puts and packs; keep as stored for repacks
  kNo,
  kYes,
  kAuto,  // compress when a sample of the object compresses well
};

struct PutOptions {
  PutMode mode = PutMode::kDefault;
  Compression compression = Compression::kDefault;
};

// A stored object, as a write reports it.
struct ObjectRef {
  std::string key;
  uint64_t size = 0;
};

// What the store knows of an object.
struct ObjectInfo {
  std::string key;
  uint64_t size = 0;  // uncompressed
  bool packed = false;
  bool compressed = false;
  uint64_t stored_size = 0;  // bytes in its pack; 0 when loose
};

// A piece of an object delivered by GetMany. Objects up to 1 MiB come
// whole in one piece (offset 0, data.size() == size); larger ones in
// consecutive pieces. A key the store does not have comes once with
// `missing` set and no data. The views are valid during the callback only.
struct ObjectPiece {
  std::string_view key;
  uint64_t size = 0;
  uint64_t offset = 0;
  std::string_view data;
  bool missing = false;
};

// Progress of a long operation, as the daemon reports it.
struct Progress {
  std::string phase;
  uint64_t done = 0;
  uint64_t total = 0;  // 0 when unknown
};
using ProgressCallback = std::function<void(const Progress&)>;

struct StoreStatus {
  std::string version;
  std::string container_dir;
  std::string container_id;
  std::string hash_type;
  std::string compression_algorithm;
  int64_t pack_size_target = 0;
  int32_t loose_prefix_len = 0;
  uint64_t packed_objects = 0;
  uint64_t packed_bytes = 0;         // uncompressed
  uint64_t packed_stored_bytes = 0;  // as stored in packs
  uint64_t pack_files = 0;
  uint64_t pack_file_bytes = 0;
  uint64_t hole_bytes = 0;  // reclaimed by Repack
  uint64_t loose_objects = 0;
  uint64_t loose_bytes = 0;
  uint64_t index_bytes = 0;
  uint64_t free_bytes = 0;
  uint64_t free_bytes_reserve = 0;
  uint64_t uptime_seconds = 0;
  std::string maintenance;  // the operation running now, "" when idle
  // Everything the daemon reported (cache and per-call statistics too), as
  // one JSON object with the field names of packstore.proto.
  std::string json;
};

struct PackOptions {
  Compression compression = Compression::kDefault;
  bool validate = true;  // re-hash loose objects while copying them
};

struct PackResult {
  uint64_t packed = 0;
  uint64_t already_packed = 0;
  uint64_t bytes = 0;
  uint64_t loose_deleted = 0;
  std::vector<std::string> corrupt;  // loose objects left loose: wrong content
};

struct RepackResult {
  uint64_t packs_rewritten = 0;
  uint64_t packs_removed = 0;
  uint64_t objects_moved = 0;
  uint64_t bytes_reclaimed = 0;
};

struct CleanResult {
  uint64_t loose_deleted = 0;
  uint64_t sandbox_deleted = 0;
  uint64_t duplicates_resolved = 0;
};

struct ValidateIssue {
  // corrupt_loose, corrupt_packed, size_mismatch, overlap, past_end_of_pack,
  // missing_pack, orphan_pack, stray_file, corrupt_index.
  std::string kind;
  std::string subject;  // the key or path concerned
  std::string detail;
};

struct ValidateResult {
  uint64_t loose_checked = 0;
  uint64_t packed_checked = 0;
  std::vector<ValidateIssue> issues;
};

struct ClientOptions {
  // "" : DefaultSocketPath().
  std::string socket;
  // Deadline of each call (0: none). Maintenance calls get none either way
  // unless `maintenance_timeout` is set: packing a large store takes long.
  std::chrono::milliseconds timeout{0};
  std::chrono::milliseconds maintenance_timeout{0};
  // Attempts of a retryable call (reads, puts) that gets UNAVAILABLE.
  int max_attempts = 3;
  // Use the local fast path (docs/protocol.md) when the daemon offers it:
  // reads through file descriptors the daemon passes, and PutFile by
  // passing the file's descriptor. Falls back to gRPC by itself.
  bool fast_path = true;
};

// Reads one object as a seekable stream. Through the fast path, an
// uncompressed object is read with pread on the descriptor the daemon
// passed: no round trip per read. Otherwise sequential reads stream the
// object from the daemon in chunks, and a Seek elsewhere starts a new
// ranged read there. Memory use is bounded by one chunk (1 MiB) whatever
// the size.
class ObjectReader {
 public:
  virtual ~ObjectReader() = default;
  ObjectReader(const ObjectReader&) = delete;
  ObjectReader& operator=(const ObjectReader&) = delete;

  virtual const ObjectInfo& info() const = 0;
  uint64_t size() const { return info().size; }
  // The position of the next Read.
  virtual uint64_t Tell() const = 0;
  // Moves the position; past the end is allowed (reads then return 0).
  virtual void Seek(uint64_t offset) = 0;
  // Reads up to `n` bytes at the position and advances it; returns 0 only
  // at the end of the object. DATA_LOSS or UNAVAILABLE on failure.
  virtual absl::StatusOr<size_t> Read(char* buffer, size_t n) = 0;
  // Reads up to `n` bytes at `offset` without moving the position.
  virtual absl::StatusOr<size_t> ReadAt(uint64_t offset, char* buffer, size_t n) = 0;

 protected:
  ObjectReader() = default;
};

class Client {
 public:
  // Connects to packstored. The channel connects lazily; UNAVAILABLE here
  // only when `options.socket` names no socket file (the message says
  // whether the daemon seems not to run).
  static absl::StatusOr<std::unique_ptr<Client>> Connect(ClientOptions options = {});
  virtual ~Client() = default;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // The socket this client talks to.
  virtual const std::string& socket() const = 0;

  // --- Writes: each returns the key(s) the store computed. ---

  // One object given whole; large ones are streamed in chunks.
  virtual absl::StatusOr<ObjectRef> Put(std::string_view data, const PutOptions& options = {}) = 0;
  // Reads `source` (returns bytes read into the buffer, 0 at the end) and
  // streams it in constant memory. Not retried.
  using Source = std::function<absl::StatusOr<size_t>(char* buffer, size_t n)>;
  virtual absl::StatusOr<ObjectRef> PutStream(const Source& source,
                                              const PutOptions& options = {}) = 0;
  absl::StatusOr<ObjectRef> PutStream(std::istream& in, const PutOptions& options = {});
  // A file of any size, in constant memory. NOT_FOUND/PERMISSION_DENIED
  // when it cannot be opened.
  virtual absl::StatusOr<ObjectRef> PutFile(const std::string& path,
                                            const PutOptions& options = {}) = 0;
  // Many small objects in one call (sent in batches); keys in order.
  virtual absl::StatusOr<std::vector<ObjectRef>> PutMany(std::span<const std::string_view> objects,
                                                         const PutOptions& options = {}) = 0;

  // --- Reads ---

  // The whole object. `verify`: the daemon re-hashes it while sending
  // (DATA_LOSS when it does not match its key).
  virtual absl::StatusOr<std::string> Get(std::string_view key, bool verify = false) = 0;
  // A byte range (clamped to the object, as a file read is).
  virtual absl::StatusOr<std::string> GetRange(std::string_view key, uint64_t offset,
                                               uint64_t length) = 0;
  // Copies the whole object to `sink` chunk by chunk, in constant memory;
  // returns its size.
  using Sink = std::function<absl::Status(std::string_view chunk)>;
  virtual absl::StatusOr<uint64_t> GetTo(std::string_view key, const Sink& sink,
                                         bool verify = false) = 0;
  // A seekable reader; NOT_FOUND when the object does not exist.
  virtual absl::StatusOr<std::unique_ptr<ObjectReader>> Open(std::string_view key) = 0;
  // Many objects in one stream, in the order they are stored (not the
  // order asked); each distinct key once. A callback error cancels the
  // call and is returned.
  using PieceCallback = std::function<absl::Status(const ObjectPiece& piece)>;
  virtual absl::Status GetMany(std::span<const std::string> keys,
                               const PieceCallback& on_piece) = 0;
  // One entry per key, in order.
  virtual absl::StatusOr<std::vector<bool>> Has(std::span<const std::string> keys) = 0;
  virtual absl::StatusOr<std::vector<std::optional<ObjectInfo>>> Stat(
      std::span<const std::string> keys) = 0;
  // Every key after `after` (all when empty), ascending, one page at a
  // time. A callback error stops the listing and is returned.
  using KeysCallback = std::function<absl::Status(std::span<const std::string> keys)>;
  virtual absl::Status List(const KeysCallback& on_keys, std::string_view after = "") = 0;
  virtual absl::StatusOr<StoreStatus> Status() = 0;

  // --- Maintenance (admin callers only; one at a time in the daemon) ---

  virtual absl::StatusOr<PackResult> Pack(const PackOptions& options = {},
                                          const ProgressCallback& progress = {}) = 0;
  virtual absl::StatusOr<RepackResult> Repack(Compression compression = Compression::kDefault,
                                              const ProgressCallback& progress = {}) = 0;
  virtual absl::StatusOr<CleanResult> Clean(bool vacuum = false,
                                            const ProgressCallback& progress = {}) = 0;
  // Returns how many of the keys existed.
  virtual absl::StatusOr<uint64_t> Delete(std::span<const std::string> keys,
                                          const ProgressCallback& progress = {}) = 0;
  virtual absl::StatusOr<ValidateResult> Validate(const ProgressCallback& progress = {}) = 0;

 protected:
  Client() = default;
};

}  // namespace packstore::client

#endif  // PACKSTORE_CLIENT_H_

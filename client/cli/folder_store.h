// FolderStore: a container folder opened directly through the engine
// (server/store/container.h): the tool's offline mode (--store DIR), the
// source of an import and the checker of a backup.
//
// Opening modes (Access):
//   kWriter  the container's single writer: every command works. Fails with
//            FAILED_PRECONDITION while another writer (packstored) holds it.
//   kReader  the writer when it is free, else a shared opener: reads and
//            loose writes work beside a running daemon, the rest fails with
//            FAILED_PRECONDITION.
//   kShared  a shared opener only: nothing in the folder changes (no
//            recovery runs), as for an import source or a backup.
//
// Errors: the engine's (container.h): NOT_FOUND when the folder is not a
// container, INVALID_ARGUMENT for a corrupt config.json or a malformed key,
// DATA_LOSS for corrupt stored bytes.
//
// Thread-safety: one thread at a time, like every Store.
#ifndef PACKSTORE_CLIENT_CLI_FOLDER_STORE_H_
#define PACKSTORE_CLIENT_CLI_FOLDER_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/cli/store.h"

namespace packstore::cli {

struct InitRequest {
  int loose_prefix_len = 2;
  int64_t pack_size_target = int64_t{4} << 30;
  std::string hash_type = "sha256";
  std::string compression = "zlib+1";
  bool allow_incompatible = false;  // zstd: disk-objectstore cannot read it
};

// Creates a container in `dir` (engine rules: it must be missing or empty).
absl::Status InitFolder(const std::string& dir, const InitRequest& request);

// One object being read, in constant memory.
class ObjectStream {
 public:
  virtual ~ObjectStream() = default;
  virtual uint64_t size() const = 0;
  // Up to `n` bytes; 0 only at the end.
  virtual absl::StatusOr<size_t> Read(char* buffer, size_t n) = 0;
};

class FolderStore final : public Store {
 public:
  enum class Access { kWriter, kReader, kShared };

  static absl::StatusOr<std::unique_ptr<FolderStore>> Open(const std::string& dir, Access access);
  ~FolderStore() override;

  Kind kind() const override { return Kind::kFolder; }
  const std::string& dir() const;
  std::string_view hash_type() const;

  absl::StatusOr<std::vector<Written>> PutMany(std::span<const std::string_view> objects,
                                               const WriteOptions& options) override;
  absl::StatusOr<Written> PutFile(const std::string& path, const WriteOptions& options) override;
  absl::StatusOr<Written> PutStream(const ByteSource& source, const WriteOptions& options) override;
  absl::StatusOr<uint64_t> ReadObject(std::string_view key, const ChunkSink& sink, bool verify,
                                      const std::function<void(uint64_t)>& on_size) override;
  absl::StatusOr<std::vector<std::optional<ObjectStat>>> Stat(
      std::span<const std::string> keys) override;
  absl::StatusOr<std::vector<bool>> Has(std::span<const std::string> keys) override;
  absl::Status List(std::string_view after, const KeysFn& on_keys) override;
  absl::StatusOr<StoreInfo> Info() override;
  absl::StatusOr<PackSummary> Pack(const PackRequest& request, const ProgressFn& progress) override;
  absl::StatusOr<RepackSummary> Repack(CompressChoice compress,
                                       const ProgressFn& progress) override;
  absl::StatusOr<CleanSummary> Clean(bool vacuum, const ProgressFn& progress) override;
  absl::StatusOr<uint64_t> Delete(std::span<const std::string> keys,
                                  const ProgressFn& progress) override;
  absl::StatusOr<ValidateSummary> Validate(const ProgressFn& progress) override;
  absl::StatusOr<ImportSummary> Import(const std::string& source_dir,
                                       const ProgressFn& progress) override;

  // --- Reading the folder as an import source ---

  // Counts every object (packed and loose) once per copy: a total for
  // progress, not an exact count.
  absl::StatusOr<uint64_t> ObjectCountEstimate();
  // Calls `on_object` with the content of each key up to `max_whole` bytes
  // and `on_large` with the key and size of each larger one, in storage
  // order; keys no longer there are skipped. The content is valid during
  // the call only.
  using ObjectFn = std::function<absl::Status(std::string_view key, std::string_view content)>;
  using LargeFn = std::function<absl::Status(std::string_view key, uint64_t size)>;
  absl::Status GetMany(const std::vector<std::string>& keys, uint64_t max_whole,
                       const ObjectFn& on_object, const LargeFn& on_large);
  // A reader of one object; NOT_FOUND when it does not exist.
  absl::StatusOr<std::unique_ptr<ObjectStream>> OpenObject(std::string_view key);

 private:
  struct Engine;
  explicit FolderStore(std::unique_ptr<Engine> engine);
  std::unique_ptr<Engine> engine_;
};

}  // namespace packstore::cli

#endif  // PACKSTORE_CLIENT_CLI_FOLDER_STORE_H_

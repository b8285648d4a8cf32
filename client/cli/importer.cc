// ImportFolder: see importer.h.
#include "client/cli/importer.h"

#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "client/cli/folder_store.h"
#include "common/status_util.h"
#include "common/str_cat.h"

namespace packstore::cli {
namespace {

// Keys listed per round: the listing restarts after the last one, so memory
// stays bounded whatever the size of the source (each round rescans the
// source's loose folder, which is small in a packed container).
constexpr size_t kKeysPerRound = 50000;
// Keys looked up and read together.
constexpr size_t kKeysPerStep = 1000;
// A PutMany call carries at most this much.
constexpr uint64_t kBatchBytes = uint64_t{16} << 20;
constexpr size_t kBatchObjects = 5000;

absl::Status CheckKey(std::string_view expected, std::string_view computed) {
  if (expected == computed) return absl::OkStatus();
  return absl::DataLossError(StrCat("source object ", expected,
                                    " is corrupt: its content hashes to ", computed,
                                    " (run validate on the source)"));
}

class Copier {
 public:
  Copier(FolderStore& source, Store& target) : source_(source), target_(target) {}

  // Copies the objects of `keys` the target lacks.
  absl::Status CopyMissing(std::span<const std::string> keys) {
    PACKSTORE_ASSIGN_OR_RETURN(std::vector<bool> present, target_.Has(keys));
    std::vector<std::string> missing;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (present[i]) {
        ++summary_.already_present;
      } else {
        missing.push_back(keys[i]);
      }
    }
    std::vector<std::pair<std::string, uint64_t>> large;
    PACKSTORE_RETURN_IF_ERROR(source_.GetMany(
        missing, kSmallObjectMax,
        [&](std::string_view key, std::string_view content) -> absl::Status {
          batch_keys_.emplace_back(key);
          batch_.emplace_back(content);
          batch_bytes_ += content.size();
          if (batch_bytes_ >= kBatchBytes || batch_.size() >= kBatchObjects) return Flush();
          return absl::OkStatus();
        },
        [&](std::string_view key, uint64_t size) {
          large.emplace_back(std::string(key), size);
          return absl::OkStatus();
        }));
    PACKSTORE_RETURN_IF_ERROR(Flush());
    for (const auto& [key, size] : large) PACKSTORE_RETURN_IF_ERROR(Stream(key));
    return absl::OkStatus();
  }

  const ImportSummary& summary() const { return summary_; }

 private:
  absl::Status Flush() {
    if (batch_.empty()) return absl::OkStatus();
    std::vector<std::string_view> views(batch_.begin(), batch_.end());
    PACKSTORE_ASSIGN_OR_RETURN(std::vector<Written> written,
                               target_.PutMany(views, WriteOptions{Placement::kAuto, {}}));
    for (size_t i = 0; i < written.size(); ++i) {
      PACKSTORE_RETURN_IF_ERROR(CheckKey(batch_keys_[i], written[i].key));
      ++summary_.imported;
      summary_.bytes += written[i].size;
    }
    batch_.clear();
    batch_keys_.clear();
    batch_bytes_ = 0;
    return absl::OkStatus();
  }

  absl::Status Stream(const std::string& key) {
    absl::StatusOr<std::unique_ptr<ObjectStream>> stream = source_.OpenObject(key);
    if (absl::IsNotFound(stream.status())) return absl::OkStatus();  // deleted meanwhile
    if (!stream.ok()) return stream.status();
    ObjectStream& reader = **stream;
    PACKSTORE_ASSIGN_OR_RETURN(
        Written written,
        target_.PutStream([&](char* buffer, size_t n) { return reader.Read(buffer, n); },
                          WriteOptions{Placement::kAuto, {}}));
    PACKSTORE_RETURN_IF_ERROR(CheckKey(key, written.key));
    ++summary_.imported;
    summary_.bytes += written.size;
    return absl::OkStatus();
  }

  FolderStore& source_;
  Store& target_;
  ImportSummary summary_;
  std::vector<std::string> batch_;
  std::vector<std::string> batch_keys_;
  uint64_t batch_bytes_ = 0;
};

}  // namespace

absl::StatusOr<ImportSummary> ImportFolder(const std::string& source_dir, Store& target,
                                           const ProgressFn& progress) {
  PACKSTORE_ASSIGN_OR_RETURN(std::unique_ptr<FolderStore> source,
                             FolderStore::Open(source_dir, FolderStore::Access::kShared));
  PACKSTORE_ASSIGN_OR_RETURN(StoreInfo target_info, target.Info());
  if (source->hash_type() != target_info.hash_type) {
    return absl::InvalidArgumentError(StrCat("cannot import from a ", source->hash_type(),
                                             " container into a ", target_info.hash_type,
                                             " store: keys would differ"));
  }
  PACKSTORE_ASSIGN_OR_RETURN(uint64_t total, source->ObjectCountEstimate());

  Copier copier(*source, target);
  const absl::Status round_full = absl::CancelledError("listing round complete");
  std::string after;
  uint64_t done = 0;
  while (true) {
    std::vector<std::string> round;
    absl::Status listed = source->List(after, [&](std::span<const std::string> keys) {
      round.insert(round.end(), keys.begin(), keys.end());
      return round.size() >= kKeysPerRound ? round_full : absl::OkStatus();
    });
    if (!listed.ok() && listed != round_full) return listed;
    for (size_t begin = 0; begin < round.size(); begin += kKeysPerStep) {
      std::span<const std::string> step(round.data() + begin,
                                        std::min(kKeysPerStep, round.size() - begin));
      PACKSTORE_RETURN_IF_ERROR(copier.CopyMissing(step));
      done += step.size();
      if (progress) progress(Progress{"import", done, std::max(total, done)});
    }
    if (listed.ok() || round.empty()) break;
    after = round.back();
  }
  return copier.summary();
}

}  // namespace packstore::cli

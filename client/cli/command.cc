// What the commands share: see command.h.
#include "client/cli/command.h"

#include "client/cli/daemon_store.h"

namespace packstore::cli {

absl::StatusOr<Store*> Context::OpenStore(FolderStore::Access access) {
  if (store_) return store_.get();
  if (kind() == Store::Kind::kFolder) {
    absl::StatusOr<std::unique_ptr<FolderStore>> folder =
        FolderStore::Open(options_.store_dir, access);
    if (!folder.ok()) return folder.status();
    store_ = std::move(*folder);
  } else {
    absl::StatusOr<std::unique_ptr<Store>> daemon = OpenDaemonStore(options_.socket);
    if (!daemon.ok()) return daemon.status();
    store_ = std::move(*daemon);
  }
  return store_.get();
}

std::string CheckPlacement(const std::string& value) {
  absl::StatusOr<Placement> parsed = ParsePlacement(value);
  return parsed.ok() ? "" : std::string(parsed.status().message());
}

std::string CheckCompress(const std::string& value) {
  absl::StatusOr<CompressChoice> parsed = ParseCompressChoice(value);
  return parsed.ok() ? "" : std::string(parsed.status().message());
}

}  // namespace packstore::cli

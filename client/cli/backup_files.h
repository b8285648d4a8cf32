// The file operations of a backup (backup.h): copying byte ranges durably,
// holding pack files open, and an online snapshot of packs.idx.
//
// Errors: the errno of a failed call as a Status naming the path
// (common/status_util.h); SQLite failures as INTERNAL, or UNAVAILABLE when
// the index stays busy past the timeout.
//
// Thread-safety: free functions, no shared state.
#ifndef PACKSTORE_CLIENT_CLI_BACKUP_FILES_H_
#define PACKSTORE_CLIENT_CLI_BACKUP_FILES_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/store/file_io.h"

namespace packstore::cli {

// Reports the bytes one step just copied.
using BytesFn = std::function<void(uint64_t bytes)>;

// Copies bytes [from, to) of `src` to the same offsets of `dst` (which is
// extended as needed), with copy_file_range where the kernel can, else
// pread and pwrite.
absl::Status CopyRange(int src, int dst, uint64_t from, uint64_t to, const BytesFn& on_bytes);

// Copies the whole file `from` into a new file `to` (mode 0644, O_EXCL)
// and fsyncs it. NOT_FOUND when `from` does not exist, INVALID_ARGUMENT
// when it is not a regular file.
absl::Status CopyWholeFile(const std::string& from, const std::string& to, const BytesFn& on_bytes);

// Whether `name` is a pack file's name: a decimal id without leading zeros.
std::optional<int64_t> ParsePackId(const std::string& name);

// A pack file held open since it was listed: its inode cannot be reused
// while the descriptor lives, so an inode seen later under the same name is
// the same file exactly when the numbers match.
struct HeldPack {
  UniqueFd fd;
  dev_t device = 0;
  ino_t inode = 0;
};
// Opens and fstats every pack file in `packs_dir`. A pack removed between
// the listing and the open is left out.
absl::StatusOr<std::map<int64_t, HeldPack>> HoldPackFiles(const std::string& packs_dir);

// What an index snapshot says about the packs: for each pack id, the end of
// its last object (the bytes a copy must hold); and the rows in all.
struct IndexSnapshot {
  std::map<int64_t, uint64_t> pack_ends;
  uint64_t rows = 0;
  uint64_t bytes = 0;  // size of the snapshot file
};
// Takes an online backup of the SQLite database `source` (opened read-only,
// waiting up to `busy_timeout_ms` for locks) into the new file `dest`, in
// one read transaction: a consistent state while the daemon goes on
// writing. `dest` is fsync'd.
absl::StatusOr<IndexSnapshot> SnapshotIndex(const std::string& source, const std::string& dest,
                                            int busy_timeout_ms);

}  // namespace packstore::cli

#endif  // PACKSTORE_CLIENT_CLI_BACKUP_FILES_H_

// StoredFile: positional reads of a file that holds stored objects, a pack
// or a loose file, whatever reads it (pread on a descriptor, or the region
// cache's mapped windows).
//
// A StoredFile names one file, not a path: it keeps reading the same bytes
// after the path is unlinked or reused (for a cached pack, see
// PackFileTable for the one exception).
//
// Thread-safety: ReadAt and OpenDescriptor may be called from any number of
// threads.
#ifndef PACKSTORE_SERVER_STORE_STORED_FILE_H_
#define PACKSTORE_SERVER_STORE_STORED_FILE_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/store/file_io.h"

namespace packstore {

class StoredFile {
 public:
  virtual ~StoredFile() = default;
  // Copies bytes [offset, offset + n) into dst. DATA_LOSS when the file is
  // shorter; I/O errors as mapped.
  virtual absl::Status ReadAt(uint64_t offset, char* dst, size_t n) const = 0;
  // A new read-only, close-on-exec descriptor of this very file, for a
  // reader outside the engine. A cached pack is reopened by its path, which
  // names it only while PackFileTable::layout_mu() is held: call it under
  // the same shared hold that got the file. The open or dup error.
  virtual absl::StatusOr<UniqueFd> OpenDescriptor() const = 0;
};

// A StoredFile read with pread on a descriptor it owns.
class FdStoredFile : public StoredFile {
 public:
  explicit FdStoredFile(UniqueFd fd) : fd_(std::move(fd)) {}
  absl::Status ReadAt(uint64_t offset, char* dst, size_t n) const override {
    return PreadExact(fd_.get(), dst, n, offset);
  }
  absl::StatusOr<UniqueFd> OpenDescriptor() const override { return DupFile(fd_.get()); }

 private:
  UniqueFd fd_;
};

}  // namespace packstore

#endif  // PACKSTORE_SERVER_STORE_STORED_FILE_H_

// File-system primitives of the container engine: every open, read, write,
// fsync, rename and unlink the engine makes goes through here, and errno
// becomes an absl::Status (via ErrnoStatus) only here. Tests make any of
// these calls fail through server/cache/fault_injection.h; the functions
// behave then exactly as when the kernel fails them (a short write is
// retried, an error is returned).
//
// Thread-safety: free functions are thread-safe; a UniqueFd is owned by one
// thread at a time (pread-based reads on the same fd may run concurrently).
//
//   PACKSTORE_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
//   PACKSTORE_RETURN_IF_ERROR(PreadExact(fd.get(), buf, n, offset));
#ifndef PACKSTORE_SERVER_STORE_FILE_IO_H_
#define PACKSTORE_SERVER_STORE_FILE_IO_H_

#include <fcntl.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace packstore {

// Owns a file descriptor; closes it on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Closes now and reports a failed close (which can carry a write error).
  absl::Status Close();

 private:
  int fd_ = -1;
};

// open(2) with O_CLOEXEC added. NOT_FOUND when the file does not exist,
// ALREADY_EXISTS for O_EXCL on an existing file, other errno as mapped.
absl::StatusOr<UniqueFd> OpenFile(const std::string& path, int flags, mode_t mode = 0644);
// A close-on-exec duplicate of `fd`: the same open file (mode, offset).
absl::StatusOr<UniqueFd> DupFile(int fd);

// Writes all of `data` at the current position (retrying short writes and
// EINTR). RESOURCE_EXHAUSTED on ENOSPC/EDQUOT.
absl::Status WriteAll(int fd, std::string_view data);
// Writes all of `data` at `offset`.
absl::Status PwriteAll(int fd, std::string_view data, uint64_t offset);

// Reads exactly `size` bytes at `offset`. DATA_LOSS if the file ends first.
absl::Status PreadExact(int fd, char* buf, size_t size, uint64_t offset);
// Reads up to `size` bytes at `offset`, fewer only at end of file.
absl::StatusOr<size_t> PreadUpTo(int fd, char* buf, size_t size, uint64_t offset);
// Reads up to `size` bytes at the current position, fewer only at EOF.
absl::StatusOr<size_t> ReadUpTo(int fd, char* buf, size_t size);

absl::Status Fsync(int fd);
absl::Status Fdatasync(int fd);
// Opens the directory and fsyncs it, making entries renamed or created in it
// durable.
absl::Status FsyncDir(const std::string& dir);

absl::StatusOr<uint64_t> FileSize(int fd);
// NOT_FOUND if the path does not exist.
absl::StatusOr<uint64_t> PathSize(const std::string& path);
bool PathExists(const std::string& path);

// rename(2): replaces `to` atomically.
absl::Status Rename(const std::string& from, const std::string& to);
// link(2): ALREADY_EXISTS if `to` exists.
absl::Status Link(const std::string& from, const std::string& to);
// Creates the file `path` (an entry of directory `dir`) holding `content`,
// atomically: the name never exists with less than all of it (the content
// goes into an unnamed O_TMPFILE file that is then linked into place).
// ALREADY_EXISTS if `path` exists. Where O_TMPFILE or /proc is unavailable,
// falls back to an O_EXCL create then a write, which a crash in between can
// leave short.
absl::Status CreateFileAtomically(const std::string& dir, const std::string& path,
                                  std::string_view content);
// unlink(2). NOT_FOUND if it does not exist.
absl::Status Unlink(const std::string& path);
// mkdir(2); an existing directory is not an error.
absl::Status MakeDir(const std::string& path);

// Names in `dir` (not "." or ".."), unsorted. NOT_FOUND if `dir` is missing.
absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir);

// Reads a whole (small) file.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path);

// Random lowercase hex of 2*bytes characters (for temporary file names).
std::string RandomHex(size_t bytes);

// Joins path components with '/'.
std::string JoinPath(std::string_view a, std::string_view b);

}  // namespace packstore

#endif  // PACKSTORE_SERVER_STORE_FILE_IO_H_

// File-system primitives; see file_io.h.
#include "server/store/file_io.h"

#include <dirent.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <random>

#include "common/str_cat.h"
#include "common/status_util.h"
#include "server/cache/fault_injection.h"

namespace packstore {
namespace {

// The system calls that can fail by injection (server/cache/fault_injection.h):
// each behaves as the call returning -1 with the injected errno.
int SysOpen(const char* path, int flags, mode_t mode) {
  if (int err = FaultInjector::Check(FaultOp::kOpen, path)) {
    errno = err;
    return -1;
  }
  return ::open(path, flags, mode);
}

ssize_t SysWrite(int fd, const char* data, size_t size) {
  if (int err = FaultInjector::CheckWrite(fd, {}, &size)) {
    errno = err;
    return -1;
  }
  return ::write(fd, data, size);
}

ssize_t SysPwrite(int fd, const char* data, size_t size, off_t offset) {
  if (int err = FaultInjector::CheckWrite(fd, {}, &size)) {
    errno = err;
    return -1;
  }
  return ::pwrite(fd, data, size, offset);
}

int SysSync(int fd, bool data_only) {
  if (int err = FaultInjector::CheckFd(FaultOp::kSync, fd)) {
    errno = err;
    return -1;
  }
  return data_only ? ::fdatasync(fd) : ::fsync(fd);
}

int Fail(int err) {
  errno = err;
  return -1;
}

}  // namespace

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status UniqueFd::Close() {
  int fd = std::exchange(fd_, -1);
  if (fd >= 0 && ::close(fd) != 0 && errno != EINTR) return ErrnoStatus(errno, "close");
  return absl::OkStatus();
}

absl::StatusOr<UniqueFd> OpenFile(const std::string& path, int flags, mode_t mode) {
  int fd;
  do {
    fd = SysOpen(path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoStatus(errno, "open " + path);
  return UniqueFd(fd);
}

absl::StatusOr<UniqueFd> DupFile(int fd) {
  int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return ErrnoStatus(errno, "dup");
  return UniqueFd(copy);
}

absl::Status WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = SysWrite(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "write");
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status PwriteAll(int fd, std::string_view data, uint64_t offset) {
  while (!data.empty()) {
    ssize_t n = SysPwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "pwrite");
    }
    data.remove_prefix(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> PreadUpTo(int fd, char* buf, size_t size, uint64_t offset) {
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(fd, buf + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "pread");
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

absl::Status PreadExact(int fd, char* buf, size_t size, uint64_t offset) {
  PACKSTORE_ASSIGN_OR_RETURN(size_t n, PreadUpTo(fd, buf, size, offset));
  if (n != size) {
    return absl::DataLossError(StrCat("file ends at byte ", offset + n, ", expected ",
                                            size, " bytes at offset ", offset));
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> ReadUpTo(int fd, char* buf, size_t size) {
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::read(fd, buf + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "read");
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

absl::Status Fsync(int fd) {
  if (SysSync(fd, /*data_only=*/false) != 0) return ErrnoStatus(errno, "fsync");
  return absl::OkStatus();
}

absl::Status Fdatasync(int fd) {
  if (SysSync(fd, /*data_only=*/true) != 0) return ErrnoStatus(errno, "fdatasync");
  return absl::OkStatus();
}

absl::Status FsyncDir(const std::string& dir) {
  PACKSTORE_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(dir, O_RDONLY | O_DIRECTORY));
  if (SysSync(fd.get(), /*data_only=*/false) != 0) return ErrnoStatus(errno, "fsync " + dir);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> FileSize(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus(errno, "fstat");
  return static_cast<uint64_t>(st.st_size);
}

absl::StatusOr<uint64_t> PathSize(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, "stat " + path);
  return static_cast<uint64_t>(st.st_size);
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

absl::Status Rename(const std::string& from, const std::string& to) {
  int err = FaultInjector::Check(FaultOp::kRename, from, to);
  if ((err != 0 ? Fail(err) : ::rename(from.c_str(), to.c_str())) != 0) {
    return ErrnoStatus(errno, "rename " + from + " to " + to);
  }
  return absl::OkStatus();
}

absl::Status Link(const std::string& from, const std::string& to) {
  int err = FaultInjector::Check(FaultOp::kLink, from, to);
  if ((err != 0 ? Fail(err) : ::link(from.c_str(), to.c_str())) != 0) {
    return ErrnoStatus(errno, "link " + from + " to " + to);
  }
  return absl::OkStatus();
}

absl::Status CreateFileAtomically(const std::string& dir, const std::string& path,
                                  std::string_view content) {
  int fd = SysOpen(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
  if (fd >= 0) {
    UniqueFd tmp(fd);
    PACKSTORE_RETURN_IF_ERROR(WriteAll(tmp.get(), content));
    // linkat(fd, "", AT_EMPTY_PATH) would need CAP_DAC_READ_SEARCH; the
    // /proc name of the fd needs nothing.
    std::string proc_path = StrCat("/proc/self/fd/", tmp.get());
    int injected = FaultInjector::Check(FaultOp::kLink, path);
    if (injected == 0 &&
        ::linkat(AT_FDCWD, proc_path.c_str(), AT_FDCWD, path.c_str(), AT_SYMLINK_FOLLOW) == 0) {
      return absl::OkStatus();
    }
    int err = injected != 0 ? injected : errno;
    if (err != ENOENT || PathExists("/proc/self/fd")) return ErrnoStatus(err, "link " + path);
    // No /proc: fall back below.
  } else if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
    return ErrnoStatus(errno, "open " + dir);
  }
  PACKSTORE_ASSIGN_OR_RETURN(UniqueFd file, OpenFile(path, O_WRONLY | O_CREAT | O_EXCL, 0644));
  absl::Status status = WriteAll(file.get(), content);
  if (!status.ok()) ::unlink(path.c_str());
  return status;
}

absl::Status Unlink(const std::string& path) {
  int err = FaultInjector::Check(FaultOp::kUnlink, path);
  if ((err != 0 ? Fail(err) : ::unlink(path.c_str())) != 0) {
    return ErrnoStatus(errno, "unlink " + path);
  }
  return absl::OkStatus();
}

absl::Status MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    return ErrnoStatus(errno, "mkdir " + path);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return ErrnoStatus(errno, "opendir " + dir);
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  int err = errno;
  ::closedir(d);
  if (err != 0) return ErrnoStatus(err, "readdir " + dir);
  return names;
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  PACKSTORE_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  PACKSTORE_ASSIGN_OR_RETURN(uint64_t size, FileSize(fd.get()));
  std::string text(size, '\0');
  PACKSTORE_ASSIGN_OR_RETURN(size_t n, PreadUpTo(fd.get(), text.data(), text.size(), 0));
  text.resize(n);
  return text;
}

std::string RandomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes)) != 1) {
    // Names only need to be unlikely to collide; collisions are detected
    // by O_EXCL anyway.
    thread_local std::mt19937_64 rng{std::random_device{}()};
    for (auto& c : raw) c = static_cast<char>(rng());
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes * 2);
  for (unsigned char c : raw) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

std::string JoinPath(std::string_view a, std::string_view b) {
  if (a.empty()) return std::string(b);
  if (a.back() == '/') return StrCat(a, b);
  return StrCat(a, "/", b);
}

}  // namespace packstore

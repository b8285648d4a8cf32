#include "server/daemon/socket_lock.h"

#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string_view>

#include "common/status_util.h"
#include "common/str_cat.h"

namespace packstore::daemon {

absl::Status MakeParentDirs(const std::string& path) {
  for (size_t slash = path.find('/', 1); slash != std::string::npos;
       slash = path.find('/', slash + 1)) {
    std::string dir = path.substr(0, slash);
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      return ErrnoStatus(errno, StrCat("create folder ", dir));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<SocketLock> SocketLock::Acquire(const std::string& socket_path) {
  PACKSTORE_RETURN_IF_ERROR(MakeParentDirs(socket_path));
  std::string path = StrCat(socket_path, ".lock");
  PACKSTORE_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDWR | O_CREAT, 0644));
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) return ErrnoStatus(errno, StrCat("lock ", path));
    std::string holder;
    auto content = ReadSmallFile(path);
    if (content.ok()) {
      std::string_view pid = *content;
      pid = pid.substr(0, pid.find_first_of(" \n"));
      if (!pid.empty()) holder = StrCat(" (pid ", pid, ")");
    }
    return absl::FailedPreconditionError(StrCat("socket ", socket_path,
                                                " is in use by another packstored", holder, ": ",
                                                path, " is locked"));
  }
  // The pid is for the message above only; the lock is the flock.
  std::string pid = StrCat(::getpid(), "\n");
  if (::ftruncate(fd.get(), 0) != 0) return ErrnoStatus(errno, StrCat("truncate ", path));
  PACKSTORE_RETURN_IF_ERROR(PwriteAll(fd.get(), pid, 0));
  return SocketLock(std::move(path), std::move(fd));
}

}  // namespace packstore::daemon

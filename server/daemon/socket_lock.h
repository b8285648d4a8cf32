// SocketLock: one daemon per socket path. Binding a Unix socket means
// unlinking whatever file is at the path first, so without this a second
// daemon would silently take the path over from a running one. The lock is
// an exclusive flock on "<socket>.lock", held for the life of the process
// (the kernel drops it when the process dies, so a crash leaves nothing to
// clean up); the file holds the holder's pid for the message a second
// daemon prints.
//
//   PACKSTORE_ASSIGN_OR_RETURN(SocketLock lock, SocketLock::Acquire(path));
//   // Now a stale socket file at `path` may be unlinked and bound anew.
//
// Thread-safety: a SocketLock is a value owned by one thread.
#ifndef PACKSTORE_SERVER_DAEMON_SOCKET_LOCK_H_
#define PACKSTORE_SERVER_DAEMON_SOCKET_LOCK_H_

#include <string>

#include "absl/status/statusor.h"
#include "server/store/file_io.h"

namespace packstore::daemon {

class SocketLock {
 public:
  // Creates the socket's parent folder if missing (mode 0755), then takes
  // the lock. FAILED_PRECONDITION naming the socket and the holder's pid
  // when another process holds it; the errno of a failed mkdir or open.
  static absl::StatusOr<SocketLock> Acquire(const std::string& socket_path);

  const std::string& path() const { return path_; }

 private:
  SocketLock(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}

  std::string path_;
  UniqueFd fd_;
};

// mkdir -p for the folders above `path`, each new one with mode 0755.
absl::Status MakeParentDirs(const std::string& path);

}  // namespace packstore::daemon

#endif  // PACKSTORE_SERVER_DAEMON_SOCKET_LOCK_H_
